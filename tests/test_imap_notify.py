"""IMAP NOTIFY (RFC 5465, protocols/imap/notify.py, notify_args.py): the RFC's
examples as transcripts (whole, byte by byte, split), two sessions on one
in-memory backend (tests/imap_fake.py) hearing each other without NOOP, the
overflow bound, and the grammar's BAD / BADEVENT answers."""

import random
import unittest

from protocols.backend import imapnotify
from protocols.backend.contracts import MailboxEvent
from protocols.imap import grammar as g
from protocols.imap.notify_args import MailboxFilter, notify_args
from tests.imap_fake import FEEDERS, FakeImapBackend, drain, feed, login, make_session
from tests.test_imap_session import TranscriptCase

HEADER = b"Subject: Re: good morning\r\nFrom: alice@example.org\r\nTo: bob@example.org\r\n\r\n"
MSG = HEADER + b"Hello.\r\n"
BADEVENT = "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)]"


def two_sessions(backend=None):
    backend = backend or FakeImapBackend()
    a, _ = make_session(backend)
    b, _ = make_session(backend)
    login(a)
    login(b)
    return a, b, backend


def lists_backend():
    backend = FakeImapBackend()
    boxes = backend.mailboxes("fred")
    for name in ("Lists", "Lists/Lemonade", "Lists/Im2000", "misc"):
        boxes[name] = backend.folder(name)
    for _ in range(3):
        backend.deliver("fred", MSG, "Lists/Lemonade")
    return backend


class NotifyTranscriptTest(TranscriptCase):
    def test_rfc5465_3_1_example_status_then_pushes(self):
        """§3.1's example (with MessageExpunge next to MessageNew for "subtree
        Lists", which §5 requires): STATUS for each watched mailbox, a new
        message elsewhere is a STATUS, one in INBOX an EXISTS and its FETCH, all
        without a command from the client.  Fed whole, byte by byte, split."""
        command = (b"b notify set status (selected MessageNew (uid body.peek[header.fields (from to subject)])"
                   b" MessageExpunge) (subtree Lists (MessageNew MessageExpunge))\r\n")
        for feeder in FEEDERS:
            backend = lists_backend()
            s, _ = make_session(backend)
            login(s)
            out = feed(s, command, feeder, random.Random(5465))
            self.assertEqual(out, b"* STATUS Lists (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1006)\r\n"
                                  b"* STATUS Lists/Im2000 (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1008)\r\n"
                                  b"* STATUS Lists/Lemonade (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 1007)\r\n"
                                  b"b OK NOTIFY completed\r\n", feeder.__name__)
            out = feed(s, b"c select inbox\r\n", feeder, random.Random(1))
            self.assertTrue(out.endswith(b"c OK [READ-WRITE] SELECT completed\r\n"))
            backend.deliver("fred", MSG, "Lists/Lemonade")      # time passes
            self.assertEqual(drain(s), b"* STATUS Lists/Lemonade (MESSAGES 4 UIDNEXT 5 UIDVALIDITY 1007)\r\n")
            backend.deliver("fred", MSG)                         # a new message in INBOX
            self.assertEqual(drain(s), b"* 1 EXISTS\r\n* 1 RECENT\r\n"
                                       b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM TO SUBJECT)] {%d}\r\n"
                                       % len(HEADER) + HEADER + b")\r\n")
            out = feed(s, b"d STATUS misc (UIDVALIDITY UIDNEXT MESSAGES)\r\n", feeder, random.Random(2))
            self.assertEqual(out, b"* STATUS misc (UIDVALIDITY 1009 UIDNEXT 1 MESSAGES 0)\r\n"
                                  b"d OK STATUS completed\r\n")
            out = feed(s, b"e notify set (selected MessageNew (uid body.peek[header.fields (from to subject)])"
                          b" MessageExpunge) (subtree Lists (MessageNew MessageExpunge))"
                          b" (mailboxes misc (MessageNew MessageExpunge))\r\n", feeder, random.Random(3))
            self.assertEqual(out, b"e OK NOTIFY completed\r\n")
            backend.deliver("fred", MSG, "misc")
            self.assertEqual(drain(s), b"* STATUS misc (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1009)\r\n")

    def test_rfc5465_3_1_example_as_printed_is_bad(self):
        """The example's "(subtree Lists MessageNew)" lacks MessageExpunge: §5
        says "the server MUST respond with the tagged BAD response"."""
        self.run_transcript("""
C: b notify set status (selected MessageNew (uid) MessageExpunge) (subtree Lists MessageNew)
S: b BAD MessageNew and MessageExpunge go together (RFC 5465 §5)
""", make=_logged_in(lists_backend))

    def test_rfc5465_6_examples_and_none(self):
        """§6's two examples are accepted; NOTIFY NONE (§3.1); without STATUS no STATUS."""
        self.run_transcript("""
C: a notify set (mailboxes INBOX (Messagenew messageExpunge)) (personal (SubscriptionChange))
S: a OK NOTIFY completed
C: b notify set (selected (Messagenew (uid flags) messageExpunge)) (personal (MessageNew FlagChange MessageExpunge))
S: b OK NOTIFY completed
C: c NOTIFY NONE
S: c OK NOTIFY completed
C: d NOTIFY SET (selected-delayed NONE) (inboxes NONE)
S: d OK NOTIFY completed
""", make=_logged_in(FakeImapBackend))

    def test_unsupported_events_are_no_badevent_and_bad_combinations_bad(self):
        """§3.1: an event we do not offer is NO [BADEVENT (what we offer)];
        §5, §6.1, §8: the combinations that are BAD."""
        self.run_transcript("""
C: a NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))
S: a NO %s Unsupported NOTIFY event ANNOTATIONCHANGE
C: b NOTIFY SET (personal (MailboxMetadataChange))
S: b NO %s Unsupported NOTIFY event MAILBOXMETADATACHANGE
C: c NOTIFY SET (personal (FlagChange))
S: c BAD FlagChange needs MessageNew and MessageExpunge (RFC 5465 §5)
C: d NOTIFY SET (selected (MailboxName))
S: d BAD only message events for the selected mailbox (RFC 5465 §6.1)
C: e NOTIFY SET (personal (MessageNew (uid) MessageExpunge))
S: e BAD a fetch-att list only for the selected mailbox (RFC 5465 §8)
C: f NOTIFY SET (selected NONE) (selected-delayed NONE)
S: f BAD only one of selected and selected-delayed (RFC 5465 §6.1)
C: g NOTIFY SET (everything (MailboxName))
S: g BAD unknown mailbox filter 'EVERYTHING'
C: h NOTIFY SET
S: h BAD expected event-group at '<CRLF>'
""" % (BADEVENT, BADEVENT), make=_logged_in(FakeImapBackend))

    def test_fetch_items_fetch_refuses_are_refused_here_too(self):
        from protocols.imap.fetching import _NOT_OFFERED
        if not _NOT_OFFERED:
            self.skipTest("every fetch item is offered")
        s, _ = _logged_in(FakeImapBackend)()
        out = feed(s, b"i NOTIFY SET (selected (MessageNew (UID %s) MessageExpunge))\r\n" % _NOT_OFFERED[0].encode())
        self.assertEqual(out, b"i BAD %s is not supported\r\n" % _NOT_OFFERED[0].encode())

    def test_capability_after_login(self):
        s, _ = _logged_in(FakeImapBackend)()
        self.assertIn(b" NOTIFY", feed(s, b"a CAPABILITY\r\n"))
        s, _ = make_session()
        self.assertNotIn(b"NOTIFY", s.greeting)


def _logged_in(make_backend):
    def make():
        s, b = make_session(make_backend())
        login(s)
        return s, b
    return make


class TwoSessionTest(unittest.TestCase):
    """One session changes, the other hears it without a command (§1, §5)."""

    def test_mailbox_name_and_subscription_events_rfc5465_5_4_5_5(self):
        a, b, backend = two_sessions()
        feed(a, b"n NOTIFY SET (personal (MailboxName SubscriptionChange))\r\n")
        feed(b, b"n NOTIFY SET (personal (MailboxName SubscriptionChange))\r\n")
        self.assertEqual(feed(b, b"1 CREATE NewMailbox\r\n"), b"1 OK CREATE completed\r\n")  # §5: not to b
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren) "/" NewMailbox\r\n')
        feed(b, b"2 RENAME NewMailbox Renamed\r\n")
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren) "/" Renamed ("OLDNAME" (NewMailbox))\r\n')
        feed(b, b"3 SUBSCRIBE Renamed\r\n")
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren \\Subscribed) "/" Renamed\r\n')
        feed(b, b"4 UNSUBSCRIBE Renamed\r\n")
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren) "/" Renamed\r\n')
        feed(b, b"5 DELETE Renamed\r\n")
        self.assertEqual(drain(a), b'* LIST (\\NonExistent) "/" Renamed\r\n')
        self.assertEqual(drain(b), b"")

    def test_subtree_and_subscribed_filters_pick_their_mailboxes(self):
        a, b, backend = two_sessions()
        feed(a, b"n NOTIFY SET (subtree Work (MailboxName)) (subscribed (MessageNew MessageExpunge))\r\n")
        feed(b, b"1 CREATE Play\r\n2 CREATE Work/Reports\r\n")
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren) "/" Work/Reports\r\n')
        backend.deliver("fred", MSG, "Play")
        self.assertEqual(drain(a), b"")                       # Play is not subscribed
        backend.deliver("fred", MSG, "Sent")                  # Sent is (first login)
        self.assertEqual(drain(a), b"* STATUS Sent (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1001)\r\n")

    def test_selected_pushes_flags_expunge_and_new_between_commands(self):
        """§5.1 - §5.3 for the selected mailbox, another session making the changes."""
        backend = FakeImapBackend()
        backend.deliver("fred", MSG)
        backend.deliver("fred", MSG)
        a, b, _ = two_sessions(backend)
        feed(a, b"r ENABLE IMAP4rev2\r\ns SELECT INBOX\r\n")
        feed(b, b"s SELECT INBOX\r\n")
        out = feed(a, b"n NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange))\r\n")
        self.assertEqual(out, b"n OK NOTIFY completed\r\n")
        feed(b, b"1 STORE 1 +FLAGS (\\Deleted)\r\n")
        self.assertEqual(drain(a), b"* 1 FETCH (UID 1 FLAGS (\\Deleted))\r\n")
        feed(b, b"2 EXPUNGE\r\n")
        self.assertEqual(drain(a), b"* 1 EXPUNGE\r\n")
        backend.deliver("fred", MSG)
        self.assertEqual(drain(a), b"* 2 EXISTS\r\n* 2 FETCH (UID 3 FLAGS ())\r\n")
        self.assertEqual(feed(a, b"x NOOP\r\n"), b"x OK NOOP completed\r\n")
        backend.deferred = True                 # a message arrives while a command of a runs
        a.receive_data(b"y UID SEARCH TEXT hello\r\n")
        backend.deferred = False
        backend.deliver("fred", MSG)
        backend.run_pending()
        self.assertEqual(drain(a), b"* ESEARCH (TAG \"y\") UID ALL 2:3\r\n* 3 EXISTS\r\n* 3 FETCH (UID 4 FLAGS ())\r\n"
                                   b"y OK SEARCH completed\r\n")
        out = feed(a, b"z APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n")    # its own: no FETCH (§5.2)
        self.assertEqual(out, b"* 4 EXISTS\r\nz OK [APPENDUID 1000 5] APPEND completed\r\n")

    def test_selected_delayed_keeps_expunge_for_noop_rfc5465_6_1_2(self):
        backend = FakeImapBackend()
        backend.deliver("fred", MSG, flags=["\\Deleted"])
        a, b, _ = two_sessions(backend)
        feed(a, b"r ENABLE IMAP4rev2\r\ns SELECT INBOX\r\n")
        feed(a, b"n NOTIFY SET (selected-delayed (MessageNew MessageExpunge))\r\n")
        feed(b, b"s SELECT INBOX\r\n1 EXPUNGE\r\n")
        self.assertEqual(drain(a), b"")
        self.assertEqual(feed(a, b"x NOOP\r\n"), b"* 1 EXPUNGE\r\nx OK NOOP completed\r\n")

    def test_events_reach_an_idle_session_rfc5465_4(self):
        a, b, backend = two_sessions()
        feed(a, b"n NOTIFY SET (personal (MessageNew MessageExpunge FlagChange MailboxName))\r\n")
        self.assertEqual(feed(a, b"i IDLE\r\n"), b"+ idling\r\n")
        backend.deliver("fred", MSG)
        self.assertEqual(drain(a), b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1000 UNSEEN 1)\r\n")
        feed(b, b"s SELECT INBOX\r\n1 STORE 1 +FLAGS (\\Seen)\r\n")
        self.assertEqual(drain(a), b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1000 UNSEEN 0)\r\n")
        feed(b, b"2 CREATE Later\r\n")
        self.assertEqual(drain(a), b'* LIST (\\HasNoChildren) "/" Later\r\n')
        self.assertEqual(feed(a, b"DONE\r\n"), b"i OK IDLE terminated\r\n")

    def test_message_events_without_flagchange_ignore_flag_changes(self):
        a, b, backend = two_sessions()
        backend.deliver("fred", MSG)
        feed(a, b"n NOTIFY SET (inboxes (MessageNew MessageExpunge))\r\n")
        feed(b, b"s SELECT INBOX\r\n1 STORE 1 +FLAGS (\\Seen)\r\n")
        self.assertEqual(drain(a), b"")     # the same MESSAGES UIDNEXT UIDVALIDITY: nothing to say

    def test_overflow_when_the_client_falls_behind_rfc5465_5_8(self):
        """Events wait while the client does not read; past the bound: NOTIFICATIONOVERFLOW, then nothing."""
        backend = FakeImapBackend()
        boxes = backend.mailboxes("fred")
        for i in range(5):
            boxes["f%d" % i] = backend.folder("f%d" % i)
        a, _ = make_session(backend)
        login(a)
        a.notify_max_pending, a.notify_hold_octets = 3, 1
        feed(a, b"n NOTIFY SET (personal (MessageNew MessageExpunge))\r\n")
        a.receive_data(b"x NOOP\r\n")           # its reply stays unread
        for i in range(3):
            backend.deliver("fred", MSG, "f%d" % i)
            backend.deliver("fred", MSG, "f%d" % i)   # the same mailbox waits once
        self.assertEqual(drain(a), b"x OK NOOP completed\r\n* STATUS f0 (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 1006)\r\n"
                                   b"* STATUS f1 (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 1007)\r\n"
                                   b"* STATUS f2 (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 1008)\r\n")
        a.receive_data(b"y NOOP\r\n")
        for i in range(5):
            backend.deliver("fred", MSG, "f%d" % i)
        self.assertEqual(drain(a), b"y OK NOOP completed\r\n"
                                   b"* OK [NOTIFICATIONOVERFLOW] Too many events waiting; NOTIFY is off, please re-sync\r\n")
        backend.deliver("fred", MSG, "f0")
        self.assertEqual(drain(a), b"")
        self.assertEqual(backend.mailbox_watchers, [])      # NOTIFY NONE: the watch is gone

    def test_logout_stops_the_watch(self):
        a, b, backend = two_sessions()
        feed(a, b"n NOTIFY SET (personal (MailboxName))\r\n")
        self.assertEqual(len(backend.mailbox_watchers), 1)
        feed(a, b"z LOGOUT\r\n")
        self.assertEqual(backend.mailbox_watchers, [])


class AccountWatchListingTest(unittest.TestCase):
    """protocols/backend/imapnotify.py's listing arithmetic."""

    def test_diff_reports_another_process_changes(self):
        before = {"INBOX": (True, True), "a": (True, False), "b": (True, True)}
        after = {"INBOX": (True, True), "b": (True, False), "c": (True, False)}
        self.assertEqual([(e.kind, e.name) for e in imapnotify.diff(before, after)],
                         [("deleted", "a"), ("unsubscribed", "b"), ("created", "c")])

    def test_own_events_keep_the_listing_current(self):
        known = {"a": (True, True), "a/b": (True, False), "x": (True, False)}
        imapnotify.apply_event(known, MailboxEvent("renamed", "z", "a"))
        self.assertEqual(known, {"a": (False, True), "z": (True, False), "z/b": (True, False), "x": (True, False)})
        imapnotify.apply_event(known, MailboxEvent("deleted", "x"))
        imapnotify.apply_event(known, MailboxEvent("subscribed", "z"))
        imapnotify.apply_event(known, MailboxEvent("created", "n"))
        self.assertEqual(known, {"a": (False, True), "z": (True, True), "z/b": (True, False), "n": (True, False)})


class NotifyGrammarTest(unittest.TestCase):
    def test_filters_and_events(self):
        spec = notify_args(b" SET STATUS (selected-delayed (MessageNew (UID BODY.PEEK[HEADER]) MessageExpunge))"
                           b" (subtree (Lists \"Other Box\") (MessageNew MessageExpunge FlagChange))\r\n")
        self.assertTrue(spec.status)
        self.assertEqual(spec.selected.filter.kind, "SELECTED-DELAYED")
        self.assertEqual([a.name for a in spec.selected.fetch_atts], ["UID", "BODY"])
        self.assertEqual(spec.others()[0].filter.names, ("Lists", "Other Box"))
        self.assertIsNone(notify_args(b" none\r\n"))
        for bad in (b" SET\r\n", b" SET (personal)\r\n", b" SET (personal ())\r\n", b" NONE x\r\n",
                    b" SET (mailboxes (MessageNew MessageExpunge))\r\n", b" GET (personal NONE)\r\n"):
            with self.assertRaises(g.ImapParseError, msg=bad):
                notify_args(bad)

    def test_matching(self):
        sub = MailboxFilter("SUBTREE", ("a",))
        one = MailboxFilter("SUBTREE-ONE", ("a",))
        self.assertTrue(sub.matches("a/b/c") and sub.matches("a") and not sub.matches("ab"))
        self.assertTrue(one.matches("a/b") and not one.matches("a/b/c"))
        self.assertFalse(MailboxFilter("MAILBOXES", ("a*",)).matches("ab"))    # §6.6: no wildcards
        self.assertTrue(MailboxFilter("SUBSCRIBED").matches("x", {"x"}))


if __name__ == "__main__":
    unittest.main()
