"""One SASL exchange for every protocol: SMTP AUTH (RFC 4954), POP3 AUTH
(RFC 5034), USER/PASS (RFC 1939 §7) and, next, IMAP AUTHENTICATE with SASL-IR
(RFC 9051 §6.2.2, RFC 4959) and LOGIN (RFC 9051 §6.2.3).

The protocols differ only in framing: a challenge is ``334 <base64>`` (SMTP)
or ``+ <base64>`` (POP3, IMAP); success, failure and "try again later" are
235/535/454, +OK/-ERR [AUTH]/-ERR [SYS/TEMP] or OK/NO/NO [UNAVAILABLE].  What
happens between is the same and lives here once:

* decoding client lines (base64, "=" for empty, "*" to cancel: RFC 4954 §4,
  RFC 5034 §4, RFC 4959 §3) and stepping ``sasl.SaslServer``;
* asking the backend (``AuthService.authenticate``, the contract of
  protocols/backend/contracts.py) once the mechanism has an outcome;
* SCRAM's server-final held back until the backend has counted and accepted
  the attempt (RFC 5802 §5, see ``SaslServer.hold_server_final``), then sent
  as one more challenge whose (empty) answer completes the login
  (RFC 4422 §5 item 2b).

Sans-I/O like the sessions: the exchange never calls the backend itself.
Each call returns a ``Step``; for ``CHECK`` the session calls
``backend.authenticate(ctx, step.outcome, done)`` its own way (holding its
input meanwhile) and feeds the answer to ``verdict``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Callable, Optional

from protocols import sasl

# Step kinds.
CHALLENGE = "challenge"     # send ``step.data`` as the protocol's continuation
CHECK = "check"             # ask backend.authenticate(ctx, step.outcome, done) -> verdict()
SUCCESS = "success"         # logged in as ``step.user``
REJECTED = "rejected"       # wrong credentials (the session logs one line, counts it)
TEMPORARY = "temporary"     # not checked now: ``step.temporary`` (sasl.AuthTemporary)
CANCELLED = "cancelled"     # the client sent "*"
BAD_BASE64 = "bad-base64"   # a response line that is not base64
MALFORMED = "malformed"     # the mechanism refused the data (``step.error``, never a password)

# The kinds that end the exchange without a login.
FAILURES = frozenset([REJECTED, TEMPORARY, CANCELLED, BAD_BASE64, MALFORMED])


@dataclass
class Step:
    kind: str
    data: bytes = b""                           # CHALLENGE: raw challenge octets
    outcome: Optional[sasl.SaslOutcome] = None  # CHECK, SUCCESS, REJECTED
    user: Optional[str] = None                  # SUCCESS
    temporary: Optional[sasl.AuthTemporary] = None
    error: str = ""                             # MALFORMED

    @property
    def encoded(self) -> bytes:
        """A CHALLENGE's data in base64, as every protocol sends it (RFC 4954 §4)."""
        return base64.b64encode(self.data)


class AuthExchange:
    """One exchange; build it with ``sasl(...)`` or ``password(...)``."""

    def __init__(self, server: Optional[sasl.SaslServer], outcome: Optional[sasl.SaslOutcome] = None):
        self._server = server
        self._checked = outcome     # the outcome the backend is (or will be) asked about
        self.mechanism = server.mechanism if server is not None else outcome.mechanism

    @classmethod
    def sasl(cls, mechanism: str, scram_lookup: Callable[[str], sasl.ScramCredentials],
             nonce: Optional[Callable[[], bytes]] = None) -> "AuthExchange":
        """A SASL mechanism of ``sasl.MECHANISMS`` (the session has checked it is offered)."""
        kw = {} if nonce is None else {"nonce": nonce}
        return cls(sasl.SaslServer(mechanism, scram_lookup, hold_server_final=True, **kw))

    @classmethod
    def password(cls, mechanism: str, authcid: str, password: str) -> "AuthExchange":
        """A name and password given as command arguments (POP3 USER/PASS,
        IMAP LOGIN): ``start()`` answers CHECK at once."""
        return cls(None, sasl.SaslOutcome(mechanism=mechanism, authcid=authcid, authzid="", password=password))

    def start(self, initial: Optional[bytes] = None) -> Step:
        """The command's initial response as sent (base64 or "="), or None."""
        if self._server is None:
            return Step(CHECK, outcome=self._checked)
        if initial is None:
            return self._step(None)
        return self.respond(initial)

    def respond(self, line: bytes) -> Step:
        """One client line of the exchange (terminator removed)."""
        try:
            data = sasl.decode_response(line)
        except sasl.SaslCancelled:
            return Step(CANCELLED)
        except sasl.SaslError:
            return Step(BAD_BASE64)
        return self._step(data)

    def _step(self, data: Optional[bytes]) -> Step:
        server = self._server
        try:
            challenge, outcome = server.step(data)
        except sasl.SaslError as exc:
            return Step(MALFORMED, error=str(exc))
        if outcome is None:
            return Step(CHALLENGE, data=challenge or b"")
        if server.approved is not None:     # the client took our server-final (RFC 4422 §5 item 2b)
            return Step(SUCCESS, outcome=outcome, user=server.approved)
        self._checked = outcome
        return Step(CHECK, outcome=outcome)

    def verdict(self, answer: object) -> Step:
        """``backend.authenticate``'s answer to a CHECK: a user, None, or
        ``sasl.AuthTemporary`` (the contract of protocols/sasl.py)."""
        outcome = self._checked
        if isinstance(answer, sasl.AuthTemporary):
            return Step(TEMPORARY, outcome=outcome, temporary=answer)
        if not answer:
            return Step(REJECTED, outcome=outcome)
        if self._server is not None and outcome.server_final is not None:
            # RFC 5802 §5: the server signature goes out only now that the backend
            # has counted and accepted the attempt; the client's empty answer to it
            # (RFC 4422 §5 item 2b) comes back through respond() as SUCCESS.
            self._server.approved = str(answer)
            return Step(CHALLENGE, data=outcome.server_final)
        return Step(SUCCESS, outcome=outcome, user=str(answer))
