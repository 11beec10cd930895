"""The event loop: the one module in protocols/ that touches sockets, TLS, threads and the clock.

It drives any sans-I/O session that follows the session protocol described in
``protocols/base.py`` (``receive_data``, ``data_to_send``, ``closed``,
``want_tls``, ``tls_started``, ``idle_timeout``, ``timeout``, ``shutdown``),
server side (``listen``) and client side (``connect``), plus UDP endpoints
for the DNS resolver (``open_datagram``).

Design, after CPython's selectors/asyncio transports:

* one thread, ``selectors.DefaultSelector``, non-blocking sockets;
* write path: send now, buffer the rest, watch for writability only while the
  buffer is non-empty; ``session.data_to_send()`` is pulled again whenever the
  buffer is below ``WRITE_LOW_WATER`` and the session may have more, so a long
  response streamed in chunks never sits in memory whole;
* read path: ``READ_CHUNK`` octets per readiness event; a connection whose
  outgoing buffer is at ``WRITE_LOW_WATER`` is not read (backpressure);
* TLS through ``ssl.MemoryBIO`` + ``SSLContext.wrap_bio`` so that no handshake
  ever blocks the loop, for implicit TLS (the session is created after the
  handshake) and for STARTTLS (RFC 3207 §4, RFC 2595 §3.1 / §4: the go-ahead
  reply is flushed first, plaintext received before the handshake starts is
  discarded, then ``session.tls_started(info)``);
* a heapq timer heap for ``call_later`` and per-connection deadlines (idle
  timeout, TLS handshake, connect);
* ``call_soon_threadsafe`` through a socketpair, so worker threads (the store's
  fsync, scrypt) hand results back to the loop thread; ``run_in_thread(fn,
  callback)`` is the packaged form (a small thread pool), and ``Lane`` a
  dedicated, bounded, fair one for work that must not crowd it (scrypt).

Beyond the basic EventLoop interface (listeners, connections, timers): ``time()`` (the injected wall clock),
``run_in_thread``, ``AF_INET``/``AF_INET6`` (so callers of ``open_datagram``
need not import socket), ``connect(..., implicit_tls=False)`` (without it the
context is kept for the session's STARTTLS), ``close()``, and the constructor's
``tls_handshake_timeout``.

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

The loop is not thread-safe except for ``call_soon_threadsafe``, ``stop`` and
``begin_shutdown``; everything else is called from the loop thread (or before
``run``).  Sessions and backends run in the loop thread only.

When the loop closes a connection whose session is neither closed nor told
about end-of-file (reset, TLS failure, shutdown grace expired), it calls
``session.receive_data(b"")`` once, so the session can release what it holds
(a POP3 maildrop lock); anything the session queues then is discarded.

Left out: connection-rate limiting, PROXY protocol, TLS session resumption
tuning, TCP_FASTOPEN; names given to ``connect`` are resolved with a blocking
``getaddrinfo`` (the SMTP client passes IP addresses from our own resolver).
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from .base import SessionContext, new_id

log = logging.getLogger("mailsrv.loop")
conn_log = logging.getLogger("mailsrv.conn")

READ_CHUNK = 64 * 1024          # octets per recv(); no RFC limit applies at this layer
WRITE_LOW_WATER = 256 * 1024    # pull more output below this, stop reading at or above it
PUMP_ROUNDS = 16                # pull/send rounds per event before yielding to other connections
ACCEPT_BATCH = 64               # accept() calls per readiness event of a listener
LISTEN_BACKLOG = 1024           # the kernel caps it at net.core.somaxconn
DATAGRAM_MAX = 65535            # largest UDP payload (RFC 768: 16-bit length); DNS over UDP fits (RFC 6891 §6.2.5)
DATAGRAM_BATCH = 64             # recvfrom() calls per readiness event
# No RFC bounds the TLS handshake.  RFC 5321 §4.5.3.2.7 lets a server wait 5 minutes for
# a command, but a handshake is one or two round trips, so 30 s is generous and keeps
# silent half-open handshakes from holding connection slots.
TLS_HANDSHAKE_TIMEOUT = 30.0
# A closed session whose reply the peer will not read is dropped after this long
# (RFC 5321 §4.5.3.2.7 lets a server give up on an unresponsive client).
CLOSE_LINGER = 30.0
ACCEPT_PAUSE = 0.1              # seconds to stop accepting when out of file descriptors
TIMER_COMPACT_AT = 1024         # rebuild the timer heap when this many cancelled entries linger
WORKER_THREADS = 8              # run_in_thread pool: fsync-heavy store calls (scrypt has its Lane)


def _raise_fd_limit() -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (1,000+ connections need fds)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # pragma: no cover - depends on the host
        log.debug("could not raise RLIMIT_NOFILE: %s", exc)


def _progress(conn: "Connection") -> Optional[int]:
    """The session's ``progress`` counter (protocols/base.py), None without one."""
    return getattr(conn.session, "progress", None) if conn.session is not None else None


def _fmt_addr(addr) -> str:
    if not addr:
        return "-"
    host, port = addr[0], addr[1]
    return "[%s]:%s" % (host, port) if ":" in str(host) else "%s:%s" % (host, port)


class TimerHandle:
    """Returned by ``call_later``; ``cancel()`` stops the call if it has not run yet."""

    __slots__ = ("when", "fn", "cancelled", "_loop")

    def __init__(self, when: float, fn: Callable[[], None], loop: "EventLoop"):
        self.when = when
        self.fn = fn
        self.cancelled = False
        self._loop = loop

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.fn = None
            self._loop._cancelled += 1


class _Listener:
    def __init__(self, name, sock, factory, ssl_context, starttls_context,
                 max_connections, max_per_ip, busy_reply):
        self.name = name
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.starttls_context = starttls_context
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.busy_reply = busy_reply
        self.count = 0
        self.per_ip: Dict[str, int] = {}
        self.closed = False


class Connection:
    """One TCP connection (accepted or outbound).  ``close()`` ends it from outside."""

    def __init__(self, loop: "EventLoop", sock: socket.socket, name: str, factory,
                 listener: Optional[_Listener] = None):
        self._loop = loop
        self.sock = sock
        self.name = name
        self.factory = factory
        self.listener = listener
        self.id = new_id(5)
        self.session = None
        self.ctx: Optional[SessionContext] = None
        self.peer: tuple = ()
        self.local: tuple = ()
        self.out = bytearray()          # raw octets to send (ciphertext once TLS is up)
        self.more = False               # the session may have more output ready
        self.mask = 0                   # events currently registered with the selector
        # TLS state
        self.starttls_context: Optional[ssl.SSLContext] = None
        self.implicit_tls = False
        self.server_hostname: Optional[str] = None
        self.tls: Optional[ssl.SSLObject] = None
        self.inbio: Optional[ssl.MemoryBIO] = None
        self.outbio: Optional[ssl.MemoryBIO] = None
        self.tls_up = False
        self.tls_pending = False        # want_tls seen; waiting for the go-ahead to drain
        self.tls_info: Optional[dict] = None
        # client side
        self.connecting = False
        self.connect_timeout = 0.0
        self.on_error: Optional[Callable[[BaseException], None]] = None
        # lifecycle
        self.deadline: Optional[float] = None   # connect / handshake deadline (monotonic)
        self.timer: Optional[TimerHandle] = None
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

    def close(self) -> None:
        """Close the connection now (loop thread only); the session gets EOF first."""
        self._loop._close(self)


class Datagram:
    """A UDP endpoint registered with the loop (for the DNS resolver, RFC 1035 §4.2.1)."""

    def __init__(self, loop: "EventLoop", sock: socket.socket,
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
            log.debug("sendto %s failed: %s", _fmt_addr(addr), exc)
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


class Lane:
    """A small dedicated thread pool for one kind of CPU-heavy work (password hashing),
    bounded and fair, so that a flood of it never delays the shared ``run_in_thread``
    pool (maildrop opening, queue writes, deliveries).

    At most ``threads`` jobs run; at most ``max_waiting`` wait; one key (a client
    address group) has at most ``max_per_key`` jobs running or waiting.  Waiting jobs
    start round-robin between keys, so one busy address cannot starve another.
    ``submit`` returns False at once when a bound is reached, so the caller can give a
    fast temporary refusal instead of a queue that grows.  Loop thread only; the
    workers run ``fn`` alone and hand the result back through ``call_soon_threadsafe``
    (the executor never holds more than ``threads`` jobs: the waiting is done here).
    """

    def __init__(self, loop: "EventLoop", name: str, threads: int,
                 max_waiting: int, max_per_key: int):
        self._loop = loop
        self.name = name
        self.threads = max(1, threads)
        self.max_waiting = max_waiting
        self.max_per_key = max_per_key
        self.running = 0
        self.waiting = 0
        self._per_key: Dict[str, int] = {}
        self._queues: "collections.OrderedDict[str, collections.deque]" = collections.OrderedDict()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._closed = False

    def submit(self, key: str, fn: Callable[[], object], callback: Callable[[object], None]) -> bool:
        """Run ``fn()`` on the lane, then ``callback(result or exception)`` in the loop
        thread; False (and nothing queued) when the lane or ``key``'s share is full."""
        if self._closed or self._per_key.get(key, 0) >= self.max_per_key:
            return False
        if self.running >= self.threads and self.waiting >= self.max_waiting:
            return False
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._queues.setdefault(key, collections.deque()).append((fn, callback))
        self.waiting += 1
        self._dispatch()
        return True

    def _dispatch(self) -> None:
        while self.running < self.threads and self._queues:
            key, jobs = self._queues.popitem(last=False)     # round-robin: first key in line
            fn, callback = jobs.popleft()
            if jobs:
                self._queues[key] = jobs                     # to the back of the line
            self.waiting -= 1
            self.running += 1
            self._start(key, fn, callback)

    def _start(self, key: str, fn, callback) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="mailsrv-" + self.name)

        def job() -> None:
            try:
                result = fn()
            except Exception as exc:
                log.debug("%s lane job %r raised", self.name, fn, exc_info=True)
                result = exc
            self._loop.call_soon_threadsafe(lambda: self._finished(key, callback, result))
        self._executor.submit(job)

    def _finished(self, key: str, callback, result) -> None:
        self.running -= 1
        left = self._per_key[key] - 1
        if left:
            self._per_key[key] = left
        else:
            del self._per_key[key]
        self._dispatch()
        callback(result)

    def close(self) -> None:
        """Refuse new jobs; waiting ones never run (their sessions are gone)."""
        self._closed = True
        self._queues.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)


class EventLoop:
    """A selector loop driving sans-I/O sessions; see the module docstring."""

    # Address families for open_datagram, so that callers need not import socket.
    AF_INET = socket.AF_INET
    AF_INET6 = socket.AF_INET6

    def __init__(self, clock: Callable[[], float] = time.time,
                 tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT):
        _raise_fd_limit()
        self.clock = clock                  # wall clock handed to sessions (ctx.clock)
        self.tls_handshake_timeout = tls_handshake_timeout
        self._sel = selectors.DefaultSelector()
        self._timers: List[tuple] = []
        self._cancelled = 0                 # cancelled handles still in the heap (about)
        self._seq = itertools.count()
        self._ready: collections.deque = collections.deque()
        self._conns: set = set()
        self._listeners: List[_Listener] = []
        self._datagrams: set = set()
        self._stopping = False
        self._shutting_down = False
        self._thread_id: Optional[int] = None
        self._workers: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)

    # ------------------------------------------------------------------ callbacks, timers
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread at the next iteration (loop thread only)."""
        self._ready.append(fn)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Like ``call_soon`` but callable from any thread; wakes the selector."""
        self._ready.append(fn)
        self._write_wake()

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` in the loop thread after ``delay`` seconds; returns a cancellable handle."""
        return self._call_at(time.monotonic() + max(0.0, delay), fn)

    def time(self) -> float:
        """The wall clock given to the loop (seconds since the epoch)."""
        return self.clock()

    def run_in_thread(self, fn: Callable[[], object], callback: Callable[[object], None]) -> None:
        """Run blocking ``fn()`` in a worker thread; ``callback(result)`` then runs in the
        loop thread.  If ``fn`` raises, ``callback`` gets the exception object instead."""
        if self._workers is None:
            self._workers = concurrent.futures.ThreadPoolExecutor(
                max_workers=WORKER_THREADS, thread_name_prefix="mailsrv-worker")

        def job() -> None:
            try:
                result = fn()
            except Exception as exc:
                log.debug("worker job %r raised", fn, exc_info=True)
                result = exc
            self.call_soon_threadsafe(lambda: callback(result))
        self._workers.submit(job)

    def _call_at(self, when: float, fn) -> TimerHandle:
        if self._cancelled > TIMER_COMPACT_AT and self._cancelled * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0
        handle = TimerHandle(when, fn, self)
        heapq.heappush(self._timers, (when, next(self._seq), handle))
        return handle

    def _write_wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full: a wake-up is already pending; or loop closed
            pass

    def _drain_wake(self, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _in_loop_thread(self) -> bool:
        return self._thread_id is None or self._thread_id == threading.get_ident()

    @staticmethod
    def _run_callback(fn) -> None:
        try:
            fn()
        except Exception:
            log.exception("callback %r failed", fn)

    # ------------------------------------------------------------------ running
    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def run(self) -> None:
        """Serve until ``stop()``, or until ``begin_shutdown`` has closed every connection."""
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                if self._shutting_down and not self._conns:
                    break
                for key, mask in self._sel.select(self._select_timeout()):
                    self._run_callback(lambda: key.data(mask))
                self._run_timers()
                for _ in range(len(self._ready)):
                    self._run_callback(self._ready.popleft())
        finally:
            self._stopping = False
            self._thread_id = None

    def stop(self) -> None:
        """Make ``run()`` return promptly (thread-safe; also when called before ``run``).
        Connections stay open; ``close()`` releases them."""
        self._stopping = True
        self._write_wake()

    def _select_timeout(self) -> Optional[float]:
        if self._ready:
            return 0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
            self._cancelled = max(0, self._cancelled - 1)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            handle = heapq.heappop(self._timers)[2]
            if handle.cancelled:
                self._cancelled = max(0, self._cancelled - 1)
                continue
            fn, handle.fn = handle.fn, None
            handle.cancelled = True         # ran: a later cancel() is a no-op
            self._run_callback(fn)

    def begin_shutdown(self, grace: float) -> None:
        """Stop accepting, ask every session to finish (``session.shutdown()``), and close
        what is still open after ``grace`` seconds; ``run()`` returns once none remain.
        Thread-safe.  RFC 5321 §3.8: a server shutting down SHOULD answer 421 — the
        sessions do that in ``shutdown()``."""
        if not self._in_loop_thread():
            self.call_soon_threadsafe(lambda: self.begin_shutdown(grace))
            return
        if self._shutting_down:
            return
        self._shutting_down = True
        for lst in list(self._listeners):
            self._close_listener(lst)
        for conn in list(self._conns):
            if conn.session is None:
                self._fail(conn, ConnectionAbortedError("server shutting down"))
            else:
                self._guarded(conn, self._shutdown_one)
        self.call_later(grace, self._close_all)
        self._write_wake()

    def _shutdown_one(self, conn: Connection) -> None:
        shutdown = getattr(conn.session, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self._pump(conn)

    def _close_all(self) -> None:
        for conn in list(self._conns):
            self._close(conn)

    def close(self) -> None:
        """Release everything (after ``run`` returned): listeners, connections, datagrams."""
        for lst in list(self._listeners):
            self._close_listener(lst)
        self._close_all()
        for dg in list(self._datagrams):
            dg.close()
        if self._workers is not None:
            self._workers.shutdown(wait=False)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _unregister(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    # ------------------------------------------------------------------ listeners
    def listen(self, name: str, host: str, port: int, factory: Callable[[SessionContext], object],
               ssl_context: Optional[ssl.SSLContext] = None,
               starttls_context: Optional[ssl.SSLContext] = None,
               max_connections: int = 1000, max_per_ip: int = 50,
               busy_reply: bytes = b"421 4.7.0 Too many connections\r\n") -> Tuple[str, int]:
        """Listen on (host, port); port 0 picks a free port.  Returns the bound address.

        ``ssl_context`` makes it an implicit-TLS listener (RFC 8314 §3.3); with
        ``starttls_context`` sessions see ``ctx.tls_available``.  Over
        ``max_connections`` or ``max_per_ip`` a connection gets ``busy_reply`` (RFC 5321
        §3.8: 421 when the service is not available; not sent on implicit-TLS
        listeners, where plaintext would be noise) and is closed without a session.
        Raises OSError with its errno (EADDRINUSE, EACCES) when binding fails.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        lst = _Listener(name, sock, factory, ssl_context, starttls_context,
                        max_connections, max_per_ip, busy_reply)
        self._listeners.append(lst)
        self._sel.register(sock, selectors.EVENT_READ, lambda mask: self._on_accept(lst))
        bound = sock.getsockname()
        return bound[0], bound[1]

    def set_tls_context(self, context: ssl.SSLContext) -> int:
        """Certificate reload (SIGHUP): every listener that has TLS (implicit or
        STARTTLS) hands ``context`` to the connections it accepts from now on;
        open connections keep the context they were accepted with.  A plain
        attribute swap, safe from any thread.  Returns the listeners changed."""
        changed = 0
        for lst in list(self._listeners):
            if lst.ssl_context is not None or lst.starttls_context is not None:
                changed += 1
            if lst.ssl_context is not None:
                lst.ssl_context = context
            if lst.starttls_context is not None:
                lst.starttls_context = context
        return changed

    def _close_listener(self, lst: _Listener) -> None:
        if lst in self._listeners:
            self._listeners.remove(lst)
        lst.closed = True
        self._unregister(lst.sock)
        lst.sock.close()

    def _resume_accept(self, lst: _Listener) -> None:
        if not lst.closed:
            self._sel.register(lst.sock, selectors.EVENT_READ, lambda mask: self._on_accept(lst))

    def _on_accept(self, lst: _Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept on %s: %s; pausing", lst.name, exc)
                    self._unregister(lst.sock)
                    self.call_later(ACCEPT_PAUSE, lambda: self._resume_accept(lst))
                    return
                log.info("accept on %s: %s", lst.name, exc)
                continue
            self._accepted(lst, sock, addr)

    def _accepted(self, lst: _Listener, sock: socket.socket, addr: tuple) -> None:
        sock.setblocking(False)
        ip = addr[0]
        if lst.count >= lst.max_connections or lst.per_ip.get(ip, 0) >= lst.max_per_ip:
            conn_log.info("busy listener=%s peer=%s: connection limit reached", lst.name, _fmt_addr(addr))
            if lst.ssl_context is None:
                try:
                    sock.send(lst.busy_reply)
                except OSError:
                    pass
            sock.close()
            return
        lst.count += 1
        lst.per_ip[ip] = lst.per_ip.get(ip, 0) + 1
        conn = Connection(self, sock, lst.name, lst.factory, lst)
        conn.starttls_context = lst.starttls_context
        conn.peer = tuple(addr[:2])
        self._conns.add(conn)
        try:
            conn.local = tuple(sock.getsockname()[:2])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self._close(conn)
            return
        if lst.ssl_context is not None:
            conn.implicit_tls = True
            self._guarded(conn, self._wrap, lst.ssl_context, True)
            self._guarded(conn, self._settle)
        else:
            self._guarded(conn, self._open_session)

    # ------------------------------------------------------------------ client side
    def connect(self, host: str, port: int, session_factory: Callable[[SessionContext], object],
                timeout: float, on_error: Callable[[BaseException], None],
                ssl_context: Optional[ssl.SSLContext] = None,
                server_hostname: Optional[str] = None,
                implicit_tls: bool = False) -> Optional[Connection]:
        """Open an outbound TCP connection driven by a client session (loop thread only).

        ``ssl_context`` is used when the session sets ``want_tls`` (client STARTTLS,
        RFC 3207 §4), or at once with ``implicit_tls=True`` (RFC 8314 §3).
        ``server_hostname`` is sent as SNI and checked against the certificate when the
        context has ``check_hostname``.  ``on_error(exc)`` is called (later, in the loop
        thread) when the connection cannot be made within ``timeout`` seconds (connect
        plus implicit handshake); once the session exists, failures reach it as EOF.
        """
        try:
            try:
                infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
            except socket.gaierror:
                infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self.call_soon(lambda e=exc: on_error(e))
            return None
        sock.setblocking(False)
        try:
            err = sock.connect_ex(addr)
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
            sock.close()
            self.call_soon(lambda e=OSError(err, os.strerror(err)): on_error(e))
            return None
        conn = Connection(self, sock, "client", session_factory)
        conn.peer = tuple(addr[:2])
        conn.on_error = on_error
        conn.starttls_context = ssl_context
        conn.implicit_tls = implicit_tls and ssl_context is not None
        conn.server_hostname = server_hostname
        conn.connecting = True
        conn.connect_timeout = timeout
        conn.deadline = time.monotonic() + timeout
        self._conns.add(conn)
        self._update_events(conn)
        self._arm(conn)
        return conn

    def _finish_connect(self, conn: Connection) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(conn, OSError(err, os.strerror(err)))
            return
        try:
            conn.local = tuple(conn.sock.getsockname()[:2])
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._fail(conn, exc)
            return
        conn.connecting = False
        if conn.implicit_tls:
            conn.deadline = time.monotonic() + conn.connect_timeout
            self._wrap(conn, conn.starttls_context, False)
        else:
            conn.deadline = None
            self._open_session(conn)
        self._pump(conn)

    def _fail(self, conn: Connection, exc: BaseException) -> None:
        """A connection failed before it had a session: tell the connect() caller."""
        on_error, conn.on_error = conn.on_error, None
        self._close(conn)
        if on_error is not None and conn.session is None:
            self._run_callback(lambda: on_error(exc))

    # ------------------------------------------------------------------ datagrams
    def open_datagram(self, family: int, on_datagram: Callable[[bytes, tuple], None],
                      local_addr: Optional[tuple] = None) -> Datagram:
        """A UDP socket bound to an ephemeral port; ``on_datagram(data, addr)`` runs in the loop."""
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if local_addr is None:
                local_addr = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
            sock.bind(local_addr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        dg = Datagram(self, sock, on_datagram)
        self._datagrams.add(dg)
        self._sel.register(sock, selectors.EVENT_READ, dg._on_readable)
        return dg

    # ------------------------------------------------------------------ sessions
    def _guarded(self, conn: Connection, fn, *args) -> None:
        """Run ``fn(conn, *args)``; an exception from a session is a bug: log it, drop the connection."""
        if conn.closed:
            return
        try:
            fn(conn, *args)
        except Exception:
            log.exception("session error on %s listener=%s peer=%s; closing",
                          conn.id, conn.name, _fmt_addr(conn.peer))
            conn.broken = True
            self._close(conn)

    def _open_session(self, conn: Connection) -> None:
        """Build the SessionContext, call the factory, flush the greeting."""
        ctx = SessionContext(peer=conn.peer, local=conn.local, listener=conn.name,
                             tls_active=conn.tls_up, conn_id=conn.id,
                             tls_available=conn.starttls_context is not None and not conn.implicit_tls,
                             wake=self._make_wake(conn), clock=self.clock, tls_info=conn.tls_info)
        conn.ctx = ctx
        conn.deadline = None
        try:
            conn.session = conn.factory(ctx)
        except Exception as exc:
            log.exception("session factory failed on %s listener=%s", conn.id, conn.name)
            conn.broken = True
            self._fail(conn, exc)
            return
        conn.on_error = None
        self._pump(conn)

    def _make_wake(self, conn: Connection) -> Callable[[], None]:
        def run() -> None:
            conn.wake_pending = False
            self._guarded(conn, self._pump)

        def wake() -> None:
            if conn.closed or conn.wake_pending:
                return
            conn.wake_pending = True
            if self._in_loop_thread():
                self.call_soon(run)
            else:
                self.call_soon_threadsafe(run)
        return wake

    def _on_event(self, conn: Connection, mask: int) -> None:
        if conn.connecting:
            self._finish_connect(conn)
            return
        if mask & selectors.EVENT_READ:
            self._read(conn)
        self._pump(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("recv on %s: %s", conn.id, exc)
            self._close(conn)
            return
        conn.bytes_in += len(data)
        mark = _progress(conn)
        if not data:
            conn.eof_seen = True
        if conn.tls is not None:
            if data:
                conn.inbio.write(data)
            else:
                conn.inbio.write_eof()
            self._tls_input(conn)
        elif not data:
            self._give_eof(conn)
        elif self._accepts_input(conn):
            conn.session.receive_data(data)
        # else: RFC 3207 §4.2 / RFC 2595 §3.1: plaintext after the go-ahead is discarded
        if mark is None or _progress(conn) != mark:
            conn.last_activity = time.monotonic()   # a record completed (see the module doc)

    def _accepts_input(self, conn: Connection) -> bool:
        s = conn.session
        return s is not None and not s.closed and not conn.force_close and not conn.tls_pending

    def _give_eof(self, conn: Connection) -> None:
        if conn.session is None:
            self._fail(conn, ConnectionResetError("connection closed by peer"))
        elif not conn.eof_given:
            conn.eof_given = True
            conn.session.receive_data(b"")

    def _pump(self, conn: Connection) -> None:
        """Pull output from the session while the buffer is low, send, repeat; then settle."""
        for _ in range(PUMP_ROUNDS):
            if conn.closed:
                return
            self._pull(conn)
            self._send(conn)
            if not conn.more or len(conn.out) >= WRITE_LOW_WATER:
                break
        if not conn.closed:
            self._settle(conn)

    def _pull(self, conn: Connection) -> None:
        conn.more = False
        s = conn.session
        if s is None or conn.tls_pending or (conn.tls is not None and not conn.tls_up):
            return
        while True:
            if len(conn.out) >= WRITE_LOW_WATER:
                conn.more = True
                return
            data = s.data_to_send()
            if not data:
                return
            if conn.tls_up:
                try:
                    conn.tls.write(data)
                except ssl.SSLError as exc:     # the peer already ended TLS
                    log.debug("TLS write on %s: %s", conn.id, exc)
                    self._close(conn)
                    return
                self._flush_bio(conn)
            else:
                conn.out += data
            if s.want_tls and conn.tls is None:
                return

    def _send(self, conn: Connection) -> None:
        while conn.out and not conn.closed:
            try:
                n = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("send on %s: %s", conn.id, exc)
                self._close(conn)
                return
            del conn.out[:n]
            conn.bytes_out += n
            conn.last_activity = time.monotonic()
            if conn.out:
                return

    def _settle(self, conn: Connection) -> None:
        """After I/O: start a pending STARTTLS, close a finished session, update selector and timer."""
        s = conn.session
        if s is not None:
            if s.closed or conn.force_close:
                if not conn.out and not conn.more:
                    self._close(conn, graceful=True)
                    return
            elif s.want_tls and conn.tls is None and not conn.tls_pending:
                conn.tls_pending = True
            if conn.tls_pending and not conn.out and not (s.closed or conn.force_close):
                self._start_tls(conn)
                if conn.closed:
                    return
                self._send(conn)
                if conn.closed:
                    return
        self._update_events(conn)
        self._arm(conn)

    def _update_events(self, conn: Connection) -> None:
        want = 0
        if conn.connecting:
            want = selectors.EVENT_WRITE
        else:
            if not conn.eof_seen and len(conn.out) < WRITE_LOW_WATER:
                want |= selectors.EVENT_READ
            if conn.out or conn.more:
                want |= selectors.EVENT_WRITE
        if want == conn.mask:
            return
        if conn.mask == 0:
            self._sel.register(conn.sock, want, lambda mask: self._guarded(conn, self._on_event, mask))
        elif want == 0:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, want, lambda mask: self._guarded(conn, self._on_event, mask))
        conn.mask = want

    # ------------------------------------------------------------------ TLS
    def _wrap(self, conn: Connection, context: ssl.SSLContext, server_side: bool) -> None:
        """Start a handshake over memory BIOs; the client side sends its ClientHello now."""
        conn.inbio, conn.outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
        conn.deadline = conn.deadline or time.monotonic() + self.tls_handshake_timeout
        try:
            conn.tls = context.wrap_bio(conn.inbio, conn.outbio, server_side=server_side,
                                        server_hostname=None if server_side else conn.server_hostname)
        except (ssl.SSLError, ValueError) as exc:
            self._tls_failed(conn, exc)
            return
        if not server_side:
            self._tls_input(conn)

    def _start_tls(self, conn: Connection) -> None:
        """STARTTLS: the go-ahead reply is out; RFC 3207 §4.2 says the handshake starts now."""
        conn.tls_pending = False
        if conn.starttls_context is None:
            log.error("session on %s asked for TLS but no context is configured", conn.id)
            self._close(conn)
            return
        conn.deadline = time.monotonic() + self.tls_handshake_timeout
        self._wrap(conn, conn.starttls_context, conn.listener is not None)

    def _flush_bio(self, conn: Connection) -> None:
        data = conn.outbio.read()
        if data:
            conn.out += data

    def _tls_input(self, conn: Connection) -> None:
        """Advance the handshake, then hand decrypted data to the session."""
        if not conn.tls_up:
            try:
                conn.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_bio(conn)
                if conn.eof_seen:
                    self._tls_failed(conn, ConnectionResetError("EOF during TLS handshake"))
                return
            except (ssl.SSLError, OSError, ValueError) as exc:
                self._flush_bio(conn)    # the alert, best effort
                self._send(conn)
                self._tls_failed(conn, exc)
                return
            self._flush_bio(conn)
            self._tls_established(conn)
        while not conn.closed:
            try:
                chunk = conn.tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._give_eof(conn)
                break
            except ssl.SSLError as exc:
                log.info("TLS error on %s peer=%s: %s", conn.id, _fmt_addr(conn.peer), exc)
                self._close(conn)
                return
            if not chunk:
                self._give_eof(conn)
                break
            if self._accepts_input(conn):
                conn.session.receive_data(chunk)
        if conn.closed:
            return
        self._flush_bio(conn)
        if conn.eof_seen and not conn.eof_given:
            self._give_eof(conn)

    def _tls_established(self, conn: Connection) -> None:
        cipher = conn.tls.cipher()
        info = {"version": conn.tls.version(), "cipher": cipher[0] if cipher else None}
        conn.tls_up = True
        conn.tls_info = info
        conn.deadline = None
        conn.last_activity = time.monotonic()     # a completed handshake is progress
        if conn.session is None:          # implicit TLS: the session starts now
            self._open_session(conn)
        else:                             # STARTTLS, RFC 3207 §4.2
            conn.ctx.tls_active = True
            conn.ctx.tls_info = info
            conn.session.tls_started(info)

    def _tls_failed(self, conn: Connection, exc: BaseException) -> None:
        log.info("TLS handshake failed on %s listener=%s peer=%s: %s",
                 conn.id, conn.name, _fmt_addr(conn.peer), exc)
        if conn.session is None:
            self._fail(conn, exc)
        else:
            self._close(conn)

    # ------------------------------------------------------------------ deadlines
    def _deadline(self, conn: Connection) -> Optional[float]:
        """When the connection's timer must act: the connect/handshake deadline, else
        ``session.idle_timeout`` after the last activity, else CLOSE_LINGER once closed."""
        if conn.deadline is not None:
            return conn.deadline
        s = conn.session
        if s is None:
            return None
        if s.closed or conn.force_close:
            return conn.last_activity + CLOSE_LINGER
        idle = s.idle_timeout
        if not idle or idle <= 0:
            return None
        return conn.last_activity + idle

    def _arm(self, conn: Connection) -> None:
        """(Re)schedule the connection's timer if its deadline moved earlier; a later
        deadline is handled lazily when the timer fires."""
        when = self._deadline(conn)
        if when is None:
            return
        if conn.timer is not None and not conn.timer.cancelled and conn.timer_when <= when:
            return
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = self._call_at(when, lambda: self._guarded(conn, self._on_deadline))
        conn.timer_when = when

    def _on_deadline(self, conn: Connection) -> None:
        conn.timer = None
        when = self._deadline(conn)
        if when is None:
            return
        if time.monotonic() < when:
            self._arm(conn)
            return
        s = conn.session
        if s is None:
            what = "connect" if conn.connecting else "TLS handshake"
            log.info("%s timed out on %s listener=%s peer=%s", what, conn.id, conn.name, _fmt_addr(conn.peer))
            self._fail(conn, TimeoutError("%s timed out" % what))
        elif conn.deadline is not None:
            log.info("TLS handshake timed out on %s peer=%s", conn.id, _fmt_addr(conn.peer))
            self._close(conn)
        elif s.closed or conn.force_close:
            self._close(conn)
        else:                             # idle timeout, e.g. RFC 5321 §4.5.3.2.7
            conn.force_close = True
            conn.last_activity = time.monotonic()
            s.timeout()
            self._pump(conn)

    # ------------------------------------------------------------------ closing
    def _close_gently(self, conn: Connection) -> None:
        """Before closing after a final reply: send TLS close_notify (RFC 8446 §6.1), and
        read away input that already arrived, because closing a socket with unread input
        makes the kernel send a RST, and a RST can destroy our last reply (the 221 after
        a pipelined QUIT, RFC 5321 §4.1.1.10) before the peer has read it."""
        if conn.tls_up:
            try:
                conn.tls.unwrap()
            except (ssl.SSLError, ValueError):
                pass
            self._flush_bio(conn)
            try:
                conn.bytes_out += conn.sock.send(conn.out)
            except OSError:
                pass
        for _ in range(4):
            try:
                if not conn.sock.recv(READ_CHUNK):
                    return
            except OSError:
                return

    def _close(self, conn: Connection, graceful: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        s = conn.session
        if s is not None and not conn.broken and not conn.eof_given and not s.closed:
            conn.eof_given = True
            try:
                s.receive_data(b"")
            except Exception:
                log.exception("session error on %s at close", conn.id)
        if graceful:
            self._close_gently(conn)
        if conn.mask:
            self._unregister(conn.sock)
            conn.mask = 0
        if conn.timer is not None:
            conn.timer.cancel()
        conn.sock.close()
        conn.out = bytearray()
        self._conns.discard(conn)
        lst = conn.listener
        if lst is not None:
            lst.count -= 1
            ip = conn.peer[0]
            lst.per_ip[ip] -= 1
            if not lst.per_ip[ip]:
                del lst.per_ip[ip]
        conn_log.info("close %s listener=%s peer=%s duration=%.3fs in=%d out=%d",
                      conn.id, conn.name, _fmt_addr(conn.peer), time.monotonic() - conn.started,
                      conn.bytes_in, conn.bytes_out)
