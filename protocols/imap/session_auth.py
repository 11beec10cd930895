"""IMAP not-authenticated state (RFC 9051 §6.2): STARTTLS, AUTHENTICATE (with
SASL-IR, RFC 4959) and LOGIN, a mixin of protocols/imap/session.py's
ImapSession; with them the commands that change the connection's layers or
its login: COMPRESS (RFC 4978, the streams in compress.py) and UNAUTHENTICATE
(RFC 8437).  The SASL steps are the shared exchange of
protocols/auth_exchange.py, framed as IMAP: ``+ base64`` continuations,
``*`` cancels (BAD), OK / NO [AUTHENTICATIONFAILED] / NO [UNAVAILABLE]
(RFC 5530).  The backend's ``authenticate`` applies the shared failure delay
and lockout; plaintext mechanisms and LOGIN only where POP3 would take them
(``_plaintext_ok``: TLS, loopback or the operator's choice).
"""

from __future__ import annotations

import logging
import urllib.parse

from protocols import auth_exchange as ax
from protocols import sasl
from protocols.auth_exchange import AuthExchange, Step
from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.session_base import BAD, NO, OK, Reply

log = logging.getLogger("mailsrv.imap")


def _authenticate_args(rest: memoryview):
    """authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp];
    initial-resp = (base64 / "=") (RFC 9051 §9, RFC 4959 §7)."""
    mech, rest = g.atom(g.sp(rest))
    initial = None
    if bytes(rest[:1]) == b" ":
        raw = bytes(rest[1:]).rstrip(b"\r\n")
        if not raw or b" " in raw:
            raise g.ImapParseError("bad initial response")
        initial, rest = raw, memoryview(b"\r\n")
    g.end(rest)
    return mech.decode("ascii").upper(), initial


class AuthCommands:
    """STARTTLS, AUTHENTICATE, LOGIN (see the module docstring)."""

    def _cmd_starttls(self, head) -> Reply:
        """RFC 9051 §6.2.1: OK, then the loop starts TLS; later input is discarded."""
        g.end(head.rest)
        if self.ctx.tls_active:
            return (BAD, "TLS is already active", None)
        if self._deflate is not None:
            # RFC 4978 §3: TLS must sit below COMPRESS; starting it under a
            # running compression layer (after UNAUTHENTICATE) is refused
            return (NO, "TLS cannot start under COMPRESS", None)
        if not self.ctx.tls_available:
            return (NO, "TLS is not available", None)
        self._starttls = True
        return (OK, "Begin TLS negotiation now", None)

    def _cmd_compress(self, head) -> Reply:
        """RFC 4978 §3: COMPRESS DEFLATE; the tagged OK goes out uncompressed,
        everything after it is compressed both ways (session_base.py)."""
        algorithm, rest = g.atom(g.sp(head.rest))
        g.end(rest)
        if algorithm.upper() != b"DEFLATE":
            return (BAD, "Unknown compression algorithm %s" % algorithm[:30].decode("ascii", "replace"), None)
        if self._deflate is not None:
            # RFC 4978 §3 / RFC 5530 §3: the same mechanism is already active
            # (Dovecot answers the same NO)
            return (NO, "DEFLATE is already active", wire.response_code("COMPRESSIONACTIVE"))
        self._compress_next = True
        log.info("imap compress deflate user=%s peer=%s tls=%s", self._user, self.ctx.peer_ip,
                 self.ctx.tls_active)
        return (OK, "DEFLATE active", None)

    def _cmd_unauthenticate(self, head) -> Reply:
        """RFC 8437 §3: back to the not-authenticated state: the selected
        mailbox is closed without expunging, the account released, what ENABLE
        turned on is off again (RFC 8437 §4.1).  TLS and COMPRESS are layers of
        the connection, not of the login: they stay."""
        g.end(head.rest)
        log.info("imap unauthenticate user=%s peer=%s", self._user, self.ctx.peer_ip)
        self._release()
        self._user = None
        self.rev2 = self.utf8 = False
        self._reset_sync()          # CONDSTORE / QRESYNC (condstore.py)
        self.state = type(self.state).NOT_AUTHENTICATED
        self._reader.max_literal = self._preauth_literal
        self._preauth_base = self._commands
        return (OK, "UNAUTHENTICATE completed", None)

    def _cmd_authenticate(self, head):
        """RFC 9051 §6.2.2, RFC 4959 (SASL-IR)."""
        mech, initial = _authenticate_args(head.rest)
        if mech not in sasl.MECHANISMS:
            return (NO, "Unsupported authentication mechanism", wire.response_code("CANNOT"))
        if mech not in self._mechanisms():
            return (NO, "Plaintext authentication disallowed without TLS",
                    wire.response_code("PRIVACYREQUIRED"))
        exchange = AuthExchange.sasl(mech, self.backend.scram_lookup)
        return (yield from self._auth_steps(exchange, exchange.start(initial)))

    def _cmd_login(self, head):
        """RFC 9051 §6.2.3: LOGIN userid password; refused while LOGINDISABLED."""
        user, rest = g.astring(g.sp(head.rest))
        password, rest = g.astring(g.sp(rest))
        g.end(rest)
        if not self._plaintext_ok():
            return (NO, "Plaintext authentication disallowed without TLS",
                    wire.response_code("PRIVACYREQUIRED"))
        try:
            name, secret = user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return (BAD, "User name and password must be UTF-8", None)
        exchange = AuthExchange.password("LOGIN", name, secret)
        return (yield from self._auth_steps(exchange, exchange.start()))

    def _auth_steps(self, exchange: AuthExchange, step: Step):
        """Frame the shared exchange's steps as IMAP until it ends."""
        while True:
            if step.kind == ax.CHALLENGE:
                self._emit(wire.sasl_continuation(step.encoded))
                line = yield self._wait_line
                if line is None:
                    return (BAD, "Authentication line too long", None)
                step = exchange.respond(line)
            elif step.kind == ax.CHECK:
                outcome = step.outcome
                answer = yield lambda done: self.backend.authenticate(self.ctx, outcome, done)
                step = exchange.verdict(answer)
            elif step.kind == ax.SUCCESS:
                return (yield from self._login_ok(step))
            elif step.kind in (ax.REJECTED, ax.TEMPORARY):
                return self._login_failed(step)
            elif step.kind == ax.CANCELLED:
                return (BAD, "Authentication cancelled", None)   # RFC 9051 §6.2.2
            elif step.kind == ax.BAD_BASE64:
                return (BAD, "Invalid base64 in SASL response", None)
            else:
                return (NO, "Authentication failed: %s" % step.error,
                        wire.response_code("AUTHENTICATIONFAILED"))

    def _login_failed(self, step: Step) -> Reply:
        self._auth_failures += 1
        if step.kind == ax.TEMPORARY:   # not checked now; the backend logged why
            return (NO, step.temporary.text, wire.response_code("UNAVAILABLE"))
        log.info("imap login failed user=%r mech=%s peer=%s",
                 step.outcome.authcid, step.outcome.mechanism, self.ctx.peer_ip)
        if self._auth_failures >= self.config.max_auth_failures:
            self._shutdown = True   # BYE after the NO (RFC 9051 §7.1.5)
            self._shutdown_text = "Too many failed logins"
        return (NO, "Authentication failed", wire.response_code("AUTHENTICATIONFAILED"))

    def _refer(self, user: str, step: Step) -> Reply:
        """RFC 2221 §4.1: the credentials are right but the mail is elsewhere:
        ``NO [REFERRAL imap://user@host/]`` (RFC 5092 §3: the user name
        %-encoded, its "@" as %40), still not authenticated; the client logs
        in there.  Not a failure: no failure count, no delay."""
        url = "imap://%s@%s/" % (urllib.parse.quote(user, safe=""), self.config.referral)
        log.info("imap login referred user=%s peer=%s to %s", user, self.ctx.peer_ip, url)
        return (NO, "Your mail is now on %s; log in there" % self.config.referral,
                b"[REFERRAL " + url.encode("ascii", "replace") + b"]")

    def _login_ok(self, step: Step):
        """Open the user's account (INBOX and the special-use folders), then
        AUTHENTICATED with the capabilities in the OK (RFC 9051 §6.2.2)."""
        user = step.user
        if self.config.referral:
            return self._refer(user, step)
        answer = yield lambda done: self.backend.open_account(self.ctx, user, done)
        if isinstance(answer, BaseException):
            log.error("imap open account failed user=%s: %r", user, answer)
            return (NO, "Cannot open the mailboxes, try again later", wire.response_code("UNAVAILABLE"))
        log.info("imap login ok user=%s mech=%s peer=%s tls=%s",
                 user, step.outcome.mechanism, self.ctx.peer_ip, self.ctx.tls_active)
        self._user = user
        self._account = answer
        self.state = type(self.state).AUTHENTICATED
        self._reader.max_literal = self.config.max_append
        return (OK, "Logged in", b"[CAPABILITY " + self._capabilities() + b"]")
