"""CONTEXT=SORT and CONTEXT=SEARCH (RFC 5267 §4): SORT and SEARCH results
that stay updated, a mixin of protocols/imap/session.py's ImapSession
(through sorting.SortCommands).

``SORT RETURN (UPDATE ...)`` keeps the command's program and sort criteria
as an updating context under its tag (§4.3); each time the session sends
the selected folder's untagged updates (``SessionCore._sync``: after every
command) and the folder's messages or flags changed since the context's
last result, the program is run again (sorting.py: the shared columns make
that a pass over the folder's kept keys) and the difference is sent as
``* ESEARCH (TAG "t") [UID] REMOVEFROM (pos set)`` before the EXPUNGE and
EXISTS responses (§4.3.4: the numbers still valid) and ``ADDTO (pos set)``
after them (§4.3.3), positions in the requested order, so that a client
applying them in order holds the new result.  ``CANCELUPDATE`` (§4.3.5)
ends contexts; deselecting the folder ends them all.  ``CONTEXT`` (§4.2)
is a hint, taken and ignored; ``PARTIAL low:high`` (§4.4) returns that
slice of the sorted result.

``SEARCH RETURN (UPDATE ...)`` (selected.py) keeps its program the same
way, its result in mailbox order (§4.1); its updates name context position
0 (§4.3.3, §4.3.4: "wherever they occur", the client keeps mailbox order),
one ascending set each, the shortest form, as the RFC's own SEARCH examples
show (``UID ADDTO (0 32768:32769)``).  A program reading the messages' text
(BODY, TEXT, HEADER...) is run again on the messages new or changed since
its last result alone, when each key's answer depends on the message alone
(``per_message``); else, and when the folder's columns answer it, on all.
EMAILID / THREADID keys are resolved again at each re-run (objectid.py).
PARTIAL with UPDATE (§4.4; RFC 9394 §3.1 says the same): the answer is the
slice, the updates cover every result.  The ESEARCH command of MULTISEARCH
refuses UPDATE with NOUPDATE (multisearch.py).

A program holding message sequence numbers or ``$`` gets no updates
(RFC 5267 §4.3.1 NOUPDATE): RFC 5267 §4.3's errata rule evaluates such
numbers once, which a re-run would not.  While IDLE runs, the updates come
as the folder changes (RFC 5267 §4.3.2), computed beside the waiting IDLE
command.
"""

from __future__ import annotations

import datetime
import operator
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from protocols.imap import grammar as g
from protocols.imap import search_columns, search_eval, wire
from protocols.imap.search import SearchArgs, SearchKey
from protocols.imap.selected import _uses_dates
from protocols.imap.session_base import Refusal

# Ours: updating contexts per session; RFC 5267 §4.3.1 asks for at least
# one; a few cover a client's views (Dovecot allows a handful as well).
MAX_CONTEXTS = 5
_NOUPDATE_TEXT = "Too many update contexts"
# Keys whose answer for a message depends on more than that message: its
# number, the largest UID (``*``), the clock (RFC 5032 §3), this session's
# \Recent (RFC 3501 §2.3.2).  A SEARCH context holding one runs on all again.
_NOT_PER_MESSAGE = frozenset(("SEQ", "UID", "OLDER", "YOUNGER", "RECENT", "NEW", "OLD"))


@dataclass
class Context:
    """One SORT RETURN (UPDATE) (RFC 5267 §4.3)."""
    tag: bytes
    uid: bool                                  # UID SORT: UIDs in the updates
    criteria: Tuple[Tuple[str, bool], ...]
    charset: str
    key: SearchKey
    view: object                               # the view it belongs to (a new SELECT ends it)
    result: List[int]                          # UIDs in the sort order, as the client holds them
    seen: Tuple[list, list, frozenset]         # (uids, metas, gone) the result was computed from
    search: bool = False                       # SEARCH: mailbox order, updates at position 0


def counts_positions(key: SearchKey) -> bool:
    """True when the program holds message sequence numbers or ``$``."""
    if key.op == "SEQ" or (key.op == "UID" and key.args[0].saved):
        return True
    return any(counts_positions(a) for a in key.args if isinstance(a, SearchKey))


def per_message(key: SearchKey) -> bool:
    """True when whether a message matches ``key`` depends on that message alone."""
    if key.op in _NOT_PER_MESSAGE:
        return False
    return all(per_message(a) for a in key.args if isinstance(a, SearchKey))


def partial(numbers: Sequence[int], low: int, high: int) -> Sequence[int]:
    """RFC 5267 §4.4: the results ``low`` to ``high`` (1-based, inclusive)."""
    return numbers[low - 1:high]


def removals(old: List[int], new_set) -> List[Tuple[int, List[int]]]:
    """REMOVEFROM pairs taking ``old`` to the members in ``new_set``: each
    a 1-based position and the run of results removed from there, applied
    in order (RFC 5267 §4.3.4)."""
    out: List[Tuple[int, List[int]]] = []
    kept = 0
    for uid in old:
        if uid in new_set:
            kept += 1
        elif out and out[-1][0] == kept + 1:
            out[-1][1].append(uid)
        else:
            out.append((kept + 1, [uid]))
    return out


def additions(kept_set, new: List[int]) -> List[Tuple[int, List[int]]]:
    """ADDTO pairs taking the results in ``kept_set`` (in ``new``'s order)
    to ``new``: each a 1-based position and the run inserted there, applied
    in order (RFC 5267 §4.3.3)."""
    out: List[Tuple[int, List[int]]] = []
    for i, uid in enumerate(new):
        if uid in kept_set:
            continue
        if out and out[-1][0] + len(out[-1][1]) == i + 1:
            out[-1][1].append(uid)
        else:
            out.append((i + 1, [uid]))
    return out


def update_response(tag: bytes, uid: bool, item: bytes, pairs, number) -> bytes:
    """``* ESEARCH (TAG "t") [UID] ADDTO|REMOVEFROM (pos set pos set ...)``."""
    from protocols.imap.sorting import ordered_set     # (sorting.py imports this module)
    body = b" ".join(b"%d %s" % (pos, ordered_set([number(u) for u in run])) for pos, run in pairs)
    return b"* ESEARCH (TAG " + wire.quoted(tag) + b")" + (b" UID" if uid else b"") + \
        b" " + item + b" (" + body + b")\r\n"


class SortContexts:
    """The updating contexts of SORT (see the module docstring)."""

    def _contexts(self) -> Dict[bytes, Context]:
        contexts = self.__dict__.setdefault("_sort_contexts", {})
        if contexts and any(c.view is not self._view for c in contexts.values()):
            for tag in [t for t, c in contexts.items() if c.view is not self._view]:
                del contexts[tag]                       # §4.3: updates end with the selection
        return contexts

    def _view_seen(self) -> Tuple[list, list, frozenset]:
        view = self._view
        return list(view.uids), list(view.metas), frozenset(view.gone)

    def _add_context(self, head, sa, order_uids: List[int]) -> Optional[bytes]:
        """Keep an updating context for this SORT (``sa``: sort_args.SortArgs)
        or SEARCH (search.SearchArgs, before objectid.py resolved it); the
        untagged NO [NOUPDATE] (RFC 5267 §4.3.1) when it cannot be kept, else None."""
        contexts = self._contexts()
        if len(contexts) >= MAX_CONTEXTS or counts_positions(sa.key):
            text = _NOUPDATE_TEXT if len(contexts) >= MAX_CONTEXTS else \
                "No updates for a program with message numbers"
            return wire.status_line(None, b"NO", text, wire.response_code("NOUPDATE", wire.quoted(head.tag)))
        search = isinstance(sa, SearchArgs)
        contexts[head.tag] = Context(head.tag, head.uid, () if search else sa.criteria, sa.charset, sa.key,
                                     self._view, list(order_uids), self._view_seen(), search)
        return None

    def _cmd_cancelupdate(self, head):
        """RFC 5267 §4.3.5: CANCELUPDATE tag *(SP tag), each a quoted tag."""
        tags, buf = [], head.rest
        while True:
            tag, buf = g.quoted(g.sp(buf))
            tags.append(tag)
            if bytes(buf[:1]) != b" ":
                break
        g.end(buf)
        contexts = self._contexts()
        unknown = [t for t in tags if t not in contexts]
        if unknown:
            raise g.ImapParseError("Unknown update context %s" % unknown[0].decode("ascii", "replace")[:40])
        for tag in tags:
            del contexts[tag]
        return None

    def _sync(self, allow_expunge: bool):
        """SessionCore._sync with the contexts' updates around its flush
        (REMOVEFROM before, ADDTO after: RFC 5267 §4.3.3, §4.3.4): the
        folder refreshed first as SessionCore._sync does, so that its own
        call only flushes (or refreshes again if the folder changed while
        the contexts were computed: their next update then covers that)."""
        contexts = self._contexts() if self._folder is not None else {}
        if not contexts:
            yield from super()._sync(allow_expunge)
            return
        if self._dirty:
            self._dirty = False
            folder = self._folder
            changes = yield folder.refresh
            self._took_changes(folder, changes)
        if self._view is None:
            return
        changed = yield from self._context_changes()
        self._emit_removals(changed)
        seen = self._view_seen()
        refreshes = self._dirty             # SessionCore._sync will take newer changes first
        yield from super()._sync(allow_expunge)
        if self._view is not None:
            self._emit_additions(changed, seen if refreshes else None)

    def _context_changes(self):
        """[(context, its new result or the Refusal that stopped it)] for the
        contexts whose folder view changed since their last result."""
        view, changed = self._view, []
        for ctx in list(self._contexts().values()):
            if not ctx.uid and not all(map(view.has, ctx.result)):
                # expunged and already announced: the client dropped those
                # numbers with the EXPUNGE; they have none to name now
                ctx.result = [uid for uid in ctx.result if view.has(uid)]
            if self._view_changed(ctx.seen):
                try:
                    new = yield from (self._searched_uids(ctx) if ctx.search else
                                      self._sorted_uids(ctx.criteria, ctx.charset, ctx.key))
                except Refusal as exc:          # the disk failed: this context ends, said so
                    new = exc
                changed.append((ctx, new))
        return changed

    def _searched_uids(self, ctx: Context):
        """A SEARCH context's new result: its program run again as SEARCH
        runs it (EMAILID / THREADID resolved now: RFC 8474 §6)."""
        sa = yield from self._objectid_search(SearchArgs(ctx.key, ctx.charset))
        if search_columns.usable(sa.key) or not per_message(sa.key):
            return (yield from self._sort_search(ctx.charset, sa.key))
        return (yield from self._search_changed(ctx, sa.key))

    def _search_changed(self, ctx: Context, key: SearchKey):
        """The program on the messages whose metadata changed (a new object,
        as ``_view_changed`` compares) or that are new since ``ctx.seen``; the
        others keep their place in or out of ``ctx.result`` (RFC 5267 §4.5:
        a cache kept up to date as the mailbox changes)."""
        view = self._view
        before = dict(zip(ctx.seen[0], ctx.seen[1]))
        result, gone, recent = set(ctx.result), view.gone, view.recent
        kept, rows = [], []
        for i, (uid, meta) in enumerate(zip(view.uids, view.metas)):
            if uid in gone:
                continue
            if before.get(uid) is meta:
                if uid in result:
                    kept.append(uid)
            else:
                rows.append((i + 1, uid, meta, uid in recent))
        if not rows:
            return kept
        now = self.ctx.clock()
        sctx = search_eval.SearchContext(
            largest_seq=len(view), largest_uid=view.uids[-1] if view.uids else 0, saved=(), now=now,
            charset=search_eval.check_charset(ctx.charset),
            tz=datetime.datetime.fromtimestamp(now).astimezone().tzinfo)
        if _uses_dates(key):
            yield from self._load_dates([row[1] for row in rows])
            rows = [(n, uid, view.metas[n - 1], r) for n, uid, _m, r in rows]     # the dates now loaded
        hits = yield from self._search_each(key, rows, sctx)
        return sorted(kept + hits)

    def _emit_removals(self, changed) -> None:
        """REMOVEFROM (RFC 5267 §4.3.4), before the EXPUNGEs; a context that
        failed ends with NO [NOUPDATE]."""
        contexts = self._contexts()
        for ctx, new in changed:
            if isinstance(new, Refusal):
                contexts.pop(ctx.tag, None)
                self._emit(wire.status_line(None, b"NO", "Updates stopped: %s" % new.text,
                                            wire.response_code("NOUPDATE", wire.quoted(ctx.tag))))
                continue
            gone = removals(ctx.result, set(new))
            if ctx.search and gone:     # §4.3.4: position 0, removed wherever they are
                gone = [(0, [uid for _pos, run in gone for uid in run])]
            if gone:
                self._emit(update_response(ctx.tag, ctx.uid, b"REMOVEFROM", gone, self._number_of(ctx)))

    def _emit_additions(self, changed, seen) -> None:
        """ADDTO (RFC 5267 §4.3.3), after the EXISTS; the contexts' results
        and the view they now follow (``seen``; None: the view as it is)."""
        for ctx, new in changed:
            if isinstance(new, Refusal):
                continue
            if not ctx.uid and not all(map(self._view.has, new)):
                new = [uid for uid in new if self._view.has(uid)]     # expunged by a newer refresh
            added = additions(set(ctx.result), new)
            if ctx.search and added:    # §4.3.3: position 0, inserted in mailbox order
                added = [(0, sorted(uid for _pos, run in added for uid in run))]
            if added:
                self._emit(update_response(ctx.tag, ctx.uid, b"ADDTO", added, self._number_of(ctx)))
            ctx.result = new
        seen = seen or self._view_seen()
        for ctx in self._contexts().values():
            ctx.seen = seen

    # -- while IDLE runs (RFC 5267 §4.3.2: updates "when the client is using IDLE") --

    def _idle_refresh(self) -> None:
        """SessionCore._idle_refresh, with the contexts' updates: the refresh
        and the contexts' new results computed first (that may read the
        disk), then REMOVEFROM, the flush, ADDTO in one go, unless DONE came
        meanwhile (the command's _sync then sends what is due)."""
        if self._folder is None or not self._contexts():
            super()._idle_refresh()
            return
        self._dirty = False
        self._idle_refreshing = True
        self._run_aside(self._idle_updates(self._folder))

    def _idle_updates(self, folder):
        try:
            changes = yield folder.refresh
            if self._closing or folder is not self._folder:
                return
            self._took_changes(folder, changes)
            changed = yield from self._context_changes()
        finally:
            self._idle_refreshing = False
        if self._closing or not self._idling or folder is not self._folder or self._view is None:
            return
        self._emit_removals(changed)
        self._emit(self._view.flush(True))          # RFC 2177 §3: EXPUNGE allowed while idling
        self._emit_additions(changed, None)
        if self._dirty:
            self._idle_refresh()

    def _run_aside(self, gen) -> None:
        """Drive ``gen`` (yields functions taking ``done``, as commands do)
        beside the running command (IDLE, waiting for its DONE)."""
        def step(value):
            while True:
                try:
                    call = gen.send(value)
                except StopIteration:
                    return
                box: list = []
                waiting = [False]

                def done(result, box=box, waiting=waiting):
                    if waiting[0]:
                        waiting[0] = False
                        if self._closing:
                            gen.close()
                            return
                        try:
                            step(result)
                        except Exception:
                            self._fatal("Internal server error")     # a bug, as SessionCore._resumed
                            raise
                        finally:
                            self.ctx.wake()
                    elif not box:
                        box.append(result)
                call(done)
                if not box:
                    waiting[0] = True
                    return
                value = box[0]
        step(None)

    def _view_changed(self, seen) -> bool:
        view = self._view
        uids, metas, gone = seen
        return (len(uids) != len(view.uids) or gone != view.gone or uids != view.uids
                or any(map(operator.is_not, metas, view.metas)))

    def _number_of(self, ctx: Context):
        if ctx.uid:
            return lambda uid: uid
        view = self._view
        return view.seq
