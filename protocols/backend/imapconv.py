"""Conversions between the store and the IMAP mail-access contract
(protocols/backend/imapaccess.py): store exceptions as the contract's
MailboxError codes (RFC 5530 response codes), APPEND's date-time as the Unix
time the store sets on the file."""

from __future__ import annotations

import datetime
from typing import Optional

from protocols.backend.contracts import MailboxError
from store import dovecot_files as dv
from store import mailboxes as mb


def translate(exc: BaseException, name: str = "") -> BaseException:
    """A store exception -> the contract's MailboxError (others as they are)."""
    if isinstance(exc, MailboxError):
        return exc
    if isinstance(exc, mb.NoMailbox):
        return MailboxError("NONEXISTENT", str(exc))
    if isinstance(exc, mb.MailboxExists):
        return MailboxError("ALREADYEXISTS", str(exc))
    if isinstance(exc, mb.Refused):
        return MailboxError(exc.code, str(exc))
    if isinstance(exc, mb.BadUse):
        return MailboxError("USEATTR", str(exc))
    if isinstance(exc, mb.BadName):
        return MailboxError("CANNOT", str(exc))
    if isinstance(exc, dv.LockTimeout):
        return MailboxError("INUSE", "mailbox %s is locked by another process; try again" % name)
    if isinstance(exc, FileNotFoundError) and name:
        return MailboxError("NONEXISTENT", "mailbox %s no longer exists" % name)
    if isinstance(exc, ValueError):
        text = str(exc)
        return MailboxError("LIMIT" if "keywords" in text else "CANNOT", text)
    return exc


def timestamp(when: Optional[datetime.datetime]) -> Optional[float]:
    """An APPEND date-time (RFC 9051 §6.3.12) as Unix time, or None."""
    if when is None:
        return None
    if when.tzinfo is None:                   # no zone: taken as UTC (RFC 9051 date-time has one)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()
