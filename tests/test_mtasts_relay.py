"""MTA-STS applied by the relay, over loopback (RFC 8461 §4, §5).

The recipient domain ``sts.test``: its MX is an SMTP sink on 127.0.0.1 with
STARTTLS and a certificate for mx.sts.test from a test CA (tests/certs/sts/);
its policy is served over HTTPS on 127.0.0.1 (a stdlib server in a thread,
certificate for mta-sts.sts.test from the same CA), reached through
loop_https's ``connect_to``.  Shown: enforce delivers over a verified TLS,
refuses an MX the policy does not name and a certificate that does not
verify (the mail stays queued, 4.7.5, a temporary failure), refuses a server
without STARTTLS; testing delivers anyway; TLS-RPT counts each outcome.
"""

import http.server
import os
import ssl
import tempfile
import threading
import unittest

from protocols import loop_https
from protocols.dns import codec as dnscodec
from protocols.dns.mx import MxHost, MxResult
from protocols.dns.resolver import Answer, DnsError
from protocols.loop_tls import client_tls_context
from protocols.outbound.mtasts_fetch import StsPolicies
from protocols.outbound.tlsrpt import TlsRptCounter, utc_day
from store.queue import DEFERRED, DELIVERED
from store.stscache import StsCache, TlsRptStore
from tests.smtpsink import SmtpSink
from tests.test_relay import FakeResolver, RelayHarness

STS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs", "sts")
CA = os.path.join(STS, "ca.pem")
GOOD = (os.path.join(STS, "good.pem"), os.path.join(STS, "good-key.pem"))      # mx.sts.test, mta-sts.sts.test
OTHER = (os.path.join(STS, "other.pem"), os.path.join(STS, "other-key.pem"))   # other.test only
UNKNOWN_CA = (os.path.join(STS, "..", "cert.pem"), os.path.join(STS, "..", "key.pem"))     # self-signed
EHLO_TLS = b"250-sink\r\n250-STARTTLS\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_PLAIN = b"250-sink\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"


def policy(mode, *mx, max_age=86400):
    return ("version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx), max_age)).encode()


class PolicyServer:
    """HTTPS on 127.0.0.1 serving ``body`` at /.well-known/mta-sts.txt, text/plain."""

    def __init__(self, body: bytes):
        self.body, self.requests = body, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.headers.get("Host"), self.path))
                ok = self.path == "/.well-known/mta-sts.txt"
                data = outer.body if ok else b"not found"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*GOOD)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.address = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StsResolver(FakeResolver):
    """MX from the table, TXT from ``txt``."""

    def __init__(self, loop):
        super().__init__(loop)
        self.txt = {"_mta-sts.sts.test": [b"v=STSv1; id=1"]}

    def resolve(self, name, qtype, done):
        recs = self.txt.get(name) if qtype == dnscodec.TYPE_TXT else None
        result = Answer([(r,) for r in recs], 300) if recs else DnsError("nxdomain", "NXDOMAIN")
        self.loop.call_soon(lambda: done(result))


class StsRelayTest(RelayHarness):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.https = None
        self.sinks = []

    def tearDown(self):
        super().tearDown()
        for s in self.sinks:
            s.close()
        if self.https is not None:
            self.https.close()
        if getattr(self, "sts", None) is not None:
            self.sts.close()
        self.tmp.cleanup()

    def start(self, body, pair=GOOD, ehlo=EHLO_TLS, mx_names=("mx.sts.test",)):
        sink = SmtpSink(ehlo)
        sink.pair = pair
        self.sinks.append(sink)
        self.https = PolicyServer(body)
        self.start_relay(tls_context=client_tls_context(False), relay_port=sink.port)
        self.resolver = self.relay.resolver = StsResolver(self.loop)
        self.resolver.table["sts.test"] = MxResult(hosts=[MxHost(10 * (i + 1), n, ["127.0.0.1"])
                                                          for i, n in enumerate(mx_names)])
        self.sts = StsPolicies(self.loop, self.resolver, StsCache(self.tmp.name), cafile=CA,
                               connect_to=self.https.address)
        self.counter = TlsRptCounter(self.loop, TlsRptStore(self.tmp.name))
        self.relay.sts, self.relay.sts_context = self.sts, loop_https.client_context(CA)
        self.relay.tls_report = self.counter
        return sink

    def deliver(self):
        self.enqueue(["bob@sts.test"])
        with self.assertLogs("mailsrv", "INFO") as logs:
            entry = self.round()
        return entry, "\n".join(logs.output)

    def counts(self):
        self.counter.close()      # writes them (the relay is idle)
        return TlsRptStore(self.tmp.name).day(utc_day(self.loop.time())).get("sts.test", {})

    def test_enforce_delivers_over_verified_tls_to_a_named_mx(self):
        sink = self.start(policy("enforce", "mx.sts.test"))
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DELIVERED, log)
        self.assertEqual(len(sink.messages), 1)
        self.assertTrue(sink.wait_tls()[0].startswith("TLSv1"), sink.tls_seen)
        self.assertEqual(self.https.requests, [("mta-sts.sts.test", "/.well-known/mta-sts.txt")])
        self.assertIn("policy id=1 fetched: mode=enforce", log)
        c = self.counts()
        self.assertEqual((c["success"], c["failure"], c["policy"]["policy-type"]), (1, {}, "sts"))

    def test_enforce_wildcard_pattern_matches_one_label(self):
        sink = self.start(policy("enforce", "*.sts.test"))
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DELIVERED, log)
        self.assertEqual(len(sink.messages), 1)

    def test_enforce_refuses_an_mx_the_policy_does_not_name(self):
        sink = self.start(policy("enforce", "mx.elsewhere.test"))
        entry, log = self.deliver()
        r = entry.recipients[0]
        self.assertEqual(r.state, DEFERRED)                    # RFC 8461 §5: temporary; stays queued
        self.assertIsNotNone(self.queue.get("Q1"))
        self.assertIn("451 4.7.5 MTA-STS policy of sts.test (enforce) allows none of its MX hosts", r.last_error)
        self.assertEqual(sink.connections, 0)
        self.assertIn("mta-sts domain=sts.test mode=enforce mx=mx.sts.test not in the policy", log)
        self.assertEqual(self.counts()["failure"], {"validation-failure": 1})

    def test_enforce_skips_unnamed_mx_and_uses_the_named_one(self):
        sink = self.start(policy("enforce", "mx2.sts.test"), mx_names=("evil.sts.test.example", "mx2.sts.test"))
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DELIVERED, log)
        self.assertEqual(sink.connections, 1)
        self.assertIn("mx=evil.sts.test.example not in the policy", log)

    def test_enforce_refuses_a_certificate_that_does_not_verify(self):
        sink = self.start(policy("enforce", "mx.sts.test"), pair=OTHER)
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DEFERRED, log)
        self.assertIsNotNone(self.queue.get("Q1"))
        self.assertEqual(sink.messages, [])
        self.assertEqual(sink.wait_tls(), ["failed"])
        self.assertIn("MTA-STS policy of sts.test (enforce): TLS with mx.sts.test[127.0.0.1] failed",
                      entry.recipients[0].last_error)
        self.assertIn("mta-sts domain=sts.test mode=enforce mx=mx.sts.test certificate-host-mismatch", log)
        c = self.counts()
        self.assertEqual((c["success"], c["failure"]), (0, {"certificate-host-mismatch": 1}))
        self.assertEqual(list(c["details"].values())[0]["receiving-mx-hostname"], "mx.sts.test")

    def test_enforce_refuses_a_certificate_of_an_unknown_ca(self):
        sink = self.start(policy("enforce", "mx.sts.test"), pair=UNKNOWN_CA)
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DEFERRED, log)
        self.assertEqual(sink.messages, [])
        self.assertEqual(self.counts()["failure"], {"certificate-not-trusted": 1})      # RFC 8460 §4.3.1

    def test_enforce_refuses_a_server_without_starttls(self):
        sink = self.start(policy("enforce", "mx.sts.test"), ehlo=EHLO_PLAIN)
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DEFERRED, log)
        self.assertIn("does not offer STARTTLS", entry.recipients[0].last_error)
        self.assertEqual(sink.messages, [])
        self.assertEqual(self.counts()["failure"], {"starttls-not-supported": 1})

    def test_testing_mode_delivers_despite_a_bad_certificate_and_reports_it(self):
        sink = self.start(policy("testing", "mx.sts.test"), pair=OTHER)
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DELIVERED, log)
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(sink.wait_tls()[0], "failed")          # the verified try, then the opportunistic one
        self.assertIn("mode=testing mx=mx.sts.test certificate-host-mismatch", log)
        c = self.counts()
        self.assertEqual(c["failure"], {"certificate-host-mismatch": 1})
        self.assertEqual(c["success"], 1)

    def test_no_policy_domain_is_untouched(self):
        sink = self.start(policy("enforce", "mx.elsewhere.test"))
        self.resolver.txt.clear()
        entry, log = self.deliver()
        self.assertEqual(entry.recipients[0].state, DELIVERED, log)
        self.assertEqual(self.https.requests, [])
        self.assertEqual(self.counts()["policy"]["policy-type"], "no-policy-found")


if __name__ == "__main__":
    unittest.main()
