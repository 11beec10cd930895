"""`python3 mailsrv.py dns check DOMAIN [--ip ADDR ...]` run for real against
tests/dnsfake.py on loopback: the printed lines and the exit status (issue 13,
"Operator help")."""

import subprocess
import sys
import tempfile
import unittest

from protocols import dnscheck
from protocols.crypto import ed25519
from protocols.dns import codec as dns
from store.dkimkeys import list_keys, write_key
from tests.dnsfake import FakeDnsServer
from tests.helpers import ROOT

PY = sys.executable
HOST = "mail.good.test"


class DnsCheckCommandTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        write_key(cls.tmp.name, "good.test", "s1", "ed25519", ed25519.generate().pem())
        _, kind, p, _ = dnscheck.dkim_keys(list_keys(cls.tmp.name)["good.test"])[0]
        cls.srv = srv = FakeDnsServer().start()
        cls.server = "%s:%d" % srv.address
        srv.add("good.test", dns.TYPE_MX, dns.MX(10, HOST))
        srv.add(HOST, dns.TYPE_A, "192.0.2.10")
        srv.add("good.test", dns.TYPE_TXT, (b"v=spf1 mx -all",))
        srv.add("s1._domainkey.good.test", dns.TYPE_TXT, (("v=DKIM1; k=%s; p=%s" % (kind, p)).encode(),))
        srv.add("_dmarc.good.test", dns.TYPE_TXT, (b"v=DMARC1; p=reject; rua=mailto:d@good.test",))
        srv.add("10.2.0.192.in-addr.arpa", dns.TYPE_PTR, HOST)
        srv.add("bare.test", dns.TYPE_A, "192.0.2.77")        # exists, publishes nothing else
        for qtype in (dns.TYPE_MX, dns.TYPE_TXT):
            srv.behaviour[("sf.test", qtype)] = "servfail"
        srv.add("sf.test", dns.TYPE_A, "192.0.2.78")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def check(self, domain, *extra):
        p = subprocess.run([PY, "mailsrv.py", "dns", "check", domain, "--dns-server", self.server,
                            "--hostname", HOST, "--data", self.tmp.name, *extra],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode().splitlines(), p.stderr.decode()

    def test_all_required_ok(self):
        rc, out, err = self.check("good.test")
        self.assertEqual((rc, err), (0, ""), out)
        self.assertEqual(out[0], "good.test served by mail.good.test: status, record, what DNS has now "
                                 "(publish: the line to add)")
        self.assertEqual(out[1], "ok               MX good.test (RFC 5321 §5.1): 10 mail.good.test")
        self.assertIn("ok               A mail.good.test (RFC 5321 §5.1): 192.0.2.10", out)
        self.assertIn("ok               PTR 192.0.2.10 (RFC 8601 §3 iprev): mail.good.test", out)
        self.assertTrue(any(s.startswith("ok               DKIM s1._domainkey.good.test") for s in out), out)
        self.assertTrue(any(s.startswith("optional-missing MTA-STS") for s in out), out)
        self.assertEqual(out[-1], "all required records are ok")

    def test_given_address_that_dns_lacks(self):
        rc, out, _ = self.check("good.test", "--ip", "192.0.2.10", "--ip", "2001:db8::10")
        self.assertEqual(rc, 1)
        i = out.index("missing          AAAA mail.good.test (RFC 5321 §5.1): no AAAA records")
        self.assertEqual(out[i + 1].strip(), "publish: mail.good.test. IN AAAA 2001:db8::10")
        self.assertIn("missing          PTR 2001:db8::10 (RFC 8601 §3 iprev): no PTR record", out)

    def test_bare_domain_lists_what_to_publish(self):
        rc, out, err = self.check("bare.test")
        self.assertEqual((rc, err), (1, ""))
        published = [s.strip()[len("publish: "):] for s in out if s.strip().startswith("publish: ")]
        self.assertIn("bare.test. IN MX 10 mail.good.test.", published)
        self.assertIn('bare.test. IN TXT "v=spf1 mx -all"', published)
        self.assertIn('_dmarc.bare.test. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@bare.test"',
                      published)
        self.assertIn("(run: mailsrv.py dkim keygen bare.test, then publish the record it prints)", published)

    def test_servfail_is_one_line_naming_the_server(self):
        rc, out, err = self.check("sf.test")
        self.assertEqual((rc, err), (1, ""))
        self.assertIn("error            MX sf.test (RFC 5321 §5.1): sf.test MX: SERVFAIL from %s" % self.server, out)
        self.assertIn("error            SPF sf.test (RFC 7208 §4.5): sf.test TXT: SERVFAIL from %s" % self.server,
                      out)

    def test_bad_arguments_are_one_line(self):
        rc, out, err = self.check("good.test", "--ip", "not-an-ip")
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("not-an-ip", err)


if __name__ == "__main__":
    unittest.main()
