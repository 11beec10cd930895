"""store/maildir.py: Maildir++ layout, unique names, mailbox lifecycle."""

import mailbox
import os
import re
import shutil
import stat
import tempfile
import unittest
from unittest import mock

from store.dovecot_files import read_subscriptions
from store.deliver import FileOps
from store.maildir import DEFAULT_FOLDERS, MailStore


class MailStoreTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-maildir-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = MailStore(self.dir, "mx.example.org")

    def test_maildir_path_layout(self):
        self.assertEqual(self.store.maildir_path("Alice@Example.ORG"),
                         os.path.join(self.dir, "mail", "example.org", "alice"))

    def test_maildir_path_refuses_unsafe_local_parts(self):
        for bad in ["../x@example.org", "a/b@example.org", ".hidden@example.org",
                    "a\x00b@example.org", "x@../example.org", "nodomain"]:
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, self.store.maildir_path, bad)

    def test_create_mailbox_layout(self):
        self.store.create_mailbox("alice@example.org")
        root = self.store.maildir_path("alice@example.org")
        for sub in ("cur", "new", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(root, sub)))
        self.assertEqual(stat.S_IMODE(os.stat(root).st_mode), 0o700)
        for name in DEFAULT_FOLDERS:
            fpath = os.path.join(root, "." + name)
            for sub in ("cur", "new", "tmp"):
                self.assertTrue(os.path.isdir(os.path.join(fpath, sub)))
            self.assertTrue(os.path.isfile(os.path.join(fpath, "maildirfolder")))
        self.assertEqual(read_subscriptions(root), list(DEFAULT_FOLDERS))
        with open(os.path.join(root, "subscriptions")) as fh:
            self.assertTrue(fh.read().startswith("V\t2\n\n"), "Dovecot's version 2 form")

    def test_subscriptions_rename_is_made_durable(self):
        # Dovecot's subscriptions file is replaced under its dotlock: fsync, rename,
        # and the directory fsync (store/dovecot_files.py, through store/fsutil.py).
        synced = []
        with mock.patch("store.fsutil.fsync_dir", side_effect=synced.append):
            self.store.create_mailbox("alice@example.org")
        root = self.store.maildir_path("alice@example.org")
        self.assertIn(root, synced)
        self.assertEqual([n for n in os.listdir(root) if ".tmp" in n], [])

    def test_delivery_file_ops_are_fsutil(self):
        synced, written = [], []
        with mock.patch("store.fsutil.fsync_dir", side_effect=synced.append), \
                mock.patch("store.fsutil.write_all", side_effect=lambda fd, d: written.append(d)):
            FileOps().fsync_dir(self.dir)
            FileOps().write_all(-1, b"x")
        self.assertEqual((synced, written), ([self.dir], [b"x"]))

    def test_stdlib_mailbox_reads_it(self):
        self.store.create_mailbox("alice@example.org")
        md = mailbox.Maildir(self.store.maildir_path("alice@example.org"), factory=None,
                             create=False)
        self.assertEqual(sorted(md.list_folders()), sorted(DEFAULT_FOLDERS))
        self.assertEqual(len(md), 0)
        sent = md.get_folder("Sent")
        key = sent.add(b"Subject: hi\r\n\r\nbody\r\n")
        self.assertEqual(self.store.folder_path("alice@example.org", "Sent"),
                         os.path.join(md._path, ".Sent"))
        self.assertTrue(os.listdir(os.path.join(md._path, ".Sent", "new"))[0].startswith(key))

    def test_create_is_idempotent_and_keeps_subscriptions(self):
        self.store.create_mailbox("alice@example.org")
        root = self.store.maildir_path("alice@example.org")
        with open(os.path.join(root, "subscriptions"), "a") as fh:
            fh.write("Lists\tDovecot\n")              # version 2: levels separated by TAB
        with open(os.path.join(root, "new", "keep"), "w") as fh:
            fh.write("x")
        self.store.create_mailbox("ALICE@example.org")
        self.assertEqual(read_subscriptions(root), list(DEFAULT_FOLDERS) + ["Lists.Dovecot"])
        self.assertEqual(os.listdir(os.path.join(root, "new")), ["keep"])
        self.assertFalse([n for n in os.listdir(root) if ".tmp." in n])

    def test_create_repairs_missing_subdir(self):
        self.store.create_mailbox("alice@example.org")
        root = self.store.maildir_path("alice@example.org")
        os.rmdir(os.path.join(root, "new"))
        self.store.create_mailbox("alice@example.org")
        self.assertTrue(os.path.isdir(os.path.join(root, "new")))

    def test_folder_path(self):
        root = self.store.maildir_path("alice@example.org")
        self.assertEqual(self.store.folder_path("alice@example.org", "INBOX"), root)
        self.assertEqual(self.store.folder_path("alice@example.org", "inbox"), root)
        self.assertEqual(self.store.folder_path("alice@example.org", "Trash"),
                         os.path.join(root, ".Trash"))
        self.assertEqual(self.store.folder_path("alice@example.org", "Lists.python"),
                         os.path.join(root, ".Lists.python"))
        for bad in ["", "a/b", ".x", "x.", "a..b", "x\x00"]:
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, self.store.folder_path, "alice@example.org", bad)

    def test_delete_mailbox_moves_aside(self):
        self.store.create_mailbox("alice@example.org")
        root = self.store.maildir_path("alice@example.org")
        with open(os.path.join(root, "new", "msg"), "w") as fh:
            fh.write("keep me")
        moved = self.store.delete_mailbox("alice@example.org")
        self.assertFalse(os.path.exists(root))
        self.assertEqual(os.path.dirname(moved), os.path.join(self.dir, "mail", ".deleted"))
        self.assertTrue(os.path.basename(moved).startswith("alice@example.org."))
        with open(os.path.join(moved, "new", "msg")) as fh:
            self.assertEqual(fh.read(), "keep me")
        self.assertIsNone(self.store.delete_mailbox("alice@example.org"))
        self.store.create_mailbox("alice@example.org")   # a new, empty mailbox
        self.assertEqual(os.listdir(os.path.join(root, "new")), [])

    def test_unique_name_format(self):
        pid = os.getpid()
        name = self.store.unique_name(4096)
        m = re.fullmatch(r"(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{16})\.mx\.example\.org,S=4096", name)
        self.assertIsNotNone(m, name)
        self.assertEqual(int(m.group(3)), pid)
        self.assertLess(int(m.group(2)), 1000000)

    def test_unique_names_differ(self):
        names = {self.store.unique_name(1) for _ in range(2000)}
        self.assertEqual(len(names), 2000)
        qs = [int(re.search(r"Q(\d+)", self.store.unique_name(1)).group(1)) for _ in range(3)]
        self.assertEqual(qs, [qs[0], qs[0] + 1, qs[0] + 2])

    def test_hostname_escaping(self):
        # maildir spec: "/" → \057, ":" → \072
        store = MailStore(self.dir, "we/ird:host")
        self.assertTrue(store.unique_name(7).endswith(".we\\057ird\\072host,S=7"))
        self.assertNotIn(":", store.unique_name(7))


if __name__ == "__main__":
    unittest.main()
