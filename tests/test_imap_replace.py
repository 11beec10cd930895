"""REPLACE and UID REPLACE (RFC 8508): the RFC's examples as transcripts
against the in-memory backend (whole, byte by byte, split), the refusals that
leave the old message untouched (TOOBIG, OVERQUOTA, TRYCREATE, BADURL,
read-only), a failure between the append and the removal (the new message
stays), and the real store over loopback."""

import glob
import os
import re
import socket
import unittest
from unittest import mock

from protocols.backend import imapreplace
from tests.helpers import ServerTestCase, read_stored
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_catenate import _exchange
from tests.test_imap_session import TranscriptCase

NEW_YEAR = ("Date: Thu, 1 Jan 2015 00:05:00 -0500 (EST)\r\nFrom: Fritz Schmidt <fritz.ze@example.org>\r\n"
            "Subject: happy new year !!\r\nTo: miss.mitzy@example.org\r\n"
            "Message-Id: <B238822388-0100000@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
            "Just saw the best fireworks show. Wish you were here.\r\n")
SELECT_DRAFTS = """
C: A001 SELECT Drafts
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
S: * 4 EXISTS
S: * 0 RECENT
S: * OK [UIDVALIDITY 1] UIDs valid
S: * OK [UIDNEXT %d] Predicted next UID
S: A001 OK [READ-WRITE] SELECT completed
"""


def drafts(uids, uidnext, backend=None, **config):
    """A logged-in session whose Drafts (UIDVALIDITY 1) holds ``uids``, seen, next UID ``uidnext``."""
    def make():
        s, b = make_session(backend or FakeImapBackend(), **config)
        login(s)
        box = b.mailboxes("fred")["Drafts"]
        box.uidvalidity = 1
        for uid in uids:
            box.uidnext = uid
            box.add(b"Subject: draft %d\r\n\r\nold\r\n" % uid, ["\\Seen"])
        box.uidnext = uidnext
        box.unclaimed_recent.clear()
        return s, b
    return make


def literal_lines(text: str) -> str:
    """A message as transcript "C: " lines (the last CRLF ends the literal's line)."""
    return "\n".join("C: " + line for line in text[:-2].split("\r\n"))


class RfcExamplesTest(TranscriptCase):
    def test_rfc8508_3_2_replace_and_3_3_uid_replace(self):
        """§3.2 and §3.3 examples: APPENDUID untagged first (§4.3), EXISTS, then EXPUNGE."""
        second = NEW_YEAR.replace("0100000", "0100001") + "Hopefully next year you can join us.\r\n"
        s, b = self.run_transcript(SELECT_DRAFTS % 2000 + """
C: A003 REPLACE 4 Drafts (\\Seen \\Draft) {%d}
S: + Ready for literal data
%s
C:
S: * OK [APPENDUID 1 2000] Replacement Message ready
S: * 5 EXISTS
S: * 1 RECENT
S: * 4 EXPUNGE
S: A003 OK REPLACE completed
C: A004 UID REPLACE 2000 Drafts (\\Seen \\Draft) {%d}
S: + Ready for literal data
%s
C:
S: * OK [APPENDUID 1 2001] Replacement Message ready
S: * 5 EXISTS
S: * 4 EXPUNGE
S: A004 OK REPLACE completed
""" % (len(NEW_YEAR), literal_lines(NEW_YEAR), len(second), literal_lines(second)),
            make=drafts([1, 2, 3, 4], 2000))
        box = b.boxes["fred"]["Drafts"]
        self.assertEqual(sorted(box.messages), [1, 2, 3, 2001])
        self.assertEqual(box.messages[2001].data, second.encode())
        self.assertEqual(box.messages[2001].flags, {"\\Seen", "\\Draft"})   # §1: nothing inherited

    def test_rfc8508_4_2_uid_replace_with_catenate(self):
        """§4.2 example: the new header text, then the whole old message by URL."""
        s, b = self.run_transcript(SELECT_DRAFTS % 3003 + """
C: A011 UID REPLACE 3002 Drafts CATENATE (TEXT {71}
S: + Ready for literal data
C: To: Mitzy <miss.mitzy@example.org>
C: Subject: My view of the fireworks
C:  URL "/Drafts/;UID=3002")
S: * OK [APPENDUID 1 3003] Replacement Message ready
S: * 5 EXISTS
S: * 1 RECENT
S: * 4 EXPUNGE
S: A011 OK REPLACE completed
""", make=drafts([1, 2, 3, 3002], 3003))
        self.assertEqual(b.boxes["fred"]["Drafts"].messages[3003].data,
                         b"To: Mitzy <miss.mitzy@example.org>\r\nSubject: My view of the fireworks\r\n"
                         b"Subject: draft 3002\r\n\r\nold\r\n")

    def test_replace_into_another_mailbox_and_rev2(self):
        """§3.4: the named mailbox need not be the selected one (Drafts -> Sent)."""
        s, b = self.run_transcript(SELECT_DRAFTS % 5 + """
C: A1 REPLACE 2 Sent {3+}
C: abc
S: * OK [APPENDUID 1001 1] Replacement Message ready
S: * 2 EXPUNGE
S: A1 OK REPLACE completed
C: A2 UID REPLACE 1 Drafts {3+}
C: xyz
S: * OK [APPENDUID 1 5] Replacement Message ready
S: * 4 EXISTS
S: * 1 RECENT
S: * 1 EXPUNGE
S: A2 OK REPLACE completed
""", make=drafts([1, 2, 3, 4], 5))
        self.assertEqual(b.boxes["fred"]["Sent"].messages[1].data, b"abc")
        self.assertEqual(sorted(b.boxes["fred"]["Drafts"].messages), [3, 4, 5])


class RefusalTest(TranscriptCase):
    def setUp(self):
        self.s, self.b = drafts([1, 2], 3)()
        feed(self.s, b"S SELECT Drafts\r\n")
        self.box = self.b.boxes["fred"]["Drafts"]

    def untouched(self):
        self.assertEqual(sorted(self.box.messages), [1, 2])
        self.assertEqual(self.box.messages[2].flags, {"\\Seen"})     # never marked \Deleted

    def test_refusals_leave_the_old_message_untouched(self):
        for command, reply in (
                (b"T REPLACE 2 Nope {3+}\r\nabc\r\n", b"T NO [TRYCREATE] Mailbox 'Nope' does not exist\r\n"),
                (b'T REPLACE 2 Drafts CATENATE (URL "/Drafts/;UID=9")\r\n',
                 b"T NO [BADURL /Drafts/;UID=9] CATENATE failed: mailbox Drafts has no message UID 9\r\n"),
                (b"T REPLACE 3 Drafts {3+}\r\nabc\r\n", b"T BAD no message 3 (2 exist)\r\n"),
                (b"T UID REPLACE 3 Drafts {3+}\r\nabc\r\n", b"T NO [NONEXISTENT] No message with UID 3\r\n"),
                (b"T REPLACE 2 Drafts {0+}\r\n\r\n", b"T NO [CANNOT] Empty message refused\r\n"),
                (b"T REPLACE 2 Drafts {3+}\r\nabc {3+}\r\nabc\r\n", b"T BAD expected end of command at ' {3+}<CRLF>abc<CRLF>'\r\n"),
                (b"T REPLACE 2 Drafts (\\Bogus) {3+}\r\nabc\r\n", b"T BAD Unknown system flag \\Bogus\r\n")):
            with self.subTest(command=command):
                self.assertEqual(feed(self.s, command), reply)
                self.untouched()

    def test_toobig_and_overquota(self):
        s, b = drafts([1, 2], 3, max_append=100)()
        feed(s, b"S SELECT Drafts\r\n")
        self.box = b.boxes["fred"]["Drafts"]
        self.assertEqual(feed(s, b"T REPLACE 2 Drafts {101}\r\n"),
                         b"T NO [TOOBIG] literal of 101 octets is over the limit\r\n")
        self.untouched()
        out = feed(s, b'T REPLACE 2 Drafts CATENATE (URL "/Drafts/;UID=1" URL "/Drafts/;UID=1" '
                      b'URL "/Drafts/;UID=1" URL "/Drafts/;UID=1" URL "/Drafts/;UID=1")\r\n')
        self.assertEqual(out, b"T NO [TOOBIG] Catenated message over 100 octets\r\n")
        self.untouched()
        used = sum(len(m.data) for box in b.boxes["fred"].values() for m in box.messages.values())
        b.quotas["fred"] = (used, 0)
        old = len(self.box.messages[2].data)
        out = feed(s, b"T REPLACE 2 Drafts {%d+}\r\n" % (old + 1) + b"x" * (old + 1) + b"\r\n")
        self.assertEqual(out, b"T NO [OVERQUOTA] Quota exceeded for fred\r\n")
        self.untouched()
        # RFC 8508 §3.4: only the net consumption counts, so a same-size replacement at the limit is fine
        out = feed(s, b"T REPLACE 2 Drafts {%d+}\r\n" % old + b"y" * old + b"\r\n")
        self.assertEqual(out, b"* OK [APPENDUID 1 3] Replacement Message ready\r\n* 3 EXISTS\r\n"
                              b"* 1 RECENT\r\n* 2 EXPUNGE\r\nT OK REPLACE completed\r\n")

    def test_read_only_and_not_selected(self):
        feed(self.s, b"E EXAMINE Drafts\r\n")
        self.assertEqual(feed(self.s, b"T REPLACE 2 Drafts {3+}\r\nabc\r\n"),
                         b"T NO [READ-ONLY] Mailbox is read-only\r\n")
        self.untouched()
        feed(self.s, b"U UNSELECT\r\n")
        self.assertEqual(feed(self.s, b"T UID REPLACE 2 Drafts {3+}\r\nabc\r\n"),
                         b"T BAD REPLACE not allowed in the AUTHENTICATED state\r\n")

    def test_failure_after_the_append_keeps_the_new_message(self):
        """A crash mid-REPLACE (the removal fails): the new message is there, the
        old one too, the client hears the APPENDUID and a NO, and no EXPUNGE."""
        self.b.fail_expunge = True
        out = feed(self.s, b"T REPLACE 2 Drafts {3+}\r\nnew\r\n")
        self.assertEqual(out, b"* OK [APPENDUID 1 3] Replacement Message ready\r\n* 3 EXISTS\r\n"
                              b"* 1 RECENT\r\nT NO [UNAVAILABLE] Replacement stored, but the old message UID 2 could "
                              b"not be removed; try again\r\n")
        self.assertEqual(sorted(self.box.messages), [1, 2, 3])
        self.assertEqual(self.box.messages[3].data, b"new")


def _stored(folder_dir):
    return sorted(read_stored(p) for p in glob.glob(os.path.join(folder_dir, "cur", "*"))
                  + glob.glob(os.path.join(folder_dir, "new", "*")))


class ReplaceServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}

    def session(self):
        sock = socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=10)
        self.addCleanup(sock.close)
        sock.recv(4096)
        self.assertIn(b"a OK", _exchange(sock, b"a LOGIN bob@example.test bob-secret\r\n", b"a"))
        uids = []
        for i in (1, 2):
            out = _exchange(sock, b"p%d APPEND Drafts (\\Draft) {7+}\r\ndraft %d\r\n" % (i, i), b"p%d" % i)
            uids.append(int(re.search(rb"OK \[APPENDUID \d+ (\d+)\]", out).group(1)))
        self.assertIn(b"s OK", _exchange(sock, b"s SELECT Drafts\r\n", b"s"))
        return sock, uids

    def setUp(self):
        for name in ("", ".Drafts", ".Sent"):
            for p in glob.glob(os.path.join(self.maildir("bob@example.test", name), "*", "*")):
                if os.path.basename(os.path.dirname(p)) in ("cur", "new"):
                    os.unlink(p)

    def test_replace_on_the_store_over_loopback(self):
        sock, (one, two) = self.session()
        out = _exchange(sock, b"r UID REPLACE %d Drafts (\\Seen) CATENATE (TEXT {8+}\r\nedited: "
                              b' URL "/Drafts/;UID=%d")\r\n' % (two, one), b"r")
        self.assertRegex(out, rb"\A\* OK \[APPENDUID \d+ %d\] Replacement Message ready\r\n\* 3 EXISTS\r\n"
                              rb"(\* \d RECENT\r\n)?\* 2 EXPUNGE\r\nr OK REPLACE completed\r\n\Z" % (two + 1))
        self.assertEqual(_stored(self.maildir("bob@example.test", ".Drafts")), [b"draft 1", b"edited: draft 1"])
        out = _exchange(sock, b"m REPLACE 1 Sent {4+}\r\nsent\r\n", b"m")
        self.assertRegex(out, rb"\* 1 EXPUNGE\r\nm OK REPLACE completed")
        self.assertEqual(_stored(self.maildir("bob@example.test", ".Sent")), [b"sent"])
        self.assertEqual(_stored(self.maildir("bob@example.test", ".Drafts")), [b"edited: draft 1"])

    def test_removal_failing_on_the_store_keeps_both(self):
        sock, (_one, two) = self.session()
        with mock.patch.object(imapreplace, "expunge_one", side_effect=OSError("disk went away")):
            with self.assertLogs("mailsrv.imap.access", "ERROR"):
                out = _exchange(sock, b"r REPLACE 2 Drafts {3+}\r\nnew\r\n", b"r")
        self.assertRegex(out, rb"\A\* OK \[APPENDUID \d+ %d\] Replacement Message ready\r\n\* 3 EXISTS\r\n"
                              rb"(\* \d RECENT\r\n)?r NO \[UNAVAILABLE\] Replacement stored, but the old message "
                              rb"UID %d" % (two + 1, two))
        self.assertEqual(_stored(self.maildir("bob@example.test", ".Drafts")), [b"draft 1", b"draft 2", b"new"])


if __name__ == "__main__":
    unittest.main()
