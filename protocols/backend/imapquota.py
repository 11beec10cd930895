"""Quota for the IMAP account (RFC 9208), called from protocols/backend/imapaccess.py.

Every function runs on a worker (inside the account's serial jobs): it reads
or appends to the user's Maildir++ ``maildirsize`` (store/quota.py).  With no
quota service (catch-all mode, tests) or no limit for the user, nothing is
checked and nothing written.

* ``state``: GETQUOTA / GETQUOTAROOT (RFC 9208 §4.1.1, §4.1.2): the usage and
  the limits, STORAGE in units of 1024 octets (§5.1: usage rounded up, limit
  rounded down, so a user at the limit shows usage = limit), MESSAGE exact (§5.2).
* ``check``: before APPEND / COPY / MOVE into the account (RFC 9208 §4.3.1):
  ``MailboxError("OVERQUOTA")`` when the addition would pass a limit.
* ``note``: after APPEND / COPY / EXPUNGE, one ``maildirsize`` line (sizes from
  the ``,S=`` of the stored names, as a recalculation would count them).
"""

from __future__ import annotations

from typing import Iterable

from protocols.backend.contracts import MailboxError, QuotaState
from store import quota as sq

KIB = 1024       # RFC 9208 §5.1: STORAGE is in units of 1024 octets


def _service(account):
    return account._service.quota


def _root(account) -> str:
    return account._service.store.maildir_path(account.user)


def state(account) -> QuotaState:
    """The account's QuotaState (zero limits: not limited)."""
    service = _service(account)
    if service is None:
        return QuotaState(0, 0, 0, 0)
    limits, used = service.usage(account.user)
    return QuotaState((used.bytes + KIB - 1) // KIB, limits.bytes // KIB, used.messages, limits.messages)


def check(account, add_bytes: int, add_messages: int) -> None:
    """RFC 9208 §4.3.1: NO [OVERQUOTA] when the addition passes a limit."""
    service = _service(account)
    if service is not None and service.would_exceed(account.user, add_bytes, add_messages):
        raise MailboxError("OVERQUOTA", "Quota exceeded for %s (mailbox full)" % account.user)


def sizes_of(keys: Iterable[str]) -> int:
    """Octets of messages by their Maildir keys (``,S=``)."""
    return sum(sq.file_size(k, "") for k in keys)


def note(account, add_bytes: int, add_messages: int) -> None:
    """One maildirsize line, if the user has the file (never fails the command)."""
    if _service(account) is None:
        return
    try:
        sq.note(_root(account), add_bytes, add_messages)
    except OSError:
        pass            # the next recalculation corrects the count


def forget(account, result: object = None) -> object:
    """A folder was deleted: the count is recalculated at the next read."""
    if _service(account) is not None:
        sq.forget(_root(account))
    return result


def check_copy(account, folder, uids, move: bool):
    """COPY into the account: ``check`` with the messages' sizes (MOVE within
    the account adds nothing); the source snapshot for ``note_uids``."""
    snap = folder.snapshot()
    if not move and _service(account) is not None:
        keys = [snap.by_uid(u).key for u in uids if snap.by_uid(u) is not None]
        check(account, sizes_of(keys), len(keys))
    return snap


def note_uids(account, snap, uids, sign: int):
    """``note`` the messages ``uids`` of ``snap`` added (sign 1) or gone (-1); returns ``uids``."""
    msgs = [snap.by_uid(u) for u in uids]
    keys = [m.key for m in msgs if m is not None]
    note(account, sign * sizes_of(keys), sign * len(keys))
    return uids
