"""FETCH ENVELOPE (RFC 9051 §7.5.2, RFC 3501 §7.4.2): the RFC 5322 header
of a message as IMAP's envelope structure, pure bytes in and out.

The fields, in order: date, subject, from, sender, reply-to, to, cc, bcc,
in-reply-to, message-id.  Date, subject, in-reply-to and message-id are the
unfolded field values as sent (RFC 5322 §2.2.3), NIL when the field is
absent and "" when it is present but empty (RFC 9051 §7.5.2).  RFC 2047
encoded words are kept as sent (the client decodes them); 8-bit text goes
as a literal (wire.string).  The address lists are parsed per RFC 5322
§3.4 (mailbox, name-addr, angle-addr, group) and §4.4 (obs-route, the
obsolete list syntax with empty members), leniently as Dovecot's
lib-mail/message-address.c is: what is not an address still becomes one.

Leaves out: decoding of RFC 2047 words, comments inside a display name.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from protocols.imap import wire
from protocols.message import Header, field_value, parse_header

# RFC 9051 §7.5.2: the order of the envelope's members.
_ADDRESS_FIELDS = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")
# Dovecot's values for the parts of a broken address (lib-mail
# message-address.c, fill_missing): a host of NIL would read as a group
# marker (RFC 9051 §9 addr-host), so a missing one must be something.
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
# RFC 5322 §3.2.3: specials that end an atom ("." is kept inside it so a
# dot-atom or obs-phrase such as "John Q. Public" is one token).
_SPECIALS = set('()<>[]:;@\\,"')
# One regex step of tokens(): white space, or an atom (group 1): a run of
# characters that are neither _SPECIALS nor white space.
_ATOM_OR_SPACE = re.compile(r'[ \t\r\n]+|([^()<>\[\]:;@\\,"\ \t\r\n]+)')
# A quoted-string with no quoted-pair and no line break: its content as is.
_SIMPLE_QUOTED = re.compile(r'"([^"\\\r\n]*)"')
# The common shape of an address list, read by regex: mailboxes
# ``[phrase] <local@domain>`` or ``local@domain`` of atoms and plain
# quoted-strings, separated by commas; no comments, groups, routes or empty
# members (any other list goes through tokens()).  Words are apart by white
# space so that no run of text can be matched in more than one way (a failed
# match stays linear in the length, never exponential).
_ATOM_RX = r'[^()<>\[\]:;@\\,"\ \t\r\n]+'
_WORD_RX = r'"[^"\\\r\n]*"|%s' % _ATOM_RX
_MAILBOX_RX = (r'((?:%s)(?:[ \t\r\n]+(?:%s))*)?[ \t\r\n]*<(%s)@(%s)>|(%s)@(%s)'
               % (_WORD_RX, _WORD_RX, _ATOM_RX, _ATOM_RX, _ATOM_RX, _ATOM_RX))
_SIMPLE_MAILBOX = re.compile(_MAILBOX_RX)
_SIMPLE_LIST = re.compile(r'[ \t\r\n]*(?:%s)(?:[ \t\r\n]*,[ \t\r\n]*(?:%s))*[ \t\r\n]*'
                          % (_MAILBOX_RX, _MAILBOX_RX))
_SIMPLE_MAX = 4096      # ours: longer lists skip the regex (a bound on its work)
_WORD = re.compile(r'"([^"\\\r\n]*)"|(%s)' % _ATOM_RX)
# The same three over the octets (a byte of 0x80 or more matches where its
# surrogateescape character does, so they match the same text the same way):
# the common list is read and rendered with no decoding.
_SIMPLE_LIST_B = re.compile(_SIMPLE_LIST.pattern.encode("ascii"))
_SIMPLE_MAILBOX_B = re.compile(_MAILBOX_RX.encode("ascii"))
_WORD_B = re.compile(_WORD.pattern.encode("ascii"))
# Octets wire.string sends as a quoted string with nothing escaped (its
# quotable set without DQUOTE and backslash).
_PLAIN = re.compile(rb'[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*')
# A field on one line whose value (white space around it and the line end
# left out, as message.field_value does) is all _PLAIN octets: group 1.
_PLAIN_FIELD = re.compile(rb'[^:]*:[ \t]*([\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*?)[ \t]*[\r\n]*')
# The fields the envelope reads (RFC 9051 §7.5.2).
_USED = frozenset(_ADDRESS_FIELDS + (b"date", b"subject", b"in-reply-to", b"message-id"))

# Ours: address fields remembered rendered (_list_field), at most 4,096 of at
# most 512 octets each (a few MiB at worst; a mailbox's distinct senders and
# recipients are usually far fewer).  Shared by the threads (a dict's get and
# set are atomic in CPython; a lost race renders a field twice).
_LIST_MEMO_MAX = 4096
_LIST_MEMO_FIELD = 512
_LISTS: Dict[bytes, bytes] = {}

Token = Tuple[str, str]            # (kind, text): atom, quoted, literal, comment, or the special itself
Address = Tuple[Optional[bytes], Optional[bytes], Optional[bytes], Optional[bytes]]


def envelope(data: bytes, start: int, end: int, head: Optional[Header] = None) -> bytes:
    """The parenthesized envelope of the message whose header is in
    ``data[start:end]`` (RFC 9051 §7.5.2, §9 envelope); ``head``: that
    header's parse_header, when the caller has it."""
    if head is None:
        head = parse_header(data, start, end)
    firsts: Dict[bytes, bytes] = {}             # the first field of each name used, raw
    for name, raw in head.fields:
        if name in _USED and name not in firsts:
            firsts[name] = raw
    get = firsts.get
    lists = {name: _list_field(get(name)) for name in _ADDRESS_FIELDS}
    # RFC 9051 §7.5.2: Sender and Reply-To absent or empty default to From.
    for name in (b"sender", b"reply-to"):
        if lists[name] == b"NIL":
            lists[name] = lists[b"from"]
    return b"".join((b"(", _text_field(get(b"date")), b" ", _text_field(get(b"subject")), b" ",
                     b" ".join([lists[name] for name in _ADDRESS_FIELDS]), b" ",
                     _text_field(get(b"in-reply-to")), b" ", _text_field(get(b"message-id")), b")"))


def _text_field(raw: Optional[bytes]) -> bytes:
    """A field's unfolded value as an nstring; NIL when the field is absent.
    A one-line value of plain octets is read by one match of
    ``_PLAIN_FIELD`` (what field_value and nstring give it)."""
    if raw is None:
        return b"NIL"
    plain = _PLAIN_FIELD.fullmatch(raw)
    if plain is not None and len(plain.group(1)) <= wire.MAX_QUOTED:
        return b'"' + plain.group(1) + b'"'
    return nstring(field_value(raw))


def _list_field(raw: Optional[bytes]) -> bytes:
    """An address field (the raw field, name included) as env-from etc.
    Senders and recipients repeat from message to message: the rendering of
    a short field is remembered (``_LISTS``), keyed by its octets."""
    if raw is None:
        return b"NIL"
    out = _LISTS.get(raw)
    if out is None:
        out = _render_list(address_list(field_value(raw)))
        if len(raw) <= _LIST_MEMO_FIELD:
            if len(_LISTS) >= _LIST_MEMO_MAX:
                _LISTS.clear()            # a plain bound: a new mailbox's senders refill it
            _LISTS[raw] = out
    return out


def nstring(value: Optional[bytes]) -> bytes:
    """nstring (RFC 9051 §9) of header text; a NUL, which neither a quoted
    string nor a literal may hold (CHAR8 is %x01-ff), sent as 0x80 as
    Dovecot sends it in literals."""
    if value is None:
        return b"NIL"
    if len(value) <= wire.MAX_QUOTED and _PLAIN.fullmatch(value):
        return b'"' + value + b'"'              # what wire.string gives it, sooner
    return wire.nstring(value.replace(b"\x00", b"\x80"))


def _render_list(addrs: List[Address]) -> bytes:
    """env-from etc. = "(" 1*address ")" / nil (RFC 9051 §9).  When every
    value is plain (one _PLAIN match of them all: \x01 is plain itself, and
    no value is longer than MAX_QUOTED when all of them together are not),
    each goes quoted as nstring would send it, with no test of its own."""
    if not addrs:
        return b"NIL"
    present = [v for a in addrs for v in a if v is not None]
    joined = b"\x01".join(present)
    if len(joined) <= wire.MAX_QUOTED and _PLAIN.fullmatch(joined):
        return b"((" + b")(".join([b" ".join([b"NIL" if v is None else b'"' + v + b'"' for v in a])
                                   for a in addrs]) + b"))"
    return b"(" + b"".join(b"(" + b" ".join(nstring(v) for v in a) + b")" for a in addrs) + b")"


# -- RFC 5322 §3.2 lexical tokens ----------------------------------------------

def tokens(text: str) -> List[Token]:
    """The lexical tokens of a structured field body (RFC 5322 §3.2):
    atoms (with dots), quoted-strings and domain-literals with their quoting
    removed, comments, and the specials; white space separates."""
    out: List[Token] = []
    i, n = 0, len(text)
    atom_or_space = _ATOM_OR_SPACE.match
    while i < n:
        m = atom_or_space(text, i)
        if m is not None:                 # an atom, or white space (skipped)
            if m.group(1) is not None:
                out.append(("atom", m.group(1)))
            i = m.end()
            continue
        c = text[i]
        if c == '"':
            simple = _SIMPLE_QUOTED.match(text, i)
            if simple is not None:
                out.append(("quoted", simple.group(1)))
                i = simple.end()
                continue
            value, i = _delimited(text, i + 1, '"')
            out.append(("quoted", value))
        elif c == "(":
            value, i = _comment(text, i + 1)
            out.append(("comment", value))
        elif c == "[":
            value, i = _delimited(text, i + 1, "]")
            out.append(("literal", "[" + value + "]"))
        else:
            out.append((c, c))            # one of _SPECIALS
            i += 1
    return out


def _delimited(text: str, i: int, close: str) -> Tuple[str, int]:
    """A quoted-string or domain-literal body (RFC 5322 §3.2.4, §3.4.1):
    quoted-pairs undone, unterminated runs to the end."""
    out = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == close:
            return "".join(out), i + 1
        if c not in "\r\n":
            out.append(c)
        i += 1
    return "".join(out), i


def _comment(text: str, i: int) -> Tuple[str, int]:
    """A comment body, nested comments included (RFC 5322 §3.2.2)."""
    depth, out = 1, []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if not depth:
                return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


# -- RFC 5322 §3.4 address lists -------------------------------------------------

def address_list(value: Optional[bytes]) -> List[Address]:
    """address-list (RFC 5322 §3.4, obs-addr-list §4.4) as IMAP address
    structures: (name, adl, mailbox, host), a group as a (NIL NIL name NIL)
    start and a (NIL NIL NIL NIL) end (RFC 9051 §7.5.2)."""
    if value is None:
        return []
    if len(value) <= _SIMPLE_MAX and _SIMPLE_LIST_B.fullmatch(value):
        return [_simple_mailbox_b(m) for m in _SIMPLE_MAILBOX_B.finditer(value)]
    text = value.decode("utf-8", "surrogateescape")
    if len(text) <= _SIMPLE_MAX and _SIMPLE_LIST.fullmatch(text):
        return [_simple_mailbox(m) for m in _SIMPLE_MAILBOX.finditer(text)]
    toks = tokens(text)
    out: List[Address] = []
    i = 0
    while i < len(toks):
        if toks[i][0] in (",", ";", ">"):
            i += 1                      # obs-addr-list: empty members; stray closers
            continue
        j = _skip_words(toks, i)
        if j < len(toks) and toks[j][0] == ":":
            i = _group(toks, i, j, out)
        else:
            i = _mailbox(toks, i, out)
    return out


def _simple_mailbox(m) -> Address:
    """One mailbox of a list _SIMPLE_LIST matched: what _mailbox gives it."""
    if m.group(1) is None and m.group(4) is not None:          # a bare addr-spec
        return (None, None, _enc(m.group(4)), _enc(m.group(5)))
    words = None
    if m.group(1) is not None:
        words = [w.group(1) if w.group(1) is not None else w.group(2)
                 for w in _WORD.finditer(m.group(1))]
    return (None if words is None else _enc(" ".join(words)), None, _enc(m.group(2)), _enc(m.group(3)))


def _simple_mailbox_b(m) -> Address:
    """_simple_mailbox over the octets."""
    if m.group(1) is None and m.group(4) is not None:          # a bare addr-spec
        return (None, None, m.group(4), m.group(5))
    name = None
    if m.group(1) is not None:
        name = b" ".join([w.group(1) if w.group(1) is not None else w.group(2)
                          for w in _WORD_B.finditer(m.group(1))])
    return (name, None, m.group(2), m.group(3))


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _skip_words(toks: List[Token], i: int) -> int:
    """Past a phrase: words (atoms, quoted-strings) and comments."""
    while i < len(toks) and toks[i][0] in ("atom", "quoted", "comment"):
        i += 1
    return i


def _phrase(toks: List[Token], i: int, j: int) -> Optional[str]:
    """display-name = phrase (RFC 5322 §3.2.5): its words, quoting removed,
    one space between them; None when empty."""
    words = [text for kind, text in toks[i:j] if kind in ("atom", "quoted")]
    return " ".join(words) if words else None


def _group(toks: List[Token], i: int, colon: int, out: List[Address]) -> int:
    """group = display-name ":" [group-list] ";" (RFC 5322 §3.4)."""
    name = _phrase(toks, i, colon) or ""
    out.append((None, None, _enc(name), None))
    i = colon + 1
    while i < len(toks) and toks[i][0] != ";":
        if toks[i][0] == ",":
            i += 1
            continue
        i = _mailbox(toks, i, out)
    out.append((None, None, None, None))
    return i + 1


def _mailbox(toks: List[Token], i: int, out: List[Address]) -> int:
    """mailbox = name-addr / addr-spec (RFC 5322 §3.4); returns the index
    after it (at the "," or ";" that ends it)."""
    j = _skip_words(toks, i)
    if j < len(toks) and toks[j][0] == "<":
        name = _phrase(toks, i, j)
        k = j + 1
        while k < len(toks) and toks[k][0] != ">":
            k += 1
        route, mailbox, host = _angle(toks[j + 1:k])
        out.append(_address(name, route, mailbox, host))
        return _to_end(toks, k + 1)
    end = _to_end(toks, i)
    span = toks[i:end]
    if all(kind == "comment" for kind, _t in span):
        return end                      # CFWS only: no address (RFC 5322 §3.4 obs-mbox-list)
    at = next((n for n, t in enumerate(span) if t[0] == "@"), None)
    local = span if at is None else span[:at]
    domain = [] if at is None else span[at + 1:]
    comments = [text for kind, text in span if kind == "comment"]
    # Dovecot and UW-IMAP: "addr (Real Name)" gives the comment as the name.
    name = " ".join(comments[-1].split()) if comments else None
    out.append(_address(name or None, None, _joined(local), _joined(domain) if at is not None else None))
    return end


def _to_end(toks: List[Token], i: int) -> int:
    """The index of the "," or ";" that ends this mailbox (or the end)."""
    while i < len(toks) and toks[i][0] not in (",", ";"):
        i += 1
    return i


def _joined(span: List[Token]) -> Optional[str]:
    """A local-part or domain (RFC 5322 §3.4.1, obs-local-part §4.4): its
    words and dots put together, quoting removed; None when empty."""
    text = "".join(t for kind, t in span if kind in ("atom", "quoted", "literal"))
    return text if text or any(kind == "quoted" for kind, _t in span) else None


def _angle(inner: List[Token]) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """angle-addr's inside: [obs-route] addr-spec (RFC 5322 §3.4, §4.4):
    (route as "@a,@b", local-part, domain)."""
    route = None
    colon = next((n for n, t in enumerate(inner) if t[0] == ":"), None)
    if colon is not None and inner[:1] and inner[0][0] == "@":
        hops = []
        for kind, text in inner[:colon]:
            if kind == "@":
                hops.append("@")
            elif kind in ("atom", "literal") and hops:
                hops[-1] += text
        route = ",".join(h for h in hops if h != "@") or None
        inner = inner[colon + 1:]
    at = None
    for n, tok in enumerate(inner):
        if tok[0] == "@":
            at = n                      # the last "@": a local-part has none unquoted
    if at is None:
        return route, _joined(inner), None
    return route, _joined(inner[:at]), _joined(inner[at + 1:])


def _address(name: Optional[str], route: Optional[str], mailbox: Optional[str],
             host: Optional[str]) -> Address:
    """address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
    (RFC 9051 §9); a missing mailbox or host is filled as Dovecot does."""
    return (None if name is None else _enc(name), None if route is None else _enc(route),
            MISSING_MAILBOX if mailbox is None else _enc(mailbox),
            MISSING_DOMAIN if host is None else _enc(host))
