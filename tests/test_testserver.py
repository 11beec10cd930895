"""The in-process API (issue 11): ``from mailsrv import TestServer``: waits,
filters, raw, reset, add_user, deliver, sent; the README's example as written.
"""

import email.message
import imaplib
import os
import poplib
import re
import smtplib
import threading
import unittest

from mailsrv import TestServer
from protocols.testserver import WaitTimeout
from tests.helpers import ROOT, wait_for


def send(port, sender, rcpts, subject, body="hello", to_field=None):
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = to_field or ", ".join(rcpts)
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.send_message(msg, from_addr=sender, to_addrs=rcpts)


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mail = TestServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.mail.stop()

    def setUp(self):
        self.mail.reset()

    def test_ports_are_free_ones_on_loopback(self):
        self.assertEqual(self.mail.host, "127.0.0.1")
        for name in ("smtp", "submission", "pop3", "imap"):
            self.assertGreater(self.mail.ports[name], 0)
        self.assertEqual(self.mail.smtp_port, self.mail.ports["smtp"])
        for name in ("smtps", "pop3s", "imaps"):      # TLS out of the box: a self-signed certificate
            self.assertGreater(self.mail.ports[name], 0)

    def test_tls_works_out_of_the_box(self):
        """Issue 11: STARTTLS and implicit TLS with the certificate made at start."""
        import imaplib
        import smtplib
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", self.mail.smtps_port, context=ctx, timeout=10) as s:
            s.sendmail("app@a.test", ["tls@example.org"], b"Subject: over smtps\r\n\r\nx\r\n")
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            s.starttls(context=ctx)
            s.sendmail("app@a.test", ["tls@example.org"], b"Subject: over starttls\r\n\r\nx\r\n")
        self.mail.wait_for(count=2, to="tls@example.org", timeout=10)
        self.assertEqual([r.tls for r in self.mail.sent() if "tls@example.org" in r.rcpt_to], [True, True])
        with imaplib.IMAP4_SSL("127.0.0.1", self.mail.imaps_port, ssl_context=ctx, timeout=10) as imap:
            imap.login("tls@example.org", "tls@example.org")
            self.assertEqual(imap.select("INBOX")[1], [b"2"])

    def test_messages_filters(self):
        send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "Welcome Bob")
        send(self.mail.smtp_port, "news@b.test", ["carol@example.org"], "Weekly news")
        send(self.mail.smtp_port, "shop@a.test", ["carol@example.org"], "Your order")
        self.assertEqual([m["Subject"] for m in self.mail.messages()], ["Welcome Bob", "Weekly news", "Your order"])
        self.assertEqual([m["Subject"] for m in self.mail.messages(to="Carol@Example.org")],
                         ["Weekly news", "Your order"])
        self.assertEqual([m["Subject"] for m in self.mail.messages(from_="SHOP@")], ["Welcome Bob", "Your order"])
        self.assertEqual([m["Subject"] for m in self.mail.messages(to="carol@example.org", subject="order")],
                         ["Your order"])
        self.assertEqual(self.mail.messages(subject="nothing like it"), [])
        self.assertEqual(len(self.mail.messages(to="EXAMPLE.org")), 3)      # no "@": part of the mailbox
        with self.assertRaises(ValueError):
            self.mail.messages(to="a/b@example.org")
        self.assertIsInstance(self.mail.messages()[0], email.message.EmailMessage)

    def test_a_copy_per_recipient_and_to_means_the_mailbox(self):
        send(self.mail.smtp_port, "shop@a.test", ["bob@example.org", "carol@example.org"], "Both")
        self.assertEqual(len(self.mail.messages()), 2)
        self.assertEqual(len(self.mail.messages(to="bob@example.org")), 1)

    def test_wait_for_a_message_sent_from_another_thread_after_the_wait_began(self):
        catalog = self.mail.backend.caught

        def sender():
            # the wait has begun once it watches the catalog
            wait_for(lambda: catalog._watchers, "wait_for to watch the catalog", timeout=10)
            send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "Welcome", "please activate")
        t = threading.Thread(target=sender)
        t.start()
        try:
            msg = self.mail.wait_for(to="bob@example.org", subject="Welcome", timeout=10)
        finally:
            t.join(20)
        self.assertIn("activate", msg.get_body(("plain",)).get_content())
        self.assertEqual(catalog._watchers, [])       # the wait stopped watching

    def test_wait_for_count_returns_them_all_oldest_first(self):
        for i in range(3):
            send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "n%d" % i)
        found = self.mail.wait_for(count=3, to="bob@example.org", timeout=5)
        self.assertEqual([m["Subject"] for m in found], ["n0", "n1", "n2"])
        self.assertEqual(self.mail.wait_for(to="bob@example.org")["Subject"], "n2")   # count 1: the newest

    def test_wait_for_timeout_names_what_was_expected_and_what_was_caught(self):
        send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "Welcome")
        with self.assertRaises(WaitTimeout) as cm:
            self.mail.wait_for(to="carol@example.org", subject="Invoice", timeout=0.3)
        text = str(cm.exception)
        self.assertIsInstance(cm.exception, AssertionError)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertIn("to='carol@example.org'", text)
        self.assertIn("subject='Invoice'", text)
        self.assertIn("caught 1", text)
        self.assertIn("bob@example.org", text)
        self.assertIn("'Welcome'", text)
        self.assertEqual(self.mail.backend.caught._watchers, [])
        with self.assertRaises(WaitTimeout):
            self.mail.wait_for(to="carol@example.org", timeout=0)      # gave up before it began
        self.mail.caught()          # a call after it: the give-up has run by then
        self.assertEqual(self.mail.backend.caught._watchers, [])
        with self.assertRaises(ValueError):
            self.mail.wait_for(count=0)

    def test_raw_is_the_stored_message_in_crlf_form(self):
        send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "Raw one")
        raw = self.mail.raw(to="bob@example.org")
        self.assertIsInstance(raw, bytes)
        self.assertIn(b"Subject: Raw one\r\n", raw)
        self.assertIsNone(re.search(rb"(?<!\r)\n", raw))
        with self.assertRaises(AssertionError):
            self.mail.raw(to="nobody@example.org")

    def test_reset_deletes_mail_and_sent_records_and_clears_faults(self):
        send(self.mail.smtp_port, "shop@a.test", ["bob@example.org"], "Gone soon")
        self.assertEqual(len(self.mail.sent()), 1)
        backend = self.mail.backend
        calls = []

        class Faults:
            def reset(self):
                calls.append("reset")
        had = hasattr(backend, "faults")
        saved = getattr(backend, "faults", None)
        backend.faults = Faults()
        try:
            self.assertEqual(self.mail.reset(), 1)
        finally:
            if had:
                backend.faults = saved
            else:
                del backend.faults
        self.assertEqual(calls, ["reset"])
        self.assertEqual(self.mail.messages(), [])
        self.assertEqual(self.mail.sent(), [])
        self.assertEqual(os.path.getsize(os.path.join(self.mail.data_dir, "caught-envelopes.jsonl")), 0)

    def test_deliver_is_readable_over_pop3_and_imap_at_once(self):
        self.mail.deliver("From: boss@corp.test\nTo: Dana <dana@example.org>\nSubject: Read me\n\nbody text\n")
        self.mail.deliver(b"Subject: second\r\n\r\nx\r\n", to=["dana@example.org", "eve@example.org"])
        p = poplib.POP3("127.0.0.1", self.mail.pop3_port, timeout=10)
        p.user("dana@example.org")
        p.pass_("dana@example.org")
        self.assertEqual(p.stat()[0], 2)
        self.assertIn(b"Subject: Read me", b"\r\n".join(p.retr(1)[1]))
        p.quit()
        m = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=10)
        m.login("eve@example.org", "eve@example.org")
        self.assertEqual(m.select("INBOX")[1], [b"1"])
        m.logout()
        caught = self.mail.caught(to="dana@example.org")
        self.assertEqual([(c.listener, c.mail_from) for c in caught], [("deliver", ""), ("deliver", "")])
        self.assertEqual(self.mail.sent(), [])       # not submitted by a program
        with self.assertRaises(ValueError):
            self.mail.deliver(b"Subject: nobody\r\n\r\nx\r\n")

    def test_add_user_with_its_own_password(self):
        self.mail.add_user("frank@example.org", "franks-secret")
        m = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=10)
        m.login("frank@example.org", "franks-secret")
        m.logout()

    def test_sent_lists_the_envelope_with_the_auth_identity(self):
        with smtplib.SMTP("127.0.0.1", self.mail.submission_port, timeout=10) as s:
            s.ehlo("app.host.test")
            s.login("service@shop.test", "service@shop.test")
            s.sendmail("noreply@shop.test", ["bob@example.org", "carol@example.org"],
                       b"Subject: Receipt\r\n\r\nthanks\r\n")
        sent = self.mail.sent()
        self.assertEqual(len(sent), 1)
        s = sent[0]
        self.assertEqual((s.mail_from, s.rcpt_to, s.auth_user, s.tls, s.helo, s.listener, s.subject),
                         ("noreply@shop.test", ("bob@example.org", "carol@example.org"), "service@shop.test",
                          False, "app.host.test", "submission", "Receipt"))
        self.assertGreater(s.size, 0)

    def test_imap_append_is_caught_and_wakes_a_wait(self):
        m = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=10)
        m.login("gina@example.org", "gina@example.org")
        m.append("Sent", None, None, b"From: gina@example.org\r\nSubject: appended\r\n\r\nx\r\n")
        m.logout()
        msg = self.mail.wait_for(subject="appended", timeout=5)
        self.assertEqual(msg["Subject"], "appended")
        self.assertEqual(self.mail.caught(subject="appended")[0].mailbox, "gina@example.org")


class Faults(unittest.TestCase):
    """TestServer.fail/delay/... are backend.faults' (protocols/faults.py, merged apart)."""

    def test_fail_rcpt_twice_then_it_passes_and_reset_clears(self):
        with TestServer() as mail:
            if getattr(mail.backend, "faults", None) is None:
                self.skipTest("no protocols/faults.py in this tree")
            mail.fail("RCPT", code=451, times=2)
            with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=10) as s:
                s.ehlo()
                s.mail("app@shop.test")
                self.assertEqual([s.rcpt("bob@example.org")[0] for _ in range(3)], [451, 451, 250])
            mail.greylist()
            self.assertEqual(len(mail.faults.rules()), 1)
            mail.reset()
            self.assertEqual(mail.faults.rules(), [])


class ReadmeExample(unittest.TestCase):
    def test_the_readme_example_runs_as_written(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        section = readme[readme.index("## Test server"):]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        self.assertIn("from mailsrv import TestServer", code)

        def send_with_my_app(host, port):
            msg = email.message.EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "app@shop.test", "bob@example.org", "Welcome"
            msg.set_content("Please activate your account.")
            with smtplib.SMTP(host, port, timeout=10) as s:
                s.send_message(msg)
        exec(compile(code, "README.md", "exec"), {"send_with_my_app": send_with_my_app})


if __name__ == "__main__":
    unittest.main()
