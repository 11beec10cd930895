"""No open relay: the classic address tricks against the real server on loopback.

RFC 5321 §3.6.1 (source routes and relaying) and §3.6.2: a server that is not
told otherwise must not forward mail for strangers; RFC 5321 §7.1 and
RFC 2505 §2 list the tricks spammers use to slip a remote address past a
relay check: the %-hack, source routes, quoted local parts hiding an "@",
"!" (UUCP) paths, trailing dots, address literals, case and IDN variants.

Every test speaks to the in-process server of ``tests.helpers`` with stdlib
``smtplib`` on 127.0.0.1.  The server's ``relayhost`` points at ``Sink``, a
tiny SMTP server thread on 127.0.0.1 that records every transaction: all
mail that would leave the server lands there.  For each trick the RCPT must be
refused with a 5xx or, where it is accepted, the message must go to a local
Maildir only: after a forced queue run (``relay.flush`` on the loop thread,
like ``postqueue -f``) the relay is idle, the queue is empty and the sink has
seen no connection at all.

The positive side is tested too, so the negative results mean something:
authenticated submission and a trusted network DO relay (the message reaches
the sink) while a client outside that network (another 127/8 source address)
does not, a catch-all alias keeps accepted tricks local, an authenticated user cannot use another user's address as the
sender when ``sender_login_match`` is on (RFC 6409 §6.1, 553 5.7.1), the
submission and smtps ports refuse MAIL before AUTH (RFC 4954 §6, 530 5.7.0),
and STARTTLS after AUTH takes the relay right away again (RFC 3207 §4.2).
"""

import glob
import os
import queue as stdqueue
import smtplib
import ssl
import threading
import time
import unittest

from tests.helpers import ServerTestCase
from tests.smtpsink import SmtpSink

WAIT = 10.0          # bound on every wait in this file (seconds)
MSG = b"From: x@elsewhere.test\r\nSubject: relay probe\r\n\r\nprobe body\r\n"


class _RelayCase(ServerTestCase):
    """A ServerTestCase whose outbound mail goes to a Sink (relayhost)."""

    tls = False
    relay_extra: dict = {}

    @classmethod
    def setUpClass(cls):
        cls.sink = SmtpSink(ehlo=b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
        cls.extra_config = dict(relayhost="127.0.0.1:%d" % cls.sink.port, relay_tls="never",
                                **cls.relay_extra)
        try:
            super().setUpClass()
        except BaseException:
            cls.sink.close()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.sink.close()

    def setUp(self):
        self.sink.reset()

    # -- helpers -------------------------------------------------------------
    def smtp(self, listener="smtp", source="127.0.0.1"):
        s = smtplib.SMTP("127.0.0.1", self.ports[listener], timeout=WAIT, source_address=(source, 0))
        self.addCleanup(_quit, s)
        code, _ = s.ehlo("client.elsewhere.test")
        self.assertEqual(code, 250)
        return s

    def on_loop(self, fn):
        """Run fn on the server's loop thread and return its result (bounded)."""
        out = stdqueue.Queue()

        def call():
            try:
                out.put((True, fn()))
            except BaseException as exc:     # handed to the test thread
                out.put((False, exc))
        self.server.loop.call_soon_threadsafe(call)
        ok, value = out.get(timeout=WAIT)
        if not ok:
            raise value
        return value

    def flush_and_wait_idle(self):
        """Force a queue run, then wait (bounded) until the relay has nothing
        in flight and the queue is empty.  Returns the queue ids left over."""
        relay = self.server.backend.outbound.relay
        self.assertIsNotNone(relay, "outbound delivery must be enabled for this test")
        self.on_loop(relay.flush)
        deadline = time.monotonic() + WAIT
        while True:
            busy, left = self.on_loop(lambda: (relay.in_flight, [e.id for e in self.server.backend.outbound.queue.list()]))
            if (not busy and not left) or time.monotonic() > deadline:
                return left
            threading.Event().wait(0.02)      # bounded poll of loop-thread state, not a sync sleep

    def assert_nothing_left(self):
        left = self.flush_and_wait_idle()
        self.assertEqual(left, [], "a message is still queued for outbound delivery")
        with self.sink.lock:
            self.assertEqual((self.sink.connections, self.sink.messages), (0, []),
                             "something reached the outbound peer")

    def local_files(self):
        """Every message file in every local Maildir (new/ and cur/)."""
        return set(glob.glob(os.path.join(self.tmp, "mail", "*", "*", "new", "*"))
                   + glob.glob(os.path.join(self.tmp, "mail", "*", "*", "cur", "*")))

    def wait_sink(self):
        self.assertTrue(self.sink.arrived.wait(WAIT), "nothing reached the outbound peer")
        with self.sink.lock:
            return list(self.sink.messages)


def _quit(s):
    try:
        s.quit()
    except (smtplib.SMTPException, OSError):
        s.close()


class OpenRelayTricks(_RelayCase):
    """Unauthenticated, untrusted client on the smtp port (trusted_networks=none)."""

    # (RCPT argument as sent, whether SMTPUTF8 is used)
    REFUSED = [
        ("<user%remote.test@example.test>", False),          # %-hack (RFC 5321 §3.6.1)
        ("<bob%remote.test@example.test>", False),           # %-hack with a real local user
        ("<@example.test:user@remote.test>", False),         # source route (RFC 5321 §3.6.1, App. C)
        ("<@example.test,@mx.example.test:user@remote.test>", False),
        ('<"user@remote.test"@example.test>', False),        # quoted "@" in the local part
        ('<"bob@remote.test"@example.test>', False),
        ("<user@remote.test@example.test>", False),          # two "@"
        ("<remote.test!user@example.test>", False),          # UUCP bang path
        ("<user@remote.test.>", False),                      # trailing dot
        ("<user@example.test.>", False),
        ("<bob@example.test.>", False),
        ("<user@[127.0.0.1]>", False),                       # address literals (RFC 5321 §4.1.3)
        ("<bob@[127.0.0.1]>", False),
        ("<user@[IPv6:::1]>", False),
        ("<USER@REMOTE.TEST>", False),                       # case
        ("<user@bücher.test>", True),                        # IDN U-label (RFC 6531)
        ("<user@bücher.test>", False),                       # the same without SMTPUTF8
        ("<user@xn--bcher-kva.test>", False),                # IDN A-label
        ("<postmaster@remote.test>", False),                 # postmaster is local-only (RFC 5321 §4.5.1)
        ("<user@remote.test>", False),                       # the plain case
        ("<user@localhost.remote.test>", False),
        ("<user@example.test.remote.test>", False),
        ("<user@remote.test\\@example.test>", False),        # escaped "@" outside quotes
    ]

    def rcpt(self, s, path, utf8):
        code, _ = s.mail("<>", ["SMTPUTF8"] if utf8 else [])
        self.assertEqual(code, 250)
        s.command_encoding = "utf-8"       # send non-ASCII raw even without SMTPUTF8
        code, text = s.docmd("RCPT TO:" + path)
        return code, text

    def test_each_trick_is_refused_or_stays_local(self):
        accepted = []
        for path, utf8 in self.REFUSED:
            with self.subTest(rcpt=path, smtputf8=utf8):
                s = self.smtp()
                code, text = self.rcpt(s, path, utf8)
                if code < 300:
                    accepted.append(path)
                    dcode, _ = s.data(MSG)
                    self.assertEqual(dcode, 250)
                else:
                    self.assertTrue(500 <= code < 600, "%s got %d %r" % (path, code, text))
                _quit(s)
        self.assert_nothing_left()
        # None of these names a local mailbox: all must be refused outright.
        self.assertEqual(accepted, [])

    def test_plain_remote_rcpt_is_relay_access_denied(self):
        s = self.smtp()
        s.mail("alice@example.test")            # a local sender grants nothing
        code, text = s.rcpt("user@remote.test")
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1", text)
        self.assert_nothing_left()

    def test_tricks_naming_a_local_user_deliver_locally_only(self):
        """Source route to a local mailbox, case, plus-tag and <Postmaster>:
        accepted, delivered to the local Maildir, nothing leaves."""
        before = self.local_files()
        cases = ["<@remote.test:bob@example.test>",        # route ignored (RFC 5321 §4.1.1.3)
                 "<@remote.test,@other.test:bob@example.test>",
                 "<BOB@EXAMPLE.TEST>",
                 "<bob+remote.test@example.test>",
                 "<Postmaster>"]                           # RFC 5321 §4.5.1
        for path in cases:
            with self.subTest(rcpt=path):
                s = self.smtp()
                s.mail("<>")
                code, text = s.docmd("RCPT TO:" + path)
                self.assertEqual(code, 250, text)
                self.assertEqual(s.data(MSG)[0], 250)
                _quit(s)
        self.assertEqual(len(self.local_files() - before), len(cases))
        self.assert_nothing_left()

    def test_mixed_local_and_remote_rcpts_only_local_accepted(self):
        self.clear_mailbox("bob@example.test")
        s = self.smtp()
        s.mail("<>")
        self.assertEqual(s.rcpt("bob@example.test")[0], 250)
        self.assertEqual(s.rcpt("user@remote.test")[0], 550)
        self.assertEqual(s.data(MSG)[0], 250)
        _quit(s)
        self.assertEqual(len(self.new_messages("bob@example.test")), 1)
        self.assert_nothing_left()

    def test_failed_auth_grants_no_relay(self):
        s = self.smtp()
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            s.login("alice@example.test", "wrong password")
        s.mail("alice@example.test")
        self.assertEqual(s.rcpt("user@remote.test")[0], 550)
        self.assert_nothing_left()


class CatchAllTricks(OpenRelayTricks):
    """The same tricks with a catch-all alias ``*@example.test`` → bob: a
    trick that now names a local address may be accepted, but then only bob's
    Maildir may receive it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server.backend.aliases.add("*@example.test", ["bob@example.test"])

    def test_each_trick_is_refused_or_stays_local(self):
        before = self.local_files()
        accepted = []
        for path, utf8 in self.REFUSED:
            with self.subTest(rcpt=path, smtputf8=utf8):
                s = self.smtp()
                code, text = self.rcpt(s, path, utf8)
                if code < 300:
                    accepted.append(path)
                    self.assertEqual(s.data(MSG)[0], 250)
                else:
                    self.assertTrue(500 <= code < 600, "%s got %d %r" % (path, code, text))
                _quit(s)
        self.assert_nothing_left()
        new = self.local_files() - before
        self.assertEqual(len(new), len(accepted))
        bob_new = os.path.join(self.maildir("bob@example.test"), "new")
        self.assertTrue(all(os.path.dirname(p) == bob_new for p in new), new)

    def test_catch_all_is_active(self):
        """So the refusals above are not for want of a catch-all."""
        s = self.smtp()
        self.assertEqual(self.rcpt(s, "<no-such-user@example.test>", False)[0], 250)


class AuthenticatedRelay(_RelayCase):
    """The positive side: who MAY relay, and with which sender."""

    def test_submission_requires_auth_before_mail(self):
        s = self.smtp("submission")
        code, text = s.mail("alice@example.test")
        self.assertEqual(code, 530)          # RFC 4954 §6
        self.assertIn(b"5.7.0", text)
        self.assert_nothing_left()

    def test_authenticated_submission_relays_to_remote(self):
        s = self.smtp("submission")
        s.login("alice@example.test", "alice-secret")
        s.mail("alice@example.test")
        self.assertEqual(s.rcpt("user@remote.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        _quit(s)
        messages = self.wait_sink()
        self.assertEqual(len(messages), 1)
        mail_from, rcpts, data = messages[0]
        self.assertEqual((mail_from, rcpts), ("alice@example.test", ["user@remote.test"]))
        self.assertIn(b"probe body", data)
        self.assertEqual(self.flush_and_wait_idle(), [])

    def test_sender_must_be_own_address(self):
        s = self.smtp("submission")
        s.login("alice@example.test", "alice-secret")
        for other in ("bob@example.test", "user@remote.test", "postmaster@example.test"):
            with self.subTest(sender=other):
                code, text = s.mail(other)
                self.assertEqual(code, 553, text)      # RFC 6409 §6.1
                self.assertIn(b"5.7.1", text)
                s.rset()
        for own in ("alice@example.test", "ALICE@example.test", "alice+tag@example.test"):
            with self.subTest(sender=own):
                self.assertEqual(s.mail(own)[0], 250)
                s.rset()
        self.assert_nothing_left()

    def test_auth_on_smtp_port_also_relays_but_checks_sender(self):
        s = self.smtp("smtp")
        s.login("bob@example.test", "bob-secret")
        self.assertEqual(s.mail("alice@example.test")[0], 553)
        s.rset()
        s.mail("bob@example.test")
        self.assertEqual(s.rcpt("someone@remote.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        _quit(s)
        messages = self.wait_sink()
        self.assertEqual(messages[0][1], ["someone@remote.test"])


class TrustedNetworkRelay(_RelayCase):
    """trusted_networks=127.0.0.0/8: loopback clients relay without AUTH."""

    relay_extra = {"trusted_networks": "127.0.0.0/8"}

    def test_trusted_client_relays_without_auth(self):
        s = self.smtp()
        s.mail("<someone@elsewhere.test>")
        self.assertEqual(s.rcpt("user@remote.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        _quit(s)
        messages = self.wait_sink()
        self.assertEqual(len(messages), 1)
        self.assertEqual(messages[0][1], ["user@remote.test"])
        self.assertEqual(self.flush_and_wait_idle(), [])


class TrustedNetworkBoundary(_RelayCase):
    """trusted_networks=127.0.0.2/32: the network, not "loopback", is what counts.
    (Linux routes all of 127.0.0.0/8 to lo, so the client can pick its source.)"""

    relay_extra = {"trusted_networks": "127.0.0.2/32"}

    def test_client_outside_the_network_cannot_relay(self):
        s = self.smtp(source="127.0.0.1")
        s.mail("<someone@elsewhere.test>")
        self.assertEqual(s.rcpt("user@remote.test")[0], 550)
        self.assert_nothing_left()

    def test_client_inside_the_network_relays(self):
        s = self.smtp(source="127.0.0.2")
        s.mail("<someone@elsewhere.test>")
        self.assertEqual(s.rcpt("user@remote.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        _quit(s)
        self.assertEqual(self.wait_sink()[0][1], ["user@remote.test"])


def _no_verify() -> ssl.SSLContext:
    """The test certificate is self-signed; these tests are about SMTP state."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsAuthState(_RelayCase):
    """With TLS on: STARTTLS wipes an earlier AUTH, and smtps wants AUTH too."""

    tls = True

    def test_starttls_discards_authentication_on_smtp_port(self):
        """RFC 3207 §4.2: after STARTTLS the server MUST discard what it knew
        about the client, AUTH included, so the relay right is gone."""
        s = self.smtp()
        s.login("alice@example.test", "alice-secret")
        self.assertEqual(s.starttls(context=_no_verify())[0], 220)
        s.ehlo("client.elsewhere.test")
        self.assertEqual(s.mail("alice@example.test")[0], 250)
        code, text = s.rcpt("user@remote.test")
        self.assertEqual(code, 550, text)
        self.assert_nothing_left()

    def test_starttls_discards_authentication_on_submission(self):
        s = self.smtp("submission")
        s.login("alice@example.test", "alice-secret")
        self.assertEqual(s.starttls(context=_no_verify())[0], 220)
        s.ehlo("client.elsewhere.test")
        self.assertEqual(s.mail("alice@example.test")[0], 530)     # RFC 4954 §6
        self.assert_nothing_left()

    def test_smtps_requires_auth_before_mail(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.ports["smtps"], timeout=WAIT, context=_no_verify())
        self.addCleanup(_quit, s)
        s.ehlo("client.elsewhere.test")
        code, text = s.mail("alice@example.test")
        self.assertEqual(code, 530, text)
        self.assertIn(b"5.7.0", text)
        self.assert_nothing_left()

    def test_smtps_authenticated_relays(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.ports["smtps"], timeout=WAIT, context=_no_verify())
        self.addCleanup(_quit, s)
        s.login("bob@example.test", "bob-secret")
        s.sendmail("bob@example.test", ["far@remote.test"], MSG)
        self.assertEqual(self.wait_sink()[0][1], ["far@remote.test"])


if __name__ == "__main__":
    unittest.main()
