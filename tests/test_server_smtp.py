"""SMTP over real loopback sockets with the stdlib smtplib, against the whole server.

Every delivered message is read back from the Maildir and compared byte for
byte with what the client sent (after the trace headers the server adds).
"""

import base64
import os
import smtplib
import socket
import threading
import unittest

from protocols.sasl import ScramClient
from tests.helpers import client_tls, ServerTestCase, strip_trace

MSG = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
       b"Message-ID: <t1@example.test>\r\n\r\nHello Bob.\r\n.leading dot\r\nBye.\r\n")



class SmtpLoopbackTest(ServerTestCase):
    def setUp(self):
        for u in self.users:
            self.clear_mailbox(u)

    def smtp(self, port_name="smtp"):
        s = smtplib.SMTP("127.0.0.1", self.ports[port_name], timeout=10)
        self.addCleanup(s.close)
        return s

    def test_plain_delivery_is_byte_identical(self):
        s = self.smtp()
        refused = s.sendmail("carol@elsewhere.test", ["bob@example.test"], MSG)
        self.assertEqual(refused, {})
        s.quit()
        [stored] = self.new_messages("bob@example.test")
        self.assertTrue(stored.startswith(b"Return-Path: <carol@elsewhere.test>\r\nDelivered-To: bob@example.test\r\n"))
        self.assertEqual(strip_trace(stored), MSG)

    def test_delivered_to_keeps_the_plus_tag(self):
        # Postfix local(8) and Dovecot keep the extension, so users can filter on it.
        s = self.smtp()
        self.assertEqual(s.sendmail("carol@elsewhere.test", ["Bob+Lists@example.test"], MSG), {})
        s.quit()
        [stored] = self.new_messages("bob@example.test")
        self.assertTrue(stored.startswith(b"Return-Path: <carol@elsewhere.test>\r\n"
                                          b"Delivered-To: bob+lists@example.test\r\n"), stored[:120])
        self.assertEqual(strip_trace(stored), MSG)

    def test_ehlo_advertises_the_extensions(self):
        s = self.smtp()
        code, text = s.ehlo("client.test")
        self.assertEqual(code, 250)
        for ext in ("size", "pipelining", "8bitmime", "enhancedstatuscodes", "smtputf8", "chunking", "starttls", "auth"):
            self.assertTrue(s.has_extn(ext), ext)
        self.assertEqual(int(s.esmtp_features["size"]), 26214400)

    def test_starttls_then_auth_plain_and_login(self):
        for mech in ("PLAIN", "LOGIN"):
            s = self.smtp("submission")
            s.starttls(context=client_tls())
            s.ehlo("client.test")
            s.user, s.password = "alice@example.test", "alice-secret"
            code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()))
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail("alice@example.test", ["bob@example.test"], MSG), {})
            s.quit()
        self.assertEqual(len(self.new_messages("bob@example.test")), 2)

    def test_auth_scram_sha_256(self):
        # Driven with docmd: smtplib's auth() cannot send the final empty
        # response on Python 3.9 (its base64 helper returns bytes for b"").
        s = self.smtp("submission")
        s.ehlo("client.test")
        client = ScramClient("alice@example.test", "alice-secret")
        b64 = lambda data: base64.b64encode(data).decode("ascii")
        code, resp = s.docmd("AUTH", "SCRAM-SHA-256 " + b64(client.first()))
        self.assertEqual(code, 334)
        code, resp = s.docmd(b64(client.final(base64.b64decode(resp))))
        self.assertEqual(code, 334)
        self.assertTrue(client.verify(base64.b64decode(resp)))
        code, resp = s.docmd("")
        self.assertEqual(code, 235)
        self.assertEqual(s.sendmail("alice@example.test", ["bob@example.test"], MSG), {})

    def test_wrong_password_is_535(self):
        s = self.smtp("submission")
        s.ehlo("client.test")
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("alice@example.test", "wrong")
        self.assertEqual(cm.exception.smtp_code, 535)

    def test_submission_requires_auth(self):
        s = self.smtp("submission")
        s.ehlo("client.test")
        code, _ = s.mail("alice@example.test")
        self.assertEqual(code, 530)

    def test_implicit_tls_submission(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.ports["smtps"], timeout=10, context=client_tls())
        self.addCleanup(s.close)
        s.login("alice@example.test", "alice-secret")
        self.assertEqual(s.sendmail("alice@example.test", ["bob@example.test"], MSG), {})
        s.quit()
        [stored] = self.new_messages("bob@example.test")
        self.assertIn(b"ESMTPSA", stored.split(b"\r\n\r\n")[0])

    def test_submission_adds_missing_date_and_message_id(self):
        bare = b"From: alice@example.test\r\nSubject: no date\r\n\r\nbody\r\n"
        s = self.smtp("submission")
        s.starttls(context=client_tls())
        s.login("alice@example.test", "alice-secret")
        s.sendmail("alice@example.test", ["bob@example.test"], bare)
        s.sendmail("alice@example.test", ["bob@example.test"], MSG)
        s.quit()
        got = {b"no date" in m: m for m in self.new_messages("bob@example.test")}
        fixed, untouched = got[True], got[False]
        head = strip_trace(fixed).split(b"\r\n\r\n")[0]
        self.assertRegex(head, rb"\r\nDate: [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} ")   # RFC 6409 §8.3
        self.assertRegex(head, rb"\r\nMessage-ID: <[^>]+@mx\.example\.test>")           # RFC 6409 §8.2
        self.assertTrue(strip_trace(fixed).endswith(b"\r\n\r\nbody\r\n"))
        self.assertEqual(strip_trace(untouched).count(b"Message-ID:"), 1)   # present: left alone

    def test_write_error_is_452_and_nothing_in_new(self):
        new = os.path.join(self.maildir("bob@example.test"), "new")
        os.rename(new, new + ".away")
        with open(new, "wb"):          # new/ is now a plain file: every link into it fails
            pass
        try:
            s = self.smtp()
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@elsewhere.test", ["bob@example.test"], MSG)
            self.assertEqual((cm.exception.smtp_code, cm.exception.smtp_error[:5]), (452, b"4.3.1"))
            self.assertEqual(os.listdir(os.path.join(self.maildir("bob@example.test"), "tmp")), [])
        finally:
            os.unlink(new)
            os.rename(new + ".away", new)
        self.assertEqual(self.new_messages("bob@example.test"), [])
        self.assertEqual(s.sendmail("a@elsewhere.test", ["bob@example.test"], MSG), {})   # and it recovers

    def test_size_refused_before_data(self):
        s = self.smtp()
        s.ehlo("client.test")
        code, _ = s.mail("a@elsewhere.test", ["SIZE=%d" % (26214400 + 1)])
        self.assertEqual(code, 552)

    def test_eight_bit_body(self):
        body = "From: a@elsewhere.test\r\nSubject: 8bit\r\n\r\nGrüße, çà et là\r\n".encode("utf-8")
        s = self.smtp()
        self.assertEqual(s.sendmail("a@elsewhere.test", ["bob@example.test"], body, mail_options=["BODY=8BITMIME"]), {})
        [stored] = self.new_messages("bob@example.test")
        self.assertEqual(strip_trace(stored), body)

    def test_smtputf8_address(self):
        self.server.add_user("jörg@example.test", "pw")
        body = "From: jörg@example.test\r\nSubject: utf8\r\n\r\nHallo\r\n".encode("utf-8")
        s = self.smtp()
        s.ehlo("client.test")
        self.assertEqual(s.sendmail("zoë@elsewhere.test", ["jörg@example.test"], body,
                                    mail_options=["SMTPUTF8", "BODY=8BITMIME"]), {})
        [stored] = self.new_messages("jörg@example.test")
        self.assertEqual(strip_trace(stored), body)
        self.assertTrue(stored.startswith("Return-Path: <zoë@elsewhere.test>".encode()))

    def test_unknown_user_and_relay_refused_at_rcpt(self):
        s = self.smtp()
        s.ehlo("client.test")
        s.mail("a@elsewhere.test")
        code, text = s.rcpt("nobody@example.test")
        self.assertEqual((code, text[:5]), (550, b"5.1.1"))
        code, text = s.rcpt("someone@elsewhere.test")
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1", text)

    def test_pipelining_and_bdat_over_a_raw_socket(self):
        with socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=10) as c:
            f = c.makefile("rb")
            self.assertTrue(f.readline().startswith(b"220"))
            c.sendall(b"EHLO raw.test\r\n")
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            body = b"Subject: bdat\r\n\r\nbinary-ish\r\n"
            c.sendall(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
                      b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n")
            replies = [f.readline() for _ in range(5)]
        self.assertEqual([r[:3] for r in replies], [b"250", b"250", b"250", b"250", b"221"])
        [a] = self.new_messages("alice@example.test")
        [b] = self.new_messages("bob@example.test")
        self.assertEqual(a, b)   # one file, hard-linked
        self.assertNotIn(b"Delivered-To", a.split(b"\r\n\r\n")[0])
        self.assertTrue(a.endswith(body))

    def test_smuggling_probe_never_ends_data(self):
        for probe in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"):
            with socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=10) as c:
                f = c.makefile("rb")
                f.readline()
                c.sendall(b"HELO raw.test\r\n")
                f.readline()
                c.sendall(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
                self.assertEqual([f.readline()[:3] for _ in range(3)], [b"250", b"250", b"354"])
                c.sendall(b"Subject: x\r\n\r\nbody" + probe + b"MAIL FROM:<evil@elsewhere.test>\r\n"
                          b"RCPT TO:<alice@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
                reply = f.readline()
                self.assertTrue(reply[:1] in (b"5", b"2"), reply)
                c.sendall(b"QUIT\r\n")
            self.assertEqual(self.new_messages("alice@example.test"), [], probe)
            for m in self.new_messages("bob@example.test"):
                self.assertIn(b"smuggled", m)   # if accepted at all, it is one message
            self.clear_mailbox("bob@example.test")

    def test_two_hundred_concurrent_senders(self):
        n = 200
        errors = []

        def send(i):
            try:
                with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
                    s.sendmail("a@elsewhere.test", ["alice@example.test"],
                               b"Subject: %d\r\n\r\nmessage %d\r\n" % (i, i))
            except Exception as e:  # collected and asserted below
                errors.append(e)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        got = sorted(strip_trace(m) for m in self.new_messages("alice@example.test"))
        self.assertEqual(got, sorted(b"Subject: %d\r\n\r\nmessage %d\r\n" % (i, i) for i in range(n)))




class AuthLockoutTest(ServerTestCase):
    """auth_max_failures failures lock the client address out, even for the right password."""

    extra_config = {"auth_max_failures": "2", "auth_lockout_seconds": "300"}

    def login(self, password):
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=10) as s:
            s.ehlo("client.test")
            try:
                return s.login("alice@example.test", password)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def test_lockout_after_repeated_failures(self):
        self.assertEqual(self.login("alice-secret"), 235)
        with self.assertLogs("mailsrv.auth", "INFO") as logs:
            self.assertEqual(self.login("wrong-1"), 535)     # smtplib tries PLAIN, then LOGIN: 2 failures
            self.assertEqual(self.login("wrong-2"), 454)     # locked out: a temporary refusal (issue 8)
        self.assertIn("lockout peer=127.0.0.1", "".join(logs.output))
        self.assertNotIn("wrong-", "".join(logs.output))
        self.assertEqual(self.login("alice-secret"), 454)    # locked out now, and told so


if __name__ == "__main__":
    unittest.main()
