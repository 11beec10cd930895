"""Interop: Debian's Postfix (a real, independent MTA) exchanging mail with us on loopback.

A throwaway Postfix instance (tests/postfix_instance.py, shared with the
benchmark) lives in a temporary directory: smtpd on 127.0.0.1:<free port>,
the virtual delivery agent writing Maildirs for the domain ``pf.test``, and
``transport_maps`` sending mail for our domain ``example.test`` to our smtp
port as ``smtp:[127.0.0.1]:<port>``.

Cases:
* our relay client (protocols/outbound/relay.py + smtp_client.py, relayhost =
  Postfix) delivers a submitted message into Postfix's Maildir, with STARTTLS
  (RFC 3207) because the instance offers it with the test certificate;
* Postfix's smtp client delivers to our server (STARTTLS too): the message
  lands in our Maildir, our Received: prepended above Postfix's (RFC 5321
  §4.4);
* SMTPUTF8 (RFC 6531) both ways: a UTF-8 envelope sender from Postfix to
  us, a UTF-8 recipient from our relay to Postfix;
* a ~2 MB message with dot-leading lines both ways, byte-exact (Postfix
  stores LF line ends; we store CRLF) — SMTP transparency, RFC 5321 §4.5.2;
* a recipient Postfix refuses at RCPT (550 5.1.1) turns into a DSN
  (RFC 3464) in the sender's mailbox on our side.

Waits are bounded polls of the Maildir.  Skipped, with the reason printed by
`make test`, when Postfix is not installed (Debian: ``postfix`` with
debconf ``postfix/main_mailer_type`` = "No configuration"), when
MAILSRV_SKIP_INTEROP is set, or when not running as root (Postfix's master
must start as root).
"""

import os
import smtplib
import unittest

from tests.helpers import ServerTestCase
# The instance itself lives in tests/postfix_instance.py (shared with the benchmark);
# its names stay importable from here (tests/test_interop_mtasts.py uses them).
from tests.postfix_instance import MAIN_CF, WAIT, PostfixInstance, free_port, skip_reason, wait_for  # noqa: F401


def _skip_reason():
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    return skip_reason()


SKIP = _skip_reason()


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@unittest.skipIf(SKIP, SKIP or "")
class PostfixInterop(ServerTestCase):
    """Our server (TLS on, relayhost = the Postfix instance) and one Postfix."""

    @classmethod
    def setUpClass(cls):
        cls.postfix = None
        # Our smtp port must be known for Postfix's transport map, and Postfix's
        # port for our relayhost: pick Postfix's port first, start us, then Postfix.
        port = free_port()
        cls.extra_config = {"relayhost": "127.0.0.1:%d" % port, "relay_tls": "may"}
        super().setUpClass()
        try:
            cls.postfix = PostfixInstance(port, cls.ports["smtp"])
            cls.postfix.start()
        except BaseException:
            if cls.postfix is not None:
                cls.postfix.stop()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.postfix is not None:
                cls.postfix.stop()
        finally:
            super().tearDownClass()

    def submit(self, rcpt: str, subject: str, user="alice@example.test", password="alice-secret") -> bytes:
        body = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\n"
                "Hello Postfix.\r\n.a line with a leading dot\r\n" % (user, rcpt, subject, subject)).encode()
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.starttls()
            s.login(user, password)
            s.sendmail(user, [rcpt], body)
        return body

    def test_our_relay_delivers_into_postfix_maildir(self):
        body = self.submit("user@pf.test", "to-postfix")
        files = wait_for(lambda: [p for p in self.postfix.maildir_files("user")
                                  if b"Subject: to-postfix" in read(p)],
                         "the message in Postfix's Maildir", self.postfix.log)
        stored = read(files[0])
        # Postfix's virtual agent stores LF line ends; it adds its own trace
        # headers (Return-Path, Delivered-To, Received) above ours.
        self.assertIn(b"Return-Path: <alice@example.test>", stored)
        self.assertIn(b"by mx.pf.test (Postfix)", stored)
        self.assertIn(b"from mx.example.test", stored)          # our EHLO name, as Postfix saw it
        self.assertTrue(stored.endswith(body.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")))
        # Our client used STARTTLS (RFC 3207), as Postfix's smtpd logged it.
        self.assertIn("TLS connection established from localhost[127.0.0.1]", self.postfix.log())

    def test_postfix_delivers_to_our_maildir(self):
        self.clear_mailbox("bob@example.test")
        body = (b"From: sender@pf.test\r\nTo: bob@example.test\r\nSubject: from-postfix\r\n"
                b"Message-ID: <from-postfix@pf.test>\r\n\r\nHello mailsrv.\r\n.leading dot\r\n")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("sender@pf.test", ["bob@example.test"], body)
        msgs = wait_for(lambda: self.new_messages("bob@example.test"),
                        "the message in our Maildir", self.postfix.log)
        stored = msgs[0]
        self.assertTrue(stored.startswith(b"Return-Path: <sender@pf.test>\r\n"))
        self.assertIn(b"by mx.pf.test (Postfix)", stored)        # Postfix's Received: survives
        self.assertIn(b"Subject: from-postfix", stored)
        self.assertTrue(stored.endswith(b"\r\n\r\nHello mailsrv.\r\n.leading dot\r\n"))
        # Our Received: comes first and says Postfix used STARTTLS (RFC 3848 "ESMTPS").
        ours = stored.split(b"\r\nReceived: ", 2)[1]
        self.assertIn(b"from mx.pf.test", ours)
        self.assertIn(b"by mx.example.test with ESMTPS", ours)

    def test_smtputf8_from_postfix_to_us(self):
        """RFC 6531: a UTF-8 envelope sender relayed by Postfix with SMTPUTF8."""
        self.clear_mailbox("bob@example.test")
        body = ("From: Jörg <jörg@pf.test>\r\nTo: bob@example.test\r\nSubject: grüße\r\n"
                "Message-ID: <utf8-in@pf.test>\r\n\r\nÄpfel und Bücher.\r\n").encode("utf-8")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("jörg@pf.test", ["bob@example.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        msgs = wait_for(lambda: self.new_messages("bob@example.test"),
                        "the UTF-8 message in our Maildir", self.postfix.log)
        stored = msgs[0]
        self.assertTrue(stored.startswith("Return-Path: <jörg@pf.test>\r\n".encode("utf-8")), stored[:80])
        self.assertTrue(stored.endswith(body.split(b"\r\n\r\n", 1)[1]))
        self.assertIn("Subject: grüße".encode("utf-8"), stored)

    def test_smtputf8_from_us_to_postfix(self):
        """RFC 6531: our relay passes SMTPUTF8 on to Postfix for a UTF-8 recipient."""
        body = ("From: alice@example.test\r\nTo: jörg@pf.test\r\nSubject: grüße\r\n"
                "Message-ID: <utf8-out@example.test>\r\n\r\nÄpfel.\r\n").encode("utf-8")
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.starttls()
            s.login("alice@example.test", "alice-secret")
            s.sendmail("alice@example.test", ["jörg@pf.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        files = wait_for(lambda: self.postfix.maildir_files("joerg"),
                         "the UTF-8 message in Postfix's Maildir", self.postfix.log)
        stored = read(files[0])
        self.assertIn("Delivered-To: jörg@pf.test".encode("utf-8"), stored)
        self.assertTrue(stored.endswith("Äpfel.\n".encode("utf-8")))

    def big_body(self, tag: str) -> bytes:
        """~2 MB of 76-character lines, every 7th starting with "." (RFC 5321 §4.5.2)."""
        lines = [(("." if i % 7 == 0 else "") + ("%s %07d " % (tag, i)) * 6)[:76] for i in range(27000)]
        return ("\r\n".join(lines) + "\r\n").encode()

    def test_big_message_both_ways_byte_exact(self):
        self.clear_mailbox("bob@example.test")
        body_in = self.big_body("in")
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=WAIT) as s:
            s.sendmail("sender@pf.test", ["bob@example.test"],
                       b"From: sender@pf.test\r\nSubject: big-in\r\n\r\n" + body_in)
        msgs = wait_for(lambda: self.new_messages("bob@example.test"), "the big message in our Maildir",
                        self.postfix.log)
        self.assertTrue(msgs[0].endswith(b"\r\n\r\n" + body_in))

        body_out = self.big_body("out")
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.login("alice@example.test", "alice-secret")
            s.sendmail("alice@example.test", ["user@pf.test"],
                       b"From: alice@example.test\r\nSubject: big-out\r\n\r\n" + body_out)
        files = wait_for(lambda: [p for p in self.postfix.maildir_files("user") if b"Subject: big-out" in read(p)],
                         "the big message in Postfix's Maildir", self.postfix.log)
        self.assertTrue(read(files[0]).endswith(b"\n\n" + body_out.replace(b"\r\n", b"\n")))

    def test_postfix_refusal_becomes_a_bounce_in_our_maildir(self):
        self.clear_mailbox("alice@example.test")
        self.submit("nobody-here@pf.test", "to-unknown")
        msgs = wait_for(lambda: [m for m in self.new_messages("alice@example.test")
                                 if b"multipart/report" in m],
                        "a DSN in alice's Maildir", self.postfix.log)
        dsn = msgs[0]
        self.assertIn(b"report-type=delivery-status", dsn)       # RFC 3464 §2
        self.assertIn(b"nobody-here@pf.test", dsn)
        self.assertIn(b"5.1.1", dsn)


if __name__ == "__main__":
    unittest.main()
