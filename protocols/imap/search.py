"""SEARCH arguments (RFC 9051 §6.4.4, §9 search; RFC 3501 §6.4.4).

Every search-key of RFC 9051 §9 and RFC 3501 §9 (NEW, OLD, RECENT), OR /
NOT / parenthesized lists nested up to ``grammar.MAX_DEPTH``, sequence sets
and ``$`` (RFC 5182 §2), WITHIN's OLDER / YOUNGER (RFC 5032 §3), MODSEQ
(RFC 7162 §3.1.5), SAVEDBEFORE / SAVEDON / SAVEDSINCE / SAVEDATESUPPORTED
(RFC 8514 §4.3), EMAILID / THREADID (RFC 8474 §6), CHARSET (RFC 9051
§6.4.4) and RETURN (MIN MAX COUNT ALL SAVE, RFC 4731 §3.1, RFC 5182 §2;
PARTIAL, RFC 9394 §3.1; CONTEXT and UPDATE, RFC 5267 §4.2, §4.3).  String arguments stay bytes: the
session decodes them with the CHARSET.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from protocols.imap import grammar as g
from protocols.imap.partial_args import partial_range

# Keys without arguments (RFC 9051 §9 search-key; RFC 3501 §9 for NEW, OLD,
# RECENT; RFC 8514 §4.3 SAVEDATESUPPORTED).
FLAG_KEYS = ("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN",
             "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
             "NEW", "OLD", "RECENT", "SAVEDATESUPPORTED")
STRING_KEYS = ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO")
DATE_KEYS = ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
             "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE")
NUMBER_KEYS = ("LARGER", "SMALLER")  # number64 (RFC 9051 §9)
INTERVAL_KEYS = ("OLDER", "YOUNGER")  # nz-number seconds (RFC 5032 §3)
KEYWORD_KEYS = ("KEYWORD", "UNKEYWORD")
# Every key that takes arguments (RFC 9051 §9 search-key).
ARG_KEYS = STRING_KEYS + DATE_KEYS + NUMBER_KEYS + INTERVAL_KEYS + KEYWORD_KEYS + ("UID", "HEADER", "MODSEQ") + \
    ("EMAILID", "THREADID")     # RFC 8474 §6 (protocols/imap/objectid.py)
# RFC 4731 §3.1, RFC 5182 §2 (SAVE), RFC 9051 §6.4.4; RFC 5267 §4.2 CONTEXT
# (a hint, ignored) and §4.3 UPDATE (CONTEXT=SEARCH: sort_context.py).
RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE")
# The options that ask for result data or $ (RFC 4731 §3.1, RFC 5182 §2,
# RFC 9394 §3.1): without one of them the answer is ALL.
_RESULT_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL")


@dataclass(frozen=True)
class SearchKey:
    """One key: ``op`` is the key's name (or AND for a list, SEQ for a bare
    sequence set); ``args`` its arguments (sub-keys for AND / OR / NOT)."""
    op: str
    args: tuple = ()


@dataclass(frozen=True)
class SearchArgs:
    key: SearchKey  # an AND of the top-level keys
    charset: Optional[str] = None
    returns: Optional[Tuple[str, ...]] = None  # None: no RETURN given
    partial: Optional[Tuple[int, int]] = None  # RETURN (PARTIAL range), RFC 9394 §3.1 (partial.py)


def _key_name(buf: memoryview) -> Tuple[str, memoryview]:
    name, rest = g.atom(buf)
    return name.decode("ascii").upper(), rest


def search_key(buf: g.Buf, depth: int = 1) -> Tuple[SearchKey, memoryview]:
    """search-key (RFC 9051 §9)."""
    g.check_depth(depth)
    buf = g._mv(buf)
    first = bytes(buf[:1])
    if first == b"(":
        keys, rest = g.paren_list(buf, lambda b: search_key(b, depth + 1), allow_empty=False)
        return SearchKey("AND", tuple(keys)), rest
    if first.isdigit() or first in (b"*", b"$"):
        seq, rest = g.sequence_set(buf)
        return SearchKey("SEQ", (seq,)), rest
    name, rest = _key_name(buf)
    if name in FLAG_KEYS:
        return SearchKey(name), rest
    if name == "NOT":
        sub, rest = search_key(g.sp(rest), depth + 1)
        return SearchKey("NOT", (sub,)), rest
    if name == "OR":
        a, rest = search_key(g.sp(rest), depth + 1)
        b, rest = search_key(g.sp(rest), depth + 1)
        return SearchKey("OR", (a, b)), rest
    if name not in ARG_KEYS:
        raise g.ImapParseError("unknown search key %r" % name[:30])
    if bytes(rest[:1]) != b" ":
        raise g.ImapParseError("search key %s needs an argument" % name)
    return _key_with_args(name, rest[1:], buf)


def _key_with_args(name: str, rest: memoryview, at: memoryview) -> Tuple[SearchKey, memoryview]:
    if name in STRING_KEYS:
        value, rest = g.astring(rest)
        return SearchKey(name, (value,)), rest
    if name in DATE_KEYS:
        day, rest = g.date(rest)
        return SearchKey(name, (day,)), rest
    if name in NUMBER_KEYS:
        n, rest = g.number64(rest)
        return SearchKey(name, (n,)), rest
    if name in INTERVAL_KEYS:
        n, rest = g.nz_number(rest)
        return SearchKey(name, (n,)), rest
    if name in KEYWORD_KEYS:
        kw, rest = g.atom(rest)
        return SearchKey(name, (kw.decode("ascii"),)), rest
    if name == "UID":
        seq, rest = g.sequence_set(rest)
        return SearchKey("UID", (seq,)), rest
    if name == "HEADER":
        field, rest = g.astring(rest)
        value, rest = g.astring(g.sp(rest))
        return SearchKey("HEADER", (field.decode("ascii", "replace"), value)), rest
    if name == "MODSEQ":
        return _modseq(rest)
    if name in ("EMAILID", "THREADID"):      # RFC 8474 §6: SP objectid
        value, rest = _objectid(rest)
        return SearchKey(name, (value,)), rest
    raise g.ImapParseError("unknown search key %r" % name[:30])


def _objectid(buf: memoryview) -> Tuple[str, memoryview]:
    """objectid = 1*255(ALPHA / DIGIT / "_" / "-") (RFC 8474 §7), case-sensitive."""
    raw, rest = g.atom(buf)
    if len(raw) > 255 or not all(c in _OBJECTID_CHARS for c in bytes(raw)):
        raise g.ImapParseError("%r is not an objectid (RFC 8474 §7)" % bytes(raw[:40]).decode("ascii", "replace"))
    return bytes(raw).decode("ascii"), rest


_OBJECTID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _modseq(buf: memoryview) -> Tuple[SearchKey, memoryview]:
    """"MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer
    (RFC 7162 §3.1.5); the entry is kept but only its value matters."""
    entry = None
    if bytes(buf[:1]) == b'"':
        name, buf = g.quoted(buf)
        kind, buf = g.atom(g.sp(buf))
        if kind.upper() not in (b"PRIV", b"SHARED", b"ALL"):
            raise g.fail("priv, shared or all", buf)
        entry = (name.decode("ascii", "replace"), kind.decode().lower())
        buf = g.sp(buf)
    value, buf = g.number64(buf)
    return SearchKey("MODSEQ", (value, entry)), buf


def _return_opts(buf: memoryview) -> Tuple[Tuple[str, ...], memoryview, Optional[Tuple[int, int]]]:
    """search-return-opts = SP "RETURN" SP "(" [search-return-opt
    *(SP search-return-opt)] ")" (RFC 9051 §9, RFC 4731 §3.1).  RETURN ()
    means ALL (RFC 4731 §3.1)."""
    ranges: list = []
    opts, rest = g.paren_list(g.sp(g.expect(b"RETURN", buf)), lambda b: _return_opt(b, ranges))
    for opt in opts:
        if opt not in RETURN_OPTIONS and opt != "PARTIAL":
            raise g.ImapParseError("unknown RETURN option %r" % opt[:30])
    if ranges and (len(ranges) > 1 or "ALL" in opts):   # RFC 9394 §3.1: one PARTIAL, never with ALL
        raise g.ImapParseError("RETURN takes one PARTIAL and no ALL with it (RFC 9394 §3.1)")
    names = tuple(dict.fromkeys(opts))
    if not any(n in _RESULT_OPTIONS for n in names):
        names += ("ALL",)
    return names, rest, (ranges[0] if ranges else None)


def _return_opt(buf: memoryview, ranges: list) -> Tuple[str, memoryview]:
    """search-return-opt; PARTIAL SP partial-range (RFC 9394 §4) noted in ``ranges``."""
    name, rest = _key_name(buf)
    if name == "PARTIAL":
        rng, rest = partial_range(g.sp(rest))
        ranges.append(rng)
    return name, rest


def search_args(buf: g.Buf) -> SearchArgs:
    """search = "SEARCH" [search-return-opts] SP search-program (RFC 9051 §9);
    search-program = ["CHARSET" SP charset SP] search-key *(SP search-key).
    ``buf`` is what follows the command name, CRLF included."""
    buf = g.sp(buf)
    returns = partial = None
    if g.peek(buf, b"RETURN "):
        returns, buf, partial = _return_opts(buf)
        buf = g.sp(buf)
    charset = None
    if g.peek(buf, b"CHARSET "):
        raw, buf = g.astring(buf[8:])
        charset = raw.decode("ascii", "replace").upper()
        buf = g.sp(buf)
    keys = []
    while True:
        key, buf = search_key(buf)
        keys.append(key)
        if bytes(buf[:1]) != b" ":
            break
        buf = buf[1:]
    g.end(buf)
    return SearchArgs(SearchKey("AND", tuple(keys)), charset, returns, partial)
