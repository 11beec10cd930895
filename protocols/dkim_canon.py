"""DKIM canonicalization and tag lists (RFC 6376 §3.2, §3.4, §3.7): pure functions.

- the message split into header fields (each with its folding, as it came)
  and body (RFC 5322 §2.1: the first empty line ends the header);
- "simple" and "relaxed" canonicalization of header fields (RFC 6376 §3.4.1, §3.4.2)
  and of the body (§3.4.3, §3.4.4), the body cut at ``l=`` (§3.4.5 note);
- header selection bottom-up (§5.4.2), a name listed more often than present
  selecting nothing (oversigning: §5.4.2, §8.15);
- tag=value lists (§3.2), used by DKIM-Signature (§3.5) and key records (§3.6.1).

Lines are taken as CRLF-ended; a bare LF in the input is read as CRLF (what
the message would be on the wire, RFC 5322 §2.1).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

Field = Tuple[bytes, bytes]         # (lower-case name, the whole field with its CRLF)

_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")      # §3.2 tag-name = ALPHA *ALNUMPUNC
# RFC 6376 §3.5 b= : its value (with the whitespace around it) is deleted for the hash (§3.7).
_B_VALUE = re.compile(rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*")


class TagError(ValueError):
    """A tag list that is not valid (§3.2); the message says which tag."""


def to_crlf(data: bytes) -> bytes:
    """Bare LF (and a lone CR before it) read as CRLF."""
    if b"\n" in data and data.count(b"\r\n") != data.count(b"\n"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data


def split_message(data: bytes) -> Tuple[List[Field], bytes]:
    """(header fields in order, body).  A continuation line belongs to the
    field above it (RFC 5322 §2.2.3); a line without a colon is kept as a
    field with an empty name (never selected by h=)."""
    data = to_crlf(data)
    if data.startswith(b"\r\n"):
        return [], data[2:]
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[:end + 2], data[end + 4:])
    fields: List[Field] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
            continue
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
        fields.append((name, line + b"\r\n"))
    return fields, body


def header_simple(field: bytes) -> bytes:
    """§3.4.1: the field unchanged."""
    return field


def header_relaxed(field: bytes) -> bytes:
    """RFC 6376 §3.4.2: name lower-cased; unfolded; WSP runs to one SP; WSP at the
    end of the value and around the colon deleted; CRLF kept at the end."""
    name, _, value = field.partition(b":")
    value = _FOLD.sub(b"", value.rstrip(b"\r\n") if value.endswith(b"\r\n") else value)
    value = _WSP_RUN.sub(b" ", value).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + (b"\r\n" if field.endswith(b"\r\n") else b"")


def body_simple(body: bytes) -> bytes:
    """RFC 6376 §3.4.3: empty lines at the end removed; an empty body is one CRLF."""
    body = to_crlf(body)
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    if not body.endswith(b"\r\n"):
        body += b"\r\n"             # no CRLF at all, or a last line without one
    return body


def body_relaxed(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: WSP at line ends removed, WSP runs to one SP, empty lines at
    the end removed; an empty body stays empty (erratum 1384's reading, as
    the RFC 6376 §3.4.5 example implies); a last line gets its CRLF."""
    body = to_crlf(body)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    # WSP runs to one SP over the whole body with bytes methods (a regex sub
    # per run costs 100+ ms a megabyte): tabs to spaces, halve runs until none.
    body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n")
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    return b"" if body == b"\r\n" else body


HEADER = {"simple": header_simple, "relaxed": header_relaxed}
BODY = {"simple": body_simple, "relaxed": body_relaxed}


def parse_c(value: str) -> Tuple[str, str]:
    """§3.5 c=: header[/body], each "simple" or "relaxed"; body defaults to simple."""
    head, _, body = value.strip().lower().partition("/")
    body = body or "simple"
    if head not in HEADER or body not in BODY:
        raise TagError("c=%s: not simple or relaxed (RFC 6376 §3.5)" % value)
    return head, body


def select_headers(fields: List[Field], names: List[str]) -> List[bytes]:
    """§5.4.2: for each name of h=, the last instance not yet used, going up;
    a name with no instance left selects nothing (the null string)."""
    used: Dict[bytes, int] = {}
    out = []
    for name in names:
        key = name.strip().lower().encode("ascii", "replace")
        skip = used.get(key, 0)
        seen = 0
        for fname, raw in reversed(fields):
            if fname == key:
                if seen == skip:
                    out.append(raw)
                    break
                seen += 1
        used[key] = skip + 1
    return out


def without_b(field: bytes) -> bytes:
    """§3.7: the DKIM-Signature field with the value of b= deleted (and the
    trailing CRLF dropped by the caller's canonicalization step)."""
    name, colon, value = field.partition(b":")
    return name + colon + _B_VALUE.sub(rb"\1", value, count=1)


def header_hash_input(fields: List[bytes], signature_field: bytes, canon: str) -> bytes:
    """§3.7: the selected fields canonicalized, then the signature field
    with b= empty, canonicalized, without its trailing CRLF."""
    fn = HEADER[canon]
    sig = fn(without_b(signature_field))
    if sig.endswith(b"\r\n"):
        sig = sig[:-2]
    return b"".join(fn(f) for f in fields) + sig


def parse_tags(text: str) -> Dict[str, str]:
    """§3.2 tag-list: ``name=value`` separated by ";", FWS around each part
    ignored, a duplicate tag an error, an empty final element allowed."""
    tags: Dict[str, str] = {}
    parts = text.split(";")
    for i, part in enumerate(parts):
        if not part.strip(" \t\r\n"):
            if i == len(parts) - 1:
                break
            raise TagError("empty tag in tag list (RFC 6376 §3.2)")
        name, eq, value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not eq or not _TAG_NAME.match(name):
            raise TagError("malformed tag %r (RFC 6376 §3.2)" % part.strip()[:40])
        if name in tags:
            raise TagError("tag %s= twice (RFC 6376 §3.2)" % name)
        tags[name] = value.strip(" \t\r\n")
    return tags


def no_fws(value: str) -> str:
    """base64 tag values (b=, bh=, p=): whitespace ignored (§3.5, §3.6.1)."""
    return re.sub(r"[ \t\r\n]", "", value)


def fold_tags(prefix: str, tags: List[Tuple[str, str]], width: int = 76) -> str:
    """A tag list (§3.2) after ``prefix``, folded before a tag that would pass
    ``width``; a long h= is folded after its colons (FWS is allowed there,
    §3.5).  b= goes last, filled in by the signer (whitespace in it is
    ignored, §3.5)."""
    lines, line = [], prefix
    for i, (name, value) in enumerate(tags):
        piece = "%s=%s%s" % (name, value, ";" if i < len(tags) - 1 else "")
        for chunk in _chunks(piece, width - 1):
            if len(line) + 1 + len(chunk) > width and line != prefix:
                lines.append(line)
                line = "\t" + chunk
            else:
                line += " " + chunk if line == prefix or not line.endswith(":") else chunk
    lines.append(line)
    return "\r\n".join(lines)


def _chunks(piece: str, width: int) -> List[str]:
    """``piece`` in parts ending at a colon, each at most ``width`` long where it can be."""
    if len(piece) <= width or ":" not in piece:
        return [piece]
    out, cur = [], ""
    for part in re.split(r"(?<=:)", piece):
        if cur and len(cur) + len(part) > width:
            out.append(cur)
            cur = ""
        cur += part
    return out + [cur] if cur else out


def field_value(field: bytes) -> Optional[str]:
    """The value of a header field after its colon, unfolded, as text (latin-1)."""
    _, colon, value = field.partition(b":")
    if not colon:
        return None
    return _FOLD.sub(b"", value.rstrip(b"\r\n")).decode("latin-1")
