"""One Maildir folder: the only way a mailbox changes (sync, append, copy, move,
flags and keywords, expunge), each change returning what changed.

IMAP (RFC 3501 / RFC 9051) and POP3 (RFC 1939, through store/maildrop.py) use
this module; both number messages by the UIDs of RFC 3501 §2.3.1.1 kept in
Dovecot's own ``dovecot-uidlist`` (formats in store/dovecot_files.py), so
Dovecot and mailsrv can serve one Maildir at once:

* Every change holds the folder's lock in this process and Dovecot's
  ``dovecot-uidlist.lock`` dotlock between processes (Dovecot's own
  processes, other mailsrv processes).  The calls block on the disk: run them
  on worker threads, never on the event loop.
* ``sync()`` scans new/ and cur/, gives new files UIDs in delivery order and
  *appends* their records to the uidlist, as Dovecot does; the uidlist is
  rewritten (tmp + rename) only to compact it once many records name files
  that are gone, or once to store sizes measured for old records.  A uidlist
  made anew (the first sync of a folder nobody indexed) is written once,
  whole, with its records, as Dovecot does; that sync works column by column
  (store/folder_bulk.py: ~10 µs a message where one at a time took ~40).  When
  nothing changed (same stat of new/, cur/, the uidlist and the keywords file,
  none touched within MTIME_SLACK_S) it costs four stat calls.  APPEND, flag
  changes and EXPUNGE work from the last snapshot (a file renamed meanwhile is
  looked up again) and list the folder only for a UID they do not know;
  ``note_delivered`` gives a delivery's files their UIDs the same way.
* Flags are the ``:2,`` info letters (maildir-spec: S R F T D P, ASCII order);
  keywords (RFC 3501 §2.3.2) are the letters a-z of ``dovecot-keywords``
  (26 per folder, Dovecot's limit); a 27th keyword is refused.
* MODSEQ (RFC 7162) in store/modseq.py: every append and flag/keyword change
  gets a new one.  Dovecot keeps its modseqs in its index files, which we do
  not write: when Dovecot (or mutt) changes flags behind our back, the next
  sync sees the file name differ from the journal's letters and bumps the
  message's MODSEQ then; a message Dovecot expunged is logged as expunged at
  that sync.
* Sizes (RFC 1939 §11, RFC 3501 RFC822.SIZE): the size with CRLF line ends:
  ``,W=`` in the name, else the uidlist's ``W`` field, else the file is read
  once and the size cached in the uidlist's ``W`` field (as Dovecot does).  A
  name with only ``,S=`` is *not* trusted: Courier, maildrop and procmail
  write LF files with ``S=``.
* APPEND, COPY, MOVE and EXPUNGE are durable before they return: file fsync,
  rename, directory fsync.  A flag change is a rename not fsync'd (as Dovecot
  does): an OS crash may undo it, never lose a message.  MOVE copies (hard link when possible) and fsyncs the
  target before it removes the source, so a crash leaves the message in the
  source, the target or both, never in neither.

Left out: Maildir++ quota, the per-message cache of IMAP (ENVELOPE, ...).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from store import dovecot_files as dv
from store.folder_types import (Appended, Copied, Expunged, FlagChange, Message, Snapshot,  # noqa: F401
                                StoreResult, SyncResult, apply_mode, check_flags, order_key,
                                sort_keys, split_name, stat_sig, stored_form, unique_base, valid_keyword)
from store.folder_bulk import gc_paused
from store.folder_imap import ImapMixin
from store.folder_snapshot import SnapshotMixin
from store.folder_uidlist import UidlistMixin
from store.fsutil import fsync_dir, write_all, write_atomic
from store.modseq import ModseqLog

log = logging.getLogger("mailsrv.store.folder")

# A directory changed this close to "now" may change again within one mtime
# tick, so its cached scan is not trusted (FAT: 2 s ticks; ext3, HFS+: 1 s).
MTIME_SLACK_S = 2.0
# Folder objects kept per process, least recently used dropped first (ours).
MAX_OPEN_FOLDERS = 1000


# -- the registry: one Folder object per folder and process -------------------------
_open: "collections.OrderedDict[str, Folder]" = collections.OrderedDict()
_open_lock = threading.Lock()


def open_folder(path: str) -> "Folder":
    """The Folder for a Maildir folder (the root for INBOX, ``.Name`` for the rest),
    shared by every thread of this process; least recently used ones are dropped."""
    real = os.path.realpath(path)
    with _open_lock:
        folder = _open.get(real)
        if folder is None:
            folder = _open[real] = Folder(path)
            while len(_open) > MAX_OPEN_FOLDERS:
                _open.popitem(last=False)
        else:
            _open.move_to_end(real)
        return folder


def forget_folder(path: str) -> None:
    """Drop the shared Folder of a folder deleted or renamed away (its state names old paths)."""
    with _open_lock:
        _open.pop(os.path.realpath(path), None)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Folder(SnapshotMixin, UidlistMixin, ImapMixin):
    """One Maildir folder; use ``open_folder`` to share it within a process."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._fresh = False        # the UIDVALIDITY was made by this process just now
        self._unwritten = False    # the uidlist was made anew in this change and is not on disk yet
        self._added: List[Tuple[List[str], List[int]]] = []   # (keys, sizes) of the records just made
        self._header: Optional[dv.Header] = None
        self._records: Dict[str, dv.Record] = {}     # key → record (dead ones too)
        self._uidlist_sig: Optional[Tuple[int, int, int]] = None
        self._uidlist_parsed = 0
        self._sizes_dirty = False
        self._kw: Dict[int, str] = {}
        self._kw_sig: Optional[Tuple[int, int, int]] = None
        self._modseq = ModseqLog(path)
        self._snap: Optional[Snapshot] = None
        self._by_key: Dict[str, Message] = {}         # the last snapshot's messages by key
        self._pos: Optional[Dict[str, int]] = None    # key → index in the last snapshot's messages (made when needed)
        self._found: Dict[str, Tuple[str, str, str]] = {}   # the last scan, kept up to date by our changes
        self._kw_built: object = None                 # the keywords file the snapshot was built with
        self._sig: Optional[tuple] = None
        self._own: Optional[tuple] = None             # the token right after our own change (see _stale)

    # -- change detection ------------------------------------------------------------
    def token(self) -> tuple:
        """What ``changed_since`` compares: the stat of new/, cur/, the uidlist, the keywords."""
        return tuple(stat_sig(os.path.join(self.path, n)) for n in ("new", "cur", dv.UIDLIST, dv.KEYWORDS))

    def changed_since(self, token: tuple) -> bool:
        """True when a writer (this process, another one, Dovecot, mutt) may have changed the
        folder since ``token`` was taken: cheap, four stat calls, no lock, no directory listing."""
        now = self.token()
        if now != token:
            return True
        recent = (time.time() - MTIME_SLACK_S) * 1e9
        return any(sig is not None and sig[0] >= recent for sig in now)

    def _stale(self) -> bool:
        """Whether the snapshot may miss a change (a sync must list the folder).  A token
        that moved since the last scan, or one within MTIME_SLACK_S (a change in the same
        mtime tick would not show), means yes; except the token our own last change left
        (``_own``, set only when the folder had nothing unseen before it): while it is
        young, what the directories hold is what our snapshot says.  Once it is no longer
        young and still the same, one scan is made anyway: another process may have
        changed the folder between our look before the change and the token after it,
        or within its mtime tick, and that scan sees it."""
        now = self.token()
        recent = (time.time() - MTIME_SLACK_S) * 1e9
        young = any(sig is not None and sig[0] >= recent for sig in now)
        if self._own is not None and now == self._own:
            return not young
        return now != self._sig or young

    def _own_done(self, clean: bool) -> None:
        """After our own change (lock held): ``clean``, the folder had nothing unseen
        before it (``not _stale()`` then), so its token now is ours (see ``_stale``)."""
        self._own = self.token() if clean else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The folder's lock, then the dotlock (re-entrant within one thread)."""
        with self._lock:
            lock = dv.Dotlock(os.path.join(self.path, dv.UIDLIST)) if not self._depth else None
            if lock is not None:
                lock.acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if lock is not None:
                    if self._unwritten:
                        self._forget_unwritten()     # a change that failed midway
                    lock.release()

    # -- sync --------------------------------------------------------------------------
    def sync(self, rescan: bool = False) -> SyncResult:
        """Scan the folder, give new messages UIDs (RFC 3501 §2.3.1.1), record MODSEQs;
        returns the snapshot and what changed since this process's last sync.  ``rescan``:
        list the directories even when nothing seems changed (a file of the snapshot was
        not found: renamed by another process within an mtime tick of our own change)."""
        with self._lock:
            if self._snap is not None and not rescan and not self._stale():
                return SyncResult(self._snap)
            with self._locked():
                return self._sync_locked()

    def snapshot(self) -> Snapshot:
        return self.sync().snapshot

    def _sync_locked(self) -> SyncResult:
        with gc_paused(self._snap is None):          # a first snapshot: every message made at once
            return self._sync_listed()

    def _sync_listed(self) -> SyncResult:
        sig = self.token()[:2]                       # before the scan: a later change shows
        self._own = None
        self._load_uidlist()
        self._load_keywords()
        found = self._scan()
        if any(k not in found for k in self._by_key):
            # readdir may skip a file renamed during the listing (Dovecot's doc, "Locking"): look twice.
            found.update((k, v) for k, v in self._scan().items() if k not in found)
        records = self._records
        new_keys = [k for k in found if k not in records]
        if new_keys:
            self._add_records(sort_keys(new_keys), found)
        self._flush_new_uidlist()
        result = self._build(found)
        self._found = found
        self._maybe_compact(found)
        self._sig = sig + (stat_sig(os.path.join(self.path, dv.UIDLIST)),
                           stat_sig(os.path.join(self.path, dv.KEYWORDS)))
        return result

    def _current(self) -> SyncResult:
        """The snapshot, synced first unless nothing changed (lock held)."""
        if self._snap is not None and not self._stale():
            return SyncResult(self._snap)
        return self._sync_locked()

    # -- keywords ------------------------------------------------------------------
    def _load_keywords(self) -> None:
        path = os.path.join(self.path, dv.KEYWORDS)
        sig = stat_sig(path)
        if sig == self._kw_sig:
            return
        try:
            with open(path, "rb") as f:
                self._kw = dv.parse_keywords(f.read().decode("utf-8", "surrogateescape"))
        except FileNotFoundError:
            self._kw = {}
        self._kw_sig = sig

    def _keywords_of(self, letters: str) -> frozenset:
        return frozenset(self._kw[dv.letter_index(c)] for c in letters
                         if c.islower() and dv.letter_index(c) in self._kw)

    def _letters_for(self, keywords: Iterable[str]) -> str:
        """Keyword letters, adding new keywords to dovecot-keywords (dotlock held)."""
        self._load_keywords()
        have = {w: i for i, w in self._kw.items()}
        wanted = sorted(set(keywords))
        missing = [w for w in wanted if w not in have]
        for w in missing:
            if not valid_keyword(w) or w.startswith("\\"):
                raise ValueError("not a keyword atom: %r" % w)
            free = [i for i in range(dv.MAX_KEYWORDS) if i not in self._kw]
            if not free:
                raise ValueError("%s already has %d keywords (Dovecot's limit)" % (self.path, dv.MAX_KEYWORDS))
            self._kw[free[0]] = w
            have[w] = free[0]
        if missing:
            path = os.path.join(self.path, dv.KEYWORDS)
            try:
                before: Optional[int] = int(os.stat(path).st_mtime)
            except FileNotFoundError:
                before = None
            write_atomic(path, dv.format_keywords(self._kw), tmp="%s.tmp.%d" % (path, os.getpid()))
            # Dovecot re-reads dovecot-keywords only when its mtime, in whole seconds, grew
            # (maildir-keywords.c: "mtime must grow every time"): a rewrite within the same
            # second is pushed one second on, or Dovecot shows the new keyword as unknown.
            if before is not None and int(os.stat(path).st_mtime) <= before:
                os.utime(path, (before + 1, before + 1))
            self._kw_sig = stat_sig(path)
        return "".join(dv.keyword_letter(have[w]) for w in wanted)

    # -- changes ------------------------------------------------------------------------
    def append(self, data: bytes, flags: str = "", keywords: Iterable[str] = (),
               internaldate: Optional[float] = None) -> Appended:
        """IMAP APPEND (RFC 3501 §6.3.11): durable (file and directory fsync) before it returns;
        ``internaldate`` becomes the file's mtime (Dovecot's INTERNALDATE)."""
        return self.append_many([(data, flags, keywords, internaldate)])[0]

    def append_many(self, items: Sequence[Tuple[bytes, str, Iterable[str], Optional[float]]]) -> List[Appended]:
        """MULTIAPPEND (RFC 3502 §6.3.11: all or none): every message written and fsync'd in
        tmp/ with its date set by utime (Dovecot sets the INTERNALDATE the same way, before
        the file is visible), then, under the locks, all renamed into cur/, the directory
        fsync'd and the UIDs appended to the uidlist.  A failure before the renames leaves
        nothing; one during them removes what was renamed."""
        staged: List[Tuple[str, str, Iterable[str]]] = []
        try:
            for data, flags, keywords, internaldate in items:
                staged.append((self._stage(data, internaldate), check_flags(flags), keywords))
            with self._locked():
                return self._publish(staged)
        except BaseException:
            for base, _f, _k in staged:
                _unlink_quiet(os.path.join(self.path, "tmp", base))
            raise

    def _stage(self, data: bytes, internaldate: Optional[float]) -> str:
        stored = stored_form(data)
        wire = len(stored) + stored.count(b"\n") - stored.count(b"\r\n")
        base = unique_base(len(stored), wire)
        tmp = os.path.join(self.path, "tmp", base)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, stored)
            os.fsync(fd)
        finally:
            os.close(fd)
        if internaldate is not None:
            os.utime(tmp, (internaldate, internaldate))
        return base

    def _publish(self, staged) -> List[Appended]:
        """Rename the staged files into cur/ (locks held): all, or none left behind."""
        if self._snap is None:
            self._sync_locked()
        clean = not self._stale()
        self._load_uidlist()                      # records other processes appended meanwhile
        names = [(base, "".join(sorted(set(flags) | set(self._letters_for(kw))))) for base, flags, kw in staged]
        done: List[str] = []
        try:
            for base, letters in names:
                os.rename(os.path.join(self.path, "tmp", base), os.path.join(self.path, "cur", base + ":2," + letters))
                done.append(base + ":2," + letters)
            fsync_dir(os.path.join(self.path, "cur"))
        except BaseException:
            for name in done:
                _unlink_quiet(os.path.join(self.path, "cur", name))
            raise
        found = {base: (os.path.join(self.path, "cur", base + ":2," + letters), letters, "") for base, letters in names}
        self._add_records([base for base, _l in names], found)
        result = self._after_own_change(found)
        self._own_done(clean)
        snap = result.snapshot
        msgs = [snap.by_uid(self._records[base].uid) for base, _l in names]
        return [Appended(m.uid, snap.uidvalidity, m.modseq, m.key) for m in msgs]

    def set_flags(self, uids: Iterable[int], flags: str, mode: str = "add",
                  unchanged_since: Optional[int] = None) -> StoreResult:
        """STORE [+-]FLAGS with system flag letters (RFC 3501 §6.4.6): ``mode`` add, remove, replace."""
        letters = check_flags(flags)
        return self._store(uids, lambda old: apply_mode(old, letters, mode, str.isupper), unchanged_since)

    def set_keywords(self, uids: Iterable[int], keywords: Iterable[str], mode: str = "add",
                     unchanged_since: Optional[int] = None) -> StoreResult:
        """STORE [+-]FLAGS with keywords (RFC 3501 §2.3.2); mode add, remove, replace."""
        with self._locked():
            letters = self._letters_for(keywords) if mode != "remove" else self._known_letters(keywords)
            return self._store(uids, lambda old: apply_mode(old, letters, mode, str.islower), unchanged_since)

    def _known_letters(self, keywords: Iterable[str]) -> str:
        self._load_keywords()
        have = {w: i for i, w in self._kw.items()}
        return "".join(dv.keyword_letter(have[w]) for w in keywords if w in have)

    def _store(self, uids, change, unchanged_since) -> StoreResult:
        """Rename each file to its new flags.  The last snapshot is enough to find the files
        (a file renamed meanwhile is looked up again), so no listing is needed unless a UID
        is unknown or UNCHANGEDSINCE needs the MODSEQs of now."""
        with self._locked():
            uids = list(uids)
            snap = self._known(uids, unchanged_since is not None)
            clean = not self._stale()
            modified, missing, updates = [], [], {}
            cur, answers = os.path.join(self.path, "cur", ""), {}    # a STORE 1:* meets few flag sets
            for uid in uids:
                msg = snap.by_uid(uid)
                if msg is None:
                    missing.append(uid)
                elif unchanged_since is not None and msg.modseq > unchanged_since:
                    modified.append(uid)          # RFC 7162 §3.1.3: not changed, reported MODIFIED
                else:
                    hit = self._rename(msg, change, cur, answers)
                    if hit is not None:
                        updates[msg.key] = hit
            if updates:                           # a rename for flags is not fsync'd (nor by Dovecot)
                snap = self._after_own_change(updates).snapshot
                self._own_done(clean)
            by_key = self._by_key if snap is self._snap else {m.key: m for m in snap.messages}
            changes = tuple(FlagChange(m.uid, m.flags, m.keywords, m.modseq)
                            for m in map(by_key.get, updates) if m is not None)
            return StoreResult(changes, tuple(modified), tuple(missing))

    def _known(self, uids: List[int], fresh: bool) -> Snapshot:
        """A snapshot that knows ``uids``: the last one, synced first when ``fresh`` is asked
        for, when there is none, or when a UID is unknown (another process gave it)."""
        if fresh or self._snap is None or None in map(self._snap.by_uid, uids):
            self._current()
        return self._snap

    def _rename(self, msg: Message, change, cur: str, answers: Dict[str, str]) -> Optional[Tuple[str, str, str]]:
        """Move the file to cur/<key>:2,<changed letters> (maildir-spec; ``cur``: that
        directory's path with its separator), following renames made meanwhile by others;
        its new scan entry, or None when unchanged or gone.  ``answers``: ``change``'s so far."""
        path = msg.path
        for _attempt in range(3):
            hit = self._found.get(msg.key)
            if hit is not None and hit[0] == path:
                _path, old, tail = hit          # the scan split this very name already
            else:
                _key, old, tail = split_name(os.path.basename(path))
            new = answers.get(old)
            if new is None:
                new = answers[old] = change(old)
            if new == old:
                return None
            target = cur + msg.key + ":2," + new + ("," + tail if tail else "")
            try:
                os.rename(path, target)
                return (target, new, tail)
            except FileNotFoundError:
                hit = self._scan().get(msg.key)
                if hit is None:
                    return None
                path = hit[0]
        return None

    def expunge(self, uids: Iterable[int]) -> Expunged:
        """Remove these messages (RFC 3501 §6.4.3, POP3 UPDATE RFC 1939 §6); a file already
        gone counts as removed; UIDs are never reused."""
        with self._locked():
            uids = list(uids)
            snap = self._known(uids, False)
            clean = not self._stale()
            done, failed, updates = [], [], {}
            for uid in uids:
                msg = snap.by_uid(uid)
                if msg is None or self._unlink(msg):
                    done.append(uid)
                    if msg is not None:
                        updates[msg.key] = None
                else:
                    failed.append(uid)
            for sub in ("new", "cur"):
                fsync_dir(os.path.join(self.path, sub))
            result = self._after_own_change(updates)
            self._own_done(clean)
            return Expunged(tuple(done), result.snapshot.highestmodseq, tuple(failed))

    def _unlink(self, msg: Message) -> bool:
        path = msg.path
        for _attempt in range(3):
            try:
                os.unlink(path)
                return True
            except FileNotFoundError:
                hit = self._scan().get(msg.key)
                if hit is None:
                    return True
                path = hit[0]
            except OSError as e:
                log.warning("cannot remove %s: %s", path, e)
                return False
        return False

    def copy(self, uids: Sequence[int], target: "Folder") -> Copied:
        """COPY (RFC 3501 §6.4.7): hard link (else a copy) into the target, fsync'd."""
        from store.folder_convert import copy_messages
        return copy_messages(self, uids, target)

    def move(self, uids: Sequence[int], target: "Folder") -> Tuple[Copied, Expunged]:
        """MOVE (RFC 6851): copy, durable in the target, then expunge from the source."""
        copied = self.copy(uids, target)
        return copied, self.expunge([src for src, _dst in copied.uid_map])

    def note_delivered(self, names: Iterable[str]) -> Dict[str, int]:
        """UIDs for messages a delivery just put in new/ (their file names), appended to the
        uidlist at once without listing the folder; returns key → UID.  For the Deliverer,
        after its file and directory fsync; the next ``sync()`` gives them their MODSEQ."""
        keys = [split_name(n)[0] for n in names]
        with self._locked():
            self._load_uidlist()
            fresh = [k for k in dict.fromkeys(keys) if k not in self._records]
            if fresh:
                self._add_records(sort_keys(fresh),
                                  {k: (os.path.join(self.path, "new", k), "", "") for k in fresh})
            self._flush_new_uidlist()
            return {k: self._records[k].uid for k in keys if k in self._records}

    def expunged_since(self, modseq: int) -> Tuple[List[int], bool]:
        """QRESYNC VANISHED (EARLIER) (RFC 7162 §3.2.10): see ModseqLog.expunged_since.
        Synced as ``sync`` does: no listing, no dotlock when nothing changed since the
        last look (every expunge, ours or another writer's, moves the folder's token)."""
        with self._lock:
            self.sync()
            return self._modseq.expunged_since(modseq)

