"""HTTP/1.1 server session, sans-I/O (see ``protocols/base.py`` for the protocol).

Implements RFC 9112 (message syntax, persistent connections §9.3, pipelining §9.3.2:
requests are answered one at a time in the order received), RFC 9110 (methods GET,
HEAD, POST, DELETE; status codes), RFC 7617 (Basic authentication, checked by the same
auth service as IMAP, with its failure delay and lockout) and WHATWG HTML 9.2
(server-sent events: ``text/event-stream``).  The routes are protocols/http/api.py.

The session is in one of three situations: reading requests; waiting for the backend
(``_waiting``: further input stays buffered, as in POP3); streaming events (the last
response on the connection: input is then ignored, events are pushed as the catalog
reports them, and a comment line is sent as a heartbeat whenever the stream has been
quiet for ``HEARTBEAT_S``, through the loop's idle timer and ``keepalive()``).

TLS is the listener's (``https_port``: implicit TLS, the other ports' certificate);
``ctx.tls_active`` lets Basic logins through from anywhere.  Left out: request
bodies in chunked coding (see parse.py), ranges, conditional requests, compression.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Optional, Tuple

from protocols import sasl
from protocols.base import SessionContext
from protocols.http import api
from protocols.http.parse import MAX_BODY, MAX_HEADER_BYTES, HttpError, Request, RequestReader
from protocols.http.response import Response, error, render

log = logging.getLogger("mailsrv.http")

# WHATWG HTML 9.2.7 (authoring notes): "include a comment line ... every 15 seconds
# or so" against proxies that drop quiet connections; ours are on loopback, 30 s.
HEARTBEAT_S = 30.0
# WHATWG HTML 9.2.6: "retry:" sets the client's reconnection time, milliseconds.
RETRY_MS = 3000
# Input buffered while a request waits for the backend: one largest request plus a
# little pipelined after it; more is an abuse and closes the connection.
MAX_PENDING_INPUT = MAX_BODY + MAX_HEADER_BYTES + 64 * 1024


@dataclass
class HttpConfig:
    require_login: bool = True          # normal mode: Basic login; test server: none
    # RFC 9112 §9.5 lets a server close idle persistent connections; 60 s is
    # nginx's keepalive_timeout order of magnitude.
    idle_timeout: float = 60.0
    allow_plaintext_auth: bool = False  # as IMAP LOGIN (RFC 9051 §6.2.3, RFC 2595 §2.3)
    plaintext_auth_loopback: bool = True
    realm: str = "mailsrv"
    # Names the Host field may carry besides IP literals and localhost (this server's
    # names): anything else is refused without a login, against DNS rebinding.
    host_names: Tuple[str, ...] = ()


class HttpSession:
    """One HTTP connection: bytes in, bytes out."""

    def __init__(self, ctx: SessionContext, config: HttpConfig, service):
        self.ctx = ctx
        self.config = config
        self.service = service
        self.want_tls = False
        self.user: Optional[str] = None       # after a Basic login, for this request
        self._reader = RequestReader()
        self._out: Deque[bytes] = deque()
        self._closing = False
        self._waiting = False
        self._streaming = False
        self._stopping = False                # shutdown: close after the current answer
        self._in_process = False
        self._current: Optional[Request] = None
        self._unwatch: Optional[Callable[[], None]] = None

    # -- the session protocol (protocols/base.py) -------------------------
    @property
    def closed(self) -> bool:
        return self._closing and not self._out

    @property
    def busy(self) -> bool:
        return self._waiting

    @property
    def progress(self) -> int:
        return self._reader.lines

    @property
    def idle_timeout(self) -> float:
        return HEARTBEAT_S if self._streaming else self.config.idle_timeout

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._end_of_input()
            return
        if self._closing or self._streaming:
            return      # after an event stream began nothing more is read (it ends the connection)
        self._reader.feed(data)
        if len(self._reader) > MAX_PENDING_INPUT:
            log.info("http too much pipelined input peer=%s", self.ctx.peer_ip)
            self._terminate()
            return
        self._process()

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def keepalive(self) -> bool:
        """An event stream quiet for HEARTBEAT_S gets a comment line (WHATWG HTML 9.2.6:
        a line starting with ":" is ignored by the client)."""
        if not self._streaming or self._closing:
            return False
        self._out.append(b": heartbeat\n\n")
        return True

    def timeout(self) -> None:
        """RFC 9112 §9.5: an idle connection may be closed at any time, without a response."""
        self._terminate()

    def shutdown(self) -> None:
        if self._waiting:
            self._stopping = True
            return
        self._stop_stream()
        self._closing = True

    # -- requests -----------------------------------------------------------
    def _process(self) -> None:
        if self._in_process:
            return
        self._in_process = True
        try:
            while not (self._closing or self._waiting or self._streaming):
                try:
                    req = self._reader.next()
                except HttpError as e:
                    self._current = None
                    self._send(error(e.status, e.message), close=True)
                    break
                if req is None:
                    break
                self._handle(req)
        finally:
            self._in_process = False

    def _handle(self, req: Request) -> None:
        self._current = req
        self._waiting = True
        self.user = None
        self.guard(lambda: api.dispatch(self, req))

    def guard(self, step: Callable[[], None]) -> None:
        """Run one step of answering (at once, or in a backend callback): an
        ``HttpError`` becomes its error response."""
        if self._closing or not self._waiting:
            return
        try:
            step()
        except HttpError as e:
            self.reply(error(e.status, e.message), close=e.close)

    def reply(self, resp: Response, close: bool = False) -> None:
        """The answer to the current request; may come later, from a backend callback."""
        if self._closing or not self._waiting:
            return      # the connection ended while the backend worked
        self._send(resp, close)
        self._waiting = False
        if not self._in_process:
            self._process()
            self.ctx.wake()

    def _send(self, resp: Response, close: bool = False) -> None:
        req = self._current
        head_only = req is not None and req.method == "HEAD"
        close = close or req is None or not req.keep_alive or self._stopping
        if not close and req.version < (1, 1):
            resp.headers.append(("Connection", "keep-alive"))     # RFC 9112 §C.2.2 (HTTP/1.0 keep-alive)
        self._out.append(render(resp, self.ctx.clock(), head_only, close))
        if resp.stream and not head_only and not self._stopping:
            self._streaming = True      # the stream ends the connection whatever the request asked
        else:
            self._stop_stream()
            self._closing = self._closing or close or resp.stream
        (log.info if resp.status >= 400 else log.debug)(
            "http %s %s %d peer=%s user=%s", req.method if req else "-", req.path if req else "-",
            resp.status, self.ctx.peer_ip, self.user)

    def _end_of_input(self) -> None:
        """The client closed its side (RFC 9112 §9.6): requests it completed are still
        answered, then the connection closes; an event stream ends at once."""
        self._stop_stream()
        self._stopping = True
        if not self._waiting:
            self._closing = True

    def _terminate(self) -> None:
        self._stop_stream()
        self._closing = True
        self._waiting = False
        self._out.clear()

    # -- server-sent events (WHATWG HTML 9.2) ------------------------------
    def start_stream(self, unwatch: Callable[[], None]) -> Response:
        """The event-stream response; ``unwatch`` stops the catalog's callback."""
        self._unwatch = unwatch
        body = b"retry: %d\n\n" % RETRY_MS
        return Response(200, body, "text/event-stream; charset=utf-8", stream=True)

    def push_event(self, payload: dict) -> None:
        """One ``message`` event (WHATWG HTML 9.2.6: "event:" and "data:" lines, a
        blank line dispatches it); JSON on one line, so no "data:" splitting is needed."""
        if not self._streaming or self._closing:
            return
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._out.append(b"event: message\ndata: " + data + b"\n\n")
        self.ctx.wake()

    def _stop_stream(self) -> None:
        unwatch, self._unwatch = self._unwatch, None
        self._streaming = False
        if unwatch is not None:
            unwatch()

    # -- RFC 7617 Basic login -----------------------------------------------
    def plaintext_ok(self) -> bool:
        """As IMAP LOGIN: over TLS, loopback if allowed, or the operator's choice."""
        c, ctx = self.config, self.ctx
        return ctx.tls_active or c.allow_plaintext_auth or (ctx.is_loopback and c.plaintext_auth_loopback)

    def login(self, req: Request, then: Callable[[], None]) -> None:
        """Check the request's credentials; ``then()`` with ``self.user`` set, or
        answer 401/403/503 here."""
        challenge = [("WWW-Authenticate", 'Basic realm="%s", charset="UTF-8"' % self.config.realm)]
        header = req.header("authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            self.reply(error(401, "log in with your mail address and password", challenge))
            return
        if not self.plaintext_ok():
            self.reply(error(403, "login over plaintext HTTP refused from a non-loopback address "
                                  "(allow_plaintext_auth is off)"))
            return
        try:        # RFC 7617 §2: base64 of user-id ":" password, UTF-8 (charset="UTF-8")
            name, colon, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            name, colon, password = "", "", ""
        if not colon or not name:
            self.reply(error(401, "malformed Basic credentials", challenge))
            return
        outcome = sasl.SaslOutcome(mechanism="HTTP-BASIC", authcid=name, authzid="", password=password)

        def done(answer: object) -> None:
            if isinstance(answer, sasl.AuthTemporary):
                self.reply(error(503, answer.text, [("Retry-After", "60")]))
            elif not answer:
                log.info("http login failed user=%r peer=%s", name, self.ctx.peer_ip)
                self.reply(error(401, "authentication failed", challenge))
            else:
                self.user = str(answer)
                self.guard(then)
        self.service.authenticate(self.ctx, outcome, done)
