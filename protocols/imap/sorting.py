"""SORT and UID SORT (RFC 5256 §3 BASE.6.4.SORT, RFC 5957 SORT=DISPLAY,
RFC 5267 §3.1 ESORT's MIN / MAX / COUNT / ALL), THREAD and UID THREAD
(RFC 5256 §3 BASE.6.4.THREAD: ORDEREDSUBJECT, REFERENCES; Dovecot's REFS), a
mixin of protocols/imap/session.py's ImapSession.

Each command searches as SEARCH does (selected.py: the same columns and
caches), then reads each matched message's sort keys (sort_keys.py) from the
folder's shared column ``COLUMN`` (contracts.OpenFolder.shared: by UID, for
every session with the folder open), which the folder's disk cache fills for
the messages it lacks (``OpenFolder.derived``, kind sort_keys.KIND: the
header block read once, on the worker, and kept across restarts).  A second
SORT over the folder reads nothing.  Strings compare by i;unicode-casemap
(collation.py; RFC 5256 §7).  Untagged EXPUNGE is held during SORT and
THREAD, allowed during UID SORT and UID THREAD (RFC 5256 §3).

CONTEXT=SORT's updating contexts (RFC 5267 §4.3) are sort_context.py's.
"""

from __future__ import annotations

import datetime
from typing import List, Optional, Sequence, Tuple

from protocols.imap import search_columns, search_eval, sort_args, sort_keys, thread, wire
from protocols.imap.fetching import CACHE_BATCH
from protocols.imap.selected import _uses_dates
from protocols.imap.session_base import BAD, NO, Refusal
from protocols.imap.sort_context import SortContexts

# The shared per-folder dicts (OpenFolder.shared): UID -> sort_keys.Keys, and
# UID -> sort_keys.Dated for the messages only sorted by date so far.
COLUMN = "imap-sort-keys-v1"
DATE_COLUMN = "imap-sort-dates-v1"
# RFC 5256 §3, RFC 5957 §4, RFC 5267 §3.1, Dovecot's REFS (sort_args.py);
# I18NLEVEL=1 (RFC 5255 §4): SORT, THREAD and SEARCH's substring matching all
# compare by i;unicode-casemap (collation.py; search_eval.py, search_kept.py).
SORT_CAPABILITIES = [b"SORT", b"SORT=DISPLAY", b"ESORT", b"CONTEXT=SORT", b"THREAD=ORDEREDSUBJECT",
                     b"THREAD=REFERENCES", b"THREAD=REFS", b"I18NLEVEL=1"]
# The shared per-folder dict of the last answers (key 0, not a UID): a SORT or
# THREAD answer depends only on which messages matched and where they stand
# in the mailbox (every key is content or INTERNALDATE, fixed per UID,
# RFC 9051 §2.3.1.1), so an answer is kept with the matched UIDs and the
# mailbox's UIDs, and given again while both are the same.
RESULTS = "imap-sort-results-v1"
# Ours: answers kept per folder (a client repeats its few views).
MAX_RESULTS = 8
# sort-key -> the Keys field it reads (the others read the message's metadata).
_KEY_FIELDS = {"CC": "cc", "FROM": "from_", "SUBJECT": "subject", "TO": "to",
               "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}


class SortCommands(SortContexts):
    """SORT and THREAD (see the module docstring)."""

    def _cmd_sort(self, head):
        """RFC 5256 §3 BASE.6.4.SORT; RFC 5267 §3.1 RETURN (ESORT), §4
        CONTEXT, UPDATE (sort_context.py) and PARTIAL."""
        sa = sort_args.sort_args(head.rest)
        returns = sa.returns or ()
        if "UPDATE" in returns and head.tag in self._contexts():
            return (BAD, "Tag reuse", None)                  # RFC 5267 §4.3
        order = yield from self._sorted_uids(sa.criteria, sa.charset, sa.key)
        if order is None:
            return _BADCHARSET
        if head.uid:
            numbers = order
        else:
            seqs = {uid: n for n, uid in enumerate(self._view.uids, 1)}
            numbers = list(map(seqs.__getitem__, order))
        if sa.returns is None:
            self._emit(("* SORT %s\r\n" % " ".join(map(str, numbers)) if numbers else "* SORT\r\n").encode("ascii"))
        else:
            self._emit(esort(head.tag, head.uid, numbers, returns, sa.partial))
        if "UPDATE" in returns:
            self._emit(self._add_context(head, sa, order) or b"")
        return None

    def _sorted_uids(self, criteria, charset, key):
        """The UIDs matching ``key`` in the sort order of ``criteria``
        (RFC 5256 §3); None when the charset is not supported."""
        hits = yield from self._sort_search(charset, key)
        if hits is None:
            return None
        order = self._kept_answer(("SORT", criteria), hits)
        if order is None:
            rows = yield from self._sort_rows(hits, any(k in ("DATE", "ARRIVAL") for k, _ in criteria),
                                              all_dates=any(k == "ARRIVAL" for k, _ in criteria),
                                              dates_only=not any(k in _KEY_FIELDS for k, _ in criteria))
            order = [uid for uid, _pos, _keys, _meta in sort_rows(rows, criteria)]
            if len(rows) == len(hits):
                self._keep_answer(("SORT", criteria), hits, order)
        return order

    def _cmd_thread(self, head):
        """RFC 5256 §3 BASE.6.4.THREAD."""
        ta = sort_args.thread_args(head.rest)
        hits = yield from self._sort_search(ta.charset, ta.key)
        if hits is None:
            return _BADCHARSET
        what = ("THREAD", ta.algorithm, head.uid)
        answer = self._kept_answer(what, hits)
        if answer is None:
            rows = yield from self._sort_rows(hits, True)
            make = thread.Msg._make
            msgs = [make((uid if head.uid else pos + 1, pos,
                          meta.internal_date if keys.date is None else keys.date,   # RFC 5256 §2.2
                          keys.subject, keys.reply, keys.message_id, keys.refs)) for uid, pos, keys, meta in rows]
            answer = thread.render(thread.ALGORITHMS[ta.algorithm](msgs))
            if len(rows) == len(hits):
                self._keep_answer(what, hits, answer)
        self._emit(answer)
        return None

    def _kept_answer(self, what: tuple, hits: List[int]):
        """The answer kept for ``what`` (``RESULTS``) if the same messages
        matched in the same mailbox; else None."""
        kept = self._folder.shared(RESULTS).get(0, {}).get(what)
        if kept is not None and kept[0] == hits and kept[1] == self._view.uids:
            return kept[2]
        return None

    def _keep_answer(self, what: tuple, hits: List[int], answer) -> None:
        results = self._folder.shared(RESULTS).setdefault(0, {})
        results.pop(what, None)
        while len(results) >= MAX_RESULTS:
            results.pop(next(iter(results)))
        results[what] = (list(hits), list(self._view.uids), answer)

    def _sort_search(self, charset, key):
        """The UIDs matching the search criteria, ascending, as SEARCH finds
        them (selected.py); None when the charset is not supported (RFC 5256
        §3: US-ASCII and UTF-8 MUST be)."""
        try:
            charset = search_eval.check_charset(charset)
        except search_eval.SearchCharsetError:
            return None
        view = self._view
        now = self.ctx.clock()
        local = datetime.datetime.fromtimestamp(now).astimezone().tzinfo
        ctx = search_eval.SearchContext(
            largest_seq=len(view), largest_uid=view.uids[-1] if view.uids else 0,
            saved=tuple(self._saved), now=now, charset=charset, tz=local)
        if _uses_dates(key):
            yield from self._load_dates([u for u in view.uids if u not in view.gone])
        if search_columns.usable(key):
            return (yield from self._search_columns(key, ctx))
        gone, recent = view.gone, view.recent
        rows = [(i + 1, uid, meta, uid in recent) for i, (uid, meta) in enumerate(zip(view.uids, view.metas))
                if uid not in gone]
        return (yield from self._search_each(key, rows, ctx))

    def _sort_rows(self, uids: Sequence[int], dates: bool, all_dates: bool = False, dates_only: bool = False):
        """[(uid, position, Keys, MessageMeta)] of ``uids`` in mailbox order,
        the keys from the shared column, the cache filling what it lacks; a
        message gone meanwhile is left out (RFC 2180 §4.1).  ``dates``: the
        INTERNALDATE of those without a sent date (RFC 5256 §2.2) made
        readable, of all with ``all_dates`` (ARRIVAL).  ``dates_only``: a
        sort that reads no key but the date (DATE, ARRIVAL, SIZE): a message
        whose Keys are not kept gets a sort_keys.Dated, from the lighter
        cache entry (sort_keys.compute_date)."""
        column = self._folder.shared(COLUMN)
        if dates_only:          # Keys when kept already, else the sent date alone
            column = _Either(column, self._folder.shared(DATE_COLUMN))
        kind, compute, decode = ((sort_keys.DATE_KIND, sort_keys.compute_date, sort_keys.decode_date)
                                 if dates_only else (sort_keys.KIND, sort_keys.compute_sort, sort_keys.decode))
        missing = [uid for uid in uids if uid not in column]
        for start in range(0, len(missing), CACHE_BATCH):
            entries = yield from self._sort_entries(missing[start:start + CACHE_BATCH], kind, compute)
            for uid, entry in entries.items():
                keys = decode(entry)
                if keys is not None:
                    column[uid] = keys
        view = self._view
        for kept in ((column.first, column.second) if dates_only else (column,)):
            search_columns.prune(kept, view.uids)
        where = {uid: i for i, uid in enumerate(view.uids)}
        metas, get = view.metas, column.get
        rows = []
        for uid in uids:
            keys, pos = get(uid), where.get(uid)
            if keys is not None and pos is not None:
                rows.append((uid, pos, keys, metas[pos]))
        if dates:
            need = [r[0] for r in rows if all_dates or r[2].date is None]
            yield from self._load_dates(need)
            if need:   # the metas now carry the dates (contracts.OpenFolder.load_dates)
                rows = [(uid, pos, keys, view.metas[pos]) for uid, pos, keys, _m in rows]
        return rows

    def _sort_entries(self, uids: List[int], kind: str, compute):
        """``OpenFolder.derived`` of sort_keys.compute_sort (or compute_date): {uid: entry}."""
        result = yield lambda done: self._folder.derived(uids, kind, compute, done)
        if isinstance(result, BaseException):
            raise Refusal(NO, "Cannot read messages, try again", "UNAVAILABLE")
        return result


class _Either:
    """The Keys column, else the dates column: what a sort on dates reads
    (``in``, ``get``); what it fills goes to the dates column."""

    def __init__(self, first: dict, second: dict):
        self.first, self.second = first, second

    def __contains__(self, uid) -> bool:
        return uid in self.first or uid in self.second

    def get(self, uid, default=None):
        keys = self.first.get(uid)
        return keys if keys is not None else self.second.get(uid, default)

    def __setitem__(self, uid, value) -> None:
        self.second[uid] = value


_BADCHARSET = (NO, "Unsupported charset", wire.response_code("BADCHARSET", [b"US-ASCII", b"UTF-8"]))


def _sort_key(name: str):
    """The function giving a row's value for one sort-key (RFC 5256 §3)."""
    if name == "ARRIVAL":
        return lambda row: row[3].internal_date
    if name == "DATE":      # RFC 5256 §2.2: INTERNALDATE without a sent date
        return lambda row: row[3].internal_date if row[2].date is None else row[2].date
    if name == "SIZE":
        return lambda row: row[3].size
    index = sort_keys.Keys._fields.index(_KEY_FIELDS[name])
    return lambda row: row[2][index]


def sort_rows(rows: List[tuple], criteria: Sequence[Tuple[str, bool]]) -> List[tuple]:
    """``rows`` (in mailbox order) sorted by the criteria in priority order
    (RFC 5256 §3): one stable sort per criterion from the last to the first,
    so equal rows keep the mailbox order, the implicit last criterion;
    REVERSE reverses its criterion alone (a stable sort with ``reverse``
    keeps equal rows in their order)."""
    out = list(rows)
    for name, reverse in reversed(criteria):
        out.sort(key=_sort_key(name), reverse=reverse)
    return out


def ordered_set(numbers: Sequence[int]) -> bytes:
    """A sequence-set of ``numbers`` in their order, runs of consecutive
    ascending numbers as ranges (RFC 5267 §3.2: never a descending range)."""
    parts = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(b"%d" % numbers[i] if i == j else b"%d:%d" % (numbers[i], numbers[j]))
        i = j + 1
    return b",".join(parts)


def esort(tag: bytes, uid: bool, numbers: Sequence[int], returns: Sequence[str],
          partial: Optional[Tuple[int, int]] = None) -> bytes:
    """The ESEARCH response of an extended SORT (RFC 5267 §3.1): MIN and MAX
    are the first and last in the sort order, ALL the numbers in that order;
    PARTIAL (§4.4) the range asked and its slice of them, NIL when empty."""
    out = search_eval.esearch_parts(tag, uid, numbers, returns, ordered_set)
    if partial is not None:
        part = numbers[partial[0] - 1:partial[1]]
        out.append(b"PARTIAL (%d:%d %s)" % (partial[0], partial[1], ordered_set(part) if part else b"NIL"))
    return b"* " + b" ".join(out) + b"\r\n"

