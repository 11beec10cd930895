"""AUTH (RFC 4954) and STARTTLS (RFC 3207) command handlers of SmtpSession.

A mixin so that protocols/smtp/server.py stays readable; it uses the
session's ``_reply`` / ``_fail`` / ``_send`` / ``_await`` and state.
The exchange itself (decoding, the mechanisms of ``protocols.sasl``, the
backend's verdict, SCRAM's held server-final) is the one every protocol
shares, ``protocols.auth_exchange.AuthExchange``; this module frames its
steps as SMTP replies.  The password check and lockout are the backend's
(``backend.authenticate``, whose answer is a user, None, or a
``sasl.AuthTemporary``).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from protocols import auth_exchange as ax
from protocols import sasl
from protocols.auth_exchange import AuthExchange, Step
from protocols.smtp.state import State

log = logging.getLogger("mailsrv.smtp")


class AuthCommands:
    """STARTTLS and AUTH handlers (see SmtpSession for the attributes)."""

    # The SCRAM server nonce source (RFC 5802 §5.1 "r"); None = sasl's
    # random default.  Tests set a fixed one to replay SCRAM transcripts.
    sasl_nonce: Optional[Callable[[], bytes]] = None

    def _cmd_starttls(self, arg: str) -> None:
        """STARTTLS (RFC 3207 §4)."""
        if arg:
            self._fail(501, "5.5.4", "Syntax error (no parameters allowed)")
            return
        if self.ctx.tls_active:
            # RFC 3207 §4.2: not offered inside TLS; a second one is out of sequence.
            self._fail(503, "5.5.1", "TLS already active")
            return
        if not self.ctx.tls_available:
            self._reply(454, "4.7.0", "TLS not available due to temporary reason")
            return
        self._reply(220, "2.0.0", "Ready to start TLS")
        self.want_tls = True
        self.state = State.STARTTLS
        # CVE-2011-0411 class: anything pipelined after STARTTLS is discarded.
        self._reader.clear()

    # -- AUTH (RFC 4954 §4) --------------------------------------------------

    def _plaintext_ok(self) -> bool:
        return (self.ctx.tls_active or self.config.allow_plaintext_auth
                or (self.ctx.is_loopback and self.config.plaintext_auth_loopback))

    def _cmd_auth(self, arg: str) -> None:
        """AUTH mechanism [initial-response] (RFC 4954 §4)."""
        if not self.config.auth_enabled:
            self._fail(502, "5.5.1", "AUTH not available")
            return
        if not self._esmtp:
            self._fail(503, "5.5.1", "Send EHLO first")
            return
        if self._auth_user is not None:
            self._fail(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
            return
        parts = arg.split()
        if not 1 <= len(parts) <= 2:
            self._fail(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
            return
        mech = parts[0].upper()
        if mech not in sasl.MECHANISMS:
            self._fail(504, "5.5.4", "Unrecognized authentication type")  # RFC 4954 §4
            return
        if mech not in sasl.offered_mechanisms(self._plaintext_ok()):
            # RFC 4954 §6: 538 5.7.11.
            self._reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return
        self._sasl = AuthExchange.sasl(mech, self.backend.scram_lookup, nonce=self.sasl_nonce)
        self._auth_step(self._sasl, self._sasl.start(parts[1].encode("ascii", "replace") if len(parts) == 2 else None))

    def _auth_response(self, line: bytes) -> None:
        """A client line while in State.AUTH (RFC 4954 §4)."""
        self._auth_step(self._sasl, self._sasl.respond(line))

    def _end_auth(self) -> None:
        self._sasl = None
        if self.state is State.AUTH:
            self.state = State.READY

    def _auth_step(self, exchange: AuthExchange, step: Step) -> None:
        """Frame one step of the shared exchange (protocols/auth_exchange.py) as SMTP."""
        if step.kind == ax.CHALLENGE:
            # RFC 4954 §4: "334 " + base64 challenge (no enhanced code); a SCRAM
            # server-final comes this way too, answered with an empty line.
            self._sasl, self.state = exchange, State.AUTH
            self._send(b"334 " + step.encoded + b"\r\n")
            return
        self._end_auth()
        if step.kind == ax.CHECK:
            self._await(lambda done: self.backend.authenticate(self.ctx, step.outcome, done),
                        lambda answer: self._auth_step(exchange, exchange.verdict(answer)))
        elif step.kind == ax.SUCCESS:
            self._auth_user = step.user
            self._reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6
        elif step.kind == ax.TEMPORARY:
            # RFC 4954 §6: 454 4.7.0 Temporary authentication failure (locked out,
            # throttled, or too busy to check); the backend has logged why.
            self._reply(454, "4.7.0", "Temporary authentication failure: " + step.temporary.text)
        elif step.kind == ax.REJECTED:
            log.warning("auth failed user=%r mechanism=%s peer=%s", step.outcome.authcid,
                        step.outcome.mechanism, self.ctx.peer_ip)
            self._reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
        elif step.kind == ax.CANCELLED:
            self._reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
        elif step.kind == ax.BAD_BASE64:
            self._fail(501, "5.5.2", "Invalid base64 data")
        else:
            self._fail(501, "5.5.2", "Malformed authentication data")
