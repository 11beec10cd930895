"""The pick-up: messages from the local ``sendmail`` command into the delivery path.

Postfix's pickup(8): the server reads ``DATA/postdrop/`` (store/postdrop.py)
at start, when ``sendmail`` signals it (SIGUSR2) and every PICKUP_INTERVAL
seconds, adds a Received: field (RFC 5321 §4.4: every MTA that takes
responsibility for a message adds one) and hands each message to the same
delivery as SMTP (``DeliveryService.deliver_dropped``, protocols/backend/delivery.py: Maildirs and the queue).  A file
is removed only once its message is stored durably; a delivery that fails
(storage error) leaves it for the next round.  A file that cannot be read as
a drop file is moved aside to ``.bad-<name>`` and logged, never retried.

One file at a time, in name (time) order: local submissions are few, and a
slow disk must not make the pick-up race itself.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional

from protocols.message import trace_field
from store import postdrop

log = logging.getLogger("mailsrv.pickup")

# Postfix's master.cf runs pickup with a 60-second wake-up timer.
PICKUP_INTERVAL = 60.0


def received_field(hostname: str, uid: int, queue_id: str, rcpt: Optional[str], when: float) -> bytes:
    """RFC 5321 §4.4 time-stamp line for a local submission, in Postfix's words:
    ``Received: by HOST (mailsrv, from userid UID) id QID [for <RCPT>]; DATE``
    ("for" only with one recipient, RFC 5321 §7.2), folded with TAB (RFC 5322 §2.2.3).

    DEVIATION(RFC 5321 §4.4): no "from" clause, as there is no SMTP client to
    name; the uid in the comment says who submitted it (Postfix does the same,
    and RFC 5322 §3.6.7's received-token grammar allows it)."""
    return trace_field(["by %s (mailsrv, from userid %d)" % (hostname, uid), "id %s" % queue_id], rcpt, when)


class Pickup:
    """Feeds ``postdrop/`` to ``deliver(dropped, data, done(ok))`` on the loop thread."""

    def __init__(self, loop, data_dir: str, hostname: str, max_size: Callable[[], int],
                 deliver: Callable, new_id: Callable[[], str], shared: bool = False):
        self.loop, self.data_dir, self.hostname = loop, data_dir, hostname
        self.shared = shared       # shared_data: claim each file first (store/postdrop.py)
        self.max_size, self.deliver, self.new_id = max_size, deliver, new_id
        self._busy = False
        self._again = False
        self._timer = None
        self._stopped = False
        self.picked = 0            # messages handed on (for tests and the log)

    def start(self) -> None:
        self._stopped = False
        self.kick()
        self._tick_later()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick_later(self) -> None:
        def tick() -> None:
            self.kick()
            self._tick_later()
        if not self._stopped:
            self._timer = self.loop.call_later(PICKUP_INTERVAL, tick)

    def kick(self) -> None:
        """Look at the directory now (SIGUSR2, start, timer); one round at a time."""
        if self._stopped:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        if self.shared:
            now = self.loop.time()
            self.loop.run_in_thread(lambda: postdrop.pending_shared(self.data_dir, self.hostname, now),
                                    self._listed)
            return
        self.loop.run_in_thread(lambda: postdrop.pending(self.data_dir), self._listed)

    def _listed(self, names) -> None:
        if isinstance(names, BaseException):
            log.error("cannot read %s: %s", postdrop.drop_dir(self.data_dir), names)
            names = []
        self._next(list(names))

    def _next(self, names: List[str]) -> None:
        if self._stopped or not names:
            self._busy = False
            if self._again and not self._stopped:
                self._again = False
                self.kick()
            return
        name = names.pop(0)
        limit = self.max_size()
        if self.shared:             # another host may be picking up the same folder
            def claimed_then_read():
                mine = postdrop.claim(self.data_dir, name, self.hostname)   # FileNotFoundError: not ours
                try:
                    return mine, postdrop.read(self.data_dir, mine, limit)
                except Exception as exc:        # a bad file: set aside under its claimed name
                    return mine, exc

            def answered(got) -> None:
                if isinstance(got, tuple):
                    return self._read(got[0], got[1], names)
                return self._read(name, got, names)
            self.loop.run_in_thread(claimed_then_read, answered)
            return
        self.loop.run_in_thread(lambda: postdrop.read(self.data_dir, name, limit),
                                lambda got: self._read(name, got, names))

    def _read(self, name: str, got, names: List[str]) -> None:
        if isinstance(got, FileNotFoundError):
            return self._next(names)          # taken by another round meanwhile
        if isinstance(got, BaseException):
            return self._set_aside(name, got, names)
        qid = self.new_id()
        trace = received_field(self.hostname, got.uid, qid,
                               got.recipients[0] if len(got.recipients) == 1 else None, self.loop.time())

        def delivered(ok: bool) -> None:
            if not ok:                        # logged by the delivery; retried next round
                return self._next(names)
            self.picked += 1
            log.info("picked up %s uid=%d from=<%s> rcpts=%s queued as %s", name, got.uid, got.sender,
                     ",".join("<%s>" % r for r in got.recipients), qid)
            self.loop.run_in_thread(lambda: postdrop.remove(self.data_dir, name),
                                    lambda r: self._removed(name, r, names))
        try:
            self.deliver(got, trace + got.message, qid, delivered)
        except Exception:           # a bug: the file stays for the next round, the pick-up goes on
            log.exception("delivery of %s/%s failed", postdrop.drop_dir(self.data_dir), name)
            self._next(names)

    def _removed(self, name: str, result, names: List[str]) -> None:
        if isinstance(result, BaseException):
            log.error("cannot remove %s/%s after delivery: %s (it may be delivered again)",
                      postdrop.drop_dir(self.data_dir), name, result)
        self._next(names)

    def _set_aside(self, name: str, exc: BaseException, names: List[str]) -> None:
        def moved(result) -> None:
            where = result if isinstance(result, str) else "left in place (%s)" % result
            log.error("bad file %s/%s: %s; moved to %s", postdrop.drop_dir(self.data_dir), name, exc, where)
            self._next(names)
        self.loop.run_in_thread(lambda: postdrop.set_aside(self.data_dir, name), moved)
