"""SEARCH over a whole folder at once, for programs whose only content keys
are the envelope keys FROM / TO / CC / BCC / SUBJECT (RFC 9051 §6.4.4),
pure functions.

The session keeps, per folder and shared by its sessions
(``OpenFolder.shared``), each message's kept envelope values
(search_kept.py), taken from the cache entries as they pass (FETCH, SEARCH):
a message's values depend on its content alone, and a UID names one content
for as long as the UIDVALIDITY holds (RFC 9051 §2.3.1.1).  ``select`` then
answers a program with one pass per key over the candidate messages: an
envelope key is an octet search in each item (search_kept.field_has), AND
narrows the candidates key by key, OR and NOT combine the answers, and every
other key (flags, sets, sizes, dates, MODSEQ...) is search_eval.matches on
the message's metadata.  The answers are search_eval.matches's, message by
message (tests/test_imap_search_columns.py compares them).
"""

from __future__ import annotations

from typing import Container, List, NamedTuple, Optional, Sequence

from protocols.backend.contracts import MessageMeta
from protocols.imap import search_eval, search_kept
from protocols.imap.search import SearchKey

# The name of the shared per-folder dict (OpenFolder.shared): UID -> the
# message's kept item (bytes), or None when its entry has none in the
# separator form (a header over derived.MAX_HEADER, a value holding a
# separator): such messages are evaluated one by one.
COLUMN = "imap-search-kept-v1"
# Ours: UIDs expunged from a folder kept in its column before they are dropped.
PRUNE_SLACK = 1000
_SEPARATORS = (search_kept.FIELD_SEP, search_kept.VALUE_SEP)
# Keys whose answer depends on the message's flags alone (RFC 9051 §6.4.4).
_FLAG_ONLY = frozenset({"ANSWERED", "UNANSWERED", "DELETED", "UNDELETED", "DRAFT", "UNDRAFT", "FLAGGED",
                        "UNFLAGGED", "SEEN", "UNSEEN", "KEYWORD", "UNKEYWORD"})


def usable(key: SearchKey) -> bool:
    """True when every content key inside ``key`` is an envelope key."""
    if key.op in ("AND", "OR", "NOT"):
        return all(usable(k) for k in key.args)
    return key.op in search_eval.ENVELOPE_KEYS or key.op not in search_eval.CONTENT_KEYS


def reads_kept(key: SearchKey) -> bool:
    """True when an envelope key is inside ``key``."""
    if key.op in ("AND", "OR", "NOT"):
        return any(reads_kept(k) for k in key.args)
    return key.op in search_eval.ENVELOPE_KEYS


def note(column: dict, entries: dict) -> None:
    """Keep the items of these cache entries (``{uid: entry}``, derived.py) in
    ``column``: a UID's item never changes, so one already kept stays."""
    for uid, entry in entries.items():
        if uid not in column:
            raw = entry.get(search_kept.KEPT_ITEM)
            column[uid] = raw if search_kept.plain(raw) else None


def prune(column: dict, uids: Sequence[int]) -> None:
    """Drop the UIDs below the highest of ``uids`` (ascending: a session's
    view) that are not among them (expunged), once there are many."""
    if not uids or len(column) <= len(uids) + PRUNE_SLACK:
        return
    live, top = set(uids), uids[-1]
    for uid in [u for u in column if u < top and u not in live]:
        del column[uid]


class Rows(NamedTuple):
    """The messages ``select`` looks at, by position (sequence number - 1)."""
    uids: Sequence[int]
    metas: Sequence[MessageMeta]
    recent: Container[int]                 # UIDs \\Recent for this session
    kept: Optional[Sequence[bytes]]        # each one's kept item (search_kept.plain) when reads_kept


def select(key: SearchKey, cand: List[int], rows: Rows, ctx: search_eval.SearchContext) -> List[int]:
    """The positions among ``cand`` (ascending) of the messages matching
    ``key`` (``usable``), ascending."""
    if not cand:
        return cand
    op = key.op
    if op == "AND":
        for k in sorted(key.args, key=lambda k: not reads_kept(k)):    # the narrowest first
            cand = select(k, cand, rows, ctx)
        return cand
    if op == "OR":
        first = select(key.args[0], cand, rows, ctx)
        taken = set(first)
        rest = select(key.args[1], [i for i in cand if i not in taken], rows, ctx)
        return sorted(first + rest) if rest else first
    if op == "NOT":
        taken = set(select(key.args[0], cand, rows, ctx))
        return [i for i in cand if i not in taken]
    if op in search_eval.ENVELOPE_KEYS:
        return _envelope(key, cand, rows, ctx)
    if op == "ALL":
        return cand
    if op in ("SEQ", "UID"):
        return _in_set(key.args[0], op == "UID", cand, rows, ctx)
    uids, metas, recent, match = rows.uids, rows.metas, rows.recent, search_eval.matches
    if op not in _FLAG_ONLY:
        return [i for i in cand if match(key, i + 1, metas[i], uids[i] in recent, None, ctx)]
    answers: dict = {}          # one answer per set of flags (most messages share a few)
    out = []
    for i in cand:
        flags = metas[i].flags
        hit = answers.get(flags)
        if hit is None:
            hit = answers[flags] = match(key, i + 1, metas[i], uids[i] in recent, None, ctx)
        if hit:
            out.append(i)
    return out


def _envelope(key: SearchKey, cand: List[int], rows: Rows, ctx) -> List[int]:
    needle = search_eval.needle_of(key.args[0], ctx)
    kept = rows.kept
    if any(sep in needle for sep in _SEPARATORS):     # rare: the values one by one
        uids, metas, recent = rows.uids, rows.metas, rows.recent
        item, match = search_kept.KEPT_ITEM, search_eval.matches
        return [i for i in cand
                if match(key, i + 1, metas[i], uids[i] in recent, b"", ctx, {item: kept[i]})]
    index = search_kept.FIELD_INDEX[search_eval.ENVELOPE_KEYS[key.op]]
    raw = needle.encode("utf-8", "surrogatepass")
    has = search_kept.field_has
    if not raw:
        return [i for i in cand if has(kept[i], raw, index)]
    return [i for i in cand if raw in kept[i] and has(kept[i], raw, index)]


def _in_set(seqset, uid: bool, cand: List[int], rows: Rows, ctx) -> List[int]:
    """A sequence set or UID set (RFC 9051 §6.4.4); ``$`` is the saved result,
    kept as UIDs (RFC 5182 §2.1), as search_eval._Message.in_set has it."""
    uids = rows.uids
    if seqset.saved:
        saved = frozenset(ctx.saved)
        return [i for i in cand if uids[i] in saved]
    ranges = search_eval._Ranges(seqset, ctx.largest_uid if uid else ctx.largest_seq)
    if uid:
        return [i for i in cand if uids[i] in ranges]
    return [i for i in cand if i + 1 in ranges]
