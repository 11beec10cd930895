"""The IMAP mail-access contract (protocols/backend/contracts.py: ImapMailAccess,
ImapAccount, OpenFolder) as checks any implementation must pass.

``ImapContractChecks`` is written against a harness (``backend()``,
``deliver(backend, user, data)``, ``ask(start)`` that waits for ``done``,
``settle()`` that lets announced changes arrive), so that the in-memory fake
of the session tests (tests/imap_fake.py) and the real service run the same
checks (STYLE.md: contracts, not duck typing); the fake's harness is here.
"""

import unittest

from protocols.backend.contracts import (AppendItem, AppendResult, CopyOutcome, FolderChanges,
                                         MailboxError, StoreOutcome)
from protocols.base import SessionContext
from tests.imap_fake import FakeImapBackend

MSG = b"From: a@example.test\r\nSubject: contract\r\n\r\nbody\r\n"


class FakeHarness:
    """Everything answers at once; announcements are immediate."""

    def backend(self):
        return FakeImapBackend()

    def deliver(self, backend, user, data):
        return backend.deliver(user, data)

    def ask(self, start):
        box = []
        start(box.append)
        assert len(box) == 1, "done must be called exactly once"
        return box[0]

    def settle(self):
        pass


class ImapContractChecks:
    harness = None

    def setUp(self):
        self.b = self.harness.backend()
        self.acc = self.open_account()

    def open_account(self):
        acc = self.harness.ask(lambda done: self.b.open_account(SessionContext(listener="imap"), "fred", done))
        self.assertFalse(isinstance(acc, BaseException), acc)
        return acc

    def ask(self, method, *args):
        return self.harness.ask(lambda done: method(*args, done))

    def open(self, name="INBOX", readonly=False):
        folder = self.ask(self.acc.open, name, readonly)
        self.assertFalse(isinstance(folder, BaseException), folder)
        return folder

    def append(self, name="INBOX", *items):
        return self.ask(self.acc.append, name, list(items) or [AppendItem(MSG)])

    def test_first_login_has_inbox_first_and_the_special_use_folders(self):
        entries = self.ask(self.acc.list)
        self.assertEqual(entries[0].name, "INBOX")
        uses = {e.name: e.special_use for e in entries}
        for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                          ("Junk", "\\Junk"), ("Archive", "\\Archive")):
            self.assertEqual(uses.get(name), (use,), name)

    def test_refusals_carry_rfc5530_codes(self):
        self.assertEqual(self.ask(self.acc.create, "Sent", ()).code, "ALREADYEXISTS")
        self.assertEqual(self.ask(self.acc.delete, "nope").code, "NONEXISTENT")
        self.assertIsInstance(self.ask(self.acc.delete, "INBOX"), MailboxError)
        self.assertEqual(self.ask(self.acc.status, "nope").code, "NONEXISTENT")
        self.assertIsInstance(self.ask(self.acc.open, "nope", False), MailboxError)
        self.assertEqual(self.append("nope").code, "TRYCREATE")
        folder = self.open()
        self.append()
        self.assertEqual(self.ask(folder.copy, [1], "nope", False).code, "TRYCREATE")

    def test_uids_are_never_reused_and_a_new_folder_gets_a_new_uidvalidity(self):
        self.assertIsNone(self.ask(self.acc.create, "box", ()))
        first = self.append("box", AppendItem(MSG), AppendItem(MSG, ("\\Deleted",)))
        self.assertIsInstance(first, AppendResult)
        self.assertEqual(first.uids, (1, 2))
        folder = self.open("box")
        self.assertEqual(self.ask(folder.expunge, [1, 2]), (2,))
        self.assertEqual(self.append("box").uids, (3,))
        folder.close()
        self.assertIsNone(self.ask(self.acc.delete, "box"))
        self.assertIsNone(self.ask(self.acc.create, "box", ()))
        self.assertNotEqual(self.ask(self.acc.status, "box").uidvalidity, first.uidvalidity)
        self.assertEqual(self.ask(self.acc.status, "box").messages, 0)

    def test_store_modes_keywords_and_read(self):
        self.append()
        folder = self.open()
        out = self.ask(folder.store, [1], ["\\Flagged", "$Work"], "add", None)
        self.assertIsInstance(out, StoreOutcome)
        self.assertEqual(out.changed[0].flags, frozenset(["\\Flagged", "$Work"]))
        out = self.ask(folder.store, [1], ["$Work"], "remove", None)
        self.assertEqual(out.changed[0].flags, frozenset(["\\Flagged"]))
        out = self.ask(folder.store, [1], ["\\Seen"], "replace", None)
        self.assertEqual(out.changed[0].flags, frozenset(["\\Seen"]))
        self.assertEqual(self.ask(folder.store, [1], ["\\Seen"], "add", None).changed, ())
        changes = self.ask(folder.refresh)
        self.assertIn("$Work", changes.state.keywords)
        self.assertEqual(self.ask(folder.read, 1), MSG)

    def test_refresh_reports_other_writers_and_recent_goes_to_one_session(self):
        self.append()
        one, two = self.open(), self.open_account()
        two = self.harness.ask(lambda done: two.open("INBOX", False, done))
        self.assertEqual(len(one.state().recent) + len(two.state().recent), 1)
        calls = []
        stop = one.watch(lambda: calls.append(1))
        uid = self.harness.deliver(self.b, "fred", MSG)
        self.ask(two.store, [1], ["\\Deleted"], "add", None)
        self.harness.settle()
        self.assertTrue(calls)
        changes = self.ask(one.refresh)
        self.assertIsInstance(changes, FolderChanges)
        self.assertEqual((changes.new, changes.changed), ((uid,), (1,)))
        self.assertEqual(self.ask(two.refresh).new, (uid,))
        self.assertEqual(len(one.state().recent | two.state().recent), 2)
        self.assertTrue(one.state().recent.isdisjoint(two.state().recent))
        self.assertEqual(self.ask(two.expunge, [1, uid]), (1,))
        self.assertEqual(self.ask(one.refresh).expunged, (1,))
        self.assertIsNone(self.ask(one.read, 1))    # RFC 2180 §4.1: gone
        stop()
        one.close()
        one.close()     # safe twice

    def test_copy_and_move(self):
        self.append()
        folder = self.open()
        out = self.ask(folder.copy, [1], "Archive", False)
        self.assertIsInstance(out, CopyOutcome)
        self.assertEqual((out.uid_map, out.expunged), (((1, 1),), ()))
        out = self.ask(folder.copy, [1], "Trash", True)
        self.assertEqual((out.uid_map, out.expunged), (((1, 1),), (1,)))
        self.assertEqual(self.ask(self.acc.status, "INBOX").messages, 0)
        self.assertEqual(self.ask(self.acc.status, "Trash").messages, 1)

    def test_rename_inbox_moves_its_messages(self):
        self.append()
        self.assertIsNone(self.ask(self.acc.rename, "INBOX", "Old"))
        self.assertEqual(self.ask(self.acc.status, "INBOX").messages, 0)
        self.assertEqual(self.ask(self.acc.status, "Old").messages, 1)

    def test_subscriptions_list_nonexistent_names(self):
        self.assertIsNone(self.ask(self.acc.subscribe, "gone/away", True))
        entries = {e.name: e for e in self.ask(self.acc.list)}
        self.assertTrue(entries["gone/away"].subscribed)
        self.assertFalse(entries["gone/away"].exists)
        self.assertIsNone(self.ask(self.acc.subscribe, "gone/away", False))
        self.assertNotIn("gone/away", [e.name for e in self.ask(self.acc.list)])


class FakeImapContract(ImapContractChecks, unittest.TestCase):
    harness = FakeHarness()


if __name__ == "__main__":
    unittest.main()
