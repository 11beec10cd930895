"""Fuzzing the grammar of CATENATE (RFC 4469 §5), IMAP URLs (RFC 5092 §11),
REPLACE (RFC 8508 §5) and PARTIAL (RFC 9394 §4): valid lines, mutated and
split at random points, in the authenticated and selected states, with a backend that answers
at once or later.  No exception escapes the session, every response is
``* ...``, ``+ ...`` or ``tag OK/NO/BAD ...``, the folders opened for URLs
are closed again, and a closed session releases its watches."""

import os
import random
import unittest

from protocols.imap import imapurl
from unittest import mock

from tests.imap_fake import FEEDERS, FakeImapBackend, FakeOpenFolder, drain, feed, login, make_session
from tests.test_imap_fuzz import _RESPONSE, mutate, responses

ITERATIONS = int(os.environ.get("MAILSRV_FUZZ_ITERATIONS", "150"))
CORPUS = [
    b'a APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;SECTION=1.MIME" TEXT {3+}\r\nabc URL "/INBOX;UIDVALIDITY=1000/;UID=2")',
    b'a APPEND Drafts (\\Seen) CATENATE (TEXT {4}',
    b'a APPEND Drafts {3+}\r\nxyz CATENATE (URL "imap://fred@imap.example.test/Sent/;UID=1/;PARTIAL=2.5")',
    b'a APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)/;PARTIAL=0")',
    b'a APPEND Trash CATENATE (URL "/../INBOX/./;UID=2/;SECTION=TEXT" URL {17+}\r\n/INBOX/;UID=1/;SE)',
    b'a REPLACE 1 Drafts {3+}\r\nabc', b'a UID REPLACE 2 INBOX (\\Draft) CATENATE (URL "/INBOX/;UID=2")',
    b'a REPLACE 2 Sent "01-Jan-2020 00:00:00 +0000" {1}', b'x',
    b'a UID SEARCH RETURN (PARTIAL -1:-2 COUNT SAVE) ALL', b'a SEARCH RETURN (PARTIAL 1:5 MIN MAX) UNSEEN',
    b'a UID FETCH 1:* (FLAGS UID) (PARTIAL -1:-50)', b'a UID FETCH 2:* FLAGS (PARTIAL 1:1)', b'a FETCH $ FLAGS',
    b'a NOOP', b'a EXPUNGE', b'a UID STORE 1:* +FLAGS (\\Deleted)',
]


class AppendxFuzzTest(unittest.TestCase):
    def test_random_walks_never_raise(self):
        self.walk(random.Random(4469), deferred=False)

    def test_random_walks_with_a_backend_that_answers_later(self):
        self.walk(random.Random(8508), deferred=True)

    def walk(self, rng, deferred):
        opened = []
        init = FakeOpenFolder.__init__

        def recording(folder, *args):
            init(folder, *args)
            opened.append(folder)
        with mock.patch.object(FakeOpenFolder, "__init__", recording):
            self._walk(rng, deferred)
        self.assertTrue(any(f.readonly for f in opened))         # URLs opened folders ...
        self.assertEqual([f for f in opened if not f.closed], [])  # ... and every one was closed

    def _walk(self, rng, deferred):
        for _run in range(ITERATIONS):
            b = FakeImapBackend()
            b.deliver("fred", b"Subject: a\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\none\r\n--x--\r\n")
            b.deliver("fred", b"Subject: b\r\n\r\nmore\r\n", flags=("\\Seen",))
            s, _ = make_session(b, max_bad_commands=1000)
            login(s)
            if rng.random() < 0.75:     # else the authenticated state: APPEND CATENATE there too
                feed(s, b"z SELECT INBOX\r\n")
            for _ in range(rng.randint(5, 30)):
                line = rng.choice(CORPUS)
                data = (mutate(rng, line) if rng.random() < 0.6 else line) + b"\r\n"
                b.deferred = deferred and rng.random() < 0.7
                out = feed(s, data, rng.choice(FEEDERS), rng)
                if rng.random() < 0.5:
                    b.deferred = False
                    b.run_pending()
                    out += drain(s)
                for resp in responses(out):
                    self.assertTrue(_RESPONSE.match(resp), resp[:120])
                if s.closed:
                    break
            s.receive_data(b"")
            b.deferred = False
            b.run_pending()
            self.assertTrue(s.closed)
            for box in b.boxes["fred"].values():
                self.assertEqual([w for w in box.watchers if getattr(w, "__self__", None) is s], [])

    def test_url_parser_answers_a_value_or_badurl(self):
        rng = random.Random(5092)
        seeds = [b"/INBOX;UIDVALIDITY=1/;UID=2/;SECTION=1.2.MIME/;PARTIAL=0.10",
                 b"imap://fred;AUTH=*@imap.example.test:143/a%2Fb/;UID=9", b"//fred@imap.example.test/x/;UID=1"]
        for _ in range(3000):
            url = mutate(rng, rng.choice(seeds))
            try:
                imapurl.parse(url, "fred", "imap.example.test")
            except imapurl.BadUrl:
                pass


if __name__ == "__main__":
    unittest.main()
