"""MULTISEARCH (RFC 7377, protocols/imap/multisearch.py): the RFC's example as a
transcript (whole, byte by byte, split) over the in-memory backend, the
rules of §2.1 / §2.2 / §2.4, and the whole server on loopback searching
several real Maildir folders."""

import imaplib
import unittest
from unittest import mock

from protocols.imap import multisearch
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_session import TranscriptCase


def msg(subject: str) -> bytes:
    return b"From: a@example.org\r\nSubject: " + subject.encode() + b"\r\n\r\nText.\r\n"


def folders_backend():
    """The mailboxes of RFC 7377 §3's example, with UIDs and UIDVALIDITYs as printed."""
    backend = FakeImapBackend()
    boxes = backend.mailboxes("fred")

    def box(name, uidvalidity, messages):
        f = boxes[name] = backend.folder(name)
        f.uidvalidity = uidvalidity
        for uid, subject, seen in messages:
            f.uidnext = uid
            f.add(msg(subject), ["\\Seen"] if seen else [])
    box("folder1", 1, [(u, "chad", True) for u in (3001, 3002, 3003, 3004, 3788)]
        + [(u, "other", u % 2 == 0) for u in range(4001, 4010)])
    box("folder2", 7, [(1, "nothing", True)])
    box("folder2/banana", 503, [(3002, "x", False), (4004, "y", False)])
    box("folder2/peach", 3, [(921691, "z", False)])
    box("folder2/salmon", 1111111, [(u, "chad", True) for u in (50003, 50006, 50009, 50012)])
    box("folder2/salmon/deep", 9, [(5, "chad", False)])
    return backend


def logged_in(make_backend=folders_backend):
    def make():
        s, b = make_session(make_backend())
        login(s)
        return s, b
    return make


class MultiSearchTranscriptTest(TranscriptCase):
    def test_rfc7377_3_example(self):
        """§3 (run one after the other, not interleaved; MAILBOX as an atom)."""
        self.run_transcript("""
C: tag1 ESEARCH IN (mailboxes "folder1" subtree "folder2") unseen
S: * ESEARCH (TAG "tag1" MAILBOX folder1 UIDVALIDITY 1) UID ALL 4001,4003,4005,4007,4009
S: * ESEARCH (TAG "tag1" MAILBOX folder2/banana UIDVALIDITY 503) UID ALL 3002,4004
S: * ESEARCH (TAG "tag1" MAILBOX folder2/peach UIDVALIDITY 3) UID ALL 921691
S: * ESEARCH (TAG "tag1" MAILBOX folder2/salmon/deep UIDVALIDITY 9) UID ALL 5
S: tag1 OK ESEARCH completed
C: tag2 ESEARCH IN (mailboxes "folder1" subtree-one "folder2") subject "chad"
S: * ESEARCH (TAG "tag2" MAILBOX folder1 UIDVALIDITY 1) UID ALL 3001:3004,3788
S: * ESEARCH (TAG "tag2" MAILBOX folder2/salmon UIDVALIDITY 1111111) UID ALL 50003,50006,50009,50012
S: tag2 OK ESEARCH completed
""", make=logged_in())

    def test_return_options_apply_per_mailbox_and_empty_mailboxes_are_silent(self):
        """§2.1: MIN / MAX / COUNT per mailbox; no response where nothing matched."""
        self.run_transcript("""
C: a ESEARCH IN (personal) RETURN (MIN MAX COUNT) SUBJECT chad
S: * ESEARCH (TAG "a" MAILBOX folder1 UIDVALIDITY 1) UID MIN 3001 MAX 3788 COUNT 5
S: * ESEARCH (TAG "a" MAILBOX folder2/salmon UIDVALIDITY 1111111) UID MIN 50003 MAX 50012 COUNT 4
S: * ESEARCH (TAG "a" MAILBOX folder2/salmon/deep UIDVALIDITY 9) UID MIN 5 MAX 5 COUNT 1
S: a OK ESEARCH completed
C: b ESEARCH IN (mailboxes (folder1 folder1 nosuch)) SUBJECT nobody
S: b OK ESEARCH completed
""", make=logged_in())

    def test_selected_source_and_the_rules_of_2_2(self):
        self.run_transcript("""
C: a ESEARCH UNSEEN
S: a BAD ESEARCH of the selected mailbox in the AUTHENTICATED state
C: b ESEARCH IN (personal) RETURN (SAVE) ALL
S: b BAD RETURN (SAVE) only for the selected mailbox alone (RFC 7377 §2.2)
C: c ESEARCH IN (personal ("FUZZY")) ALL
S: c BAD unknown scope option (RFC 7377 §4 defines none)
C: d ESEARCH IN (selected-delayed) ALL
S: d BAD unknown mailbox filter 'SELECTED-DELAYED'
C: e EXAMINE folder2/banana
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS ()] Read-only mailbox
S: * 2 EXISTS
S: * 2 RECENT
S: * OK [UNSEEN 1] First unseen
S: * OK [UIDVALIDITY 503] UIDs valid
S: * OK [UIDNEXT 4005] Predicted next UID
S: e OK [READ-ONLY] EXAMINE completed
C: f ESEARCH RETURN (SAVE MIN) UNSEEN
S: * ESEARCH (TAG "f" MAILBOX folder2/banana UIDVALIDITY 503) UID MIN 3002
S: f OK ESEARCH completed
C: g UID SEARCH $
S: * SEARCH 3002
S: g OK SEARCH completed
C: h ESEARCH IN (selected mailboxes folder2/peach) 1:*
S: * ESEARCH (TAG "h" MAILBOX folder2/banana UIDVALIDITY 503) UID ALL 3002,4004
S: * ESEARCH (TAG "h" MAILBOX folder2/peach UIDVALIDITY 3) UID ALL 921691
S: h OK ESEARCH completed
C: i ESEARCH IN (selected) 5:100
S: i OK ESEARCH completed
""", make=logged_in())

    def test_too_many_mailboxes_is_no_limit_rfc7377_2_4(self):
        with mock.patch.object(multisearch, "MAX_MAILBOXES", 3):
            self.run_transcript("""
C: a ESEARCH IN (personal) ALL
S: a NO [LIMIT] ESEARCH over 12 mailboxes; at most 3
""", make=logged_in())

    def test_other_mailboxes_are_opened_read_only_and_closed(self):
        s, b = logged_in()()
        opened = []
        account_open = type(s._account).open

        def spy(account, name, readonly, done):
            opened.append((name, readonly))
            account_open(account, name, readonly, done)
        with mock.patch.object(type(s._account), "open", spy):
            feed(s, b"a ESEARCH IN (subtree folder2) UNSEEN\r\n")
        self.assertEqual(opened, [(n, True) for n in ("folder2", "folder2/banana", "folder2/peach",
                                                      "folder2/salmon", "folder2/salmon/deep")])
        self.assertEqual(b.boxes["fred"]["folder2/banana"].watchers, [])                     # closed
        self.assertIn(b" MULTISEARCH", feed(s, b"c CAPABILITY\r\n"))


class MultiSearchServerTest(ServerTestCase):
    """Real Maildir folders, the server's own search code per folder."""

    extra_config = {"imap_port": "0"}
    tls = False

    def test_esearch_in_personal_over_loopback(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        m.login("alice@example.test", "alice-secret")
        for name in ("Lists", "Lists/Deep"):
            m.create(name)
        m.append("INBOX", None, None, msg("budget"))
        m.append("Lists", None, None, msg("other"))
        m.append("Lists", None, None, msg("budget 2"))
        m.append("Lists/Deep", None, None, msg("budget 3"))
        with mock.patch.dict(imaplib.Commands, {"ESEARCH": ("AUTH", "SELECTED")}):
            typ, data = m._simple_command("ESEARCH", "IN", "(personal)", "SUBJECT", "budget")
        self.assertEqual(typ, "OK")
        lines = m.untagged_responses.pop("ESEARCH", [])
        text = b"\n".join(lines)
        self.assertRegex(text, rb'MAILBOX INBOX UIDVALIDITY \d+\) UID ALL \d+')
        self.assertRegex(text, rb'MAILBOX Lists UIDVALIDITY \d+\) UID ALL 2\b')
        self.assertRegex(text, rb'MAILBOX Lists/Deep UIDVALIDITY \d+\) UID ALL 1\b')
        self.assertEqual(len(lines), 3)


if __name__ == "__main__":
    unittest.main()
