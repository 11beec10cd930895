"""State-walk fuzzing of Pop3Session: random and mutated lines in every state.

Seeded and bounded.  Invariants checked after every step:
* no exception escapes the session (anything but its own handled errors is a bug);
* every output line starts with "+OK", "-ERR" or "+ ", or belongs to a
  multi-line response that ends with "." and is byte-stuffed (RFC 1939 §3);
* a closed session says nothing more; the maildrop is closed exactly once and
  deletions are committed only by QUIT in TRANSACTION (RFC 1939 §6).
"""

import base64
import os
import random
import unittest

from protocols import sasl
from protocols.pop3.server import MAX_COMMAND_LINE, Pop3State
from tests.test_pop3_session import FakeMaildrop, drain, make_session, LOCAL, REMOTE

# Walks per test; `make fuzz` raises it (MAILSRV_FUZZ_ITERATIONS), `make test` keeps it quick.
ITERATIONS = int(os.environ.get("MAILSRV_FUZZ_ITERATIONS", "300"))

SEED = 5034
CORPUS_AUTH = [
    b"CAPA", b"USER mrose", b"PASS tanstaaf", b"PASS wrong", b"AUTH", b"AUTH PLAIN",
    b"AUTH PLAIN " + base64.b64encode(sasl.plain_response("mrose", "tanstaaf")),
    b"AUTH LOGIN", b"AUTH LOGIN bXJvc2U=", b"AUTH SCRAM-SHA-256",
    b"AUTH SCRAM-SHA-256 " + base64.b64encode(b"n,,n=mrose,r=abcdefgh"),
    b"*", b"=", b"bXJvc2U=", b"dGFuc3RhYWY=", b"STLS", b"UTF8", b"QUIT", b"NOOP", b"APOP mrose x",
]
CORPUS_TRANS = [
    b"STAT", b"LIST", b"LIST 1", b"LIST 99", b"LIST 0", b"RETR 1", b"RETR 2", b"RETR 3",
    b"TOP 1 0", b"TOP 2 5", b"TOP 3 99999", b"DELE 1", b"DELE 2", b"RSET", b"NOOP", b"UIDL",
    b"UIDL 2", b"CAPA", b"QUIT", b"RETR 4294967296", b"TOP 1 -1", b"USER mrose",
]
MESSAGES = [b"Subject: a\r\n\r\n.dot\r\nbody\r\n", b"H: x\n\n..\n.\nend", b""]
# Responses that are multi-line when positive (RFC 1939 §5, §7; RFC 2449 §5; bare AUTH).
MULTI_NOARG = {b"LIST", b"UIDL", b"AUTH"}
MULTI_ARGS = {b"RETR": 1, b"TOP": 2}


def mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 4)]
        elif op == 3:
            data = bytearray(data.swapcase())
        elif op == 4:
            data += b" " + bytes(rng.randrange(33, 127) for _ in range(rng.randint(1, 20)))
        elif op == 5:
            data[pos:pos] = rng.choice([b"\x00", b"\r", b"\xff\xfe", b"\t", b"  ", b".", b"\xc3\xa9"])
        elif op == 6:
            data += b"x" * rng.choice([MAX_COMMAND_LINE - len(data), MAX_COMMAND_LINE + 10, 13000])
        elif op == 7:
            data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        else:
            data += b" " + str(rng.choice([0, 1, 2, 3, -1, 10 ** 12])).encode()
    return bytes(data.replace(b"\n", b""))


class Checker:
    """Follows one session: expects the response shape of each line it feeds."""

    def __init__(self, test, session, backend):
        self.test, self.s, self.b = test, session, backend
        self.in_sasl = False
        self.quit_in_transaction = False
        greeting = drain(session)
        test.assertTrue(greeting.startswith(b"+OK ") and greeting.endswith(b"\r\n"))

    def feed(self, rng, line: bytes) -> None:
        s = self.s
        was_closed, was_tls, state = s.closed, s.want_tls, s.state
        data = line + rng.choice([b"\r\n", b"\n"])
        line = data[:-2] if data.endswith(b"\r\n") else data[:-1]  # what the session sees
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(0, 3))))
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            if a < b:
                s.receive_data(data[a:b])
        out = drain(s)
        if was_closed or was_tls:
            self.test.assertEqual(out, b"", "no output after close / while waiting for TLS")
            return
        verb, _, rest = line.partition(b" ")
        if not self.in_sasl and verb.upper() == b"QUIT" and state is Pop3State.TRANSACTION:
            self.quit_in_transaction = True
        multi = not self.in_sasl and (
            verb.upper() == b"CAPA" or (verb.upper() in MULTI_NOARG and not rest.split())
            or MULTI_ARGS.get(verb.upper()) == len(rest.split()))
        self.check_output(out, multi, line)

    def check_output(self, out: bytes, multi: bool, line: bytes) -> None:
        t = self.test
        if not out:
            t.fail("no response to %r" % line[:80])
        t.assertTrue(out.endswith(b"\r\n"), out[-80:])
        lines = out[:-2].split(b"\r\n")
        first = lines[0]
        t.assertTrue(first.startswith((b"+OK", b"-ERR", b"+ ")), (line[:80], out[:200]))
        self.in_sasl = first.startswith(b"+ ")
        if first.startswith(b"+OK") and multi and len(lines) > 1:
            t.assertEqual(lines[-1], b".", (line[:80], out[-200:]))
            body = lines[1:-1]
            for item in body:
                t.assertFalse(item.startswith(b".") and not item.startswith(b".."),
                              "unstuffed line %r" % item[:80])
            return
        # single-line answers (several when a closing notice follows)
        for item in lines:
            t.assertTrue(item.startswith((b"+OK", b"-ERR", b"+ ")), (line[:80], out[:300]))

    def finish(self) -> None:
        md = self.b.maildrop
        self.test.assertLessEqual(md.closes, 1)
        if not self.quit_in_transaction:
            self.test.assertEqual(md.committed, [], "only QUIT in TRANSACTION commits")


class Pop3FuzzTest(unittest.TestCase):
    def new(self, rng):
        s, b = make_session(FakeMaildrop(MESSAGES), peer=rng.choice([LOCAL, REMOTE]),
                            tls_active=rng.random() < 0.5, tls_available=rng.random() < 0.8,
                            max_bad_commands=rng.choice([3, 10, 50]))
        return s, b, Checker(self, s, b)

    def pick(self, rng, state):
        corpus = CORPUS_TRANS if state is Pop3State.TRANSACTION else CORPUS_AUTH
        line = rng.choice(corpus)
        return mutate(rng, line) if rng.random() < 0.5 else line

    def test_state_walk(self):
        rng = random.Random(SEED)
        for _ in range(2 * ITERATIONS):
            s, b, checker = self.new(rng)
            if rng.random() < 0.6:  # start from TRANSACTION
                checker.feed(rng, b"AUTH PLAIN " + base64.b64encode(sasl.plain_response("mrose", "tanstaaf")))
                if not s.ctx.tls_active and not s.ctx.is_loopback:
                    self.assertIs(s.state, Pop3State.AUTHORIZATION)
            for _ in range(rng.randint(1, 40)):
                event = rng.random()
                if event < 0.02:
                    s.receive_data(b"")
                elif event < 0.03:
                    s.timeout()
                elif event < 0.04:
                    s.shutdown()
                    drain(s)
                elif s.want_tls and event < 0.5:
                    s.tls_started({"version": "TLSv1.3", "cipher": "x"})
                    checker.in_sasl = False
                else:
                    checker.feed(rng, self.pick(rng, s.state))
                if s.closed:
                    break
            s.receive_data(b"")
            self.assertTrue(s.closed)
            checker.finish()
            if b.maildrop.closes == 0:
                self.assertNotEqual(s.state, Pop3State.TRANSACTION, "maildrop left locked")

    def test_every_line_in_every_state(self):
        """mox-style: each corpus line and mutations of it, replayed in each state."""
        rng = random.Random(SEED + 1)
        lines = CORPUS_AUTH + CORPUS_TRANS
        lines = lines + [mutate(rng, rng.choice(lines)) for _ in range(ITERATIONS // 2)]
        setups = {
            "authorization": [],
            "after USER": [b"USER mrose"],
            "in SASL LOGIN": [b"AUTH LOGIN"],
            "in SASL PLAIN": [b"AUTH PLAIN"],
            "transaction": [b"USER mrose", b"PASS tanstaaf"],
            "transaction after DELE": [b"USER mrose", b"PASS tanstaaf", b"DELE 1"],
        }
        for name, setup in setups.items():
            for line in lines:
                s, b = make_session(FakeMaildrop(MESSAGES), peer=LOCAL, tls_active=True)
                checker = Checker(self, s, b)
                for cmd in setup:
                    checker.feed(rng, cmd)
                with self.subTest(state=name, line=line[:60]):
                    checker.feed(rng, line)
                    s.receive_data(b"")
                    checker.finish()
                    self.assertEqual(b.maildrop.closes, 1 if s.state is not Pop3State.AUTHORIZATION else 0)

    def test_random_split_pipelined_input_with_interleaved_streaming(self):
        """Whole scripts fed in random pieces while draining only part of the output."""
        rng = random.Random(SEED + 2)
        script = (b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\nTOP 2 1\r\nLIST\r\nRETR 2\r\nDELE 3\r\n"
                  b"UIDL\r\nRETR 3\r\nQUIT\r\n")
        reference, rb = make_session(FakeMaildrop(MESSAGES), peer=LOCAL)
        reference.receive_data(script)
        expected = drain(reference)
        for _ in range(100):
            s, b = make_session(FakeMaildrop(MESSAGES), peer=LOCAL)
            out = b""
            pos = 0
            while pos < len(script):
                n = rng.randint(1, 30)
                s.receive_data(script[pos:pos + n])
                pos += n
                if rng.random() < 0.5:
                    out += s.data_to_send()
            out += drain(s)
            self.assertEqual(out, expected)
            self.assertTrue(s.closed)
            self.assertEqual(b.maildrop.committed, [[2]])


if __name__ == "__main__":
    unittest.main()
