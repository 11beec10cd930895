"""The quota service: per-user limits (store/quota.py) for SMTP, delivery and IMAP.

* SMTP RCPT (RFC 5321 §4.5.3.1.10: 452 "Too many recipients" family of
  temporary refusals; RFC 3463 §3.3 X.2.2 "mailbox full"): a user already over
  quota is refused with ``452 4.2.2``, as Postfix's virtual(8) and Dovecot
  LMTP (``quota_full_tempfail``) answer.  The check on the loop thread reads
  only a cached flag; the flag is refreshed on a worker (``loop.run_in_thread``)
  at most every ``CHECK_INTERVAL_S`` per user, so no RCPT waits for the disk.
  A user never looked at yet passes RCPT; the end of DATA then decides.
* End of DATA (protocols/backend/sink.py): on a worker, before the Deliverer,
  a message that would take a local recipient over the limit is refused with
  ``452 4.2.2`` and nothing is stored.  DEVIATION(RFC 3463 §3.3): 552 5.2.2
  (permanent) would also be allowed; a full mailbox is a state the user can
  change, so the sender retries (Postfix and Dovecot's default).  SMTP has one
  DATA reply for all recipients: the whole message waits when one is full.
* IMAP (RFC 9208 via protocols/backend/imapquota.py): the same limits and usage.

The limits file is re-read on a worker when it changed, checked at most every
``CHECK_INTERVAL_S`` (as the users file, protocols/backend/wiring.py).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from store import quota as sq

log = logging.getLogger("mailsrv.store")

# Seconds a user's over-quota flag (and the limits file) is trusted before a
# worker looks again (ours: as wiring.TABLE_CHECK_INTERVAL_S for the users file).
CHECK_INTERVAL_S = 1.0
MAILBOX_FULL = (452, "4.2.2", "Mailbox full, try again later")   # RFC 3463 §3.3, RFC 5321 §4.2.2


class QuotaService:
    """Limits and usage of every user, for the loop thread (cached) and workers."""

    def __init__(self, loop, store, data_dir: str, default_bytes: int = 0):
        self.loop = loop
        self.store = store
        self.table = sq.QuotaTable(data_dir, sq.Limits(default_bytes, 0))
        self._over: Dict[str, Tuple[float, bool]] = {}
        self._checking: set = set()
        self._table_checked: Optional[float] = None
        self._table_checking = False

    def configure(self, default_bytes: int) -> None:
        self.table.default = sq.Limits(default_bytes, 0)

    # -- on a worker ---------------------------------------------------------------
    def usage(self, user: str) -> Tuple[sq.Limits, sq.Usage]:
        """(limits, usage) of ``user``; the usage only computed when limited.  The
        limits file is looked at first (a stat: this is a worker)."""
        self.table.reload_if_changed()
        limits = self.table.get(user)
        if not limits.any:
            return limits, sq.Usage(0, 0)
        return limits, sq.usage(self.store.maildir_path(user), limits)

    def would_exceed(self, user: str, add_bytes: int, add_messages: int) -> bool:
        limits, used = self.usage(user)
        return limits.any and sq.over(used, limits, add_bytes, add_messages)

    def full_users(self, users: Iterable[str], add_bytes: int) -> List[str]:
        """The users whom one more message of ``add_bytes`` takes over their limit."""
        return [u for u in users if self.would_exceed(u, add_bytes, 1)]

    # -- on the loop thread --------------------------------------------------------
    def limited(self, users: Iterable[str]) -> bool:
        self._refresh_table()
        return any(self.table.get(u).any for u in users)

    def full(self, user: str) -> bool:
        """The cached "already over quota" flag; a stale one is refreshed on a worker."""
        self._refresh_table()
        if not self.table.get(user).any:
            return False
        entry = self._over.get(user)
        now = self.loop.time()
        if (entry is None or not 0 <= now - entry[0] < CHECK_INTERVAL_S) and user not in self._checking:
            self._checking.add(user)
            self.loop.run_in_thread(lambda: self.would_exceed(user, 0, 0),
                                    lambda result: self._checked(user, result))
        return bool(entry and entry[1])

    def _checked(self, user: str, result: object) -> None:
        self._checking.discard(user)
        if isinstance(result, BaseException):
            log.error("cannot read the quota of %s: %r", user, result)
            return
        self._over[user] = (self.loop.time(), bool(result))

    def check_delivery(self, users: List[str], size: int, done: Callable[[Optional[tuple]], None]) -> None:
        """End of DATA: ``done(None)`` when every user has room for ``size`` more
        octets, else ``done(MAILBOX_FULL reply)``; on the loop thread."""
        def answered(result: object) -> None:
            if isinstance(result, BaseException):
                log.error("cannot read quotas of %s: %r", ",".join(users), result)
                done(None)          # the quota is soft: a broken count never loses mail
                return
            for user in users:
                self._over[user] = (self.loop.time(), user in result)
            if result:
                log.info("refused delivery: over quota user=%s", ",".join(result))
                done((MAILBOX_FULL[0], MAILBOX_FULL[1], "<%s>: %s" % (result[0], MAILBOX_FULL[2])))
            else:
                done(None)
        self.loop.run_in_thread(lambda: self.full_users(users, size), answered)

    def _refresh_table(self) -> None:
        now = self.loop.time()
        last = self._table_checked
        if self._table_checking or (last is not None and 0 <= now - last < CHECK_INTERVAL_S):
            return
        self._table_checked, self._table_checking = now, True

        def reloaded(result: object) -> None:
            self._table_checking = False
            if isinstance(result, BaseException):
                log.error("cannot check %s for changes: %r", self.table.path, result)
            elif result:
                self._over.clear()
        self.loop.run_in_thread(self.table.reload_if_changed, reloaded)
