"""protocols/outbound/relay.py: where mail must not go, and what happens to what cannot go.

The harness of tests/test_relay.py (real loop, SMTP sink on 127.0.0.1, fake
resolver).  Shown: loops by address (issue 7 item 8: an MX address that is one
of our own listeners fails at once with 5.4.6, RFC 5321 §5.1, RFC 3463 X.4.6),
the per-delivery session bound (issue 7 item 5, Postfix smtp_mx_session_limit),
and double bounces (issue 8: a bounce that cannot be delivered goes to the
postmaster, logged at WARNING; a failed notice to the postmaster is logged at
ERROR and dropped, never looping).
"""

import email
import unittest

from protocols.dns.mx import MxHost, MxResult, is_own_address
from protocols.outbound.relay import MX_SESSION_LIMIT
from store.queue import DEFERRED, FAILED
from tests.test_relay import RelayHarness


class LoopByAddressTest(RelayHarness):
    def setUp(self):
        self.start_relay()
        self.relay.config.own_addresses = (("127.0.0.1", self.sink.port),)

    def mx(self, domain, *hosts):
        self.resolver.table[domain] = MxResult(hosts=[MxHost(pref, name, [ip]) for pref, name, ip in hosts])

    def test_mx_at_our_own_address_and_port_bounces_5_4_6_without_connecting(self):
        for n, (domain, ip) in enumerate((("self.example", "127.0.0.1"), ("zero.example", "0.0.0.0"),
                                          ("mapped.example", "::ffff:127.0.0.1"))):
            self.mx(domain, (10, "mx." + domain, ip))
            self.enqueue(["x@" + domain], qid="L%d" % n)
            entry = self.round()
            self.assertEqual(entry.recipients[0].state, FAILED, domain)
            self.assertIn("550 5.4.6 mail for %s loops back to myself" % domain, entry.recipients[0].last_error)
        self.assertEqual(self.sink.connections, 0)
        self.assertEqual([b[1][0][1] for b in self.bounces], ["5.4.6"] * 3)

    def test_only_mx_hosts_better_than_ourselves_are_tried(self):
        # RFC 5321 §5.1: we are a backup MX (20); the best (10) is down: wait, never loop
        self.mx("backup.example", (10, "best.backup.example", "127.0.0.2"), (20, "me.backup.example", "127.0.0.1"),
                (30, "worse.backup.example", "127.0.0.1"))
        self.enqueue(["x@backup.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertIn("127.0.0.2", entry.recipients[0].last_error)
        self.assertEqual(self.sink.connections, 0)

    def test_another_port_on_the_same_address_is_not_us(self):
        self.relay.config.own_addresses = (("127.0.0.1", self.sink.port + 1),)
        self.enqueue(["bob@example.com"])
        self.assertEqual(self.round().recipients[0].state, "delivered")

    def test_address_literal_and_smarthost_of_our_own(self):
        self.enqueue(["x@[127.0.0.1]"], qid="L")
        self.assertIn("5.4.6", self.round().recipients[0].last_error)
        self.relay.config.relayhost = "[127.0.0.1]:%d" % self.sink.port
        self.enqueue(["bob@example.com"], qid="S")
        self.assertIn("5.4.6", self.round().recipients[0].last_error)
        self.assertEqual(self.sink.connections, 0)


class SessionLimitTest(RelayHarness):
    def test_at_most_two_sessions_per_delivery(self):
        self.start_relay()
        self.sink.rcpt_reply = lambda rcpt: b"421 4.3.2 busy, closing\r\n"
        self.resolver.table["many.example"] = MxResult(
            hosts=[MxHost(i, "mx%d.many.example" % i, ["127.0.0.1"]) for i in range(4)])
        self.enqueue(["x@many.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertEqual(self.sink.connections, MX_SESSION_LIMIT)


class DoubleBounceTest(RelayHarness):
    def setUp(self):
        self.start_relay(postmaster="pm@example.com")

    def test_a_bounce_that_fails_goes_to_the_postmaster_never_to_null(self):
        self.enqueue(["bad@example.com"], sender="")
        with self.assertLogs("mailsrv.relay", "WARNING") as logs:
            entry = self.round()
        self.assertEqual(entry.recipients[0].state, FAILED)
        self.assertIsNone(self.queue.get("Q1"))
        self.assertTrue(any("WARNING" in line and "postmaster <pm@example.com>" in line for line in logs.output),
                        logs.output)
        (_, failed, dsn), = self.bounces
        self.assertEqual(failed[0][:2], ("bad@example.com", "5.1.1"))
        self.assertEqual(email.message_from_bytes(dsn)["To"], "<pm@example.com>")
        notice = self.round()           # the notice's own round: delivered to the postmaster with <>
        self.assertEqual([r.address for r in notice.recipients], ["pm@example.com"])
        self.assertEqual(notice.sender, "")
        (mail_from, rcpts, data), = self.sink.messages
        self.assertEqual((mail_from, rcpts), ("", ["pm@example.com"]))
        self.assertIn(b"Final-Recipient: rfc822; bad@example.com", data)

    def test_a_failed_notice_to_the_postmaster_is_logged_as_error_and_dropped(self):
        self.relay.config.postmaster = "bad@example.com"
        self.enqueue(["bad@example.com"], sender="")
        with self.assertLogs("mailsrv.relay", "ERROR") as logs:
            entry = self.round()
        self.assertEqual(entry.recipients[0].state, FAILED)
        self.assertIn("dropped", logs.output[0])
        self.assertEqual(self.bounces, [])
        self.assertEqual(self.queue.list(), [])           # nothing new queued: no loop

    def test_default_postmaster_is_postmaster_at_hostname(self):
        self.relay.config.postmaster = ""
        self.resolver.table["mail.example.org"] = self.resolver.table["example.com"]
        self.enqueue(["bad@example.com"], sender="")
        self.round()
        (_, _, dsn), = self.bounces
        self.assertEqual(email.message_from_bytes(dsn)["To"], "<postmaster@mail.example.org>")


class IsOwnAddressTest(unittest.TestCase):
    def test_forms(self):
        v4, v6, wild4, wild6 = [("127.0.0.1", 25)], [("::1", 25)], [("0.0.0.0", 25)], [("::", 25)]
        self.assertTrue(is_own_address("127.0.0.1", 25, v4))
        self.assertTrue(is_own_address("0.0.0.0", 25, v4))          # Linux connects to 0.0.0.0 as 127.0.0.1
        self.assertFalse(is_own_address("127.0.0.2", 25, v4))       # another loopback address: not bound
        self.assertFalse(is_own_address("127.0.0.1", 2525, v4))     # another port
        self.assertTrue(is_own_address("127.0.0.2", 25, wild4))
        self.assertTrue(is_own_address("0.0.0.0", 25, wild4))
        self.assertFalse(is_own_address("192.0.2.1", 25, wild4))    # our public address: not known here
        self.assertTrue(is_own_address("::", 25, v6))
        self.assertTrue(is_own_address("::1", 25, wild6))
        self.assertFalse(is_own_address("127.0.0.1", 25, wild6))    # IPV6_V6ONLY listeners
        self.assertTrue(is_own_address("192.0.2.7", 25, [("192.0.2.7", 25)]))
        self.assertFalse(is_own_address("mx.example.com", 25, wild4))


if __name__ == "__main__":
    unittest.main()
