"""Jobs on the worker pool one after another, answered on the loop thread in order.

What the mail-access services give each session (protocols/backend/mailaccess.py
for POP3, imapaccess.py for IMAP): issue 9 §2 keeps every disk step off the
loop thread, and a session's steps must not overtake each other (a close never
runs before QUIT's expunge, a STORE never before the SELECT it follows).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional, Tuple

Done = Callable[[object], None]
Job = Callable[[], object]


def _ignore(result: object) -> None:
    pass


class SerialJobs:
    """``submit(fn, done)``: ``fn`` runs on a worker after every job submitted before
    it has been answered; ``done(result)`` (or the exception) comes on the loop thread.
    ``prepare(fn)``, if given, may wrap a job at the moment it starts (POP3 adds the
    \\Seen marks gathered meanwhile)."""

    def __init__(self, loop, prepare: Optional[Callable[[Job], Job]] = None):
        self._loop = loop
        self._prepare = prepare
        self._jobs: Deque[Tuple[Job, Done]] = deque()
        self._running = False

    def submit(self, fn: Job, done: Optional[Done] = None) -> None:
        self._jobs.append((fn, done or _ignore))
        if not self._running:
            self._next()

    def _next(self) -> None:
        if not self._jobs:
            self._running = False
            return
        self._running = True
        fn, done = self._jobs.popleft()
        if self._prepare is not None:
            fn = self._prepare(fn)

        def answered(result: object) -> None:
            try:
                done(result)
            finally:
                self._next()
        self._loop.run_in_thread(fn, answered)
