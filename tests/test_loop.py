"""Tests for protocols/loop.py over real loopback sockets (127.0.0.1 / ::1).

The loop runs in a background thread; tests talk to it with stdlib sockets
(and ``ssl`` clients against tests/certs).  Synchronisation is by blocking
reads with socket timeouts and by ``threading.Event``; every wait is bounded.
"""

import errno
import hashlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
import unittest

from protocols.loop import WRITE_LOW_WATER, EventLoop

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = os.path.join(HERE, "certs", "cert.pem")
KEY = os.path.join(HERE, "certs", "key.pem")
WAIT = 10.0          # generous bound for any single wait


def server_tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, KEY)
    return ctx


def client_tls_context():
    return ssl.create_default_context(cafile=CERT)


def pattern(n):
    """Deterministic output for the streaming test: 64 KB blocks of a repeating byte."""
    return bytes([65 + (n // 65536) % 26]) * 65536


class ToySession:
    """A line session in the loop's session protocol, with test hooks.

    Commands: anything else is echoed as "250 <line>"; QUIT, STARTTLS, TLS?, PEER?,
    CLOCK?, BOOM (raises), BIG <n> (streams n octets in 64 KB chunks), WAIT (the
    "backend" answers from a thread via call_soon_threadsafe + ctx.wake).  Greets with "220 toy".
    """

    def __init__(self, ctx, loop=None, idle=300.0, events=None, ignore_shutdown=False):
        self.ctx = ctx
        self.loop = loop
        self.idle_timeout = idle
        self.events = events if events is not None else []
        self.ignore_shutdown = ignore_shutdown
        self.closed = False
        self.want_tls = False
        self.busy = False
        self.buf = b""
        self.out = [b"220 toy\r\n"]
        self.big_left = 0
        self.big_sent = 0
        self.pulls = 0
        self.eof_event = None

    # session protocol
    def receive_data(self, data):
        if not data:
            self.events.append("eof")
            if self.eof_event is not None:
                self.eof_event.set()
            self.out.append(b"221 eof\r\n")
            self.closed = True
            return
        if self.want_tls:
            return                    # plaintext after the go-ahead: discarded
        self.buf += data
        while b"\n" in self.buf and not self.closed and not self.want_tls:
            line, self.buf = self.buf.split(b"\n", 1)
            self.command(line.rstrip(b"\r"))

    def command(self, line):
        if line == b"QUIT":
            self.out.append(b"221 bye\r\n")
            self.closed = True
        elif line == b"STARTTLS":
            self.out.append(b"220 go ahead\r\n")
            self.want_tls = True
            self.buf = b""
        elif line == b"TLS?":
            info = self.ctx.tls_info or {}
            self.out.append(b"250 tls=%d %s\r\n" % (self.ctx.tls_active, str(info.get("version")).encode()))
        elif line == b"PEER?":
            self.out.append(("250 %s %s\r\n" % (self.ctx.peer_ip, self.ctx.listener)).encode())
        elif line.startswith(b"IDLE "):
            self.idle_timeout = float(line[5:])
            self.out.append(b"250 idle\r\n")
        elif line == b"CLOCK?":
            self.out.append(b"250 %r\r\n" % self.ctx.clock())
        elif line == b"BOOM":
            raise RuntimeError("session bug (test)")
        elif line.startswith(b"BIG "):
            self.big_left = int(line[4:])
        elif line == b"WAIT":
            self.busy = True
            threading.Thread(target=self.worker).start()
        else:
            self.out.append(b"250 " + line + b"\r\n")

    def worker(self):
        ident = threading.get_ident()
        self.loop.call_soon_threadsafe(lambda: self.done(ident))

    def done(self, worker_ident):
        self.busy = False
        same = worker_ident == threading.get_ident()
        self.out.append(b"250 done same-thread=%d\r\n" % same)
        self.ctx.wake()

    def data_to_send(self):
        self.pulls += 1
        if self.out:
            data, self.out = b"".join(self.out), []
            return data
        if self.big_left:
            chunk = pattern(self.big_sent)[: self.big_left]
            self.big_left -= len(chunk)
            self.big_sent += len(chunk)
            if not self.big_left:
                self.out.append(b"250 big done\r\n")
            return chunk
        return b""

    def tls_started(self, info):
        self.events.append(("tls", info))
        self.want_tls = False

    def timeout(self):
        self.events.append("timeout")
        self.out.append(b"421 idle timeout\r\n")
        self.closed = True

    def shutdown(self):
        self.events.append("shutdown")
        if not self.ignore_shutdown:
            self.out.append(b"421 shutting down\r\n")
            self.closed = True


class Client:
    """A blocking line client with a timeout on every read."""

    def __init__(self, addr, family=socket.AF_INET, source=None, tls_host=None):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect(addr)
        if tls_host:
            self.sock = client_tls_context().wrap_socket(self.sock, server_hostname=tls_host)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def cmd(self, text):
        self.sock.sendall(text + b"\r\n")
        return self.line()

    def read_eof(self):
        """Read until EOF; returns what came before it."""
        data = self.buf
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def starttls(self, host="localhost"):
        self.sock = client_tls_context().wrap_socket(self.sock, server_hostname=host)

    def close(self):
        self.sock.close()


class LoopTestCase(unittest.TestCase):
    """Starts an EventLoop in a thread; tearDown stops it and releases everything."""

    def setUp(self):
        self.loop = EventLoop()
        self.thread = None
        self.sessions = []
        self.events = []
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.loop.stop()
        if self.thread is not None:
            self.thread.join(WAIT)
            self.assertFalse(self.thread.is_alive(), "loop thread did not stop")
        self.loop.close()

    def factory(self, **kw):
        def make(ctx):
            s = ToySession(ctx, self.loop, events=self.events, **kw)
            self.sessions.append(s)
            return s
        return make

    def start(self):
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def serve(self, host="127.0.0.1", **kw):
        """Listen with a ToySession factory and start the loop; returns the bound address."""
        session_kw = kw.pop("session", {})
        addr = self.loop.listen("toy", host, 0, self.factory(**session_kw), **kw)
        self.start()
        return addr

    def client(self, addr, **kw):
        c = Client(addr, **kw)
        self.clients.append(c)
        return c

    def in_loop(self, fn):
        """Run fn in the loop thread and return its result."""
        box, done = [], threading.Event()

        def call():
            box.append(fn())
            done.set()
        self.loop.call_soon_threadsafe(call)
        self.assertTrue(done.wait(WAIT))
        return box[0]


class BasicTest(LoopTestCase):
    def test_greeting_and_echo(self):
        c = self.client(self.serve())
        self.assertEqual(c.line(), b"220 toy")
        self.assertEqual(c.cmd(b"hello"), b"250 hello")
        self.assertEqual(c.cmd(b"PEER?"), b"250 127.0.0.1 toy")
        self.assertEqual(c.cmd(b"QUIT"), b"221 bye")
        self.assertEqual(c.read_eof(), b"")

    def test_pipelined_input_answered_in_order(self):
        c = self.client(self.serve())
        c.line()
        c.sock.sendall(b"one\r\ntwo\r\nthree\r\nQUIT\r\n")
        self.assertEqual([c.line() for _ in range(4)], [b"250 one", b"250 two", b"250 three", b"221 bye"])

    def test_input_one_byte_at_a_time(self):
        c = self.client(self.serve())
        c.line()
        for b in b"slow line\r\n":
            c.sock.send(bytes([b]))
        self.assertEqual(c.line(), b"250 slow line")

    def test_peer_eof_reaches_session(self):
        c = self.client(self.serve())
        c.line()
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.line(), b"221 eof")
        self.assertEqual(c.read_eof(), b"")
        self.assertIn("eof", self.events)

    def test_close_logs_one_line_with_byte_counts(self):
        addr = self.serve()
        with self.assertLogs("mailsrv.conn", logging.INFO) as cm:
            c = self.client(addr)
            c.line()
            c.cmd(b"QUIT")
            c.read_eof()
            self.in_loop(lambda: None)      # the close is logged before the next callback runs
        lines = [r for r in cm.output if "close" in r]
        self.assertEqual(len(lines), 1)
        self.assertIn("listener=toy", lines[0])
        self.assertIn("in=6 ", lines[0])
        self.assertIn("out=%d" % len(b"220 toy\r\n221 bye\r\n"), lines[0])

    def test_listen_reports_bind_failure_errno(self):
        host, port = self.loop.listen("a", "127.0.0.1", 0, self.factory())
        with self.assertRaises(OSError) as cm:
            self.loop.listen("b", "127.0.0.1", port, self.factory())
        self.assertEqual(cm.exception.errno, errno.EADDRINUSE)

    def test_ipv6_loopback(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            addr = self.loop.listen("toy6", "::1", 0, self.factory())
        except OSError as exc:
            self.skipTest("cannot bind ::1: %s" % exc)
        self.start()
        self.assertEqual(addr[0], "::1")
        c = self.client(addr, family=socket.AF_INET6)
        self.assertEqual(c.line(), b"220 toy")
        self.assertEqual(c.cmd(b"PEER?"), b"250 ::1 toy6")


class OutputTest(LoopTestCase):
    def test_large_output_streams_in_bounded_chunks(self):
        total = 20 * 1024 * 1024
        c = Client(self.serve(), source=None)
        self.clients.append(c)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.line()
        c.sock.sendall(b"BIG %d\r\n" % total)
        session = self.sessions[0]
        # loop buffer + kernel send buffer + client receive buffer, with margin
        bound = WRITE_LOW_WATER + 65536 + kernel_wmem_max() + 4 * 65536
        got = 0
        digest = hashlib.sha256()
        while got < total:
            data = c.sock.recv(min(65536, total - got))
            self.assertTrue(data, "EOF before the end of the stream")
            digest.update(data)
            got += len(data)
            self.assertLessEqual(session.big_sent - got, bound)
        expect = hashlib.sha256()
        for off in range(0, total, 65536):
            expect.update(pattern(off))
        self.assertEqual(digest.hexdigest(), expect.hexdigest())
        self.assertEqual(c.line(), b"250 big done")
        self.assertGreaterEqual(session.pulls, total // 65536)

    def test_wake_from_backend_callback(self):
        c = self.client(self.serve())
        c.line()
        self.assertEqual(c.cmd(b"WAIT"), b"250 done same-thread=0")
        self.assertEqual(c.cmd(b"after"), b"250 after")


def kernel_wmem_max():
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 8 * 1024 * 1024


class TimerTest(LoopTestCase):
    def test_shorter_idle_timeout_is_picked_up_after_each_call(self):
        c = self.client(self.serve(session={"idle": 300.0}))
        c.line()
        self.assertEqual(c.cmd(b"IDLE 0.2"), b"250 idle")
        self.assertEqual(c.line(), b"421 idle timeout")
        self.assertEqual(c.read_eof(), b"")

    def test_stop_before_run_returns_at_once(self):
        self.loop.stop()
        self.loop.run()                 # returns: the stop request is not lost
        self.start()                    # and the loop can run again afterwards
        self.assertEqual(self.in_loop(lambda: "again"), "again")

    def test_idle_timeout_fires(self):
        c = self.client(self.serve(session={"idle": 0.2}))
        c.line()
        self.assertEqual(c.line(), b"421 idle timeout")
        self.assertEqual(c.read_eof(), b"")
        self.assertIn("timeout", self.events)

    def test_activity_resets_idle_timer(self):
        c = self.client(self.serve(session={"idle": 1.5}))
        c.line()
        self.assertEqual(c.cmd(b"a"), b"250 a")
        self.assertEqual(c.line(), b"421 idle timeout")
        self.assertNotIn("eof", self.events)

    def test_call_later_and_cancel(self):
        self.start()
        fired, done = [], threading.Event()

        def setup():
            h = self.loop.call_later(0.05, lambda: fired.append("cancelled"))
            self.loop.call_later(0.1, lambda: (fired.append("late"), done.set()))
            self.loop.call_later(0.01, lambda: fired.append("early"))
            h.cancel()
        self.loop.call_soon_threadsafe(setup)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(fired, ["early", "late"])

    def test_cancelled_timers_are_compacted_and_live_ones_still_fire(self):
        fired = []
        handles = [self.loop.call_later(60 + i, lambda: fired.append("never")) for i in range(3000)]
        for h in handles[:2500]:
            h.cancel()
        self.loop.call_later(0, lambda: (fired.append("now"), self.loop.stop()))
        self.assertLessEqual(len(self.loop._timers), 501)
        self.loop.run()                 # in this thread; the timer stops it
        self.assertEqual(fired, ["now"])

    def test_call_soon_threadsafe_runs_in_loop_thread(self):
        self.start()
        seen, done = [], threading.Event()

        def worker():
            self.loop.call_soon_threadsafe(lambda: (seen.append(threading.get_ident()), done.set()))
        t = threading.Thread(target=worker)
        t.start()
        t.join(WAIT)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(seen, [self.thread.ident])

    def test_run_in_thread_hands_result_or_exception_to_loop_thread(self):
        self.start()
        got, done = [], threading.Event()

        def callback(result):
            got.append((result, threading.get_ident()))
            if len(got) == 2:
                done.set()
        self.loop.call_soon_threadsafe(lambda: self.loop.run_in_thread(threading.get_ident, callback))
        self.loop.call_soon_threadsafe(lambda: self.loop.run_in_thread(lambda: 1 / 0, callback))
        self.assertTrue(done.wait(WAIT))
        results = dict((type(r).__name__, (r, t)) for r, t in got)
        worker_ident, loop_ident = results["int"]
        self.assertNotEqual(worker_ident, self.thread.ident)      # fn ran in a worker
        self.assertEqual(loop_ident, self.thread.ident)           # callback in the loop
        self.assertIsInstance(results["ZeroDivisionError"][0], ZeroDivisionError)

    def test_time_is_the_injected_wall_clock(self):
        self.loop.close()
        self.loop = EventLoop(clock=lambda: 1234.5)
        self.assertEqual(self.loop.time(), 1234.5)
        c = self.client(self.serve())
        c.line()
        self.assertEqual(c.cmd(b"CLOCK?"), b"250 1234.5")

    def test_callback_exception_is_logged_and_loop_survives(self):
        self.start()
        with self.assertLogs("mailsrv.loop", logging.ERROR):
            self.loop.call_soon_threadsafe(lambda: 1 / 0)
            self.assertEqual(self.in_loop(lambda: "alive"), "alive")


class AcceptTest(LoopTestCase):
    def accepted_in_one_round(self, **kw):
        """Three connections wait in the backlog; how many does one round of the
        loop (select, its callbacks, then the stop asked for before) accept?"""
        addr = self.loop.listen("toy", "127.0.0.1", 0, self.factory(), **kw)
        for _ in range(3):
            self.addCleanup(socket.create_connection(addr, timeout=WAIT).close)   # in the backlog once it returns
        self.loop.call_soon(self.loop.stop)
        self.loop.run()
        return len(self.sessions)

    def test_a_socket_of_its_own_is_emptied_at_once(self):
        self.assertEqual(self.accepted_in_one_round(), 3)

    def test_a_socket_sibling_processes_share_gives_one_connection_per_event(self):
        # the others are left to a sibling, or to the next round of this loop
        self.assertEqual(self.accepted_in_one_round(shared=True), 1)
        self.loop.call_soon(self.loop.stop)
        self.loop.run()
        self.assertEqual(len(self.sessions), 2)


class LimitTest(LoopTestCase):
    def test_per_ip_limit_sends_busy_reply(self):
        addr = self.serve(max_per_ip=2, max_connections=10)
        a, b = self.client(addr), self.client(addr)
        self.assertEqual(a.line(), b"220 toy")
        self.assertEqual(b.line(), b"220 toy")
        c = self.client(addr)
        self.assertEqual(c.line(), b"421 4.7.0 Too many connections")
        self.assertEqual(c.read_eof(), b"")
        other = self.client(addr, source="127.0.0.2")      # another address still gets in
        self.assertEqual(other.line(), b"220 toy")
        self.assertEqual(len(self.sessions), 3)

    def test_total_limit_and_slot_released_on_close(self):
        addr = self.serve(max_connections=2, busy_reply=b"421 busy\r\n")
        a, b = self.client(addr), self.client(addr)
        a.line(), b.line()
        c = self.client(addr)
        self.assertEqual(c.line(), b"421 busy")
        a.cmd(b"QUIT")
        a.read_eof()
        d = self.client(addr)
        self.assertEqual(d.line(), b"220 toy")

    def test_many_idle_connections_do_not_delay_a_new_greeting(self):
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError):
            soft = 1024
        n = max(10, min(1000, (soft - 100) // 2))
        addr = self.serve(max_connections=n + 10, max_per_ip=n + 10)
        idle = []
        for _ in range(n):
            c = self.client(addr)
            idle.append(c)
        for c in idle:
            self.assertEqual(c.line(), b"220 toy")
        idle[0].sock.send(b"E")                           # a trickling client, mid-line
        fresh = self.client(addr)
        self.assertEqual(fresh.line(), b"220 toy")
        self.assertEqual(fresh.cmd(b"hi"), b"250 hi")
        self.assertEqual(self.in_loop(lambda: self.loop.connection_count), n + 1)


class TlsTest(LoopTestCase):
    def test_large_output_over_tls(self):
        total = 3 * 1024 * 1024 + 17
        c = self.client(self.serve(ssl_context=server_tls_context()), tls_host="localhost")
        c.line()
        c.sock.sendall(b"BIG %d\r\n" % total)
        got = 0
        while got < total:
            data = c.sock.recv(min(65536, total - got))
            self.assertTrue(data)
            got += len(data)
        self.assertEqual(c.line(), b"250 big done")
        self.assertEqual(c.cmd(b"QUIT"), b"221 bye")

    def test_implicit_tls(self):
        addr = self.serve(ssl_context=server_tls_context())
        c = self.client(addr, tls_host="localhost")
        self.assertEqual(c.line(), b"220 toy")
        self.assertTrue(c.cmd(b"TLS?").startswith(b"250 tls=1 TLSv1"))
        self.assertEqual(c.cmd(b"QUIT"), b"221 bye")

    def test_starttls(self):
        addr = self.serve(starttls_context=server_tls_context())
        c = self.client(addr)
        c.line()
        self.assertEqual(c.cmd(b"TLS?"), b"250 tls=0 None")
        self.assertEqual(c.cmd(b"STARTTLS"), b"220 go ahead")
        c.starttls()
        self.assertTrue(c.cmd(b"TLS?").startswith(b"250 tls=1 TLSv1"))
        self.assertEqual(self.events[0][0], "tls")
        self.assertEqual(set(self.events[0][1]), {"version", "cipher"})
        self.assertTrue(self.sessions[0].ctx.tls_available)

    def test_want_tls_without_a_context_closes_with_a_log_line(self):
        addr = self.serve()                     # no starttls_context
        c = self.client(addr)
        c.line()
        self.assertFalse(self.sessions[0].ctx.tls_available)
        with self.assertLogs("mailsrv.loop", logging.ERROR):
            self.assertEqual(c.cmd(b"STARTTLS"), b"220 go ahead")
            self.assertEqual(c.read_eof(), b"")

    def test_silent_tls_client_does_not_delay_others(self):
        tls_addr = self.loop.listen("tls", "127.0.0.1", 0, self.factory(), ssl_context=server_tls_context())
        plain_addr = self.serve()
        silent = socket.create_connection(tls_addr, timeout=WAIT)      # opens TLS, sends nothing
        self.addCleanup(silent.close)
        half = socket.create_connection(tls_addr, timeout=WAIT)        # sends half a ClientHello
        self.addCleanup(half.close)
        half.send(b"\x16\x03\x01\x02\x00\x01")
        self.assertEqual(self.client(plain_addr).line(), b"220 toy")
        self.assertEqual(self.client(tls_addr, tls_host="localhost").line(), b"220 toy")

    def test_handshake_timeout_and_garbage_close_quietly(self):
        self.loop.tls_handshake_timeout = 0.2
        addr = self.serve(ssl_context=server_tls_context())
        with self.assertLogs("mailsrv.loop", logging.INFO) as cm:
            silent = socket.create_connection(addr, timeout=WAIT)
            self.addCleanup(silent.close)
            self.assertEqual(silent.recv(100), b"")                    # closed by the timer
            garbage = socket.create_connection(addr, timeout=WAIT)
            self.addCleanup(garbage.close)
            garbage.sendall(b"EHLO not tls\r\n")
            self.assertNotIn(b"220", read_all(garbage))                # closed without a session
        self.assertTrue(any("timed out" in line for line in cm.output))
        self.assertTrue(any("handshake failed" in line for line in cm.output))
        self.assertEqual(self.sessions, [])
        self.assertEqual(self.client(addr, tls_host="localhost").line(), b"220 toy")


def read_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class BackpressureTest(LoopTestCase):
    def test_reading_pauses_while_output_is_backed_up(self):
        import selectors
        c = Client(self.serve())
        self.clients.append(c)
        c.line()
        c.sock.sendall(b"BIG %d\r\n" % (64 * 1024 * 1024))     # and never read it

        def state():
            conns = list(self.loop._conns)
            return [(len(x.out), x.mask) for x in conns]
        deadline = threading.Event()
        timer = threading.Timer(WAIT, deadline.set)
        timer.start()
        self.addCleanup(timer.cancel)
        while not deadline.is_set():                # poll the loop itself, no sleeping
            (out, mask), = self.in_loop(state)
            if out >= WRITE_LOW_WATER:
                break
        self.assertGreaterEqual(out, WRITE_LOW_WATER)
        self.assertFalse(mask & selectors.EVENT_READ, "still reading with a full output buffer")
        self.assertTrue(mask & selectors.EVENT_WRITE)
        self.assertLess(self.sessions[0].big_sent, 64 * 1024 * 1024)


class LifecycleTest(LoopTestCase):
    def test_wake_after_close_is_harmless(self):
        c = self.client(self.serve())
        c.line()
        session = self.sessions[0]
        session.eof_event = threading.Event()
        c.close()
        self.assertTrue(session.eof_event.wait(WAIT))
        self.in_loop(session.ctx.wake)
        self.in_loop(session.ctx.wake)
        session.ctx.wake()                          # from a foreign thread too
        self.assertEqual(self.in_loop(lambda: self.loop.connection_count), 0)

    def test_session_closing_in_greeting_flushes_then_closes(self):
        def factory(ctx):
            s = ToySession(ctx)
            s.out = [b"554 no service\r\n"]
            s.closed = True
            return s
        addr = self.loop.listen("toy", "127.0.0.1", 0, factory)
        self.start()
        c = self.client(addr)
        self.assertEqual(c.read_eof(), b"554 no service\r\n")

    def test_factory_exception_is_logged_and_loop_survives(self):
        calls = []

        def factory(ctx):
            calls.append(ctx)
            if len(calls) == 1:
                raise ValueError("factory bug (test)")
            return ToySession(ctx)
        addr = self.loop.listen("toy", "127.0.0.1", 0, factory)
        self.start()
        with self.assertLogs("mailsrv.loop", logging.ERROR):
            self.assertEqual(self.client(addr).read_eof(), b"")
        self.assertEqual(self.client(addr).line(), b"220 toy")


    def test_session_exception_closes_only_that_connection(self):
        addr = self.serve()
        good, bad = self.client(addr), self.client(addr)
        good.line(), bad.line()
        with self.assertLogs("mailsrv.loop", logging.ERROR) as cm:
            bad.sock.sendall(b"BOOM\r\n")
            self.assertEqual(bad.read_eof(), b"")
        self.assertIn("RuntimeError: session bug (test)", "\n".join(cm.output))
        self.assertEqual(good.cmd(b"still here"), b"250 still here")

    def test_begin_shutdown_calls_shutdown_and_run_returns(self):
        addr = self.serve()
        c = self.client(addr)
        c.line()
        self.loop.begin_shutdown(5.0)          # from another thread: handed to the loop
        self.assertEqual(c.line(), b"421 shutting down")
        self.assertEqual(c.read_eof(), b"")
        self.thread.join(WAIT)
        self.assertFalse(self.thread.is_alive())
        self.assertIn("shutdown", self.events)
        with self.assertRaises(OSError):       # the listener is closed
            socket.create_connection(addr, timeout=WAIT)

    def test_shutdown_grace_closes_stragglers(self):
        addr = self.serve(session={"ignore_shutdown": True})
        c = self.client(addr)
        c.line()
        self.loop.begin_shutdown(0.2)
        self.assertEqual(c.read_eof(), b"")
        self.thread.join(WAIT)
        self.assertFalse(self.thread.is_alive())
        self.assertEqual(self.events, ["shutdown", "eof"])


class ClientSession:
    """A toy client: greeting → (STARTTLS →) TLS? → QUIT, recording the replies."""

    def __init__(self, ctx, starttls, result, finished):
        self.ctx = ctx
        self.starttls = starttls
        self.result = result
        self.finished = finished
        self.closed = False
        self.want_tls = False
        self.idle_timeout = WAIT
        self.buf = b""
        self.out = b""

    def receive_data(self, data):
        if not data:
            self.result.append("eof")
            self.closed = True
            self.finished.set()
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.reply(line.rstrip(b"\r"))

    def reply(self, line):
        self.result.append(line)
        if line == b"220 toy":
            self.out += b"STARTTLS\r\n" if self.starttls else b"TLS?\r\n"
        elif line == b"220 go ahead":
            self.want_tls = True
        elif line.startswith(b"250 tls"):
            self.out += b"QUIT\r\n"
        elif line.startswith(b"221"):
            self.closed = True
            self.finished.set()

    def tls_started(self, info):
        self.want_tls = False
        self.result.append(("tls", self.ctx.tls_active))
        self.out += b"TLS?\r\n"

    def data_to_send(self):
        data, self.out = self.out, b""
        return data

    def timeout(self):
        self.closed = True

    def shutdown(self):
        self.closed = True


class ConnectTest(LoopTestCase):
    def run_client(self, addr, **kw):
        result, finished, errors = [], threading.Event(), []
        starttls = kw.pop("starttls", False)

        def go():
            self.loop.connect(addr[0], addr[1], lambda ctx: ClientSession(ctx, starttls, result, finished),
                              WAIT, lambda exc: (errors.append(exc), finished.set()), **kw)
        self.loop.call_soon_threadsafe(go)
        self.assertTrue(finished.wait(WAIT))
        return result, errors

    def test_connect_plain(self):
        result, errors = self.run_client(self.serve())
        self.assertEqual(errors, [])
        self.assertEqual(result, [b"220 toy", b"250 tls=0 None", b"221 bye"])

    def test_connect_starttls(self):
        addr = self.serve(starttls_context=server_tls_context())
        result, errors = self.run_client(addr, starttls=True, ssl_context=client_tls_context(),
                                         server_hostname="localhost")
        self.assertEqual(errors, [])
        self.assertEqual(result[:3], [b"220 toy", b"220 go ahead", ("tls", True)])
        self.assertTrue(result[3].startswith(b"250 tls=1 TLSv1"))

    def test_connect_implicit_tls(self):
        addr = self.serve(ssl_context=server_tls_context())
        result, errors = self.run_client(addr, ssl_context=client_tls_context(),
                                         server_hostname="localhost", implicit_tls=True)
        self.assertEqual(errors, [])
        self.assertEqual(result[0], b"220 toy")
        self.assertTrue(result[1].startswith(b"250 tls=1 TLSv1"))

    def test_connect_implicit_tls_bad_certificate_reports_error(self):
        addr = self.serve(ssl_context=server_tls_context())
        result, errors = self.run_client(addr, ssl_context=ssl.create_default_context(),
                                         server_hostname="localhost", implicit_tls=True)
        self.assertEqual(result, [])
        self.assertIsInstance(errors[0], ssl.SSLError)

    def test_connect_implicit_tls_to_silent_server_times_out(self):
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)                       # completes TCP, never answers TLS
        self.start()
        errors, done = [], threading.Event()
        self.loop.call_soon_threadsafe(lambda: self.loop.connect(
            "127.0.0.1", silent.getsockname()[1], lambda ctx: self.fail("no session expected"), 0.3,
            lambda exc: (errors.append(exc), done.set()), ssl_context=client_tls_context(),
            server_hostname="localhost", implicit_tls=True))
        self.assertTrue(done.wait(WAIT))
        self.assertIsInstance(errors[0], TimeoutError)

    def test_connect_refused_reports_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()                              # nothing listens there now
        self.start()
        result, errors = self.run_client(("127.0.0.1", port))
        self.assertEqual(result, [])
        self.assertIsInstance(errors[0], ConnectionRefusedError)


class DatagramTest(LoopTestCase):
    def test_round_trip(self):
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(WAIT)
        got, done = [], threading.Event()
        self.start()
        dg = self.in_loop(lambda: self.loop.open_datagram(
            socket.AF_INET, lambda data, addr: (got.append((data, addr)), done.set())))
        self.assertTrue(self.in_loop(lambda: dg.sendto(b"ping", peer.getsockname())))
        data, addr = peer.recvfrom(100)
        self.assertEqual(data, b"ping")
        peer.sendto(b"pong", addr)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(got, [(b"pong", peer.getsockname())])
        self.in_loop(dg.close)
        self.assertFalse(self.in_loop(lambda: dg.sendto(b"late", peer.getsockname())))
        self.assertEqual(self.loop._datagrams, set())

    def test_round_trip_ipv6(self):
        peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        try:
            peer.bind(("::1", 0))
        except OSError as exc:
            self.skipTest("no ::1: %s" % exc)
        peer.settimeout(WAIT)
        got, done = [], threading.Event()
        self.start()
        dg = self.in_loop(lambda: self.loop.open_datagram(
            EventLoop.AF_INET6, lambda data, addr: (got.append(data), done.set())))
        self.assertTrue(self.in_loop(lambda: dg.sendto(b"ping6", peer.getsockname()[:2])))
        data, addr = peer.recvfrom(100)
        peer.sendto(data + b"!", addr)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(got, [b"ping6!"])

    def test_family_constants_published(self):
        self.assertEqual(EventLoop.AF_INET, socket.AF_INET)
        self.assertEqual(EventLoop.AF_INET6, socket.AF_INET6)


if __name__ == "__main__":
    unittest.main()


class SignalWakeTest(unittest.TestCase):
    """A process-directed signal may be taken by any thread that does not block
    it; CPython runs the handler in the main thread, which sleeps in select()
    until something wakes it. ``wake_on_signals`` makes the signal that thing."""

    def test_a_signal_taken_by_another_thread_wakes_the_loop_at_once(self):
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signal handlers are set in the main thread only")
        if "poll" not in _read("/proc/self/task/%d/wchan" % threading.get_native_id(), probe=True):
            self.skipTest("needs Linux's /proc/PID/task/TID/wchan to see the loop sleeping")
        loop, events = EventLoop(), []

        def on_usr1(_signum, _frame):
            events.append("signal")
            loop.stop()
        old = signal.signal(signal.SIGUSR1, on_usr1)
        try:
            loop.wake_on_signals()
            # the failure mode: the loop sleeps until this timer, and both happen
            loop.call_later(5.0, lambda: (events.append("timer"), loop.stop()))
            main = threading.get_native_id()

            def send():     # once the loop's thread sleeps in the selector, to this thread, not to it
                wchan = "/proc/self/task/%d/wchan" % main
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and "poll" not in _read(wchan):
                    pass
                signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            other = threading.Thread(target=send)
            loop.call_soon(other.start)
            loop.run()
            other.join(5)
        finally:
            signal.signal(signal.SIGUSR1, old)
            loop.close()
        self.assertEqual(events, ["signal"])
        self.assertEqual(signal.set_wakeup_fd(-1), -1)      # close() gave the wakeup fd back


def _read(path, probe=False):
    """A /proc file's text ("" when unreadable); ``probe``: "poll" if it can be read
    at all (the caller only asks whether wchan is there)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    return "poll" if probe else text
