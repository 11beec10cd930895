"""State-walk fuzzing of SmtpSession.

The session is driven into each state (GREETING, after EHLO, after MAIL,
after RCPT, inside DATA, between BDAT chunks, inside a BDAT chunk, inside an
AUTH LOGIN and an AUTH SCRAM exchange), then fed a random or mutated input
(seeded, ``MAILSRV_FUZZ_ITERATIONS`` per state, default 300).  Asserted:
no exception escapes, every output line matches ``^[2-5]\\d\\d[ -]`` and ends
with CRLF, and afterwards the session can still be driven back to a
working ``NOOP``.
"""

import base64
import os
import random
import re
import unittest

from protocols import sasl
from tests.test_smtp_session import FakeBackend, new_session

ITERATIONS = int(os.environ.get("MAILSRV_FUZZ_ITERATIONS", "300"))
LINE_RE = re.compile(rb"[2-5]\d\d[ -][^\r\n]*\Z")

CORPUS = [
    b"EHLO client.example", b"HELO client.example", b"MAIL FROM:<a@client.example>",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8", b"RCPT TO:<alice@example.org>",
    b"RCPT TO:<@r1.example,@r2.example:bob@example.org>", b'RCPT TO:<"a b"@[192.0.2.1]>',
    b"RCPT TO:<Postmaster>", b"DATA", b"BDAT 10", b"BDAT 0 LAST", b"BDAT 3 LAST", b"RSET",
    b"NOOP", b"QUIT", b"VRFY alice", b"EXPN list", b"HELP", b"AUTH PLAIN", b"AUTH LOGIN",
    b"AUTH SCRAM-SHA-256", b"AUTH PLAIN AGFsaWNlAHB3", b"STARTTLS", b"*", b"=", b".",
    b"Subject: hello", b"", "MAIL FROM:<jörg@example.org> SMTPUTF8".encode(),
    b"RCPT TO:<x@[IPv6:::1]>", b"dGVzdA==", "MAIL FROM:<a@b.example> SIZE=\u00b2 SMTPUTF8".encode(),
    "BDAT \u0661".encode(), b"MAIL FROM:<a@b.example> SIZE=99999999999999999999",
]
SPECIALS = [b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3", b"<", b">", b"@", b"\"", b"\\",
            b":", b"=", b" ", b".", b"\r\n.\r\n", b"\n.\n", b"BDAT 5\r\n", b"9" * 25]


def mutate(rng, line):
    line = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(line))
        if op == 0:
            line[pos:pos] = rng.choice(SPECIALS)
        elif op == 1 and line:
            del line[pos:pos + rng.randint(1, 5)]
        elif op == 2:
            line[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            line = bytearray(line.swapcase())
        elif op == 4:
            line += rng.choice(SPECIALS) * rng.randint(1, 300)
        elif op == 5:
            # valid UTF-8 from odd corners: digits of other scripts, controls, surrogate-free
            line[pos:pos] = rng.choice("\u00b2\u0661\u00e9\u200b\u0085\u2028\uff1c\U0001f600\u00a0").encode()
        else:
            line = line[:pos]
    return bytes(line)


def random_input(rng):
    kind = rng.randrange(4)
    if kind == 0:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
    elif kind == 1:
        data = rng.choice(CORPUS)
    else:
        data = mutate(rng, rng.choice(CORPUS))
    data += rng.choice([b"\r\n", b"\r\n", b"\n", b"", b"\r\n" + rng.choice(CORPUS) + b"\r\n"])
    return data or b"\r\n"   # b"" would mean end of file


def b64(data):
    return base64.b64encode(data).decode()


def _line(s, text):
    s.receive_data(text.encode() + b"\r\n")


def setup_greeting():
    return new_session(peer="127.0.0.1")


def setup_ready():
    s, b = setup_greeting()
    _line(s, "EHLO client.example")
    return s, b


def setup_mail():
    s, b = setup_ready()
    _line(s, "MAIL FROM:<a@client.example>")
    return s, b


def setup_rcpt():
    s, b = setup_mail()
    _line(s, "RCPT TO:<alice@example.org>")
    return s, b


def setup_data():
    s, b = setup_rcpt()
    _line(s, "DATA")
    _line(s, "Subject: fuzz")
    return s, b


def setup_bdat():
    s, b = setup_rcpt()
    s.receive_data(b"BDAT 3\r\nabc")
    return s, b


def setup_in_chunk():
    s, b = setup_rcpt()
    s.receive_data(b"BDAT 100\r\nxyz")
    return s, b


def setup_auth_login():
    s, b = setup_ready()
    _line(s, "AUTH LOGIN")
    return s, b


def setup_auth_scram():
    s, b = setup_ready()
    _line(s, "AUTH SCRAM-SHA-256 " + b64(sasl.ScramClient("alice@example.org", "pw").first()))
    return s, b


STATES = {
    "GREETING": setup_greeting, "READY": setup_ready, "MAIL": setup_mail, "RCPT": setup_rcpt,
    "DATA": setup_data, "BDAT": setup_bdat, "BDAT-chunk": setup_in_chunk,
    "AUTH-LOGIN": setup_auth_login, "AUTH-SCRAM": setup_auth_scram,
}


class StateWalkFuzzTest(unittest.TestCase):
    def check_output(self, out, context):
        if not out:
            return
        self.assertTrue(out.endswith(b"\r\n"), context)
        for line in out[:-2].split(b"\r\n"):
            self.assertRegex(line, LINE_RE, context)

    def recover(self, s, out, context):
        """Bring the session back to command state and prove NOOP works.

        A session may legitimately have closed (QUIT, or the bad-command
        limit); then it must have said so with 221 or 421.
        """
        out = bytearray(out)
        if s.want_tls:
            s.tls_started({"version": "TLSv1.3", "cipher": "x"})
        chunk = s._chunk
        if chunk is not None and chunk.remaining > 1 << 20:
            return   # a client announced a huge chunk: the session waits for it
        for data in (b"x" * (chunk.remaining if chunk else 0),   # finish a BDAT chunk
                     b"\r\n.\r\n",                           # end DATA
                     b"*\r\n",                                 # cancel an AUTH exchange
                     b"RSET\r\nNOOP\r\n"):
            if data:
                s.receive_data(data)
            if s.want_tls:
                s.tls_started({"version": "TLSv1.3", "cipher": "x"})
            chunk_out = s.data_to_send()
            self.check_output(chunk_out, context)
            out += chunk_out
        if s.closed:
            self.assertRegex(bytes(out), rb"(^|\r\n)(221|421) ", context)
        else:
            self.assertTrue(out.endswith(b"250 2.0.0 Ok\r\n"), (context, out))

    def test_every_state(self):
        for n, (name, setup) in enumerate(STATES.items()):
            with self.subTest(state=name):
                for i in range(ITERATIONS):
                    rng = random.Random(n * 100003 + i)
                    s, b = setup()
                    s.data_to_send()
                    data = random_input(rng)
                    context = (name, i, data[:200])
                    if rng.random() < 0.3:
                        for k in range(len(data)):
                            s.receive_data(data[k:k + 1])
                    else:
                        s.receive_data(data)
                    out = s.data_to_send()
                    self.check_output(out, context)
                    self.recover(s, out, context)

    def test_random_sequences_from_the_corpus(self):
        for i in range(ITERATIONS):
            rng = random.Random(777 + i)
            s, b = new_session(peer="127.0.0.1", backend=FakeBackend(sync=rng.random() < 0.7))
            for _ in range(rng.randint(1, 30)):
                line = rng.choice(CORPUS)
                if rng.random() < 0.3:
                    line = mutate(rng, line)
                s.receive_data(line + b"\r\n")
                if rng.random() < 0.3:
                    b.release()
                self.check_output(s.data_to_send(), (i, line))
            b.release()
            self.check_output(s.data_to_send(), i)


if __name__ == "__main__":
    unittest.main()
