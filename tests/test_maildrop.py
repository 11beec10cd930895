"""store/maildrop.py: POP3's locked, numbered view of INBOX (RFC 1939 §4-§7, §11)."""

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock

from store.maildrop import DeleteFailed, MaildropLocked, open_maildrop, pop3_uid
from store.dovecot_files import UIDLIST
from store.folder import Folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UIDL_RE = re.compile(rb"[\x21-\x7e]{1,70}\Z")      # RFC 1939 §7 unique-id


def make_maildir(parent: str) -> str:
    path = os.path.join(parent, "alice")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub))
    return path


def deliver(box: str, name: str, data: bytes, sub: str = "new") -> str:
    path = os.path.join(box, sub, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def named(sec: int, q: int, data: bytes) -> str:
    """store/maildir.py's name form: unique name + ,S=<size of the CRLF file>."""
    return "%d.M%dP77Q%dR%016x.mx.example.test,S=%d" % (sec, q, q, q, len(data))


MSG1 = b"Subject: one\r\n\r\nfirst\r\n"
MSG2 = b"Subject: two\r\n\r\nsecond\r\n.dot line\r\n"
MSG3 = b"Subject: three\r\n\r\nthird\r\n"


class MaildropTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="maildrop-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.box = make_maildir(self.tmp)
        # delivered out of order on disk: numbering must follow delivery (UID) order
        self.names = [named(1000, 1, MSG1), named(1000, 2, MSG2), named(1001, 3, MSG3)]
        for name, data in zip(reversed(self.names), (MSG3, MSG2, MSG1)):
            deliver(self.box, name, data)

    def open(self):
        drop = open_maildrop(self.box)
        self.addCleanup(drop.close)
        return drop


class NumberingTests(MaildropTestCase):
    def test_messages_numbered_by_uid_with_sizes(self):
        drop = self.open()
        self.assertEqual([m.key for m in drop.messages], self.names)
        self.assertEqual([m.imap_uid for m in drop.messages], [1, 2, 3])
        self.assertEqual([m.size for m in drop.messages], [len(MSG1), len(MSG2), len(MSG3)])
        self.assertEqual(drop.total_size, len(MSG1) + len(MSG2) + len(MSG3))
        with drop.open_message(1) as f:
            self.assertEqual(f.read(), MSG2)

    def test_uidl_strings_are_valid_and_unique(self):
        long_key = "1002.M1P1Q1R00.a-rather-long-host-name.mail-cluster-07.example.test,S=%d" % len(MSG1)
        deliver(self.box, long_key, MSG1)
        deliver(self.box, "1003.sp ace.host", MSG1)
        drop = self.open()
        uids = [m.uid for m in drop.messages]
        self.assertEqual(len(set(uids)), 5)
        for uid in uids:
            self.assertRegex(uid.encode("ascii"), UIDL_RE)
        self.assertEqual(uids[0], self.names[0])             # keys that fit are used as they are
        self.assertGreater(len(long_key), 70)
        self.assertTrue(uids[3].startswith("H") and len(uids[3]) == 41)  # the rest hashed
        self.assertTrue(uids[4].startswith("H"))

    def test_pop3_uid_never_confuses_a_key_with_a_hash(self):
        self.assertNotEqual(pop3_uid("H" + "0" * 40), "H" + "0" * 40)
        self.assertEqual(pop3_uid("a" * 71), pop3_uid("a" * 71))
        self.assertRegex(pop3_uid("sp ace").encode(), UIDL_RE)

    def test_lf_only_file_reports_crlf_size(self):
        lf = b"Subject: mutt\n\nbody line\n.dot\n"
        deliver(self.box, "1002.mutt1.host:2,S", lf, sub="cur")
        drop = self.open()
        msg = drop.messages[3]
        self.assertEqual(msg.size, len(lf.replace(b"\n", b"\r\n")))   # RFC 1939 §11
        with drop.open_message(3) as f:
            self.assertEqual(f.read(), lf)                               # stored form served raw

    def test_index_out_of_range(self):
        drop = self.open()
        with self.assertRaises(IndexError):
            drop.open_message(3)

    def test_missing_maildir_is_created_empty(self):
        drop = open_maildrop(os.path.join(self.tmp, "bob"))
        self.addCleanup(drop.close)
        self.assertEqual(drop.messages, [])


class StableUidTests(MaildropTestCase):
    def test_uid_stable_after_mark_seen(self):
        with self.open() as drop:
            before = [m.uid for m in drop.messages]
            drop.mark_seen(0)
        self.assertTrue(os.path.exists(os.path.join(self.box, "cur", self.names[0] + ":2,S")))
        with self.open() as drop:
            with drop.open_message(0) as f:                   # the moved file is served
                self.assertEqual(f.read(), MSG1)
        with self.open() as again:
            self.assertEqual([m.uid for m in again.messages], before)

    def test_seen_marks_are_applied_at_quit_in_one_change_skipping_deleted(self):
        drop = self.open()
        drop.mark_seen(0)
        drop.mark_seen(2)
        self.assertEqual(os.listdir(os.path.join(self.box, "cur")), [])
        drop.commit_deletes([2])                              # QUIT: RFC 1939 §6 UPDATE
        self.assertEqual(os.listdir(os.path.join(self.box, "cur")), [self.names[0] + ":2,S"])
        self.assertEqual(os.listdir(os.path.join(self.box, "new")), [self.names[1]])

    def test_mark_seen_keeps_flags_set_by_others(self):
        drop = self.open()
        os.rename(os.path.join(self.box, "new", self.names[1]),
                  os.path.join(self.box, "cur", self.names[1] + ":2,F"))
        drop.mark_seen(1)
        drop.close()                                          # \Seen applied when the session ends
        self.assertEqual(os.listdir(os.path.join(self.box, "cur")), [self.names[1] + ":2,FS"])

    def test_open_message_follows_an_outside_rename(self):
        drop = self.open()
        before = [m.uid for m in drop.messages]
        os.rename(os.path.join(self.box, "new", self.names[2]),
                  os.path.join(self.box, "cur", self.names[2] + ":2,RS"))
        with drop.open_message(2) as f:
            self.assertEqual(f.read(), MSG3)
        drop.close()
        self.assertEqual([m.uid for m in self.open().messages], before)

    def test_open_message_of_a_vanished_file_raises(self):
        drop = self.open()
        os.unlink(os.path.join(self.box, "new", self.names[0]))
        with self.assertRaises(FileNotFoundError):
            drop.open_message(0)
        drop.mark_seen(0)                                     # nothing to mark: no error

    def test_uid_survives_a_lost_uid_index(self):
        with self.open() as drop:
            before = [m.uid for m in drop.messages]
        os.unlink(os.path.join(self.box, UIDLIST))
        self.assertEqual([m.uid for m in self.open().messages], before)


class DeleteTests(MaildropTestCase):
    def test_commit_deletes_removes_files_and_index_entries(self):
        with self.open() as drop:
            kept = drop.messages[1]
            drop.commit_deletes([0, 2])
        self.assertEqual(os.listdir(os.path.join(self.box, "new")), [self.names[1]])
        snap = Folder(self.box).snapshot()
        self.assertEqual([(e.uid, e.key) for e in snap.messages], [(2, self.names[1])])
        self.assertEqual(snap.uidnext, 4)                     # UIDs of deleted mail are not reused
        with self.open() as again:
            self.assertEqual(again.messages, [kept])

    def test_commit_deletes_tolerates_files_already_gone(self):
        drop = self.open()
        drop.mark_seen(0)
        os.unlink(os.path.join(self.box, "new", self.names[0]))
        drop.commit_deletes([0])
        self.assertEqual(len(Folder(self.box).snapshot().messages), 2)

    def test_commit_deletes_reports_failures(self):
        drop = self.open()
        real_unlink = os.unlink

        def unlink(path, *a, **kw):
            if self.names[1] in path:
                raise PermissionError(13, "denied")
            return real_unlink(path, *a, **kw)
        with mock.patch("store.folder.os.unlink", unlink), \
                self.assertLogs("mailsrv.store.folder", "WARNING"), \
                self.assertRaises(DeleteFailed) as cm:
            drop.commit_deletes([0, 1, 2])
        self.assertEqual(cm.exception.indices, [1])
        self.assertIsInstance(cm.exception, OSError)
        self.assertEqual(os.listdir(os.path.join(self.box, "new")), [self.names[1]])


CHILD = r"""
import sys
from store.maildrop import open_maildrop
drop = open_maildrop(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


class LockTests(MaildropTestCase):
    def test_second_open_in_the_same_process_is_refused(self):
        drop = open_maildrop(self.box)
        with self.assertRaises(MaildropLocked):
            open_maildrop(self.box)
        drop.close()
        drop.close()                                          # idempotent
        self.assertTrue(drop.closed)
        self.open().close()

    def test_context_manager_releases(self):
        with open_maildrop(self.box):
            with self.assertRaises(MaildropLocked):
                open_maildrop(self.box)
        self.open()

    def test_threads_racing_for_the_lock_get_it_once(self):
        barrier, results = threading.Barrier(8), []

        def race():
            barrier.wait(10)
            try:
                results.append(open_maildrop(self.box))
            except MaildropLocked:
                results.append(None)
        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [r for r in results if r is not None]
        self.assertEqual((len(results), len(winners)), (8, 1))
        winners[0].close()

    def test_lock_of_a_killed_process_is_released(self):
        env = dict(os.environ, PYTHONPATH=ROOT)
        child = subprocess.Popen([sys.executable, "-c", CHILD, self.box], cwd=ROOT, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(lambda: child.poll() is None and child.kill())
        ready, _, _ = select.select([child.stdout], [], [], 30)
        self.assertTrue(ready, "child did not take the lock in time")
        self.assertEqual(child.stdout.readline(), b"locked\n")
        with self.assertRaises(MaildropLocked):
            open_maildrop(self.box)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdin.close()
        child.stdout.close()
        self.assertEqual(len(self.open().messages), 3)


class StoreTests(unittest.TestCase):
    def test_open_by_user_through_a_mailstore(self):
        try:
            from store.maildir import MailStore
        except ImportError:                                    # pragma: no cover
            self.skipTest("store/maildir.py not available")
        tmp = tempfile.mkdtemp(prefix="maildrop-store-")
        self.addCleanup(shutil.rmtree, tmp, True)
        store = MailStore(tmp, hostname="mx.example.test")
        with open_maildrop(store, "alice@example.test") as drop:
            self.assertEqual(drop.messages, [])
            self.assertEqual(drop.path, store.maildir_path("alice@example.test"))
        name = store.unique_name(len(MSG1))
        deliver(drop.path, name, MSG1)
        with open_maildrop(store, "alice@example.test") as drop:
            self.assertEqual([(m.key, m.size) for m in drop.messages], [(name, len(MSG1))])


if __name__ == "__main__":
    unittest.main()
