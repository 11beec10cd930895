"""The IMAP message cache seen from the session (protocols/imap/derived.py,
fetching.py, selected.py over OpenFolder.derived): the cached answers are
byte for byte the uncached ones, and a second FETCH 1:* (ENVELOPE) over the
real backend (imapaccess.py, store/msgcache.py) opens no message file."""

from __future__ import annotations

import shutil
import tempfile
import unittest
from typing import List
from unittest import mock

from protocols import mime
from protocols.backend.hub import ChangeHub
from protocols.base import SessionContext
from protocols.backend import derive_read
from protocols.backend.imapaccess import ImapAccessService
from protocols.imap import derived, fetch_cache, fetch_data, search_eval
from protocols.imap.fetch_args import FetchAtt, Section
from protocols.imap.search import search_args
from store import msgcache
from store.folder import Folder, open_folder
from store.maildir import MailStore
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_fetch_data import CORPUS, msg

# Beyond the fetch_data corpus: folded and 8-bit fields, an encoded word, a
# header over derived.MAX_HEADER (answered from the file).
EXTRA = {
    "folded": msg("From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>",
                  "Subject: a long", "\tfolded subject", "To: x@example.test,", " y@example.test",
                  "Date: Sat, 3 Feb 2024 09:00:00 -0500", "", "body"),
    "eightbit_header": msg("Subject: Grüße", "From: ü@example.test", "", "x"),
    "huge_header": msg("Subject: huge", "X-Long: " + "y" * (derived.MAX_HEADER + 10), "", "body"),
}
MESSAGES = dict(CORPUS, **EXTRA)

HEADER_ATTS = [
    FetchAtt("RFC822.HEADER"),
    FetchAtt("BODY", Section(text="HEADER"), peek=True),
    FetchAtt("BODY", Section(text="HEADER"), partial=(3, 20), peek=True),
    FetchAtt("BODY", Section(text="HEADER.FIELDS", fields=("FROM", "SUBJECT", "DATE")), peek=True),
    FetchAtt("BODY", Section(text="HEADER.FIELDS", fields=("NOPE",)), peek=True),
    FetchAtt("BODY", Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT",)), peek=True),
]
ATTS = [FetchAtt("ENVELOPE"), FetchAtt("BODYSTRUCTURE"), FetchAtt("BODY")] + HEADER_ATTS
SEARCHES = [b"SUBJECT e", b"SUBJECT \"\"", b"FROM example", b"TO bob", b"CC x", b"BCC x",
            b"HEADER Content-Type multipart", b"HEADER X-Long yyy", b"NOT HEADER subject \"\"",
            b"SENTON 2-Feb-2024", b"SENTBEFORE 1-Jan-2030", b"SENTSINCE 1-Jan-2000",
            b"OR SUBJECT outer FROM list", "CHARSET UTF-8 SUBJECT \"Grüße\"".encode()]


class RenderFromEntryTest(unittest.TestCase):
    def test_every_cached_item_is_what_fetch_data_renders_from_the_message(self):
        for name, data in MESSAGES.items():
            root = mime.parse(data)
            entry = derived.compute(data)
            for att in ATTS:
                with self.subTest(message=name, att=att):
                    self.assertTrue(derived.cacheable(att))
                    got = derived.render(att, entry)
                    if got is None:
                        self.assertEqual(name, "huge_header")   # no header block kept: read the file
                        self.assertTrue(derived.needs_header(att))
                        continue
                    self.assertEqual(got, fetch_data.render(att, data, root))

    def test_only_sections_of_the_message_header_are_cacheable(self):
        for att in (FetchAtt("BODY", Section()), FetchAtt("BODY", Section(text="TEXT")),
                    FetchAtt("BODY", Section(part=(1,), text="MIME")),
                    FetchAtt("BODY", Section(part=(1,), text="HEADER")), FetchAtt("BINARY", Section()),
                    FetchAtt("RFC822"), FetchAtt("RFC822.TEXT"), FetchAtt("BODY", Section(part=(1,)))):
            self.assertFalse(derived.cacheable(att), att)

    def test_header_only_search_keys_answer_the_same_on_the_header_block(self):
        ctx = search_eval.SearchContext(largest_seq=1, largest_uid=1, saved=(), now=1.7e9,
                                        charset="utf-8", tz=None)
        meta = mock.Mock(uid=1, flags=frozenset(), size=10, internal_date=1.7e9, modseq=1)
        for text in SEARCHES:
            key = search_args(b" " + text + b"\r\n").key
            self.assertTrue(derived.header_only(key), text)
            for name, data in MESSAGES.items():
                entry = derived.compute(data)
                header = entry.get("HEADER")
                if header is None:
                    continue
                with self.subTest(search=text, message=name):
                    whole = search_eval.matches(key, 1, meta, False, data, ctx)
                    self.assertEqual(search_eval.matches(key, 1, meta, False, header, ctx), whole)
                    # the decoded values kept in the entry (search_eval.kept_values) give the same
                    self.assertEqual(search_eval.matches(key, 1, meta, False, header, ctx, entry), whole)
        for text in (b"BODY x", b"TEXT x", b"OR SUBJECT x BODY y", b"NOT TEXT y"):
            self.assertFalse(derived.header_only(search_args(b" " + text + b"\r\n").key), text)


def fake_mailbox():
    b = FakeImapBackend()
    for data in MESSAGES.values():
        b.deliver("fred", data)
    return b


COMMANDS = [b"FETCH 1:* (ENVELOPE)", b"FETCH 1:* (FLAGS BODYSTRUCTURE UID)", b"FETCH 1:* ALL",
            b"FETCH 1:* FULL", b"UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
            b"FETCH 1:* (RFC822.HEADER BODY.PEEK[HEADER]<0.7> BODY.PEEK[HEADER.FIELDS.NOT (TO)])",
            b"FETCH 2 (BODY[HEADER])", b"FETCH 1:* (ENVELOPE BODY.PEEK[TEXT])"] + \
    [b"SEARCH " + s for s in SEARCHES] + [b"UID SEARCH SUBJECT e BODY x"]


def transcript(cacheable) -> bytes:
    s, _ = make_session(fake_mailbox())
    login(s)
    out = feed(s, b"s SELECT INBOX\r\n")
    with mock.patch.object(derived, "cacheable", cacheable), \
            mock.patch.object(derived, "header_only", lambda key: cacheable(None) and orig_header_only(key)):
        for i, cmd in enumerate(COMMANDS):
            out += feed(s, b"c%d %s\r\n" % (i, cmd))
    return out


orig_header_only = derived.header_only
orig_cacheable = derived.cacheable


class SessionCachedIsUncachedTest(unittest.TestCase):
    def test_responses_are_byte_identical_with_and_without_the_cache(self):
        cached = transcript(lambda att: att is None or orig_cacheable(att))
        uncached = transcript(lambda att: False)
        self.assertEqual(cached, uncached)
        self.assertIn(b"ENVELOPE (", cached)
        self.assertIn(b"c8 OK", cached)


class RealBackend(FakeImapBackend):
    """The fake's authentication, the real mail access (imapaccess.py over a Maildir);
    the loop runs each worker step at once."""

    USER = "fred@example.org"

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mailsrv-imapderived-")
        self.store = MailStore(self.dir, "mx.example.org")
        self.service = ImapAccessService(self, self.store, ChangeHub(self, self.store.maildir_path))

    def run_in_thread(self, fn, callback):
        try:
            result = fn()
        except Exception as exc:
            result = exc
        callback(result)

    def call_soon(self, fn):
        fn()

    def call_later(self, delay, fn):
        return None

    def open_account(self, ctx, user, done):
        self.service.open_account(ctx, self.USER, done)

    def append(self, data: bytes) -> None:
        got: List[object] = []
        self.service.open_account(SessionContext(peer=("127.0.0.1", 1), listener="imap"), self.USER,
                                  got.append)     # makes the Maildir
        got[0].close()
        open_folder(self.store.maildir_path(self.USER)).append(data)


class SecondFetchOpensNoFileTest(unittest.TestCase):
    def setUp(self):
        self.b = RealBackend()
        self.addCleanup(shutil.rmtree, self.b.dir, True)
        for data in MESSAGES.values():
            self.b.append(data)
        self.reads: List[int] = []
        self.computes: List[int] = []
        real_read, real_compute = Folder.read_crlf, derived.compute
        real_head, real_block = fetch_cache.compute_head, derive_read._header_block

        def read_crlf(folder, uid):
            self.reads.append(uid)
            return real_read(folder, uid)

        def compute(data):
            self.computes.append(1)
            return real_compute(data)
        def compute_head(data):      # the header-only entries (ENVELOPE, HEADER, SEARCH values)
            self.computes.append(1)
            return real_head(data)
        compute_head.header_end = real_head.header_end

        def header_block(path, header_end):
            self.reads.append(path)
            return real_block(path, header_end)
        for patch in (mock.patch.object(Folder, "read_crlf", read_crlf),
                      mock.patch.object(derived, "compute", compute),
                      mock.patch.object(fetch_cache, "compute_head", compute_head),
                      mock.patch.object(derive_read, "_header_block", header_block)):
            patch.start()
            self.addCleanup(patch.stop)

    def session(self):
        s, _ = make_session(self.b)
        login(s)
        self.assertIn(b"s OK", feed(s, b"s SELECT INBOX\r\n"))
        return s

    def test_the_second_fetch_envelope_opens_no_message_file(self):
        n = len(MESSAGES)
        first = feed(self.session(), b"f FETCH 1:* (ENVELOPE)\r\n")
        self.assertEqual((len(self.reads), len(self.computes)), (n, n))
        self.assertEqual(first.count(b" FETCH (ENVELOPE ("), n)
        s = self.session()                                 # a new session, the cache on disk
        self.assertEqual(feed(s, b"f FETCH 1:* (ENVELOPE)\r\n"), first)
        headers = feed(s, b"h FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n")
        found = feed(s, b"q SEARCH SUBJECT e\r\n")
        self.assertEqual(len(self.computes), n)
        self.assertEqual(len(self.reads), n + 2, "only the message over MAX_HEADER is read, twice")
        self.assertIn(b"h OK", headers)
        self.assertIn(b"q OK", found)

    def test_cached_fetches_do_not_rescan_the_folder_while_its_uidlist_is_young(self):
        """The UIDs' keys come from the last snapshot: no directory listing per
        batch during the MTIME_SLACK_S after the uidlist was written."""
        s = self.session()
        feed(s, b"f FETCH 1:* (ENVELOPE)\r\n")
        with mock.patch.object(Folder, "_scan", side_effect=AssertionError("rescanned")):
            out = feed(s, b"g FETCH 1:* (ENVELOPE)\r\n") + feed(s, b"q SEARCH SUBJECT e\r\n")
        self.assertIn(b"g OK", out)
        self.assertIn(b"q OK", out)

    def test_a_lost_cache_is_rebuilt(self):
        n = len(MESSAGES)
        feed(self.session(), b"f FETCH 1:* (BODYSTRUCTURE)\r\n")
        path = self.b.store.maildir_path(RealBackend.USER)
        msgcache.cache_for(path).close()
        with open(msgcache.os.path.join(path, msgcache.CACHE_FILE), "r+b") as f:
            f.write(b"garbage!")
        out = feed(self.session(), b"f FETCH 1:* (BODYSTRUCTURE)\r\n")
        self.assertEqual(len(self.computes), 2 * n)
        self.assertEqual(out.count(b"BODYSTRUCTURE ("), n)
        feed(self.session(), b"f FETCH 1:* (BODYSTRUCTURE)\r\n")
        self.assertEqual(len(self.computes), 2 * n)


if __name__ == "__main__":
    unittest.main()
