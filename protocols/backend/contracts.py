"""The contracts between the protocol sessions and the backend services.

Every session (SMTP, POP3, later IMAP) is a sans-I/O state machine that asks
an injected backend for anything that needs the disk, a thread or the clock.
What it may ask, and what comes back, is written here as ``typing.Protocol``
classes; the real services (protocols/backend/auth.py, policy.py,
delivery.py, mailaccess.py, outbound.py) and the fakes of the session tests
honour them, and tests/test_backend_contracts.py runs one set of checks
against both.

Rules common to every contract:

* a method that takes ``done`` calls it exactly once, later on the loop
  thread (the real services) or at once (the fakes); the session never
  assumes either;
* errors a session must answer travel as values or as the contract-level
  exceptions below, never as a store class (tests/test_layering.py: sessions
  import nothing from ``store/``);
* replies are ``(code, enhanced, text)`` tuples (RFC 5321 §4.2, RFC 3463).

This module imports no store class and no session: both sides import it.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

from protocols.sasl import AuthTemporary, Authenticator, SaslOutcome, ScramCredentials  # noqa: F401

Reply = Tuple[int, str, str]


class MailboxInUse(Exception):
    """``open_maildrop``'s answer when another session holds the mailbox's
    exclusive lock (RFC 1939 §4: "-ERR [IN-USE]", RFC 2449 §8.1.2).  The mail
    access service translates the store's lock error into this."""


# -- authentication: protocols/sasl.py's Authenticator -----------------------
# scram_lookup(username) -> ScramCredentials (stable fake ones for an unknown
# name, RFC 5802 §9); authenticate(ctx, outcome, done) -> done(user) |
# done(None) (wrong credentials) | done(AuthTemporary) (not checked now).
AuthService = Authenticator


class PolicyService(Protocol):
    """SMTP policy (RFC 5321 §3.6, §4.5.1; RFC 6409 §4, §6.1)."""

    def check_sender(self, ctx, auth_user: Optional[str], address) -> Optional[Reply]:
        """None to accept MAIL FROM, else the refusal."""

    def check_recipient(self, ctx, auth_user: Optional[str], address) -> Any:
        """A ``protocols.smtp.state.RcptDecision``: ``ok``, the refusal ``reply``,
        and an opaque ``target`` the delivery service gets back in the envelope."""

    def may_relay(self, ctx, auth_user: Optional[str]) -> bool:
        """Whether a non-local recipient is accepted from this session."""


class DeliveryService(Protocol):
    """Where accepted mail goes (RFC 5321 §4.1.1.4: 250 only once it is safe)."""

    def open_message(self, envelope) -> Any:
        """A ``MessageSink`` (protocols/smtp/state.py: write / abort /
        finish(envelope, done(Reply))) for a message whose data starts now,
        or a refusal Reply (over the in-flight budget: 452 4.3.1).  (The real
        service also has ``deliver(envelope, data, done)`` for a message in
        hand, used by local submission, not by sessions.)"""


class MaildropMessage(Protocol):
    uid: str        # UIDL unique-id (RFC 1939 §7)
    size: int       # octets in CRLF form (RFC 1939 §11)


class MessageReader(Protocol):
    """One message file being read for RETR/TOP, on a worker thread."""

    def read(self, size: int, done: Callable[[object], None]) -> None:
        """``done(bytes)``: the next at most ``size`` octets (b"" at the end),
        or ``done(OSError)``.  One read at a time."""

    def close(self) -> None:
        """Release the file (after a read in flight ends); no answer."""


class Maildrop(Protocol):
    """A user's locked mailbox as POP3 sees it (RFC 1939 §4-§6).

    ``messages`` is plain data; every method that may touch the disk takes
    ``done`` and runs on a worker thread (issue 9 §2: no session touches the
    disk), one after another in the order asked."""

    messages: Sequence[MaildropMessage]

    def open_message(self, i: int, done: Callable[[object], None]) -> None:
        """``done(MessageReader)`` for message ``i`` (0-based), or ``done(OSError)``."""

    def mark_seen(self, i: int, done: Callable[[object], None]) -> None:
        """RETR read message ``i`` (IMAP then shows it \\Seen); ``done(None)``."""

    def commit_deletes(self, indices: List[int], done: Callable[[object], None]) -> None:
        """RFC 1939 §6 UPDATE: remove these messages.  ``done(None)`` when all
        are gone; ``done(OSError)`` when some are left (the others are removed)."""

    def close(self, done: Optional[Callable[[object], None]] = None) -> None:
        """Release the lock (pending \\Seen marks applied); ``done(None)`` after;
        safe to call twice."""


class MailAccess(Protocol):
    """Users' mailboxes (POP3 today; IMAP folders and the change hub next)."""

    def open_maildrop(self, ctx, user: str, done: Callable[[object], None]) -> None:
        """``done(Maildrop)``, or ``done(exception)``: ``MailboxInUse``;
        PermissionError / NotADirectoryError / ValueError for a fault an
        operator must fix; any other OSError for one that may pass."""


class OutboundService(Protocol):
    """The relay and its queue: the relay owns every queue entry (STYLE.md)."""

    queue: Any      # None while outbound delivery is off

    def queue_control(self, done: Optional[Callable[[str, str, str], None]] = None) -> None:
        """Apply the `mailsrv.py queue ...` requests through the relay;
        ``done(command, id, outcome)`` once each is on disk."""


class SmtpBackend(AuthService, PolicyService, DeliveryService, Protocol):
    """What an SmtpSession is given."""


class Pop3Backend(AuthService, MailAccess, Protocol):
    """What a Pop3Session is given."""
