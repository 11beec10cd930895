"""IMAP selected state (RFC 9051 §6.4): CLOSE, UNSELECT (RFC 3691), EXPUNGE and
UID EXPUNGE (RFC 4315 §2.1), SEARCH (with ESEARCH, RFC 4731, and SEARCHRES,
RFC 5182; MODSEQ, RFC 7162 §3.1.5; RETURN (UPDATE), RFC 5267 §4.3, kept by
sort_context.py), STORE (UNCHANGEDSINCE and [MODIFIED],
RFC 7162 §3.1.3), COPY and MOVE (RFC 6851) with COPYUID (RFC 4315 §3), a
mixin of protocols/imap/session.py's ImapSession; FETCH is in fetching.py,
the CONDSTORE / QRESYNC / UIDONLY state in condstore.py.

Message numbers are this session's (view.py); each command works on UIDs and
the backend's OpenFolder; what it changed comes back into the view, and the
untagged responses go out before the tagged reply when RFC 9051 §7.5.1
allows (``SessionCore._sync``).
"""

from __future__ import annotations

import datetime
import logging

from protocols.imap import args as A
from protocols.imap import search as S
from protocols.imap import derived, search_columns, search_eval, wire
from protocols.imap.condstore import has_modseq_key
from protocols.imap.fetching import CACHE_BATCH, FetchCommands
from protocols.imap.mailboxes import check_flags
from protocols.imap.session_base import BAD, NO, OK, check_name

log = logging.getLogger("mailsrv.imap")

_STORE_MODES = {"": "replace", "+": "add", "-": "remove"}   # RFC 9051 §6.4.6
_READ_ONLY = (NO, "Mailbox is read-only", wire.response_code("READ-ONLY"))
# Keys that read INTERNALDATE or SAVEDATE (RFC 9051 §6.4.4, RFC 5032, RFC 8514 §4.3).
# Ours: the octets of the messages one SEARCH BODY / TEXT step reads at once
# (read_many; CACHE_BATCH messages of the usual 10-100 KiB stay below it).
READ_BATCH_OCTETS = 32 * 1024 * 1024
_DATE_OPS = frozenset(("BEFORE", "ON", "SINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE", "OLDER", "YOUNGER"))


def _uses_dates(key) -> bool:
    if key.op in _DATE_OPS:
        return True
    return any(_uses_dates(a) for a in key.args if isinstance(a, S.SearchKey))


class SelectedCommands(FetchCommands):
    """The selected-state handlers (see the module docstring)."""

    # -- leaving (RFC 9051 §6.4.1, §6.4.2) -------------------------------------

    def _cmd_close(self, head):
        """RFC 9051 §6.4.1: expunge silently (read-write only), then deselect."""
        A.no_args(head.rest)
        # RFC 4314 §4: without "e" CLOSE skips the expunge and still answers OK
        if not self._folder.readonly and getattr(self._folder, "allows", lambda right: True)("e"):
            removed = yield from self._ask(self._folder.expunge, list(self._view.uids))
            self.counts["expunged"] += len(removed)
        self._deselect()
        return None

    def _cmd_unselect(self, head):
        """RFC 3691 §2, RFC 9051 §6.4.2: deselect without expunging."""
        A.no_args(head.rest)
        self._deselect()
        return None

    def _deselect(self) -> None:
        self._close_folder()
        self.state = type(self.state).AUTHENTICATED

    # -- EXPUNGE (RFC 9051 §6.4.3, RFC 4315 §2.1) -----------------------------------

    def _cmd_expunge(self, head):
        view = self._view
        if head.uid:
            uids = view.resolve(A.sequence_only(head.rest), True)
        else:
            A.no_args(head.rest)
            uids = list(view.uids)
        if self._folder.readonly:
            return _READ_ONLY
        if uids:    # the backend removes only those with \Deleted
            removed = yield from self._ask(self._folder.expunge, uids)
            view.expunged(removed)
            self.counts["expunged"] += len(removed)
            code = yield from self._expunge_modseq(removed)     # RFC 7162 §3.2.7, §3.2.9
            if code:
                return (OK, "%s completed" % head.name, code)
        return None

    # -- SEARCH (RFC 9051 §6.4.4, RFC 4731, RFC 5182) ----------------------------------

    def _cmd_search(self, head):
        sa = asked = S.search_args(head.rest)
        update = sa.returns is not None and "UPDATE" in sa.returns
        if update and head.tag in self._contexts():
            return (BAD, "Tag reuse", None)             # RFC 5267 §4.3
        sa = yield from self._objectid_search(sa)     # RFC 8474 §6 (objectid.py)
        if self.utf8 and sa.charset is not None:
            return (BAD, "No CHARSET after ENABLE UTF8=ACCEPT", None)   # RFC 6855 §3
        try:
            charset = search_eval.check_charset(sa.charset)
        except search_eval.SearchCharsetError:
            return (NO, "Unsupported charset", wire.response_code("BADCHARSET", [b"US-ASCII", b"UTF-8"]))
        self._check_search_numbers(sa.key)     # RFC 9586 §3.5
        if has_modseq_key(sa.key):
            self._condstore_on()            # RFC 7162 §3.1: a CONDSTORE enabling command
        view = self._view
        now = self.ctx.clock()
        # dates are compared on the server's calendar, as Dovecot does (search_eval.py)
        local = datetime.datetime.fromtimestamp(now).astimezone().tzinfo
        ctx = search_eval.SearchContext(
            largest_seq=len(view), largest_uid=view.uids[-1] if view.uids else 0,
            saved=tuple(self._saved), now=now, charset=charset, tz=local)
        self._work_goal(len(view))          # RFC 9585 progress: messages evaluated
        if _uses_dates(sa.key):
            yield from self._load_dates([u for u in view.uids if u not in view.gone])
        if search_columns.usable(sa.key):
            hits = yield from self._search_columns(sa.key, ctx)
        else:
            gone, recent = view.gone, view.recent
            rows = [(i + 1, uid, meta, uid in recent) for i, (uid, meta) in enumerate(zip(view.uids, view.metas))
                    if uid not in gone]    # RFC 2180 §4.3: expunged by another session, not reported
            hits = yield from self._search_each(sa.key, rows, ctx)
        modseq = None
        if hits and has_modseq_key(sa.key):     # RFC 7162 §3.1.5, §3.1.10: the hits' highest
            modseq = max(view.meta(u).modseq for u in hits)
        if sa.partial is not None:      # RFC 9394 §3.1 (partial.py)
            self._partial_answer(head, sa.returns, sa.partial, hits, modseq)
        else:
            self._search_answer(head, sa.returns, hits, modseq)
        if update:      # RFC 5267 §4.3, §4.3.1 (sort_context.py)
            self._emit(self._add_context(head, asked, hits) or b"")
        return None

    def _load_dates(self, uids):
        """The backend's dates of ``uids`` made ready before a command reads them
        (contracts.OpenFolder.load_dates: a worker step; optional)."""
        load = getattr(self._folder, "load_dates", None)
        if load is not None and uids:
            yield from self._ask(load, list(uids))

    def _search_columns(self, key, ctx):
        """A program whose only content keys are envelope keys, over the whole
        folder at once (search_columns.py): the kept values from the folder's
        shared column, which the cache fills for the messages it lacks; a
        message without kept values is evaluated alone, a message gone is left
        out (RFC 2180 §4.1), as one expunged by another session (§4.3)."""
        view = self._view
        uids, metas, gone = list(view.uids), list(view.metas), view.gone
        cand = [i for i, uid in enumerate(uids) if uid not in gone] if gone else list(range(len(uids)))
        kept, slow = None, []
        if search_columns.reads_kept(key):
            column = self._folder.shared(search_columns.COLUMN)
            missing = [uids[i] for i in cand if uids[i] not in column]
            for start in range(0, len(missing), CACHE_BATCH):
                yield from self._derived(missing[start:start + CACHE_BATCH])   # noted in the column
                self._work_step(min(CACHE_BATCH, len(missing) - start))
            search_columns.prune(column, uids)
            kept = [column.get(uid, False) for uid in uids]
            if None in kept or False in kept:
                slow = [(i + 1, uids[i], metas[i], uids[i] in view.recent) for i in cand if kept[i] is None]
                cand = [i for i in cand if kept[i]]
        rows = search_columns.Rows(uids, metas, view.recent, kept)
        hits = [uids[i] for i in search_columns.select(key, cand, rows, ctx)]
        if slow:
            hits = sorted(hits + (yield from self._search_each(key, slow, ctx)))
        return hits

    def _search_each(self, key, rows, ctx):
        """Message by message (search_eval.matches): the header block from the
        cache for header-only keys (derived.py), else the message."""
        content = search_eval.needs_content(key)
        cached = content and derived.header_only(key)
        hits = []
        for start in range(0, len(rows), CACHE_BATCH):
            batch = rows[start:start + CACHE_BATCH]
            entries = (yield from self._derived([row[1] for row in batch])) if cached else {}
            read = {} if cached or not content else (yield from self._read_batch(batch))
            for seq, uid, meta, recent in batch:
                data, kept = read.get(uid), None
                if cached:      # the header block is the message for header-only keys (derived.py)
                    data = entries.get(uid, {}).get("HEADER")
                    if data is None and uid not in entries:
                        continue
                    kept = entries[uid] if data is not None else None
                if content and data is None:
                    data = yield from self._read(uid)
                    if data is None:
                        continue
                if search_eval.matches(key, seq, meta, recent, data, ctx, kept):
                    hits.append(uid)
            self._work_step(len(batch))
        return hits

    def _read_batch(self, rows):
        """The messages of ``rows`` read in one worker step when the backend
        can (contracts.OpenFolder.read_many) and they are small enough together
        (READ_BATCH_OCTETS); else {} (``_read`` one by one)."""
        many = getattr(self._folder, "read_many", None)
        if many is None or sum(row[2].size for row in rows) > READ_BATCH_OCTETS:
            return {}
        return (yield from self._ask(many, [row[1] for row in rows]))

    def _derived(self, uids, *args, **kwargs):
        """FetchCommands._derived, each entry's kept envelope values noted in
        the folder's shared column on the way (search_columns.note): a SEARCH
        FROM / SUBJECT... after a FETCH of ENVELOPE decodes nothing."""
        entries = yield from super()._derived(uids, *args, **kwargs)
        search_columns.note(self._folder.shared(search_columns.COLUMN), entries)
        return entries

    def _search_answer(self, head, returns, hits, modseq=None) -> None:
        """SEARCH (rev1 without RETURN) or ESEARCH (RFC 4731 §3.1, RFC 9051
        §7.3.4); RETURN (SAVE) keeps the UIDs for ``$`` (RFC 5182 §2.1)."""
        numbers = hits if head.uid else [self._view.seq(u) for u in hits]
        if returns is not None and "SAVE" in returns:
            saved = hits
            if hits and ("MIN" in returns or "MAX" in returns) and not (
                    "ALL" in returns or "COUNT" in returns):
                saved = sorted(set(([hits[0]] if "MIN" in returns else [])
                                   + ([hits[-1]] if "MAX" in returns else [])))
            self._saved = tuple(saved)
            returns = tuple(r for r in returns if r not in ("SAVE", "CONTEXT", "UPDATE"))
            if not returns:
                return      # RFC 5182 §2.1: SAVE alone sends no ESEARCH (nor with UPDATE, RFC 5267 §4.3)
        if returns is None and not self.rev2:
            self._emit(search_eval.search_response(numbers, modseq))
        else:
            self._emit(search_eval.esearch(head.tag, head.uid, numbers, returns or ("ALL",), modseq))

    # -- STORE (RFC 9051 §6.4.6) ---------------------------------------------------------

    def _cmd_store(self, head):
        sa = A.store(head.rest)
        check_flags(sa.flags)
        view = self._view
        uids = view.resolve(sa.sequence, head.uid, self._saved)
        if self._folder.readonly:
            return _READ_ONLY
        if sa.unchanged_since is not None:
            self._condstore_on()            # RFC 7162 §3.1: a CONDSTORE enabling command
        if not uids:
            return None
        outcome = yield from self._ask(self._folder.store, uids, list(sa.flags), _STORE_MODES[sa.mode],
                                       sa.unchanged_since)
        keywords = view.note_keywords(sa.flags)
        # RFC 9051 §6.4.6: a FETCH (FLAGS) per message unless .SILENT, built in one pass;
        # none for those that failed UNCHANGEDSINCE (RFC 7162 §3.1.3)
        failed = set(outcome.modified)
        done = [u for u in uids if u not in failed] if failed else uids
        fetches = view.stored(outcome.changed, done, head.uid, sa.silent, sa.unchanged_since is not None)
        self._emit(keywords)
        self._emit(fetches)
        self.counts["stored"] += len(uids)
        code = self._modified_code(outcome.modified, head.uid)
        if code:
            return (OK, "Conditional STORE failed for some messages", code)   # RFC 7162 §3.1.3
        return None

    # -- COPY / MOVE (RFC 9051 §6.4.7, RFC 6851, RFC 4315 §3) --------------------------------

    def _cmd_copy(self, head):
        return (yield from self._copy(head, move=False))

    def _cmd_move(self, head):
        return (yield from self._copy(head, move=True))

    def _copy(self, head, move: bool):
        seqset, target = A.copy(head.rest, self.utf8)
        check_name(target)
        view = self._view
        uids = view.resolve(seqset, head.uid, self._saved)
        if move and self._folder.readonly:
            return _READ_ONLY
        if not uids:
            return (OK, "No messages", None)
        out = yield from self._ask(self._folder.copy, uids, target, move)
        self.counts["copied"] += len(out.uid_map)
        if target == self._folder.name:
            self._dirty = True
        code = None
        if out.uid_map:
            src = wire.sequence_set(a for a, _ in out.uid_map)
            dst = wire.sequence_set(b for _, b in out.uid_map)
            code = wire.response_code("COPYUID", b"%d %s %s" % (out.uidvalidity, src, dst))
        if not move:
            return (OK, "COPY completed", code)
        if code:    # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs
            self._emit(wire.status_line(None, b"OK", "Moved", code))
        view.expunged(out.expunged)
        return (OK, "MOVE completed", None)
