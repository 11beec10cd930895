"""What an HTTP session asks of the server: the catalog of caught mail (``CaughtMail``),
the faults (``FaultControl``), authentication (``AuthService``), and MIME parsing on a
worker thread.  Built by protocols/backend/wiring.py's ``http_factory``; the tests give
the session a fake with the same methods.

The catalog and the faults exist only where the test server made them
(``backend.caught``, ``backend.faults``); without them the routes answer 503.  This
module uses the loop only through ``run_in_thread`` (never a socket, a thread or the
clock itself).
"""

from __future__ import annotations

from typing import Callable

from protocols.http import mimeview


class HttpService:
    def __init__(self, backend, loop):
        self.backend = backend
        self.loop = loop

    @property
    def caught(self):
        """The ``CaughtMail`` catalog, or None when this server has none."""
        return getattr(self.backend, "caught", None)

    @property
    def faults(self):
        """The ``FaultControl``, or None."""
        return getattr(self.backend, "faults", None)

    def authenticate(self, ctx, outcome, done: Callable[[object], None]) -> None:
        """The IMAP login (protocols/backend/auth.py: failure delay, lockout, cache)."""
        self.backend.authenticate(ctx, outcome, done)

    def mta_sts_policy(self):
        """Our MTA-STS policy file (RFC 8461 §3.2), or None when mta_sts_mode is none."""
        from protocols.outbound.mtasts import policy_text
        cfg = self.backend.config
        if getattr(cfg, "mta_sts_mode", "none") == "none":
            return None
        return policy_text(cfg.mta_sts_mode, list(cfg.mta_sts_mx) or [cfg.hostname.lower()], cfg.mta_sts_max_age)

    # -- CPU work, on a worker (protocols/http/mimeview.py) -----------------
    def parse_message(self, raw: bytes, done: Callable[[object], None]) -> None:
        self.loop.run_in_thread(lambda: mimeview.parse_message(raw), done)

    def html_part(self, raw: bytes, done: Callable[[object], None]) -> None:
        self.loop.run_in_thread(lambda: mimeview.html_part(raw), done)

    def attachment(self, raw: bytes, index: int, done: Callable[[object], None]) -> None:
        self.loop.run_in_thread(lambda: mimeview.attachment(raw, index), done)

    # -- ACME http-01 (protocols/acme/service.py) ---------------------------
    def acme_challenge(self, token: str, done: Callable[[object], None]) -> None:
        """``done`` gets the key authorization published for ``token`` (by this
        process or, with workers, by worker 0: a file read on a worker), None,
        or the exception."""
        acme = getattr(self.backend, "acme", None)
        if acme is None:
            done(None)
        else:
            acme.challenge(token, done)
