"""store/mailboxes.py (a user's Maildir++ folder tree) and the IMAP pieces of
store/folder.py (MULTIAPPEND, INTERNALDATE, \\Recent), on a real directory."""

import datetime
import os
import shutil
import tempfile
import unittest
from unittest import mock

from store import dovecot_files as dv
from store import mailboxes as mb
from store.folder import open_folder
from store.maildir import MailStore
from tests.test_interop_maildir import DovecotCopy, dovecot_skip_reason

USER = "bob@example.org"
MSG = b"Subject: hi\r\n\r\nbody\r\n"


class MailboxesTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailboxes-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.store = MailStore(self.tmp, "mx.example.org")
        self.boxes = mb.user_mailboxes(self.store, USER)
        self.root = self.boxes.root

    def names(self, exists=True):
        return [e.name for e in self.boxes.list() if e.exists == exists]

    def entry(self, name):
        return {e.name: e for e in self.boxes.list()}[name]


class FirstLoginTest(MailboxesTestCase):
    def test_special_use_folders_exist_with_dovecots_names_and_attributes(self):
        # RFC 6154 §2; issue 10: Sent, Drafts, Trash, Junk, Archive from the first login
        self.assertEqual(self.names(), ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"])
        self.assertEqual(self.entry("Sent").special_use, ("\\Sent",))
        self.assertEqual(self.entry("Junk").special_use, ("\\Junk",))
        self.assertTrue(self.entry("Trash").subscribed)
        for name in ("Sent", "Archive"):
            self.assertTrue(os.path.exists(os.path.join(self.root, "." + name, "maildirfolder")))
        with open(os.path.join(self.root, mb.SPECIAL_USE_FILE)) as f:
            self.assertIn(".Sent\t\\Sent\n", f.read())

    def test_a_deleted_special_folder_is_not_made_again_at_the_next_login(self):
        self.boxes.delete("Junk")
        mb.user_mailboxes(self.store, USER)
        self.assertNotIn("Junk", self.names())

    def test_a_user_without_a_maildir_gets_one(self):
        boxes = mb.user_mailboxes(self.store, "new@example.org")
        self.assertTrue(os.path.isdir(os.path.join(boxes.root, "cur")))
        self.assertIn("Sent", [e.name for e in boxes.list()])


class NameTest(MailboxesTestCase):
    def test_names_that_would_leave_the_maildir_or_break_maildir_plus_plus_are_refused(self):
        for bad in ("../x", "..", ".x", "a/../../b", "a/./b", "a.b", "a\x00b", "a\x01b", "a\x7fb",
                    "x" * 300, "a//b", "/a", "a/", "", "DOVECOT-TRASHED"):
            with self.subTest(name=bad):
                with self.assertRaises(mb.BadName) as cm:
                    self.boxes.create(bad if bad != "a/" else "a//")
                self.assertNotIn("\n", str(cm.exception))
        self.assertEqual(self.names(), ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "mail", "example.org", "x")))

    def test_the_reason_is_named(self):
        with self.assertRaises(mb.BadName) as cm:
            self.boxes.create("a.b")
        self.assertIn("'.' is not allowed", str(cm.exception))

    def test_a_symlink_planted_as_a_folder_cannot_lead_out(self):
        outside = tempfile.mkdtemp(prefix="outside-")
        self.addCleanup(shutil.rmtree, outside, True)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(os.path.join(outside, sub))
        os.symlink(outside, os.path.join(self.root, ".evil"))
        with self.assertRaises(mb.BadName):
            self.boxes.folder("evil")
        self.assertNotIn("evil", [e.name for e in self.boxes.list()])

    def test_non_ascii_names_are_modified_utf7_on_disk_as_dovecot_writes_them(self):
        self.boxes.create("Entwürfe/a&b")
        self.assertTrue(os.path.isdir(os.path.join(self.root, ".Entw&APw-rfe.a&-b", "cur")))
        self.assertIn("Entwürfe/a&b", self.names())

    def test_inbox_is_case_insensitive(self):
        with self.assertRaises(mb.MailboxExists):
            self.boxes.create("inbox")
        self.boxes.create("inbox/sub")
        self.assertIn("INBOX/sub", self.names())


class CreateDeleteTest(MailboxesTestCase):
    def test_create_makes_the_superior_names_too(self):
        # RFC 9051 §6.3.4: "foo/bar/zap" SHOULD create foo/ and foo/bar/
        self.boxes.create("foo/bar/zap")
        for name in ("foo", "foo/bar", "foo/bar/zap"):
            self.assertIn(name, self.names())
        self.assertTrue(os.path.isdir(os.path.join(self.root, ".foo.bar.zap", "tmp")))
        self.assertTrue(self.entry("foo").has_children)

    def test_a_trailing_separator_is_ignored(self):
        self.boxes.create("owatagusiam/")
        self.assertIn("owatagusiam", self.names())

    def test_create_of_an_existing_name_is_refused(self):
        self.boxes.create("x")
        with self.assertRaises(mb.MailboxExists):
            self.boxes.create("x")

    def test_delete_with_children_leaves_a_noselect_parent(self):
        # RFC 9051 §6.3.5 allows it; Dovecot's Maildir++ does it (children are separate dirs)
        self.boxes.create("a/b")
        self.boxes.folder("a").append(MSG)
        self.boxes.delete("a")
        entry = self.entry("a")
        self.assertFalse(entry.exists)
        self.assertTrue(entry.has_children)
        self.assertIn("a/b", self.names())
        with self.assertRaises(mb.Refused) as cm:
            self.boxes.delete("a")
        self.assertEqual(cm.exception.code, "HASCHILDREN")

    def test_inbox_and_missing_names_cannot_be_deleted(self):
        with self.assertRaises(mb.Refused):
            self.boxes.delete("INBOX")
        with self.assertRaises(mb.NoMailbox):
            self.boxes.delete("nothing")

    def test_a_folder_deleted_and_created_again_gets_a_new_uidvalidity(self):
        # RFC 9051 §2.3.1.1; the same second too (Dovecot's dovecot-uidvalidity)
        self.boxes.create("x")
        first = self.boxes.folder("x").snapshot().uidvalidity
        self.boxes.delete("x")
        self.boxes.create("x")
        second = self.boxes.folder("x").snapshot().uidvalidity
        self.assertGreater(second, first)

    def test_a_new_folder_counts_modseq_from_one(self):
        self.boxes.create("fresh")
        self.assertEqual(self.boxes.folder("fresh").snapshot().highestmodseq, 1)

    def test_create_with_use_records_the_attribute(self):
        # RFC 6154 §3 CREATE-SPECIAL-USE
        self.boxes.create("Old mail", ["\\archive"])
        self.assertEqual(self.entry("Old mail").special_use, ("\\Archive",))
        with self.assertRaises(mb.BadUse):
            self.boxes.create("Everything", ["\\All"])
        self.assertNotIn("Everything", self.names())


class RenameTest(MailboxesTestCase):
    def test_children_move_and_uidvalidity_is_kept(self):
        self.boxes.create("a/b")
        self.boxes.folder("a/b").append(MSG)
        before = self.boxes.folder("a/b").snapshot()
        self.boxes.subscribe("a/b", True)
        self.boxes.rename("a", "z/y")
        self.assertNotIn("a", self.names())
        after = self.boxes.folder("z/y/b").snapshot()
        self.assertEqual(after.uidvalidity, before.uidvalidity)
        self.assertEqual([m.uid for m in after.messages], [m.uid for m in before.messages])
        self.assertIn("z/y/b", self.boxes.subscriptions())
        self.assertNotIn("a/b", self.boxes.subscriptions())

    def test_a_special_folder_keeps_its_attribute_under_a_new_name(self):
        self.boxes.rename("Sent", "Sent Items")
        self.assertEqual(self.entry("Sent Items").special_use, ("\\Sent",))

    def test_rename_to_an_existing_name_or_from_a_missing_one_is_refused(self):
        with self.assertRaises(mb.MailboxExists):
            self.boxes.rename("Sent", "Trash")
        with self.assertRaises(mb.NoMailbox):
            self.boxes.rename("nothing", "other")

    def test_inbox_rename_moves_its_messages_and_inbox_stays(self):
        # RFC 9051 §6.3.6
        inbox = self.boxes.folder("INBOX")
        inbox.append(MSG, "S")
        inbox.append(MSG)
        self.boxes.create("INBOX/child")
        self.boxes.rename("INBOX", "old-inbox")
        self.assertEqual(len(self.boxes.folder("INBOX").sync().snapshot.messages), 0)
        moved = self.boxes.folder("old-inbox").sync().snapshot.messages
        self.assertEqual([m.flags for m in moved], ["S", ""])
        self.assertIn("INBOX/child", self.names())


class SubscriptionTest(MailboxesTestCase):
    def test_subscriptions_are_dovecots_version_2_file(self):
        self.boxes.create("a/b")
        self.boxes.subscribe("a/b", True)
        self.boxes.subscribe("gone", True)          # RFC 9051 §6.3.7: need not exist
        with open(os.path.join(self.root, dv.SUBSCRIPTIONS), "rb") as f:
            self.assertIn(b"\na\tb\n", f.read())
        entry = self.entry("gone")
        self.assertTrue(entry.subscribed)
        self.assertFalse(entry.exists)
        self.boxes.subscribe("a/b", False)
        self.assertNotIn("a/b", self.boxes.subscriptions())


class AppendTest(MailboxesTestCase):
    def test_append_date_becomes_the_file_mtime(self):
        when = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc).timestamp()
        folder = self.boxes.folder("INBOX")
        added = folder.append(MSG, "", (), when)
        msg = folder.snapshot().by_uid(added.uid)
        self.assertEqual(os.stat(msg.path).st_mtime, when)
        self.assertEqual(folder.dates([msg])[msg.key][0], when)

    def test_multiappend_failure_leaves_nothing(self):
        # RFC 3502 §6.3.11: all or none.  The 27th keyword fails before anything is visible.
        folder = self.boxes.folder("INBOX")
        words = ["k%d" % i for i in range(dv.MAX_KEYWORDS + 1)]
        with self.assertRaises(ValueError):
            folder.append_many([(MSG, "", (), None), (MSG, "", words, None)])
        self.assertEqual(folder.sync().snapshot.messages, ())
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])

    def test_multiappend_failure_during_the_renames_removes_what_was_renamed(self):
        folder = self.boxes.folder("INBOX")
        real = os.rename
        calls = []

        def flaky(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(src, dst)
        with mock.patch("store.folder.os.rename", flaky):
            with self.assertRaises(OSError):
                folder.append_many([(MSG, "", (), None)] * 3)
        self.assertEqual(folder.sync().snapshot.messages, ())
        self.assertEqual(os.listdir(os.path.join(self.root, "cur")), [])
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])

    def test_multiappend_is_durable_before_it_returns(self):
        # every file fsync'd, then renamed, then cur/ fsync'd (issue 10: OK only after that)
        folder = self.boxes.folder("INBOX")
        folder.append(MSG)                # the uidlist and the MODSEQ journal exist already
        events = []
        real_fsync, real_rename, real_dir = os.fsync, os.rename, __import__("store.folder").folder.fsync_dir
        with mock.patch("os.fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1]), \
                mock.patch("os.rename", lambda a, b: (events.append("rename"), real_rename(a, b))[1]), \
                mock.patch("store.folder.fsync_dir", lambda p: (events.append("dir " + os.path.basename(p)),
                                                                real_dir(p))[1]):
            folder.append_many([(MSG, "", (), None), (MSG, "S", (), None)])
        self.assertEqual(events[:5], ["fsync", "fsync", "rename", "rename", "dir cur"])

    def test_multiappend_gives_consecutive_uids(self):
        added = self.boxes.folder("Sent").append_many([(MSG, "S", (), None), (MSG, "", ("$Forwarded",), None)])
        self.assertEqual([a.uid for a in added], [1, 2])


class RecentTest(MailboxesTestCase):
    def test_each_message_is_claimed_once(self):
        # RFC 3501 §2.3.2: exactly one session is the first to be told of a message
        folder = open_folder(self.root)
        folder.append(MSG)
        folder.append(MSG)
        snap = folder.sync().snapshot
        self.assertEqual(folder.recent_from(), 1)
        self.assertEqual(folder.claim_recent(snap.uidnext), 1)      # the first session gets 1 and 2
        self.assertEqual(folder.claim_recent(snap.uidnext), 3)      # the next one gets none
        folder.append(MSG)
        self.assertEqual(folder.recent_from(), 3)


@unittest.skipIf(dovecot_skip_reason(), dovecot_skip_reason())
class DovecotAgreesTest(MailboxesTestCase):
    """doveadm (Dovecot's default Maildir++ namespace, separator ".") on the tree we made."""

    def test_dovecot_lists_our_folders_subscriptions_and_uidvalidity_and_we_list_its(self):
        self.boxes.create("Work/2024")
        self.boxes.create("Entwürfe")
        self.boxes.folder("Work/2024").append(MSG, "S")
        self.boxes.subscribe("Work/2024", True)
        ours = self.boxes.folder("Work/2024").snapshot().uidvalidity
        work = tempfile.mkdtemp(prefix="mailsrv-dovecot-")
        self.addCleanup(shutil.rmtree, work, True)
        dovecot = DovecotCopy(self.root, work, "bob")
        listed = dovecot.doveadm("mailbox", "list").split("\n")[1:]
        self.assertEqual(sorted(n for n in listed if n),
                         sorted(["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash", "Work", "Work.2024", "Entwürfe"]))
        self.assertIn("Work.2024", dovecot.doveadm("mailbox", "list", "-s").split("\n"))
        status = dovecot.doveadm("mailbox", "status", "uidvalidity messages unseen", "Work.2024").split("\n")[1]
        self.assertEqual(status.split("\t")[1:], ["1", str(ours), "0"])
        dovecot.doveadm("mailbox", "create", "Neu.Sub")
        dovecot.own()
        theirs = {e.name: e for e in mb.Mailboxes(dovecot.maildir).list()}
        self.assertTrue(theirs["Neu/Sub"].exists)
        self.assertFalse(theirs["Neu"].exists)            # Dovecot leaves the parent implicit
        self.assertTrue(theirs["Neu"].has_children)
        # Dovecot took its UIDVALIDITY from the dovecot-uidvalidity we keep: greater than ours
        self.assertTrue(os.path.exists(os.path.join(dovecot.maildir, ".Neu.Sub", dv.UIDLIST)))
        self.assertGreater(open_folder(os.path.join(dovecot.maildir, ".Neu.Sub")).snapshot().uidvalidity, ours)


if __name__ == "__main__":
    unittest.main()
