"""NOTIFY (RFC 5465) on the whole server over loopback: a client that sent
NOTIFY SET hears, without sending anything more, an SMTP delivery, another
IMAP session's CREATE / RENAME / SUBSCRIBE / flag change / expunge, and a
folder or message another process (here: the test, writing the Maildir
directly) put on disk, found by the change hub's poll."""

import imaplib
import os
import smtplib
import socket
import threading

from tests.helpers import ServerTestCase, wait_for

USER, PASSWORD = "bob@example.test", "bob-secret"
MSG = b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: notify\r\n\r\nHello.\r\n"
WAIT = 10.0


class NotifyServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}
    tls = False

    def setUp(self):
        hub = self.server.backend.mail.hub
        old = hub.poll_interval
        hub.poll_interval = 0.1                       # other processes' changes within a test's patience
        self.addCleanup(setattr, hub, "poll_interval", old)
        self.sock = socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=WAIT)
        self.addCleanup(self.sock.close)
        self.buf = b""
        self.line()
        self.command(b"a LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def command(self, text: bytes):
        tag = text.split()[0]
        self.sock.sendall(text + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                self.assertIn(b" OK ", line)
                return lines
            lines.append(line)

    def until(self, wanted: bytes):
        """Untagged lines, as they come unasked, up to one starting with ``wanted``."""
        seen = []
        while True:
            line = self.line()
            seen.append(line)
            if line.startswith(wanted):
                return seen

    def other(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        return m

    def test_delivery_and_other_sessions_are_heard_without_a_command(self):
        self.command(b"n NOTIFY SET STATUS (personal (MessageNew MessageExpunge FlagChange MailboxName "
                     b"SubscriptionChange))")
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=WAIT) as s:
            s.sendmail("carol@example.test", [USER], MSG)
        line = self.until(b"* STATUS INBOX")[-1]
        self.assertRegex(line, rb"^\* STATUS INBOX \(MESSAGES (\d+) UIDNEXT \d+ UIDVALIDITY \d+ UNSEEN \d+\)$")
        m = self.other()
        m.create("Projects")
        self.assertEqual(self.until(b"* LIST")[-1], b'* LIST (\\HasNoChildren) "/" Projects')
        m.rename("Projects", "Archive2")
        self.assertEqual(self.until(b"* LIST")[-1], b'* LIST (\\HasNoChildren) "/" Archive2 ("OLDNAME" (Projects))')
        m.subscribe("Archive2")
        self.assertEqual(self.until(b"* LIST")[-1], b'* LIST (\\HasNoChildren \\Subscribed) "/" Archive2')
        m.select("INBOX")
        typ, data = m.search(None, "ALL")
        last = data[0].split()[-1]
        m.store(last, "+FLAGS", "(\\Seen \\Deleted)")
        self.assertRegex(self.until(b"* STATUS INBOX")[-1], rb"UNSEEN \d+\)$")
        m.expunge()
        self.until(b"* STATUS INBOX")
        m.delete("Archive2")
        self.assertEqual(self.until(b"* LIST")[-1], b'* LIST (\\NonExistent \\Subscribed) "/" Archive2')

    def on_loop(self, fn):
        box, ready = [], threading.Event()
        self.server.loop.call_soon_threadsafe(lambda: (box.append(fn()), ready.set()))
        self.assertTrue(ready.wait(WAIT), "the loop did not run the call")
        return box[0]

    def test_another_process_writing_the_maildir_is_found_by_the_poll(self):
        self.command(b"n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
        hub = self.server.backend.mail.hub
        wait_for(lambda: self.on_loop(lambda: USER in hub._name_tokens), "the poll's baseline of the tree")
        root = self.maildir(USER)
        folder = os.path.join(root, ".Outside")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(folder, sub))
        self.assertEqual(self.until(b"* LIST")[-1], b'* LIST (\\HasNoChildren) "/" Outside')
        self.assertRegex(self.until(b"* STATUS Outside")[-1],       # a new folder: what it holds
                         rb"^\* STATUS Outside \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+\)$")
        wait_for(lambda: self.on_loop(lambda: (USER, "Outside") in hub._tokens), "the poll's baseline of Outside")
        with open(os.path.join(folder, "new", "1700000000.M1P1.outside"), "wb") as f:
            f.write(MSG)
        self.assertRegex(self.until(b"* STATUS Outside")[-1],
                         rb"^\* STATUS Outside \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+\)$")

    def test_selected_mailbox_pushes_while_idle_and_between_commands(self):
        self.command(b"r ENABLE IMAP4rev2")
        self.command(b"s SELECT INBOX")
        self.command(b"n NOTIFY SET (selected (MessageNew (UID) MessageExpunge FlagChange))")
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=WAIT) as s:
            s.sendmail("carol@example.test", [USER], MSG)
        seen = self.until(b"* ")
        exists = seen[-1]
        self.assertRegex(exists, rb"^\* \d+ EXISTS$")
        self.assertRegex(self.line(), rb"^\* \d+ FETCH \(UID \d+\)$")
        self.sock.sendall(b"i IDLE\r\n")
        self.assertEqual(self.line(), b"+ idling")
        m = self.other()
        m.select("INBOX")
        typ, data = m.search(None, "ALL")
        m.store(data[0].split()[-1], "+FLAGS", "(\\Flagged)")
        self.assertRegex(self.until(b"* ")[-1], rb"^\* \d+ FETCH \(UID \d+ FLAGS \(.*\\Flagged.*\)\)$")
        self.sock.sendall(b"DONE\r\n")
        self.assertEqual(self.line(), b"i OK IDLE terminated")
