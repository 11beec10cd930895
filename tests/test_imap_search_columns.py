"""SEARCH over a folder's shared columns (protocols/imap/search_kept.py,
search_columns.py, selected.py): the kept envelope values and their octet
search answer as search_eval does message by message, and the column a
folder's sessions share stays right across FETCH, APPEND, EXPUNGE, a
delivery by another process and a second session."""

from __future__ import annotations

import os
import shutil
import unittest
from unittest import mock

from protocols.backend.contracts import MessageMeta
from protocols.imap import derived, search_columns, search_eval, search_kept
from protocols.imap.search import search_args
from store.folder import open_folder
from tests.imap_fake import FakeImapBackend, FakeOpenFolder, feed, login, make_session
from tests.test_imap_derived import MESSAGES, RealBackend
from tests.test_imap_fetch_data import msg

# Field values a needle must not be found across, or found in the wrong field.
TRICKY = {
    "two_subjects": msg("Subject: alpha", "Subject: beta", "From: gamma@example.test", "", "x"),
    "no_subject": msg("From: a@example.test", "To: subject@example.test", "", "x"),
    "empty_subject": msg("Subject:", "Cc: c@example.test", "", "x"),
    "separators": msg("Subject: one\x1ftwo", "From: x\x1ey@example.test", "", "x"),
    "non_ascii": msg("Subject: =?utf-8?q?Stra=C3=9Fe_=E2=84=AA?=", "From: Jürgen <j@example.test>", "", "x"),
    "bcc_only": msg("Bcc: hidden@example.test", "Subject: invoice 42", "", "x"),
}
CORPUS = dict(MESSAGES, **TRICKY)

PROGRAMS = [b"SUBJECT e", b"SUBJECT invoice", b"SUBJECT \"\"", b"FROM example", b"TO subject", b"CC c@",
            b"BCC hidden", b"SUBJECT alphabeta", b"SUBJECT \"alpha beta\"", b"SUBJECT {7}\r\nstra\xc3\x9fe",
            b"SUBJECT STRASSE", b"SUBJECT k", b"FROM {7}\r\nj\xc3\xbcrgen", b"SUBJECT {7}\r\none\x1ftwo",
            b"FROM {3}\r\nx\x1ey", b"NOT SUBJECT e", b"OR SUBJECT alpha FROM gamma", b"SUBJECT e FROM example",
            b"SEEN SUBJECT e", b"UNSEEN", b"NOT DELETED", b"KEYWORD $label1", b"1:3 SUBJECT e",
            b"UID 2:5,9 NOT FROM x", b"$ OR SUBJECT e SUBJECT a", b"LARGER 100 SUBJECT e", b"ALL",
            b"OR (FLAGGED SUBJECT e) (NOT SEEN FROM a)", b"NOT (SUBJECT e NOT CC c)", b"RECENT SUBJECT e"]


def rows_of(corpus):
    """(rows, entries): row i is (seq, uid, meta, recent) with varied flags."""
    rows, entries = [], []
    flag_sets = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "\\Flagged"}),
                 frozenset({"$Label1"}), frozenset({"\\Deleted"})]
    for i, data in enumerate(corpus.values()):
        uid = 3 * i + 2
        meta = MessageMeta(uid, flag_sets[i % len(flag_sets)], len(data), 1.7e9 + i, i + 1)
        rows.append((i + 1, uid, meta, i % 3 == 0))
        entries.append(derived.compute(data))
    return rows, entries


class KeptValuesTest(unittest.TestCase):
    def test_the_item_decodes_to_the_values_search_eval_computes(self):
        for name, data in CORPUS.items():
            header = derived.compute(data).get("HEADER")
            if header is None:
                continue
            with self.subTest(message=name):
                mail = search_eval._Mail(header)
                want = {f: mail.values(f) for f in search_kept.FIELDS}
                item = search_kept.kept_values(header)[search_kept.KEPT_ITEM]
                self.assertEqual(search_kept.decode(item), want)
                self.assertEqual(search_kept.plain(item), name != "separators")

    def test_field_has_is_a_substring_of_one_value_of_that_field(self):
        groups = {b"from": ["ann <a@x>"], b"to": [], b"cc": [""], b"bcc": ["b", "c"],
                  b"subject": ["straße k", "zwei"]}
        item = search_kept.encode(groups)
        self.assertTrue(search_kept.plain(item))
        for needle in ["", "a", "ann", "<a@x>", "b", "bc", "c", "ße", "straße k", "zwei", "kzwei", "k zwei",
                       "x", "ann <a@x>b", "e", "z"]:
            for i, field in enumerate(search_kept.FIELDS):
                with self.subTest(needle=needle, field=field):
                    want = any(needle in v for v in groups[field])
                    self.assertEqual(search_kept.field_has(item, needle.encode(), i), want)

    def test_remembered_address_values_are_fresh_ones_and_bounded(self):
        header = b"From: =?utf-8?q?J=C3=BCrgen?= <J@X>\r\nTo: A <a@x>,\r\n B <b@x>\r\nSubject: Hi\r\n\r\n"
        first = search_kept.kept_values(header)
        self.assertIn(b"From: =?utf-8?q?J=C3=BCrgen?= <J@X>\r\n", search_kept._MEMO)
        self.assertEqual(search_kept._MEMO[b"From: =?utf-8?q?J=C3=BCrgen?= <J@X>\r\n"],
                         "JU\u0308RGEN <J@X>")     # i;unicode-casemap (RFC 5051): NFKD
        self.assertEqual(search_kept.kept_values(header), first)
        self.assertEqual(search_kept.decode(first[search_kept.KEPT_ITEM])[b"to"], ["A <A@X>, B <B@X>"])
        with mock.patch.object(search_kept, "_MEMO_MAX", 3):
            for n in range(10):
                search_kept.kept_values(b"From: n%d@x\r\n\r\n" % n)
                self.assertLessEqual(len(search_kept._MEMO), 3)
        long = b"To: " + b"x" * search_kept._MEMO_FIELD + b"\r\n\r\n"
        search_kept.kept_values(long)
        self.assertNotIn(long[:-2], search_kept._MEMO)

    def test_an_item_not_ours_is_refused(self):
        for raw in (None, b"", b"garbage", b"{\"from\": 3}", b"\x1f\x1e\x1e", b"\xff\x1e\x1e\x1e\x1e"):
            self.assertIsNone(search_kept.decode(raw), raw)
            self.assertFalse(search_kept.plain(raw), raw)


class SelectIsMatchesTest(unittest.TestCase):
    def test_select_answers_as_matches_for_every_program(self):
        rows, entries = rows_of(CORPUS)
        ctx = search_eval.SearchContext(largest_seq=len(rows), largest_uid=rows[-1][1], saved=(5, 8, 11),
                                        now=1.7e9 + 50, charset="utf-8")
        for text in PROGRAMS:
            key = search_args(b" " + text + b"\r\n").key
            self.assertTrue(search_columns.usable(key), text)
            keep = [i for i, e in enumerate(entries) if search_kept.plain(e.get(search_kept.KEPT_ITEM))]
            cols = search_columns.Rows([r[1] for r in rows], [r[2] for r in rows],
                                       {r[1] for r in rows if r[3]},
                                       [e.get(search_kept.KEPT_ITEM) for e in entries])
            want = [i for i in keep
                    if search_eval.matches(key, rows[i][0], rows[i][2], rows[i][3], entries[i]["HEADER"], ctx)]
            with self.subTest(program=text):
                self.assertEqual(search_columns.select(key, keep, cols, ctx), want)
                self.assertEqual(search_columns.reads_kept(key), search_eval.needs_content(key))
        self.assertGreater(len(keep), len(CORPUS) - 3)

    def test_other_content_keys_are_not_for_columns(self):
        for text in (b"BODY x", b"TEXT x", b"HEADER subject x", b"SENTON 1-Feb-2024", b"OR SUBJECT x BODY y"):
            self.assertFalse(search_columns.usable(search_args(b" " + text + b"\r\n").key), text)


class SessionColumnsAreMatchesTest(unittest.TestCase):
    """Whole SEARCH commands through a session: the same responses with the
    column path and message by message (search_columns.usable patched off)."""

    COMMANDS = [b"SEARCH " + p for p in PROGRAMS if not p.startswith(b"$")] + [
        b"UID SEARCH SUBJECT e", b"SEARCH RETURN (MIN MAX COUNT) FROM example",
        b"SEARCH CHARSET ISO-8859-1 SUBJECT {4}\r\nstra", b"SEARCH CHARSET ISO-8859-1 FROM {6}\r\nj\xfcrgen",
        b"SEARCH RETURN (SAVE) SUBJECT e", b"SEARCH $ NOT FROM x", b"UID SEARCH OR $ SUBJECT alpha"]

    def transcript(self, columns: bool) -> bytes:
        b = FakeImapBackend()
        for i, data in enumerate(CORPUS.values()):
            b.deliver("fred", data, flags=("\\Seen",) if i % 3 else ())
        s, _ = make_session(b)
        login(s)
        out = feed(s, b"s SELECT INBOX\r\n")
        with mock.patch.object(search_columns, "usable", search_columns.usable if columns else (lambda key: False)):
            for i, cmd in enumerate(self.COMMANDS):
                out += feed(s, b"c%d %s\r\n" % (i, cmd))
        return out

    def test_the_same_responses_both_ways(self):
        with_columns = self.transcript(True)
        self.assertEqual(with_columns, self.transcript(False))
        self.assertEqual(with_columns.count(b" OK SEARCH completed"), len(self.COMMANDS))
        self.assertIn(b"* SEARCH 1 ", with_columns)


class CountingDerived:
    """Counts the UIDs asked of OpenFolder.derived."""

    def __init__(self, test, cls):
        self.asked = []
        real = cls.derived

        def derived_(folder, uids, kind, compute, done):
            self.asked.extend(uids)
            return real(folder, uids, kind, compute, done)
        patch = mock.patch.object(cls, "derived", derived_)
        patch.start()
        test.addCleanup(patch.stop)


def numbers(out: bytes, tag: bytes = b"q"):
    line = [ln for ln in out.split(b"\r\n") if ln.startswith(b"* SEARCH")]
    assert len(line) == 1 and tag + b" OK" in out, out
    return [int(n) for n in line[0].split()[2:]]


class SessionColumnFakeTest(unittest.TestCase):
    def setUp(self):
        self.b = FakeImapBackend()
        for data in (b"Subject: invoice 1\r\n\r\nx\r\n", b"Subject: hello\r\n\r\nx\r\n",
                     b"Subject: Invoice 3\r\nFrom: bob\r\n\r\nx\r\n"):
            self.b.deliver("fred", data)
        self.calls = CountingDerived(self, FakeOpenFolder)

    def session(self):
        s, _ = make_session(self.b)
        login(s)
        self.assertIn(b"s OK", feed(s, b"s SELECT INBOX\r\n"))
        return s

    def test_a_fetch_fills_the_column_and_a_second_session_shares_it(self):
        s = self.session()
        feed(s, b"f FETCH 1:* (ENVELOPE)\r\n")
        self.assertEqual(self.calls.asked, [1, 2, 3])
        self.assertEqual(numbers(feed(s, b"q SEARCH SUBJECT invoice\r\n")), [1, 3])
        s2 = self.session()
        self.assertEqual(numbers(feed(s2, b"q UID SEARCH OR FROM bob SUBJECT hello\r\n")), [2, 3])
        self.assertEqual(self.calls.asked, [1, 2, 3], "no entry asked for again")

    def test_appended_and_expunged_messages(self):
        s = self.session()
        self.assertEqual(numbers(feed(s, b"q SEARCH SUBJECT invoice\r\n")), [1, 3])
        feed(s, b"a APPEND INBOX {25}\r\nSubject: invoice 4\r\n\r\nx\r\n\r\n")
        self.assertEqual(numbers(feed(s, b"q SEARCH SUBJECT invoice\r\n")), [1, 3, 4])
        self.assertEqual(self.calls.asked, [1, 2, 3, 4], "only the new message is asked for")
        feed(s, b"d STORE 1 +FLAGS (\\Deleted)\r\n")
        feed(s, b"e EXPUNGE\r\n")
        self.assertEqual(numbers(feed(s, b"q SEARCH SUBJECT invoice\r\n")), [2, 3])
        self.assertEqual(numbers(feed(s, b"q UID SEARCH SUBJECT invoice\r\n")), [3, 4])

    def test_a_message_expunged_by_another_session(self):
        s, s2 = self.session(), self.session()
        feed(s, b"q SEARCH SUBJECT invoice\r\n")
        feed(s2, b"d STORE 3 +FLAGS (\\Deleted)\r\n")
        feed(s2, b"e EXPUNGE\r\n")
        out = feed(s, b"q SEARCH SUBJECT invoice\r\n")
        # not announced yet: still found, as the cache still answers FETCH for it
        # (RFC 2180 §4.1.1; §4.3 allows leaving it out), and no EXPUNGE during SEARCH
        self.assertEqual(numbers(out), [1, 3])
        self.assertNotIn(b"EXPUNGE", out.split(b"q OK")[0])
        self.assertIn(b"* 3 EXPUNGE", feed(s, b"n NOOP\r\n"))
        self.assertEqual(numbers(feed(s, b"q SEARCH SUBJECT invoice\r\n")), [1])

    def test_prune_drops_expunged_uids_once_there_are_many(self):
        column = {uid: b"" for uid in range(1, 3000)}
        search_columns.prune(column, [1, 2, 2999])
        self.assertEqual(sorted(column), [1, 2, 2999])
        column[5000] = b""          # above the view: a message this session does not know yet
        search_columns.prune(column, [1, 2])
        self.assertEqual(sorted(column), [1, 2, 2999, 5000])


class SessionColumnRealTest(unittest.TestCase):
    """Over imapaccess.py and a Maildir: OpenFolder.shared, and another process's delivery."""

    def setUp(self):
        self.b = RealBackend()
        self.addCleanup(shutil.rmtree, self.b.dir, True)
        for data in CORPUS.values():
            self.b.append(data)
        self.path = self.b.store.maildir_path(RealBackend.USER)
        from protocols.backend.imapaccess import OpenFolder
        self.calls = CountingDerived(self, OpenFolder)

    def session(self):
        s, _ = make_session(self.b)
        login(s)
        self.assertIn(b"s OK", feed(s, b"s SELECT INBOX\r\n"))
        return s

    def expected(self, needle: str):
        folder = open_folder(self.path)
        out = []
        for i, m in enumerate(folder.sync().snapshot.messages):
            data = folder.read_crlf(m.uid)
            key = search_args(b" SUBJECT " + needle.encode() + b"\r\n").key
            ctx = search_eval.SearchContext(largest_seq=1, largest_uid=1, saved=(), now=0)
            meta = MessageMeta(m.uid, frozenset(), m.size, 0.0, 1)
            if search_eval.matches(key, i + 1, meta, False, data, ctx):
                out.append(m.uid)
        return out

    def test_delivery_by_another_process_append_and_expunge(self):
        s = self.session()
        self.assertEqual(numbers(feed(s, b"q UID SEARCH SUBJECT e\r\n")), self.expected("e"))
        asked = len(self.calls.asked)
        # another process (mutt, a second server) writes a message into new/
        name = os.path.join(self.path, "new", "1700000000.M1P1.elsewhere")
        with open(name, "wb") as f:
            f.write(b"Subject: fresh e-mail\n\nbody\n")
        with mock.patch("store.folder.MTIME_SLACK_S", 0):
            out = feed(s, b"n NOOP\r\n")
        self.assertIn(b"EXISTS", out)
        found = numbers(feed(s, b"q UID SEARCH SUBJECT e\r\n"))
        self.assertEqual(found, self.expected("e"))
        # only the new message, and the two without a column value, evaluated alone:
        # the one over MAX_HEADER and the one with separators in its fields (JSON form)
        self.assertEqual(len(self.calls.asked), asked + 3)
        feed(s, b"a APPEND INBOX {16}\r\nSubject: late\r\n\r\n\r\n")
        feed(s, b"d UID STORE %d +FLAGS (\\Deleted)\r\n" % found[0])
        feed(s, b"x EXPUNGE\r\n")
        self.assertEqual(numbers(feed(s, b"q UID SEARCH SUBJECT e\r\n")), self.expected("e"))
        self.assertEqual(numbers(feed(s, b"q UID SEARCH SUBJECT late\r\n")), self.expected("late"))
        s2 = self.session()
        asked = len(self.calls.asked)
        self.assertEqual(numbers(feed(s2, b"q UID SEARCH SUBJECT e\r\n")), self.expected("e"))
        self.assertEqual(len(self.calls.asked) - asked, 2, "a second session shares the column")


if __name__ == "__main__":
    unittest.main()
