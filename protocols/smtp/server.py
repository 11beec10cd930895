"""SMTP server session, sans-I/O (RFC 5321) with the ESMTP extensions we offer.

Implements RFC 5321 (commands EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT, VRFY, HELP; EXPN answers 502), RFC 1870 SIZE, RFC 2920 PIPELINING,
RFC 6152 8BITMIME, RFC 2034/3463 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8,
RFC 3030 CHUNKING (BDAT), RFC 3207 STARTTLS, RFC 4954 AUTH (mechanisms from
``protocols.sasl``), RFC 6409 submission (``require_auth``), the trace
field of RFC 5321 §4.4 with RFC 3848 / RFC 6531 §3.7.3 protocol words and
loop detection of RFC 5321 §6.3.

Left out: BINARYMIME (RFC 3030 §3; so bare CR/LF is refused in BDAT too),
DSN (RFC 3461), reverse DNS in the Received field, VRFY/EXPN answers
(RFC 5321 §3.5.3 / §7.3: 252 without looking anything up, no enumeration).

Files (protocols/smtp/): this one (session, command table, transaction),
state.py (limits, SmtpConfig, Envelope, MessageSink, RcptDecision, State),
auth.py (AUTH and STARTTLS handlers), transfer.py (DATA and BDAT handlers),
data.py (DATA framing, content checks, Received), address.py (paths and
parameters).

Shape: ``receive_data`` buffers; ``_process`` takes one command line (or
DATA / BDAT octets) at a time and dispatches through ``COMMANDS`` (verb →
``_cmd_<verb>`` handler, allowed states).  Message data is never held whole: from DATA's
354 or the first BDAT it goes, read by read, to the ``MessageSink`` that
``backend.open_message(envelope)`` returned (smtp/state.py), while
``ContentCheck`` decides the refusals incrementally.  While a backend call is outstanding (delivery,
authentication) input is buffered but not processed, so pipelined commands
are answered strictly in order (RFC 2920 §3).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from protocols import sasl
from protocols.backend.contracts import SmtpBackend
from protocols.base import LineReader, LineTooLong, ProtocolError, SessionContext
from protocols.smtp.address import (Address, AddressError, parse_forward_path,
                                    parse_parameters, parse_reverse_path)
from protocols.smtp.auth import AuthCommands
from protocols.smtp.faulting import FaultHooks
from protocols.smtp.transfer import TransferCommands
from protocols.smtp.data import DataReader
from protocols.smtp.state import (ANY_STATE, MAX_AUTH_LINE, MAX_COMMAND_LINE,
                                  MAX_HELD_INPUT, DIGITS_RE, TXN_STATES, Chunk, Envelope,
                                  MessageSink, RcptDecision, Reply, SmtpConfig, State,
                                  Transaction, fmt_reply)

__all__ = ["SmtpSession", "SmtpConfig", "Envelope", "MessageSink", "RcptDecision", "State",
           "Address"]

log = logging.getLogger("mailsrv.smtp")


class SmtpSession(AuthCommands, TransferCommands, FaultHooks):
    """One SMTP server connection; see protocols/base.py for the protocol."""

    def __init__(self, ctx: SessionContext, config: SmtpConfig, backend: SmtpBackend):
        self.ctx = ctx
        self.config = config
        self.backend = backend
        self._closed = False
        self.want_tls = False
        self.state = State.GREETING
        self._out = bytearray()
        self._reader = LineReader(MAX_COMMAND_LINE)
        self._helo = ""
        self._spf_helo_known = None  # (HELO name, its SpfResult): RFC 7208 §2.3, once per session and name
        self._esmtp = False
        self._auth_user: Optional[str] = None
        self._txn: Optional[Transaction] = None
        self._data: Optional[DataReader] = None
        self._chunk: Optional[Chunk] = None
        self._sasl = None            # the AUTH exchange in progress (protocols/auth_exchange.py)
        self._bad = 0
        self._pending = False        # a backend call is outstanding
        self._delivering = False
        self._processing = False
        self._eof = False
        self._shutdown_requested = False
        self._faults = getattr(backend, "faults", None)    # injected faults (issue 11), if any
        self._drop_after_data = False    # disconnect("DATA"): close once the message is read
        # RFC 5321 §4.2 / RFC 2034 §4: no enhanced code in the greeting.
        self._send(fmt_reply(220, "", "%s ESMTP mailsrv" % config.hostname))

    # -- session protocol ------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        """However the session ends, a message being received is dropped."""
        self._closed = value
        if value and self._txn is not None and self._txn.sink is not None:
            self._txn.sink.abort()
            self._txn.sink = None

    @property
    def busy(self) -> bool:
        return (self.state in (State.DATA, State.BDAT) or self._delivering
                or self._chunk is not None)

    @property
    def progress(self) -> int:
        """Complete lines received (protocols/base.py): the loop's idle clock."""
        return self._reader.lines

    @property
    def idle_timeout(self) -> float:
        if self.state in (State.DATA, State.BDAT) or self._chunk is not None:
            return self.config.data_timeout
        return self.config.command_timeout

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            self._eof = True
        elif self.want_tls:
            return  # RFC 3207 §4.2: nothing before the handshake counts
        else:
            self._reader.feed(data)
            if self._pending and len(self._reader) > self._max_held():
                # Input held while the backend works is bounded: a pipelined
                # BDAT message (RFC 3030 §2, RFC 2920 §3) at most.
                self._reply(421, "4.7.0", "%s Error: too much pipelined input" % self.config.hostname)
                self.closed = True
                return
        self._process()

    def _max_held(self) -> int:
        return MAX_HELD_INPUT

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self, info: dict) -> None:
        """RFC 3207 §4.2: discard all knowledge from the client (EHLO, AUTH,
        transaction); the client must send EHLO again."""
        self.ctx.tls_active = True
        self.ctx.tls_info = info
        self.want_tls = False
        self._reader.clear()
        self._helo, self._esmtp, self._auth_user = "", False, None
        self._spf_helo_known = None
        self._reset_transaction(State.GREETING)
        self._process()

    def timeout(self) -> None:
        """RFC 5321 §4.5.3.2.7: the server may close after its timeout (421)."""
        if self.closed:
            return
        self._reply(421, "4.4.2", "%s Error: timeout exceeded" % self.config.hostname)
        self.closed = True

    def shutdown(self) -> None:
        """Idle: 421 now (RFC 5321 §3.8).  Mid-transaction: after it ends."""
        if self.closed:
            return
        if self.busy:
            self._shutdown_requested = True
            return
        self._reply(421, "4.3.2", "Service shutting down")
        self.closed = True

    # -- output ------------------------------------------------------------

    def _send(self, raw: bytes) -> None:
        if not self.closed:
            self._out += raw

    def _reply(self, code: int, enh: str, text: str) -> None:
        self._send(fmt_reply(code, enh, text))

    def _reply_t(self, reply: Reply) -> None:
        self._reply(*reply)

    def _fail(self, code: int, enh: str, text: str) -> None:
        """A syntax or sequence error; too many of them end the session
        (RFC 5321 §4.2.3 421: "closing transmission channel")."""
        self._bad += 1
        if self._bad > self.config.max_bad_commands:
            self._reply(421, "4.7.0", "%s Error: too many errors" % self.config.hostname)
            self.closed = True
            return
        self._reply(code, enh, text)

    # -- input loop --------------------------------------------------------

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self.closed and not self._pending and not self.want_tls:
                if self._chunk is not None:
                    progressed = self._pump_chunk()
                elif self.state is State.DATA:
                    progressed = self._pump_data()
                else:
                    progressed = self._next_line()
                if self._shutdown_requested and not self.busy and not self.closed:
                    self._reply(421, "4.3.2", "Service shutting down")
                    self.closed = True
                if not progressed:
                    break
            if self._eof and not self._pending and not self.closed:
                if self.busy:
                    log.info("connection %s lost during message data", self.ctx.conn_id)
                self.closed = True
        finally:
            self._processing = False

    def _await(self, start: Callable[[Callable], None], finish: Callable) -> None:
        """Call the backend; input is held until it calls ``done``."""
        self._pending = True
        state = {"called": False}

        def done(result) -> None:
            if state["called"]:
                return
            state["called"] = True
            self._pending = False
            finish(result)
            if not self._processing:
                self._process()
                self.ctx.wake()

        start(done)

    def _next_line(self) -> bool:
        auth = self.state is State.AUTH
        self._reader.max_line = MAX_AUTH_LINE if auth else MAX_COMMAND_LINE
        try:
            line = self._reader.read_line()
        except LineTooLong:
            if auth:
                # RFC 4954 §4: over-long line fails AUTH with 500 5.5.6.
                self._end_auth()
                self._fail(500, "5.5.6", "Authentication exchange line too long")
            else:
                # RFC 5321 §4.5.3.1.9: "500 Line too long."
                self._fail(500, "5.5.2", "Line too long")
            return True
        if line is None:
            return False
        if auth:
            self._auth_response(line)
        else:
            self._command(line)
        return True

    def _command(self, line: bytes) -> None:
        """Dispatch one command line through ``COMMANDS`` (RFC 5321 §4.1)."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(500, "5.5.2", "Syntax error: invalid UTF-8")
            return
        verb, _, arg = text.partition(" ")
        entry = COMMANDS.get(verb.upper())
        if entry is None:
            # RFC 5321 §4.2.4: 500 for an unrecognized command.
            self._fail(500, "5.5.2", "Command unrecognized")
            return
        handler, states = entry
        if self.state not in states:
            self._fail(503, "5.5.1", _sequence_error(verb.upper(), self.state))
            return
        if self._faults is not None and self._faults.active and self._fault(verb.upper(), arg.strip(" "), handler):
            return      # an injected fault took the command (protocols/smtp/faulting.py)
        self._run(handler, arg.strip(" "))

    def _run(self, handler: "Handler", arg: str) -> None:
        """One command's handler, its errors turned into replies."""
        try:
            handler(self, arg)
        except AddressError as e:
            if e.code in (500, 501, 502, 503, 504, 555):
                self._fail(*e.reply_tuple)
            else:
                self._reply_t(e.reply_tuple)
        except ProtocolError as e:      # the command boundary (protocols/base.py)
            self._send(e.reply)
            if e.close:
                self.closed = True

    # -- HELO / EHLO (RFC 5321 §4.1.1.1) ---------------------------------

    def _hello(self, arg: str, esmtp: bool) -> bool:
        if not arg or any(ord(c) < 0x21 or ord(c) == 0x7f for c in arg.split(" ")[0]):
            self._fail(501, "5.5.4", "Syntax: %s hostname" % ("EHLO" if esmtp else "HELO"))
            return False
        # DEVIATION(RFC 5321 §4.1.1.1): the name is not checked against the
        # peer address nor the Domain grammar; it only goes into Received.
        self._helo = arg.split(" ")[0]
        self._esmtp = esmtp
        # RFC 5321 §4.1.4: EHLO/HELO mid-transaction acts as RSET.
        self._reset_transaction(State.READY)
        return True

    def _cmd_ehlo(self, arg: str) -> None:
        """EHLO (RFC 5321 §4.1.1.1); the keyword list per extension RFC."""
        if not self._hello(arg, True):
            return
        echo = "".join(c for c in self._helo[:255] if "\x21" <= c <= "\x7e")
        lines = ["%s greets %s" % (self.config.hostname, echo),
                 "PIPELINING",                                  # RFC 2920 §3
                 "SIZE %d" % self.config.max_message_size,      # RFC 1870 §4
                 "8BITMIME",                                    # RFC 6152 §3
                 "ENHANCEDSTATUSCODES",                         # RFC 2034 §3
                 "SMTPUTF8",                                    # RFC 6531 §3.2
                 "CHUNKING"]                                    # RFC 3030 §2
        if self.ctx.tls_available and not self.ctx.tls_active:
            lines.append("STARTTLS")                            # RFC 3207 §4, §4.2
        if self.config.auth_enabled:
            mechs = sasl.offered_mechanisms(self._plaintext_ok())
            lines.append("AUTH " + " ".join(mechs))             # RFC 4954 §3
        lines.append("HELP")
        # RFC 2034 §4: EHLO replies carry no enhanced codes.
        out = "".join("250-%s\r\n" % s for s in lines[:-1]) + "250 %s\r\n" % lines[-1]
        self._send(out.encode("utf-8", "replace"))

    def _cmd_helo(self, arg: str) -> None:
        """HELO (RFC 5321 §4.1.1.1): plain SMTP, no extensions."""
        if self._hello(arg, False):
            self._send(fmt_reply(250, "", self.config.hostname))

    # -- mail transaction (RFC 5321 §3.3) --------------------------------

    def _cmd_mail(self, arg: str) -> None:
        """MAIL FROM:<reverse-path> [params] (RFC 5321 §4.1.1.2)."""
        if self.config.require_auth and self._auth_user is None:
            # RFC 4954 §6, RFC 6409 §4.3.
            self._reply(530, "5.7.0", "Authentication required")
            return
        if arg[:5].upper() != "FROM:":
            self._fail(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        addr, rest = parse_reverse_path(arg[5:], smtputf8=True)
        params = parse_parameters(rest)
        txn = Transaction(mail_from="")
        if not self._mail_params(params, txn):
            return
        if not txn.smtputf8 and not arg.isascii():
            # RFC 6531 §3.4/§3.5: UTF-8 addresses only with the SMTPUTF8
            # parameter (parsed again only then: the strict parse refuses).
            addr, _ = parse_reverse_path(arg[5:], smtputf8=False)
        txn.mail_from = addr.text if addr is not None else ""
        refusal = self.backend.check_sender(self.ctx, self._auth_user, txn.mail_from)
        if refusal is not None:
            self._reply_t(refusal)
            return
        self._txn = txn
        self.state = State.MAIL
        self._reply(250, "2.1.0", "Ok")

    def _mail_params(self, params: Dict[str, Optional[str]], txn: Transaction) -> bool:
        """Mail-parameters (RFC 5321 §4.1.1.11: unknown → 555)."""
        for key, value in params.items():
            if not self._esmtp:
                # RFC 5321 §4.1.1.11: no parameters without EHLO.
                self._fail(555, "5.5.4", "Parameters not allowed after HELO")
                return False
            if key == "SIZE":
                # RFC 1870 §6: SIZE=<octets> (ASCII digits only: str.isdigit
                # would accept "²"); over our limit → 552 5.3.4 (§6.1 item 2).
                if value is None or not DIGITS_RE.match(value):
                    self._fail(501, "5.5.4", "Invalid SIZE parameter")
                    return False
                if int(value) > self.config.max_message_size:
                    self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
                    return False
            elif key == "BODY":
                # RFC 6152 §3: BODY=7BIT / 8BITMIME; BINARYMIME is not offered.
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME"):
                    self._fail(501, "5.5.4", "Invalid BODY parameter")
                    return False
                txn.body = body
            elif key == "SMTPUTF8":
                if value is not None:  # RFC 6531 §3.4: takes no value
                    self._fail(501, "5.5.4", "SMTPUTF8 takes no value")
                    return False
                txn.smtputf8 = True
            elif key == "AUTH" and self.config.auth_enabled:
                # RFC 4954 §5: accepted; DEVIATION(RFC 4954 §5): the value is
                # not kept, we never relay it onwards as trusted.
                pass
            else:
                self._fail(555, "5.5.4", "Unsupported parameter %s" % key)
                return False
        return True

    def _cmd_rcpt(self, arg: str) -> None:
        """RCPT TO:<forward-path> (RFC 5321 §4.1.1.3)."""
        txn = self._txn
        if arg[:3].upper() != "TO:":
            self._fail(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        if len(txn.rcpts) >= self.config.max_recipients:
            # RFC 5321 §4.5.3.1.9: "452 Too many recipients" (452, not 552:
            # §4.5.3.1.10); RFC 3463 X.5.3 too many recipients.
            self._reply(452, "4.5.3", "Too many recipients")
            return
        addr, rest = parse_forward_path(arg[3:], smtputf8=txn.smtputf8,
                                        postmaster_domain=self.config.hostname)
        if parse_parameters(rest):
            self._fail(555, "5.5.4", "RCPT parameters not supported")
            return
        decision = self.backend.check_recipient(self.ctx, self._auth_user, addr)
        if not decision.ok:
            self._reply_t(decision.reply or (550, "5.1.1", "Recipient rejected"))
            return
        txn.rcpts.append(addr.text)
        txn.targets.append(decision.target)
        self.state = State.RCPT
        self._reply(250, "2.1.5", "Ok")

    def _envelope(self, txn: Transaction, qid: str) -> Envelope:
        return Envelope(mail_from=txn.mail_from, rcpt_to=list(txn.rcpts),
                        targets=list(txn.targets), body=txn.body, smtputf8=txn.smtputf8,
                        helo=self._helo, peer_ip=self.ctx.peer_ip, auth_user=self._auth_user,
                        tls=self.ctx.tls_active, listener=self.ctx.listener, queue_id=qid)

    def _log_result(self, qid: str, txn: Transaction, size: int, reply: Reply) -> None:
        """One line per accepted or refused message; never the body.  Nothing is
        built when INFO is off (issue 14: no logging work for disabled levels)."""
        if not log.isEnabledFor(logging.INFO):
            return
        log.info("message %s from=<%s> rcpts=%s size=%d result=%d %s %s", qid,
                 txn.mail_from, ",".join("<%s>" % r for r in txn.rcpts), size, *reply)

    def _reset_transaction(self, state: State) -> None:
        """Forget the mail transaction (RFC 5321 §4.1.1.5)."""
        if self._txn is not None and self._txn.sink is not None:
            self._txn.sink.abort()
        self._txn = None
        self._data = None
        self._drop_after_data = False
        self.state = state

    # -- other commands ------------------------------------------------------

    def _cmd_rset(self, arg: str) -> None:
        """RSET (RFC 5321 §4.1.1.5): no arguments."""
        if arg:
            self._fail(501, "5.5.4", "Syntax: RSET")
            return
        self._reset_transaction(State.GREETING if self.state is State.GREETING else State.READY)
        self._reply(250, "2.0.0", "Ok")

    def _cmd_noop(self, arg: str) -> None:
        """NOOP (RFC 5321 §4.1.1.9): any argument is ignored."""
        self._reply(250, "2.0.0", "Ok")

    def _cmd_vrfy(self, arg: str) -> None:
        """VRFY (RFC 5321 §3.5.3): 252, never confirming a user (no enumeration)."""
        if not arg:
            self._fail(501, "5.5.4", "Syntax: VRFY <address>")
            return
        self._reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def _cmd_expn(self, arg: str) -> None:
        """EXPN (RFC 5321 §3.5.3, §7.3): not implemented."""
        self._fail(502, "5.5.1", "EXPN not supported")

    def _cmd_help(self, arg: str) -> None:
        """HELP (RFC 5321 §4.1.1.8)."""
        self._reply(214, "2.0.0", "Commands: " + " ".join(sorted(COMMANDS)))

    def _cmd_quit(self, arg: str) -> None:
        """QUIT (RFC 5321 §4.1.1.10): 221 then close."""
        if arg:
            self._fail(501, "5.5.4", "Syntax: QUIT")
            return
        self._reply(221, "2.0.0", "Bye")
        self.closed = True


# The command table: verb → (handler, states in which it is allowed), one
# ``_cmd_<verb>`` method each, as in protocols/pop3/server.py.  The states come
# from RFC 5321 §4.1.4 (the order of commands: EHLO/HELO before MAIL, MAIL
# outside a transaction, RCPT after MAIL, DATA after RCPT; EHLO, RSET, NOOP,
# VRFY, EXPN, HELP at any time, even before EHLO) and the extensions' own
# rules; a known verb in another state is 503 (_sequence_error), an unknown
# one 500 (§4.2.4).
Handler = Callable[["SmtpSession", str], None]
READY = frozenset({State.READY})
IN_TXN = frozenset({State.MAIL, State.RCPT})
COMMANDS: Dict[str, Tuple[Handler, FrozenSet[State]]] = {
    "EHLO": (SmtpSession._cmd_ehlo, ANY_STATE),      # RFC 5321 §4.1.1.1
    "HELO": (SmtpSession._cmd_helo, ANY_STATE),      # RFC 5321 §4.1.1.1
    "MAIL": (SmtpSession._cmd_mail, READY),          # RFC 5321 §4.1.1.2
    "RCPT": (SmtpSession._cmd_rcpt, IN_TXN),         # RFC 5321 §4.1.1.3
    "DATA": (SmtpSession._cmd_data, IN_TXN),         # RFC 5321 §4.1.1.4
    "BDAT": (SmtpSession._cmd_bdat, ANY_STATE),      # RFC 3030 §2 (its own state checks)
    "RSET": (SmtpSession._cmd_rset, ANY_STATE),      # RFC 5321 §4.1.1.5
    "NOOP": (SmtpSession._cmd_noop, ANY_STATE),      # RFC 5321 §4.1.1.9
    "QUIT": (SmtpSession._cmd_quit, ANY_STATE),      # RFC 5321 §4.1.1.10
    "VRFY": (SmtpSession._cmd_vrfy, ANY_STATE),      # RFC 5321 §4.1.1.6
    "EXPN": (SmtpSession._cmd_expn, ANY_STATE),      # RFC 5321 §4.1.1.7
    "HELP": (SmtpSession._cmd_help, ANY_STATE),      # RFC 5321 §4.1.1.8
    "AUTH": (SmtpSession._cmd_auth, READY),          # RFC 4954 §4
    "STARTTLS": (SmtpSession._cmd_starttls, READY),  # RFC 3207 §4
}


def _sequence_error(verb: str, state: State) -> str:
    """The 503 text for a command out of sequence (RFC 5321 §4.1.4, §4.3.1)."""
    if state is State.GREETING:
        return "Send EHLO/HELO first"
    if verb == "DATA" and state is State.BDAT:
        return "DATA and BDAT cannot be mixed (RFC 3030 §2)"
    if verb in ("AUTH", "STARTTLS") and state in TXN_STATES:
        return "%s not allowed during a mail transaction (RFC 4954 §4)" % verb
    if verb == "MAIL":
        return "Nested MAIL command"
    if state is State.READY:
        return "Need MAIL command"
    return "Bad sequence of commands"
