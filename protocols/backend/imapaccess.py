"""The IMAP side of the mail access service (contracts.ImapMailAccess).

An IMAP session (RFC 9051, RFC 3501) asks for a user's mailboxes
(``open_account``), and for one selected folder (``ImapAccount.open``).
Every step that touches the disk runs on the worker pool through
``loop.run_in_thread`` and answers through a completion callback on the loop
thread, one step after another per account and per open folder in the order
asked (as mailaccess.py's AsyncMaildrop does for POP3: issue 9 §2).  The store
does the work (store/mailboxes.py: the folder tree; store/folder.py: messages);
this module only translates:

* names: the contract's IMAP names go to store/mailboxes.py as they are; the
  change hub is keyed by the on-disk Maildir++ name ("a.b" for "a/b"), the
  key delivery and POP3 already announce INBOX under;
* flags: IMAP's system flags to the maildir-spec letters (\\Seen S,
  \\Answered R, \\Flagged F, \\Deleted T, \\Draft D, RFC 9051 §2.3.2) and
  keywords to Dovecot's letters through dovecot-keywords (store/folder.py);
  \\Recent is never stored (a session property, store/folder_imap.py); the mapping
  and STORE itself are in imapstore.py;
* errors: the store's exceptions become ``MailboxError`` with the response
  code of RFC 5530 / RFC 9051 §7.1 (NONEXISTENT, ALREADYEXISTS, CANNOT,
  HASCHILDREN, TRYCREATE, LIMIT, INUSE) and RFC 6154 §3 (USEATTR); other
  OSErrors are handed over as they are (the session answers NO, logs it).

Own changes (APPEND, STORE, EXPUNGE, COPY/MOVE, DELETE, RENAME) are announced
to the change hub once done, so the other sessions on the folder hear at
once; local delivery and POP3 announce INBOX themselves.  CREATE, DELETE,
RENAME and (UN)SUBSCRIBE are announced as name events (``announce_names``)
for NOTIFY's watchers (imapnotify.py, RFC 5465 §5.4, §5.5).

Per-user limit: at most ``max_userip`` accounts open for one user from one
address (Dovecot's mail_max_userip_connections, default 10); beyond it
``open_account`` answers ``MailboxError("LIMIT", ...)``.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from protocols.backend import derive_read
from protocols.backend.contracts import (AppendResult, CopyOutcome, FolderChanges, FolderEntry, FolderState,
                                         FolderStatus, MailboxError, MailboxEvent, MessageMeta, StoreOutcome)
from protocols.backend import imapnotify
from protocols.backend import imapquota
from protocols.backend import imapmetadata, objectids
from protocols.backend.imapconv import timestamp, translate
from protocols.backend.imapextras import AccountExtras, FolderExtras
from protocols.backend import imapstore
from protocols.backend.imapstore import (FLAG_LETTERS, LETTER_FLAGS, imap_flags, same_case,  # noqa: F401
                                         split_flags)
from protocols.backend.serial import SerialJobs
from store import mailboxes as mb
from store import msgcache
from store.folder_bulk import gc_paused
from store.maildir import MailStore

log = logging.getLogger("mailsrv.imap.access")
Done = Callable[[object], None]

# Dovecot's mail_max_userip_connections default: IMAP sessions of one user from one address.
MAX_USERIP_CONNECTIONS = 10
# Ours: UIDs per worker job of ``derived``: 10,000 messages are 40 round trips,
# and one job holds the folder's queue for a few hundred file reads at most.
DERIVED_BATCH = 256
# Folders whose message metadata is kept for sharing between sessions (ours: a
# 10,000-message folder's is about 3 MB; the least recently looked at fall out first).
SHARED_FOLDERS = 32


def hub_key(name: str) -> str:
    """The change hub's folder key: "INBOX", else the Maildir++ name without its dot."""
    name = mb.normalize(name)
    return "INBOX" if name == "INBOX" else mb.dir_name(mb.check_name(name))[1:]


class Serial:
    """A session's store steps in order (protocols/backend/serial.py), each store
    exception translated in the worker to what the session answers."""

    def __init__(self, loop):
        self._jobs = SerialJobs(loop)

    def submit(self, fn: Callable[[], object], done: Optional[Done], name: str = "") -> None:
        def job() -> object:
            try:
                return fn()
            except Exception as exc:
                mapped = translate(exc, name)
                if mapped is exc and isinstance(exc, MailboxError):
                    raise                   # a refusal the session answers (NO [TRYCREATE] ...)
                if mapped is exc:
                    log.warning("IMAP mailbox step failed mailbox=%s: %r", name or "-", exc)
                    raise
                raise mapped from exc
        self._jobs.submit(job, done)


class ImapAccessService:
    """``open_account`` for the IMAP sessions; one per server."""

    def __init__(self, loop, store: MailStore, hub, max_userip: int = MAX_USERIP_CONNECTIONS):
        self.loop = loop
        self.store = store
        self.hub = hub
        self.max_userip = max_userip
        self.quota = None       # protocols/backend/quota.py QuotaService (set by wiring.py), or none
        self._open: Dict[Tuple[str, str], int] = {}
        # Per folder (its path): the store snapshot last turned into MessageMeta, the tuple
        # built from it and uid -> (store message, meta).  Every session of that folder
        # shares them: 1,000 IDLE sessions on a 10,000-message INBOX hold one copy of the
        # metadata, not 1,000.  Built on workers without a lock: two workers racing build
        # two equal tuples and the last one stays (the dict operations are atomic).
        self.shared_metas: "OrderedDict[str, Tuple[object, Tuple[MessageMeta, ...], Dict[int, tuple]]]" = OrderedDict()
        # OpenFolder.shared: (folder path, UIDVALIDITY) -> name -> {uid: value}; loop thread only
        self.shared_values: "OrderedDict[Tuple[str, int], Dict[str, dict]]" = OrderedDict()

    def open_account(self, ctx, user: str, done: Done) -> None:
        """The user's account, made ready on a worker (Maildir, first-login folders)."""
        key = (user, ctx.peer_ip if ctx is not None else "")
        if self._open.get(key, 0) >= self.max_userip:
            refusal = MailboxError("LIMIT", "too many IMAP sessions for %s from %s (imap_max_userip_connections %d)"
                                   % (user, key[1], self.max_userip))
            self.loop.call_soon(lambda: done(refusal))
            return

        def work() -> mb.Mailboxes:
            return mb.user_mailboxes(self.store, user)

        self._open[key] = self._open.get(key, 0) + 1     # counted from now: opens in flight too

        def opened(result: object) -> None:
            if isinstance(result, BaseException):
                self._closed(key)
                done(result)
                return
            from protocols.backend.acl import AclAccount     # RFC 4314: built on this module's classes
            done(AclAccount(ImapAccount(self, user, result, lambda: self._closed(key))))
        self.loop.run_in_thread(work, opened)

    def _closed(self, key: Tuple[str, str]) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)

    def announce(self, user: str, name: str) -> None:
        try:
            key = hub_key(name)
        except mb.BadName:
            return                            # no such folder can exist: nobody watches it
        self.hub.announce(user, key)


class ImapAccount(AccountExtras):
    """contracts.ImapAccount over store/mailboxes.py (OBJECTID, METADATA: imapextras.py)."""

    def __init__(self, service: ImapAccessService, user: str, boxes: mb.Mailboxes, on_close):
        self.user = user
        self._service = service
        self._loop = service.loop
        self._boxes = boxes
        self._serial = Serial(service.loop)
        self._folders: List["OpenFolder"] = []
        self._on_close = on_close
        self.router = None      # acl.py's AclAccount (it wraps every account): resolves COPY/MOVE targets

    def _then_announce(self, names: Sequence[str], done: Done) -> Done:
        def answered(result: object) -> None:
            if not isinstance(result, BaseException):
                for name in names:
                    self._service.announce(self.user, name)
            done(result)
        return answered

    def _then_names(self, event: MailboxEvent, done: Done) -> Done:
        return imapnotify.then_names(self, event, done)

    def watch_mailboxes(self, messages: bool, callback) -> Callable[[], None]:
        """contracts.ImapAccount.watch_mailboxes (protocols/backend/imapnotify.py)."""
        return imapnotify.AccountWatch(self, messages, callback).stop

    def list(self, done: Done) -> None:
        """LIST (RFC 9051 §6.3.9): every mailbox, INBOX first."""
        def work():
            return tuple(FolderEntry(e.name, e.special_use, e.subscribed, e.exists, e.has_children)
                         for e in self._boxes.list())
        self._serial.submit(work, done)

    def create(self, name: str, special_use: Sequence[str], done: Done) -> None:
        """CREATE (RFC 9051 §6.3.4, RFC 6154 §3)."""
        uses = tuple(special_use)
        self._serial.submit(lambda: self._boxes.create(name, uses),
                            self._then_names(MailboxEvent("created", mb.normalize(name).rstrip("/")), done), name)

    def delete(self, name: str, done: Done) -> None:
        """DELETE (RFC 9051 §6.3.5): sessions that had it selected hear of it."""
        self._serial.submit(lambda: imapmetadata.deleting(self, name, lambda: imapquota.forget(
            self, self._boxes.delete(name))),
                            self._then_announce([name], self._then_names(MailboxEvent("deleted", name), done)),
                            name)

    def rename(self, old: str, new: str, done: Done) -> None:
        """RENAME (RFC 9051 §6.3.6)."""
        event = MailboxEvent("renamed", new, old) if mb.normalize(old) != "INBOX" else MailboxEvent("created", new)
        self._serial.submit(lambda: imapmetadata.renaming(self, old, new, lambda: self._boxes.rename(old, new)),
                            self._then_announce([old, new], self._then_names(event, done)), old)

    def subscribe(self, name: str, subscribed: bool, done: Done) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8)."""
        event = MailboxEvent("subscribed" if subscribed else "unsubscribed", mb.normalize(name))
        self._serial.submit(lambda: self._boxes.subscribe(name, subscribed), self._then_names(event, done), name)

    def status(self, name: str, done: Done) -> None:
        """STATUS (RFC 9051 §6.3.11): from the snapshot (file names), no message file read."""
        def work() -> FolderStatus:
            folder = self._boxes.folder(name)
            snap = folder.sync().snapshot
            first = folder.recent_from()
            msgs = snap.messages
            return FolderStatus(len(msgs), snap.uidnext, snap.uidvalidity,
                                sum(1 for m in msgs if "S" not in m.flags),
                                sum(1 for m in msgs if "T" in m.flags),
                                sum(m.size for m in msgs), sum(1 for m in msgs if m.uid >= first),
                                snap.highestmodseq, sum(m.size for m in msgs if "T" in m.flags),
                                mailbox_id=objectids.mailbox_id(folder))      # RFC 8474 §4.3
        self._serial.submit(work, done, name)

    def append(self, name: str, items, done: Done) -> None:
        """APPEND / MULTIAPPEND (RFC 9051 §6.3.12, RFC 3502): all or none, durable; a
        missing mailbox is TRYCREATE (RFC 9051 §6.3.12), never created."""
        items = list(items)

        def work() -> AppendResult:
            try:
                folder = self._boxes.folder(name)
            except mb.NoMailbox as e:
                raise MailboxError("TRYCREATE", str(e))
            batch = []
            for item in items:
                letters, keywords = split_flags(item.flags)
                keywords = same_case(folder.keywords(), keywords)
                batch.append((item.data, letters, keywords, timestamp(item.internal_date)))
            imapquota.check(self, sum(len(item.data) for item in items), len(items))   # RFC 9208 §4.3.1
            added = folder.append_many(batch)
            imapquota.note(self, imapquota.sizes_of(a.key for a in added), len(added))
            return AppendResult(added[0].uidvalidity if added else folder.snapshot().uidvalidity,
                                tuple(a.uid for a in added))
        self._serial.submit(work, self._then_announce([name], done), name)

    def open(self, name: str, readonly: bool, done: Done) -> None:
        """SELECT / EXAMINE (RFC 9051 §6.3.2, §6.3.3)."""
        def work():
            folder = self._boxes.folder(name)
            opened = OpenFolder(self, mb.normalize(name), readonly, folder)
            opened._state = opened._look(None)[0]
            return opened

        def answered(result: object) -> None:
            if isinstance(result, OpenFolder):
                self._folders.append(result)
            done(result)
        self._serial.submit(work, answered, name)

    def quota(self, done: Done) -> None:
        """GETQUOTA / GETQUOTAROOT (RFC 9208 §4.1.1, §4.1.2): protocols/backend/imapquota.py."""
        self._serial.submit(lambda: imapquota.state(self), done)

    def target(self, name: str):
        """A COPY/MOVE target among this account's folders (on a worker): TRYCREATE when missing."""
        try:
            return self._boxes.folder(name)
        except mb.NoMailbox as e:
            raise MailboxError("TRYCREATE", str(e))

    def close(self) -> None:
        for folder in list(self._folders):
            folder.close()
        self._folders = []
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class OpenFolder(FolderExtras):
    """contracts.OpenFolder: a selected folder of one session (EMAILID, PREVIEW: imapextras.py)."""

    def __init__(self, account: ImapAccount, name: str, readonly: bool, folder):
        self.name = name
        self.readonly = readonly
        self._account = account
        self._folder = folder
        self._serial = Serial(account._loop)
        self._state: Optional[FolderState] = None
        self._seen: object = None          # the store snapshot the last state was built from
        self._seen_first = 0               # EXAMINE: the first recent UID then
        self._watches: List[object] = []
        self._closed = False
        self._compact_checked: object = None   # the snapshot the cache's dead entries were counted for
        self._quiet = False                # announcing our own STORE: our watches are not called

    def state(self) -> FolderState:
        return self._state

    # -- building states (on a worker) ----------------------------------------------
    def _look(self, prev: Optional[FolderState]) -> Tuple[FolderState, Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        folder = self._folder
        snap = folder.sync().snapshot
        if self.readonly:
            first = folder.recent_from()      # EXAMINE claims nothing (RFC 3501 §6.3.2)
            if prev is not None and snap is self._seen and first == self._seen_first:
                return prev, (), (), ()       # the store's snapshot object is unchanged: so is ours
            self._seen_first = first
            recent = imapstore.recent_uids(snap.messages, first)
        elif prev is not None and snap is self._seen:
            return prev, (), (), ()           # same snapshot: no message, flag or \Recent change
        else:
            # nothing new since the last look: nothing to claim (no dotlock taken)
            fresh = prev is None or snap.uidnext != prev.uidnext or snap.uidvalidity != prev.uidvalidity
            first = folder.claim_recent(snap.uidnext) if fresh else snap.uidnext
            kept = prev.recent if prev is not None else frozenset()
            recent = imapstore.recent_uids(snap.messages, first, kept)
        self._seen = snap
        metas = self._metas_of(snap)
        state = FolderState(snap.uidvalidity, snap.uidnext, snap.highestmodseq, metas,
                            folder.keywords(), recent, mailbox_id=objectids.mailbox_id(folder))
        if prev is None:
            return state, (), (), ()
        old = prev.messages
        if len(metas) >= len(old) and all(a is b for a, b in zip(old, metas)):
            return state, tuple(m.uid for m in metas[len(old):]), (), ()    # the shared metas: only appended
        before = {m.uid: m for m in old}
        now = {m.uid for m in metas}
        new = tuple(m.uid for m in metas if m.uid not in before)
        gone = tuple(u for u in before if u not in now)
        changed = tuple(m.uid for m in metas if m.uid in before and
                        (before[m.uid].flags, before[m.uid].modseq) != (m.flags, m.modseq))
        return state, new, gone, changed

    def _metas_of(self, snap) -> Tuple[MessageMeta, ...]:
        """The snapshot's messages as MessageMeta, shared with every session of the folder
        (``ImapAccessService.shared_metas``); only messages new or changed since the
        previous snapshot are built again."""
        shared = self._account._service.shared_metas
        path = self._folder.path
        entry = shared.get(path)
        if entry is not None and entry[0] is snap:
            return entry[1]
        old = entry[2] if entry is not None else {}
        metas, cache, fresh = [], {}, []
        if not old:                         # a first open: every one new (no GC meanwhile: folder_bulk.py)
            with gc_paused():
                metas = imapstore.lazy_metas(self._folder, snap.messages, imap_flags)
                cache = dict(zip([m.uid for m in snap.messages], zip(snap.messages, metas)))
        for m in (snap.messages if old else ()):
            hit = old.get(m.uid)
            if hit is not None and (hit[0] is m or hit[0] == m):   # a rescan rebuilds equal tuples
                meta = hit[1]
                cache[m.uid] = hit
            else:
                meta = None                 # built below, all at once
                fresh.append((len(metas), m))
            metas.append(meta)
        if fresh:                           # dates when a command needs them (imapstore.LazyMeta)
            made = imapstore.lazy_metas(self._folder, [m for _i, m in fresh], imap_flags)
            for (i, m), meta in zip(fresh, made):
                metas[i] = meta
                cache[m.uid] = (m, meta)
        built = tuple(metas)
        if entry is not None and len(built) == len(entry[1]) and all(a is b for a, b in zip(built, entry[1])):
            built = entry[1]                # nothing changed: every session keeps the one tuple
        shared[path] = (snap, built, cache)
        try:
            shared.move_to_end(path)
            while len(shared) > SHARED_FOLDERS:
                shared.popitem(last=False)
        except KeyError:            # another worker trimmed it meanwhile: only a lost share
            pass
        return built

    def refresh(self, done: Done) -> None:
        """Sync: ``FolderChanges`` since the state last given to this session."""
        def work() -> FolderChanges:
            state, new, gone, changed = self._look(self._state)
            return FolderChanges(state, new, gone, changed)

        def answered(result: object) -> None:
            if isinstance(result, FolderChanges):
                self._state = result.state
            done(result)
        self._serial.submit(work, answered, self.name)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """The change hub (protocols/backend/hub.py): own process at once, others by its poll."""
        account = self._account
        handle = account._service.hub.subscribe(account.user, hub_key(self.name),
                                                lambda _u, _f: None if self._quiet else callback())
        self._watches.append(handle)

        def stop() -> None:
            handle.cancel()
            if handle in self._watches:
                self._watches.remove(handle)
        return stop

    def shared(self, name: str) -> Dict[int, object]:
        """contracts.OpenFolder.shared: kept per folder path and UIDVALIDITY, as the metadata."""
        shared = self._account._service.shared_values
        key = (self._folder.path, self._state.uidvalidity if self._state is not None else 0)
        values = shared.setdefault(key, {})
        shared.move_to_end(key)
        while len(shared) > SHARED_FOLDERS:
            shared.popitem(last=False)
        return values.setdefault(name, {})

    def load_dates(self, uids: Sequence[int], done: Done) -> None:
        """contracts.OpenFolder.load_dates: the files stat'ed on the worker (once per
        message and process, store/folder_imap.py ``dates``)."""
        uids = list(uids)

        def work() -> None:
            snap = self._folder.knowing(uids)
            self._folder.dates([m for m in map(snap.by_uid, uids) if m is not None])
        self._serial.submit(work, done, self.name)

    def read(self, uid: int, done: Done) -> None:
        """The message in CRLF form; None once it is gone (RFC 2180 §4.1)."""
        self._serial.submit(lambda: self._folder.read_crlf(uid), done, self.name)

    def read_many(self, uids: Sequence[int], done: Done) -> None:
        """contracts.OpenFolder.read_many: one worker job for all of ``uids``."""
        uids = list(uids)

        def work() -> Dict[int, bytes]:
            read = self._folder.read_crlf
            return {uid: data for uid, data in zip(uids, map(read, uids)) if data is not None}
        self._serial.submit(work, done, self.name)

    def derived(self, uids: Sequence[int], kind: str, compute: Callable[[bytes], Dict[str, bytes]],
                done: Done) -> None:
        """contracts.OpenFolder.derived over store/msgcache.py: one worker job
        per ``DERIVED_BATCH`` UIDs, the answers merged into one dict."""
        uids = list(uids)
        merged: Dict[int, Dict[str, bytes]] = {}

        def step(start: int) -> None:
            def answered(result: object) -> None:
                if isinstance(result, BaseException):
                    done(result)
                    return
                merged.update(result)
                if start + DERIVED_BATCH < len(uids):
                    step(start + DERIVED_BATCH)
                else:
                    done(merged)
            batch = uids[start:start + DERIVED_BATCH]
            self._serial.submit(functools.partial(self._derive, batch, kind, compute), answered, self.name)
        step(0)

    def _derive(self, uids: Sequence[int], kind: str, compute) -> Dict[int, Dict[str, bytes]]:
        """On the worker: cache hits by Maildir key, the misses read and computed.
        The UIDs' keys come from the folder's last snapshot (a rescan only for a
        UID it lacks): a message expunged by another process since may still be
        answered from the cache, which RFC 2180 §4.1.1 allows; a miss reads the
        file, and a file gone leaves the UID out (§4.1)."""
        folder = self._folder
        snap = folder.knowing(uids)
        keys = {}
        for uid in uids:
            msg = snap.by_uid(uid)
            if msg is not None:
                keys[uid] = msg.key
        cache = msgcache.cache_for(folder.path)
        try:
            hits = cache.get_many(keys.values(), kind)
        except OSError as exc:                # a cache: without it, compute (and say so)
            log.warning("message cache unusable folder=%s: %r", folder.path, exc)
            cache, hits = None, {}
        out: Dict[int, Dict[str, bytes]] = {}
        fresh = []
        for uid, key in keys.items():
            entry = hits.get(key)
            if entry is None:
                data = derive_read.message_for(folder, snap.by_uid(uid), uid, compute)
                if data is None:
                    continue                  # gone meanwhile (RFC 2180 §4.1)
                entry = compute(data)
                fresh.append((key, kind, entry))
            out[uid] = entry
        if cache is not None:
            self._keep(cache, fresh, snap)
        return out

    def _keep(self, cache, fresh, snap) -> None:
        """Store what was computed; compact when expunges left most entries dead."""
        try:
            cache.put_many(fresh)
            if snap is not self._compact_checked:     # look once per snapshot
                self._compact_checked = snap
                cache.compact(set(m.key for m in snap.messages))
        except OSError as exc:
            log.warning("message cache not written folder=%s: %r", self._folder.path, exc)

    def _refuse_readonly(self, done: Done) -> None:
        """RFC 9051 §6.3.3: EXAMINE permits no change; answered in order, on the loop."""
        refusal = MailboxError("CANNOT", "mailbox %s is read-only (selected with EXAMINE)" % self.name)
        self._serial.submit(lambda: refusal, lambda result: done(refusal))

    def _announce(self, names: Sequence[str], done: Done) -> Done:
        return self._account._then_announce(names, done)

    def store(self, uids: Sequence[int], flags: Sequence[str], mode: str,
              unchanged_since: Optional[int], done: Done) -> None:
        """STORE (RFC 9051 §6.4.6; RFC 7162 §3.1.3 UNCHANGEDSINCE)."""
        uids, flags = list(uids), list(flags)
        if self.readonly:
            self._refuse_readonly(done)
            return
        def answered(result: object) -> None:
            if isinstance(result, StoreOutcome):
                if self._state is not None:
                    self._state = imapstore.with_changes(self._state, result.changed)   # the session has them
                self._quiet = True              # the others hear at once; this session has the outcome
                try:
                    self._account._service.announce(self._account.user, self.name)
                finally:
                    self._quiet = False
            done(result)
        self._serial.submit(lambda: self._store(uids, flags, mode, unchanged_since), answered, self.name)

    def _store(self, uids, flags, mode, unchanged_since) -> StoreOutcome:
        shared = self._account._service.shared_metas.get(self._folder.path)
        return imapstore.store_flags(self._folder, uids, flags, mode, unchanged_since, shared)

    def expunge(self, uids: Sequence[int], done: Done) -> None:
        """EXPUNGE / UID EXPUNGE (RFC 9051 §6.4.3, RFC 4315 §2.1): only messages marked \\Deleted."""
        uids = list(uids)
        if self.readonly:
            self._refuse_readonly(done)
            return

        def work() -> Tuple[int, ...]:
            snap = self._folder.sync().snapshot
            marked = [u for u in uids if snap.by_uid(u) is not None and "T" in snap.by_uid(u).flags]
            gone = self._folder.expunge(marked).uids if marked else ()
            return imapquota.note_uids(self._account, snap, gone, -1)
        self._serial.submit(work, self._announce([self.name], done), self.name)

    def copy(self, uids: Sequence[int], target: str, move: bool, done: Done) -> None:
        """COPY (RFC 9051 §6.4.7) / MOVE (RFC 6851 §3): durable in the target first."""
        uids = list(uids)
        if move and self.readonly:
            self._refuse_readonly(done)
            return

        targets = self._account.router     # acl.py: the session user's names, own and shared, rights

        def work() -> CopyOutcome:
            dest = targets.target(target)
            into = targets.quota_account(target)       # another user's folder (acl.py): their quota
            across = into.user != self._account.user
            snap = imapquota.check_copy(into, self._folder, uids, move and not across)    # RFC 9208 §4.3.1
            if move:
                copied, gone = self._folder.move(uids, dest)
                targets.after_copy(target, dest, copied)
                if across:
                    imapquota.note_uids(into, snap, [s for s, _t in copied.uid_map], 1)
                    imapquota.note_uids(self._account, snap, gone.uids, -1)
                return CopyOutcome(copied.uidvalidity, copied.uid_map, gone.uids)
            copied = self._folder.copy(uids, dest)
            targets.after_copy(target, dest, copied)
            imapquota.note_uids(into, snap, [s for s, _t in copied.uid_map], 1)
            return CopyOutcome(copied.uidvalidity, copied.uid_map)

        def answered(result: object) -> None:
            if not isinstance(result, BaseException):
                self._account._service.announce(*targets.hub_of(target))
            done(result)
        self._serial.submit(work, self._announce([self.name] if move else [], answered), self.name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in list(self._watches):
            handle.cancel()
        self._watches = []
        folders = self._account._folders
        if self in folders:
            folders.remove(self)
