"""The relay's part of several processes running one queue (issue 14,
shared_data; store/queue_lease.py): a mixin of protocols/outbound/relay.py's
Relay.  Each queue run renews the leases of the rounds in flight and reads
what other hosts queued or removed; a round starts only once its entry's
lease is ours, from the envelope as it is on disk then."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("mailsrv.relay")

# Seconds between tries of a `queue delete|bounce` whose entry another process
# is delivering: its round lets the lease go when its results are written.
ADMIN_RETRY_S = 1.0


class SharedQueueMixin:
    """Needs the Relay's queue, leases, clock, _active, _running, _offload,
    run_queue, _start_round, _dispatch, administer and _round_class."""

    def _shared_tick(self) -> None:
        """Other processes share the queue: renew the leases of our rounds,
        read what they queued or removed, then run what is due."""
        mine = [i for i, r in self._active.items() if r.leased]
        now = self.clock()

        def work():
            lost = self.leases.renew(mine, now)
            self.queue.rescan()
            return lost

        def done(lost) -> None:
            if isinstance(lost, BaseException):
                log.error("queue rescan or lease renewal failed: %s", lost)
            else:
                for queue_id in lost:
                    log.warning("id=%s lease taken over by another process (ours ran out)", queue_id)
            if self._running:
                self.run_queue()
        self._offload(work, done)

    def _lease_then_begin(self, entry) -> None:
        """Hold the id while the lease is asked (a tick meanwhile must not ask
        twice); the round starts from the envelope as it is on disk now."""
        placeholder = self._round_class(entry, writing=True)
        self._active[entry.id] = placeholder
        now = self.clock()

        def leased(fresh) -> None:
            if self._active.get(entry.id) is placeholder:
                del self._active[entry.id]
            if isinstance(fresh, BaseException):
                log.error("id=%s cannot take its lease: %s", entry.id, fresh)
            elif fresh is not None and self._running and entry.id not in self._active:
                self._start_round(fresh, leased=True)
                self._dispatch()
            for command, done in placeholder.later:     # administered while the lease was asked
                self.administer(command, entry.id, done)
        self._offload(lambda: self.queue.lease_fresh(entry.id, self.leases, now), leased)

    def _administer_shared(self, command: str, queue_id: str, done) -> None:
        """A `queue delete|bounce` taken by this process (store/queue.py
        take_requests): the entry may have been queued by a sibling (our cache
        learns of it at the next rescan) or be in its delivery round.  Its lease
        first, the envelope read again from disk; while another live process
        holds it, again every ADMIN_RETRY_S; an entry gone from disk is "not in
        the queue"."""
        now = self.clock()

        def work():
            fresh = self.queue.lease_fresh(queue_id, self.leases, now)
            return fresh, fresh is not None or os.path.exists(os.path.join(self.queue.dir, queue_id + ".env"))

        def leased(result) -> None:
            if isinstance(result, BaseException):
                log.error("id=%s cannot take its lease for queue %s: %s", queue_id, command, result)
                if done is not None:
                    done("failed: %s" % (result,))
            elif result[0] is not None:
                self._administer(command, queue_id, done, leased=True)
            elif not result[1]:
                if done is not None:
                    done("not in the queue")
            else:
                self.loop.call_later(ADMIN_RETRY_S, lambda: self.administer(command, queue_id, done))
        self._offload(work, leased)
