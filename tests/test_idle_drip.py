"""Issue 7 item 7: a slow drip must not defeat the idle timeout.

The idle clock restarts only when a complete record (command line, line of
message content) has arrived, or output was sent (protocols/loop.py,
``progress`` in protocols/base.py).  Clients here drip one octet at a time
from several 127.0.0.x addresses and are closed about one timeout after
their last complete line, while a client that completes its commands slowly
(each within the timeout, all together well beyond it) keeps its session.
"""

import dataclasses
import select
import socket
import threading
import time
import unittest

from tests.helpers import ServerTestCase

TIMEOUT = 1.0                 # the idle timeout under test (seconds)
DRIP = 0.25                   # one octet every DRIP seconds: 4 reads per timeout
LIMIT = 6.0                   # a drip connection still open after this never gets closed
SOURCES = ["127.0.0.%d" % i for i in range(2, 7)]
PER_SOURCE = 3


class _Conn:
    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.socket()
        self.sock.settimeout(10)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def cmd(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        return self.line()

    def drip_until_closed(self, octet: bytes = b"x") -> float:
        """Send one octet every DRIP seconds, never a line end; seconds until the
        server closed the connection, or LIMIT if it never did."""
        start = time.monotonic()
        while time.monotonic() - start < LIMIT:
            try:
                self.sock.send(octet)
            except OSError:
                return time.monotonic() - start
            ready, _, _ = select.select([self.sock], [], [], DRIP)
            if ready:
                try:
                    while self.sock.recv(4096):      # a 421 first, then EOF
                        pass
                except OSError:
                    pass
                return time.monotonic() - start
        return LIMIT

    def close(self):
        self.sock.close()


class DripTest(ServerTestCase):
    tls = False
    extra_config = {"smtp_idle_timeout": str(TIMEOUT), "pop3_idle_timeout": str(TIMEOUT)}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        backend = cls.server.backend
        made = backend.smtp_config

        def short_data(listener):       # SMTP's DATA timeout is not a configuration key
            return dataclasses.replace(made(listener), data_timeout=TIMEOUT)
        backend.smtp_config = short_data

    def _run(self, port, prepare, normal):
        """Drippers from SOURCES (after ``prepare(conn)``) alongside ``normal(port)``."""
        results, errors = [], []

        def dripper(source):
            try:
                c = _Conn(port, source)
                try:
                    prepare(c)
                    results.append(c.drip_until_closed())
                finally:
                    c.close()
            except Exception as exc:       # reported by the assertions below
                errors.append(exc)
        threads = [threading.Thread(target=dripper, args=(src,)) for src in SOURCES for _ in range(PER_SOURCE)]
        for t in threads:
            t.start()
        normal(port)                       # in this thread, meanwhile
        for t in threads:
            t.join(LIMIT + 20)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), len(threads))
        # closed about one timeout after the last complete line (slack for a loaded machine)
        self.assertLess(max(results), TIMEOUT * 3, results)

    def _slow_but_complete(self, c, commands, expect):
        """One complete command every 0.6 TIMEOUT, for about 3.5 timeouts in all."""
        for _ in range(6):
            time.sleep(TIMEOUT * 0.6)       # the slow client's think time, not synchronisation
            self.assertTrue(c.cmd(commands).startswith(expect))

    def test_smtp_command_drip_is_closed_slow_commands_stay(self):
        def prepare(c):
            c.line()                         # greeting
            line = c.cmd(b"EHLO drip.test")
            while line.startswith(b"250-"):
                line = c.line()
            self.assertTrue(line.startswith(b"250 "))

        def normal(port):
            c = _Conn(port, "127.0.0.7")
            try:
                c.line()
                self._slow_but_complete(c, b"NOOP", b"250")
                self.assertTrue(c.cmd(b"QUIT").startswith(b"221"))
            finally:
                c.close()
        self._run(self.ports["smtp"], prepare, normal)

    def test_smtp_data_drip_is_closed_slow_lines_stay(self):
        def start_data(c, source):
            c.line()
            for cmd, code in ((b"HELO %s" % source.encode(), b"250"), (b"MAIL FROM:<x@elsewhere.test>", b"250"),
                              (b"RCPT TO:<bob@example.test>", b"250"), (b"DATA", b"354")):
                self.assertTrue(c.cmd(cmd).startswith(code), cmd)

        def normal(port):
            c = _Conn(port, "127.0.0.7")
            try:
                start_data(c, "slow.test")
                c.sock.sendall(b"Subject: slow\r\n\r\n")
                for i in range(6):
                    time.sleep(TIMEOUT * 0.6)
                    c.sock.sendall(b"line %d\r\n" % i)
                self.assertTrue(c.cmd(b".").startswith(b"250"))
            finally:
                c.close()
        self._run(self.ports["smtp"], lambda c: start_data(c, "drip.test"), normal)

    def test_pop3_drip_is_closed_slow_commands_stay(self):
        def normal(port):
            c = _Conn(port, "127.0.0.7")
            try:
                c.line()
                self.assertTrue(c.cmd(b"USER alice@example.test").startswith(b"+OK"))
                self.assertTrue(c.cmd(b"PASS alice-secret").startswith(b"+OK"))
                self._slow_but_complete(c, b"NOOP", b"+OK")
                self.assertTrue(c.cmd(b"QUIT").startswith(b"+OK"))
            finally:
                c.close()
        self._run(self.ports["pop3"], lambda c: c.line(), normal)


class ProgressCounterTest(unittest.TestCase):
    def test_line_reader_counts_line_ends_fed_whoever_consumes_them(self):
        from protocols.base import LineReader
        r = LineReader(100)
        for octet in b"NOOP":
            r.feed(bytes([octet]))
        self.assertEqual(r.lines, 0)                 # a drip without a line end: no progress
        r.feed(b"\r\nRSET\r\nDA")
        self.assertEqual(r.lines, 2)
        r.clear()                                    # STARTTLS/STLS discard input, not the count
        self.assertEqual(r.lines, 2)
        r.feed(b"x" * 300 + b"\n")                   # an over-long line is a record too
        self.assertEqual(r.lines, 3)


if __name__ == "__main__":
    unittest.main()
