"""One set of checks of the IMAP mail-access contract (protocols/backend/contracts.py:
ImapMailAccess, ImapAccount, OpenFolder), run against every implementation.

The IMAP session is tested against a fake (tests/imap_fake.py, from the session's
branch); this module holds the fake and the real service
(protocols/backend/imapaccess.py over store/) to the same answers, so a session
tested against the fake is tested against what the store does (issue 9 §2).

An implementation joins by a harness class in HARNESSES: ``open_account(peer)``
gives an ImapAccount, ``run(start)`` calls ``start(done)`` and returns the one
value ``done`` got (driving its loop as needed), ``drain()`` lets pending
callbacks run.  The checks are written once, in ContractChecks.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import unittest
from typing import Callable, List

from unittest import mock

from protocols.backend import contracts as c
from protocols.backend import imapaccess
from protocols.backend.hub import ChangeHub
from protocols.backend.imapaccess import ImapAccessService
from protocols.base import SessionContext
from store.folder import open_folder
from store.maildir import MailStore
from tests.imap_fake import FakeImapBackend

USER = "carol@example.org"
MSG = b"Subject: contract\r\n\r\nbody\r\n"


class Harness:
    """What a check needs from one implementation."""

    name = "?"

    def open_account(self, peer: str = "127.0.0.1") -> c.ImapAccount: ...

    def run(self, start: Callable[[Callable], None]) -> object: ...

    def drain(self) -> None: ...

    def deliver(self, data: bytes) -> int:
        """A message arriving from outside (an SMTP delivery) in the user's INBOX; its UID."""

    def close(self) -> None: ...

    def set_quota(self, limit_bytes: int, limit_messages: int) -> None:
        """The administrator's limits for the user (RFC 9208 STORAGE in octets, MESSAGE)."""


class RealHarness(Harness):
    """protocols/backend/imapaccess.py on a temporary Maildir, its worker steps run in order."""

    name = "real"
    caches = True      # OpenFolder.derived keeps what it computed

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-imapcontract-")
        self.jobs: List = []
        store = MailStore(self.dir, "mx.example.org")
        self.store = store
        self.service = ImapAccessService(self, store, ChangeHub(self, store.maildir_path))

    # the loop, as the service uses it
    def run_in_thread(self, fn, callback):
        self.jobs.append((fn, callback))

    def call_soon(self, fn):
        self.jobs.append((lambda: None, lambda _r: fn()))

    def call_later(self, delay, fn):
        return None

    def drain(self) -> None:
        while self.jobs:
            fn, callback = self.jobs.pop(0)
            try:
                result = fn()
            except Exception as exc:
                result = exc
            callback(result)

    def run(self, start):
        got: List[object] = []
        start(got.append)
        self.drain()
        assert len(got) == 1, "done called %d times" % len(got)
        return got[0]

    def open_account(self, peer: str = "127.0.0.1"):
        ctx = SessionContext(peer=(peer, 1143), listener="imap")
        return self.run(lambda done: self.service.open_account(ctx, USER, done))

    def deliver(self, data: bytes) -> int:
        folder = open_folder(self.store.maildir_path(USER))
        uid = folder.append(data).uid
        self.service.hub.announce(USER, "INBOX")
        return uid

    def close(self) -> None:
        shutil.rmtree(self.dir, True)

    def set_quota(self, limit_bytes: int, limit_messages: int) -> None:
        from protocols.backend.quota import QuotaService
        from store.quota import Limits
        self.service.quota = QuotaService(self, self.store, self.dir)
        self.service.quota.table.set(USER, Limits(limit_bytes, limit_messages))


class FakeHarness(Harness):
    """tests/imap_fake.py, the session tests' backend, answering later as the real one does."""

    name = "fake"
    caches = False

    def __init__(self):
        self.backend = FakeImapBackend(users={USER: "x"})
        self.backend.deferred = True

    def run(self, start):
        got: List[object] = []
        start(got.append)
        self.drain()
        assert len(got) == 1, "done called %d times" % len(got)
        return got[0]

    def drain(self) -> None:
        self.backend.run_pending()

    def open_account(self, peer: str = "127.0.0.1"):
        ctx = SessionContext(peer=(peer, 1143), listener="imap")
        return self.run(lambda done: self.backend.open_account(ctx, USER, done))

    def deliver(self, data: bytes) -> int:
        return self.backend.deliver(USER, data)

    def close(self) -> None:
        pass

    def set_quota(self, limit_bytes: int, limit_messages: int) -> None:
        self.backend.quotas[USER] = (limit_bytes, limit_messages)


HARNESSES = [RealHarness, FakeHarness]


class ContractChecks:
    """Mixed into one TestCase per harness (below)."""

    harness_class = Harness

    def setUp(self):
        self.h = self.harness_class()
        self.addCleanup(self.h.close)
        self.account = self.h.open_account()
        self.addCleanup(self.account.close)

    def ok(self, start):
        result = self.h.run(start)
        if isinstance(result, BaseException):
            raise result
        return result

    def code(self, start) -> str:
        result = self.h.run(start)
        self.assertIsInstance(result, c.MailboxError, "%s: expected a MailboxError" % self.h.name)
        return result.code

    def append(self, name, *items):
        return self.ok(lambda done: self.account.append(name, [c.AppendItem(*i) for i in items], done))

    def select(self, name="INBOX", readonly=False, account=None):
        folder = self.ok(lambda done: (account or self.account).open(name, readonly, done))
        self.addCleanup(folder.close)
        return folder

    # -- ImapAccount --------------------------------------------------------------
    def test_account_has_its_user_and_lists_inbox_first_with_special_use(self):
        self.assertEqual(self.account.user, USER)
        entries = self.ok(self.account.list)
        self.assertTrue(all(isinstance(e, c.FolderEntry) for e in entries))
        self.assertEqual(entries[0].name, "INBOX")
        uses = {u for e in entries for u in e.special_use}
        self.assertEqual(uses, {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"})

    def test_create_rename_delete(self):
        self.assertIsNone(self.ok(lambda done: self.account.create("A/B", (), done)))
        names = {e.name for e in self.ok(self.account.list) if e.exists}
        self.assertTrue({"A", "A" + c.HIERARCHY_SEP + "B"} <= names)
        self.assertIsNone(self.ok(lambda done: self.account.rename("A", "Z", done)))
        names = {e.name for e in self.ok(self.account.list) if e.exists}
        self.assertIn("Z/B", names)
        self.assertNotIn("A/B", names)
        self.assertIsNone(self.ok(lambda done: self.account.delete("Z/B", done)))

    def test_error_codes(self):
        self.assertEqual(self.code(lambda done: self.account.create("Sent", (), done)), "ALREADYEXISTS")
        self.assertEqual(self.code(lambda done: self.account.delete("INBOX", done)), "CANNOT")
        self.assertEqual(self.code(lambda done: self.account.delete("Nope", done)), "NONEXISTENT")
        self.assertEqual(self.code(lambda done: self.account.open("Nope", False, done)), "NONEXISTENT")
        self.assertEqual(self.code(lambda done: self.account.status("Nope", done)), "NONEXISTENT")
        self.assertEqual(self.code(lambda done: self.account.append("Nope", [c.AppendItem(MSG)], done)),
                         "TRYCREATE")

    def test_subscribe_shows_in_list(self):
        self.ok(lambda done: self.account.subscribe("Sent", False, done))
        self.ok(lambda done: self.account.subscribe("Elsewhere", True, done))
        entries = {e.name: e for e in self.ok(self.account.list)}
        self.assertFalse(entries["Sent"].subscribed)
        self.assertTrue(entries["Elsewhere"].subscribed)
        self.assertFalse(entries["Elsewhere"].exists)

    def test_append_answers_appenduid_and_status_counts(self):
        result = self.append("INBOX", (MSG, ("\\Seen",)), (MSG, ("\\Deleted", "$Label1")))
        self.assertIsInstance(result, c.AppendResult)
        self.assertEqual(len(result.uids), 2)
        self.assertLess(result.uids[0], result.uids[1])
        status = self.ok(lambda done: self.account.status("INBOX", done))
        self.assertIsInstance(status, c.FolderStatus)
        self.assertEqual((status.messages, status.unseen, status.deleted), (2, 1, 1))
        self.assertEqual(status.uidvalidity, result.uidvalidity)
        self.assertGreater(status.uidnext, result.uids[1])
        self.assertEqual(status.size, 2 * len(MSG))
        self.assertGreater(status.highestmodseq, 0)

    def test_watch_mailboxes_hears_name_changes_and_messages(self):
        """ImapAccount.watch_mailboxes (NOTIFY, RFC 5465 §5): name events with ``own``
        for the watching account, "messages" for a delivery; nothing once stopped."""
        events = []
        stop = self.account.watch_mailboxes(True, events.append)
        self.h.drain()
        other = self.h.open_account()
        self.addCleanup(other.close)
        self.ok(lambda done: other.create("N", (), done))
        self.ok(lambda done: other.rename("N", "M", done))
        self.ok(lambda done: self.account.subscribe("M", True, done))
        self.ok(lambda done: other.delete("M", done))
        self.assertEqual([(e.kind, e.name, e.old_name, e.own) for e in events if e.kind != "messages"],
                         [("created", "N", "", False), ("renamed", "M", "N", False),
                          ("subscribed", "M", "", True), ("deleted", "M", "", False)])
        del events[:]
        self.h.deliver(MSG)
        self.h.drain()
        self.assertIn(("messages", "INBOX"), [(e.kind, e.name) for e in events])
        stop()
        del events[:]
        self.ok(lambda done: other.create("P", (), done))
        self.h.deliver(MSG)
        self.h.drain()
        self.assertEqual(events, [])

    # -- OpenFolder ---------------------------------------------------------------
    def test_open_gives_plain_state(self):
        result = self.append("INBOX", (MSG, ("\\Flagged", "Work")))
        folder = self.select()
        self.assertEqual((folder.name, folder.readonly), ("INBOX", False))
        state = folder.state()
        self.assertIsInstance(state, c.FolderState)
        self.assertEqual(state.uidvalidity, result.uidvalidity)
        meta = state.messages[0]
        self.assertEqual((meta.uid, meta.flags, meta.size), (result.uids[0], frozenset({"\\Flagged", "Work"}), len(MSG)))
        self.assertNotIn("\\Recent", meta.flags)
        self.assertIn("Work", state.keywords)

    def test_read_store_expunge(self):
        uids = self.append("INBOX", (MSG,), (MSG,)).uids
        folder = self.select()
        self.assertEqual(self.ok(lambda done: folder.read(uids[0], done)), MSG)
        self.assertIsNone(self.ok(lambda done: folder.read(uids[1] + 100, done)))
        out = self.ok(lambda done: folder.store([uids[0]], ["\\Deleted", "\\Seen"], "add", None, done))
        self.assertIsInstance(out, c.StoreOutcome)
        self.assertEqual(out.changed[0].flags, frozenset({"\\Deleted", "\\Seen"}))
        out = self.ok(lambda done: folder.store([uids[0]], ["\\Seen"], "remove", None, done))
        self.assertEqual(out.changed[0].flags, frozenset({"\\Deleted"}))
        self.assertEqual(tuple(self.ok(lambda done: folder.expunge(list(uids), done))), (uids[0],))
        changes = self.ok(folder.refresh)
        self.assertIsInstance(changes, c.FolderChanges)
        # our own expunge may come back in refresh or not: the session's view takes it once
        self.assertLessEqual(set(changes.expunged), {uids[0]})
        self.assertEqual([m.uid for m in folder.state().messages], [uids[1]])

    def test_vanished_and_unchanged_since(self):
        """RFC 7162: the expunge log answers UIDs expunged above a MODSEQ; a store
        UNCHANGEDSINCE a MODSEQ below a message's is refused for it (MODIFIED)."""
        uids = self.append("INBOX", (MSG,), (MSG,), (MSG,)).uids
        folder = self.select()
        mark = folder.state().highestmodseq
        self.assertGreater(mark, 0)
        out = self.ok(lambda done: folder.store(list(uids), ["\\Deleted"], "add", mark, done))
        self.assertEqual((sorted(m.uid for m in out.changed), tuple(out.modified)), (sorted(uids), ()))
        top = max(m.modseq for m in out.changed)
        self.assertGreater(top, mark)
        out = self.ok(lambda done: folder.store([uids[0]], ["\\Seen"], "add", mark, done))
        self.assertEqual((out.changed, tuple(out.modified)), ((), (uids[0],)))
        self.ok(lambda done: folder.expunge(list(uids[:2]), done))
        gone, complete = self.ok(lambda done: folder.vanished(top, done))
        self.assertEqual((sorted(gone), complete), (sorted(uids[:2]), True))
        self.assertEqual(tuple(self.ok(lambda done: folder.vanished(top + 1000, done))[0]), ())

    def test_derived_is_computed_once_and_kept_by_key_and_kind(self):
        uids = self.append("INBOX", (MSG,), (MSG + b"two\r\n",), (MSG + b"three\r\n",)).uids
        folder = self.select()
        seen: List[bytes] = []

        def compute(data: bytes):
            seen.append(data)
            return {"LEN": b"%d" % len(data), "HEAD": data[:8]}
        want = {u: {"LEN": b"%d" % len(d), "HEAD": d[:8]}
                for u, d in zip(uids, (MSG, MSG + b"two\r\n", MSG + b"three\r\n"))}
        with mock.patch.object(imapaccess, "DERIVED_BATCH", 2):    # two worker jobs, one answer
            self.assertEqual(self.ok(lambda done: folder.derived(list(uids), "t-v1", compute, done)), want)
            self.assertEqual(len(seen), 3)
            again = self.ok(lambda done: folder.derived(list(uids), "t-v1", compute, done))
        self.assertEqual(again, want)
        if self.h.caches:
            self.assertEqual(len(seen), 3, "the second call is served from the cache")
        self.ok(lambda done: folder.store([uids[0]], ["\\Deleted"], "add", None, done))
        self.ok(lambda done: folder.expunge([uids[0]], done))
        gone = self.ok(lambda done: folder.derived([uids[0], uids[1], uids[2] + 50], "t-v1", compute, done))
        self.assertEqual(gone, {uids[1]: want[uids[1]]}, "a message gone is missing (RFC 2180 §4.1)")
        count = len(seen)
        other = self.ok(lambda done: folder.derived([uids[1]], "t-v2", compute, done))
        self.assertEqual(other, {uids[1]: want[uids[1]]})
        self.assertEqual(len(seen), count + 1, "another kind is computed")
        self.assertEqual(self.ok(lambda done: folder.derived([], "t-v1", compute, done)), {})

    def test_copy_move_and_trycreate(self):
        uids = self.append("INBOX", (MSG,), (MSG,)).uids
        folder = self.select()
        out = self.ok(lambda done: folder.copy([uids[0]], "Archive", False, done))
        self.assertIsInstance(out, c.CopyOutcome)
        self.assertEqual([src for src, _dst in out.uid_map], [uids[0]])
        out = self.ok(lambda done: folder.copy([uids[1]], "Trash", True, done))
        self.assertEqual(tuple(out.expunged), (uids[1],))
        self.assertEqual(self.code(lambda done: folder.copy([uids[0]], "Nope", False, done)), "TRYCREATE")
        for name in ("Archive", "Trash"):
            self.assertEqual(self.ok(lambda done: self.account.status(name, done)).messages, 1)

    def test_quota_counts_and_refuses_append_and_copy_over_the_limit(self):
        # RFC 9208 §4.1.1 usage and limits; §4.3.1 OVERQUOTA on APPEND / COPY, MOVE adds nothing
        q = self.ok(self.account.quota)
        self.assertEqual((q.storage_limit, q.messages_limit, q.messages_used), (0, 0, 0))
        self.h.set_quota(1024 * 1024, 2)
        uids = self.append("INBOX", (MSG,)).uids
        q = self.ok(self.account.quota)
        self.assertEqual((q.storage_used, q.storage_limit, q.messages_used, q.messages_limit), (1, 1024, 1, 2))
        self.assertEqual(self.code(lambda done: self.account.append(
            "INBOX", [c.AppendItem(MSG), c.AppendItem(MSG)], done)), "OVERQUOTA")
        uids += self.append("Archive", (MSG,)).uids
        folder = self.select()
        self.assertEqual(self.code(lambda done: folder.copy([uids[0]], "Trash", False, done)), "OVERQUOTA")
        self.ok(lambda done: folder.copy([uids[0]], "Trash", True, done))
        self.assertEqual(self.ok(self.account.quota).messages_used, 2)
        trash = self.select("Trash")
        self.ok(lambda done: trash.refresh(done))
        moved = trash.state().messages[0].uid
        self.ok(lambda done: trash.store([moved], ["\\Deleted"], "add", None, done))
        st = self.ok(lambda done: self.account.status("Trash", done))
        self.assertEqual((st.deleted, st.deleted_storage), (1, st.size))     # RFC 9208 §4.1.4
        self.ok(lambda done: trash.expunge([moved], done))
        self.assertEqual(self.ok(self.account.quota).messages_used, 1)
        self.append("INBOX", (MSG,))

    def test_another_sessions_changes_reach_watch_and_refresh(self):
        uids = self.append("INBOX", (MSG,)).uids
        other = self.h.open_account()
        self.addCleanup(other.close)
        mine, theirs = self.select(), self.select(account=other)
        heard: List[int] = []
        stop = mine.watch(lambda: heard.append(1))
        self.assertTrue(callable(stop))
        self.ok(lambda done: theirs.store([uids[0]], ["\\Answered"], "add", None, done))
        self.append("INBOX", (MSG,))
        self.h.drain()
        self.assertTrue(heard, "%s: watch not called after another session's changes" % self.h.name)
        changes = self.ok(mine.refresh)
        self.assertEqual(tuple(changes.changed), (uids[0],))
        self.assertEqual(len(changes.new), 1)
        stop()

    def test_recent_is_seen_by_one_session(self):
        self.append("INBOX", (MSG,))
        other = self.h.open_account()
        self.addCleanup(other.close)
        first, second = self.select(), self.select(account=other)
        self.assertEqual(len(first.state().recent) + len(second.state().recent), 1)


class SessionChecks:
    """What the IMAP session relies on (written with the session, against the fake first)."""

    harness_class = Harness

    def setUp(self):
        self.h = self.harness_class()
        self.addCleanup(self.h.close)
        self.acc = self.h.open_account()
        self.addCleanup(self.acc.close)

    def ask(self, method, *args):
        return self.h.run(lambda done: method(*args, done))

    def open(self, name="INBOX", readonly=False):
        folder = self.ask(self.acc.open, name, readonly)
        self.assertFalse(isinstance(folder, BaseException), folder)
        return folder

    def append(self, name="INBOX", *items):
        return self.ask(self.acc.append, name, list(items) or [c.AppendItem(MSG)])

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
        self.assertIsInstance(self.ask(self.acc.delete, "INBOX"), c.MailboxError)
        self.assertEqual(self.ask(self.acc.status, "nope").code, "NONEXISTENT")
        self.assertIsInstance(self.ask(self.acc.open, "nope", False), c.MailboxError)
        self.assertEqual(self.append("nope").code, "TRYCREATE")
        folder = self.open()
        self.append()
        self.assertEqual(self.ask(folder.copy, [1], "nope", False).code, "TRYCREATE")

    def test_uids_are_never_reused_and_a_new_folder_gets_a_new_uidvalidity(self):
        self.assertIsNone(self.ask(self.acc.create, "box", ()))
        first = self.append("box", c.AppendItem(MSG), c.AppendItem(MSG, ("\\Deleted",)))
        self.assertIsInstance(first, c.AppendResult)
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
        self.assertIsInstance(out, c.StoreOutcome)
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
        one, two = self.open(), self.h.open_account()
        two = self.h.run(lambda done: two.open("INBOX", False, done))
        self.assertEqual(len(one.state().recent) + len(two.state().recent), 1)
        calls = []
        stop = one.watch(lambda: calls.append(1))
        uid = self.h.deliver(MSG)
        self.ask(two.store, [1], ["\\Deleted"], "add", None)
        self.h.drain()
        self.assertTrue(calls)
        changes = self.ask(one.refresh)
        self.assertIsInstance(changes, c.FolderChanges)
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
        self.assertIsInstance(out, c.CopyOutcome)
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


class BackendOffersImapTest(unittest.TestCase):
    def test_the_backend_has_every_method_of_the_imap_backend_contract(self):
        # what an ImapSession is given (contracts.ImapBackend): the server's Backend
        from protocols.backend.wiring import Backend
        wanted = [n for n in dir(c.ImapBackend) if not n.startswith("_") and callable(getattr(c.ImapBackend, n))]
        self.assertIn("open_account", wanted)
        for name in wanted:
            mine = getattr(Backend, name, None)
            self.assertIsNotNone(mine, "Backend lacks %s" % name)
            self.assertEqual(list(inspect.signature(mine).parameters),
                             list(inspect.signature(getattr(c.ImapBackend, name)).parameters), name)


for _h in HARNESSES:
    for _checks in (ContractChecks, SessionChecks):
        _name = "%s%sTest" % (_checks.__name__[:-6], _h.name.capitalize())
        globals()[_name] = type(_name, (_checks, unittest.TestCase), {"harness_class": _h})
del _h, _checks, _name


if __name__ == "__main__":
    unittest.main()
