"""Shared pieces of the sans-I/O protocol sessions (SMTP, POP3, and later IMAP).

Every server session in ``protocols/`` has the same shape, so that the event
loop (``protocols/loop.py``, the only module here that touches sockets, TLS
or the clock) can drive any of them:

``receive_data(data)``
    bytes from the peer; ``b""`` means end of file.
``data_to_send()``
    the bytes to write now.  A session may return part of a long response
    (a big RETR) and produce the rest on later calls: the loop calls it again
    whenever its write buffer runs low, so memory stays bounded.
``closed``
    ``True`` once the session wants the connection closed; the loop first
    flushes whatever ``data_to_send()`` still returns.
``want_tls``
    set once a STARTTLS/STLS go-ahead reply has been queued.  The loop
    flushes that reply, starts the TLS handshake and calls
    ``tls_started(info)``; until then the session ignores input (RFC 3207 §4.2,
    RFC 2595 §3.1: plaintext pipelined after the command is discarded).
``idle_timeout``
    seconds the session tolerates without progress in its current state; the
    loop re-reads it after every call and calls ``timeout()`` when it expires.
``keepalive()`` (optional)
    asked first when the idle deadline passes: a session that answers True
    has queued a keep-alive (IMAP IDLE's ``* OK Still here``, RFC 2177 §3) and
    stays open with its idle clock restarted; False (or no such method) and
    the loop calls ``timeout()`` as usual.
``progress`` (optional)
    a counter that grows whenever a complete record has arrived: a command
    line, a line of message content, a complete BDAT chunk or (IMAP) literal
    (``LineReader.lines`` counts the line ends fed).  The loop restarts the
    idle clock only when it has changed after ``receive_data``, or when output
    was sent; so a command line must complete within ``idle_timeout`` of the
    previous one (Postfix's ``smtpd_per_record_deadline``: a deadline per
    record, not per read), and a client dripping one octet at a time never
    completing a line is closed like a silent one.  A session without it is
    timed from its last read (any octet), as before.
``shutdown()``
    the server is stopping: an idle session answers 421 (or its protocol's
    equivalent) and closes; one in the middle of a transaction closes as soon
    as the transaction ends.
``busy``
    ``True`` while a transaction is in flight (message data being received or
    delivered); graceful shutdown waits for it within a bound.

Work that takes time (an fsync, an scrypt hash, a failure delay) is handed to
an injected backend with a ``done`` callback.  The loop-side backend calls
``done`` later, in the loop thread; the session then queues its reply and
calls ``ctx.wake()`` so the loop flushes it.  In tests the backend may call
``done`` at once.
"""

import base64
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple


class ProtocolError(Exception):
    """A client error detected at the input boundary.

    ``reply`` is the complete response line(s) to send (bytes, CRLF
    terminated); ``close`` says whether the connection ends after it.
    The one error type of every session: a handler (or a parse function it
    calls) raises it, and the session's command dispatch (SMTP's
    ``SmtpSession._command``, POP3's ``Pop3Session._command``, IMAP's next)
    sends the reply -- 5xx / -ERR / BAD -- and closes when asked.
    """

    def __init__(self, reply: bytes, close: bool = False):
        super().__init__(reply)
        self.reply = reply
        self.close = close


class LineTooLong(Exception):
    """Raised by LineReader.read_line after an over-long line was discarded."""


def _default_clock() -> float:  # pragma: no cover - the loop injects the real one
    return 0.0


def new_id(nbytes: int = 10) -> str:
    """A random identifier (for queue ids and connection ids), base32, no padding."""
    return base64.b32encode(os.urandom(nbytes)).decode("ascii").rstrip("=")


@dataclass
class SessionContext:
    """What a session knows about its connection.

    Filled in by the event loop for every accepted connection; the session
    never asks the operating system for any of it.
    """

    peer: Tuple[str, int] = ("127.0.0.1", 0)
    local: Tuple[str, int] = ("127.0.0.1", 0)
    listener: str = "smtp"          # smtp, submission, smtps, pop3, pop3s, imap, imaps
    tls_active: bool = False        # implicit TLS, or after a completed STARTTLS
    tls_available: bool = False     # a certificate is configured: STARTTLS/STLS may be offered
    conn_id: str = field(default_factory=lambda: new_id(5))
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = _default_clock   # seconds since the epoch, from the loop
    tls_info: Optional[dict] = None  # {"version": ..., "cipher": ...} once TLS is up; {"error": ...} when the handshake failed

    @property
    def peer_ip(self) -> str:
        return self.peer[0]

    @property
    def is_loopback(self) -> bool:
        ip = self.peer[0]
        return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1") or ip.startswith("::ffff:127.")


@dataclass(frozen=True)
class FaultView:
    """What an injected fault's condition sees of a command (protocols/faults.py,
    ``when=lambda view: ...``).  ``rcpt_to``: the recipients accepted so far
    and, at RCPT, the one it names last; ``mail_from``: at MAIL, the one it names."""

    protocol: str                   # smtp, pop3, imap
    command: str                    # the verb, upper case (IMAP: UID FETCH is FETCH)
    arguments: str
    client_ip: str
    mail_from: str = ""
    rcpt_to: Tuple[str, ...] = ()
    user: Optional[str] = None      # logged in as (POP3 at PASS: the USER given)
    tls: bool = False


@dataclass(frozen=True)
class FaultAction:
    """What a fault that fired does to one command (``backend.fault``): "fail"
    (send ``reply`` instead of running it, then close when ``close``; IMAP's
    lacks the tag), "delay" (run it ``seconds`` later, holding the input), or
    "disconnect" (close without a reply; SMTP DATA/BDAT after the message)."""

    kind: str
    reply: bytes = b""
    close: bool = False
    seconds: float = 0.0


class LineReader:
    """Accumulates input and splits it into lines, with a length limit.

    ``read_line()`` returns one line without its terminator, or ``None`` when
    no complete line is buffered.  Lines end at LF; a CR before it is removed
    and ``last_crlf`` records whether it was there, so a protocol that must
    insist on CRLF (RFC 5321 §2.3.8) can.  A line longer than ``max_line``
    octets (terminator included) is discarded up to and including its LF, and
    ``LineTooLong`` is raised once for it.

    ``lines`` counts the line ends (LF) ever fed, whoever consumes them
    (``read_line``, a DATA reader, ``take``): the session's ``progress``.
    """

    def __init__(self, max_line: int):
        self.max_line = max_line
        self.buf = bytearray()
        self.last_crlf = True
        self._discarding = False
        self.lines = 0

    def feed(self, data: bytes) -> None:
        self.lines += data.count(b"\n")
        self.buf += data

    def __len__(self) -> int:
        return len(self.buf)

    def clear(self) -> None:
        self.buf.clear()
        self._discarding = False

    def read_line(self) -> Optional[bytes]:
        while True:
            nl = self.buf.find(b"\n")
            if self._discarding:
                if nl < 0:
                    self.buf.clear()
                    return None
                del self.buf[: nl + 1]
                self._discarding = False
                raise LineTooLong()
            if nl < 0:
                if len(self.buf) > self.max_line:
                    self.buf.clear()
                    self._discarding = True
                return None
            if nl + 1 > self.max_line:
                del self.buf[: nl + 1]
                raise LineTooLong()
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            self.last_crlf = line.endswith(b"\r")
            if self.last_crlf:
                line = line[:-1]
            return line

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered octets (for literals and BDAT)."""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out
