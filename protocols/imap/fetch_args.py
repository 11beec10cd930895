"""FETCH arguments (RFC 9051 §6.4.5, §9 fetch-att; RFC 3501 §6.4.5).

Parses the attribute list into ``FetchAtt`` tuples: FLAGS, ENVELOPE,
INTERNALDATE, RFC822.SIZE, BODYSTRUCTURE, BODY, UID, RFC822 /
RFC822.HEADER / RFC822.TEXT (RFC 3501), BODY[section]<partial> and
BODY.PEEK, BINARY[part] / BINARY.PEEK / BINARY.SIZE (RFC 3516 §4.2), MODSEQ
(RFC 7162 §3.1.4), SAVEDATE (RFC 8514 §4), EMAILID / THREADID (RFC 8474
§5.3), PREVIEW and PREVIEW (LAZY) (RFC 8970 §6), the macros ALL / FAST / FULL, and
the modifiers (CHANGEDSINCE n) and VANISHED (RFC 7162 §3.1.4.1, §3.2.6),
PARTIAL (RFC 9394 §3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from protocols.imap import grammar as g
from protocols.imap.partial_args import partial_range

# RFC 9051 §6.4.5: the macros, "equivalent to" these lists.
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
# Attributes without a section (RFC 9051 §9 fetch-att, RFC 3501 §9,
# RFC 7162 §3.1.4 MODSEQ, RFC 8514 §4 SAVEDATE).
SIMPLE = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822.HEADER",
          "RFC822.TEXT", "RFC822", "BODYSTRUCTURE", "BODY", "UID", "MODSEQ",
          "SAVEDATE", "EMAILID", "THREADID",
          "PREVIEW")        # RFC 8970 §6, with its optional (LAZY): _preview_mods
# Longest names first so that BODY.PEEK is not taken as BODY.
_NAMES = ("BINARY.PEEK", "BINARY.SIZE", "BINARY", "BODY.PEEK", "BODY") + \
    tuple(sorted(SIMPLE, key=len, reverse=True))
_SECTION_TEXTS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


@dataclass(frozen=True)
class Section:
    """section-spec (RFC 9051 §9): part numbers, then an optional text."""
    part: Tuple[int, ...] = ()
    text: Optional[str] = None  # HEADER, HEADER.FIELDS(.NOT), TEXT, MIME
    fields: Tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchAtt:
    """One fetch attribute; ``section`` None means no brackets were given."""
    name: str  # FLAGS, BODY, BINARY, BINARY.SIZE, ...
    section: Optional[Section] = None
    partial: Optional[Tuple[int, int]] = None  # (origin, length)
    peek: bool = False
    lazy: bool = False  # PREVIEW (LAZY), RFC 8970 §4.1


@dataclass(frozen=True)
class FetchArgs:
    atts: Tuple[FetchAtt, ...]
    changed_since: Optional[int] = None
    vanished: bool = False
    partial: Optional[Tuple[int, int]] = None   # (PARTIAL range), RFC 9394 §3.3 (partial.py)


def _header_name(buf: memoryview) -> Tuple[str, memoryview]:
    """header-fld-name = astring (RFC 9051 §9)."""
    raw, rest = g.astring(buf)
    try:
        return raw.decode("ascii").upper(), rest
    except UnicodeDecodeError:
        raise g.ImapParseError("header field name %r is not ASCII" % raw[:40])


def section(buf: g.Buf, binary: bool = False) -> Tuple[Section, memoryview]:
    """section = "[" [section-spec] "]"; section-binary = "[" [section-part] "]"
    (RFC 9051 §9, RFC 3516 §4.2)."""
    buf = g.expect(b"[", buf)
    part: List[int] = []
    dot = False
    if bytes(buf[:1]).isdigit():
        n, buf = g.nz_number(buf)
        part.append(n)
        while bytes(buf[:1]) == b"." and bytes(buf[1:2]).isdigit():
            n, buf = g.nz_number(buf[1:])
            part.append(n)
        dot = bytes(buf[:1]) == b"." and not binary
        buf = buf[1:] if dot else buf
    text = None
    fields: Tuple[str, ...] = ()
    if not binary and (dot or (not part and bytes(buf[:1]) != b"]")):
        for name in _SECTION_TEXTS:
            if g.peek(buf, name.encode()):
                text, buf = name, buf[len(name):]
                break
        else:
            raise g.fail("HEADER, HEADER.FIELDS, TEXT or MIME", buf)
        if text == "MIME" and not part:
            raise g.ImapParseError("MIME needs a part number (RFC 9051 §6.4.5)")
        if text.startswith("HEADER.FIELDS"):
            names, buf = g.paren_list(g.sp(buf), _header_name, allow_empty=False)
            fields = tuple(names)
    return Section(tuple(part), text, fields), g.expect(b"]", buf)


def partial(buf: g.Buf) -> Tuple[Tuple[int, int], memoryview]:
    """partial = "<" number64 "." nz-number64 ">" (RFC 9051 §9)."""
    buf = g.expect(b"<", buf)
    origin, buf = g.number64(buf)
    length, buf = g.nz_number(g.expect(b".", buf), g.MAX_NUMBER64)
    return (origin, length), g.expect(b">", buf)


def fetch_att(buf: g.Buf) -> Tuple[FetchAtt, memoryview]:
    """fetch-att (RFC 9051 §9, RFC 3501 §9, RFC 3516 §4.2)."""
    buf = g._mv(buf)
    for name in _NAMES:
        if g.peek(buf, name.encode()):
            rest = buf[len(name):]
            if g._ATOM.match(rest) and bytes(rest[:1]) != b"[":
                continue  # a longer atom such as BODYSTRUCTURE or RFC822.SIZE
            break
    else:
        raise g.fail("fetch attribute", buf)
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") \
            and bytes(rest[:1]) == b"[":
        sec, rest = section(rest, binary=name.startswith("BINARY"))
        part = None
        if bytes(rest[:1]) == b"<" and name != "BINARY.SIZE":
            part, rest = partial(rest)
        base = name.replace(".PEEK", "")
        return FetchAtt(base, sec, part, name.endswith(".PEEK")), rest
    if name not in SIMPLE:
        raise g.fail("[section] after %s" % name, rest)
    if name == "PREVIEW" and g.peek(rest, b" (LAZY"):
        return _preview_mods(rest)
    return FetchAtt(name), rest


def _preview_mods(buf: memoryview) -> Tuple[FetchAtt, memoryview]:
    """fetch-att =/ "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"];
    preview-mod = "LAZY" (RFC 8970 §6).  Only called on " (LAZY", which no
    fetch-modifier starts with (RFC 7162 §3.1.4.1: CHANGEDSINCE, VANISHED)."""
    def mod(b: memoryview) -> Tuple[str, memoryview]:
        word, rest = g.atom(b)
        if bytes(word).upper() != b"LAZY":
            raise g.fail("LAZY", b)
        return "LAZY", rest
    _mods, rest = g.paren_list(buf[1:], mod, allow_empty=False)
    return FetchAtt("PREVIEW", lazy=True), rest


def fetch_args(buf: g.Buf) -> Tuple[FetchArgs, memoryview]:
    """fetch = ... SP ("ALL" / "FULL" / "FAST" / fetch-att /
    "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers] (RFC 9051 §9,
    RFC 7162 §3.1.4.1 CHANGEDSINCE, §3.2.6 VANISHED).  ``buf`` starts after
    the sequence set's SP."""
    buf = g._mv(buf)
    atts: List[FetchAtt] = []
    for macro, names in MACROS.items():
        if g.peek(buf, macro.encode()) and not g._ATOM.match(buf[len(macro):]):
            atts = [FetchAtt(n) for n in names]
            buf = buf[len(macro):]
            break
    else:
        if bytes(buf[:1]) == b"(":
            atts, buf = g.paren_list(buf, fetch_att, allow_empty=False)
        else:
            att, buf = fetch_att(buf)
            atts = [att]
    changed, vanished = None, False
    window = None       # RFC 9394 §3.3 PARTIAL
    if g.peek(buf, b" ("):
        mods, buf = g.paren_list(buf[1:], _fetch_modifier, allow_empty=False)
        window, mods = _take_partial(mods)
        for key, value in mods:
            if key == "CHANGEDSINCE":
                changed = value
            else:
                vanished = True
        if vanished and changed is None:
            raise g.ImapParseError("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)")
    return FetchArgs(tuple(atts), changed, vanished, window), buf


def _take_partial(mods):
    """RFC 9394 §3.3: the PARTIAL modifier (once) apart from the others."""
    ranges = [value for key, value in mods if key == "PARTIAL"]
    if len(ranges) > 1:
        raise g.ImapParseError("PARTIAL given twice (RFC 9394 §3.3)")
    return (ranges[0] if ranges else None), [(k, v) for k, v in mods if k != "PARTIAL"]


def _fetch_modifier(buf: memoryview) -> Tuple[Tuple[str, Optional[int]], memoryview]:
    if g.peek(buf, b"PARTIAL "):    # RFC 9394 §4 fetch-modifier =/ modifier-partial
        value, rest = partial_range(buf[8:])
        return ("PARTIAL", value), rest
    if g.peek(buf, b"CHANGEDSINCE "):
        value, rest = g.number64(buf[13:])
        return ("CHANGEDSINCE", value), rest
    if g.peek(buf, b"VANISHED") and not g._ATOM.match(buf[8:]):
        return ("VANISHED", None), buf[8:]
    raise g.fail("CHANGEDSINCE or VANISHED", buf)
