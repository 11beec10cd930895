"""The mail access service: users' mailboxes for the reading protocols.

The ``MailAccess`` contract (protocols/backend/contracts.py).  POP3 opens a
locked maildrop on a worker thread (store/maildrop.py) and gets back an
``AsyncMaildrop``: every step that may touch the disk (reading a message
file, \\Seen marks, QUIT's expunge with Dovecot's dotlock and fsyncs, the
unlock) runs on the worker pool, one after another in the order the session
asked, and answers through a completion callback on the loop thread (issue 9,
section 2: no session and no loop callback touches the disk).  Each job is a
hop to a thread and back, so the work is batched: a RETR of a small message
is one job (open, read, close), a download in sequence reads the next small
messages in that job, and \\Seen marks travel with the next job.  Store errors a
session must answer are translated to the contract's own (``MailboxInUse``),
so no session imports a store class.  The change hub (protocols/backend/hub.py)
lives here: QUIT's expunge announces to it, as local delivery does.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from protocols.backend.contracts import MailboxInUse
from protocols.backend.hub import ChangeHub
from protocols.backend.serial import SerialJobs
from protocols.base import SessionContext
from store.maildir import MailStore
from store.maildrop import MaildropLocked, open_maildrop

Done = Callable[[object], None]


def _ignore(result: object) -> None:
    pass


# Octets read with the open, in the same worker job: the stream's chunk
# (protocols/pop3/stream.py READ_CHUNK), so a message up to 64 KiB costs one job.
FIRST_READ = 64 * 1024
# Small messages read ahead in the job that opens one, once a session reads in
# sequence (RETR 1, RETR 2, ...: how clients download): at most this many octets
# in all, the bound of one stream's chunk (a session holds no more than while it
# sends one large message), and at most AHEAD_MESSAGES files (ours: 16 x 4 KB).
AHEAD_OCTETS = 64 * 1024
AHEAD_MESSAGES = 16


def _open_and_read(opener: Callable[[], object], size: int) -> Tuple[object, bytes, bool]:
    """Worker side of a RETR/TOP: open, read the first ``size`` octets; a file read
    whole (fewer octets than asked: a buffered read stops short only at the end) is
    closed here.  Returns (file or None, data, at_end)."""
    fileobj = opener()
    try:
        data = fileobj.read(size)
    except BaseException:
        fileobj.close()
        raise
    if len(data) < size:
        fileobj.close()
        return None, data, True
    return fileobj, data, False


class AsyncReader:
    """The ``MessageReader`` contract over an open file: reads on a worker.

    Issue 9 §2 keeps the disk off the loop thread; the hops are what costs.
    The file is opened and its first ``FIRST_READ`` octets read in one job
    (``_open_and_read``); octets already read are answered at once, without a
    job; a read that reaches the end closes the file in the same job, so the
    end (b"") and ``close`` need none either.  A message that fits in the first
    read costs one worker job in all."""

    def __init__(self, loop, fileobj, data: bytes = b"", at_end: bool = False):
        self._loop = loop
        self._file = fileobj
        self._data = data
        self._at_end = at_end or fileobj is None
        self._busy = False
        self._close_after = False

    def read(self, size: int, done: Done) -> None:
        if self._data or self._at_end:         # already here: no job
            out, self._data = self._data[:size], self._data[size:]
            done(out)
            return
        self._busy = True
        fileobj = self._file

        def job() -> bytes:
            data = fileobj.read(size)
            if len(data) < size:
                fileobj.close()                # the end: closed in this same job
            return data

        def answered(result: object) -> None:
            self._busy = False
            if isinstance(result, bytes) and len(result) < size:
                self._file, self._at_end = None, True
            if self._close_after:
                self.close()
            done(result)
        self._loop.run_in_thread(job, answered)

    def close(self) -> None:
        self._data = b""
        if self._busy:             # never close a file a worker is reading
            self._close_after = True
            return
        fileobj, self._file = self._file, None
        if fileobj is not None:
            self._loop.run_in_thread(fileobj.close, _ignore)


class AsyncMaildrop:
    """The ``Maildrop`` contract over store/maildrop.py's Maildrop: each step on
    a worker, in order (a close never overtakes QUIT's expunge)."""

    def __init__(self, loop, maildrop, announce: Callable[[], None] = lambda: None,
                 closing: Optional[Callable[[bool], None]] = None):
        self._loop = loop
        self._drop = maildrop
        self._announce = announce       # the change hub, for (user, INBOX)
        self._closing = closing         # told True when the unlock is asked for, False once done
        self.messages = maildrop.messages
        self._jobs = SerialJobs(loop, self._with_pending_seen)
        self._seen: List[int] = []      # RETRs not yet told to the store (see mark_seen)
        self._ahead: Dict[int, bytes] = {}   # whole small messages read ahead (open_message)
        self._last_open = -2
        self._closed = False

    def _submit(self, fn: Callable[[], object], done: Optional[Done]) -> None:
        self._jobs.submit(fn, done)

    def _with_pending_seen(self, fn: Callable[[], object]) -> Callable[[], object]:
        """At the start of each job: the \\Seen marks gathered since the last one go with it."""
        if not self._seen:
            return fn
        seen, self._seen = self._seen, []
        return self._with_seen(seen, fn)

    def _with_seen(self, seen: List[int], fn: Callable[[], object]) -> Callable[[], object]:
        def job() -> object:
            for i in seen:
                self._drop.mark_seen(i)         # in memory; written at QUIT or the close
            return fn()
        return job

    def open_message(self, i: int, done: Done) -> None:
        """Open message ``i`` and read its first ``FIRST_READ`` octets in one job;
        in a sequential download the same job reads the next small messages too
        (``AHEAD_OCTETS``), and their opens are answered without a job.  Maildir
        message files never change once delivered (maildir-spec), so octets read
        a moment early are the octets a later read would get."""
        sequential, self._last_open = i == self._last_open + 1, i
        data = self._ahead.pop(i, None)
        if data is not None:
            reader = AsyncReader(self._loop, None, data, True)
            self._loop.call_soon(lambda: done(reader))
            return
        self._ahead.clear()
        ahead = self._ahead_of(i) if sequential else []

        def opened(result: object) -> None:
            if not isinstance(result, BaseException):
                first, got = result
                if not self._closed:
                    self._ahead = got
                result = AsyncReader(self._loop, *first)
            done(result)
        self._submit(lambda: self._open_job(i, ahead), opened)

    def _ahead_of(self, i: int) -> List[int]:
        out, total = [], 0
        for j in range(i + 1, min(len(self.messages), i + 1 + AHEAD_MESSAGES)):
            total += self.messages[j].size      # CRLF octets: never fewer than the file's
            if total > AHEAD_OCTETS:
                break
            out.append(j)
        return out

    def _open_job(self, i: int, ahead: List[int]) -> Tuple[Tuple[object, bytes, bool], Dict[int, bytes]]:
        """Worker side of open_message: message ``i``, then the ``ahead`` ones whole
        (one that cannot be opened or is bigger than thought ends the read-ahead;
        its own RETR opens it again and answers for it)."""
        first = _open_and_read(lambda: self._drop.open_message(i), FIRST_READ)
        got: Dict[int, bytes] = {}
        for j in ahead:
            try:
                fileobj, data, at_end = _open_and_read(lambda: self._drop.open_message(j), FIRST_READ)
            except OSError:
                break
            if not at_end:
                fileobj.close()
                break
            got[j] = data
        return first, got

    def mark_seen(self, i: int, done: Done) -> None:
        """Recorded here and handed to the store by the next job of this maildrop
        (the next open, QUIT's expunge or the close, which the session always
        asks for), in order: store/maildrop.py applies \\Seen marks only at QUIT or
        the close anyway, so a job per RETR bought nothing.  ``done`` at once."""
        self._seen.append(i)
        done(None)

    def commit_deletes(self, indices, done: Done) -> None:
        wanted = list(indices)

        self._ahead.clear()

        def committed(result: object) -> None:
            self._announce()            # removed, all or some: subscribers look again
            done(result)
        self._submit(lambda: self._drop.commit_deletes(wanted), committed)

    def close(self, done: Optional[Done] = None) -> None:
        self._closed = True
        self._ahead.clear()
        if self._closing is not None:
            self._closing(True)

        def closed(result: object) -> None:
            if self._closing is not None:
                self._closing(False)
            if done is not None:
                done(result)
        self._submit(self._drop.close, closed)


class MailAccessService:
    def __init__(self, loop, store: MailStore):
        self.loop = loop
        self.store = store
        self.hub = ChangeHub(loop, store.maildir_path)   # (user, folder) -> subscribers
        # Users whose maildrop a finished session is still unlocking (on a worker),
        # and the opens waiting for that: a client that drops the connection and
        # logs in again at once must not be told [IN-USE] by its own last session.
        self._closing: Dict[str, int] = {}
        self._after_close: Dict[str, List[Callable[[], None]]] = {}

    def close(self) -> None:
        self.hub.close()

    def _set_closing(self, user: str, starting: bool) -> None:
        count = self._closing.get(user, 0) + (1 if starting else -1)
        if count > 0:
            self._closing[user] = count
            return
        self._closing.pop(user, None)
        for resume in self._after_close.pop(user, []):
            resume()

    def open_maildrop(self, ctx: SessionContext, user: str, done: Callable[[object], None]) -> None:
        """RFC 1939 §4: lock and open ``user``'s INBOX off the loop thread;
        ``done(maildrop)`` or ``done(exception)`` (MailboxInUse when locked).
        An open waits for the unlock of a session of the same user that has
        already ended (its lock is on its way out, not held)."""
        if self._closing.get(user):
            self._after_close.setdefault(user, []).append(lambda: self.open_maildrop(ctx, user, done))
            return

        def opened(result) -> None:
            if isinstance(result, MaildropLocked):
                result = MailboxInUse(str(result))
            elif not isinstance(result, BaseException):
                result = AsyncMaildrop(self.loop, result, lambda: self.hub.announce(user, "INBOX"),
                                       lambda starting: self._set_closing(user, starting))
            done(result)
        self.loop.run_in_thread(lambda: open_maildrop(self.store, user), opened)
