"""Stress over loopback against the whole in-process server (tests.helpers).

* Many idle connections plus a slow-drip client must not starve a new client:
  its 220 greeting still arrives promptly (the event loop never blocks on one
  peer; RFC 5321 §4.5.3.2.7 lets an idle client linger for minutes).
* A state-walk fuzz over a real socket: seeded random and mutated lines in
  each SMTP state; every reply line is ``^[2-5]\\d\\d[ -]`` (RFC 5321 §4.2)
  and the server still delivers with smtplib afterwards.
* The per-address connection limit: the connection above it gets 421
  (RFC 5321 §3.8 / §4.2.3) and is closed.

Everything is bounded by socket timeouts; nothing sleeps to synchronise.
"""

import os
import random
import re
import resource
import smtplib
import socket
import threading
import time
import unittest

from tests.helpers import ServerTestCase, strip_trace

IDLE_CONNECTIONS = 1000
NEED_FDS = 2200          # both ends of every idle connection live in this process
GREETING_BOUND = 5.0     # seconds; generous on a loaded CI box
FUZZ_LINES = int(os.environ.get("MAILSRV_FUZZ_ITERATIONS", "300"))
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -]")
MSG = b"From: a@elsewhere.test\r\nSubject: after stress\r\n\r\nstill here\r\n"


def raise_nofile(want: int) -> bool:
    """Raise the soft RLIMIT_NOFILE to ``want`` if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return True
    if hard != resource.RLIM_INFINITY and hard < want:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return False
    return True


class Client:
    """A raw line-oriented SMTP client over a real socket, reading whole replies."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self):
        """Read one complete (possibly multiline) reply: list of lines, [] on EOF."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def command(self, line: bytes):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.file.close()
        self.sock.close()


def deliver_one(test, port):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        test.assertEqual(s.sendmail("a@elsewhere.test", ["bob@example.test"], MSG), {})
    test.assertIn(MSG, [strip_trace(m) for m in test.new_messages("bob@example.test")])


class ManyIdleConnectionsTest(ServerTestCase):
    extra_config = {"max_connections": "3000", "max_connections_per_ip": "3000"}

    @classmethod
    def setUpClass(cls):
        if not raise_nofile(NEED_FDS):
            raise unittest.SkipTest(f"RLIMIT_NOFILE cannot reach {NEED_FDS} for {IDLE_CONNECTIONS} connections")
        super().setUpClass()

    def test_new_client_greeted_promptly_among_idle_and_slow_drip(self):
        port = self.ports["smtp"]
        idle = []
        self.addCleanup(lambda: [c.close() for c in idle])
        for _ in range(IDLE_CONNECTIONS):
            idle.append(Client(port))
        for c in idle:                          # every one was accepted and greeted
            self.assertTrue(c.reply()[0].startswith(b"220"))

        drip = Client(port)
        self.addCleanup(drip.close)
        self.assertTrue(drip.reply()[0].startswith(b"220"))
        stop = threading.Event()
        sent = threading.Event()

        def slow_drip():
            # RFC 5321 §4.5.3.2.7 timeouts are per command, so a byte per 0.2 s is a legal, slow client
            for b in b"NOOP\r\n":
                if stop.wait(0.2):
                    return
                drip.sock.sendall(bytes([b]))
            sent.set()
        t = threading.Thread(target=slow_drip, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        self.addCleanup(stop.set)

        started = time.monotonic()
        fresh = Client(port, timeout=GREETING_BOUND)
        self.addCleanup(fresh.close)
        greeting = fresh.reply()
        elapsed = time.monotonic() - started
        self.assertTrue(greeting and greeting[0].startswith(b"220 "), greeting)
        self.assertLess(elapsed, GREETING_BOUND)
        self.assertTrue(fresh.command(b"EHLO fresh.test")[-1].startswith(b"250 "))

        self.assertEqual(drip.reply()[0][:4], b"250 ")     # the dripped NOOP, once complete
        self.assertTrue(sent.wait(5))      # set by the drip thread right after its last octet
        # an idle connection still answers, and a full delivery works alongside them all
        self.assertTrue(idle[0].command(b"NOOP")[0].startswith(b"250"))
        deliver_one(self, port)
        self.assertTrue(idle[-1].command(b"QUIT")[0].startswith(b"221"))


# ---------------------------------------------------------------------------
# State-walk fuzz over a socket
# ---------------------------------------------------------------------------

CORPUS = [
    b"EHLO client.test", b"HELO client.test", b"MAIL FROM:<a@elsewhere.test>",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8", b"RCPT TO:<bob@example.test>",
    b"RCPT TO:<@r1.test,@r2.test:bob@example.test>", b'RCPT TO:<"a b"@[192.0.2.1]>', b"RCPT TO:<Postmaster>",
    b"RCPT TO:<x@[IPv6:::1]>", b"DATA", b"RSET", b"NOOP", b"VRFY bob", b"EXPN list", b"HELP",
    b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH PLAIN AGFsaWNlAHdyb25n", b"*", b".", b"Subject: x", b"",
    "MAIL FROM:<jörg@elsewhere.test> SMTPUTF8".encode(), b"MAIL FROM:<a@b.test> SIZE=99999999999999999999",
]
SPECIALS = [b"\x00", b"\xff", b"\xc3", b"<", b">", b"@", b'"', b"\\", b":", b"=", b" ", b".", b"\t", b"9" * 25]
# Walks from a fresh connection into each state (RFC 5321 §4.1.4 command order).
WALKS = {
    "greeting": [],
    "ehlo": [b"EHLO client.test"],
    "mail": [b"EHLO client.test", b"MAIL FROM:<a@elsewhere.test>"],
    "rcpt": [b"EHLO client.test", b"MAIL FROM:<a@elsewhere.test>", b"RCPT TO:<bob@example.test>"],
}
# Lines whose acceptance changes framing (TLS handshake, BDAT octets, QUIT): kept out of the random stream.
FRAMING = re.compile(rb"^\s*(starttls|bdat|quit)", re.I)


def mutate(rng, line: bytes) -> bytes:
    """A seeded mutation without CR or LF: one fuzz line is one command."""
    out = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        op, pos = rng.randrange(6), rng.randint(0, len(out))
        if op == 0:
            out[pos:pos] = rng.choice(SPECIALS)
        elif op == 1:
            del out[pos:pos + rng.randint(1, 5)]
        elif op == 2:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            out = bytearray(out.swapcase())
        elif op == 4:
            out += rng.choice(SPECIALS) * rng.randint(1, 700)      # past the 512-octet limit (§4.5.3.1.4)
        else:
            out = out[:pos]
    return bytes(out).replace(b"\r", b"").replace(b"\n", b"")


def fuzz_line(rng) -> bytes:
    if rng.random() < 0.2:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randint(0, 80))).replace(b"\r", b"").replace(b"\n", b"")
    return mutate(rng, rng.choice(CORPUS))


class SocketFuzzTest(ServerTestCase):
    extra_config = {"auth_failure_delay": "0", "auth_max_failures": "100000"}

    def setUp(self):
        self.clear_mailbox("bob@example.test")

    def connect(self, walk):
        c = Client(self.ports["smtp"])
        self.assert_reply(c.reply(), b"220")
        for line in walk:
            self.assert_reply(c.command(line), b"250")
        return c

    def assert_reply(self, lines, first=None):
        self.assertTrue(lines, "connection closed without a reply")
        for line in lines:
            self.assertRegex(line, REPLY_LINE)
            self.assertTrue(line.endswith(b"\r\n"), line)
        if first is not None:
            self.assertTrue(lines[0].startswith(first), lines)

    def step(self, c, line):
        """Send one fuzz line; settle whatever it started.  Returns False if the session ended."""
        lines = c.command(line)
        if not lines:
            return False                                  # a server may close after errors (421 first)
        self.assert_reply(lines)
        code = lines[-1][:3]
        self.codes.add(code)
        if code == b"354":                                # RFC 5321 §4.1.1.4: now in DATA; end it
            self.assert_reply(c.command(b"."))
        elif code == b"334":                              # RFC 4954 §4: "*" cancels the exchange
            self.assert_reply(c.command(b"*"), b"501")
        elif code in (b"220", b"221", b"421"):
            return False
        return True

    def test_state_walk_fuzz(self):
        rng = random.Random(5321)
        self.codes = set()
        for state, walk in WALKS.items():
            with self.subTest(state=state):
                c = self.connect(walk)
                for _ in range(FUZZ_LINES):
                    line = fuzz_line(rng)
                    if FRAMING.match(line):
                        continue
                    if not self.step(c, line):
                        c.close()
                        c = self.connect(walk)
                    elif rng.random() < 0.1:              # back to the state under test
                        c.close()
                        c = self.connect(walk)
                self.assert_reply(c.command(b"NOOP"), b"250")    # replies stayed in step
                c.close()
        self.assertTrue({b"250", b"500", b"501"} <= self.codes, self.codes)   # both paths were exercised
        deliver_one(self, self.ports["smtp"])


# ---------------------------------------------------------------------------
# Connection limits
# ---------------------------------------------------------------------------

class PerAddressLimitTest(ServerTestCase):
    extra_config = {"max_connections_per_ip": "5"}

    def test_sixth_connection_gets_421_and_is_closed(self):
        port = self.ports["smtp"]
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        for _ in range(5):
            c = Client(port)
            held.append(c)
            self.assertTrue(c.reply()[0].startswith(b"220 "))
        sixth = Client(port)
        self.addCleanup(sixth.close)
        busy = sixth.reply()
        self.assertEqual(len(busy), 1)
        self.assertTrue(busy[0].startswith(b"421 "), busy)       # RFC 5321 §3.8
        self.assertEqual(sixth.file.read(), b"")                 # and closed
        # the limit is per listener: submission still greets this address
        other = Client(self.ports["submission"])
        self.addCleanup(other.close)
        self.assertTrue(other.reply()[0].startswith(b"220 "))
        # once one leaves (QUIT, then the server's close), a newcomer is served again
        self.assertTrue(held[0].command(b"QUIT")[0].startswith(b"221"))
        self.assertEqual(held[0].file.read(), b"")
        seventh = Client(port)
        self.addCleanup(seventh.close)
        self.assertTrue(seventh.reply()[0].startswith(b"220 "))


class ListenerLimitTest(ServerTestCase):
    extra_config = {"max_connections": "3", "max_connections_per_ip": "100"}

    def test_connection_above_the_listener_limit_gets_421(self):
        port = self.ports["smtp"]
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        for _ in range(3):
            held.append(Client(port))
            self.assertTrue(held[-1].reply()[0].startswith(b"220 "))
        over = Client(port)
        self.addCleanup(over.close)
        busy = over.reply()
        self.assertTrue(busy and busy[0].startswith(b"421 4."), busy)   # RFC 3463 §3.1: class 4, try later
        self.assertEqual(over.file.read(), b"")
        # the held sessions are unaffected
        for c in held:
            self.assertTrue(c.command(b"NOOP")[0].startswith(b"250"))


if __name__ == "__main__":
    unittest.main()
