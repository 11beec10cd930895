"""Fuzzing the grammar of OBJECTID (RFC 8474), PREVIEW (RFC 8970) and METADATA
(RFC 5464) against the real mail access (tests/test_imap_derived.py's
RealBackend over a temporary Maildir), as tests/test_imap_fuzz.py does for the
rest: valid, mutated and random lines, split at random points, in the
authenticated and selected states.  After every step no exception has escaped,
every response is well formed, and the annotations file still reads."""

import random
import shutil
import unittest

from store import metadata as md
from tests.imap_fake import FEEDERS, feed, login, make_session
from tests.test_imap_derived import RealBackend
from tests.test_imap_fuzz import ITERATIONS, _RESPONSE, mutate, responses

LINES = [
    b"a GETMETADATA INBOX /private/comment",
    b'a GETMETADATA "" (/shared/comment /shared/admin)',
    b"a GETMETADATA (MAXSIZE 10 DEPTH infinity) INBOX (/private /shared)",
    b"a GETMETADATA INBOX (DEPTH 1) (/private/filters)",
    b'a SETMETADATA INBOX (/private/comment "x" /shared/comment NIL)',
    b"a SETMETADATA INBOX (/private/vendor/vendor.x/k {3+}\r\nabc)",
    b"a SETMETADATA INBOX (/private/bin ~{2}\r\n\x00\x01)",
    b'a SETMETADATA "" (/private/x "y")',
    b"a STATUS INBOX (MAILBOXID MESSAGES)",
    b"a LIST \"\" * RETURN (STATUS (MAILBOXID))",
    b"a CREATE fz",
    b"a RENAME fz fz2",
    b"a DELETE fz2",
    b"a SELECT INBOX",
    b"a FETCH 1:* (EMAILID THREADID PREVIEW)",
    b"a FETCH 1:* (UID PREVIEW (LAZY) ENVELOPE)",
    b"a UID FETCH 1:* PREVIEW (LAZY)",
    b"a SEARCH EMAILID M0123",
    b"a SEARCH OR THREADID T1 NOT EMAILID Mabc",
    b"a COPY 1 fz",
    b"a MOVE 1 INBOX",
]
MESSAGES = [b"Subject: one\r\n\r\nplain text\r\n",
            b"Subject: two\r\nContent-Type: text/html\r\n\r\n<p>html &amp; text</p>\r\n"]


class ExtensionFuzzTest(unittest.TestCase):
    def check(self, out: bytes) -> None:
        for resp in responses(out):
            self.assertFalse(resp.startswith(b"* BYE"), resp[:120])
            self.assertTrue(_RESPONSE.match(resp), resp[:120])

    def walk(self, seed: int) -> None:
        rng = random.Random(seed)
        b = RealBackend()
        self.addCleanup(shutil.rmtree, b.dir, True)
        for data in MESSAGES[:rng.randint(0, 2)]:
            b.append(data)
        s, _ = make_session(b, max_bad_commands=1000)
        login(s)
        if rng.random() < 0.5:
            feed(s, b"z SELECT INBOX\r\n")
        for _ in range(rng.randint(1, 12)):
            pick = rng.random()
            if pick < 0.45:
                data = rng.choice(LINES) + b"\r\n"
            elif pick < 0.9:
                data = mutate(rng, rng.choice(LINES)) + b"\r\n"
            else:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            self.check(feed(s, data, rng.choice(FEEDERS), rng))
            if s.closed:
                break
        feed(s, b"\r\n" * 3 + b"zz NOOP\r\n")        # end any literal a mutation left open
        md.MetadataFile(b.store.maildir_path(b.USER)).load()
        s.receive_data(b"")
        self.assertTrue(s.closed)

    def test_walks(self):
        for seed in range(max(20, ITERATIONS // 5)):
            with self.subTest(seed=seed):
                self.walk(seed)


if __name__ == "__main__":
    unittest.main()
