"""STORE on many messages (protocols/backend/imapstore.py, imapaccess.py's
store, view.py's ``stored``, selected.py): it changes exactly the messages
that needed it, each of those gets a new MODSEQ and the others none
(RFC 7162 §3.1), the storing session is not told its own change a second
time while other sessions are, and the metadata is built once."""

from __future__ import annotations

import os
import shutil
import unittest

from protocols.backend.contracts import MessageMeta
from protocols.imap.view import FolderView
from protocols.backend.contracts import FolderState
from store.folder import open_folder
from tests.imap_fake import feed, login, make_session
from tests.test_imap_derived import RealBackend
from tests.test_imapaccess import MSG, AccessTestCase


class BackendStoreTest(AccessTestCase):
    def setUp(self):
        super().setUp()
        self.append("INBOX", *[(MSG, ("\\Flagged",) if i % 2 else ()) for i in range(6)])
        self.path = self.store.maildir_path("bob@example.org")

    def files(self):
        snap = open_folder(self.path).sync().snapshot
        return {m.uid: (m.path, m.modseq) for m in snap.messages}

    def test_store_1_to_star_changes_only_the_messages_that_needed_it(self):
        one = self.select()
        before = self.files()
        out = self.ok(lambda done: one.store([1, 2, 3, 4, 5, 6], ["\\Flagged"], "add", None, done))
        after = self.files()
        self.assertEqual([m.uid for m in out.changed], [1, 3, 5])
        for uid in (2, 4, 6):
            self.assertEqual(after[uid], before[uid], "an unchanged message keeps its file and MODSEQ")
        top = max(m for _p, m in before.values())
        for uid in (1, 3, 5):
            self.assertNotEqual(after[uid][0], before[uid][0])
            self.assertGreater(after[uid][1], top, "each changed message gets a new MODSEQ")
        self.assertEqual([m.modseq for m in out.changed], [after[u][1] for u in (1, 3, 5)])
        self.assertTrue(all("\\Flagged" in m.flags for m in out.changed))

    def test_the_storing_session_is_not_told_again_but_the_others_are(self):
        one = self.select()
        two = self.select(account=self.open_account())
        out = self.ok(lambda done: one.store([1, 2, 3, 4, 5, 6], ["\\Flagged"], "remove", None, done))
        self.assertEqual([m.uid for m in out.changed], [2, 4, 6])
        mine, theirs = self.ok(one.refresh), self.ok(two.refresh)
        self.assertEqual(mine.changed, ())
        self.assertEqual(theirs.changed, (2, 4, 6))
        self.assertEqual(mine.state.messages, theirs.state.messages)
        for meta in out.changed:        # built once: the store's answer is what the refresh shares
            self.assertIs(mine.state.messages[meta.uid - 1], meta)
        self.assertEqual(mine.state.highestmodseq, max(m.modseq for m in out.changed))

    def test_the_storing_session_is_not_woken_by_its_own_store(self):
        one = self.select()
        two = self.select(account=self.open_account())
        heard = []
        one.watch(lambda: heard.append("one"))
        two.watch(lambda: heard.append("two"))
        self.ok(lambda done: one.store([1], ["\\Seen"], "add", None, done))
        self.assertEqual(heard, ["two"])
        self.ok(lambda done: two.store([1], ["\\Flagged"], "add", None, done))
        self.assertEqual(heard, ["two", "one"])
        self.ok(lambda done: one.store([1], ["\\Seen"], "add", None, done))   # nothing changed
        self.assertEqual(heard, ["two", "one", "two"])
        self.assertEqual(self.ok(one.refresh).changed, (1,), "two's change, not its own")


def view_of(flags_list, rev2=False):
    metas = tuple(MessageMeta(i + 1, frozenset(f), 10, 1.7e9, 1) for i, f in enumerate(flags_list))
    return FolderView(FolderState(1, len(metas) + 1, 1, metas, (), frozenset({3})), rev2, False)


class ViewStoredTest(unittest.TestCase):
    def test_stored_is_update_then_flag_fetch_for_each(self):
        for rev2 in (False, True):
            for silent in (False, True):
                for with_uid in (False, True):
                    a, b = view_of([(), ("\\Seen",), (), ("$X",), ()], rev2), view_of([(), ("\\Seen",), (), ("$X",), ()], rev2)
                    for v in (a, b):
                        v.gone.add(4)
                        v.update(MessageMeta(2, frozenset({"\\Deleted"}), 10, 1.7e9, 2))   # another session's
                    changed = [MessageMeta(u, frozenset({"\\Flagged", "$X"} if u != 5 else {"\\Seen"}), 10, 1.7e9, 3)
                               for u in (1, 3, 4, 5)]
                    got = a.stored(changed, [1, 2, 3, 4, 5, 9], with_uid, silent)
                    want = b""
                    for meta in changed:
                        b.update(meta)
                    for uid in (1, 2, 3, 5):
                        if silent:
                            b.mark_shown(uid)
                        else:
                            want += b.flag_fetch(uid, with_uid)
                    with self.subTest(rev2=rev2, silent=silent, with_uid=with_uid):
                        self.assertEqual(got, want)
                        self.assertEqual((a.metas, a.shown, a.flag_dirty), (b.metas, b.shown, b.flag_dirty))
                        self.assertEqual(a.flush(True), b.flush(True))


class SessionStoreTest(unittest.TestCase):
    def setUp(self):
        self.b = RealBackend()
        self.addCleanup(shutil.rmtree, self.b.dir, True)
        for i in range(5):
            self.b.append(b"Subject: %d\r\n\r\nx\r\n" % i)

    def session(self):
        s, _ = make_session(self.b)
        login(s)
        feed(s, b"e ENABLE IMAP4rev2\r\n")      # no \\Recent in the FETCH responses
        self.assertIn(b"s OK", feed(s, b"s SELECT INBOX\r\n"))
        return s

    def test_store_1_to_star_answers_each_once_and_the_other_session_hears(self):
        one, two = self.session(), self.session()
        feed(one, b"a STORE 2 +FLAGS.SILENT (\\Seen)\r\n")
        out = feed(one, b"b STORE 1:* +FLAGS (\\Seen)\r\n")
        self.assertEqual(out, b"".join(b"* %d FETCH (FLAGS (\\Seen))\r\n" % n for n in range(1, 6)) +
                         b"b OK STORE completed\r\n")
        self.assertEqual(feed(one, b"n NOOP\r\n"), b"n OK NOOP completed\r\n")
        heard = feed(two, b"n NOOP\r\n")
        self.assertEqual(heard.count(b"FETCH (FLAGS (\\Seen))"), 5)
        path = self.b.store.maildir_path(RealBackend.USER)
        self.assertEqual(sorted(n.rsplit(":2,", 1)[1] for n in os.listdir(os.path.join(path, "cur"))),
                         ["S"] * 5)


if __name__ == "__main__":
    unittest.main()
