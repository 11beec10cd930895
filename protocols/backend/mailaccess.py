"""The mail access service: users' mailboxes for the reading protocols.

The ``MailAccess`` contract (protocols/backend/contracts.py).  POP3 opens a
locked maildrop on a worker thread (store/maildrop.py) and gets back an
``AsyncMaildrop``: every step that may touch the disk (reading a message
file, \\Seen marks, QUIT's expunge with Dovecot's dotlock and fsyncs, the
unlock) runs on the worker pool, one after another in the order the session
asked, and answers through a completion callback on the loop thread (issue 9,
section 2: no session and no loop callback touches the disk).  Store errors a
session must answer are translated to the contract's own (``MailboxInUse``),
so no session imports a store class.  The change hub (protocols/backend/hub.py)
lives here: QUIT's expunge announces to it, as local delivery does.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from protocols.backend.contracts import MailboxInUse
from protocols.backend.hub import ChangeHub
from protocols.base import SessionContext
from store.maildir import MailStore
from store.maildrop import MaildropLocked, open_maildrop

Done = Callable[[object], None]


def _ignore(result: object) -> None:
    pass


class AsyncReader:
    """The ``MessageReader`` contract over an open file: reads on a worker."""

    def __init__(self, loop, fileobj):
        self._loop = loop
        self._file = fileobj
        self._busy = False
        self._close_after = False

    def read(self, size: int, done: Done) -> None:
        self._busy = True

        def answered(result: object) -> None:
            self._busy = False
            if self._close_after:
                self.close()
            done(result)
        self._loop.run_in_thread(lambda: self._file.read(size), answered)

    def close(self) -> None:
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
        self._jobs: Deque[Tuple[Callable[[], object], Done]] = deque()
        self._running = False

    def _submit(self, fn: Callable[[], object], done: Optional[Done]) -> None:
        self._jobs.append((fn, done or _ignore))
        if not self._running:
            self._next()

    def _next(self) -> None:
        if not self._jobs:
            self._running = False
            return
        self._running = True
        fn, done = self._jobs.popleft()

        def answered(result: object) -> None:
            try:
                done(result)
            finally:
                self._next()
        self._loop.run_in_thread(fn, answered)

    def open_message(self, i: int, done: Done) -> None:
        def opened(result: object) -> None:
            done(result if isinstance(result, BaseException) else AsyncReader(self._loop, result))
        self._submit(lambda: self._drop.open_message(i), opened)

    def mark_seen(self, i: int, done: Done) -> None:
        self._submit(lambda: self._drop.mark_seen(i), done)

    def commit_deletes(self, indices, done: Done) -> None:
        wanted = list(indices)

        def committed(result: object) -> None:
            self._announce()            # removed, all or some: subscribers look again
            done(result)
        self._submit(lambda: self._drop.commit_deletes(wanted), committed)

    def close(self, done: Optional[Done] = None) -> None:
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
