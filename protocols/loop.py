"""The event loop: selector, timers, worker threads, the hashing lane, listeners.

The loop modules are the only ones in protocols/ that touch sockets, TLS,
threads and the clock (tests/test_layering.py lists them): this one
(``EventLoop``: selector, timers, ``call_soon_threadsafe``, worker threads,
listeners, ``connect``, UDP endpoints, graceful shutdown; ``Lane``, the hashing
lane), protocols/loop_transport.py (``Connection``: one TCP connection and the
sans-I/O session it drives; ``Datagram``) and protocols/loop_tls.py (TLS over
``ssl.MemoryBIO``, mixed into ``Connection``), among others.

It drives any sans-I/O session that follows the session protocol of
``protocols/base.py`` (``receive_data``, ``data_to_send``, ``closed``,
``want_tls``, ``tls_started``, ``idle_timeout``, ``timeout``, ``shutdown``),
server side (``listen``) and client side (``connect``).

Design, after CPython's selectors/asyncio transports:

* one thread, ``selectors.DefaultSelector``, non-blocking sockets; a heapq of
  timers for ``call_later`` and per-connection deadlines;
* ``call_soon_threadsafe`` through a socketpair, so worker threads hand results
  back (``run_in_thread(fn, callback)``: a small pool; ``Lane``: a dedicated,
  bounded, fair one for scrypt), and signals wake it (``wake_on_signals``).

Besides ``listen``/``connect``/``call_later``/``run``: ``time()`` (the injected
clock), ``run_in_thread``, ``AF_INET``/``AF_INET6`` for ``open_datagram``
callers, ``connect(..., implicit_tls=False)``, ``close()``.  Constructing a
loop changes nothing in the process (protocols/supervisor.py ``tune_process`` is the serve path's).

Thread-safe: ``call_soon_threadsafe``, ``stop``, ``begin_shutdown``; the rest is
for the loop thread (or before ``run``), where sessions and backends run.

Left out: connection-rate limiting, PROXY protocol, TCP_FASTOPEN; ``connect``
resolves names with a blocking ``getaddrinfo`` (the SMTP client passes IPs).
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
import signal
import socket
import ssl
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from .base import SessionContext
from .loop_connlimits import LocalCounts
from .loop_tls import TLS_HANDSHAKE_TIMEOUT
from .loop_transport import READ_CHUNK, WRITE_LOW_WATER, Connection, Datagram, fmt_addr  # noqa: F401 (re-exported)

__all__ = ["EventLoop", "Lane", "TimerHandle", "Connection", "Datagram", "machine_name_lookups",
           "READ_CHUNK", "WRITE_LOW_WATER", "TLS_HANDSHAKE_TIMEOUT"]

log = logging.getLogger("mailsrv.loop")
conn_log = logging.getLogger("mailsrv.conn")

ACCEPT_BATCH = 64               # accept() calls per readiness event of a listener (1 if shared: ``listen``)
LISTEN_BACKLOG = 1024           # the kernel caps it at net.core.somaxconn
ACCEPT_PAUSE = 0.1              # seconds to stop accepting when out of file descriptors
TIMER_COMPACT_AT = 1024         # rebuild the timer heap when this many cancelled entries linger
WORKER_THREADS = 8              # run_in_thread pool: fsync-heavy store calls (scrypt has its Lane)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on (host, port), not blocking; OSError (EADDRINUSE, EACCES...)."""
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
    return sock


def machine_name_lookups() -> Tuple[Callable[[], str], Callable[[], str]]:
    """(getfqdn, gethostname): how the configuration asks this machine its names
    (protocols/hostnames.py chooses among them; tests pass their own)."""
    return socket.getfqdn, socket.gethostname


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
    def __init__(self, name, sock, factory, ssl_context, starttls_context, counts, busy_reply):
        self.name = name
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.starttls_context = starttls_context
        self.counts = counts            # admit(ip) / release(ip): protocols/loop_connlimits.py
        self.busy_reply = busy_reply
        self.own_certificate = False
        self.accept_batch = ACCEPT_BATCH
        self.closed = False


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
        self._wake_pending = False          # a wake octet is written and not yet read
        self._signal_wake = False           # wake_on_signals set the wakeup fd
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)

    # ------------------------------------------------------------------ callbacks, timers
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread at the next iteration (loop thread only)."""
        self._ready.append(fn)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Like ``call_soon`` but callable from any thread; wakes the selector.
        One wake octet until the loop has read it: a batch of results (the
        Deliverer's group commit) costs one system call, not one each."""
        self._ready.append(fn)
        if not self._wake_pending:
            self._wake_pending = True
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

    def wake_on_signals(self) -> None:
        """Main thread: a signal another thread takes wakes ``run`` (its handler runs now)."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._signal_wake = True

    def _write_wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full: a wake-up is already pending; or loop closed
            pass

    def _drain_wake(self, mask: int) -> None:
        """Read the wake octets (one recv unless it came back full), then let the
        next ``call_soon_threadsafe`` write again.  Cleared after the read: a
        callback queued meanwhile without an octet is run by this pass of ``run``,
        which takes the ready callbacks after the selector's ones."""
        try:
            while len(self._wake_r.recv(4096)) == 4096:
                pass
        except OSError:
            pass
        self._wake_pending = False

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
                conn.fail(ConnectionAbortedError("server shutting down"))
            else:
                conn.guarded(conn.shutdown)
        self.call_later(grace, self._close_all)
        self._write_wake()


    def _close_all(self) -> None:
        for conn in list(self._conns):
            conn.close()

    def close(self, wait: bool = False) -> None:
        """Release everything (after ``run`` returned): listeners, connections, datagrams;
        ``wait``: also let the worker jobs already running end (their answers are dropped),
        for a caller about to remove the files they write."""
        for lst in list(self._listeners):
            self._close_listener(lst)
        self._close_all()
        for dg in list(self._datagrams):
            dg.close()
        if self._workers is not None:
            self._workers.shutdown(wait=wait)
        self._sel.close()
        if self._signal_wake and threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)        # before the socket's number can be reused
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
               busy_reply: bytes = b"421 4.7.0 Too many connections\r\n",
               own_certificate: bool = False, sock: Optional[socket.socket] = None, counts=None,
               shared: bool = False) -> Tuple[str, int]:
        """Listen on (host, port); port 0 picks a free port.  Returns the bound address.
        ``sock``: one bound there already (a supervisor's: protocols/supervisor.py);
        ``counts``: a worker's counts in its supervisor's SharedTable (protocols/loop_connlimits.py;
        default: ``max_connections`` and ``max_per_ip`` counted in this process);
        ``shared``: sibling processes accept on ``sock`` too, so each readiness event
        takes one connection, not ``ACCEPT_BATCH`` (nginx's ``multi_accept off``):
        a burst of connections is spread over the workers instead of going to
        whichever woke first, and the busier one leaves the next to the idler.

        ``ssl_context`` makes it an implicit-TLS listener (RFC 8314 §3.3); with
        ``starttls_context`` sessions see ``ctx.tls_available``.  Over
        ``max_connections`` or ``max_per_ip`` a connection gets ``busy_reply`` (RFC 5321
        §3.8: 421 when the service is not available; not sent on implicit-TLS
        listeners, where plaintext would be noise) and is closed without a session.
        Raises OSError with its errno (EADDRINUSE, EACCES) when binding fails.
        ``own_certificate``: ``set_tls_context`` leaves this listener's context
        alone (ACME's TLS-ALPN-01 responder has certificates of its own).
        """
        sock = sock if sock is not None else listening_socket(host, port)
        counts = counts if counts is not None else LocalCounts(max_connections, max_per_ip)
        lst = _Listener(name, sock, factory, ssl_context, starttls_context, counts, busy_reply)
        lst.own_certificate = own_certificate
        lst.accept_batch = 1 if shared else ACCEPT_BATCH
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
            if lst.own_certificate:
                continue
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
        for _ in range(lst.accept_batch):
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
        if not lst.counts.admit(addr[0]):
            conn_log.info("busy listener=%s peer=%s: connection limit reached", lst.name, fmt_addr(addr))
            if lst.ssl_context is None:
                try:
                    sock.send(lst.busy_reply)
                except OSError:
                    pass
            sock.close()
            return
        conn = Connection(self, sock, lst.name, lst.factory, lst)
        conn.starttls_context = lst.starttls_context
        conn.peer = tuple(addr[:2])
        self._conns.add(conn)
        try:
            conn.local = tuple(sock.getsockname()[:2])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            return
        if lst.ssl_context is not None:
            conn.implicit_tls = True
            conn.guarded(conn.wrap, lst.ssl_context, True)
            conn.guarded(conn.settle)
        else:
            conn.guarded(conn.open_session)

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
        conn.update_events()
        conn.arm()
        return conn


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
