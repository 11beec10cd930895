"""Arguments of the IMAP commands other than SEARCH (search.py) and FETCH's
attribute list (fetch_args.py), one function per command, RFC 9051 §9.

Each function takes what follows the command name (``CommandHead.rest``,
starting with its SP and ending with CRLF), checks the whole of it and
returns a small dataclass or tuple; any error raises ``ImapParseError``.
Mailbox names are decoded per ``utf8`` (RFC 6855 §3, grammar.mailbox).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import List, Optional, Tuple

from protocols.imap import grammar as g
from protocols.imap.catenate_args import CatPart, cat_parts
from protocols.imap.fetch_args import FetchArgs, fetch_args

# RFC 2971 §3.3: "Field strings MUST NOT be longer than 30 octets.  Value
# strings MUST NOT be longer than 1024 octets.  Implementations MUST NOT
# send more than 30 field-value pairs."
ID_MAX_FIELD, ID_MAX_VALUE, ID_MAX_PAIRS = 30, 1024, 30
# RFC 9051 §6.3.11 / RFC 3501 §6.3.10 status-att, RFC 8438 §3 SIZE,
# RFC 7162 §3.1.8 HIGHESTMODSEQ, RFC 7889 §4 APPENDLIMIT.
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED",
                "SIZE", "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT",
                "DELETED-STORAGE",      # RFC 9208 §4.1.4
                "MAILBOXID")            # RFC 8474 §4.3
# RFC 5258 §3.1 list-select-opt (SUBSCRIBED, REMOTE, RECURSIVEMATCH) and
# RFC 6154 §3 SPECIAL-USE.
LIST_SELECT = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
# RFC 5258 §3.2 return options, RFC 6154 §3 SPECIAL-USE; STATUS (RFC 5819 §2)
# is parsed apart because it takes a list.
LIST_RETURN = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE")
# RFC 6154 §2 use-attr (CREATE-SPECIAL-USE, RFC 6154 §3).
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


def _upper_atom(buf: memoryview) -> Tuple[str, memoryview]:
    raw, rest = g.atom(buf)
    return raw.decode("ascii").upper(), rest


def no_args(buf: g.Buf) -> None:
    """CRLF right after the name: CAPABILITY, NOOP, LOGOUT, CLOSE, UNSELECT,
    EXPUNGE, IDLE, NAMESPACE, STARTTLS (RFC 9051 §9)."""
    g.end(buf)


def sequence_only(buf: g.Buf) -> g.SequenceSet:
    """SP sequence-set CRLF: UID EXPUNGE (RFC 4315 §2.1, RFC 9051 §6.4.9)."""
    seq, rest = g.sequence_set(g.sp(buf))
    g.end(rest)
    return seq


def mailbox_only(buf: g.Buf, utf8: bool = False) -> str:
    """SP mailbox CRLF: DELETE, EXAMINE without parameters, SUBSCRIBE,
    UNSUBSCRIBE (RFC 9051 §9)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    g.end(rest)
    return name


def two_mailboxes(buf: g.Buf, utf8: bool = False) -> Tuple[str, str]:
    """rename = "RENAME" SP mailbox SP mailbox (RFC 9051 §9)."""
    old, rest = g.mailbox(g.sp(buf), utf8)
    new, rest = g.mailbox(g.sp(rest), utf8)
    g.end(rest)
    return old, new


def create(buf: g.Buf, utf8: bool = False) -> Tuple[str, Tuple[str, ...]]:
    """create = "CREATE" SP mailbox [create-params] (RFC 9051 §9, RFC 4466
    §2.2); the USE parameter of CREATE-SPECIAL-USE (RFC 6154 §3)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    uses: Tuple[str, ...] = ()
    if g.peek(rest, b" ("):
        rest = g.expect(b"USE ", g.expect(b" (", rest))
        found, rest = g.paren_list(rest, g.flag)
        for use in found:
            if use not in SPECIAL_USES:
                raise g.ImapParseError("unknown special use %r (RFC 6154 §2)" % use[:30])
        uses = tuple(found)
        rest = g.expect(b")", rest)
    g.end(rest)
    return name, uses


@dataclass(frozen=True)
class SelectArgs:
    """select / examine (RFC 9051 §6.3.2) with CONDSTORE and QRESYNC
    parameters (RFC 7162 §3.1.8, §3.2.5)."""
    mailbox: str
    condstore: bool = False
    qresync: Optional[tuple] = None  # (uidvalidity, modseq, known_uids, seq_match)


def select(buf: g.Buf, utf8: bool = False) -> SelectArgs:
    """select = "SELECT" SP mailbox [select-params] (RFC 9051 §9, RFC 4466
    §2.4, RFC 7162 §7 select-param)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    condstore, qresync = False, None
    if bytes(rest[:1]) == b" ":
        params, rest = g.paren_list(rest[1:], _select_param, allow_empty=False)
        for key, value in params:
            if key == "CONDSTORE":
                condstore = True
            else:
                qresync = value
    g.end(rest)
    return SelectArgs(name, condstore, qresync)


def _select_param(buf: memoryview):
    key, rest = _upper_atom(buf)
    if key == "CONDSTORE":
        return (key, None), rest
    if key != "QRESYNC":
        raise g.ImapParseError("unknown SELECT parameter %r" % key[:30])
    # "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids]
    # [SP seq-match-data] ")" (RFC 7162 §7)
    rest = g.expect(b"(", g.sp(rest))
    validity, rest = g.nz_number(rest)
    modseq, rest = g.number64(g.sp(rest))
    known = match = None
    if g.peek(rest, b" ") and not g.peek(rest, b" ("):
        known, rest = g.sequence_set(rest[1:])
    if g.peek(rest, b" ("):
        seqs, rest = g.sequence_set(rest[2:])
        uids, rest = g.sequence_set(g.sp(rest))
        match, rest = (seqs, uids), g.expect(b")", rest)
    return (key, (validity, modseq, known, match)), g.expect(b")", rest)


def status(buf: g.Buf, utf8: bool = False) -> Tuple[str, Tuple[str, ...]]:
    """status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
    (RFC 9051 §9)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    items, rest = status_items(g.sp(rest))
    g.end(rest)
    return name, items


def status_items(buf: memoryview) -> Tuple[Tuple[str, ...], memoryview]:
    items, rest = g.paren_list(buf, _upper_atom, allow_empty=False)
    for item in items:
        if item not in STATUS_ITEMS:
            raise g.ImapParseError("unknown STATUS item %r" % item[:30])
    return tuple(items), rest


@dataclass(frozen=True)
class ListArgs:
    """LIST with LIST-EXTENDED (RFC 5258 §3), LIST-STATUS (RFC 5819 §2) and
    SPECIAL-USE (RFC 6154 §3); ``extended`` says whether any option or a
    pattern list was given (RFC 5258 §3: the reply form changes)."""
    reference: str
    patterns: Tuple[str, ...]
    select: Tuple[str, ...] = ()
    returns: Tuple[str, ...] = ()
    status: Tuple[str, ...] = ()
    extended: bool = False
    metadata: Tuple[str, ...] = ()      # RFC 9590 §3: RETURN (METADATA (entry ...))


def _pattern(utf8: bool):
    def parse(buf: memoryview) -> Tuple[str, memoryview]:
        raw, rest = g.list_mailbox(buf)
        return _decode_name(raw, utf8), rest
    return parse


def _decode_name(raw: bytes, utf8: bool) -> str:
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise g.ImapParseError("mailbox name %r is not UTF-8" % raw[:60])
    return g.mutf7_decode(raw)


def list_args(buf: g.Buf, utf8: bool = False) -> ListArgs:
    """list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    [SP list-return-opts] (RFC 9051 §9, RFC 5258 §6)."""
    rest = g.sp(buf)
    select: List[str] = []
    extended = False
    if bytes(rest[:1]) == b"(":
        select, rest = g.paren_list(rest, _upper_atom)
        rest, extended = g.sp(rest), True
        for opt in select:
            if opt not in LIST_SELECT:
                raise g.ImapParseError("unknown LIST selection option %r" % opt[:30])
    raw_ref, rest = g.astring(rest)
    rest = g.sp(rest)
    if bytes(rest[:1]) == b"(":
        patterns, rest = g.paren_list(rest, _pattern(utf8), allow_empty=False)
        extended = True
    else:
        pattern, rest = _pattern(utf8)(rest)
        patterns = [pattern]
    returns: List[str] = []
    status_items_: Tuple[str, ...] = ()
    entries: Tuple[str, ...] = ()
    if g.peek(rest, b" RETURN "):
        opts, rest = g.paren_list(rest[8:], _list_return)
        for opt in opts:
            if isinstance(opt, list):           # RFC 9590 §5: METADATA's entries
                entries = tuple(opt)
                returns.append("METADATA")
            elif isinstance(opt, tuple):
                status_items_ = opt
                returns.append("STATUS")
            else:
                returns.append(opt)
        extended = True
    g.end(rest)
    if "RECURSIVEMATCH" in select and len(select) == 1:
        raise g.ImapParseError("RECURSIVEMATCH alone is not allowed (RFC 5258 §3.1)")
    return ListArgs(_decode_name(raw_ref, utf8), tuple(patterns), tuple(select),
                    tuple(returns), status_items_, extended, entries)


def _list_return(buf: memoryview):
    opt, rest = _upper_atom(buf)
    if opt == "STATUS":
        return status_items(g.sp(rest))
    if opt == "METADATA":       # RFC 9590 §5: return-option =/ "METADATA" SP "(" entry *(SP entry) ")"
        from protocols.imap.metadata import list_entries    # metadata.py's grammar (no import cycle)
        return list_entries(g.sp(rest))
    if opt not in LIST_RETURN:
        raise g.ImapParseError("unknown LIST return option %r" % opt[:30])
    return opt, rest


def lsub(buf: g.Buf, utf8: bool = False) -> Tuple[str, str]:
    """lsub = "LSUB" SP mailbox SP list-mailbox (RFC 3501 §9)."""
    raw_ref, rest = g.astring(g.sp(buf))
    pattern, rest = _pattern(utf8)(g.sp(rest))
    g.end(rest)
    return _decode_name(raw_ref, utf8), pattern


@dataclass(frozen=True)
class StoreArgs:
    """store (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
    sequence: g.SequenceSet
    mode: str  # "" (replace), "+" or "-"
    silent: bool
    flags: Tuple[str, ...]
    unchanged_since: Optional[int] = None


def store(buf: g.Buf) -> StoreArgs:
    """store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags;
    store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list /
    (flag *(SP flag))) (RFC 9051 §9, RFC 4466 §2.5, RFC 7162 §3.1.3)."""
    seq, rest = g.sequence_set(g.sp(buf))
    rest = g.sp(rest)
    unchanged = None
    if g.peek(rest, b"(UNCHANGEDSINCE "):
        unchanged, rest = g.number64(rest[16:])
        rest = g.sp(g.expect(b")", rest))
    mode = ""
    if bytes(rest[:1]) in (b"+", b"-"):
        mode, rest = bytes(rest[:1]).decode(), rest[1:]
    rest = g.expect(b"FLAGS", rest)
    silent = g.peek(rest, b".SILENT")
    rest = g.sp(rest[7:] if silent else rest)
    if bytes(rest[:1]) == b"(":
        flags, rest = g.flag_list(rest)
    else:
        items = []
        while True:
            f, rest = g.flag(rest)
            items.append(f)
            if bytes(rest[:1]) != b" ":
                break
            rest = rest[1:]
        flags = tuple(items)
    g.end(rest)
    return StoreArgs(seq, mode, silent, flags, unchanged)


@dataclass(frozen=True)
class AppendMessage:
    flags: Tuple[str, ...]
    date_time: Optional[datetime.datetime]
    data: bytes
    binary: bool = False  # literal8 (RFC 3516 §4.4) or UTF8 (RFC 6855 §4)
    parts: Tuple[CatPart, ...] = ()   # CATENATE (RFC 4469 §5): data is built from these


def append(buf: g.Buf, utf8: bool = False) -> Tuple[str, Tuple[AppendMessage, ...]]:
    """append = "APPEND" SP mailbox 1*append-message (RFC 9051 §9,
    MULTIAPPEND RFC 3502 §6); append-message = [SP flag-list]
    [SP date-time] SP append-data; append-data = literal / literal8 /
    "UTF8" SP "(" literal8 ")" (RFC 3516 §4.4, RFC 6855 §4)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    messages: List[AppendMessage] = []
    while bytes(rest[:1]) == b" ":
        message, rest = _append_message(rest[1:])
        messages.append(message)
    if not messages:
        raise g.fail("message literal", rest)
    g.end(rest)
    return name, tuple(messages)


def _append_message(rest: memoryview) -> Tuple[AppendMessage, memoryview]:
    flags: Tuple[str, ...] = ()
    when = None
    if bytes(rest[:1]) == b"(":
        flags, rest = g.flag_list(rest)
        rest = g.sp(rest)
    if bytes(rest[:1]) == b'"':
        when, rest = g.date_time(rest)
        rest = g.sp(rest)
    if g.peek(rest, b"CATENATE ("):     # RFC 4469 §5 (catenate_args.py)
        parts, rest = cat_parts(rest[9:])
        return AppendMessage(flags, when, b"", parts=parts), rest
    if g.peek(rest, b"UTF8 ("):
        data, rest = g.literal(rest[6:], binary=True)
        return AppendMessage(flags, when, data, True), g.expect(b")", rest)
    binary = bytes(rest[:1]) == b"~"
    data, rest = g.literal(rest, binary=True)
    return AppendMessage(flags, when, data, binary), rest


def replace(buf: g.Buf, utf8: bool = False) -> Tuple[int, str, AppendMessage]:
    """replace = "REPLACE" SP seq-number SP mailbox append-message (RFC 8508
    §5; seq-number a UID for UID REPLACE, §3.3): one message, no MULTIAPPEND
    (§4.7), CATENATE allowed (§4.2)."""
    number, rest = g.nz_number(g.sp(buf))
    name, rest = g.mailbox(g.sp(rest), utf8)
    message, rest = _append_message(g.sp(rest))
    g.end(rest)
    return number, name, message


def enable(buf: g.Buf) -> Tuple[str, ...]:
    """enable = "ENABLE" 1*(SP capability) (RFC 9051 §9, RFC 5161 §4)."""
    caps = []
    rest = g._mv(buf)
    while bytes(rest[:1]) == b" ":
        cap, rest = _upper_atom(rest[1:])
        caps.append(cap)
    if not caps:
        raise g.fail("capability", rest)
    g.end(rest)
    return tuple(caps)


def id_params(buf: g.Buf) -> Optional[Tuple[Tuple[str, Optional[str]], ...]]:
    """id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring)
    ")" / nil (RFC 2971 §4), cut to the §3.3 lengths."""
    rest = g.sp(buf)
    if g.peek(rest, b"NIL"):
        g.end(rest[3:])
        return None
    rest = g.expect(b"(", rest)
    pairs: List[Tuple[str, Optional[str]]] = []
    first = True
    while bytes(rest[:1]) != b")":
        if not first:
            rest = g.sp(rest)
        field, rest = g.string(rest)
        value, rest = g.nstring(g.sp(rest))
        first = False
        # RFC 2971 §3.3 binds the sender; what a client sends beyond the
        # limits is cut off rather than refused (the line limit bounds it).
        if len(pairs) < ID_MAX_PAIRS:
            pairs.append((field[:ID_MAX_FIELD].decode("utf-8", "replace"),
                          None if value is None else value[:ID_MAX_VALUE].decode("utf-8", "replace")))
    g.end(rest[1:])
    return tuple(pairs)


def fetch(buf: g.Buf) -> Tuple[g.SequenceSet, FetchArgs]:
    """fetch = "FETCH" SP sequence-set SP (macro / fetch-att / list)
    [fetch-modifiers] (RFC 9051 §9, RFC 7162 §3.1.4.1)."""
    seq, rest = g.sequence_set(g.sp(buf))
    args, rest = fetch_args(g.sp(rest))
    g.end(rest)
    return seq, args


def copy(buf: g.Buf, utf8: bool = False) -> Tuple[g.SequenceSet, str]:
    """copy / move = SP sequence-set SP mailbox (RFC 9051 §9, RFC 6851 §3)."""
    seq, rest = g.sequence_set(g.sp(buf))
    name, rest = g.mailbox(g.sp(rest), utf8)
    g.end(rest)
    return seq, name
