"""POP3 server session, sans-I/O (see ``protocols/base.py`` for the protocol).

Implements RFC 1939 (POP3: the AUTHORIZATION, TRANSACTION and UPDATE states,
USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, QUIT, byte-stuffing),
RFC 2449 (CAPA, extended response codes, PIPELINING, the 255-octet command
limit), RFC 3206 (the [SYS/TEMP] and [AUTH] response codes, AUTH-RESP-CODE),
RFC 2595 §4 (STLS), RFC 5034 (AUTH with SASL: PLAIN, LOGIN, SCRAM-SHA-256 from
``protocols/sasl.py``) and RFC 6856 §2 (the UTF8 capability and command).

Left out:

* APOP (RFC 1939 §7): it needs the plaintext password (or an equivalent) on
  the server to compute MD5(timestamp + password); we store only scrypt hashes
  and SCRAM keys, so the greeting carries no APOP timestamp.
* LANG (RFC 6856 §3), LOGIN-DELAY (RFC 2449 §6.5), SASL security layers
  (none of our mechanisms has one), the UTF8 "USER" argument (RFC 6856 §2.2).

The session never touches the disk itself: it asks ``backend.open_maildrop``
for a maildrop object (the ``Maildrop`` contract of protocols/backend/contracts.py,
served through protocols/backend/mailaccess.py) whose every disk step
(opening and reading a message, \\Seen marks, QUIT's expunge, the unlock)
runs on a worker and answers through a callback; meanwhile the session holds
further input (``_waiting``), as while it waits for authentication.  The maildrop is a snapshot taken at
login (RFC 1939 §4: messages are numbered when the maildrop is opened), so
mail arriving during a session appears at the next login.  Only QUIT in
TRANSACTION removes messages (RFC 1939 §6); EOF, timeout, shutdown and errors
release the maildrop lock and delete nothing.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, FrozenSet, List, Optional, Set, Tuple, Union

from protocols import auth_exchange as ax
from protocols import sasl
from protocols.auth_exchange import AuthExchange, Step
from protocols.base import FaultView, LineReader, LineTooLong, ProtocolError, SessionContext
from protocols.pop3.stream import READ_CHUNK, MessageStream  # noqa: F401 (READ_CHUNK re-exported)
from protocols.pop3.transaction import TransactionCommands, _line, _multiline
from protocols.backend.contracts import MailboxInUse, Pop3Backend

log = logging.getLogger("mailsrv.pop3")

# RFC 2449 §4: a command is at most 255 octets, including the terminating CRLF.
MAX_COMMAND_LINE = 255
# RFC 5034 §4: SASL responses after the AUTH line "may be of arbitrary
# length"; we accept the RFC 4954 §4 bound of 12288 octets (sasl.py's
# MAX_RESPONSE_OCTETS) plus the CRLF.
MAX_SASL_LINE = sasl.MAX_RESPONSE_OCTETS + 2
# Input buffered while a command waits for the backend or a RETR streams.
# RFC 2449 §6.6 lets clients pipeline, but no client needs more than this
# (it is ~25000 "DELE n" commands); beyond it the connection is closed.
MAX_PENDING_INPUT = 256 * 1024


class Pop3State(enum.Enum):
    """RFC 1939 §3: the states of a POP3 session."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


AUTHZ = frozenset([Pop3State.AUTHORIZATION])
TRANS = frozenset([Pop3State.TRANSACTION])
BOTH = AUTHZ | TRANS


@dataclass
class Pop3Config:
    hostname: str = "localhost"
    # RFC 1939 §3: an autologout timer MUST be at least 10 minutes.
    idle_timeout: float = 600.0
    # RFC 2595 §2.3: clear-text passwords only over TLS unless configured.
    allow_plaintext_auth: bool = False
    plaintext_auth_loopback: bool = True
    # Abuse limits (local policy, no RFC number): after this many unknown or
    # misplaced commands, commands before a login, or failed logins, the
    # session answers -ERR and closes (RFC 1939 §4 allows closing after a
    # failed authentication).
    max_bad_commands: int = 10
    max_commands_before_login: int = 30
    max_auth_failures: int = 3


Handler = Callable[["Pop3Session", bytes], None]


class Pop3Session(TransactionCommands):
    """One POP3 connection: bytes in, bytes out (RFC 1939 §3)."""

    def __init__(self, ctx: SessionContext, config: Pop3Config, backend: Pop3Backend):
        self.ctx = ctx
        self.config = config
        self.backend = backend
        self.state = Pop3State.AUTHORIZATION
        self.want_tls = False
        self._reader = LineReader(MAX_COMMAND_LINE)
        self._out: Deque[Union[bytes, MessageStream]] = deque()
        self._closing = False
        self._waiting = False      # a backend call is in flight
        self._user_arg: Optional[str] = None   # USER given, PASS expected
        self._sasl: Optional[AuthExchange] = None    # an AUTH exchange waiting for a client line
        self._user: Optional[str] = None
        self._maildrop = None
        self._deleted: Set[int] = set()
        self._retrieved = 0
        self._utf8 = False
        self._bad = 0
        self._commands = 0
        self._auth_failures = 0
        self._faults = getattr(backend, "faults", None)    # injected faults (issue 11), if any
        # RFC 1939 §4 greeting; no APOP timestamp (see the module docstring).
        self._send("+OK %s POP3 server ready" % config.hostname)

    # -- the session protocol (protocols/base.py) -------------------------

    @property
    def closed(self) -> bool:
        return self._closing and not self._out

    @property
    def busy(self) -> bool:
        return False  # POP3 has no transaction whose end a shutdown must wait for

    @property
    def progress(self) -> int:
        """Complete lines received (protocols/base.py): the loop's idle clock."""
        return self._reader.lines

    @property
    def idle_timeout(self) -> float:
        return self.config.idle_timeout

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._terminate("eof")  # also stops a stream still being written
            return
        if self._closing:
            return
        if self.want_tls:
            return  # RFC 2595 §4: plaintext after STLS is discarded
        self._reader.feed(data)
        if len(self._reader) > MAX_PENDING_INPUT:
            self._fatal("-ERR too much pipelined input")
            return
        self._process()

    def data_to_send(self) -> bytes:
        """Queued lines, or the next chunk of a streaming RETR/TOP."""
        out: List[bytes] = []
        while self._out:
            item = self._out[0]
            if isinstance(item, bytes):
                out.append(self._out.popleft())
                continue
            if out:
                break  # the lines before the stream now, the stream next call
            chunk = item.take()    # None while a worker reads the next chunk
            if item.error is not None:
                log.error("pop3 read error user=%s peer=%s: %r", self._user, self.ctx.peer_ip, item.error)
                self._terminate("read error")  # cannot report it mid-message: close
                return b""
            if chunk is None:
                break
            out.append(chunk)
            if not item.finished:
                break
            self._out.popleft()
            self._process()  # commands pipelined behind the RETR
        return b"".join(out)

    def tls_started(self, info: dict) -> None:
        """RFC 2595 §4: after the handshake, back to a fresh AUTHORIZATION state."""
        self.ctx.tls_active = True
        self.ctx.tls_info = info
        self.want_tls = False
        self._reader.clear()
        self._user_arg = None
        self._utf8 = False
        self._process()

    def timeout(self) -> None:
        """RFC 1939 §3: close without removing messages or sending a response.

        (SMTP sends 421 on a timeout; for POP3 the RFC's autologout rule
        wins: nothing is sent.)
        """
        log.info("pop3 timeout user=%s peer=%s", self._user, self.ctx.peer_ip)
        self._terminate("timeout")

    def shutdown(self) -> None:
        """Server stopping: -ERR [SYS/TEMP] and close; nothing is deleted."""
        if self._closing or self.state is Pop3State.UPDATE:
            return  # (a QUIT's UPDATE in progress answers and closes by itself)
        self._fatal("-ERR [SYS/TEMP] server shutting down")

    # -- input processing -----------------------------------------------

    def _send(self, text: Union[str, bytes]) -> None:
        self._out.append(_line(text))

    def _streaming(self) -> bool:
        return any(isinstance(item, MessageStream) for item in self._out)

    def _process(self) -> None:
        """Answer buffered commands in order (RFC 2449 §6.6), one at a time."""
        while not (self._closing or self._waiting or self.want_tls or self._streaming()):
            self._reader.max_line = MAX_SASL_LINE if self._sasl else MAX_COMMAND_LINE
            try:
                line = self._reader.read_line()
            except LineTooLong:
                self._sasl = None
                self._bad_command("-ERR line too long")
                continue
            if line is None:
                return
            if self._sasl is not None:
                self._sasl_response(line)
            else:
                self._command(line)

    def _command(self, line: bytes) -> None:
        """RFC 1939 §3: keyword (case-insensitive), then arguments."""
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()
        entry = COMMANDS.get(verb)
        if self.state is Pop3State.AUTHORIZATION:
            self._commands += 1
            if self._commands > self.config.max_commands_before_login:
                self._fatal("-ERR too many commands without logging in")
                return
        if verb != b"PASS":
            self._user_arg = None  # RFC 1939 §7: PASS only right after USER
        if entry is None:
            self._bad_command("-ERR unknown command")
            return
        handler, states = entry
        if self.state not in states:
            self._bad_command("-ERR command not valid in this state")
            return
        if self._faults is not None and self._faults.active and self._fault(verb.decode("ascii"), rest, handler):
            return      # an injected fault took the command (protocols/faults.py)
        self._run(handler, rest)

    def _run(self, handler: Handler, rest: bytes) -> None:
        """One command's handler, a ProtocolError turned into its reply."""
        try:
            handler(self, rest)
        except ProtocolError as e:      # the command boundary (protocols/base.py)
            if e.close:
                self._fatal(e.reply[:-2])
            else:
                self._out.append(e.reply)

    def _fault(self, verb: str, rest: bytes, handler: Handler) -> bool:
        """Ask the backend about this command (issue 11); True when a fault
        took it: its -ERR instead, the command run later (input held, RFC 2449
        §6.6 order kept), or the connection dropped without a reply."""
        user = self._user or (self._user_arg if verb == "PASS" else None)
        view = FaultView("pop3", verb, rest.decode("utf-8", "replace"), self.ctx.peer_ip,
                         user=user, tls=self.ctx.tls_active)
        action = self.backend.fault("pop3", verb, view)
        if action is None:
            return False
        if action.kind == "fail":
            self._user_arg = None   # a PASS after a refused one needs USER again (RFC 1939 §7)
            self._out.append(action.reply)
        elif action.kind == "delay":
            self._waiting = True

            def later(_result) -> None:
                self._waiting = False
                if not self._closing:
                    self._run(handler, rest)
                    self._resume()
            self.backend.fault_delay(action.seconds, later)
        else:
            self._terminate("injected fault")
        return True

    def _bad_command(self, reply: str) -> None:
        self._bad += 1
        if self._bad >= self.config.max_bad_commands:
            self._fatal(reply + " (too many errors, closing)")
        else:
            self._send(reply)

    def _fatal(self, reply: Union[str, bytes]) -> None:
        """Send ``reply`` after any pending output, then close; deletes nothing."""
        self._send(reply)
        self._release("closed")
        self._closing = True
        self._reader.clear()

    def _terminate(self, why: str) -> None:
        """Connection over without QUIT (RFC 1939 §6: nothing is removed)."""
        for item in self._out:
            if isinstance(item, MessageStream):
                item.close()
        self._out.clear()
        self._release(why)
        self._closing = True
        self._reader.clear()

    def _release(self, why: str) -> None:
        if self._maildrop is not None:
            maildrop, self._maildrop = self._maildrop, None
            log.info("pop3 session ended (%s) user=%s peer=%s retrieved=%d deleted=0",
                     why, self._user, self.ctx.peer_ip, self._retrieved)
            self._close_maildrop(maildrop)

    @staticmethod
    def _close_maildrop(maildrop) -> None:
        """Unlock on a worker (the Maildrop contract); a failure is only logged."""
        def closed(result: object) -> None:
            if isinstance(result, BaseException):
                log.error("pop3 maildrop close failed: %r", result)
        maildrop.close(closed)

    # -- AUTHORIZATION (RFC 1939 §4, RFC 5034, RFC 2595) ------------------

    def _plaintext_ok(self) -> bool:
        """RFC 2595 §2.3: clear-text passwords only over TLS, unless configured."""
        c = self.config
        return (self.ctx.tls_active or c.allow_plaintext_auth
                or (c.plaintext_auth_loopback and self.ctx.is_loopback))

    def _cmd_capa(self, rest: bytes) -> None:
        """RFC 2449 §5: the capability list for the current state."""
        caps = [b"TOP", b"UIDL"]
        authz = self.state is Pop3State.AUTHORIZATION
        if self._plaintext_ok():
            caps.append(b"USER")  # RFC 2449 §6.2
        mechs = sasl.offered_mechanisms(self._plaintext_ok())
        caps.append(("SASL " + " ".join(mechs)).encode("ascii"))  # RFC 2449 §6.3
        caps += [b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]  # RFC 2449 §6.4, RFC 3206, §6.6
        if authz and self.ctx.tls_available and not self.ctx.tls_active:
            caps.append(b"STLS")  # RFC 2595 §4: only when permitted now
        caps += [b"EXPIRE NEVER", b"IMPLEMENTATION mailsrv", b"UTF8"]  # RFC 2449 §6.7, §6.9; RFC 6856 §2
        self._out.append(_multiline("+OK Capability list follows", caps))

    def _cmd_user(self, rest: bytes) -> None:
        """RFC 1939 §7 USER; refused without TLS (RFC 2595 §2.3, RFC 2449 §6.2)."""
        if not self._plaintext_ok():
            self._send("-ERR [AUTH] Plaintext authentication disallowed, use STLS")
            return
        name = self._text_arg(rest.strip())
        if not name:
            self._send("-ERR USER needs a valid user name")
            return
        self._user_arg = name
        self._send("+OK send PASS")  # never reveals whether the user exists

    def _cmd_pass(self, rest: bytes) -> None:
        """RFC 1939 §7 PASS: the rest of the line is the password (spaces allowed)."""
        user, self._user_arg = self._user_arg, None
        if user is None:
            self._send("-ERR USER first")
            return
        password = self._text_arg(rest)
        if not password:
            self._send("-ERR PASS needs a password")
            return
        exchange = AuthExchange.password("USER", user, password)
        self._auth_step(exchange, exchange.start())

    def _cmd_auth(self, rest: bytes) -> None:
        """RFC 5034 §4: AUTH mechanism [initial-response]."""
        args = rest.split()
        mechs = sasl.offered_mechanisms(self._plaintext_ok())
        if not args:
            # DEVIATION(RFC 5034 §4): bare "AUTH" is not in RFC 5034, but
            # clients from the RFC 1734 era send it to list the mechanisms.
            self._out.append(_multiline("+OK", [m.encode("ascii") for m in mechs]))
            return
        mech = args[0].decode("ascii", "replace").upper()
        if len(args) > 2:
            self._send("-ERR syntax: AUTH mechanism [initial-response]")
            return
        if mech not in mechs:
            self._send("-ERR Unsupported authentication mechanism")  # RFC 5034 §4
            return
        exchange = AuthExchange.sasl(mech, self.backend.scram_lookup)
        # "=" is the empty initial response (RFC 5034 §4)
        self._auth_step(exchange, exchange.start(args[1] if len(args) == 2 else None))

    def _sasl_response(self, line: bytes) -> None:
        """A client line in a SASL exchange: base64 or "*" (RFC 5034 §4)."""
        exchange, self._sasl = self._sasl, None
        self._auth_step(exchange, exchange.respond(line))

    def _auth_step(self, exchange: AuthExchange, step: Step) -> None:
        """Frame one step of the shared exchange (protocols/auth_exchange.py) as POP3."""
        if step.kind == ax.CHALLENGE:
            # RFC 5034 §4: "+ " and the base64 challenge; a SCRAM server-final
            # (sent only once the backend accepted, RFC 5802 §5) comes this way too.
            self._sasl = exchange
            self._send(b"+ " + step.encoded)
        elif step.kind == ax.CHECK:
            # the backend verifies and delays failures; input waits meanwhile
            self._waiting = True
            self.backend.authenticate(self.ctx, step.outcome,
                                      lambda answer: self._authenticated(exchange, answer))
        elif step.kind == ax.SUCCESS:
            self._login_ok(step.outcome, step.user)
        elif step.kind in (ax.REJECTED, ax.TEMPORARY):
            self._login_failed(step)
        elif step.kind == ax.CANCELLED:
            self._send("-ERR [AUTH] Authentication cancelled")
        elif step.kind == ax.BAD_BASE64:
            self._send("-ERR [AUTH] Invalid base64 in SASL response")
        else:
            self._send("-ERR [AUTH] %s" % step.error)

    def _authenticated(self, exchange: AuthExchange, answer) -> None:
        """``backend.authenticate``'s answer: a user, None, or sasl.AuthTemporary."""
        self._waiting = False
        if self._closing:
            return
        step = exchange.verdict(answer)
        self._auth_step(exchange, step)
        if step.kind != ax.SUCCESS:     # a login goes on to open the maildrop
            self._resume()

    def _login_failed(self, step: Step) -> None:
        self._auth_failures += 1
        last = self._auth_failures >= self.config.max_auth_failures
        if step.kind == ax.REJECTED:
            log.info("pop3 login failed user=%r mech=%s peer=%s",
                     step.outcome.authcid, step.outcome.mechanism, self.ctx.peer_ip)
            reply = "-ERR [AUTH] Authentication failed" + (", closing" if last else "")
        else:   # RFC 3206 §4 SYS/TEMP: not checked now; the backend logged why
            reply = "-ERR [SYS/TEMP] " + step.temporary.text
        (self._fatal if last else self._send)(reply)

    def _login_ok(self, outcome: sasl.SaslOutcome, user: str) -> None:
        log.info("pop3 login ok user=%s mech=%s peer=%s tls=%s",
                 user, outcome.mechanism, self.ctx.peer_ip, self.ctx.tls_active)
        self._user = user
        self._waiting = True
        self.backend.open_maildrop(self.ctx, user, self._maildrop_opened)

    def _maildrop_opened(self, result) -> None:
        """RFC 1939 §4: lock and open the maildrop, or -ERR and stay put."""
        self._waiting = False
        if self._closing:
            if not isinstance(result, BaseException):
                self._close_maildrop(result)  # the client left while we were opening
            return
        if isinstance(result, BaseException):
            if isinstance(result, MailboxInUse):
                self._send("-ERR [IN-USE] Maildrop is locked by another session")  # RFC 2449 §8.1.2
            elif isinstance(result, (PermissionError, NotADirectoryError, ValueError)):
                # RFC 3206 §4 SYS/PERM: a fault an operator must fix; retrying will not help.
                log.error("pop3 open maildrop failed user=%s: %r", self._user, result)
                self._send("-ERR [SYS/PERM] The maildrop cannot be opened, contact the administrator")
            else:
                # RFC 3206 §4 SYS/TEMP: may work later (I/O error, out of descriptors).
                log.error("pop3 open maildrop failed user=%s: %r", self._user, result)
                self._send("-ERR [SYS/TEMP] Cannot open the maildrop")
            self._user = None
        else:
            self._maildrop = result
            self.state = Pop3State.TRANSACTION
            count, octets = self._totals()
            self._send("+OK maildrop has %d messages (%d octets)" % (count, octets))
        self._resume()

    def _resume(self) -> None:
        """After a backend callback: answer what was pipelined, wake the loop."""
        self._process()
        self.ctx.wake()

    def _cmd_stls(self, rest: bytes) -> None:
        """RFC 2595 §4: STLS, only without TLS and before UTF8 (RFC 6856 §2.1)."""
        if self.ctx.tls_active:
            self._send("-ERR Command not permitted when TLS active")
        elif not self.ctx.tls_available:
            self._send("-ERR TLS not available")
        elif self._utf8:
            self._send("-ERR STLS not permitted after UTF8")
        else:
            self._send("+OK Begin TLS negotiation")
            self.want_tls = True
            self._reader.clear()  # pipelined plaintext is discarded

    def _cmd_utf8(self, rest: bytes) -> None:
        """RFC 6856 §2.1: enable UTF-8 mode.

        DEVIATION(RFC 6856 §2.1): messages are sent as stored whether or not
        UTF8 was given (no surrogate messages, no -ERR [UTF8]); the octets
        are the ones SMTP accepted, and refusing them would hide mail.
        """
        self._utf8 = True
        self._send("+OK UTF8 enabled")

    def _cmd_quit(self, rest: bytes) -> None:
        """RFC 1939 §4 / §6: QUIT; from TRANSACTION it enters UPDATE."""
        if self.state is Pop3State.AUTHORIZATION:
            self._send("+OK %s POP3 server signing off" % self.config.hostname)
            self._closing = True
            return
        self.state = Pop3State.UPDATE
        maildrop, self._maildrop = self._maildrop, None
        deleted = sorted(self._deleted)
        # The expunge and the unlock (which applies the \\Seen marks) run on a
        # worker, in order; the answer waits for both, so a client that has its
        # +OK finds the maildrop updated and unlocked (RFC 1939 §6).
        self._waiting = True
        committed: List[object] = []
        if deleted:
            maildrop.commit_deletes(deleted, committed.append)
        maildrop.close(lambda closed: self._updated(maildrop, deleted, committed[0] if committed else None,
                                                    closed))

    def _updated(self, maildrop, deleted: List[int], result: object, closed: object) -> None:
        """``commit_deletes``'s answer (None, or an OSError: the Maildrop contract), then ``close``'s."""
        self._waiting = False
        if isinstance(closed, BaseException):
            log.error("pop3 maildrop close failed user=%s: %r", self._user, closed)
        if self._closing:       # the connection went away meanwhile: nobody to answer
            return
        if isinstance(result, BaseException):
            log.error("pop3 %d deleted messages not removed user=%s: %r", len(deleted), self._user, result)
            self._send("-ERR [SYS/TEMP] some deleted messages not removed")  # RFC 1939 §6
        else:
            left = len(maildrop.messages) - len(deleted)
            self._send("+OK %s POP3 server signing off (%s)" % (
                self.config.hostname,
                "maildrop empty" if not left else "%d messages left" % left))
        log.info("pop3 logout user=%s peer=%s retrieved=%d deleted=%d",
                 self._user, self.ctx.peer_ip, self._retrieved, len(deleted))
        self._closing = True
        self.ctx.wake()


# The command table: verb → (handler, states in which it is allowed), one
# ``_cmd_<verb>`` method each, as in protocols/smtp/server.py.  The states come
# from RFC 1939 §3 (AUTHORIZATION until USER/PASS or AUTH succeeds, then
# TRANSACTION; QUIT there leads to UPDATE) and its command summary (§9), and
# the extensions' own rules; a known verb in another state, or an unknown one,
# is -ERR (_bad_command).
COMMANDS: Dict[bytes, Tuple[Handler, FrozenSet[Pop3State]]] = {
    b"CAPA": (Pop3Session._cmd_capa, BOTH),      # RFC 2449 §5
    b"QUIT": (Pop3Session._cmd_quit, BOTH),      # RFC 1939 §4, §6
    b"USER": (Pop3Session._cmd_user, AUTHZ),     # RFC 1939 §7
    b"PASS": (Pop3Session._cmd_pass, AUTHZ),     # RFC 1939 §7
    b"AUTH": (Pop3Session._cmd_auth, AUTHZ),     # RFC 5034 §4
    b"STLS": (Pop3Session._cmd_stls, AUTHZ),     # RFC 2595 §4
    b"UTF8": (Pop3Session._cmd_utf8, AUTHZ),     # RFC 6856 §2.1
    b"STAT": (Pop3Session._cmd_stat, TRANS),     # RFC 1939 §5
    b"LIST": (Pop3Session._cmd_list, TRANS),
    b"RETR": (Pop3Session._cmd_retr, TRANS),
    b"DELE": (Pop3Session._cmd_dele, TRANS),
    b"NOOP": (Pop3Session._cmd_noop, TRANS),
    b"RSET": (Pop3Session._cmd_rset, TRANS),
    b"TOP": (Pop3Session._cmd_top, TRANS),       # RFC 1939 §7
    b"UIDL": (Pop3Session._cmd_uidl, TRANS),     # RFC 1939 §7
}
