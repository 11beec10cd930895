"""State-walk fuzzing of ImapSession: valid, mutated and random input in every state.

Seeded and bounded.  Each walk brings a session into one of its states (not
authenticated, authenticated, selected, IDLE, an AUTHENTICATE exchange, a
literal awaited after ``+``), then feeds lines from a corpus, mutated or
random, split at random points, with a second session changing the folder
and the backend sometimes answering later.  After every step:

* no exception escapes the session;
* every response is ``* ...``, ``+ ...`` or ``tag OK/NO/BAD ...``, literals
  (``{n}``) skipped whole (RFC 9051 §2.2.2, §7);
* nothing follows a BYE, and a closed session releases its folder, its
  account and its watch.
"""

import os
import random
import re
import unittest

from tests.imap_fake import FEEDERS, FakeImapBackend, drain, feed, login, make_session
from tests.test_imap_session import FUZZ_LINES

# Walks per test; `make fuzz` raises it (MAILSRV_FUZZ_ITERATIONS), `make test` keeps it quick.
ITERATIONS = int(os.environ.get("MAILSRV_FUZZ_ITERATIONS", "150"))

_RESPONSE = re.compile(rb"(\* |\+ |[^ \r\n]+ (OK|NO|BAD) )")
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n")


def responses(out: bytes):
    """Split output into responses, each with its literals (RFC 9051 §4.3)."""
    i = 0
    while i < len(out):
        start = i
        while True:
            end = out.index(b"\r\n", i) + 2
            m = re.search(rb"~?\{(\d+)\}\r\n\Z", out[i:end])
            if not m:
                break
            i = end + int(m.group(1))
        i = end
        yield out[start:i]


def mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice([b"\x00", b"\r", b"(", b")", b'"', b"{3}", b"{2+}", b"~{1}",
                                        b"\\", b"*", b"%", b"$", b"\xc3\xa9", b" "])
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 4)]
        elif op == 3:
            data = bytearray(data.swapcase())
        elif op == 4:
            data += b" " + bytes(rng.randrange(33, 127) for _ in range(rng.randint(1, 20)))
        else:
            data = data[:pos]
    return bytes(data)


def enter_state(rng: random.Random, s, b) -> None:
    """Bring ``s`` into a random state."""
    which = rng.randrange(6)
    if which == 0:
        return
    if which == 1:
        feed(s, b"z AUTHENTICATE PLAIN\r\n")
        return
    login(s)
    if rng.random() < 0.5:      # RFC 7162, RFC 9586: their responses in every state too
        feed(s, rng.choice([b"z ENABLE QRESYNC\r\n", b"z ENABLE UIDONLY QRESYNC\r\n", b"z ENABLE CONDSTORE\r\n"]))
    if which >= 3:
        feed(s, b"z SELECT INBOX\r\n")
    if which == 4:
        feed(s, b"z IDLE\r\n")
    if which == 5:
        feed(s, b"z APPEND INBOX {20}\r\n")


class ImapFuzzTest(unittest.TestCase):
    def check(self, out: bytes, state: dict) -> None:
        for resp in responses(out):
            if resp.endswith(b" OK LOGOUT completed\r\n"):
                continue    # RFC 9051 §6.1.3: BYE, then LOGOUT's OK
            self.assertFalse(state["bye"], "output after BYE: %r" % resp[:80])
            self.assertTrue(_RESPONSE.match(resp), resp[:120])
            if resp.startswith(b"* BYE"):
                state["bye"] = True

    def walk(self, seed: int) -> None:
        rng = random.Random(seed)
        b = FakeImapBackend()
        for i in range(rng.randint(0, 4)):
            b.deliver("fred", b"Subject: %d\r\n\r\nbody\r\n" % i, flags=rng.choice([(), ("\\Seen",)]))
        s, _ = make_session(b, max_bad_commands=1000, max_commands_before_login=1000)
        other, _ = make_session(b)
        login(other)
        feed(other, b"o SELECT INBOX\r\n")
        enter_state(rng, s, b)
        drain(s)
        state = {"bye": False}
        for _ in range(rng.randint(1, 25)):
            pick = rng.random()
            if pick < 0.5:
                data = rng.choice(FUZZ_LINES) + b"\r\n"
            elif pick < 0.85:
                data = mutate(rng, rng.choice(FUZZ_LINES)) + b"\r\n"
            else:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            b.deferred = rng.random() < 0.3
            out = feed(s, data, rng.choice(FEEDERS), rng)
            if rng.random() < 0.6:
                b.deferred = False
                b.run_pending()
                out += drain(s)
            self.check(out, state)
            if rng.random() < 0.2:
                b.deferred = False
                b.deliver("fred", b"Subject: new\r\n\r\nx\r\n")
                feed(other, rng.choice([b"o STORE 1:* +FLAGS (\\Deleted)\r\no EXPUNGE\r\n", b"o NOOP\r\n"]))
                self.check(drain(s), state)
            if s.want_tls:
                s.tls_started({})
            if s.closed:
                break
        s.receive_data(b"")
        b.deferred = False
        b.run_pending()
        self.assertTrue(s.closed)
        self.assertEqual(drain(s), b"")
        self.assertIsNone(s._folder)
        self.assertIsNone(s._account)
        self.assertEqual([w for box in b.boxes.get("fred", {}).values() for w in box.watchers
                          if getattr(w, "__self__", None) is s], [])

    def test_state_walks(self):
        for i in range(ITERATIONS):
            with self.subTest(seed=i):
                self.walk(9051 + i)

    def test_responses_parser(self):
        out = b"* 1 FETCH (BODY[] {5}\r\na\r\nb\r BODY[1] {2}\r\nxy)\r\nt OK done\r\n+ go\r\n"
        self.assertEqual(list(responses(out)), [b"* 1 FETCH (BODY[] {5}\r\na\r\nb\r BODY[1] {2}\r\nxy)\r\n",
                                                b"t OK done\r\n", b"+ go\r\n"])


if __name__ == "__main__":
    unittest.main()
