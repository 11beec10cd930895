"""Sans-I/O SMTP client session: one mail transaction to one server (RFC 5321).

The session has the shape every session here has (see ``protocols/base.py``)
but speaks first once the server's greeting has arrived:

    greeting → EHLO (HELO when EHLO gets 5xx, RFC 5321 §3.2)
             → STARTTLS (RFC 3207 §4), EHLO again (RFC 3207 §4.2)
             → AUTH PLAIN or LOGIN (RFC 4954 §4, RFC 4616 §2) when configured
             → MAIL, RCPT..., DATA (all in one group with PIPELINING, RFC 2920 §3.1)
             → message, dot-stuffed (RFC 5321 §4.5.2), "." → QUIT (RFC 5321 §4.1.1.10)

Extensions used: SIZE (RFC 1870 §6), 8BITMIME (RFC 6152 §2), SMTPUTF8
(RFC 6531 §3.4), PIPELINING (RFC 2920), STARTTLS (RFC 3207), AUTH (RFC 4954),
ENHANCEDSTATUSCODES (RFC 2034 §4: the x.y.z code is read from reply text).

Result (``done(ClientResult)``, called exactly once): a reply per recipient,
the reply to the final "." and an ``error_kind``: ``None`` when the
transaction ran (each recipient's reply decides), ``"temporary"`` when the
session failed for this server (connection lost, timeout, 4xx/5xx greeting,
421, TLS required but missing: the caller tries the next MX, RFC 5321 §5.1),
``"permanent"`` when the message can never go this way (SIZE too small,
SMTPUTF8 missing).  Recipients without a final reply get a synthetic one of
the matching class.

Left out: CHUNKING/BDAT (RFC 3030), the DSN parameters (RFC 3461), 8-bit to
7-bit downgrade, several transactions per connection, SCRAM client.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from protocols.base import LineReader, LineTooLong, SessionContext
from protocols.smtp.data import DotStuffer

Reply = Tuple[int, str, str]

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; accept 8 times that
# (liberal in what we accept, RFC 5321 §4.5.3.1.9 says limits are minimums).
MAX_REPLY_LINE = 4096
# Not an RFC number: bound the memory one multi-line reply may take.
MAX_REPLY_LINES = 200
# Octets handed to the loop per data_to_send() call (bounded memory in the loop).
CHUNK = 65536


class Stage(enum.Enum):
    """Where the client is, named after the RFC 5321 §4.5.3.2 timeout stages."""
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS_HANDSHAKE = "tls-handshake"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA_INIT = "data-init"
    DATA_TERM = "data-term"
    QUIT = "quit"
    DONE = "done"


# RFC 5321 §4.5.3.2: "an SMTP client MUST provide a timeout mechanism" with
# these minimums.  EHLO, STARTTLS, AUTH and QUIT have none in the RFC: they get
# the 5 minutes of §4.5.3.2.7.  Data block (§4.5.3.2.5, 3 min) applies while the
# body is being written; the loop measures silence, so the larger §4.5.3.2.6
# 10 minutes covers both the upload and the wait after ".".
DEFAULT_TIMEOUTS = {
    Stage.GREETING: 300.0,      # §4.5.3.2.1 Initial 220 Message: 5 Minutes
    Stage.EHLO: 300.0,          # §4.5.3.2.7
    Stage.STARTTLS: 300.0,
    Stage.TLS_HANDSHAKE: 300.0,
    Stage.AUTH: 300.0,
    Stage.MAIL: 300.0,          # §4.5.3.2.2 MAIL Command: 5 Minutes
    Stage.RCPT: 300.0,          # §4.5.3.2.3 RCPT Command: 5 Minutes
    Stage.DATA_INIT: 120.0,     # §4.5.3.2.4 DATA Initiation: 2 Minutes
    Stage.DATA_TERM: 600.0,     # §4.5.3.2.6 DATA Termination: 10 Minutes
    Stage.QUIT: 300.0,
    Stage.DONE: 300.0,
}


@dataclass
class ClientConfig:
    timeouts: Dict[Stage, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    # RFC 4954 §4 / §9: credentials over an unencrypted link can be read by
    # anyone on the path; only send them in clear when told to (a loopback
    # smarthost, tests).
    allow_plaintext_auth: bool = False


@dataclass
class ClientJob:
    helo_name: str
    mail_from: str                  # "" for <>
    rcpts: List[str]
    data: object                    # CRLF message, not dot-stuffed: bytes, or a source
                                    # (len() and chunks(), store.queue.StoredMessage) read
                                    # piece by piece as the socket drains
    need_smtputf8: bool = False
    body_8bit: bool = False
    auth: Optional[Tuple[str, str]] = None   # (user, password) for a smarthost
    starttls: str = "may"           # "may" | "require" | "never"


@dataclass
class ClientResult:
    per_rcpt: Dict[str, Reply]
    message_result: Optional[Reply] = None   # the reply to the final "."
    tls_used: bool = False
    error_kind: Optional[str] = None         # None | "temporary" | "permanent"
    remote_reply: str = ""                   # last non-2xx reply, for logs and DSNs
    stage: str = ""                          # where the session ended


class ServerReply(NamedTuple):
    code: int
    enhanced: str
    lines: List[str]

    @property
    def text(self) -> str:
        return " ".join(_strip_enhanced(line, self.enhanced) for line in self.lines).strip()

    def as_reply(self) -> Reply:
        return (self.code, self.enhanced, self.text)

    def __str__(self) -> str:
        return ("%d %s %s" % (self.code, self.enhanced, self.text)).replace("  ", " ").strip()


_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


def _strip_enhanced(line: str, enhanced: str) -> str:
    return line[len(enhanced):].strip() if enhanced and line.startswith(enhanced) else line


def parse_enhanced(code: int, text: str) -> str:
    """The RFC 3463 x.y.z code at the start of the text (RFC 2034 §4), if its class matches."""
    m = _ENHANCED_RE.match(text)
    return m.group(0) if m and int(m.group(1)) == code // 100 else ""


def _chunks(data) -> "Iterator[bytes]":
    return iter([data]) if isinstance(data, (bytes, bytearray)) else data.chunks()


def plain_response(user: str, password: str) -> str:
    """RFC 4616 §2: base64 of authzid NUL authcid NUL passwd (empty authzid)."""
    return base64.b64encode(b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")).decode("ascii")


def _outcome(r: ServerReply) -> Reply:
    """A reply as a final outcome: 2xx, 4xx or 5xx.  A 3xx where none belongs
    is a protocol error (RFC 5321 §4.3.2 lists the replies per command):
    treated as temporary, RFC 3463 X.5.0 "other protocol status"."""
    if r.code // 100 in (2, 4, 5):
        return r.as_reply()
    return (451, "4.5.0", "unexpected reply: " + str(r))


def a_label_address(address: str) -> str:
    """``local@domain`` with the domain in A-label form (RFC 5890), when it converts.

    RFC 6531 §3.2: an internationalized domain name in A-label form "is not
    considered to be internationalized", so such an address needs no SMTPUTF8.
    """
    local, at, domain = address.rpartition("@")
    if not at or all(ord(c) < 128 for c in domain):
        return address
    try:
        return local + "@" + domain.encode("idna").decode("ascii")
    except UnicodeError:
        return address


def _needs_utf8(job: ClientJob) -> bool:
    """RFC 6531 §3.2: SMTPUTF8 is needed for a UTF-8 local part (or UTF-8 headers)."""
    return job.need_smtputf8 or any(
        ord(c) > 127 for a in [job.mail_from] + job.rcpts for c in a_label_address(a))


class SmtpClientSession:
    """See the module docstring.  Construct, then let the loop feed it."""

    def __init__(self, ctx: SessionContext, config: ClientConfig, job: ClientJob,
                 done: Callable[[ClientResult], None]):
        self.ctx, self.config, self.job, self._done = ctx, config, job, done
        self.closed = False
        self.want_tls = False
        self.stage = Stage.GREETING
        self.ext: Dict[str, str] = {}          # EHLO keyword → parameters (RFC 5321 §4.1.1.1)
        self._reader = LineReader(MAX_REPLY_LINE)
        self._lines: List[str] = []
        self._expect: deque = deque()         # one handler per reply awaited (RFC 2920 §3.1 counting)
        self._expect.append(self._on_greeting)
        self._out = bytearray()
        self._tls_tried = False
        self._mail_reply: Optional[ServerReply] = None
        self._rcpt_replies: Dict[str, ServerReply] = {}
        self._accepted: List[str] = []
        self._final_for_accepted = False       # the DATA / "." reply has decided for them
        self._message_reply: Optional[ServerReply] = None
        self._queue: List[Tuple[bytes, Callable]] = []   # commands not yet written (no PIPELINING)
        self._result: Optional[ClientResult] = None
        self._last_error = ""
        self._body: Optional[Iterator[bytes]] = None   # message pieces still to send
        self._stuffer = DotStuffer()

    # -- session protocol ------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._result is None

    @property
    def progress(self) -> int:
        """Complete lines received (protocols/base.py): the loop's idle clock."""
        return self._reader.lines

    @property
    def idle_timeout(self) -> float:
        return self.config.timeouts.get(self.stage, 300.0)

    def data_to_send(self) -> bytes:
        if self._body is not None and len(self._out) < CHUNK:
            self._read_body()
        out = bytes(self._out[:CHUNK])
        del self._out[:CHUNK]
        return out

    def _read_body(self) -> None:
        """The next piece of the message, dot-stuffed; "." CRLF after the last."""
        try:
            piece = next(self._body, None)
        except OSError as exc:           # the queue file went away or cannot be read
            self._body = None
            return self._fail("temporary", None, "reading the queued message: %s" % exc, quit=False)
        if piece is None:
            self._body = None
            self._out += self._stuffer.end()
        else:
            self._out += self._stuffer.feed(piece)

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            self._fail("temporary", None, "connection closed by the server in stage %s" % self.stage.value,
                       quit=False)
            return
        if self.want_tls:
            return   # RFC 3207 §4.2: nothing may be used from before the handshake
        self._reader.feed(data)
        while not self.closed and not self.want_tls:
            reply = self._read_reply()
            if reply is None:
                return
            self._dispatch(reply)

    def tls_started(self, info: dict) -> None:
        """RFC 3207 §4.2: forget everything learnt before TLS and say EHLO again."""
        self.want_tls = False
        self.ctx.tls_active = True
        self.ctx.tls_info = info
        self.ext = {}
        self._reader.clear()
        self._lines = []
        self._send_ehlo()

    def timeout(self) -> None:
        """RFC 5321 §4.5.3.2: give up on a silent server."""
        self._fail("temporary", None, "timeout waiting for the server in stage %s" % self.stage.value, quit=False)

    def shutdown(self) -> None:
        """The process is stopping: abandon the attempt (the message stays queued)."""
        if not self.closed:
            self._fail("temporary", None, "local shutdown", quit=False)

    # -- reply reading -----------------------------------------------------
    def _read_reply(self) -> Optional[ServerReply]:
        """One complete (possibly multi-line) reply, RFC 5321 §4.2.1."""
        while True:
            try:
                raw = self._reader.read_line()
            except LineTooLong:
                self._fail("temporary", None, "over-long reply line from the server", quit=False)
                return None
            if raw is None:
                return None
            line = raw.decode("utf-8", "replace")
            # RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39
            if len(line) < 3 or line[0] not in "2345" or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                self._fail("temporary", None, "malformed reply from the server: %r" % line[:80], quit=False)
                return None
            if self._lines and line[:3] != self._lines[0][:3]:
                self._fail("temporary", None, "inconsistent multi-line reply codes", quit=False)
                return None
            self._lines.append(line)
            if len(self._lines) > MAX_REPLY_LINES:
                self._fail("temporary", None, "over-long multi-line reply", quit=False)
                return None
            if line[3:4] != "-":
                lines, self._lines = self._lines, []
                code = int(lines[0][:3])
                texts = [ln[4:] for ln in lines]
                return ServerReply(code, parse_enhanced(code, texts[-1] or texts[0]), texts)

    def _dispatch(self, reply: ServerReply) -> None:
        if reply.code // 100 != 2 and reply.code != 354:
            self._last_error = str(reply)
        if reply.code == 421 and self.stage != Stage.QUIT:
            # RFC 5321 §3.8: 421 means the server is closing the channel.
            self._fail("temporary", reply, "server closing: " + str(reply), quit=False)
            return
        if not self._expect:
            self._fail("temporary", reply, "unexpected reply: " + str(reply))
            return
        self._expect.popleft()(reply)

    # -- output ------------------------------------------------------------
    def _send(self, line: bytes, handler: Callable, stage: Optional[Stage] = None) -> None:
        self._out += line + b"\r\n"
        self._expect.append(handler)
        if stage is not None:
            self.stage = stage
        self.ctx.wake()

    # -- greeting, EHLO/HELO ------------------------------------------------
    def _on_greeting(self, r: ServerReply) -> None:
        """RFC 5321 §3.1: 220 to go on.  A 4xx or 554 greeting: try another MX
        (RFC 5321 §5.1; Postfix's smtp_skip_5xx_greeting)."""
        if r.code // 100 == 2:
            self._send_ehlo()
        else:
            self._fail("temporary", r, "greeting refused: " + str(r))

    def _send_ehlo(self) -> None:
        self._send(b"EHLO " + self.job.helo_name.encode("ascii", "replace"),
                   self._on_ehlo, Stage.EHLO)

    def _on_ehlo(self, r: ServerReply) -> None:
        """RFC 5321 §4.1.1.1: keywords on the lines after the first."""
        if r.code // 100 == 2:
            self.ext = {}
            for line in r.lines[1:]:
                word, _, params = line.strip().partition(" ")
                if word:
                    self.ext[word.upper()] = params.strip()
            self._after_hello()
        elif r.code // 100 == 5 and not self.ctx.tls_active:
            # RFC 5321 §3.2: fall back to HELO when EHLO is not recognized.
            self._send(b"HELO " + self.job.helo_name.encode("ascii", "replace"), self._on_helo)
        else:
            self._fail("temporary", r, "EHLO refused: " + str(r))

    def _on_helo(self, r: ServerReply) -> None:
        if r.code // 100 == 2:
            self.ext = {}
            self._after_hello()
        else:
            self._fail("temporary", r, "HELO refused: " + str(r))

    def _after_hello(self) -> None:
        job = self.job
        if not self.ctx.tls_active and not self._tls_tried and job.starttls != "never" and "STARTTLS" in self.ext:
            self._tls_tried = True
            self._send(b"STARTTLS", self._on_starttls, Stage.STARTTLS)
        elif job.starttls == "require" and not self.ctx.tls_active:
            self._fail("temporary", None, "TLS is required but the server does not offer STARTTLS")
        elif job.auth:
            self._start_auth()
        else:
            self._start_transaction()

    def _on_starttls(self, r: ServerReply) -> None:
        """RFC 3207 §4: 220 → handshake; otherwise go on in clear unless TLS is required."""
        if r.code == 220:
            self.want_tls = True
            self.stage = Stage.TLS_HANDSHAKE
            self.ctx.wake()
        elif self.job.starttls == "require":
            self._fail("temporary", r, "STARTTLS refused: " + str(r))
        else:
            self._after_hello()

    # -- AUTH (RFC 4954 §4) ---------------------------------------------------
    def _start_auth(self) -> None:
        user, password = self.job.auth
        mechs = self.ext.get("AUTH", "").upper().split()
        if not self.ctx.tls_active and not self.config.allow_plaintext_auth:
            self._fail("temporary", None, "refusing to send credentials without TLS")
        elif "PLAIN" in mechs:
            self._send(b"AUTH PLAIN " + plain_response(user, password).encode("ascii"),
                       self._on_auth_done, Stage.AUTH)
        elif "LOGIN" in mechs:
            self._send(b"AUTH LOGIN", self._on_login_user, Stage.AUTH)
        else:
            self._fail("temporary", None, "the server offers no usable AUTH mechanism (PLAIN, LOGIN)")

    def _on_login_user(self, r: ServerReply) -> None:
        if r.code != 334:
            return self._on_auth_done(r)
        self._send(base64.b64encode(self.job.auth[0].encode("utf-8")), self._on_login_password)

    def _on_login_password(self, r: ServerReply) -> None:
        if r.code != 334:
            return self._on_auth_done(r)
        self._send(base64.b64encode(self.job.auth[1].encode("utf-8")), self._on_auth_done)

    def _on_auth_done(self, r: ServerReply) -> None:
        """RFC 4954 §6: 235 succeeded.  Failure (535...) is a configuration
        problem: the message waits (temporary) rather than bouncing."""
        if r.code == 235:
            self._start_transaction()
        else:
            self._fail("temporary", r, "authentication failed: " + str(r))

    # -- the transaction ---------------------------------------------------------
    def _mail_params(self, utf8: bool) -> bytes:
        params = []
        if "SIZE" in self.ext:
            params.append(b"SIZE=%d" % len(self.job.data))            # RFC 1870 §6
        if self.job.body_8bit and "8BITMIME" in self.ext:
            params.append(b"BODY=8BITMIME")                           # RFC 6152 §2
        if utf8:
            params.append(b"SMTPUTF8")                                # RFC 6531 §3.4
        return b"".join(b" " + p for p in params)

    def _size_limit(self) -> int:
        try:
            return int(self.ext.get("SIZE", "0").split()[0])
        except (ValueError, IndexError):
            return 0

    def _start_transaction(self) -> None:
        job = self.job
        utf8 = _needs_utf8(job)
        if utf8 and "SMTPUTF8" not in self.ext:
            # RFC 6531 §3.2: the client "MUST NOT transmit an internationalized
            # email address" to a server without SMTPUTF8; RFC 6531 §3.5 / RFC 3463: x.6.7.
            return self._fail("permanent", ServerReply(550, "5.6.7", [
                "SMTPUTF8 is required, but was not offered by the remote server"]))
        limit = self._size_limit()
        if limit and len(job.data) > limit:
            # RFC 1870 §6.2 (2) and §4: declare undeliverable, do not send.
            return self._fail("permanent", ServerReply(552, "5.3.4", [
                "message size %d exceeds the remote server's fixed limit of %d" % (len(job.data), limit)]))
        # DEVIATION(RFC 6152 §3): 8-bit content to a server without 8BITMIME is
        # sent unchanged (no 7-bit downgrade), as Postfix does by default.
        wire = (lambda a: a.encode("utf-8")) if utf8 else (lambda a: a_label_address(a).encode("ascii"))
        cmds = [(b"MAIL FROM:<" + wire(job.mail_from) + b">" + self._mail_params(utf8),
                 self._on_mail, Stage.MAIL)]
        for i, rcpt in enumerate(job.rcpts):
            cmds.append((b"RCPT TO:<" + wire(rcpt) + b">",
                         (lambda r, i=i: self._on_rcpt(i, r)), Stage.RCPT))
        cmds.append((b"DATA", self._on_data, Stage.DATA_INIT))
        if "PIPELINING" in self.ext:
            # RFC 2920 §3.1: MAIL and RCPT anywhere in a group, DATA last.
            for line, handler, stage in cmds:
                self._send(line, handler, stage)
            self.stage = Stage.MAIL
        else:
            self._queue = cmds[1:]
            self._send(*cmds[0])

    def _next_command(self) -> None:
        """Without PIPELINING: one command, then its reply (RFC 5321 §4.3)."""
        if self._queue:
            line, handler, stage = self._queue.pop(0)
            if line == b"DATA" and not self._accepted:
                self._queue = []
                return self._finish()   # no recipient accepted: no DATA
            self._send(line, handler, stage)

    def _on_mail(self, r: ServerReply) -> None:
        """RFC 5321 §4.1.1.2; RFC 1870 §6.2 on 452/552."""
        if r.code // 100 != 2:
            self._mail_reply = r
            if self._queue:      # not pipelined: stop here
                self._queue = []
                return self._finish()
            return
        self.stage = Stage.RCPT
        self._next_command()

    def _on_rcpt(self, i: int, r: ServerReply) -> None:
        """RFC 5321 §4.1.1.3: each recipient has its own answer."""
        if self._mail_reply is None:
            self._rcpt_replies[self.job.rcpts[i]] = r
            if r.code // 100 == 2:
                self._accepted.append(self.job.rcpts[i])
        self._next_command()

    def _on_data(self, r: ServerReply) -> None:
        """RFC 5321 §4.1.1.4: 354, then the content and "."."""
        if r.code // 100 == 2:   # RFC 5321 §4.3.2: DATA answers 354 or an error, never 2xx
            r = ServerReply(451, "4.5.0", ["unexpected reply to DATA: %s" % (str(r),)])
        if r.code != 354:
            if self._mail_reply is None:
                self._accepted_reply(r)
            return self._finish()
        if self._mail_reply is not None or not self._accepted:
            # RFC 2920 §3.1: DATA accepted with nothing to send: "a single dot".
            self._out += b".\r\n"
            self._expect.append(lambda _r: self._finish())
            return
        self._body = _chunks(self.job.data)     # sent as the socket drains (data_to_send)
        self._expect.append(self._on_data_end)
        self.stage = Stage.DATA_TERM
        self.ctx.wake()

    def _on_data_end(self, r: ServerReply) -> None:
        """RFC 5321 §4.2.5: the reply to "." decides for every accepted recipient."""
        self._message_reply = r
        self._accepted_reply(r)
        self._finish()

    def _accepted_reply(self, r: ServerReply) -> None:
        for rcpt in self._accepted:
            self._rcpt_replies[rcpt] = r
        self._final_for_accepted = True

    # -- ending ------------------------------------------------------------------
    def _synthetic(self, kind: str, r: Optional[ServerReply], text: str) -> Reply:
        if kind == "permanent" and r is not None:
            return r.as_reply()
        if r is not None and r.code // 100 == 4:
            return (r.code, r.enhanced or "4.0.0", text)
        return (451, r.enhanced.replace("5.", "4.", 1) if r is not None and r.enhanced else "4.4.2", text)

    def _per_rcpt(self, fallback: Reply) -> Dict[str, Reply]:
        out: Dict[str, Reply] = {}
        for rcpt in self.job.rcpts:
            if self._mail_reply is not None:
                out[rcpt] = _outcome(self._mail_reply)
            elif rcpt in self._rcpt_replies and (rcpt not in self._accepted or self._final_for_accepted):
                out[rcpt] = _outcome(self._rcpt_replies[rcpt])
            else:
                out[rcpt] = fallback
        return out

    def _report(self, kind: Optional[str], fallback: Reply) -> None:
        if self._result is not None:
            return
        self._result = ClientResult(
            per_rcpt=self._per_rcpt(fallback),
            message_result=_outcome(self._message_reply) if self._message_reply else None,
            tls_used=self.ctx.tls_active, error_kind=kind, remote_reply=self._last_error,
            stage=self.stage.value)
        self._done(self._result)

    def _finish(self) -> None:
        """The transaction is over: report, then QUIT (RFC 5321 §4.1.1.10)."""
        self._report(None, (451, "4.4.2", "no reply"))
        self._quit()

    def _quit(self) -> None:
        self._expect.clear()
        self._send(b"QUIT", self._on_quit, Stage.QUIT)

    def _on_quit(self, r: ServerReply) -> None:
        self.stage = Stage.DONE
        self.closed = True
        self.ctx.wake()

    def _fail(self, kind: str, r: Optional[ServerReply], text: str = "", quit: bool = True) -> None:
        """End the attempt.  While the server still talks we say QUIT (RFC 5321
        §3.1: a server greeting with 554 waits for it); after a broken
        connection, a timeout or a 421 we just close."""
        text = text or str(r)
        self._last_error = text
        self._body = None
        self._report(kind, self._synthetic(kind, r, text))
        if quit and self.stage != Stage.QUIT:
            self._quit()
        else:
            self.stage = Stage.DONE
            self.closed = True
            self.ctx.wake()
