"""The whole server over IMAP on loopback, with the stdlib's imaplib (issue 10 "Tests").

Mail sent over SMTP is fetched over IMAP byte-identical (after our trace
headers), over plain IMAP, STARTTLS (RFC 9051 §6.2.1) and implicit TLS
(RFC 8314); the commands of RFC 9051 §6 against the real store; IDLE hears an
SMTP delivery pushed from the change hub; POP3 and IMAP on one mailbox see
each other (a POP3 QUIT's deletions are IMAP expunges, RETR's \\Seen is IMAP's).
"""

import imaplib
import poplib
import re
import smtplib
import socket
import subprocess
import sys
import time
import unittest

from tests.helpers import ROOT, ServerTestCase, client_tls, strip_trace

BOB, BOB_PW = "bob@example.test", "bob-secret"
ALICE, ALICE_PW = "alice@example.test", "alice-secret"
WAIT = 10.0


def message(n, extra=b""):
    return (b"From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: imap %d\r\n"
            b"Message-ID: <imap-%d@elsewhere.test>\r\n\r\nbody of %d\r\n.dot line\r\n" % (n, n, n)) + extra


class ImapServerTest(ServerTestCase):
    extra_config = {"imap_port": "0", "imaps_port": "0"}

    def setUp(self):
        self.clear_mailbox(BOB)

    def send(self, *bodies, to=BOB):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=WAIT) as s:
            for body in bodies:
                self.assertEqual(s.sendmail("carol@elsewhere.test", [to], body), {})

    def imap(self, user=BOB, password=BOB_PW, tls=None):
        if tls == "implicit":
            m = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=client_tls(), timeout=WAIT)
        else:
            m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
            if tls == "starttls":
                self.assertEqual(m.starttls(client_tls())[0], "OK")
        self.addCleanup(self._close, m)
        self.assertEqual(m.login(user, password)[0], "OK")
        return m

    @staticmethod
    def _close(m):
        try:
            m.logout()
        except Exception:
            pass

    def fetch_bodies(self, m):
        typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        return [part[1] for part in data if isinstance(part, tuple)]

    # -- transport --------------------------------------------------------------------
    def test_smtp_to_imap_byte_identical_over_plain_starttls_and_implicit_tls(self):
        sent = [message(1), message(2, b"\xc3\xa9t\xc3\xa9 8-bit\r\n" * 3), message(3, (b"x" * 900 + b"\r\n") * 80)]
        self.send(*sent)
        for tls in (None, "starttls", "implicit"):
            with self.subTest(tls=tls):
                m = self.imap(tls=tls)
                self.assertEqual(m.select("INBOX"), ("OK", [b"3"]))
                self.assertEqual([strip_trace(b) for b in self.fetch_bodies(m)], sent)

    def test_starttls_then_capability_drops_starttls(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
        self.addCleanup(self._close, m)
        self.assertIn("STARTTLS", m.capabilities)
        m.starttls(client_tls())
        self.assertNotIn("STARTTLS", m.capabilities)      # RFC 9051 §6.2.1: capabilities again after TLS

    def test_wrong_password_is_refused_and_names_no_reason(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
        self.addCleanup(m.shutdown)
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(BOB, "wrong")
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))    # RFC 5530 §3

    # -- commands on the real store -------------------------------------------------------
    def test_mailbox_commands(self):
        m = self.imap()
        names = [re.search(rb'"/" (.*)$', line).group(1) for line in m.list()[1]]
        self.assertEqual(names[0], b"INBOX")
        self.assertTrue({b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"} <= set(names))
        self.assertEqual(m.create("Projects/2026")[0], "OK")
        self.assertEqual(m.rename("Projects/2026", "Projects/Done")[0], "OK")
        self.assertEqual(m.subscribe("Projects/Done")[0], "OK")
        lsub = b" ".join(m.lsub()[1])
        self.assertIn(b"Projects/Done", lsub)
        self.assertEqual(m.unsubscribe("Projects/Done")[0], "OK")
        self.assertEqual(m.delete("Projects/Done")[0], "OK")
        self.assertEqual(m.create("../escape")[0], "NO")
        self.assertEqual(m.select("Nope")[0], "NO")
        typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)")
        self.assertEqual(typ, "OK")
        self.assertRegex(data[0], rb"^INBOX \(MESSAGES 0 UIDNEXT \d+ UIDVALIDITY \d+ UNSEEN 0 SIZE 0\)$")
        typ, data = m._simple_command("NAMESPACE")
        self.assertEqual(typ, "OK")
        self.assertEqual(m._untagged_response(typ, data, "NAMESPACE")[1], [b'(("" "/")) (("shared/" "/")) NIL'])   # RFC 2342: other users' (ACL)

    def test_append_search_fetch_store_copy_move_expunge(self):
        m = self.imap()
        typ, data = m.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(1700000000), message(1))
        self.assertEqual(typ, "OK")
        self.assertRegex(data[0], rb"^\[APPENDUID \d+ 1\]")
        self.send(message(2), message(3))
        self.assertEqual(m.select("INBOX"), ("OK", [b"3"]))
        self.assertEqual(m.search(None, "FLAGGED"), ("OK", [b"1"]))
        self.assertEqual(m.search(None, "SUBJECT", '"imap 2"'), ("OK", [b"2"]))
        self.assertEqual(m.search(None, "BODY", '"body of 3"'), ("OK", [b"3"]))
        self.assertEqual(m.uid("SEARCH", "ALL"), ("OK", [b"1 2 3"]))
        typ, data = m.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE UID)")
        self.assertRegex(data[0], rb'^1 \(FLAGS \(\\Flagged( \\Recent)?\) INTERNALDATE "14-Nov-2023 \d\d:\d\d:20 [+-]\d{4}" '
                                  rb"RFC822.SIZE %d UID 1\)$" % len(message(1)))
        typ, data = m.fetch("2", "(BODY[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(data[0][1], b"Subject: imap 2\r\n\r\n")
        self.assertIn(b"\\Seen", m.fetch("2", "(FLAGS)")[1][0])       # a non-PEEK BODY[] sets \Seen
        typ, data = m.store("3", "+FLAGS", "(\\Deleted $Work)")
        self.assertRegex(data[0], rb"^3 \(FLAGS \(.*\\Deleted.*\)\)$")
        self.assertIn(b"$Work", data[0])
        typ, data = m.uid("COPY", "1:2", "Archive")
        self.assertEqual(typ, "OK")
        self.assertEqual(m.status("Archive", "(MESSAGES)")[1], [b"Archive (MESSAGES 2)"])
        typ, data = m._simple_command("UID", "MOVE", "1", "Trash")
        self.assertEqual(typ, "OK")
        self.assertEqual(m.status("Trash", "(MESSAGES)")[1], [b"Trash (MESSAGES 1)"])
        typ, data = m.expunge()
        self.assertEqual(typ, "OK")
        self.assertEqual(m.search(None, "ALL"), ("OK", [b"1"]))        # only message 2 is left
        self.assertEqual(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1], b"Subject: imap 2\r\n\r\n")
        self.assertEqual(m.close()[0], "OK")

    def test_another_users_mail_is_out_of_reach(self):
        self.send(message(1), to=ALICE)
        m = self.imap()
        self.assertEqual(m.select("INBOX"), ("OK", [b"0"]))
        for name in ("../alice", "/alice@example.test", "..", "~alice/INBOX"):
            self.assertEqual(m.select(name)[0], "NO", name)

    # -- IDLE and many sessions ---------------------------------------------------
    def test_idle_hears_an_smtp_delivery_within_a_second(self):
        sock = socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=WAIT)
        self.addCleanup(sock.close)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"a LOGIN %s %s\r\nb SELECT INBOX\r\nc IDLE\r\n" % (BOB.encode(), BOB_PW.encode()))
        while not f.readline().startswith(b"+ "):
            pass
        start = time.monotonic()
        self.send(message(9))
        line = f.readline()
        while not line.endswith(b"EXISTS\r\n"):
            line = f.readline()
        self.assertEqual(line, b"* 1 EXISTS\r\n")
        self.assertLess(time.monotonic() - start, 1.0 + 0.5)   # the send itself is part of it
        sock.sendall(b"DONE\r\n")
        while not f.readline().startswith(b"c OK"):
            pass

    def test_idle_hears_another_process_writing_the_maildir(self):
        """A writer outside this process (another mailsrv, Dovecot, mutt) is seen by the
        hub's stat poll within a few seconds, not only at the client's next command."""
        sock = socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=WAIT)
        self.addCleanup(sock.close)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"a LOGIN %s %s\r\nb SELECT INBOX\r\nc IDLE\r\n" % (BOB.encode(), BOB_PW.encode()))
        while not f.readline().startswith(b"+ "):
            pass
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "import sys; from store.folder import Folder; "
                        "Folder(sys.argv[1]).append(b'Subject: outside\\r\\n\\r\\nx\\r\\n')", self.maildir(BOB)],
                       cwd=ROOT, check=True, timeout=WAIT)
        line = f.readline()
        while not line.endswith(b"EXISTS\r\n"):
            line = f.readline()
        self.assertEqual(line, b"* 1 EXISTS\r\n")
        self.assertLess(time.monotonic() - start, 5.0)
        sock.sendall(b"DONE\r\n")
        while not f.readline().startswith(b"c OK"):
            pass

    def test_pop3_and_imap_on_one_mailbox(self):
        self.send(message(1), message(2))
        m = self.imap()
        m.select("INBOX")
        pop = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=WAIT)
        pop.user(BOB)
        pop.pass_(BOB_PW)
        pop.retr(1)                 # \Seen for IMAP
        pop.dele(2)
        pop.quit()                  # RFC 1939 §6: removed now
        self.assertEqual(m.noop()[0], "OK")
        self.assertEqual(m.search(None, "ALL"), ("OK", [b"1"]))
        self.assertIn(b"\\Seen", m.fetch("1", "(FLAGS)")[1][0])


if __name__ == "__main__":
    unittest.main()
