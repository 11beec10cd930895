"""`mailsrv.py queue flush/delete/bounce` when no server runs.

The relay owns the queue entries (one writer, see README "Outbound mail"), so
the command does not touch them itself: it starts the backend without
listeners (the caller holds the data folder's lock, so no server starts
meanwhile), lets the relay apply the request left in the queue, waits until
the relay is idle, and stops.
"""

from __future__ import annotations

from typing import List, Optional

# A delivery round is bounded by the SMTP client's timeouts; the command gives
# up waiting after this many seconds (the entries stay queued, nothing is lost).
OFFLINE_LIMIT_SECONDS = 60.0
POLL_SECONDS = 0.1        # how often the loop looks whether the relay is idle


def apply_offline(backend, loop) -> Optional[str]:
    """Run ``loop`` until the relay has applied the request and is idle; the
    request's outcome ("done", "deleted", "bounced", ...) or None on timeout."""
    backend.start()
    relay = backend.outbound.relay
    outcomes: List[str] = []
    loop.call_soon(lambda: backend.queue_control(lambda c, q, outcome: outcomes.append(outcome)))
    left = [OFFLINE_LIMIT_SECONDS]

    def stop_when_idle() -> None:
        left[0] -= POLL_SECONDS
        if (outcomes and relay.in_flight == 0) or left[0] <= 0:
            loop.stop()
        else:
            loop.call_later(POLL_SECONDS, stop_when_idle)
    loop.call_later(POLL_SECONDS, stop_when_idle)
    loop.run()
    backend.close()
    return outcomes[0] if outcomes else None
