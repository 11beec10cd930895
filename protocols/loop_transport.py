"""The event loop's connections: one TCP connection and the session it drives.

One of the three modules of the event loop (protocols/loop.py, this one,
loop_tls.py), the only ones in protocols/ that touch sockets, TLS, threads and
the clock.  Also the UDP endpoint the DNS resolver uses (``Datagram``).

The write path, after CPython's selectors/asyncio transports: send now, buffer
the rest, watch for writability only while the buffer is non-empty;
``session.data_to_send()`` is pulled again whenever the buffer is below
``WRITE_LOW_WATER`` and the session may have more, so a long response
streamed in chunks never sits in memory whole.  The read path: ``READ_CHUNK``
octets per readiness event; a connection whose outgoing buffer is at
``WRITE_LOW_WATER`` is not read (backpressure).  The session sees, in order:
its creation (connect, or the end of an implicit-TLS handshake), then
``receive_data`` calls, then at most one ``receive_data(b"")`` (end of file),
then the connection is gone.

Idle time is counted from the last *progress* of the input or the last octet
sent: a session that has a ``progress`` counter (protocols/base.py) restarts
the clock only when a read completed a record (a command line, a line of
message content), so a client dripping one octet every few seconds without
ever ending a line is closed after ``idle_timeout`` like a silent one, as
Postfix's ``smtpd_per_record_deadline`` does (a deadline per record, not per
read); slowly completed commands keep the session.  A client slowly reading
a long RETR is not idle either (RFC 5321 §4.5.3.2.7 times out a server
waiting for a command, not one that is still writing).  Sessions without
``progress`` are timed from the last octet received.

When the loop closes a connection whose session is neither closed nor told
about end-of-file (reset, TLS failure, shutdown grace expired), it calls
``session.receive_data(b"")`` once, so the session can release what it holds
(a POP3 maildrop lock); anything the session queues then is discarded.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from typing import Callable, Optional

from .base import SessionContext, new_id
from .loop_tls import TlsTransport

log = logging.getLogger("mailsrv.loop")
conn_log = logging.getLogger("mailsrv.conn")

READ_CHUNK = 64 * 1024          # octets per recv(); no RFC limit applies at this layer
# One READ_CHUNK buffer per loop thread that every connection's recv_into fills:
# recv() made (and shrank) a 64 KiB object per read, fresh heap pages each time.
_READ_BUFFER = threading.local()
WRITE_LOW_WATER = 256 * 1024    # pull more output below this, stop reading at or above it
PUMP_ROUNDS = 16                # pull/send rounds per event before yielding to other connections
DATAGRAM_MAX = 65535            # largest UDP payload (RFC 768: 16-bit length); DNS over UDP fits (RFC 6891 §6.2.5)
DATAGRAM_BATCH = 64             # recvfrom() calls per readiness event
# A closed session whose reply the peer will not read is dropped after this long
# (RFC 5321 §4.5.3.2.7 lets a server give up on an unresponsive client).
CLOSE_LINGER = 30.0


def fmt_addr(addr) -> str:
    """``host:port``, ``[v6]:port``, or ``-``."""
    if not addr:
        return "-"
    host, port = addr[0], addr[1]
    return "[%s]:%s" % (host, port) if ":" in str(host) else "%s:%s" % (host, port)


class Connection(TlsTransport):
    """One TCP connection (accepted or outbound) and its session.  Loop thread only;
    ``close()`` ends it from outside (the session gets EOF first)."""

    def __init__(self, loop, sock: socket.socket, name: str, factory, listener=None):
        self._loop = loop
        self.sock = sock
        self.name = name
        self.factory = factory
        self.listener = listener        # the loop's _Listener for accepted connections
        self.id = new_id(5)
        self.session = None
        self.ctx: Optional[SessionContext] = None
        self.peer: tuple = ()
        self.local: tuple = ()
        self.out = bytearray()          # raw octets to send (ciphertext once TLS is up)
        self.more = False               # the session may have more output ready
        self.mask = 0                   # events currently registered with the selector
        self._tls_init()
        # client side
        self.connecting = False
        self.connect_timeout = 0.0
        self.on_error: Optional[Callable[[BaseException], None]] = None
        # lifecycle
        self.deadline: Optional[float] = None   # connect / handshake deadline (monotonic)
        self.timer = None                       # the loop's TimerHandle for the deadline
        self.timer_when = 0.0
        self.eof_seen = False
        self.eof_given = False
        self.force_close = False
        self.broken = False
        self.closed = False
        self.wake_pending = False
        self.started = time.monotonic()
        self.last_activity = self.started
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def peer_text(self) -> str:
        return fmt_addr(self.peer)

    def _progress(self) -> Optional[int]:
        """The session's ``progress`` counter (protocols/base.py), None without one."""
        return getattr(self.session, "progress", None) if self.session is not None else None

    # ------------------------------------------------------------------ the session
    def guarded(self, fn, *args) -> None:
        """Run ``fn(*args)``; an exception from a session is a bug: log it, drop the connection."""
        if self.closed:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("session error on %s listener=%s peer=%s; closing",
                          self.id, self.name, self.peer_text)
            self.broken = True
            self.close()

    def open_session(self) -> None:
        """Build the SessionContext, call the factory, flush the greeting."""
        ctx = SessionContext(peer=self.peer, local=self.local, listener=self.name,
                             tls_active=self.tls_up, conn_id=self.id,
                             tls_available=self.starttls_context is not None and not self.implicit_tls,
                             wake=self._make_wake(), clock=self._loop.clock, tls_info=self.tls_info)
        self.ctx = ctx
        self.deadline = None
        try:
            self.session = self.factory(ctx)
        except Exception as exc:
            log.exception("session factory failed on %s listener=%s", self.id, self.name)
            self.broken = True
            self.fail(exc)
            return
        self.on_error = None
        self.pump()

    def _make_wake(self) -> Callable[[], None]:
        def run() -> None:
            self.wake_pending = False
            self.guarded(self.pump)

        def wake() -> None:
            if self.closed or self.wake_pending:
                return
            self.wake_pending = True
            if self._loop._in_loop_thread():
                self._loop.call_soon(run)
            else:
                self._loop.call_soon_threadsafe(run)
        return wake

    # ------------------------------------------------------------------ read and write paths
    def _on_event(self, mask: int) -> None:
        if self.connecting:
            self._finish_connect()
            return
        if mask & selectors.EVENT_READ:
            self._read()
        self.pump()

    def _read(self) -> None:
        view = getattr(_READ_BUFFER, "view", None)
        if view is None:
            view = _READ_BUFFER.view = memoryview(bytearray(READ_CHUNK))
        try:
            data = bytes(view[:self.sock.recv_into(view)])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("recv on %s: %s", self.id, exc)
            self.close()
            return
        self.bytes_in += len(data)
        mark = self._progress()
        if not data:
            self.eof_seen = True
        if self.tls is not None:
            self._tls_feed(data)
        elif not data:
            self._give_eof()
        elif self._accepts_input():
            self.session.receive_data(data)
        # else: RFC 3207 §4.2 / RFC 2595 §3.1: plaintext after the go-ahead is discarded
        if mark is None or self._progress() != mark:
            self.last_activity = time.monotonic()   # a record completed (see the module doc)

    def _accepts_input(self) -> bool:
        s = self.session
        return s is not None and not s.closed and not self.force_close and not self.tls_pending

    def _give_eof(self) -> None:
        if self.session is None:
            self.fail(ConnectionResetError("connection closed by peer"))
        elif not self.eof_given:
            self.eof_given = True
            self.session.receive_data(b"")

    def pump(self) -> None:
        """Pull output from the session while the buffer is low, send, repeat; then settle."""
        for _ in range(PUMP_ROUNDS):
            if self.closed:
                return
            self._pull()
            self._send()
            if not self.more or len(self.out) >= WRITE_LOW_WATER:
                break
        if not self.closed:
            self.settle()

    def _pull(self) -> None:
        self.more = False
        s = self.session
        if s is None or self.tls_pending or (self.tls is not None and not self.tls_up):
            return
        while True:
            if len(self.out) >= WRITE_LOW_WATER:
                self.more = True
                return
            data = s.data_to_send()
            if not data:
                return
            if self.tls_up:
                if not self._tls_write(data):
                    return
            else:
                self.out += data
            if s.want_tls and self.tls is None:
                return

    def _send(self) -> None:
        while self.out and not self.closed:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("send on %s: %s", self.id, exc)
                self.close()
                return
            del self.out[:n]
            self.bytes_out += n
            self.last_activity = time.monotonic()
            if self.out:
                return

    def settle(self) -> None:
        """After I/O: start a pending STARTTLS, close a finished session, update selector and timer."""
        s = self.session
        if s is not None:
            if s.closed or self.force_close:
                if not self.out and not self.more:
                    self.close(graceful=True)
                    return
            elif s.want_tls and self.tls is None and not self.tls_pending:
                self.tls_pending = True
            if self.tls_pending and not self.out and not (s.closed or self.force_close):
                self._start_tls()
                if self.closed:
                    return
                self._send()
                if self.closed:
                    return
        self.update_events()
        self.arm()

    def update_events(self) -> None:
        want = 0
        if self.connecting:
            want = selectors.EVENT_WRITE
        else:
            if not self.eof_seen and len(self.out) < WRITE_LOW_WATER:
                want |= selectors.EVENT_READ
            if self.out or self.more:
                want |= selectors.EVENT_WRITE
        if want == self.mask:
            return
        if self.mask == 0:
            self._loop._sel.register(self.sock, want, lambda mask: self.guarded(self._on_event, mask))
        elif want == 0:
            self._loop._sel.unregister(self.sock)
        else:
            self._loop._sel.modify(self.sock, want, lambda mask: self.guarded(self._on_event, mask))
        self.mask = want

    # ------------------------------------------------------------------ deadlines
    def _deadline(self) -> Optional[float]:
        """When the connection's timer must act: the connect/handshake deadline, else
        ``session.idle_timeout`` after the last activity, else CLOSE_LINGER once closed."""
        if self.deadline is not None:
            return self.deadline
        s = self.session
        if s is None:
            return None
        if s.closed or self.force_close:
            return self.last_activity + CLOSE_LINGER
        idle = s.idle_timeout
        if not idle or idle <= 0:
            return None
        return self.last_activity + idle

    def arm(self) -> None:
        """(Re)schedule the connection's timer if its deadline moved earlier; a later
        deadline is handled lazily when the timer fires."""
        when = self._deadline()
        if when is None:
            return
        if self.timer is not None and not self.timer.cancelled and self.timer_when <= when:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self._loop._call_at(when, lambda: self.guarded(self._on_deadline))
        self.timer_when = when

    def _on_deadline(self) -> None:
        self.timer = None
        when = self._deadline()
        if when is None:
            return
        if time.monotonic() < when:
            self.arm()
            return
        s = self.session
        if s is None:
            what = "connect" if self.connecting else "TLS handshake"
            log.info("%s timed out on %s listener=%s peer=%s", what, self.id, self.name, self.peer_text)
            self.fail(TimeoutError("%s timed out" % what))
        elif self.deadline is not None:
            log.info("TLS handshake timed out on %s peer=%s", self.id, self.peer_text)
            self.close()
        elif s.closed or self.force_close:
            self.close()
        elif getattr(s, "keepalive", None) is not None and s.keepalive():
            self.last_activity = time.monotonic()   # IMAP IDLE's "* OK Still here" (RFC 2177 §3)
            self.pump()
        else:                             # idle timeout, e.g. RFC 5321 §4.5.3.2.7
            self.force_close = True
            self.last_activity = time.monotonic()
            s.timeout()
            self.pump()

    # ------------------------------------------------------------------ connecting and closing
    def _close_gently(self) -> None:
        """Before closing after a final reply: send TLS close_notify (RFC 8446 §6.1), and
        read away input that already arrived, because closing a socket with unread input
        makes the kernel send a RST, and a RST can destroy our last reply (the 221 after
        a pipelined QUIT, RFC 5321 §4.1.1.10) before the peer has read it."""
        if self.tls_up:
            self._tls_close_notify()
        for _ in range(4):
            try:
                if not self.sock.recv(READ_CHUNK):
                    return
            except OSError:
                return

    def close(self, graceful: bool = False) -> None:
        """Close now (loop thread only); a session neither closed nor told about
        end-of-file gets ``receive_data(b"")`` first.  ``graceful``: after its final
        reply (see ``_close_gently``)."""
        if self.closed:
            return
        self.closed = True
        s = self.session
        if s is not None and not self.broken and not self.eof_given and not s.closed:
            self.eof_given = True
            try:
                s.receive_data(b"")
            except Exception:
                log.exception("session error on %s at close", self.id)
        if graceful:
            self._close_gently()
        if self.mask:
            self._loop._unregister(self.sock)
            self.mask = 0
        if self.timer is not None:
            self.timer.cancel()
        self.sock.close()
        self.out = bytearray()
        self._loop._conns.discard(self)
        if self.listener is not None:
            self.listener.counts.release(self.peer[0])
        if conn_log.isEnabledFor(logging.INFO):      # no work for a disabled level
            conn_log.info("close %s listener=%s peer=%s duration=%.3fs in=%d out=%d",
                          self.id, self.name, self.peer_text, time.monotonic() - self.started,
                          self.bytes_in, self.bytes_out)

    def _finish_connect(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(OSError(err, os.strerror(err)))
            return
        try:
            self.local = tuple(self.sock.getsockname()[:2])
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self.fail(exc)
            return
        self.connecting = False
        if self.implicit_tls:
            self.deadline = time.monotonic() + self.connect_timeout
            self.wrap(self.starttls_context, False)
        else:
            self.deadline = None
            self.open_session()
        self.pump()

    def fail(self, exc: BaseException) -> None:
        """A connection failed before it had a session: tell the connect() caller."""
        on_error, self.on_error = self.on_error, None
        self.close()
        if on_error is not None and self.session is None:
            self._loop._run_callback(lambda: on_error(exc))

    def shutdown(self) -> None:
        """Server shutdown: the session says goodbye (RFC 5321 §3.8: 421), then it is flushed."""
        shutdown = getattr(self.session, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self.pump()


class Datagram:
    """A UDP endpoint registered with the loop (for the DNS resolver, RFC 1035 §4.2.1)."""

    def __init__(self, loop, sock: socket.socket,
                 on_datagram: Callable[[bytes, tuple], None]):
        self._loop = loop
        self.sock = sock
        self.on_datagram = on_datagram
        self.closed = False

    @property
    def local(self) -> tuple:
        return self.sock.getsockname()

    def sendto(self, data: bytes, addr: tuple) -> bool:
        """Send one datagram; False when it could not be sent (treat it as lost)."""
        if self.closed:
            return False
        try:
            self.sock.sendto(data, addr)
            return True
        except OSError as exc:
            log.debug("sendto %s failed: %s", fmt_addr(addr), exc)
            return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop._datagrams.discard(self)
        self._loop._unregister(self.sock)
        self.sock.close()

    def _on_readable(self, mask: int) -> None:
        for _ in range(DATAGRAM_BATCH):
            if self.closed:
                return
            try:
                data, addr = self.sock.recvfrom(DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recvfrom failed: %s", exc)
                return
            try:
                self.on_datagram(data, addr)
            except Exception:
                log.exception("datagram handler failed")
