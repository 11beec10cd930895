"""FETCH's message-content data items (RFC 9051 §6.4.5, §7.5.2; RFC 3501
§6.4.5, §7.4.2; RFC 3516 BINARY), pure functions over the message bytes.

``render(att, data, root)`` gives one item as it goes inside
``* n FETCH (...)``: ENVELOPE, BODYSTRUCTURE, BODY, BODY[section]<partial>
(BODY.PEEK the same), BINARY[part]<partial>, BINARY.SIZE[part], RFC822,
RFC822.HEADER, RFC822.TEXT.  ``data`` is the whole message in CRLF form and
``root`` its ``mime.parse(data)``.  FLAGS, UID, INTERNALDATE, RFC822.SIZE
and the other items that need no message content are the session's.

Section text (RFC 9051 §6.4.5.1): HEADER, HEADER.FIELDS (.NOT) and TEXT
name the header or body of the message itself or of the message/rfc822
part the part number names; MIME the header of the numbered part; a bare
part number its body; part 1 of a message that is not multipart is its
body.  Choices where the RFC is silent, as Dovecot (lib-imap-storage
imap-msgpart.c, imap/imap-fetch-body.c) makes them:
- a part that does not exist, or HEADER/TEXT of a part that is not a
  message, is an empty string (mox answers NO instead);
- MIME of part 1 of a single-part message is that message's header;
- section data always goes as a literal, ``{0}`` included, and NUL octets
  (which a literal cannot carry, RFC 9051 §9 CHAR8) go as 0x80;
- BINARY of the whole message (``BINARY[]``) is its header without the
  Content-Transfer-Encoding field and its decoded body, as mox sends it;
- BINARY goes as literal8 only when what is sent holds a NUL (RFC 9051
  §7.5.2 SHOULD), and a partial BINARY names its origin as the prose of
  RFC 9051 §7.5.2 and RFC 3516 §4.3 write it (``BINARY[1]<0>``), although
  their msg-att-static ABNF leaves it out (Dovecot sends it, mox does not).
DEVIATION(RFC 9051 §6.4.5): BINARY is for leaf parts only; asked of a
multipart or message part we send its content unchanged, which is its
decoded form (RFC 2046 §5.1.1 and §5.2.1 allow such parts only the identity
encodings), rather than refuse the whole FETCH.
"""

from __future__ import annotations

import binascii
import functools
import re
from typing import Callable, FrozenSet, Optional, Tuple

from protocols import mime
from protocols.imap import wire
from protocols.imap.bodystructure import body
from protocols.imap.envelope import envelope
from protocols.imap.fetch_args import FetchAtt, Section
from protocols.message import parse_header

# RFC 9051 §6.4.5: the items that read the message itself.
CONTENT_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE",
                 "RFC822", "RFC822.HEADER", "RFC822.TEXT")
# RFC 2045 §6.1: the encodings we decode; the identity ones need nothing.
IDENTITY = ("7bit", "8bit", "binary")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_QP_TRAILING = re.compile(rb"[ \t]+(?=\r?\n|$)")


class FetchError(Exception):
    """A FETCH item that cannot be given: the session answers ``NO
    [code] text`` (e.g. UNKNOWN-CTE, RFC 3516 §4.3)."""

    def __init__(self, code: str, text: str):
        super().__init__("%s: %s" % (code, text))
        self.code = code
        self.text = text


def needs_content(att: FetchAtt) -> bool:
    """True when the item reads the message's bytes (RFC 9051 §6.4.5)."""
    return att.name in CONTENT_ITEMS


def sets_seen(att: FetchAtt) -> bool:
    """BODY[...] and BINARY[...] without .PEEK, RFC822 and RFC822.TEXT set
    \\Seen (RFC 9051 §6.4.5, RFC 3516 §4.2, RFC 3501 §6.4.5); BODY,
    BODYSTRUCTURE, BINARY.SIZE and RFC822.HEADER do not."""
    if att.name in ("BODY", "BINARY"):
        return att.section is not None and not att.peek
    return att.name in ("RFC822", "RFC822.TEXT")


def render(att: FetchAtt, data: bytes, root: mime.Part) -> bytes:
    """One msg-att-static item (RFC 9051 §9) for ``att``."""
    name = att.name
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope(data, root.start, root.body_start)
    if name == "BODYSTRUCTURE" or (name == "BODY" and att.section is None):
        return name.encode() + b" " + body(data, root, name == "BODYSTRUCTURE")
    if name == "RFC822":
        return b"RFC822 " + _literal(data)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + _literal(data[root.start:root.body_start])
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + _literal(data[root.body_start:root.end])
    if name == "BODY":
        return _item(b"BODY", att, _partial(section_data(att.section, data, root), att.partial))
    if name in ("BINARY", "BINARY.SIZE"):
        decoded = binary_data(att.section.part if att.section else (), data, root)
        if name == "BINARY.SIZE":
            return _item(b"BINARY.SIZE", att, None) + b" %d" % len(decoded)
        return _item(b"BINARY", att, _partial(decoded, att.partial), binary=True)
    raise ValueError("%s is not a message-content item" % name)


def _item(prefix: bytes, att: FetchAtt, value: Optional[bytes], binary: bool = False) -> bytes:
    """``BODY[section]<origin> value``: the section as asked, the origin
    only when a partial was asked (RFC 9051 §7.5.2, "BODY[]<0>")."""
    out = prefix + b"[" + section_name(att.section or Section(), prefix != b"BODY") + b"]"
    if att.partial is not None and prefix != b"BINARY.SIZE":
        out += b"<%d>" % att.partial[0]
    if value is None:
        return out
    if binary and b"\x00" in value:
        return out + b" " + wire.literal(value, binary=True)     # literal8, RFC 3516 §4.3
    return out + b" " + _literal(value)


def _literal(value: bytes) -> bytes:
    """A literal; NUL (not a CHAR8, RFC 9051 §9) sent as 0x80 as Dovecot does."""
    return wire.literal(value.replace(b"\x00", b"\x80"))


@functools.lru_cache(maxsize=256)
def section_name(sec: Section, binary: bool = False) -> bytes:
    """section-spec / section-binary as the response repeats it (RFC 9051
    §9): ``1.2.HEADER.FIELDS (FROM TO)``."""
    out = b".".join(b"%d" % n for n in sec.part)
    if binary or sec.text is None:
        return out
    out += (b"." if sec.part else b"") + sec.text.encode("ascii")
    if sec.text.startswith("HEADER.FIELDS"):
        out += b" (" + b" ".join(_field_name(f) for f in sec.fields) + b")"
    return out


def _field_name(name: str) -> bytes:
    """header-fld-name = astring (RFC 9051 §9); quoted when it holds "]",
    which an atom may (resp-specials) but which would end the section."""
    raw = name.encode("ascii")
    return wire.string(raw) if b"]" in raw else wire.astring(raw)


def _partial(value: bytes, partial: Optional[Tuple[int, int]]) -> bytes:
    """<origin.length> (RFC 9051 §6.4.5): truncated at the end; an origin
    past the end gives the empty string."""
    if partial is None:
        return value
    origin, length = partial
    return value[origin:origin + length]


# -- BODY[section] (RFC 9051 §6.4.5.1) -------------------------------------------

def header_item(att: FetchAtt, header: bytes) -> bytes:
    """``render(att, ...)`` for RFC822.HEADER and BODY[HEADER], BODY[HEADER.FIELDS
    (...)] (.NOT too) of the message itself, from its header block alone (the
    message's fields and empty line, as the folder's cache keeps it): what
    section_data gives for them reads nothing past it."""
    return header_renderer(att)(header)


@functools.lru_cache(maxsize=64)
def header_renderer(att: FetchAtt) -> Callable[[bytes], bytes]:
    """header_item for ``att``, made once per FETCH: the item's name and the
    field-name regex are the same for every message."""
    if att.name == "RFC822.HEADER":
        return lambda header: b"RFC822.HEADER " + _literal(header)
    sec, partial = att.section, att.partial
    prefix = _item(b"BODY", att, None) + b" "
    if sec.text == "HEADER":
        return lambda header: prefix + _literal(_partial(header, partial))
    if sec.text == "HEADER.FIELDS.NOT":
        names = tuple(sec.fields)
        return lambda header: prefix + _literal(_partial(
            _header_fields_in(header, 0, len(header), names, True), partial))
    findall = _fields_rx(tuple(sec.fields)).findall

    def fields(header: bytes) -> bytes:
        found = findall(header)
        # only the last field can lack its LF (a header that ends the data)
        if found and not found[-1].endswith(b"\n"):
            found[-1] += b"\r\n"
        # the usual block ends with an empty line after a field's CRLF
        found.append(b"\r\n" if header.endswith(b"\r\n\r\n") else _separator(header, 0, len(header)))
        value = b"".join(found)
        if partial is not None:
            value = _partial(value, partial)
        return prefix + _literal(value)
    return fields


def section_data(sec: Optional[Section], data: bytes, root: mime.Part) -> bytes:
    """The octets BODY[sec] names; empty when the part does not exist."""
    sec = sec or Section()
    if not sec.part:
        msg: Optional[mime.Part] = root
        if sec.text is None:
            return data[root.start:root.end]          # BODY[]: the whole message
    else:
        part = mime.part_at(root, sec.part)
        if part is None:
            return b""
        if sec.text is None:
            return data[part.body_start:part.end]
        if sec.text == "MIME":
            return data[part.start:part.body_start]
        msg = part.message                            # HEADER / TEXT of a message/rfc822 part
        if msg is None:
            return b""
    if sec.text == "TEXT":
        return data[msg.body_start:msg.end]
    if sec.text == "HEADER":
        return data[msg.start:msg.body_start]
    return header_fields(data, msg, sec.fields, sec.text == "HEADER.FIELDS.NOT")


@functools.lru_cache(maxsize=256)
def _wanted(names: Tuple[str, ...]) -> FrozenSet[bytes]:
    """The field names asked, lowercased (one FETCH asks the same of every message)."""
    return frozenset(n.lower().encode("ascii") for n in names)


@functools.lru_cache(maxsize=256)
def _fields_rx(names: Tuple[str, ...]):
    """The fields named ``names`` (ASCII case-insensitive) with their folds,
    each at a line start: message.py's _FIELD_AND_FOLDS for these names."""
    alts = b"|".join(re.escape(n.encode("ascii")) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(rb"^(?:" + alts + rb")[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*",
                      re.IGNORECASE | re.MULTILINE)


def header_fields(data: bytes, msg: mime.Part, names, exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the fields whose name matches
    (ASCII case-insensitive, otherwise exact) in message order, then the
    blank line the header has (RFC 9051 §6.4.5.1).

    HEADER.FIELDS is one regex search over ``data[msg.start:msg.body_start]``:
    every line there is a field, a fold, or the final empty line (that is
    where parse_header ends the header), so a line starting with a wanted
    name and a colon is exactly a field parse_header would name so."""
    return _header_fields_in(data, msg.start, msg.body_start, tuple(names), exclude)


def _header_fields_in(data: bytes, start: int, end: int, names: Tuple[str, ...], exclude: bool) -> bytes:
    """header_fields of the header block ``data[start:end]``."""
    if not exclude:
        found = [raw if raw.endswith(b"\n") else raw + b"\r\n"
                 for raw in _fields_rx(names).findall(data, start, end)]
        return b"".join(found) + _separator(data, start, end)
    wanted = _wanted(names)
    head = parse_header(data, start, end)
    out = []
    for name, raw in head.fields:
        if (name in wanted) != exclude:
            out.append(raw if raw.endswith(b"\n") else raw + b"\r\n")
    return b"".join(out) + data[head.fields_end:head.body_start]


def _separator(data: bytes, start: int, end: int) -> bytes:
    """The empty line that ends the header block ``data[start:end]``, or b""
    (parse_header: a last line of only CR and LF octets, which no field or
    fold is)."""
    if end <= start or data[end - 1:end] != b"\n":
        return b""
    line = data.rfind(b"\n", start, end - 1) + 1
    line = max(line, start)
    return data[line:end] if not data[line:end].strip(b"\r\n") else b""


# -- BINARY[part] (RFC 3516, RFC 9051 §6.4.5, §7.5.2) -------------------------------

def binary_data(path: Tuple[int, ...], data: bytes, root: mime.Part) -> bytes:
    """The decoded content of a part (RFC 3516 §4.2); of the whole message
    when ``path`` is empty.  Unknown encoding: FetchError UNKNOWN-CTE."""
    if not path:
        if root.encoding in IDENTITY or root.is_multipart or root.message is not None:
            return data[root.start:root.end]
        head = parse_header(data, root.start, root.body_start)
        fields = b"".join(raw for name, raw in head.fields if name != b"content-transfer-encoding")
        return fields + data[head.fields_end:root.body_start] + decode(root, data)
    part = mime.part_at(root, path)
    if part is None:
        return b""
    return decode(part, data)


def decode(part: mime.Part, data: bytes) -> bytes:
    """The body of ``part`` with its Content-Transfer-Encoding removed
    (RFC 2045 §6); text/* with CRLF line ends (RFC 9051 §7.5.2, RFC 3516 §6)."""
    raw = data[part.body_start:part.end]
    if part.encoding in IDENTITY or part.is_multipart or part.message is not None:
        return raw
    if part.encoding == "base64":
        out = _base64(raw)
    elif part.encoding == "quoted-printable":
        # RFC 2045 §6.7 rule (3): white space at a line's end is padding, removed.
        out = binascii.a2b_qp(_QP_TRAILING.sub(b"", raw))
    else:
        raise FetchError("UNKNOWN-CTE", "cannot decode Content-Transfer-Encoding %r"
                         % part.encoding[:60])
    if part.maintype == "text":
        out = _BARE_LF.sub(b"\r\n", out)
    return out


def _base64(raw: bytes) -> bytes:
    """RFC 2045 §6.8, leniently: characters outside the alphabet are
    ignored (as §6.8 says), a short last group is padded or dropped."""
    clean = _BASE64_JUNK.sub(b"", raw.split(b"=", 1)[0])
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    clean += b"=" * (-len(clean) % 4)
    return binascii.a2b_base64(clean)
