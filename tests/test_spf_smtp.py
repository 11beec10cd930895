"""spf_check = header: the SMTP session asks the backend for the SPF result
of MAIL FROM (RFC 7208 §2.4) before message data starts and writes a
Received-SPF field above its Received field (§9.1).  Session tests with the
fake backend of test_smtp_session, and one over loopback with the real
server, its resolver and tests/dnsfake.py."""

import smtplib
import unittest

from protocols.dns import codec as dns
from protocols.spf import SpfResult
from tests.dnsfake import FakeDnsServer
from tests.helpers import ServerTestCase, wait_for
from tests.test_smtp_session import FakeBackend, codes, new_session, send


class SpfBackend(FakeBackend):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.spf_asked = []
        self.helo_asked = []

    def check_spf_helo(self, ctx, helo, done):
        self.helo_asked.append(helo)      # answered at once (the MAIL FROM check shows the waiting)
        done(SpfResult("pass", helo, mechanism="a", identity="helo", sender="postmaster@" + helo,
                       ip=ctx.peer_ip, helo=helo))

    def check_spf(self, ctx, helo, mail_from, done):
        self.spf_asked.append((ctx.peer_ip, helo, mail_from))
        self._call(done, SpfResult("softfail", "remote.example", mechanism="~all", identity="mailfrom",
                                   sender=mail_from, ip=ctx.peer_ip, helo=helo))


def session(backend, **config):
    s, b = new_session(backend=backend, **config)
    send(s, "EHLO client.example")
    return s, b


class SessionTest(unittest.TestCase):
    def test_received_spf_above_received(self):
        s, b = session(SpfBackend(), spf_check="header")
        out = send(s, "MAIL FROM:<sender@remote.example>", "RCPT TO:<alice@example.org>", "DATA")
        self.assertEqual(codes(out), [250, 250, 354])
        self.assertEqual(codes(send(s, "Subject: x", "", "hi", ".")), [250])
        data = b.deliveries[0][1]
        self.assertTrue(data.startswith(b"Received-SPF: softfail (mx.example.org: domain of"), data[:200])
        self.assertLess(data.index(b"Received-SPF:"), data.index(b"\r\nReceived: "))
        self.assertIn(b"client-ip=192.0.2.10;", data.replace(b"\r\n\t", b" "))
        self.assertEqual(b.spf_asked, [("192.0.2.10", "client.example", "sender@remote.example")])

    def test_deferred_result_holds_data_until_it_comes(self):
        s, b = session(SpfBackend(sync=False), spf_check="header")
        out = send(s, "MAIL FROM:<>", "RCPT TO:<alice@example.org>", "DATA", "Subject: x", "", "hi", ".")
        self.assertEqual(codes(out), [250, 250])               # DATA waits for the SPF answer
        b.release()
        out = send(s)
        self.assertEqual(codes(out), [354])
        b.release()                                            # the sink's finish
        self.assertEqual(codes(send(s)), [250])
        self.assertTrue(b.deliveries[0][1].startswith(b"Received-SPF: softfail"))

    def test_bdat(self):
        s, b = session(SpfBackend(sync=False), spf_check="header")
        body = b"Subject: x\r\n\r\nhi\r\n"
        s.receive_data(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                       b"BDAT %d LAST\r\n" % len(body) + body)
        b.release()
        b.release()
        send(s)
        self.assertTrue(b.deliveries[0][1].startswith(b"Received-SPF: softfail"))
        self.assertTrue(b.deliveries[0][1].endswith(body))

    def test_off_and_authenticated_sessions_are_not_checked(self):
        s, b = session(SpfBackend())
        send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        self.assertEqual(b.spf_asked, [])
        self.assertNotIn(b"Received-SPF", b.deliveries[0][1])
        s, b = session(SpfBackend(), spf_check="header", allow_plaintext_auth=True)
        self.assertEqual(codes(send(s, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXNlY3JldA==")), [235])
        send(s, "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.org>", "DATA", "x", ".")
        self.assertEqual(b.spf_asked, [])

    def test_trusted_clients_are_not_checked(self):
        backend = SpfBackend()
        backend.may_relay = lambda ctx, auth_user: ctx.peer_ip == "192.0.2.10"   # a trusted network
        s, b = session(backend, spf_check="header")
        send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        self.assertEqual(b.spf_asked, [])
        self.assertNotIn(b"Received-SPF", b.deliveries[0][1])

    def test_each_transaction_is_checked_again(self):
        s, b = session(SpfBackend(), spf_check="header")
        for sender in ("a@one.example", "b@two.example"):
            send(s, "MAIL FROM:<%s>" % sender, "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        self.assertEqual([m for _, _, m in b.spf_asked], ["a@one.example", "b@two.example"])


class HeloIdentityTest(unittest.TestCase):
    """RFC 7208 §2.3: the HELO identity is checked too, once per session and name."""

    def test_helo_checked_once_per_session_and_recorded(self):
        s, b = session(SpfBackend(), spf_check="header")
        for sender in ("a@one.example", "b@two.example"):
            self.assertEqual(codes(send(s, "MAIL FROM:<%s>" % sender, "RCPT TO:<alice@example.org>",
                                        "DATA", "x", ".")), [250, 250, 354, 250])
        self.assertEqual(b.helo_asked, ["client.example"])
        data = b.deliveries[1][1]
        first, second = data.split(b"\r\nReceived-SPF: ")[:2]
        self.assertTrue(first.startswith(b"Received-SPF: softfail"), first)
        self.assertTrue(second.startswith(b"pass"), second)
        self.assertIn(b"identity=helo;", second.replace(b"\r\n\t", b" "))
        self.assertLess(data.index(b"identity=helo"), data.index(b"\r\nReceived: "))

    def test_new_helo_name_is_checked_again(self):
        s, b = session(SpfBackend(), spf_check="header")
        send(s, "MAIL FROM:<a@one.example>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        send(s, "EHLO other.example", "MAIL FROM:<a@one.example>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        self.assertEqual(b.helo_asked, ["client.example", "other.example"])

    def test_null_sender_and_address_literal_are_not_checked_twice(self):
        s, b = session(SpfBackend(), spf_check="header")
        send(s, "MAIL FROM:<>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        send(s, "EHLO [192.0.2.10]", "MAIL FROM:<a@one.example>", "RCPT TO:<alice@example.org>", "DATA", "x", ".")
        self.assertEqual(b.helo_asked, [])
        self.assertEqual(b.deliveries[0][1].count(b"Received-SPF:"), 1)


class ServerTest(ServerTestCase):
    """The real server: spf_check = header, DNS from tests/dnsfake.py."""

    tls = False

    @classmethod
    def setUpClass(cls):
        cls.dns = FakeDnsServer().start()
        cls.dns.add("spf.example", dns.TYPE_TXT, (b"v=spf1 ip4:127.0.0.0/8 -all",))
        cls.dns.add("other.example", dns.TYPE_TXT, (b"v=spf1 -all",))
        cls.dns.add("client.example", dns.TYPE_TXT, (b"v=spf1 ip4:127.0.0.0/8 -all",))
        cls.extra_config = {"spf_check": "header", "dns_servers": "%s:%d" % cls.dns.address}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.dns.stop()

    def test_delivered_mail_carries_received_spf(self):
        self.clear_mailbox("alice@example.test")
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as c:
            c.ehlo("client.example")
            c.sendmail("joe@spf.example", ["alice@example.test"], b"Subject: one\r\n\r\nhi\r\n")
            c.sendmail("joe@other.example", ["alice@example.test"], b"Subject: two\r\n\r\nhi\r\n")
        wait_for(lambda: len(self.new_messages("alice@example.test")) == 2, "two deliveries")
        first, second = self.new_messages("alice@example.test")
        # delivery puts Return-Path and Delivered-To on top (RFC 5321 §4.4); then ours
        self.assertIn(b"\r\nReceived-SPF: pass (mx.example.test: domain of joe@spf.example", first)
        self.assertIn(b"\r\nReceived-SPF: fail ", second)
        self.assertLess(second.index(b"Received-SPF:"), second.index(b"\r\nReceived: "))
        self.assertIn(b"helo=client.example;", second.replace(b"\r\n\t", b" "))
        # RFC 7208 §2.3: the HELO identity too, in its own Received-SPF and in Authentication-Results
        self.assertIn(b"\r\nReceived-SPF: pass (mx.example.test: domain of client.example designates", second)
        self.assertIn(b"spf=pass smtp.helo=client.example", second)
        self.assertIn(b"spf=fail smtp.mailfrom=joe@other.example", second)


if __name__ == "__main__":
    unittest.main()
