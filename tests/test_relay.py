"""protocols/outbound/relay.py with the real event loop, a tiny SMTP sink on 127.0.0.1 and a fake resolver.

The sink is a stdlib socket server in a thread; the resolver maps test
domains to 127.0.0.1 (and 127.0.0.2, where nothing listens, for an MX that
refuses connections).  Rounds are awaited through the relay's ``on_round``
hook with a bounded ``Queue.get``, never with sleeps.
"""

import email
import os
import queue as stdqueue
import ssl
import tempfile
import threading
import unittest

from protocols.dns.mx import NULL_MX, NO_DOMAIN, TEMP_FAIL, MxHost, MxResult
from protocols.loop import EventLoop
from protocols.outbound.relay import Relay, RelayConfig, parse_relayhost
from protocols.smtp.client import ClientConfig
from store.queue import DEFERRED, MemoryQueue, Queue
from tests.smtpsink import SmtpSink as Sink

WAIT = 10.0
CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")
MSG = b"From: alice@example.org\r\nSubject: test\r\n\r\nhello\r\n.dot line\r\n"


class FakeResolver:
    def __init__(self, loop):
        self.loop = loop
        self.asked = []
        self.table = {
            "example.com": MxResult(hosts=[MxHost(10, "mx.example.com", ["127.0.0.1"])]),
            "example.net": MxResult(hosts=[MxHost(10, "mx.example.net", ["127.0.0.1"])]),
            # The first MX refuses connections (nothing listens on 127.0.0.2).
            "fallback.example": MxResult(hosts=[MxHost(10, "mx1.fallback.example", ["127.0.0.2"]),
                                                MxHost(20, "mx2.fallback.example", ["127.0.0.1"])]),
            "down.example": MxResult(hosts=[MxHost(10, "mx.down.example", ["127.0.0.2"])]),
            "xn--bcher-kva.example": MxResult(hosts=[MxHost(10, "mx.xn--bcher-kva.example", ["127.0.0.1"])]),
            "nullmx.example": MxResult(reply=NULL_MX),
            "nxdomain.example": MxResult(reply=NO_DOMAIN),
            "servfail.example": MxResult(reply=TEMP_FAIL),
        }

    def lookup_mx_hosts(self, domain, done):
        self.asked.append(domain)
        self.loop.call_soon(lambda: done(self.table[domain]))


class RelayHarness(unittest.TestCase):
    """Helpers only: a relay on a running loop, a sink, a fake resolver."""
    disk = False
    thread = None

    def start_relay(self, tls_context=None, **config):
        self.sink = Sink()
        self.loop = EventLoop()
        self.now = 1_700_000_000.0
        if self.disk:
            self._tmp = tempfile.TemporaryDirectory()
            self.queue = Queue(self._tmp.name)
        else:
            self.queue = MemoryQueue()
        self.resolver = FakeResolver(self.loop)
        self.bounces = []
        self.rounds = stdqueue.Queue()
        kw = dict(hostname="mail.example.org", relay_port=self.sink.port, connect_timeout=5,
                  client=ClientConfig())
        kw.update(config)
        self.relay = Relay(self.loop, self.queue, self.resolver, RelayConfig(**kw),
                           on_bounce=lambda e, f, b: self.bounces.append((e, f, b)),
                           tls_client_context=tls_context, clock=lambda: self.now, on_round=self.rounds.put)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def tearDown(self):
        if self.thread is None:
            return
        self.loop.stop()
        self.thread.join(WAIT)
        self.loop.close()
        self.sink.close()
        if self.disk:
            self._tmp.cleanup()

    def enqueue(self, rcpts, sender="alice@example.org", qid="Q1", data=MSG):
        return self.queue.enqueue(sender, rcpts, data, qid, self.now)

    def round(self, action="run_queue"):
        """Run one queue pass in the loop thread and wait for its entry's round to end."""
        self.loop.call_soon_threadsafe(getattr(self.relay, action))
        return self.rounds.get(timeout=WAIT)


class RelayTest(RelayHarness):
    def setUp(self):
        self.start_relay()

    def test_delivered_and_removed(self):
        self.enqueue(["bob@example.com", "carol@example.com"])
        entry = self.round()
        self.assertEqual([r.state for r in entry.recipients], ["delivered", "delivered"])
        self.assertIsNone(self.queue.get("Q1"))
        self.assertEqual(len(self.sink.messages), 1)        # one transaction per domain
        mail_from, rcpts, data = self.sink.messages[0]
        self.assertEqual((mail_from, rcpts, data), ("alice@example.org", ["bob@example.com", "carol@example.com"], MSG))
        self.assertEqual(self.bounces, [])

    def test_two_domains_two_transactions(self):
        self.enqueue(["bob@example.com", "dave@example.net"])
        self.round()
        self.assertEqual(sorted(m[1][0] for m in self.sink.messages), ["bob@example.com", "dave@example.net"])
        self.assertEqual(sorted(self.resolver.asked), ["example.com", "example.net"])

    def test_deferred_on_4xx_then_delivered_on_flush(self):
        self.enqueue(["later@example.com"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertIn("451 4.2.0", entry.recipients[0].last_error)
        self.assertEqual(self.queue.get("Q1").next_try, self.now + 300)
        self.assertEqual(self.sink.messages, [])
        # Not due yet: a plain run does nothing; flush makes it due now.
        self.loop.call_soon_threadsafe(self.relay.run_queue)
        entry = self.round("flush")
        self.assertEqual(entry.recipients[0].state, "delivered")
        self.assertIsNone(self.queue.get("Q1"))
        self.assertEqual(len(self.sink.messages), 1)
        self.assertTrue(self.rounds.empty())

    def test_550_bounces_with_a_proper_dsn(self):
        self.enqueue(["good@example.com", "bad@example.com"])
        entry = self.round()
        self.assertEqual([r.state for r in entry.recipients], ["delivered", "failed"])
        self.assertEqual(len(self.bounces), 1)
        bentry, failed, dsn = self.bounces[0]
        self.assertEqual(bentry.id, "Q1")
        self.assertEqual(failed, [("bad@example.com", "5.1.1",
                                   "smtp; 550 5.1.1 <bad@example.com>: no such user", "mx.example.com")])
        m = email.message_from_bytes(dsn)
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertEqual(m["To"], "<alice@example.org>")
        self.assertEqual(m["From"], "Mail Delivery System <MAILER-DAEMON@mail.example.org>")
        report = m.get_payload()[1].get_payload()
        self.assertEqual(report[0]["Reporting-MTA"], "dns; mail.example.org")
        self.assertEqual(report[1]["Final-Recipient"], "rfc822; bad@example.com")
        self.assertEqual(report[1]["Status"], "5.1.1")
        self.assertEqual(report[1]["Remote-MTA"], "dns; mx.example.com")
        self.assertIn("Subject: test", m.get_payload()[2].get_payload())
        self.assertNotIn(b"hello", dsn)
        self.assertIsNone(self.queue.get("Q1"))

    def test_null_mx_bounces_at_once_without_connecting(self):
        self.enqueue(["x@nullmx.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, "failed")
        self.assertEqual(self.sink.connections, 0)
        (_, failed, dsn), = self.bounces
        self.assertEqual(failed[0][:2], ("x@nullmx.example", "5.1.10"))
        self.assertIn(b"Status: 5.1.10", dsn)

    def test_nxdomain_fails_servfail_defers(self):
        self.enqueue(["x@nxdomain.example"], qid="A")
        self.assertEqual(self.round().recipients[0].state, "failed")
        self.enqueue(["x@servfail.example"], qid="B")
        self.assertEqual(self.round().recipients[0].state, DEFERRED)
        self.assertEqual(len(self.bounces), 1)

    def test_next_mx_after_connection_refused(self):
        self.enqueue(["bob@fallback.example"])
        with self.assertLogs("mailsrv.relay", "INFO") as logs:
            entry = self.round()
        self.assertEqual(entry.recipients[0].state, "delivered")
        self.assertEqual(len(self.sink.messages), 1)
        text = "\n".join(logs.output)
        self.assertIn("mx=mx1.fallback.example ip=127.0.0.2 result=connect", text)
        self.assertIn("mx=mx2.fallback.example ip=127.0.0.1 result=delivered=1", text)

    def test_all_mx_unreachable_defers(self):
        self.enqueue(["bob@down.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertIn("connect to mx.down.example[127.0.0.2] failed", entry.recipients[0].last_error)
        self.assertEqual(self.bounces, [])

    def test_expired_message_bounces(self):
        self.enqueue(["bob@down.example"])
        self.now += 5 * 24 * 3600
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, "failed")
        (_, failed, dsn), = self.bounces
        self.assertEqual(failed[0][1], "4.4.7")
        self.assertIn(b"Action: failed", dsn)

    def test_start_runs_the_queue_and_removes_finished_leftovers(self):
        self.enqueue(["bob@example.com"], qid="DONE")
        self.queue.record_results("DONE", {"bob@example.com": ("delivered", "250 ok")}, self.now)
        self.enqueue(["bob@example.com"], qid="NEW")
        entry = self.round("start")
        self.assertEqual(entry.id, "NEW")
        self.assertEqual([e.id for e in self.queue.list()], [])
        self.assertEqual(len(self.sink.messages), 1)

    def test_address_literal_needs_no_mx(self):
        self.enqueue(["bob@[127.0.0.1]"])
        self.assertEqual(self.round().recipients[0].state, "delivered")
        self.assertEqual(self.resolver.asked, [])

    def test_idn_domain_is_looked_up_as_a_label(self):
        self.enqueue(["bob@b\u00fccher.example"])
        self.assertEqual(self.round().recipients[0].state, "delivered")
        self.assertEqual(self.resolver.asked, ["xn--bcher-kva.example"])
        self.assertEqual(self.sink.messages[0][1], ["bob@xn--bcher-kva.example"])

    def test_smtputf8_refused_by_sink_bounces(self):
        self.queue.enqueue("alice@example.org", ["jos\u00e9@example.com"], MSG, "Q1", self.now, smtputf8=True)
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, "failed")
        self.assertEqual(self.bounces[0][1][0][1], "5.6.7")


class RelayAdministrationTest(RelayHarness):
    """`queue delete|bounce` go through the relay, which owns the entries: a
    request for an entry in a delivery round is applied with that round's
    results, so one message gives at most one DSN (Postfix's postsuper and
    postqueue ask the queue manager for the same reason)."""
    disk = True

    def setUp(self):
        self.start_relay()
        self.outcomes = stdqueue.Queue()

    def on_loop(self, fn):
        self.loop.call_soon_threadsafe(fn)

    def administer(self, command, qid="Q1"):
        self.on_loop(lambda: self.relay.administer(command, qid, self.outcomes.put))

    def dsns(self):
        """The DSNs in the queue (sender <>), and those handed to on_bounce."""
        return [e for e in self.queue.list() if e.sender == ""], self.bounces

    def hold_round_in_mail(self):
        """Start a round for Q1 and keep it open at MAIL FROM until the gate opens."""
        self.sink.gate = threading.Event()
        self.addCleanup(self.sink.gate.set)
        self.on_loop(self.relay.run_queue)
        self.assertTrue(self.sink.in_mail.wait(WAIT))

    def test_bounce_of_an_idle_entry_queues_one_dsn_and_removes_it(self):
        self.enqueue(["bob@down.example"])
        self.administer("bounce")
        self.assertEqual(self.outcomes.get(timeout=WAIT), "bounced")
        self.assertIsNone(self.queue.get("Q1"))
        queued, handed = self.dsns()
        self.assertEqual(len(queued), 1)
        (_, failed, dsn), = handed
        self.assertEqual(failed, [("bob@down.example", "5.0.0", "x-local; bounced by the administrator", "")])
        self.assertIn(b"Action: failed", dsn)

    def test_bounce_during_a_round_gives_one_dsn_with_every_failure(self):
        self.enqueue(["bob@example.com", "bad@example.com", "later@example.com"])
        self.hold_round_in_mail()
        self.administer("bounce")
        self.administer("delete")           # too late: it is bounced already
        self.sink.gate.set()
        entry = self.rounds.get(timeout=WAIT)
        # the second request is answered at once, the first once it is on disk
        self.assertEqual(self.outcomes.get(timeout=WAIT), "already bounced")
        self.assertEqual(self.outcomes.get(timeout=WAIT), "bounced")
        self.assertEqual([r.state for r in entry.recipients], ["delivered", "failed", "failed"])
        self.assertIsNone(self.queue.get("Q1"))
        queued, handed = self.dsns()
        self.assertEqual(len(queued), 1)
        self.assertEqual(len(handed), 1)
        statuses = sorted((f[0], f[1]) for f in handed[0][1])
        self.assertEqual(statuses, [("bad@example.com", "5.1.1"), ("later@example.com", "5.0.0")])

    def test_delete_during_a_round_removes_without_a_dsn(self):
        self.enqueue(["bad@example.com", "later@example.com"])
        self.hold_round_in_mail()
        self.administer("delete")
        self.administer("bounce")
        self.sink.gate.set()
        self.rounds.get(timeout=WAIT)
        self.assertEqual(self.outcomes.get(timeout=WAIT), "already deleted")
        self.assertEqual(self.outcomes.get(timeout=WAIT), "deleted")
        self.assertIsNone(self.queue.get("Q1"))
        self.assertEqual(self.dsns(), ([], []))

    def test_bounce_and_delete_of_an_idle_entry_in_one_breath(self):
        self.enqueue(["bob@down.example"])
        self.on_loop(lambda: (self.relay.administer("bounce", "Q1", self.outcomes.put),
                              self.relay.administer("delete", "Q1", self.outcomes.put),
                              self.relay.run_queue()))
        self.assertEqual(self.outcomes.get(timeout=WAIT), "already bounced")
        self.assertEqual(self.outcomes.get(timeout=WAIT), "bounced")
        self.assertEqual(len(self.dsns()[0]), 1)
        self.assertEqual(self.sink.connections, 0)     # never delivered while being bounced

    def test_unknown_id(self):
        self.administer("delete", "NOPE")
        self.assertEqual(self.outcomes.get(timeout=WAIT), "not in the queue")


class RelayDiskQueueTest(RelayTest):
    disk = True


class RelayOptionsTest(RelayHarness):
    """Smarthost, STARTTLS and the connection limit; each test builds its own relay."""

    def test_smarthost_with_auth_plain_skips_mx_lookup(self):
        self.start_relay(client=ClientConfig(allow_plaintext_auth=True), relayhost="127.0.0.1:0",
                         relay_auth_user="relayuser", relay_auth_password="relaypass")
        self.relay.config.relayhost = "[127.0.0.1]:%d" % self.sink.port
        self.sink.ehlo = b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING\r\n"
        self.enqueue(["bob@anywhere.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, "delivered")
        self.assertEqual(self.sink.auth_seen, [b"\0relayuser\0relaypass"])
        self.assertEqual(self.resolver.asked, [])

    def test_smarthost_auth_refused_defers(self):
        self.start_relay(client=ClientConfig(allow_plaintext_auth=True),
                         relay_auth_user="relayuser", relay_auth_password="wrong")
        self.relay.config.relayhost = "127.0.0.1:%d" % self.sink.port
        self.sink.ehlo = b"250-sink\r\n250 AUTH PLAIN\r\n"
        self.enqueue(["bob@anywhere.example"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertIn("535 5.7.8", entry.recipients[0].last_error)
        self.assertNotIn("wrong", entry.recipients[0].last_error)
        self.assertEqual(self.sink.messages, [])

    def test_starttls_to_the_mx(self):
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE        # Postfix "may": encrypt without verifying
        self.start_relay(tls_context=client)
        self.sink.ehlo = b"250-sink\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
        self.enqueue(["bob@example.com"])
        with self.assertLogs("mailsrv.relay", "INFO") as logs:
            entry = self.round()
        self.assertEqual(entry.recipients[0].state, "delivered")
        self.assertEqual(len(self.sink.tls_seen), 1)
        self.assertIn("tls=yes", "\n".join(logs.output))
        self.assertEqual(self.sink.messages[0][2], MSG)

    def test_tls_required_but_not_offered_defers(self):
        self.start_relay(relay_tls="require")
        self.enqueue(["bob@example.com"])
        entry = self.round()
        self.assertEqual(entry.recipients[0].state, DEFERRED)
        self.assertIn("TLS is required", entry.recipients[0].last_error)

    def test_connection_limit(self):
        self.start_relay(max_connections=1)
        for i in range(4):
            self.enqueue(["bob@example.com"], qid="Q%d" % i)
        self.loop.call_soon_threadsafe(self.relay.run_queue)
        done = [self.rounds.get(timeout=WAIT) for _ in range(4)]
        self.assertEqual(sorted(e.id for e in done), ["Q0", "Q1", "Q2", "Q3"])
        self.assertEqual(len(self.sink.messages), 4)
        # The limit counts deliveries in flight; a finished one may still be
        # exchanging QUIT while the next connects, so count transactions.
        self.assertEqual(self.sink.max_in_txn, 1)


class ParseRelayhostTest(unittest.TestCase):
    def test_forms(self):
        self.assertEqual(parse_relayhost("smtp.example.com:587", 25), ("smtp.example.com", 587))
        self.assertEqual(parse_relayhost("[smtp.example.com]", 25), ("smtp.example.com", 25))
        self.assertEqual(parse_relayhost("[::1]:2525", 25), ("::1", 2525))
        self.assertEqual(parse_relayhost("smtp.example.com", 465), ("smtp.example.com", 465))


if __name__ == "__main__":
    unittest.main()
