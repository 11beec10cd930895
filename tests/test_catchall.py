"""Catch-all mode (issue 11): every address of every domain caught, nothing
relayed, any address logs in with the mode's password; normal mode unchanged.

Over loopback with smtplib, poplib and imaplib against ``mailsrv.TestServer``
and, for normal mode, a plain ``MailServer``.
"""

import base64
import imaplib
import os
import poplib
import shutil
import smtplib
import tempfile
import unittest

from mailsrv import Config, MailServer, TestServer
from protocols.backend.auth import AuthService
from protocols.backend.catchall import CatchAllAuth, CatchAllDirectory
from protocols.sasl import ScramClient
from protocols.testserver import ports_from_base
from store.users import Directory
from tests.helpers import CERT, KEY, cheap_scrypt, client_tls, free_ports

MSG = b"From: app@shop.test\r\nTo: bob@example.org\r\nSubject: Welcome\r\n\r\nplease activate\r\n"


def queue_files(data_dir):
    """Every file under the data folder's queue (none: nothing waits for relay)."""
    out = []
    for dirpath, _dirs, files in os.walk(os.path.join(data_dir, "queue")):
        out += [os.path.join(dirpath, f) for f in files]
    return out


def pop3_read(port, user, password):
    p = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        p.user(user)
        p.pass_(password)
        count = p.stat()[0]
        return [b"\r\n".join(p.retr(i + 1)[1]) for i in range(count)]
    finally:
        p.quit()


def imap_read(port, user, password):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        m.login(user, password)
        m.select("INBOX")
        _typ, data = m.search(None, "ALL")
        out = []
        for num in data[0].split():
            _typ, parts = m.fetch(num, "(RFC822)")
            out.append(parts[0][1])
        return out
    finally:
        m.logout()


class CatchAllMode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mail = TestServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.mail.stop()

    def setUp(self):
        self.mail.reset()

    def test_the_mode_uses_its_own_directory_and_auth_and_no_relay(self):
        backend = self.mail.backend
        self.assertIsInstance(backend.directory, CatchAllDirectory)
        self.assertIsInstance(backend.auth, CatchAllAuth)
        self.assertIsNone(backend.outbound.queue)
        self.assertIsNone(backend.outbound.relay)

    def test_two_domains_are_both_caught_and_nothing_is_queued(self):
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            refused = s.sendmail("app@shop.test", ["bob@example.org", "carol@other.net"], MSG)
        self.assertEqual(refused, {})
        boxes = sorted(m.mailbox for m in self.mail.caught())
        self.assertEqual(boxes, ["bob@example.org", "carol@other.net"])
        self.assertEqual(queue_files(self.mail.data_dir), [])

    def test_each_address_has_its_own_mailbox_plus_tags_too(self):
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            s.sendmail("app@shop.test", ["Bob+news@Example.ORG", "bob@example.org"], MSG)
        self.assertEqual(sorted(m.mailbox for m in self.mail.caught()),
                         ["bob+news@example.org", "bob@example.org"])

    def test_pop3_and_imap_log_in_as_any_address_with_the_address_as_password(self):
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            s.sendmail("app@shop.test", ["dave@example.org"], MSG)
        self.assertIn(b"please activate", pop3_read(self.mail.pop3_port, "dave@example.org", "dave@example.org")[0])
        self.assertIn(b"please activate", imap_read(self.mail.imap_port, "dave@example.org", "dave@example.org")[0])
        # an address nobody wrote to yet logs in too, to an empty mailbox
        self.assertEqual(pop3_read(self.mail.pop3_port, "nobody@new.test", "nobody@new.test"), [])
        self.assertEqual(imap_read(self.mail.imap_port, "nobody2@new.test", "nobody2@new.test"), [])

    def test_a_wrong_password_is_refused(self):
        p = poplib.POP3("127.0.0.1", self.mail.pop3_port, timeout=10)
        p.user("dave@example.org")
        with self.assertRaises(poplib.error_proto):
            p.pass_("not the address")
        p.close()
        m = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=10)
        with self.assertRaises(imaplib.IMAP4.error):
            m.login("dave@example.org", "not the address")
        m.logout()

    def test_smtp_auth_as_any_address_over_starttls_is_recorded(self):
        """No TLS on this server: AUTH over loopback plaintext (plaintext_auth_loopback)."""
        with smtplib.SMTP("127.0.0.1", self.mail.submission_port, timeout=10) as s:
            s.login("app@shop.test", "app@shop.test")
            s.sendmail("noreply@shop.test", ["erin@example.org"], MSG)
        sent = self.mail.sent()
        self.assertEqual([(x.auth_user, x.mail_from, x.listener, x.tls) for x in sent],
                         [("app@shop.test", "noreply@shop.test", "submission", False)])

    def scram_pop3(self, port, user, password):
        """POP3 AUTH SCRAM-SHA-256 (RFC 5034 §4): whether the login succeeded."""
        p = poplib.POP3("127.0.0.1", port, timeout=10)
        try:
            client = ScramClient(user, password)
            challenge = p._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
            final = client.final(base64.b64decode(challenge[2:]))
            server_final = p._shortcmd(base64.b64encode(final).decode())
            self.assertTrue(client.verify(base64.b64decode(server_final[2:])))
            return p._shortcmd("").startswith(b"+OK")
        except poplib.error_proto:
            return False
        finally:
            p.close()

    def test_scram_works_with_the_mode_password(self):
        self.assertTrue(self.scram_pop3(self.mail.pop3_port, "gus@example.org", "gus@example.org"))
        self.assertFalse(self.scram_pop3(self.mail.pop3_port, "gus@example.org", "something else"))

    def test_a_user_added_keeps_its_own_password(self):
        with cheap_scrypt():
            self.mail.add_user("frank@example.org", "franks-secret")
        self.assertEqual(pop3_read(self.mail.pop3_port, "frank@example.org", "franks-secret"), [])
        p = poplib.POP3("127.0.0.1", self.mail.pop3_port, timeout=10)
        p.user("frank@example.org")
        with self.assertRaises(poplib.error_proto):
            p.pass_("frank@example.org")
        p.close()

    def test_address_literals_and_path_tricks_are_refused_not_relayed(self):
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            s.ehlo()
            s.mail("app@shop.test")
            for rcpt in ("bob@[192.0.2.1]", "bob%remote.test@example.org", "../x@example.org", "a/b@example.org"):
                with self.subTest(rcpt=rcpt):
                    code = s.rcpt(rcpt)[0]
                    self.assertTrue(500 <= code < 600, code)
        self.assertEqual(queue_files(self.mail.data_dir), [])


class PasswordRules(unittest.TestCase):
    def test_any_password(self):
        with TestServer(any_password=True) as mail:
            self.assertEqual(pop3_read(mail.pop3_port, "x@a.test", "whatever"), [])
            self.assertEqual(imap_read(mail.imap_port, "y@b.test", "anything at all"), [])
            with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=10) as s:
                s.login("z@c.test", "no matter")

    def test_a_given_password(self):
        with TestServer(password="s3cret") as mail:
            self.assertEqual(pop3_read(mail.pop3_port, "x@a.test", "s3cret"), [])
            with self.assertRaises(imaplib.IMAP4.error):
                imap_read(mail.imap_port, "x@a.test", "x@a.test")

    def test_starttls_with_the_operator_certificate_marks_tls(self):
        with TestServer(tls_cert=CERT, tls_key=KEY) as mail:
            self.assertIsNotNone(mail.smtps_port)
            with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=10) as s:
                s.starttls(context=client_tls())
                s.login("app@shop.test", "app@shop.test")
                s.sendmail("app@shop.test", ["bob@example.org"], MSG)
            sent = mail.sent()
            self.assertEqual((sent[0].tls, sent[0].auth_user), (True, "app@shop.test"))
            self.assertTrue(mail.caught(to="bob@example.org")[0].tls)


class NormalModeUnchanged(unittest.TestCase):
    """Without catch_all: unknown users refused, no relay for strangers, the usual services."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mailsrv-test-")
        cls.server = MailServer(Config(free_ports(data_dir=cls.tmp, hostname="mx.example.test",
                                                  domains="example.test", log_level="WARNING",
                                                  trusted_networks="none", dns_servers="127.0.0.1:9")))
        with cheap_scrypt():
            cls.server.add_user("alice@example.test", "pw")
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(grace=2)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_catch_all_is_off_by_default(self):
        self.assertFalse(Config({}).catch_all)
        backend = self.server.backend
        self.assertIs(type(backend.directory), Directory)
        self.assertIs(type(backend.auth), AuthService)

    def test_unknown_recipient_and_other_domains_are_refused(self):
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=10) as s:
            s.ehlo()
            s.mail("someone@remote.test")
            self.assertEqual(s.rcpt("nobody@example.test")[0], 550)
            self.assertEqual(s.rcpt("bob@other.net")[0], 550)
            self.assertEqual(s.rcpt("alice@example.test")[0], 250)
        self.assertEqual(queue_files(self.tmp), [])

    def test_no_envelope_log_is_written(self):
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=10) as s:
            s.sendmail("someone@remote.test", ["alice@example.test"], MSG)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "caught-envelopes.jsonl")))


class PortsBase(unittest.TestCase):
    def test_greenmail_layout(self):
        ports = ports_from_base(3000)
        self.assertEqual({k: ports[k] for k in ("smtp_port", "pop3_port", "imap_port", "smtps_port",
                                                "pop3s_port", "imaps_port", "submission_port")},
                         {"smtp_port": "3025", "pop3_port": "3110", "imap_port": "3143", "smtps_port": "3465",
                          "pop3s_port": "3995", "imaps_port": "3993", "submission_port": "3587"})
        self.assertEqual(set(ports_from_base(0).values()), {"0"})
        with self.assertRaises(ValueError):
            ports_from_base(65000)


if __name__ == "__main__":
    unittest.main()
