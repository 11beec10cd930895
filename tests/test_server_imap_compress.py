"""COMPRESS=DEFLATE (RFC 4978) through the whole server on loopback.

imaplib has no COMPRESS, so ``DeflateClient`` below is a tiny IMAP client on
a socket and zlib (raw deflate both ways, RFC 4978 §4).  Over plain IMAP and
STARTTLS (compression above TLS, RFC 4978 §3); pipelined commands answered
without the client sending more (each batch sync-flushed); the compressed
stream sent one byte per segment; COMPRESS twice; UNAUTHENTICATE under
compression.  The sans-I/O tests are tests/test_imap_compress.py.
"""

import re
import smtplib
import socket
import ssl
import zlib

from tests.helpers import ServerTestCase, client_tls

BOB, BOB_PW = "bob@example.test", "bob-secret"
WAIT = 10.0


class DeflateClient:
    """Just enough IMAP for the tests and tests/bench_imap_compress.py."""

    def __init__(self, host: str, port: int, starttls: bool = False, timeout: float = WAIT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""                 # plain (inflated) octets not yet consumed
        self.deflate = self.inflate = None
        self.wire_in = self.wire_out = 0
        self.greeting = self._line()
        if starttls:
            self.command(b"S STARTTLS")
            self.sock = client_tls().wrap_socket(self.sock)

    # -- the wire -----------------------------------------------------------

    def send(self, text: bytes) -> None:
        if self.deflate is not None:
            text = self.deflate.compress(text) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.wire_out += len(text)
        self.sock.sendall(text)

    def send_bytewise(self, text: bytes) -> None:
        """The compressed stream one octet per write (TCP_NODELAY: one segment each)."""
        data = self.deflate.compress(text) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.wire_out += len(data)
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.wire_in += len(data)
        self.buf += self.inflate.decompress(data) if self.inflate is not None else data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_until(self, tag: bytes) -> bytes:
        """Everything up to and including the tagged reply of ``tag``; literals
        in the responses are read whole, never scanned for a tag."""
        out = []
        while True:
            line = self._line()
            out.append(line)
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                size = int(m.group(1))
                while len(self.buf) < size:
                    self._more()
                out.append(self.buf[:size])
                self.buf = self.buf[size:]
                continue
            if line.startswith(tag + b" "):
                return b"".join(out)

    def command(self, text: bytes) -> bytes:
        tag = text.split(b" ", 1)[0]
        self.send(text + b"\r\n")
        return self.read_until(tag)

    # -- COMPRESS -------------------------------------------------------------

    def login(self, user: str, password: str) -> bytes:
        reply = self.command(b'L LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        assert b"L OK" in reply, reply
        return reply

    def compress(self, level: int = 6) -> bytes:
        """RFC 4978 §3: the OK comes uncompressed; octets after it are compressed."""
        self.sock.sendall(b"Z COMPRESS DEFLATE\r\n")
        self.wire_out += 20
        reply = self.read_until(b"Z")
        if b"Z OK" in reply:
            self.deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
            self.inflate = zlib.decompressobj(-15)
            rest, self.buf = self.buf, b""
            self.buf = self.inflate.decompress(rest)
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def message(n: int) -> bytes:
    return (b"From: Carol <carol@elsewhere.test>\r\nTo: bob@example.test\r\nSubject: deflate %d\r\n"
            b"Message-ID: <deflate-%d@elsewhere.test>\r\n\r\n" % (n, n)) + b"line of text\r\n" * 40


class ImapCompressServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}
    COUNT = 6

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with smtplib.SMTP("127.0.0.1", cls.ports["smtp"], timeout=WAIT) as s:
            for n in range(cls.COUNT):
                s.sendmail("carol@elsewhere.test", [BOB], message(n))

    def client(self, starttls=False) -> DeflateClient:
        c = DeflateClient("127.0.0.1", self.ports["imap"], starttls=starttls)
        self.addCleanup(c.close)
        c.login(BOB, BOB_PW)
        return c

    def fetch_all_pipelined(self, c: DeflateClient, bytewise: bool = False) -> bytes:
        """SELECT, FETCH and NOOP in one write; the answer to all comes
        without the client sending anything more (RFC 4978 §4 flushes)."""
        text = b"a SELECT INBOX\r\nb FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[])\r\nc NOOP\r\n"
        (c.send_bytewise if bytewise else c.send)(text)
        got = c.read_until(b"c")
        self.assertIn(b"a OK [READ-WRITE]", got)
        self.assertIn(b"b OK FETCH completed", got)
        self.assertTrue(got.endswith(b"c OK NOOP completed\r\n"), got[-200:])
        for n in range(self.COUNT):
            self.assertIn(b'"deflate %d"' % n, got)
        self.assertEqual(got.count(b"line of text\r\n"), 40 * self.COUNT)
        return got

    def test_plain_connection_compressed_both_ways(self):
        c = self.client()
        with self.assertLogs("mailsrv.imap", "INFO") as logs:
            self.assertEqual(c.compress(), b"Z OK DEFLATE active\r\n")
            got = self.fetch_all_pipelined(c)
            self.assertIn(b"* BYE", c.command(b"q LOGOUT"))
        self.assertTrue(any("imap compress deflate user=%s" % BOB in line for line in logs.output))
        # the responses travelled compressed: far fewer octets than they hold
        self.assertLess(c.wire_in, len(got) / 2)

    def test_starttls_then_compress(self):
        """RFC 4978 §3: compressed first, then encrypted."""
        c = self.client(starttls=True)
        self.assertIsInstance(c.sock, ssl.SSLSocket)
        self.assertEqual(c.compress(), b"Z OK DEFLATE active\r\n")
        self.fetch_all_pipelined(c)
        self.assertIn(b"q OK LOGOUT completed", c.command(b"q LOGOUT"))

    def test_compressed_commands_one_octet_per_segment(self):
        c = self.client()
        c.compress()
        self.fetch_all_pipelined(c, bytewise=True)

    def test_compress_twice_and_unauthenticate_keeps_compression(self):
        c = self.client()
        c.compress()
        self.assertEqual(c.command(b"y COMPRESS DEFLATE"),
                         b"y NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n")
        self.assertEqual(c.command(b"u UNAUTHENTICATE"), b"u OK UNAUTHENTICATE completed\r\n")
        self.assertIn(b"s BAD SELECT not allowed", c.command(b"s SELECT INBOX"))
        c.login(BOB, BOB_PW)
        self.assertIn(b"e OK [READ-ONLY]", c.command(b"e EXAMINE INBOX"))

    def test_compress_not_before_login(self):
        c = DeflateClient("127.0.0.1", self.ports["imap"])
        self.addCleanup(c.close)
        self.assertIn(b"Z BAD", c.compress())
        self.assertIsNone(c.deflate)
        self.assertIn(b"n OK", c.command(b"n NOOP"))

