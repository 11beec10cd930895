"""CPU per message (issue 14): no system call per reply that can be batched, no
logging work for disabled levels.

The write path is driven through the real ``Connection`` (protocols/loop_transport.py)
and the real ``SmtpSession`` over a fake socket that counts ``send`` calls, with
tests/test_smtp_session.py's in-memory backend answering later (as the store's
worker threads do): replies to pipelined commands (RFC 2920 §3) and the end of the
data phase with what was pipelined after it go out in one ``send`` per batch.
The loop's wake-up from worker threads costs one octet per batch of results, not
one per result.  Log lines at a disabled level build nothing.
"""

import logging
import selectors
import threading
import time
import unittest
from unittest import mock

from protocols import loop_transport
from protocols.loop import EventLoop
from protocols.loop_transport import Connection
from protocols.smtp import server as smtp_server
from protocols.smtp.server import SmtpConfig, SmtpSession
from tests.helpers import wait_for
from tests.test_smtp_session import HOST, FakeBackend

BODY = b"From: a@example.net\r\nSubject: x\r\n\r\n" + b"line of text\r\n" * 300


class FakeSocket:
    """What Connection asks of a TCP socket: recv from a script, send recorded."""

    def __init__(self):
        self.incoming = []
        self.sends = []

    def recv(self, n):
        if not self.incoming:
            raise BlockingIOError()
        data = self.incoming.pop(0)
        if len(data) > n:
            data, rest = data[:n], data[n:]
            self.incoming.insert(0, rest)
        return data

    def recv_into(self, buf):
        data = self.recv(len(buf))
        buf[:len(data)] = data
        return len(data)

    def send(self, data):
        self.sends.append(bytes(data))
        return len(data)

    def fileno(self):
        return 99

    def close(self):
        pass


class FakeSelector:
    def register(self, sock, events, data=None):
        pass

    modify = register

    def unregister(self, sock):
        pass


class FakeLoop:
    """The parts of EventLoop a Connection calls; callbacks run when the test says."""

    def __init__(self):
        self._sel = FakeSelector()
        self._conns = set()
        self.ready = []
        self.clock = time.time

    def _in_loop_thread(self):
        return True

    def call_soon(self, fn):
        self.ready.append(fn)

    call_soon_threadsafe = call_soon

    def _call_at(self, when, fn):
        return mock.Mock(cancelled=False)

    def _unregister(self, sock):
        pass

    def _run_callback(self, fn):
        fn()

    def run_ready(self):
        while self.ready:
            self.ready.pop(0)()


class FakeWire:
    """A real Connection and SmtpSession over a FakeSocket, after EHLO."""

    def __init__(self):
        self.loop, self.sock, self.backend = FakeLoop(), FakeSocket(), FakeBackend(sync=False)
        self.conn = Connection(self.loop, self.sock, "smtp",
                               lambda ctx: SmtpSession(ctx, SmtpConfig(hostname=HOST), self.backend))
        self.conn.peer, self.conn.local = ("192.0.2.10", 40000), ("192.0.2.1", 25)
        self.conn.open_session()
        self.client(b"EHLO client.example.net\r\n")

    def client(self, data):
        """The peer's octets arrive in one read; returns the sends they caused."""
        before = len(self.sock.sends)
        self.sock.incoming.append(data)
        self.conn._on_event(selectors.EVENT_READ)
        self.loop.run_ready()
        return self.sock.sends[before:]

    def store(self):
        """The backend's answer (the Deliverer's fsyncs done); returns the sends it caused."""
        before = len(self.sock.sends)
        self.backend.release()
        self.loop.run_ready()
        return self.sock.sends[before:]


class SendBatchingTest(unittest.TestCase):
    def setUp(self):
        wire = FakeWire()
        self.client, self.store = wire.client, wire.store

    def test_pipelined_commands_answered_in_one_send(self):
        sends = self.client(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
                            b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(len(sends), 1, sends)
        self.assertEqual([line[:3] for line in sends[0].split(b"\r\n")[:-1]], [b"250", b"250", b"250", b"354"])

    def test_end_of_data_and_pipelined_quit_in_one_send(self):
        self.client(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        self.assertEqual(self.client(BODY + b".\r\nQUIT\r\n"), [])     # nothing before the store's answer
        sends = self.store()
        self.assertEqual(len(sends), 1, sends)
        self.assertRegex(sends[0], rb"^250 2\.0\.0 Ok: queued as \w+\r\n221 2\.0\.0 Bye\r\n$")

    def test_end_of_data_and_next_pipelined_transaction_in_one_send(self):
        self.client(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        self.client(BODY + b".\r\nMAIL FROM:<b@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        sends = self.store()
        self.assertEqual(len(sends), 1, sends)
        self.assertEqual([line[:3] for line in sends[0].split(b"\r\n")[:-1]], [b"250", b"250", b"250", b"354"])


class ReadBufferTest(unittest.TestCase):
    """A read fills one buffer per loop thread (recv_into): recv(READ_CHUNK) made a
    64 KiB object per read, shrunk to what came, fresh heap pages each time."""

    def test_a_short_read_allocates_what_came_not_a_read_chunk(self):
        import socket
        import tracemalloc
        ours, peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        ours.setblocking(False)
        loop = FakeLoop()
        conn = Connection(loop, ours, "smtp",
                          lambda ctx: SmtpSession(ctx, SmtpConfig(hostname=HOST), FakeBackend(sync=False)))
        conn.peer, conn.local = ("192.0.2.10", 40000), ("192.0.2.1", 25)
        conn.open_session()

        def command():
            peer.sendall(b"NOOP\r\n")
            conn._on_event(selectors.EVENT_READ)
            loop.run_ready()
        command()                                   # the thread's buffer exists from here on
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        for _ in range(3):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            command()
            self.assertLess(tracemalloc.get_traced_memory()[1] - base, loop_transport.READ_CHUNK // 4)
        peer.settimeout(10)
        self.assertEqual(peer.recv(4096).count(b"250 "), 4)     # greeting, then four NOOPs answered


class WakeBatchingTest(unittest.TestCase):
    def setUp(self):
        self.loop = EventLoop()
        self.addCleanup(self.loop.close)

    def pending_wake_octets(self):
        try:
            return len(self.loop._wake_r.recv(65536))
        except BlockingIOError:
            return 0

    def test_a_burst_of_results_from_a_thread_writes_one_wake_octet(self):
        ran = []
        worker = threading.Thread(target=lambda: [self.loop.call_soon_threadsafe(lambda i=i: ran.append(i))
                                                  for i in range(100)])
        worker.start()
        worker.join(10)
        self.assertEqual(self.pending_wake_octets(), 1)
        self.loop._drain_wake(selectors.EVENT_READ)     # the loop read it: the next result wakes again
        self.loop.call_soon_threadsafe(lambda: None)
        self.assertEqual(self.pending_wake_octets(), 1)

    def test_results_from_many_threads_all_run_while_the_loop_sleeps_between_them(self):
        ran = []
        runner = threading.Thread(target=self.loop.run)
        runner.start()
        try:
            def worker():
                for i in range(300):
                    self.loop.call_soon_threadsafe(lambda: ran.append(1))
                    if i % 50 == 0:
                        time.sleep(0.01)        # let the loop drain and sleep in select again
            workers = [threading.Thread(target=worker) for _ in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            wait_for(lambda: len(ran) == 1200, "every callback to run in the loop")
        finally:
            self.loop.stop()
            runner.join(10)


class DisabledLogLevelTest(unittest.TestCase):
    def quiet(self, name):
        logger = logging.getLogger(name)
        saved = logger.level
        logger.setLevel(logging.WARNING)
        self.addCleanup(logger.setLevel, saved)

    def test_message_line_is_not_built_when_info_is_off(self):
        self.quiet("mailsrv.smtp")
        batching = FakeWire()
        with mock.patch.object(smtp_server.log, "info") as info:
            batching.client(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
            batching.client(BODY + b".\r\n")
            self.assertRegex(batching.store()[0], rb"^250 2\.0\.0 ")
        info.assert_not_called()

    def test_message_line_still_logged_at_info(self):
        batching = FakeWire()
        with self.assertLogs("mailsrv.smtp", "INFO") as logs:
            batching.client(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
            batching.client(BODY + b".\r\n")
            batching.store()
        self.assertTrue(any("rcpts=<alice@example.org>" in line and "result=250" in line for line in logs.output))

    def test_close_line_is_not_built_when_info_is_off(self):
        self.quiet("mailsrv.conn")
        batching = FakeWire()
        with mock.patch.object(loop_transport.conn_log, "info") as info:
            batching.client(b"QUIT\r\n")
        self.assertTrue(batching.conn.closed)
        info.assert_not_called()


if __name__ == "__main__":
    unittest.main()
