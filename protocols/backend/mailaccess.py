"""The mail access service: users' mailboxes for the reading protocols.

The ``MailAccess`` contract (protocols/backend/contracts.py).  POP3 opens a
locked maildrop on a worker thread (store/maildrop.py); IMAP folders and the
change hub come here next (issue 10).  Store errors a session must answer
are translated to the contract's own (``MailboxInUse``), so no session
imports a store class.
"""

from __future__ import annotations

from typing import Callable

from protocols.backend.contracts import MailboxInUse
from protocols.base import SessionContext
from store.maildir import MailStore
from store.maildrop import MaildropLocked, open_maildrop


class MailAccessService:
    def __init__(self, loop, store: MailStore):
        self.loop = loop
        self.store = store

    def open_maildrop(self, ctx: SessionContext, user: str, done: Callable[[object], None]) -> None:
        """RFC 1939 §4: lock and open ``user``'s INBOX off the loop thread;
        ``done(maildrop)`` or ``done(exception)`` (MailboxInUse when locked)."""
        def opened(result) -> None:
            if isinstance(result, MaildropLocked):
                result = MailboxInUse(str(result))
            done(result)
        self.loop.run_in_thread(lambda: open_maildrop(self.store, user), opened)
