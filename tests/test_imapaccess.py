"""protocols/backend/imapaccess.py: the IMAP mail-access service over the store.

Most checks run with a loop whose ``run_in_thread`` only records each job, so
the test decides when the worker steps run and sees that none runs inside a
call (issue 9 §2); one class runs a real server, so a delivery over SMTP and
the change hub are the real ones.
"""

import builtins
import datetime
import os
import shutil
import smtplib
import tempfile
import threading
import unittest

from protocols.backend.contracts import (AppendItem, CopyOutcome, FolderChanges, FolderStatus, MailboxError,
                                         StoreOutcome)
from protocols.backend.hub import ChangeHub
from protocols.backend.imapaccess import ImapAccessService, imap_flags, split_flags
from protocols.base import SessionContext
from store.maildir import MailStore
from tests.helpers import ServerTestCase
from unittest import mock

USER = "bob@example.org"
MSG = b"Subject: hi\r\n\r\nbody\r\n"


class StepLoop:
    """run_in_thread records (fn, callback); run_all() runs them oldest first."""

    def __init__(self):
        self.jobs = []

    def run_in_thread(self, fn, callback):
        self.jobs.append((fn, callback))

    def run_all(self):
        while self.jobs:
            fn, callback = self.jobs.pop(0)
            try:
                result = fn()
            except Exception as exc:       # as the real loop hands it over
                result = exc
            callback(result)

    def call_later(self, delay, fn):
        return None

    def call_soon(self, fn):
        self.jobs.append((lambda: None, lambda _result: fn()))


class AccessTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-imapaccess-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = MailStore(self.dir, "mx.example.org")
        self.loop = StepLoop()
        self.hub = ChangeHub(self.loop, self.store.maildir_path)
        self.service = ImapAccessService(self.loop, self.store, self.hub, max_userip=3)
        self.account = self.open_account()

    def call(self, start):
        """Start a contract call; nothing may answer before the worker steps run."""
        got = []
        start(got.append)
        self.assertEqual(got, [], "answered inside the call: a disk step on the loop thread")
        self.loop.run_all()
        self.assertEqual(len(got), 1, "done must be called exactly once")
        return got[0]

    def ok(self, start):
        result = self.call(start)
        if isinstance(result, BaseException):
            raise result
        return result

    def refused(self, start, code):
        result = self.call(start)
        self.assertIsInstance(result, MailboxError)
        self.assertEqual(result.code, code, result.text)
        self.assertNotIn("\n", result.text)
        return result

    def open_account(self, ip="127.0.0.1"):
        ctx = SessionContext(peer=(ip, 1234), listener="imap")
        account = self.ok(lambda done: self.service.open_account(ctx, USER, done))
        self.addCleanup(account.close)
        return account

    def select(self, name="INBOX", readonly=False, account=None):
        folder = self.ok(lambda done: (account or self.account).open(name, readonly, done))
        self.addCleanup(folder.close)
        return folder

    def append(self, name, *items):
        return self.ok(lambda done: self.account.append(name, [AppendItem(*i) for i in items], done))


class FlagMappingTest(unittest.TestCase):
    def test_system_flags_are_maildir_letters_and_keywords_stay_words(self):
        self.assertEqual(split_flags(["\\Seen", "\\answered", "$Forwarded", "\\Recent", "\\Draft"]),
                         ("DRS", ("$Forwarded",)))
        self.assertEqual(imap_flags("FST", frozenset({"Junk"})),
                         frozenset({"\\Flagged", "\\Seen", "\\Deleted", "Junk"}))
        with self.assertRaises(MailboxError):
            split_flags(["\\Bogus"])


class AccountTest(AccessTestCase):
    def test_list_has_inbox_first_and_the_special_use_folders(self):
        entries = self.ok(self.account.list)
        self.assertEqual(entries[0].name, "INBOX")
        uses = {e.name: e.special_use for e in entries}
        self.assertEqual(uses["Sent"], ("\\Sent",))
        self.assertEqual(uses["Archive"], ("\\Archive",))

    def test_create_delete_rename_subscribe(self):
        self.ok(lambda done: self.account.create("Work/2024", ["\\Archive"], done))
        self.ok(lambda done: self.account.subscribe("Work/2024", True, done))
        self.ok(lambda done: self.account.rename("Work", "Jobs", done))
        entries = {e.name: e for e in self.ok(self.account.list)}
        self.assertTrue(entries["Jobs/2024"].subscribed)
        self.assertEqual(entries["Jobs/2024"].special_use, ("\\Archive",))
        self.assertTrue(entries["Jobs"].has_children)
        self.ok(lambda done: self.account.delete("Jobs/2024", done))
        self.assertNotIn("Jobs/2024", [e.name for e in self.ok(self.account.list) if e.exists])

    def test_mailbox_error_codes(self):
        # RFC 5530 §3, RFC 9051 §7.1, RFC 6154 §3
        self.refused(lambda done: self.account.open("Nowhere", False, done), "NONEXISTENT")
        self.refused(lambda done: self.account.create("Sent", (), done), "ALREADYEXISTS")
        self.refused(lambda done: self.account.create("../etc", (), done), "CANNOT")
        self.refused(lambda done: self.account.delete("INBOX", done), "CANNOT")
        self.refused(lambda done: self.account.status("Nowhere", done), "NONEXISTENT")
        self.refused(lambda done: self.account.append("Nowhere", [AppendItem(MSG)], done), "TRYCREATE")
        self.refused(lambda done: self.account.create("All", ["\\All"], done), "USEATTR")
        self.ok(lambda done: self.account.create("p/c", (), done))
        self.ok(lambda done: self.account.delete("p", done))
        self.refused(lambda done: self.account.delete("p", done), "HASCHILDREN")

    def test_too_many_sessions_of_one_user_from_one_address(self):
        self.open_account()
        self.open_account()
        ctx = SessionContext(peer=("127.0.0.1", 9), listener="imap")
        result = self.call(lambda done: self.service.open_account(ctx, USER, done))
        self.assertEqual(result.code, "LIMIT")
        self.open_account(ip="127.0.0.2")          # another address is counted apart

    def test_opens_in_flight_count_toward_the_limit(self):
        ctx = SessionContext(peer=("127.0.0.1", 9), listener="imap")
        got = []
        for _ in range(3):                         # one is open already (setUp): limit 3
            self.service.open_account(ctx, USER, got.append)
        self.loop.run_all()
        self.assertEqual(sorted(type(r).__name__ for r in got), ["AclAccount", "AclAccount", "MailboxError"])
        for r in got:
            if not isinstance(r, BaseException):
                r.close()

    def test_append_and_status(self):
        when = datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
        result = self.append("INBOX", (MSG, ("\\Seen", "$Work"), when), (b"Subject: x\n\nlf only\n",))
        self.assertEqual(result.uids, (1, 2))
        status = self.ok(lambda done: self.account.status("INBOX", done))
        self.assertIsInstance(status, FolderStatus)
        self.assertEqual((status.messages, status.unseen, status.deleted, status.uidnext, status.recent),
                         (2, 1, 0, 3, 2))
        self.assertEqual(status.uidvalidity, result.uidvalidity)
        self.assertEqual(status.size, len(MSG) + len(b"Subject: x\r\n\r\nlf only\r\n"))
        state = self.select().state()
        meta = state.messages[0]
        self.assertEqual(meta.flags, frozenset({"\\Seen", "$Work"}))
        self.assertEqual(meta.internal_date, when.timestamp())
        self.assertIn("$Work", state.keywords)

    def test_status_opens_no_message_file(self):
        # issue 10: STATUS counts from the file names (and the uidlist), not the messages
        self.append("INBOX", (MSG, ("\\Seen",)), (b"Subject: lf\n\nx\n",))
        real_open = builtins.open

        def guarded(path, *args, **kwargs):
            if "/cur/" in str(path) or "/new/" in str(path):
                raise AssertionError("STATUS opened %s" % path)
            return real_open(path, *args, **kwargs)
        with mock.patch("builtins.open", guarded):
            status = self.ok(lambda done: self.account.status("INBOX", done))
        self.assertEqual((status.messages, status.unseen), (2, 1))

    def test_multiappend_is_all_or_none(self):
        words = ["k%d" % i for i in range(27)]
        self.refused(lambda done: self.account.append("INBOX", [AppendItem(MSG), AppendItem(MSG, tuple(words))],
                                                       done), "LIMIT")
        status = self.ok(lambda done: self.account.status("INBOX", done))
        self.assertEqual(status.messages, 0)


class OpenFolderTest(AccessTestCase):
    def test_read_gives_crlf_and_none_once_gone(self):
        self.append("INBOX", (b"Subject: x\n\nline\n",))
        folder = self.select()
        data = self.ok(lambda done: folder.read(1, done))
        self.assertEqual(data, b"Subject: x\r\n\r\nline\r\n")
        self.assertEqual(len(data), folder.state().messages[0].size)
        self.assertIsNone(self.ok(lambda done: folder.read(99, done)))

    def test_read_many_gives_what_read_gives_and_leaves_out_the_gone(self):
        self.append("INBOX", (b"Subject: x\n\nline\n",), (b"Subject: y\r\n\r\nz\r\n",))
        folder = self.select()
        many = self.ok(lambda done: folder.read_many([1, 99, 2], done))
        self.assertEqual(many, {uid: self.ok(lambda done: folder.read(uid, done)) for uid in (1, 2)})
        self.assertEqual(many[1], b"Subject: x\r\n\r\nline\r\n")

    def test_store_modes_and_unchanged_since(self):
        self.append("INBOX", (MSG,), (MSG,))
        folder = self.select()
        out = self.ok(lambda done: folder.store([1, 2], ["\\Flagged", "Todo"], "add", None, done))
        self.assertIsInstance(out, StoreOutcome)
        self.assertEqual([m.flags for m in out.changed], [frozenset({"\\Flagged", "Todo"})] * 2)
        out = self.ok(lambda done: folder.store([1], ["\\Seen"], "replace", None, done))
        self.assertEqual(out.changed[0].flags, frozenset({"\\Seen"}))
        out = self.ok(lambda done: folder.store([2], ["Todo"], "remove", None, done))
        self.assertEqual(out.changed[0].flags, frozenset({"\\Flagged"}))
        old = self.ok(folder.refresh).state.highestmodseq
        self.ok(lambda done: folder.store([1], ["\\Answered"], "add", None, done))
        out = self.ok(lambda done: folder.store([1, 2], ["\\Deleted"], "add", old, done))
        self.assertEqual(out.modified, (1,))          # RFC 7162 §3.1.3
        self.assertEqual([m.uid for m in out.changed], [2])

    def test_keywords_are_case_insensitive(self):
        # RFC 9051 §9 note 1: "$label1" names the folder's "$Label1"
        self.append("INBOX", (MSG, ("$Label1",)), (MSG,))
        folder = self.select()
        out = self.ok(lambda done: folder.store([2], ["$LABEL1", "$label1"], "add", None, done))
        self.assertEqual(out.changed[0].flags, frozenset({"$Label1"}))
        out = self.ok(lambda done: folder.store([1], ["$label1"], "remove", None, done))
        self.assertEqual(out.changed[0].flags, frozenset())
        self.assertEqual(self.ok(folder.refresh).state.keywords, ("$Label1",))

    def test_examine_is_read_only(self):
        self.append("INBOX", (MSG,))
        folder = self.select(readonly=True)
        self.refused(lambda done: folder.store([1], ["\\Seen"], "add", None, done), "CANNOT")
        self.refused(lambda done: folder.expunge([1], done), "CANNOT")

    def test_expunge_removes_only_deleted_messages(self):
        self.append("INBOX", (MSG, ("\\Deleted",)), (MSG,))
        folder = self.select()
        self.assertEqual(self.ok(lambda done: folder.expunge([1, 2], done)), (1,))
        changes = self.ok(folder.refresh)
        self.assertEqual(changes.expunged, (1,))
        self.assertEqual([m.uid for m in changes.state.messages], [2])

    def test_copy_and_move_answer_copyuid_or_trycreate(self):
        self.append("INBOX", (MSG, ("\\Seen",)), (MSG,))
        folder = self.select()
        out = self.ok(lambda done: folder.copy([1, 2], "Archive", False, done))
        self.assertIsInstance(out, CopyOutcome)
        self.assertEqual(out.uid_map, ((1, 1), (2, 2)))
        out = self.ok(lambda done: folder.copy([2], "Trash", True, done))
        self.assertEqual((out.uid_map, out.expunged), (((2, 1),), (2,)))
        self.refused(lambda done: folder.copy([1], "Nowhere", False, done), "TRYCREATE")
        archive = self.ok(lambda done: self.account.status("Archive", done))
        self.assertEqual((archive.messages, archive.unseen), (2, 1))

    def test_two_open_folders_see_each_others_changes_at_refresh(self):
        self.append("INBOX", (MSG,), (MSG, ("\\Deleted",)))
        other = self.open_account()
        one, two = self.select(), self.select(account=other)
        self.ok(lambda done: one.store([1], ["\\Seen"], "add", None, done))
        self.ok(lambda done: one.expunge([2], done))
        self.append("INBOX", (MSG,))
        changes = self.ok(two.refresh)
        self.assertIsInstance(changes, FolderChanges)
        self.assertEqual((changes.new, changes.expunged, changes.changed), ((3,), (2,), (1,)))
        self.assertIn("\\Seen", changes.state.messages[0].flags)
        self.assertEqual(two.state(), changes.state)
        again = self.ok(two.refresh)
        self.assertEqual((again.new, again.expunged, again.changed), ((), (), ()))

    def test_sessions_of_one_folder_share_its_message_metadata(self):
        """1,000 IDLE sessions on one big folder hold its metadata once (issue 10: memory)."""
        self.append("INBOX", (MSG,), (MSG,), (MSG,))
        one, two = self.select(), self.select(account=self.open_account(), readonly=True)
        self.assertIs(one.state().messages, two.state().messages)
        self.ok(lambda done: one.store([2], ["\\Flagged"], "add", None, done))
        a, b = self.ok(one.refresh).state.messages, self.ok(two.refresh).state.messages
        self.assertIs(a, b)
        self.assertIs(a[0], one.state().messages[0])       # an unchanged message keeps its object
        self.assertIn("\\Flagged", a[1].flags)

    def test_watch_hears_another_sessions_store_and_append(self):
        self.append("INBOX", (MSG,))
        other = self.open_account()
        one, two = self.select(), self.select(account=other)
        heard = []
        stop = two.watch(lambda: heard.append("two"))
        self.ok(lambda done: one.store([1], ["\\Seen"], "add", None, done))
        self.assertEqual(heard, ["two"])
        self.append("INBOX", (MSG,))
        self.assertEqual(heard, ["two", "two"])
        stop()
        self.ok(lambda done: one.store([1], ["\\Flagged"], "add", None, done))
        self.assertEqual(len(heard), 2)

    def test_watch_hears_a_delivery_announced_to_the_hub(self):
        folder = self.select()
        heard = []
        folder.watch(lambda: heard.append(1))
        self.hub.announce(USER, "INBOX")           # what local delivery does after its fsyncs
        self.assertEqual(heard, [1])

    def test_watch_of_a_subfolder_uses_the_maildir_plus_plus_key(self):
        self.ok(lambda done: self.account.create("a/b", (), done))
        folder = self.select("a/b")
        heard = []
        folder.watch(lambda: heard.append(1))
        self.append("a/b", (MSG,))
        self.assertEqual(heard, [1])
        self.assertEqual(self.hub.subscribers(USER, "a.b"), 1)
        folder.close()
        self.assertEqual(self.hub.subscribers(USER, "a.b"), 0)

    def test_recent_is_claimed_by_one_read_write_session_only(self):
        # RFC 3501 §2.3.2; EXAMINE claims nothing (RFC 3501 §6.3.2)
        self.append("INBOX", (MSG,), (MSG,))
        other = self.open_account()
        peek = self.select(readonly=True)
        self.assertEqual(peek.state().recent, frozenset({1, 2}))
        first = self.select()
        self.assertEqual(first.state().recent, frozenset({1, 2}))
        second = self.select(account=other)
        self.assertEqual(second.state().recent, frozenset())
        self.append("INBOX", (MSG,))
        self.assertEqual(self.ok(second.refresh).state.recent, frozenset({3}))
        self.assertEqual(self.ok(first.refresh).state.recent, frozenset({1, 2}))

    def test_a_selected_folder_deleted_by_another_session_is_nonexistent(self):
        self.ok(lambda done: self.account.create("gone", (), done))
        folder = self.select("gone")
        self.ok(lambda done: self.account.delete("gone", done))
        self.refused(folder.refresh, "NONEXISTENT")


class LazyDatesTest(AccessTestCase):
    """INTERNALDATE / SAVEDATE are stat'ed when a command needs them, not at SELECT,
    and are what the eager stat gave: the file's mtime and ctime."""

    def test_select_stats_nothing_and_the_dates_are_the_files(self):
        when = datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
        self.append("INBOX", (MSG, (), when), (MSG,))
        store = self.account._boxes.folder("INBOX")
        opened = self.select()
        self.assertEqual(store.known_dates(), {})          # SELECT stat'ed no message file
        self.assertIsNone(self.ok(lambda done: opened.load_dates([1, 2, 99], done)))
        self.assertEqual(len(store.known_dates()), 2)
        metas = opened.state().messages
        for meta, msg in zip(metas, store.snapshot().messages):
            st = os.stat(msg.path)
            self.assertEqual((meta.internal_date, meta.save_date), (st.st_mtime, st.st_ctime))
        self.assertEqual(metas[0].internal_date, when.timestamp())

    def test_a_date_read_without_load_dates_or_after_a_rename_is_still_right(self):
        when = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        self.append("INBOX", (MSG, (), when))
        opened = self.select()
        outcome = self.ok(lambda done: opened.store([1], ["\\Seen"], "add", None, done))
        self.assertEqual(outcome.changed[0].internal_date, when.timestamp())
        self.assertEqual(opened.state().messages[0].internal_date, when.timestamp())
        self.assertIn("\\Seen", opened.state().messages[0].flags)


class DeliveryReachesWatchersTest(ServerTestCase):
    """A message delivered over SMTP reaches a watching IMAP folder through the real hub."""

    tls = False

    def on_loop(self, start):
        got, ready = [], threading.Event()

        def done(result):
            got.append(result)
            ready.set()
        self.server.loop.call_soon_threadsafe(lambda: start(done))
        self.assertTrue(ready.wait(20), "no answer")
        if isinstance(got[0], BaseException):
            raise got[0]
        return got[0]

    def test_smtp_delivery_calls_watch_and_refresh_finds_the_message(self):
        backend = self.server.backend
        ctx = SessionContext(peer=("127.0.0.1", 5), listener="imap")
        account = self.on_loop(lambda done: backend.open_account(ctx, "alice@example.test", done))
        folder = self.on_loop(lambda done: account.open("INBOX", False, done))
        heard = threading.Event()
        self.on_loop(lambda done: done(folder.watch(heard.set)))
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=20) as client:
            client.sendmail("someone@elsewhere.test", ["alice@example.test"], MSG)
        # delivery announces after its fsyncs and before its 250: the watch has been called
        # by the time the client has its answer (IDLE's push, issue 10: within 1 second)
        self.assertTrue(heard.is_set(), "watch not called by the time the 250 came")
        changes = self.on_loop(folder.refresh)
        self.assertEqual(len(changes.new), 1)
        data = self.on_loop(lambda done: folder.read(changes.new[0], done))
        self.assertTrue(data.endswith(MSG))
        self.on_loop(lambda done: done(account.close()))


if __name__ == "__main__":
    unittest.main()
