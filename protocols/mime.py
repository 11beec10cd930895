"""The MIME structure of a message: a tree of parts with byte offsets.

What IMAP's BODYSTRUCTURE and BODY[section] need (RFC 3501 §6.4.5, RFC 9051
§6.4.5), read once from the raw message as stored, never decoded or copied:
for each part the offsets of its header and body, their line counts, its
Content-* fields, and its children.

Implements RFC 2045 (the Content-Type syntax of §5.1, the default of §5.2,
Content-Transfer-Encoding §6, Content-ID §7, Content-Description §8), RFC 2046
§5.1 (multipart: the boundary delimiters of §5.1.1, preamble and epilogue, the
message/rfc822 default inside multipart/digest of §5.1.5) and §5.2.1
(message/rfc822 holds a whole message, parsed as one), RFC 6532 §3.7
(message/global, read as message/rfc822), RFC 2183 (Content-Disposition),
RFC 2231 (parameter continuations, charsets and languages), RFC 3282
(Content-Language), RFC 2557 (Content-Location), RFC 1864 (Content-MD5).

Lenient, like Python's email parser and Dovecot: a bad or missing boundary, a
missing close-delimiter, an unparsable Content-Type or an encoded
message/rfc822 are recorded in ``Part.defects`` and never raise.  A multipart
with no body part keeps ``parts == []``: IMAP writes an empty text/plain part
for it, as Dovecot does.  Line ends may be CRLF or LF (Maildir files are LF);
offsets and line counts are of the data as given (protocols/message.py
``crlf_length`` gives the CRLF size of a range).

DEVIATION(RFC 2045 §4): Content-Type is read even without MIME-Version
(Dovecot and Python do the same; messages that lack it are common).
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from protocols.message import field_value, parse_header

# Nesting and part limits: a hostile message must not exhaust the stack or
# memory.  Dovecot's message parser allows 100 nested parts and 10,000 parts in
# all (lib-mail message-parser.h, MESSAGE_PARSER_DEFAULT_MAX_NESTED_MIME_PARTS
# and ..._MAX_TOTAL_MIME_PARTS); deeper or further parts stay unsplit leaves.
MAX_DEPTH = 100
MAX_PARTS = 10000
# RFC 2046 §5.1.1: a boundary is 1 to 70 characters, not ending in a space.
MAX_BOUNDARY = 70
# RFC 2045 §6.4: the identity encodings; any other makes a message/* or
# multipart/* body opaque (RFC 2046 §5.1.1 and §5.2.1 forbid them there).
IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")
# RFC 2045 §5.1: tspecials (plus white space and controls end a token).
_TSPECIALS = set('()<>@,;:\\"/[]?=')
# The common shape of a Content-Type or Content-Disposition value, read by
# one regex: tokens, quoted strings without backslashes, no comments, no
# RFC 2231 "*" names.  It gives what the general parser below gives for it
# (which reads every other value, and records the defects).  Each piece of
# text can match only one way, so a failed match stays linear in the length.
_TOKEN_RX = r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+'
_PARAM_RX = (r'[ \t\r\n]*;[ \t\r\n]*([^\x00-\x20\x7f()<>@,;:\\"/\[\]?=*]+)[ \t\r\n]*='
             r'(?:[ \t\r\n]*("[^"\\]*"|[^; \t\r\n"(][^; \t\r\n]*))?')
_SIMPLE_VALUE = re.compile(r'[ \t\r\n]*(%s)(?:[ \t\r\n]*/[ \t\r\n]*(%s))?((?:%s)*)(?:[ \t\r\n]*;)?[ \t\r\n]*'
                           % (_TOKEN_RX, _TOKEN_RX, _PARAM_RX))
_SIMPLE_PARAM = re.compile(_PARAM_RX)
_SIMPLE_MAX = 4096      # ours: longer values skip the regex (a bound on its work)


@dataclass
class Part:
    """One MIME entity: ``data[start:body_start]`` is its header with the empty
    line (IMAP's ``n.MIME``), ``data[body_start:end]`` its body (``n``);
    ``data[start:fields_end]`` the fields alone."""
    start: int
    fields_end: int
    body_start: int
    end: int
    header_lines: int = 0
    body_lines: int = 0           # LFs in the body, as Dovecot counts "lines"
    maintype: str = "text"
    subtype: str = "plain"
    params: List[Tuple[str, str]] = field(default_factory=list)
    default_type: bool = True     # no (valid) Content-Type: RFC 2045 §5.2, RFC 2046 §5.1.5
    encoding: str = "7bit"
    disposition: Optional[str] = None
    disposition_params: List[Tuple[str, str]] = field(default_factory=list)
    content_id: Optional[str] = None
    description: Optional[str] = None
    language: Optional[str] = None
    location: Optional[str] = None
    md5: Optional[str] = None
    parts: List["Part"] = field(default_factory=list)      # multipart children
    message: Optional["Part"] = None                       # message/rfc822: the enclosed message
    defects: List[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    @property
    def header_size(self) -> int:
        return self.body_start - self.start

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    def param(self, name: str) -> Optional[str]:
        """A Content-Type parameter's value, RFC 2231 charset decoding done."""
        return param_value(self.params, name)

    def walk(self):
        """This part and every part below it, depth first."""
        yield self
        for child in self.parts:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


def parse(data: bytes) -> Part:
    """The MIME tree of a whole message (CRLF or LF line ends)."""
    return _entity(data, 0, len(data), 0, False, [MAX_PARTS])


def part_at(root: Part, path: Sequence[int]) -> Optional[Part]:
    """The part an IMAP section number names (RFC 3501 §6.4.5), or None.

    A message that is not multipart has only part 1, its body; the parts of a
    message/rfc822 part are numbered as those of the message it holds."""
    node: Optional[Part] = root          # a message: its numbered parts follow
    cur: Optional[Part] = None
    for n in path:
        if node is None:
            return None
        kids = node.parts if node.is_multipart else [node]
        if not 1 <= n <= len(kids):
            return None
        cur = kids[n - 1]
        node = cur.message if cur.message is not None else (cur if cur.is_multipart else None)
    return cur


# -- one entity --------------------------------------------------------------------

def _entity(data: bytes, start: int, end: int, depth: int, in_digest: bool, budget: List[int]) -> Part:
    head = parse_header(data, start, end)
    part = Part(start, head.fields_end, head.body_start, end)
    part.header_lines = data.count(b"\n", start, head.body_start)
    part.body_lines = data.count(b"\n", head.body_start, end)
    part.defects += head.defects
    budget[0] -= 1

    firsts: Dict[bytes, str] = {}            # the first field of each Content-* name, unfolded
    for name, raw in head.fields:
        if name.startswith(b"content-") and name not in firsts:
            firsts[name] = field_value(raw).decode("utf-8", "surrogateescape")
    text = firsts.get

    _content_type(part, text(b"content-type"), in_digest)
    encoding = text(b"content-transfer-encoding")
    if encoding is not None:      # RFC 2045 §6.1: a token, comments around it allowed
        part.encoding = _token(encoding, _skip_cfws(encoding, 0))[0].lower() or "7bit"
    disposition = text(b"content-disposition")
    if disposition is not None:
        parsed = _value_and_params(disposition, part.defects)
        if parsed is not None:
            part.disposition, part.disposition_params = parsed[0].lower(), parsed[1]
    part.content_id, part.description = text(b"content-id"), text(b"content-description")
    part.language, part.location, part.md5 = text(b"content-language"), text(b"content-location"), text(b"content-md5")

    if part.is_multipart:
        _multipart(data, part, depth, budget)
    elif part.maintype == "message" and part.subtype in ("rfc822", "global"):
        if part.encoding not in IDENTITY_ENCODINGS:
            part.defects.append("message/%s with Content-Transfer-Encoding %s (RFC 2046 §5.2.1)"
                                % (part.subtype, part.encoding))
        elif depth >= MAX_DEPTH or budget[0] <= 0:
            part.defects.append("too deeply nested or too many parts: not split further")
        else:
            part.message = _entity(data, part.body_start, end, depth + 1, False, budget)
    return part


def _content_type(part: Part, value: Optional[str], in_digest: bool) -> None:
    """RFC 2045 §5.1 syntax; §5.2 (and RFC 2046 §5.1.5 in a digest) when absent or invalid."""
    parsed = _value_and_params(value, part.defects) if value is not None else None
    if parsed is not None and parsed[0].count("/") == 1 and all(parsed[0].split("/")):
        part.maintype, part.subtype = parsed[0].lower().split("/")
        part.params, part.default_type = parsed[1], False
        return
    if value is not None:
        part.defects.append("invalid Content-Type %r: the default is used (RFC 2045 §5.2)" % value[:100])
    if in_digest:
        part.maintype, part.subtype = "message", "rfc822"
    else:
        part.params = [("charset", "us-ascii")]


# -- multipart (RFC 2046 §5.1) --------------------------------------------------------

def _multipart(data: bytes, part: Part, depth: int, budget: List[int]) -> None:
    boundary = part.param("boundary")
    if not boundary:
        part.defects.append("multipart without a boundary parameter (RFC 2046 §5.1.1)")
        return
    if len(boundary) > MAX_BOUNDARY or boundary.endswith(" "):
        part.defects.append("boundary breaks RFC 2046 §5.1.1 (1-70 characters, no final space)")
    if part.encoding not in IDENTITY_ENCODINGS:
        part.defects.append("multipart with Content-Transfer-Encoding %s (RFC 2046 §5.1.1)" % part.encoding)
        return
    if depth >= MAX_DEPTH or budget[0] <= 0:
        part.defects.append("too deeply nested or too many parts: not split further")
        return
    delims = _delimiters(data, boundary.encode("utf-8", "surrogateescape"), part.body_start, part.end)
    if not delims:
        part.defects.append("no boundary delimiter line for %r" % boundary)
        return
    digest = part.subtype == "digest"
    for (line, after, close), nxt in zip(delims, delims[1:] + [None]):
        if close:
            return
        if nxt is None:
            part.defects.append("no close-delimiter: the last part runs to the end")
            stop = part.end
        else:
            stop = max(after, _before_line_end(data, nxt[0]))
        if budget[0] <= 0:
            part.defects.append("too many parts: the rest is not split")
            return
        part.parts.append(_entity(data, after, stop, depth + 1, digest, budget))


def _delimiters(data: bytes, boundary: bytes, start: int, end: int) -> List[Tuple[int, int, bool]]:
    """(line start, line end, is close-delimiter) of each delimiter line up to
    the close-delimiter: "--" boundary ["--"] then only white space (RFC 2046
    §5.1.1 transport-padding) at the start of a line."""
    out: List[Tuple[int, int, bool]] = []
    dashed = b"--" + boundary
    at = data.find(dashed, start, end)
    while at >= 0:
        stop = -1
        if at == 0 or data[at - 1] == 0x0a:          # at the start of a line
            after = at + len(dashed)
            close = data.startswith(b"--", after, end)
            stop = _padding_to_line_end(data, after + 2, end) if close else -1
            if stop < 0:
                close = False
                stop = _padding_to_line_end(data, after, end)
        if stop < 0:
            at = data.find(dashed, at + 1, end)
            continue
        out.append((at, stop + 1 if stop < end else stop, close))      # past the LF
        if close:
            break
        at = data.find(dashed, stop, end)
    return out


def _padding_to_line_end(data: bytes, i: int, end: int) -> int:
    """The offset of the line end (the LF, or ``end``) when only transport
    padding (RFC 2046 §5.1.1: spaces and tabs) and a CR stand between ``i``
    and it; -1 otherwise."""
    while i < end and data[i] in (0x20, 0x09):
        i += 1
    if i < end and data[i] == 0x0d:
        i += 1
    return i if i == end or data[i] == 0x0a else -1


def _before_line_end(data: bytes, line_start: int) -> int:
    """The offset of the line end before ``line_start``: it belongs to the
    delimiter that follows, not to the part before it (RFC 2046 §5.1.1)."""
    if line_start > 0 and data[line_start - 1:line_start] == b"\n":
        line_start -= 1
        if line_start > 0 and data[line_start - 1:line_start] == b"\r":
            line_start -= 1
    return line_start


# -- structured field values (RFC 2045 §5.1, RFC 2183, RFC 2231) ---------------------

def _skip_cfws(s: str, i: int) -> int:
    """Past white space and (nested) comments (RFC 5322 §3.2.2)."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth and c not in " \t\r\n":
            return i
        i += 1
    return i


def _token(s: str, i: int, stop: str = "") -> Tuple[str, int]:
    j = i
    while j < len(s) and s[j] not in _TSPECIALS and s[j] not in stop and " " < s[j] != "\x7f":
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int, defects: List[str]) -> Tuple[str, int]:
    """A quoted-string at s[i] == '"' (RFC 5322 §3.2.4): its content unescaped."""
    out, i = [], i + 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    defects.append("unterminated quoted-string")
    return "".join(out), i


def _value_and_params(s: str, defects: List[str]) -> Optional[Tuple[str, List[Tuple[str, str]]]]:
    """``type/subtype`` (or a disposition) and its parameters, RFC 2231
    continuations joined; None when the value itself is not there."""
    simple = _SIMPLE_VALUE.fullmatch(s) if len(s) <= _SIMPLE_MAX else None
    if simple is not None:
        params = [(name.lower(), value[1:-1] if value[:1] == '"' else value)
                  for name, value in _SIMPLE_PARAM.findall(simple.group(3))]
        if len({name for name, _v in params}) == len(params):
            first = simple.group(1) if simple.group(2) is None else simple.group(1) + "/" + simple.group(2)
            return first, params
    i = _skip_cfws(s, 0)
    first, i = _token(s, i)
    if not first:
        return None
    i = _skip_cfws(s, i)
    if i < len(s) and s[i] == "/":
        sub, i = _token(s, _skip_cfws(s, i + 1))
        first += "/" + sub
    raw: List[Tuple[str, str]] = []
    while True:
        i = _skip_cfws(s, i)
        if i >= len(s):
            break
        if s[i] != ";":
            defects.append("junk in parameters: %r" % s[i:i + 40])
            i = s.find(";", i)
            if i < 0:
                break
        i = _skip_cfws(s, i + 1)
        name, i = _token(s, i)
        i = _skip_cfws(s, i)
        if not name or i >= len(s) or s[i] != "=":
            if name or i < len(s):
                defects.append("parameter without a value: %r" % name)
            continue
        i = _skip_cfws(s, i + 1)
        if i < len(s) and s[i] == '"':
            value, i = _quoted(s, i, defects)
        else:       # lenient: an unquoted value with tspecials (name=a/b.txt) runs to ";"
            j = i
            while j < len(s) and s[j] not in "; \t\r\n":
                j += 1
            value, i = s[i:j], j
        raw.append((name.lower(), value))
    return first, _join_continuations(raw, defects)


def _join_continuations(raw: List[Tuple[str, str]], defects: List[str]) -> List[Tuple[str, str]]:
    """RFC 2231 §3/§4: ``name*0``, ``name*1*``... joined into one parameter; an
    extended value keeps its ``charset'language'%XX`` form under ``name*`` (what
    IMAP sends, as Dovecot does); :func:`param_value` decodes it."""
    groups: Dict[str, List[Tuple[int, bool, str]]] = {}
    order: List[str] = []
    for name, value in raw:
        base, star, rest = name.partition("*")
        number, extended = 0, name.endswith("*")
        if star and rest.rstrip("*"):
            if not rest.rstrip("*").isdigit():
                base, number, extended = name, 0, False
            else:
                number = int(rest.rstrip("*"))
        if base not in groups:
            groups[base] = []
            order.append(base)
        if any(n == number for n, _e, _v in groups[base]):
            defects.append("parameter %s given twice: the first is kept" % name)
            continue
        groups[base].append((number, extended, value))
    out: List[Tuple[str, str]] = []
    for base in order:
        segs = sorted(groups[base])
        if [n for n, _e, _v in segs] != list(range(len(segs))):
            defects.append("parameter %s: continuation numbers have gaps" % base)
        if not segs[0][1]:
            if any(e for _n, e, _v in segs):
                defects.append("parameter %s: extended continuation after a plain first one" % base)
            out.append((base, "".join(v for _n, _e, v in segs)))
            continue
        joined = "".join(v if e else urllib.parse.quote(v, safe="") for _n, e, v in segs)
        out.append((base + "*", joined))
    return out


def param_value(params: List[Tuple[str, str]], name: str) -> Optional[str]:
    """The value of ``name`` in ``params``, an RFC 2231 extended value decoded
    (its charset; UTF-8 when the charset is unknown, bad bytes replaced)."""
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
        if key == name + "*":
            charset, _q, rest = value.partition("'")
            _language, quote, encoded = rest.partition("'")
            if not quote:
                return value            # not charset'language'text: as it is
            octets = urllib.parse.unquote_to_bytes(encoded)
            try:
                codecs.lookup(charset or "us-ascii")
            except LookupError:
                charset = "utf-8"
            return octets.decode(charset or "us-ascii", "replace")
    return None
