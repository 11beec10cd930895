"""SORT and THREAD arguments (RFC 5256 §5, RFC 5957 §4, RFC 5267 §3.1 ESORT's
RETURN), pure functions returning dataclasses.

    sort            = ["UID" SP] "SORT" [sort-return-opts] SP sort-criteria SP search-criteria
    sort-criteria   = "(" sort-criterion *(SP sort-criterion) ")"
    sort-criterion  = ["REVERSE" SP] sort-key
    sort-key        = "ARRIVAL" / "CC" / "DATE" / "FROM" / "SIZE" / "SUBJECT" / "TO"
                      / "DISPLAYFROM" / "DISPLAYTO"                  (RFC 5957 §4)
    thread          = ["UID" SP] "THREAD" SP thread-alg SP search-criteria
    search-criteria = charset 1*(SP search-key)

The search keys are SEARCH's (search.py); the charset is mandatory (RFC
5256 §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from protocols.imap import grammar as g
from protocols.imap.search import SearchKey, search_key

# RFC 5256 §5 sort-key; RFC 5957 §4 DISPLAYFROM / DISPLAYTO.
SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
# RFC 5256 §3 (ORDEREDSUBJECT, REFERENCES); REFS: Dovecot's (threads by
# References alone, ordered by their newest message: thread.py).
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES", "REFS")
# RFC 5267 §3.1 (ESORT: the ESEARCH options, RFC 4731 §3.1) and §4
# (CONTEXT=SORT: CONTEXT, UPDATE, PARTIAL).
SORT_RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "CONTEXT", "UPDATE", "PARTIAL")
# Ours: sort criteria in one command; the nine keys each once, reversed or
# not, is 9; more can only repeat one (harmless, but bounded).
MAX_CRITERIA = 32


@dataclass(frozen=True)
class SortArgs:
    criteria: Tuple[Tuple[str, bool], ...]   # (sort-key, reversed), in priority order
    charset: str
    key: SearchKey                          # an AND of the search keys
    returns: Optional[Tuple[str, ...]] = None   # RFC 5267 §3.1: None when no RETURN
    partial: Optional[Tuple[int, int]] = None   # RFC 5267 §4.4 PARTIAL low:high


@dataclass(frozen=True)
class ThreadArgs:
    algorithm: str
    charset: str
    key: SearchKey


def _name(buf: memoryview) -> Tuple[str, memoryview]:
    name, rest = g.atom(buf)
    return name.decode("ascii").upper(), rest


def _criterion(buf: memoryview) -> Tuple[Tuple[str, bool], memoryview]:
    """sort-criterion = ["REVERSE" SP] sort-key (RFC 5256 §5)."""
    name, rest = _name(buf)
    reverse = name == "REVERSE"
    if reverse:
        name, rest = _name(g.sp(rest))
    if name not in SORT_KEYS:
        raise g.ImapParseError("unknown sort key %r" % name[:30])
    return (name, reverse), rest


def _search_criteria(buf: memoryview) -> Tuple[str, SearchKey]:
    """search-criteria = charset 1*(SP search-key), then CRLF (RFC 5256 §5)."""
    raw, buf = g.astring(buf)
    charset = raw.decode("ascii", "replace").upper()
    keys = []
    while True:
        key, buf = search_key(g.sp(buf))
        keys.append(key)
        if bytes(buf[:1]) != b" ":
            break
    g.end(buf)
    return charset, SearchKey("AND", tuple(keys))


def _return_opt(buf: memoryview) -> Tuple[object, memoryview]:
    """sort-return-opt, with RFC 5267 §4.4's "PARTIAL" SP partial-range,
    partial-range = nz-number ":" nz-number (a PARTIAL is (low, high))."""
    name, rest = _name(buf)
    if name not in SORT_RETURN_OPTIONS:
        raise g.ImapParseError("unknown RETURN option %r" % name[:30])
    if name != "PARTIAL":
        return name, rest
    a, rest = g.nz_number(g.sp(rest))
    b, rest = g.nz_number(g.expect(b":", rest))
    return (min(a, b), max(a, b)), rest


def _return_opts(buf: memoryview) -> Tuple[Tuple[str, ...], Optional[Tuple[int, int]], memoryview]:
    """sort-return-opts = SP "RETURN" SP "(" [sort-return-opt *(SP
    sort-return-opt)] ")" (RFC 5267 §3.1); RETURN () means ALL (RFC 4731
    §3.1); at most one PARTIAL or ALL (RFC 5267 §4.4)."""
    opts, rest = g.paren_list(g.sp(g.expect(b"RETURN", buf)), _return_opt)
    ranges = [o for o in opts if isinstance(o, tuple)]
    names = tuple(dict.fromkeys(o for o in opts if not isinstance(o, tuple)))
    if len(ranges) + ("ALL" in names) > 1:
        raise g.ImapParseError("at most one PARTIAL or ALL")
    if ranges:
        names += ("PARTIAL",)
    if not any(n in names for n in ("MIN", "MAX", "ALL", "COUNT", "PARTIAL")):
        names += ("ALL",)    # RETURN () is ALL; CONTEXT / UPDATE alone too (RFC 5267 §4.3's B01 shows COUNT)
    return names, (ranges[0] if ranges else None), rest


def sort_args(buf: g.Buf) -> SortArgs:
    """What follows "SORT", CRLF included (RFC 5256 §5, RFC 5267 §3.1)."""
    buf = g.sp(buf)
    returns = partial = None
    if g.peek(buf, b"RETURN "):
        returns, partial, buf = _return_opts(buf)
        buf = g.sp(buf)
    criteria, buf = g.paren_list(buf, _criterion, allow_empty=False)
    if len(criteria) > MAX_CRITERIA:
        raise g.ImapParseError("more than %d sort criteria" % MAX_CRITERIA)
    charset, key = _search_criteria(g.sp(buf))
    return SortArgs(tuple(criteria), charset, key, returns, partial)


def thread_args(buf: g.Buf) -> ThreadArgs:
    """What follows "THREAD", CRLF included (RFC 5256 §5)."""
    name, buf = _name(g.sp(buf))
    if name not in THREAD_ALGORITHMS:
        raise g.ImapParseError("unknown threading algorithm %r" % name[:30])
    charset, key = _search_criteria(g.sp(buf))
    return ThreadArgs(name, charset, key)
