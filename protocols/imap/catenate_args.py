"""The CATENATE form of APPEND's append-data (RFC 4469 §5), used by args.py
for APPEND (with MULTIAPPEND, RFC 3502) and REPLACE (RFC 8508 §4.2).

    append-data =/ "CATENATE" SP "(" cat-part *(SP cat-part) ")"
    cat-part = text-literal / url
    text-literal = "TEXT" SP literal
    url = "URL" SP astring

Parts come back in order as ("TEXT", octets) or ("URL", url octets); the
URLs are resolved by the session (catenate.py, imapurl.py).
"""

from __future__ import annotations

from typing import List, Tuple

from protocols.imap import grammar as g

# No RFC bounds the parts of one message.  Ours: a digest of 500 messages is
# a URL and a boundary TEXT each, 1,000 parts; each URL part may cost a folder
# open and a message read, so a command cannot ask for more.
MAX_CAT_PARTS = 1000

CatPart = Tuple[str, bytes]


def cat_parts(buf: g.Buf) -> Tuple[Tuple[CatPart, ...], memoryview]:
    """ "(" cat-part *(SP cat-part) ")" (RFC 4469 §5), ``buf`` at the "("."""
    parts: List[CatPart] = []

    def cat_part(rest: memoryview) -> Tuple[CatPart, memoryview]:
        if len(parts) >= MAX_CAT_PARTS:
            raise g.ImapParseError("more than %d CATENATE parts" % MAX_CAT_PARTS)
        if g.peek(rest, b"TEXT "):
            value, rest = g.literal(rest[5:])
            part = ("TEXT", value)
        elif g.peek(rest, b"URL "):
            value, rest = g.astring(rest[4:])
            part = ("URL", value)
        else:
            raise g.fail("TEXT or URL", rest)
        parts.append(part)
        return part, rest

    found, rest = g.paren_list(buf, cat_part, allow_empty=False)
    return tuple(found), rest
