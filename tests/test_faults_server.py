"""Injected faults against the whole server, with the stdlib clients (issue 11).

A MailServer (mailsrv.py) on free loopback ports, TLS from tests/certs, with
its rules set through ``server.backend.faults`` as the in-process test server
does: every fault on every protocol as smtplib, poplib and imaplib see it
(fail, delay, disconnect, greylist, tls_required, reset, the hits in
``rules()``).  Then the project's own relay against a second MailServer
playing the remote MX (relayhost = 127.0.0.1:its port): a 451 at RCPT once
is retried and delivered (RFC 5321 §4.5.4.1), a 550 at RCPT bounces to the
sender (RFC 3464).  Waits are on events or bounded polls of the Maildirs
(tests/helpers.py wait_for), never sleeps.
"""

import email
import email.policy
import imaplib
import poplib
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from mailsrv import Config, MailServer
from tests.helpers import ServerTestCase, cheap_scrypt, client_tls, free_ports, wait_for

ALICE, BOB = "alice@example.test", "bob@example.test"
MSG = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: fault test\r\n\r\nHello.\r\n"
WAIT = 20.0         # seconds any one exchange may take before the test fails


class FaultsServerCase(ServerTestCase):
    extra_config = {"imap_port": "0", "log_level": "CRITICAL"}

    def setUp(self):
        self.faults = self.server.backend.faults
        self.faults.reset()
        self.addCleanup(self.faults.reset)
        for user in self.users:
            self.clear_mailbox(user)

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=WAIT)
        self.addCleanup(s.close)
        s.ehlo("client.test")
        return s

    def pop(self):
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=WAIT)
        self.addCleanup(p.close)
        return p

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=WAIT)
        self.addCleanup(_quietly, m.shutdown)
        return m

    def deliver_one(self, to=BOB):
        s = self.smtp()
        self.assertEqual(s.sendmail(ALICE, [to], MSG), {})
        s.quit()
        wait_for(lambda: self.new_messages(to), "the message in %s's Maildir" % to, timeout=WAIT)


def _quietly(fn):
    try:
        fn()
    except (OSError, imaplib.IMAP4.error):
        pass


class SmtpFaultsTest(FaultsServerCase):
    def test_fail_rcpt_451_twice_then_success(self):
        self.faults.fail("RCPT", code=451, times=2)
        s = self.smtp()
        s.mail(ALICE)
        self.assertEqual(s.rcpt(BOB)[0], 451)
        self.assertEqual(s.rcpt(BOB), (451, b"4.3.0 Requested action aborted: local error in processing"))
        self.assertEqual(s.rcpt(BOB)[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        self.assertEqual(self.faults.rules(), [])
        wait_for(lambda: self.new_messages(BOB), "the message after two 451s", timeout=WAIT)

    def test_fail_mail_550_when_the_sender_matches(self):
        rule = self.faults.fail("MAIL", code=550, when=lambda env: env.mail_from.startswith("spam@"))
        s = self.smtp()
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            s.sendmail("spam@elsewhere.test", [BOB], MSG)
        self.assertEqual(cm.exception.smtp_code, 550)
        self.assertEqual(s.sendmail(ALICE, [BOB], MSG), {})
        self.assertEqual(self.faults.rules()[0]["hits"], 1)
        self.assertEqual(self.faults.rules()[0]["id"], rule["id"])

    def test_delay_data_does_not_stall_other_clients(self):
        """DATA's 354 comes 3 s late; meanwhile another client is served
        from start to end, so the loop was not blocked."""
        self.faults.delay("DATA", seconds=3)
        slow = self.smtp()
        finished = threading.Event()
        result = {}

        def send():
            start = time.monotonic()
            try:
                result["refused"] = slow.sendmail(ALICE, [BOB], MSG)
            except Exception as exc:        # reported by the assertions below
                result["error"] = exc
            result["elapsed"] = time.monotonic() - start
            finished.set()
        thread = threading.Thread(target=send)
        thread.start()
        self.addCleanup(thread.join, WAIT)
        wait_for(lambda: self.faults.rules()[0]["hits"] == 1, "the DATA delay to start", timeout=WAIT)
        other = self.smtp()                    # a second client, while DATA waits
        self.assertEqual(other.noop()[0], 250)
        other.quit()
        self.assertFalse(finished.is_set(), "the delayed DATA answered before the other client was served")
        self.assertTrue(finished.wait(WAIT))
        self.assertEqual(result.get("refused"), {}, result.get("error"))
        self.assertGreaterEqual(result["elapsed"], 2.5)
        wait_for(lambda: self.new_messages(BOB), "the delayed message", timeout=WAIT)

    def test_disconnect_data_drops_before_the_reply_and_stores_nothing(self):
        self.faults.disconnect("DATA", times=1)
        s = self.smtp()
        with self.assertRaises(smtplib.SMTPServerDisconnected):
            s.sendmail(ALICE, [BOB], MSG)
        self.assertEqual(self.faults.rules(), [])
        # the server is fine and the next message arrives alone
        self.deliver_one()
        self.assertEqual(len(self.new_messages(BOB)), 1)

    def test_greylist_first_attempt_451_the_retry_accepted(self):
        self.faults.greylist()
        s = self.smtp()
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            s.sendmail(ALICE, [BOB], MSG)
        self.assertEqual(cm.exception.recipients[BOB], (451, b"4.7.1 Greylisted, try again later"))
        s.quit()
        self.assertEqual(self.smtp().sendmail(ALICE, [BOB], MSG), {})
        self.assertEqual(self.faults.rules()[0]["hits"], 1)

    def test_tls_required_until_starttls(self):
        self.faults.tls_required(protocol="smtp")
        s = self.smtp()
        self.assertEqual(s.mail(ALICE), (530, b"5.7.0 Must issue a STARTTLS command first"))
        s.starttls(context=client_tls())
        s.ehlo("client.test")
        self.assertEqual(s.sendmail(ALICE, [BOB], MSG), {})

    def test_reset_clears_every_rule(self):
        self.faults.fail("MAIL")
        self.faults.fail("RETR")
        self.faults.fail("FETCH")
        self.faults.greylist()
        self.faults.tls_required()
        self.assertEqual(len(self.faults.rules()), 5)
        self.faults.reset()
        self.assertEqual(self.faults.rules(), [])
        self.deliver_one()


class ReadmeExampleTest(FaultsServerCase):
    def test_the_readme_example_runs_as_printed(self):
        import contextlib
        import io
        import os
        import re
        from tests.helpers import ROOT
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            section = f.read().split("### Fault injection (test server)", 1)[1].split("\n## ", 1)[0]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"server": self.server})
        self.assertIn("'hits': 0", out.getvalue())
        self.assertEqual(self.faults.rules(), [])


class Pop3FaultsTest(FaultsServerCase):
    def login(self):
        p = self.pop()
        p.user(BOB)
        p.pass_(self.users[BOB])
        return p

    def test_retr_fail_then_success(self):
        self.deliver_one()
        self.faults.fail("RETR", times=1)
        p = self.login()
        with self.assertRaises(poplib.error_proto) as cm:
            p.retr(1)
        self.assertEqual(cm.exception.args[0], b"-ERR [SYS/TEMP] Temporary failure, try again later")
        self.assertIn(b"Subject: fault test", b"\r\n".join(p.retr(1)[1]))

    def test_login_fail(self):
        self.faults.fail("LOGIN", protocol="pop3", code=535)
        p = self.pop()
        p.user(BOB)
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_(self.users[BOB])
        self.assertEqual(cm.exception.args[0], b"-ERR [AUTH] Authentication failed")

    def test_delay_and_disconnect(self):
        self.deliver_one()
        self.faults.delay("STAT", seconds=1, times=1)
        self.faults.disconnect("RETR")
        p = self.login()
        start = time.monotonic()
        self.assertEqual(p.stat()[0], 1)
        self.assertGreaterEqual(time.monotonic() - start, 0.8)
        with self.assertRaises((poplib.error_proto, OSError)):
            p.retr(1)

    def test_tls_required_until_stls(self):
        self.faults.tls_required(protocol="pop3")
        p = self.pop()
        with self.assertRaises(poplib.error_proto) as cm:
            p.user(BOB)
        self.assertEqual(cm.exception.args[0], b"-ERR Must issue a STLS command first")
        p.stls(context=client_tls())
        p.user(BOB)
        self.assertTrue(p.pass_(self.users[BOB]).startswith(b"+OK"))


class ImapFaultsTest(FaultsServerCase):
    def test_fetch_fail_then_success(self):
        self.deliver_one()
        self.faults.fail("FETCH", times=1)
        m = self.imap()
        m.login(BOB, self.users[BOB])
        m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual((typ, data), ("NO", [b"[UNAVAILABLE] Temporarily unavailable, try again later"]))
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(typ, "OK")
        self.assertIn(b"Subject: fault test", data[0][1])

    def test_login_fail(self):
        self.faults.fail("LOGIN", code=535, times=1)
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(BOB, self.users[BOB])
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))
        self.assertEqual(m.login(BOB, self.users[BOB])[0], "OK")

    def test_delay_select_and_disconnect_fetch(self):
        self.deliver_one()
        self.faults.delay("SELECT", seconds=1, times=1)
        self.faults.disconnect("FETCH")
        m = self.imap()
        m.login(BOB, self.users[BOB])
        start = time.monotonic()
        self.assertEqual(m.select("INBOX")[0], "OK")
        self.assertGreaterEqual(time.monotonic() - start, 0.8)
        with self.assertRaises((imaplib.IMAP4.abort, OSError)):
            m.fetch("1", "(FLAGS)")

    def test_tls_required_until_starttls(self):
        self.faults.tls_required(protocol="imap")
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(BOB, self.users[BOB])
        self.assertIn("PRIVACYREQUIRED", str(cm.exception))
        m = self.imap()
        m.starttls(ssl_context=client_tls())
        self.assertEqual(m.login(BOB, self.users[BOB])[0], "OK")


class RelayRetryTest(FaultsServerCase):
    """This server (A, example.test) relays to a second MailServer (B,
    remote.test) through relayhost; B's faults drive A's retry and bounce."""

    extra_config = dict(FaultsServerCase.extra_config, relay_tls="never", retry_schedule="0.5",
                        trusted_networks="127.0.0.0/8",
                        queue_interval="0.2")
    REMOTE = "dave@remote.test"

    @classmethod
    def setUpClass(cls):
        cls.remote_dir = tempfile.mkdtemp(prefix="mailsrv-remote-")
        cls.remote = MailServer(Config(free_ports(
            data_dir=cls.remote_dir, hostname="mx.remote.test", domains="remote.test",
            log_level="CRITICAL", trusted_networks="none", dns_servers="127.0.0.1:9",
            pop3s_port="off", smtps_port="off")))
        with cheap_scrypt():
            cls.remote.add_user(cls.REMOTE, "dave-secret")
        cls.remote.start()
        cls.extra_config = dict(cls.extra_config, relayhost="127.0.0.1:%d" % cls.remote.ports["smtp"])
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.remote.stop(grace=2)
        shutil.rmtree(cls.remote_dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.remote_faults = self.remote.backend.faults
        self.remote_faults.reset()
        self.addCleanup(self.remote_faults.reset)

    def remote_messages(self):
        import glob
        import os
        base = os.path.join(self.remote_dir, "mail", "remote.test", "dave")
        return glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*"))

    def test_a_451_at_rcpt_is_retried_and_delivered(self):
        before = len(self.remote_messages())
        self.remote_faults.fail("RCPT", code=451, times=1)
        self.assertEqual(self.smtp().sendmail(ALICE, [self.REMOTE], MSG), {})
        wait_for(lambda: len(self.remote_messages()) > before, "the relayed message at the remote MX",
                 timeout=WAIT)
        self.assertEqual(self.remote_faults.rules(), [])       # the 451 was given, then the retry came
        self.assertEqual(self.new_messages(ALICE), [])         # and no bounce

    def test_a_550_at_rcpt_bounces_to_the_sender(self):
        self.remote_faults.fail("RCPT", code=550, text="5.1.1 no such user here")
        self.assertEqual(self.smtp().sendmail(ALICE, [self.REMOTE], MSG), {})
        bounce = wait_for(lambda: self.new_messages(ALICE), "the bounce in alice's Maildir", timeout=WAIT)
        msg = email.message_from_bytes(bounce[0], policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertIn(b"550 5.1.1 no such user here", bounce[0])
        self.assertEqual(self.remote_faults.rules()[0]["hits"], 1)


if __name__ == "__main__":
    unittest.main()
