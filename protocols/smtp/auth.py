"""AUTH (RFC 4954) and STARTTLS (RFC 3207) command handlers of SmtpSession.

A mixin so that protocols/smtp/server.py stays readable; it uses the
session's ``_reply`` / ``_fail`` / ``_send`` / ``_await`` and state.
SASL mechanisms come from ``protocols.sasl`` (PLAIN, LOGIN, SCRAM-SHA-256);
the password check and lockout are the backend's (``backend.authenticate``,
whose answer is a user, None, or a ``sasl.AuthTemporary``).
"""

from __future__ import annotations

import base64
import logging
from typing import Callable, Optional

from protocols import sasl
from protocols.smtp.state import State

log = logging.getLogger("mailsrv.smtp")


class SmtpAuthMixin:
    """STARTTLS and AUTH handlers (see SmtpSession for the attributes)."""

    # The SCRAM server nonce source (RFC 5802 §5.1 "r"); None = sasl's
    # random default.  Tests set a fixed one to replay SCRAM transcripts.
    sasl_nonce: Optional[Callable[[], bytes]] = None

    def cmd_starttls(self, arg: str) -> None:
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

    def cmd_auth(self, arg: str) -> None:
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
        initial = None
        if len(parts) == 2:
            initial = self._decode_auth(parts[1].encode("ascii", "replace"))
            if initial is None:
                return
        if self.sasl_nonce is not None:
            self._sasl = sasl.SaslServer(mech, self.backend.scram_lookup, nonce=self.sasl_nonce,
                                         hold_server_final=True)
        else:
            self._sasl = sasl.SaslServer(mech, self.backend.scram_lookup, hold_server_final=True)
        self._sasl_step(initial)

    def _decode_auth(self, line: bytes) -> Optional[bytes]:
        """Base64 per RFC 4954 §4; "*" cancels with 501 5.0.0."""
        try:
            return sasl.decode_response(line)
        except sasl.SaslCancelled:
            self._end_auth()
            self._reply(501, "5.0.0", "Authentication cancelled")
        except sasl.SaslError:
            self._end_auth()
            self._fail(501, "5.5.2", "Invalid base64 data")
        return None

    def _auth_response(self, line: bytes) -> None:
        response = self._decode_auth(line)
        if response is not None:
            self._sasl_step(response)

    def _end_auth(self) -> None:
        self._sasl = None
        if self.state is State.AUTH:
            self.state = State.READY

    def _sasl_step(self, response: Optional[bytes]) -> None:
        try:
            challenge, outcome = self._sasl.step(response)
        except sasl.SaslError:
            self._end_auth()
            self._fail(501, "5.5.2", "Malformed authentication data")
            return
        if outcome is None:
            self.state = State.AUTH
            # RFC 4954 §4: "334 " + base64 challenge (no enhanced code).
            self._send(b"334 " + base64.b64encode(challenge or b"") + b"\r\n")
            return
        server = self._sasl
        self._end_auth()
        if server.approved is not None:     # the client took our server-final (RFC 4422 §5 item 2b)
            self._auth_user = server.approved
            self._reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6
            return

        def finish(user) -> None:
            if isinstance(user, sasl.AuthTemporary):
                # RFC 4954 §6: 454 4.7.0 Temporary authentication failure (locked out,
                # throttled, or too busy to check); the backend has logged why.
                self._reply(454, "4.7.0", "Temporary authentication failure: " + user.text)
                return
            if user and outcome.server_final is not None:
                # RFC 5802 §5: the server signature goes out only now that the backend has
                # counted and accepted the attempt (a locked-out guess learns nothing);
                # RFC 4954 §4: as a 334 challenge, answered with an empty line.
                server.approved, self._sasl, self.state = user, server, State.AUTH
                self._send(b"334 " + base64.b64encode(outcome.server_final) + b"\r\n")
                return
            if user:
                self._auth_user = user
                self._reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6
                return
            log.warning("auth failed user=%r mechanism=%s peer=%s", outcome.authcid,
                        outcome.mechanism, self.ctx.peer_ip)
            self._reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6

        self._await(lambda done: self.backend.authenticate(self.ctx, outcome, done), finish)


