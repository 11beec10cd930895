"""`python3 mailsrv.py dns SPF|TXT|PTR ...` run for real against tests/dnsfake.py."""

import subprocess
import sys
import tempfile
import unittest

from protocols.dns import codec as dns
from tests.dnsfake import FakeDnsServer
from tests.helpers import ROOT

PY = sys.executable


class SpfCommandTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = srv = FakeDnsServer().start()
        cls.server = "%s:%d" % cls.srv.address
        srv.add("spf.test", dns.TYPE_TXT, (b"v=spf1 ip4:192.0.2.0/24 ", b"-all exp=why.spf.test"))
        srv.add("why.spf.test", dns.TYPE_TXT, (b"%{i} may not send for %{d} (helo %{h})",))
        srv.add("1.2.0.192.in-addr.arpa", dns.TYPE_PTR, "mail.spf.test")
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def run_cli(self, *args):
        p = subprocess.run([PY, "mailsrv.py", "dns", *args, "--dns-server", self.server, "--data", self.tmp.name,
                            "--hostname", "mx.receiver.test"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_pass(self):
        rc, out, _ = self.run_cli("spf", "spf.test", "192.0.2.7", "--sender", "joe@spf.test")
        self.assertEqual(rc, 0)
        lines = out.splitlines()
        self.assertEqual(lines[:2], ["spf.test SPF for 192.0.2.7: pass", "mechanism: ip4:192.0.2.0/24"])
        self.assertTrue(lines[2].startswith("Received-SPF: pass (mx.receiver.test: domain of joe@spf.test"), out)

    def test_fail_prints_the_explanation(self):
        rc, out, _ = self.run_cli("SPF", "spf.test", "198.51.100.1", "--helo", "bad.example")
        self.assertEqual(rc, 0)
        self.assertIn("spf.test SPF for 198.51.100.1: fail\n", out)
        self.assertIn("explanation: 198.51.100.1 may not send for spf.test (helo bad.example)\n", out)

    def test_none_and_bad_ip(self):
        rc, out, _ = self.run_cli("spf", "nothing.test", "192.0.2.1")
        self.assertEqual((rc, out.splitlines()[0]), (0, "nothing.test SPF for 192.0.2.1: none"))
        rc, out, err = self.run_cli("spf", "spf.test", "nonsense")
        self.assertNotEqual(rc, 0)
        self.assertIn("IP address", err)

    def test_spf_options_only_with_spf(self):
        rc, _, err = self.run_cli("MX", "spf.test", "192.0.2.1")
        self.assertEqual((rc, err.strip()), (2, "mailsrv: dns MX takes one name; an IP address, --sender and "
                                                "--helo are for dns SPF"))

    def test_txt_and_ptr(self):
        rc, out, _ = self.run_cli("TXT", "spf.test")
        self.assertEqual((rc, out), (0, '"v=spf1 ip4:192.0.2.0/24 " "-all exp=why.spf.test"\n'))
        rc, out, _ = self.run_cli("PTR", "192.0.2.1")
        self.assertEqual((rc, out), (0, "mail.spf.test\n"))


if __name__ == "__main__":
    unittest.main()
