"""COMPRESS=DEFLATE (RFC 4978) and UNAUTHENTICATE (RFC 8437) in ImapSession,
sans-I/O: the client side here is zlib itself (raw deflate, as RFC 4978 §4
requires), the compressed stream is fed whole, one byte at a time and split at
random points; pipelined commands, a zip bomb, a corrupt stream, COMPRESS
twice.  Loopback tests with a real server: tests/test_server_imap_compress.py."""

import random
import unittest
import zlib

from protocols.imap import compress
from protocols.imap.session import ImapState
from tests.imap_fake import FEEDERS, drain, feed, login, make_session

SYNC_TAIL = b"\x00\x00\xff\xff"   # the empty stored block a Z_SYNC_FLUSH ends with


class Client:
    """The client's half of RFC 4978: deflate what it sends, inflate what it gets."""

    def __init__(self):
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)

    def pack(self, text: bytes) -> bytes:
        return self.out.compress(text) + self.out.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.inp.decompress(data)


def compressed_session(feeder=None, **config):
    """A logged-in session with INBOX holding three messages, COMPRESS on."""
    s, backend = make_session(**config)
    for n in range(3):
        backend.deliver("fred", b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    login(s)
    out = feed(s, b"z COMPRESS DEFLATE\r\n")
    assert out == b"z OK DEFLATE active\r\n", out
    return s, backend, Client()


def exchange(s, client, text, feeder, rng):
    """Send ``text`` compressed, pieces by ``feeder``; each batch of output is
    inflated at once (it must be complete: the sync flush)."""
    got = b""
    for piece in feeder(client.pack(text), rng):
        s.receive_data(piece)
        while True:
            batch = s.data_to_send()
            if not batch:
                break
            assert batch.endswith(SYNC_TAIL), batch[-8:]
            got += client.unpack(batch)
    return got


class CompressTest(unittest.TestCase):
    def test_ok_is_plain_then_both_ways_compressed_every_feeder(self):
        """RFC 4978 §3: the OK uncompressed, then pipelined commands compressed."""
        for feeder in FEEDERS:
            with self.subTest(feeder=feeder.__name__):
                s, _, c = compressed_session()
                got = exchange(s, c, b"a SELECT INBOX\r\nb FETCH 1:* (FLAGS)\r\nc NOOP\r\n",
                               feeder, random.Random(4978))
                self.assertIn(b"* 3 EXISTS\r\n", got)
                self.assertIn(b"a OK [READ-WRITE] SELECT completed\r\n", got)
                for n in (1, 2, 3):
                    self.assertIn(b"* %d FETCH (FLAGS (" % n, got)
                self.assertTrue(got.endswith(b"b OK FETCH completed\r\nc OK NOOP completed\r\n"), got)

    def test_each_batch_ends_with_a_sync_flush(self):
        """RFC 4978 §4: a pipelining client gets every response without more
        output following: each data_to_send() inflates to whole lines."""
        s, _, c = compressed_session()
        s.receive_data(c.pack(b"a SELECT INBOX\r\n"))
        first = s.data_to_send()
        self.assertTrue(first.endswith(SYNC_TAIL))
        self.assertTrue(c.unpack(first).endswith(b"a OK [READ-WRITE] SELECT completed\r\n"))
        s.receive_data(c.pack(b"b FETCH 2 (FLAGS)\r\n"))
        self.assertEqual(c.unpack(s.data_to_send()), b"* 2 FETCH (FLAGS (\\Recent))\r\nb OK FETCH completed\r\n")

    def test_compressed_bytes_in_the_same_read_as_compress(self):
        """Octets after the COMPRESS line are the client's compressed stream
        (RFC 4978 §3): they are inflated, never read as plain commands."""
        s, _ = make_session()
        login(s)
        c = Client()
        s.receive_data(b"z COMPRESS DEFLATE\r\n" + c.pack(b"a NOOP\r\n"))
        out = s.data_to_send()
        head = b"z OK DEFLATE active\r\n"
        self.assertTrue(out.startswith(head), out)
        self.assertEqual(c.unpack(out[len(head):]), b"a OK NOOP completed\r\n")

    def test_compress_twice_is_no_compressionactive(self):
        """RFC 4978 §3, RFC 5530 §3: NO [COMPRESSIONACTIVE] (as Dovecot), compressed."""
        s, _, c = compressed_session()
        got = exchange(s, c, b"y COMPRESS DEFLATE\r\nx NOOP\r\n", FEEDERS[0], None)
        self.assertEqual(got, b"y NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n"
                              b"x OK NOOP completed\r\n")

    def test_unknown_algorithm_bad_and_not_before_login(self):
        s, _ = make_session()
        self.assertIn(b"a BAD COMPRESS not allowed in the NOT-AUTHENTICATED state",
                      feed(s, b"a COMPRESS DEFLATE\r\n"))
        login(s)
        out = feed(s, b"b COMPRESS LZW\r\nc COMPRESS\r\nd NOOP\r\n")
        self.assertTrue(out.startswith(b"b BAD Unknown compression algorithm LZW\r\nc BAD "), out)
        self.assertTrue(out.endswith(b"\r\nd OK NOOP completed\r\n"), out)
        self.assertIsNone(s._deflate)

    def test_capability_after_login_only(self):
        s, _ = make_session()
        self.assertNotIn(b"COMPRESS=DEFLATE", feed(s, b"a CAPABILITY\r\n"))
        login(s)
        caps = feed(s, b"b CAPABILITY\r\n")
        self.assertIn(b" COMPRESS=DEFLATE UNAUTHENTICATE ", caps)

    def test_corrupt_stream_is_bye(self):
        s, _, c = compressed_session()
        s.receive_data(b"\xff\xfe garbage that is not deflate")
        got = c.unpack(drain(s))
        self.assertTrue(got.startswith(b"* BYE Compression error"), got)
        self.assertTrue(s.closed)

    def test_zip_bomb_line_is_bounded(self):
        """A 20 MB line of one letter compresses to ~20 KB: inflated in steps,
        the reader never holds more than its line limit plus one step."""
        s, _, c = compressed_session()
        peak = _watch_buffer(s)
        bomb = c.out.compress(b"A" * (20 * 1024 * 1024)) + c.out.flush(zlib.Z_SYNC_FLUSH)
        self.assertLess(len(bomb), 64 * 1024)
        s.receive_data(bomb)
        s.receive_data(c.pack(b"\r\nb NOOP\r\n"))
        got = c.unpack(drain(s))
        self.assertIn(b"BAD command line longer than", got)
        self.assertTrue(got.endswith(b"b OK NOOP completed\r\n"), got)
        self.assertLessEqual(max(peak), 128 * 1024 + compress.INFLATE_STEP)

    def test_zip_bomb_literal_is_bounded(self):
        """A non-synchronizing literal over APPENDLIMIT (RFC 7888 §4: read and
        discarded) sent as 60 MB of compressed zeros: TOOBIG, memory bounded;
        one over the discard limit (64 MiB): BYE."""
        s, _, c = compressed_session(max_append=1024 * 1024)
        peak = _watch_buffer(s)
        size = 60 * 1024 * 1024
        s.receive_data(c.pack(b"a APPEND INBOX {%d+}\r\n" % size))
        zeros = c.out.compress(b"\0" * size) + c.out.flush(zlib.Z_SYNC_FLUSH)
        s.receive_data(zeros)
        s.receive_data(c.pack(b"\r\nb NOOP\r\n"))
        got = c.unpack(drain(s))
        self.assertIn(b"a NO [TOOBIG]", got)
        self.assertTrue(got.endswith(b"b OK NOOP completed\r\n"), got)
        self.assertLessEqual(max(peak), 2 * compress.INFLATE_STEP + 1024)
        s.receive_data(c.pack(b"c APPEND INBOX {%d+}\r\n" % (100 * 1024 * 1024)))
        self.assertIn(b"* BYE", c.unpack(drain(s)))
        self.assertTrue(s.closed)

    def test_inflater_steps_are_bounded(self):
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = z.compress(b"x" * 1000000) + z.flush(zlib.Z_SYNC_FLUSH)
        inf = compress.Inflater()
        inf.feed(data)
        sizes = []
        while True:
            chunk = inf.read(1000)
            if not chunk:
                break
            sizes.append(len(chunk))
        self.assertEqual(sum(sizes), 1000000)
        self.assertEqual(max(sizes), 1000)


def _watch_buffer(s):
    """Record the reader's buffered size after each feed."""
    peak = [0]
    reader = s._reader
    original = reader.feed

    def feed_and_note(data):
        original(data)
        peak.append(reader.buffered)
    reader.feed = feed_and_note
    return peak


class UnauthenticateTest(unittest.TestCase):
    def test_back_to_not_authenticated(self):
        """RFC 8437 §3: mailbox closed without expunge, account released,
        ENABLE undone (§4.1), then a new login works."""
        s, backend = make_session()
        backend.deliver("fred", b"Subject: x\r\n\r\nx\r\n")
        login(s)
        out = feed(s, b"e ENABLE IMAP4rev2\r\na SELECT INBOX\r\nb STORE 1 +FLAGS (\\Deleted)\r\n"
                      b"c UNAUTHENTICATE\r\nd SELECT INBOX\r\n")
        self.assertIn(b"c OK UNAUTHENTICATE completed\r\n", out)
        self.assertIn(b"d BAD SELECT not allowed in the NOT-AUTHENTICATED state\r\n", out)
        self.assertIs(s.state, ImapState.NOT_AUTHENTICATED)
        self.assertIsNone(s._folder)
        self.assertIsNone(s._account)
        self.assertFalse(s.rev2)
        self.assertEqual(len(backend.boxes["fred"]["INBOX"].messages), 1)   # not expunged
        self.assertEqual(backend.boxes["fred"]["INBOX"].watchers, [])
        self.assertIn(b"STARTTLS", feed(s, b"f CAPABILITY\r\n"))
        self.assertEqual(s._reader.max_literal, 8192)
        login(s)
        self.assertIs(s.state, ImapState.AUTHENTICATED)

    def test_not_before_login_and_no_arguments(self):
        s, _ = make_session()
        self.assertIn(b"a BAD UNAUTHENTICATE not allowed", feed(s, b"a UNAUTHENTICATE\r\n"))
        login(s)
        self.assertIn(b"b BAD", feed(s, b"b UNAUTHENTICATE now\r\n"))
        self.assertIs(s.state, ImapState.AUTHENTICATED)

    def test_login_limit_counts_again_after_unauthenticate(self):
        s, _ = make_session(max_commands_before_login=5)
        login(s)
        feed(s, b"".join(b"n%d NOOP\r\n" % i for i in range(10)))
        out = feed(s, b"u UNAUTHENTICATE\r\nx NOOP\r\n")
        self.assertIn(b"x OK NOOP completed", out)
        self.assertFalse(s.closed)

    def test_compression_stays_and_starttls_refused(self):
        s, _, c = compressed_session()
        got = exchange(s, c, b"u UNAUTHENTICATE\r\nv CAPABILITY\r\nw STARTTLS\r\n"
                             b"L LOGIN fred secret\r\n", FEEDERS[0], None)
        self.assertIn(b"u OK UNAUTHENTICATE completed\r\n", got)
        self.assertNotIn(b"STARTTLS", got.split(b"\r\n")[1])
        self.assertIn(b"w NO TLS cannot start under COMPRESS\r\n", got)
        self.assertIn(b"L OK [CAPABILITY", got)
        self.assertFalse(s.want_tls)


if __name__ == "__main__":
    unittest.main()
