"""Serving our own MTA-STS policy (RFC 8461 §3.2, §3.3) on the HTTPS listener
(``https_port``: implicit TLS with the other ports' certificate), and
`dns check`'s comparison of the live policy with the one we serve."""

import os
import unittest

from protocols import dnscheck, loop_https
from protocols.outbound.mtasts import parse_policy
from tests.helpers import ServerTestCase
from tests.test_dnscheck import good_zone, HELD, HOST, IP4, IP6

STS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs", "sts")
CA = os.path.join(STS, "ca.pem")
URL = "https://mta-sts.sts.test/.well-known/mta-sts.txt"
SERVED = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmx: *.sts.test\r\nmax_age: 86400\r\n"


class ServePolicyTest(ServerTestCase):
    extra_config = {"https_port": "0", "http_port": "0", "mta_sts_mode": "enforce",
                    "mta_sts_mx": "mx.sts.test, *.sts.test", "mta_sts_max_age": "86400",
                    "tls_cert": os.path.join(STS, "good.pem"), "tls_key": os.path.join(STS, "good-key.pem")}

    def fetch(self, url=URL, port=None):
        return loop_https.request(url, cafile=CA, connect_to=("127.0.0.1", port or self.ports["https"]))

    def test_policy_over_https_verified_for_the_policy_host(self):
        reply = self.fetch()
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(reply.body, SERVED)
        policy = parse_policy(reply.body)
        self.assertEqual((policy.mode, policy.mx, policy.max_age), ("enforce", ["mx.sts.test", "*.sts.test"], 86400))

    def test_https_listener_serves_the_other_routes_and_no_plaintext(self):
        reply = self.fetch("https://mta-sts.sts.test/api/health")
        self.assertEqual(reply.status, 200)        # the routes of http_port
        with self.assertRaises(loop_https.HttpsError):                      # TLS from the first octet
            loop_https.request("http://127.0.0.1/.well-known/mta-sts.txt",
                               connect_to=("127.0.0.1", self.ports["https"]), timeout=5)

    def test_plain_http_listener_serves_it_too_and_a_wrong_ca_is_refused(self):
        reply = loop_https.request("http://mta-sts.sts.test/.well-known/mta-sts.txt",
                                   connect_to=("127.0.0.1", self.ports["http"]))
        self.assertEqual(reply.body, SERVED)
        with self.assertRaises(loop_https.HttpsError) as cm:
            loop_https.request(URL, connect_to=("127.0.0.1", self.ports["https"]))   # the system's CAs
        self.assertIn("certificate", str(cm.exception))

    def test_dns_check_compares_the_live_policy_with_ours(self):
        cfg = self.server.config
        served = dnscheck.served_policy(cfg)
        self.assertEqual(served, SERVED)
        live = dnscheck.fetch_policy("sts.test", CA, ("127.0.0.1", self.ports["https"]))
        self.assertEqual(live, SERVED)
        lines, ok = dnscheck.report("example.org", HOST, [IP4, IP6], HELD, good_zone(),
                                    dnscheck.sts_id_for(served, "x"), None, (served, live))
        self.assertTrue(ok, lines)
        (line,) = [s for s in lines if "MTA-STS policy" in s]
        self.assertEqual(line, "ok               MTA-STS policy https://mta-sts.example.org/.well-known/mta-sts.txt "
                               "(RFC 8461 §3.2, optional): mode enforce, mx mx.sts.test, *.sts.test, max_age 86400")
        # what we serve differs from what is live: said, with what to serve
        other = SERVED.replace(b"enforce", b"testing")
        lines, _ = dnscheck.report("example.org", HOST, [IP4, IP6], HELD, good_zone(), "x", None, (other, live))
        i = [n for n, s in enumerate(lines) if "MTA-STS policy" in s][0]
        self.assertTrue(lines[i].startswith("differs"), lines[i])
        self.assertIn("(mode enforce, we serve testing)", lines[i])
        self.assertIn("mode: testing", "\n".join(lines[i + 1:i + 8]))
        # not reachable: missing, one line naming the URL
        down = dnscheck.fetch_policy("sts.test", CA, ("127.0.0.1", 9))
        self.assertIsInstance(down, str)
        self.assertIn("https://mta-sts.sts.test/.well-known/mta-sts.txt", down)
        lines, _ = dnscheck.report("example.org", HOST, [IP4, IP6], HELD, good_zone(), "x", None, (served, down))
        self.assertTrue([s for s in lines if "MTA-STS policy" in s][0].startswith("missing"))
        # the TXT line's advice no longer says mailsrv cannot serve it
        self.assertNotIn("does not serve", "\n".join(lines))


class NoPolicyTest(ServerTestCase):
    extra_config = {"http_port": "0"}

    def test_404_without_mta_sts_mode(self):
        reply = loop_https.request("http://127.0.0.1/.well-known/mta-sts.txt",
                                   connect_to=("127.0.0.1", self.ports["http"]))
        self.assertEqual(reply.status, 404)
        self.assertNotIn("https", self.ports)        # https_port is off by default


if __name__ == "__main__":
    unittest.main()
