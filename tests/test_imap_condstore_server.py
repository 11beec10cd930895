"""CONDSTORE / QRESYNC (RFC 7162) on the whole server over loopback with imaplib:
the real store's MODSEQs and expunge log (store/modseq.py) behind the session.

A client syncs, then another session changes flags and expunges and a file
disappears behind the server's back (as mutt or Dovecot would remove it): the
QRESYNC session still selected hears FETCH with MODSEQ and VANISHED at its
NOOP; a new one resyncing with ``SELECT (QRESYNC ...)`` gets exactly the
expunged UIDs and the changed messages; an UNCHANGEDSINCE older than a
message's MODSEQ is answered [MODIFIED].
"""

import glob
import imaplib
import os
import re
import smtplib

from tests.helpers import ServerTestCase, wait_for

BOB, BOB_PW = "bob@example.test", "bob-secret"
WAIT = 10.0


def message(n):
    return (b"From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: modseq %d\r\n"
            b"Message-ID: <modseq-%d@elsewhere.test>\r\n\r\nbody of %d\r\n" % (n, n, n))


def read(path):
    with open(path, "rb") as f:
        return f.read()


class QresyncServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}

    def setUp(self):
        self.clear_mailbox(BOB)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=WAIT) as s:
            for n in range(1, 11):
                self.assertEqual(s.sendmail("carol@elsewhere.test", [BOB], message(n)), {})

    def imap(self, qresync=True):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
        self.addCleanup(self._close, m)
        self.assertEqual(m.login(BOB, BOB_PW)[0], "OK")
        if qresync:
            self.assertEqual(m.enable("QRESYNC")[0], "OK")
            self.assertEqual(m.untagged_responses.pop("ENABLED"), [b"QRESYNC"])
        return m

    @staticmethod
    def _close(m):
        try:
            m.logout()
        except Exception:
            pass

    def test_changes_reach_a_selected_session_and_a_resync(self):
        a = self.imap()
        self.assertEqual(a.select("INBOX")[0], "OK")
        modseq = int(a.response("HIGHESTMODSEQ")[1][0])
        validity = int(a.response("UIDVALIDITY")[1][0])
        self.assertGreater(modseq, 0, a.untagged_responses)
        uids = [int(u) for u in a.uid("SEARCH", "ALL")[1][0].split()]
        self.assertEqual(len(uids), 10)
        b = self.imap(qresync=False)
        self.assertEqual(b.select("INBOX")[0], "OK")
        self.assertEqual(b.uid("STORE", "%d,%d" % (uids[1], uids[2]), "+FLAGS", "(\\Flagged)")[0], "OK")
        self.assertEqual(b.uid("STORE", str(uids[0]), "+FLAGS.SILENT", "(\\Deleted)")[0], "OK")
        self.assertEqual(b.expunge()[0], "OK")
        a.untagged_responses.clear()
        self.assertEqual(a.noop()[0], "OK")
        self.assertEqual(a.untagged_responses.get("VANISHED"), [b"%d" % uids[0]])
        fetched = a.untagged_responses.get("FETCH", [])
        self.assertEqual(len(fetched), 2, fetched)
        for line, uid in zip(fetched, uids[1:3]):
            self.assertRegex(line, rb"UID %d FLAGS \(\\Flagged( \\Recent)?\) MODSEQ \((\d+)\)" % uid)
            self.assertGreater(int(re.search(rb"MODSEQ \((\d+)\)", line).group(1)), modseq, (line, modseq))
        # a file removed behind the server's back (another program on the Maildir)
        victim = [p for p in glob.glob(os.path.join(self.maildir(BOB), "cur", "*")) +
                  glob.glob(os.path.join(self.maildir(BOB), "new", "*")) if re.search(rb"Subject: modseq 10\r?\n", read(p))]
        self.assertEqual(len(victim), 1)
        os.unlink(victim[0])
        c = self.imap()
        typ, _ = c._simple_command("SELECT", "INBOX (QRESYNC (%d %d))" % (validity, modseq))
        self.assertEqual(typ, "OK")
        self.assertEqual(c.untagged_responses.get("VANISHED"), [b"(EARLIER) %d,%d" % (uids[0], uids[-1])])
        rows = c.untagged_responses.get("FETCH", [])
        self.assertEqual([int(re.search(rb"UID (\d+)", r).group(1)) for r in rows], uids[1:3])
        wait_for(lambda: a.noop() and a.untagged_responses.get("VANISHED", [])[-1:] == [b"%d" % uids[-1]],
                 "the selected QRESYNC session to hear the file removed as VANISHED", timeout=WAIT)

    def test_unchangedsince_older_than_a_change_answers_modified(self):
        a = self.imap(qresync=False)
        self.assertEqual(a.select("INBOX")[0], "OK")
        typ, data = a.status("INBOX", "(HIGHESTMODSEQ)")
        modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))
        uids = [int(u) for u in a.uid("SEARCH", "ALL")[1][0].split()]
        self.assertEqual(a.uid("STORE", str(uids[3]), "+FLAGS", "(\\Answered)")[0], "OK")
        typ, data = a.uid("STORE", "%d,%d" % (uids[3], uids[4]), "(UNCHANGEDSINCE %d)" % modseq, "+FLAGS (\\Seen)")
        self.assertEqual(typ, "OK")
        self.assertEqual(a.response("MODIFIED")[1], [b"%d" % uids[3]])      # imaplib keeps the code
        flags = a.uid("FETCH", "%d,%d" % (uids[3], uids[4]), "(FLAGS)")[1]
        self.assertNotIn(b"\\Seen", flags[0])
        self.assertIn(b"\\Seen", flags[1])
