"""Durable local delivery into Maildirs, with group-committed fsyncs.

Procedure per job (maildir(5) "How a message is delivered", made durable):

1. write ``Return-Path:`` (+ ``Delivered-To:``) + data into the first
   recipient's ``tmp/<unique>`` (``O_CREAT|O_EXCL``), fsync, close; the data
   is bytes or a source read in chunks (a queued message), never joined; a
   message received over SMTP was already written there as it arrived
   (``store/incoming.py``, ``DeliveryJob.spool``) and is only fsync'd;
2. hard-link that file into ``new/<unique>`` of every recipient (one write,
   links for the rest), the last one by rename (``_link_one``); across file
   systems (EXDEV) write a copy into that recipient's own ``tmp/``, fsync it,
   and link the copy;
3. after ALL jobs of the batch: fsync each distinct ``new/`` directory once
   (the Deliverer, under load, after the next batch's file fsyncs: see
   ``Deliverer._run_batch``);
   then each user's Maildir++ ``maildirsize`` (store/quota.py), if it exists,
   gets one ``bytes count`` line appended for what was linked;
4. the folder (store/folder.py ``note_delivered``) gives the new files
   their UIDs, appended to ``dovecot-uidlist`` now rather than at the next
   sync; a failure there is logged and does not fail the delivery (the
   message is safe on disk; the next sync assigns the UID).  The Deliverer
   does this step on a thread of its own after the results are reported,
   batched (see ``_UidNoter``): the 250 waits for the message's fsyncs, not
   for the uidlist's dotlock and fdatasync;
5. unlink the ``tmp/`` names left (a copy's; every one on failure); report
   each job's result.

Only complete, fsync'd files are ever linked into ``new/``, so a crash at any
instant leaves nothing half-written there (at worst an orphan in ``tmp/``,
which maildir readers clean after 36 hours, maildir spec).  On any error the
job's links in ``new/`` and its ``tmp/`` files are removed and ``ok=False``
is reported (the SMTP session answers 452 4.3.1, RFC 3463 §3.4).

Headers: ``Return-Path: <reverse-path>`` (RFC 5321 §4.4: the final delivery
MTA adds it; RFC 5322 §3.6.7 syntax, ``<>`` for the null path).
``Delivered-To: <user>`` only for single-recipient jobs.
DEVIATION(RFC 9228): one file is hard-linked to all recipients, and a
per-recipient Delivered-To would disclose Bcc recipients; Dovecot LMTP does
the same.

Errors are logged to "mailsrv.store" with the queue id and errno, never the
message.  All file-system calls go through a ``FileOps`` object so tests can
count fsyncs and inject faults.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from store import fsutil, quota
from store.folder import open_folder
from store.gang import Gang
from store.fsutil import AppendFile, read_chunks
from store.maildir import MailStore

log = logging.getLogger("mailsrv.store")

# Upper bound on jobs per batch: keeps one batch's latency bounded.
MAX_BATCH = 256
# I/O threads per Deliverer: concurrent fsyncs let the file system merge
# journal commits (measured here: 4 threads ~2x the serial rate under load).
IO_THREADS = 4
# Step 4 gathers deliveries this long before it writes their UIDs (ours: at one
# sender ~10 messages per dotlock + append + fdatasync instead of one; a reader
# never waits for it, its own sync gives a missing UID at once), or until
# MAX_BATCH names wait.
UID_NOTE_DELAY_S = 0.05
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@dataclass
class Spooled:
    """A message already written, in stored form with its Return-Path, to a
    file in the first user's ``tmp/`` (store/incoming.py); not yet fsync'd."""

    file: AppendFile     # lf=True: its wire_size is the size with CRLF line ends (W=)


@dataclass
class DeliveryJob:
    data: object         # message as on the wire (CRLF) without Return-Path/Delivered-To:
                         # bytes, or an object whose chunks() yields it in pieces
    return_path: str     # "" for <>
    users: List[str]     # canonical local users
    queue_id: str
    # the recipient as given (with its +tag) for the Delivered-To of a one-user job
    delivered_to: str = ""
    spool: Optional[Spooled] = None   # written already: data is ignored
    folder: str = ""     # Maildir++ folder ("Junk" for DMARC's quarantine); "" = INBOX


@dataclass
class DeliveryResult:
    ok: bool
    error: Optional[str] = None
    paths: List[str] = field(default_factory=list)   # files in new/, one per user


class FileOps:
    """The file-system calls delivery makes (a seam for fault injection)."""

    def create(self, path: str) -> int:
        return os.open(path, _OPEN_FLAGS, 0o600)

    def write_all(self, fd: int, data: bytes) -> None:
        fsutil.write_all(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        fsutil.fsync_dir(path)


DEFAULT_FS = FileOps()


def message_bytes(job: DeliveryJob) -> bytes:
    """The message as it goes on the wire: Return-Path (+ Delivered-To for one
    user) + data, CRLF line ends."""
    head = b"Return-Path: <" + job.return_path.encode("utf-8") + b">\r\n"
    if len(job.users) == 1:
        head += b"Delivered-To: " + (job.delivered_to or job.users[0]).encode("utf-8") + b"\r\n"
    return head + job.data


def stored_form(wire: bytes) -> bytes:
    """The stored form: LF line ends, as Unix mail tools (mutt, Dovecot, Postfix's
    local delivery) keep Maildir files.  Every protocol turns LF back into CRLF
    when it serves the file; the CRLF size travels in the name as ``,W=``."""
    return wire.replace(b"\r\n", b"\n")


def delivery_head(return_path: str, users: List[str], delivered_to: str = "") -> bytes:
    """Return-Path (+ Delivered-To for one user), CRLF line ends: what
    ``message_bytes`` puts before the data."""
    return message_bytes(DeliveryJob(b"", return_path, users, "", delivered_to))


def _data_chunks(data):
    """bytes, or the pieces of a source with ``chunks()`` (a queued message)."""
    return iter([data]) if isinstance(data, (bytes, bytearray)) else data.chunks()


class LfWriter:
    """Chunks of wire form (CRLF) in, stored form (LF) out, a CRLF split
    between two chunks included; counts both sizes."""

    def __init__(self, out: Callable[[bytes], None]):
        self.out = out
        self.wire_size = 0
        self._cr = False

    def write(self, data: bytes) -> None:
        self.wire_size += len(data)
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        if data:
            self.out(stored_form(data))

    def end(self) -> None:
        if self._cr:
            self._cr = False
            self.out(b"\r")


class _State:
    """Book-keeping for one job inside a batch."""

    __slots__ = ("job", "error", "tmps", "linked", "dirs")

    def __init__(self, job: DeliveryJob):
        self.job = job
        self.error: Optional[str] = None
        self.tmps: List[str] = []
        self.linked: List[str] = []
        self.dirs: List[str] = []

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = _describe(exc)
            log.error("delivery failed queue_id=%s users=%d: %s",
                      self.job.queue_id, len(self.job.users), self.error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return "%s (%s)" % (errno.errorcode.get(exc.errno, str(exc.errno)), exc.strerror)
    return str(exc) or type(exc).__name__


def _check_job(job: DeliveryJob) -> List[str]:
    """Recipients, de-duplicated; no CR/LF/NUL may reach a header line."""
    users = list(dict.fromkeys(job.users))
    if not users:
        raise ValueError("job without recipients")
    for text in [job.return_path, job.delivered_to] + users:
        if "\r" in text or "\n" in text or "\x00" in text:
            raise ValueError("control character in address")
    return users


def _box(store: MailStore, user: str, folder: str) -> str:
    """The Maildir a job goes to: the user's INBOX, or a Maildir++ folder of it."""
    return store.folder_path(user, folder) if folder else store.maildir_path(user)


def _write_tmp(store: MailStore, fs: FileOps, user: str, name: str, chunks, folder: str = "") -> str:
    """Write+fsync ``chunks`` (stored form) to the user's tmp/; creates a
    missing mailbox."""
    path = _box(store, user, folder) + "/tmp/" + name     # POSIX paths: join's cost per message
    try:
        fd = fs.create(path)
    except FileNotFoundError:
        store.create_mailbox(user)
        fd = fs.create(path)
    try:
        for chunk in chunks:
            fs.write_all(fd, chunk)
        fs.fsync(fd)
    except BaseException:
        fs.close(fd)
        _quiet_unlink(fs, path)
        raise
    fs.close(fd)
    return path


def _stored_chunks(job: DeliveryJob, sizes: List[int]):
    """The job's stored form in pieces; ``sizes`` gets [stored, wire] at the end."""
    pending: List[bytes] = []
    conv = LfWriter(pending.append)
    stored = 0
    head = delivery_head(job.return_path, job.users, job.delivered_to)
    for part in itertools.chain([head], _data_chunks(job.data)):
        conv.write(part)
        for out in pending:
            stored += len(out)
            yield out
        pending.clear()
    conv.end()
    for out in pending:
        stored += len(out)
        yield out
    sizes[:] = [stored, conv.wire_size]


def _link_one(store: MailStore, fs: FileOps, st: _State, user: str, name: str, last: bool) -> None:
    """The file into ``user``'s new/: a hard link, or for the last recipient a
    rename (the tmp/ name is not needed after it: one directory change and one
    system call fewer than link + unlink).  DEVIATION(maildir(5)): it says link
    then unlink; rename is as atomic (POSIX rename(2)), and Dovecot's maildir
    delivery renames too."""
    new_dir = _box(store, user, st.job.folder) + "/new"
    dst = new_dir + "/" + name
    place = fs.rename if last else fs.link
    try:
        try:
            place(st.tmps[0], dst)
        except FileNotFoundError:
            store.create_mailbox(user)
            place(st.tmps[0], dst)
        if last:
            st.tmps.pop(0)          # renamed: nothing left in tmp/ to remove
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # a copy of the first file (already in stored form), fsync'd, in this user's tmp/
        copy = _write_tmp(store, fs, user, name, read_chunks(st.tmps[0]), st.job.folder)
        st.tmps.append(copy)
        fs.link(copy, dst)
    st.linked.append(dst)
    if new_dir not in st.dirs:
        st.dirs.append(new_dir)


def _stage(store: MailStore, fs: FileOps, st: _State) -> None:
    """Steps 1-2 for one job; on error undo what it linked."""
    try:
        job = st.job
        users = _check_job(job)
        if users != job.users:
            st.job = dataclasses.replace(st.job, users=users)
        if job.spool is not None:
            job.spool.file.sync()
            st.tmps.append(job.spool.file.path)
            name = store.unique_name(job.spool.file.size, job.spool.file.wire_size)
        elif isinstance(job.data, (bytes, bytearray)):
            wire = message_bytes(st.job)        # small: one write, named at once
            content = stored_form(wire)
            name = store.unique_name(len(content), len(wire))
            st.tmps.append(_write_tmp(store, fs, users[0], name, [content], job.folder))
        else:
            sizes: List[int] = []               # a source: sizes known once written
            tmp_name = store.unique_name(0).partition(",")[0]
            st.tmps.append(_write_tmp(store, fs, users[0], tmp_name, _stored_chunks(st.job, sizes), job.folder))
            name = store.unique_name(*sizes)
        for i, user in enumerate(users):
            _link_one(store, fs, st, user, name, last=i == len(users) - 1)
    except (OSError, ValueError) as exc:
        if st.job.spool is not None and not st.tmps:
            st.job.spool.file.discard()      # never synced: remove what was appended
        st.fail(exc)


def _quiet_unlink(fs: FileOps, path: str) -> None:
    try:
        fs.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.error("cannot remove %s: %s", os.path.basename(path), _describe(exc))


def deliver_batch(store: MailStore, jobs: List[DeliveryJob], fs: Optional[FileOps] = None,
                  executor: Optional[Executor] = None,
                  uids: Optional[Callable[[List[Tuple[str, List[str]]]], None]] = None) -> List[DeliveryResult]:
    """Deliver ``jobs`` durably; blocking.  One directory fsync per distinct
    new/ for the whole batch (group commit); results in job order.  With an
    ``executor`` the jobs' writes and the directory fsyncs run concurrently.
    Step 4 (UIDs) runs here, unless ``uids`` takes the (folder, names) to do later."""
    fs = fs or DEFAULT_FS
    states = [_State(job) for job in jobs]
    _each(executor, lambda st: _stage(store, fs, st), states)
    return _commit(fs, states, executor, uids)


def _commit(fs: FileOps, states: List[_State], executor: Optional[Executor],
            uids: Optional[Callable[[List[Tuple[str, List[str]]]], None]]) -> List[DeliveryResult]:
    """Steps 3-5 for jobs staged (written, fsync'd and linked) already."""
    by_dir: Dict[str, List[_State]] = {}
    for st in states:
        if st.error is None:
            for d in st.dirs:
                by_dir.setdefault(d, []).append(st)

    def sync_dir(item: Tuple[str, List[_State]]) -> None:
        try:
            fs.fsync_dir(item[0])
        except OSError as exc:
            for st in item[1]:
                st.fail(exc)
    _each(executor, sync_dir, list(by_dir.items()))
    delivered = _delivered_by_folder(states)
    for folder, names in delivered:     # Maildir++ maildirsize, if the user has one (store/quota.py)
        quota.note_delivered(folder, names)
    if uids is None:
        _each(executor, _note_delivered, delivered)
    else:
        uids(delivered)
    return [_finish(fs, st) for st in states]


def _delivered_by_folder(states: List[_State]) -> List[Tuple[str, List[str]]]:
    """(Maildir folder, names of the files linked into its new/) for the jobs that succeeded."""
    names: Dict[str, List[str]] = {}
    for st in states:
        if st.error is None:
            for path in st.linked:
                new_dir, name = os.path.split(path)
                names.setdefault(os.path.dirname(new_dir), []).append(name)
    return list(names.items())


def _note_delivered(item: Tuple[str, List[str]]) -> None:
    """Step 4: UIDs at delivery.  The files are durable already: an error here
    (dotlock held too long, uidlist unwritable) is logged, never a failed delivery."""
    folder, names = item
    try:
        open_folder(folder).note_delivered(names)
    except Exception as exc:    # noqa: BLE001 - the mail is on disk; the next sync assigns the UID
        log.error("cannot assign UIDs in %s (the next sync will): %s", folder, _describe(exc))


def _each(executor: Optional[Executor], fn, items: list) -> None:
    if executor is None or len(items) < 2:
        for item in items:
            fn(item)
    else:
        list(executor.map(fn, items))


def _finish(fs: FileOps, st: _State) -> DeliveryResult:
    """Step 4: drop tmp names (and, on failure, the links); build the result."""
    if st.error is not None:
        for path in st.linked:
            _quiet_unlink(fs, path)
    if st.job.spool is not None:
        st.job.spool.file.close()
    for path in st.tmps:
        _quiet_unlink(fs, path)
    if st.error is None:
        return DeliveryResult(True, None, list(st.linked))
    return DeliveryResult(False, st.error, [])


class Deliverer:
    """One staging thread; every job waiting when it wakes is one batch, so
    concurrent senders share directory fsyncs (group commit).  The batch's files
    are written and fsync'd by that thread and a gang of IO_THREADS - 1 others
    (store/gang.py); under load its directory fsyncs follow the next batch's file
    fsyncs (``_run_batch``).  The pool does several directories' fsyncs at once
    and the UID notes (``_UidNoter``)."""

    def __init__(self, store: MailStore, fs: Optional[FileOps] = None,
                 max_batch: int = MAX_BATCH):
        self.store = store
        self.fs = fs or DEFAULT_FS
        self.max_batch = max_batch
        self.batches = 0
        self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="mailsrv-deliver-io")
        self._gang = Gang(IO_THREADS - 1, "mailsrv-deliver-stage")    # + the staging thread itself
        self._cond = threading.Condition()
        self._pending: List[Tuple[DeliveryJob, Callable[[DeliveryResult], None]]] = []
        self._closed = False
        self._uids = _UidNoter(self._pool)
        self._thread = threading.Thread(target=self._run, name="mailsrv-deliver", daemon=True)
        self._thread.start()

    def submit(self, job: DeliveryJob, callback: Callable[[DeliveryResult], None]) -> None:
        """Queue ``job``; ``callback(result)`` runs later in the staging thread."""
        with self._cond:
            if self._closed:
                raise RuntimeError("Deliverer is closed")
            self._pending.append((job, callback))
            self._cond.notify()

    def close(self) -> None:
        """Deliver what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._uids.close()
        self._pool.shutdown(wait=True)
        self._gang.close()

    def flush_uids(self) -> None:
        """Wait until every delivered file so far has been given its UID (step 4)."""
        self._uids.flush()

    def _run(self) -> None:
        carry: list = []        # staged, its directory fsync deferred (see _run_batch)
        while True:
            with self._cond:
                while not self._pending and not self._closed and not carry:
                    self._cond.wait()
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
            if not batch and not carry:
                return
            carry = self._run_batch(batch, carry)

    def _run_batch(self, batch, carry) -> list:
        """Stage ``batch``, then commit ``carry`` (the batch staged before).  Under load
        each batch's directory fsync waits for the next batch's file fsyncs: on a
        journalling file system those commit the previous links too, so the
        directory fsync finds them on disk, and one journal commit serves two
        batches instead of two commits for each.  With nothing more waiting the
        batch commits at once.  Returns what waits for the next round."""
        self.batches += 1 if batch else 0
        states = [_State(job) for job, _ in batch]
        try:
            self._gang.map(lambda st: _stage(self.store, self.fs, st), states)
        except Exception as exc:  # a bug: still answer every job
            log.exception("delivery batch failed")
            for st in states:
                st.fail(exc)
        staged = list(zip(states, [callback for _, callback in batch]))
        with self._cond:
            more = bool(self._pending) and not self._closed
        if more:
            self._commit(carry)
            return staged
        self._commit(carry + staged)
        return []

    def _commit(self, staged) -> None:
        if not staged:
            return
        try:
            results = _commit(self.fs, [st for st, _ in staged], self._pool, self._uids.add)
        except Exception as exc:  # a bug: still answer every job
            log.exception("delivery commit failed")
            results = [DeliveryResult(False, _describe(exc)) for _ in staged]
        for (st, callback), result in zip(staged, results):
            try:
                callback(result)
            except Exception:
                log.exception("delivery callback failed queue_id=%s", st.job.queue_id)


class _UidNoter:
    """Step 4 for the Deliverer, on a thread of its own, after the results.

    Taking the folder's dotlock and appending to dovecot-uidlist with an
    fdatasync (store/folder_uidlist.py) is work the 250 need not wait for
    (issue 9: it made SMTP slower than before UIDs were given at delivery):
    the message is durable without its UID, and until the line is written a
    reader's sync gives the UID itself, under the same lock.  Every name
    waiting when the thread wakes goes in one ``note_delivered`` per folder:
    one dotlock, one append, one fdatasync for many messages, gathered for
    ``UID_NOTE_DELAY_S`` (cut short by ``flush``, ``close`` and a full batch)."""

    def __init__(self, pool: Executor):
        self._pool = pool
        self._cond = threading.Condition()
        self._pending: Dict[str, List[str]] = {}
        self._busy = False
        self._closed = False
        self._hurry = 0                 # flush() callers waiting
        self._thread = threading.Thread(target=self._run, name="mailsrv-deliver-uids", daemon=True)
        self._thread.start()

    def add(self, items: List[Tuple[str, List[str]]]) -> None:
        if not items:
            return
        with self._cond:
            start = not self._pending
            for folder, names in items:
                self._pending.setdefault(folder, []).extend(names)
            if start or self._now():    # else the thread is gathering: no wake-up per delivery
                self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            while self._pending or self._busy:
                self._cond.wait()
            self._hurry -= 1

    def _now(self) -> bool:
        return self._closed or self._hurry > 0 or sum(map(len, self._pending.values())) >= MAX_BATCH

    def close(self) -> None:
        """Note what is waiting, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                self._cond.wait_for(self._now, UID_NOTE_DELAY_S)
                work, self._pending, self._busy = list(self._pending.items()), {}, True
            try:
                _each(self._pool, _note_delivered, work)
            except Exception:  # a bug: _note_delivered logs its own errors
                log.exception("assigning UIDs failed")
            with self._cond:
                self._busy = False
                self._cond.notify_all()
