"""`python3 mailsrv.py dns TYPE NAME --dns-server 127.0.0.1:PORT`, run for real
against tests/dnsfake.py: what DNS said, in DNS terms (RFC 1035 §4.1.1 RCODE
names, "timeout", "no records", RFC 7505 null MX), naming the server, for
every type (issue 8, "The command line")."""

import re
import socket
import subprocess
import sys
import tempfile
import unittest

from protocols.dns import codec as dns
from tests.dnsfake import FakeDnsServer
from tests.helpers import ROOT

PY = sys.executable


class DnsCommandTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = FakeDnsServer().start()
        cls.server = "%s:%d" % cls.srv.address
        srv = cls.srv
        srv.add("ok.test", dns.TYPE_MX, dns.MX(10, "mx.ok.test"))
        srv.add("mx.ok.test", dns.TYPE_A, "127.0.0.9")
        srv.add("mx.ok.test", dns.TYPE_AAAA, "::9")
        srv.add("null.test", dns.TYPE_MX, dns.MX(0, ""))
        srv.add("nomail.test", dns.TYPE_TXT, b"\x02hi")     # exists, no MX, no A: implicit MX fails
        for name in ("sf.test", "ref.test"):
            srv.add(name, dns.TYPE_A, "192.0.2.1")
        for qtype in (dns.TYPE_A, dns.TYPE_MX, dns.TYPE_AAAA):
            srv.behaviour[("sf.test", qtype)] = "servfail"
            srv.behaviour[("ref.test", qtype)] = "refused"
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def dns(self, qtype, name, server=None):
        p = subprocess.run([PY, "mailsrv.py", "dns", qtype, name, "--dns-server", server or self.server,
                            "--data", self.tmp.name],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode().splitlines()

    def test_answers_are_listed(self):
        self.assertEqual(self.dns("MX", "ok.test"), (0, ["10 mx.ok.test 127.0.0.9 ::9"]))
        self.assertEqual(self.dns("A", "mx.ok.test"), (0, ["127.0.0.9"]))

    def test_nxdomain_is_said_alike_for_mx_and_a_with_the_server(self):
        for qtype in ("MX", "A", "AAAA"):
            rc, out = self.dns(qtype, "nosuch.test")
            self.assertEqual(rc, 1)
            self.assertEqual(out, ["nosuch.test %s: NXDOMAIN: nosuch.test does not exist (from %s)"
                                   % (qtype, self.server)])

    def test_servfail_and_refused_name_the_server(self):
        for qtype in ("MX", "A"):
            self.assertEqual(self.dns(qtype, "sf.test"), (1, ["sf.test %s: SERVFAIL from %s" % (qtype, self.server)]))
            self.assertEqual(self.dns(qtype, "ref.test"), (1, ["ref.test %s: REFUSED from %s" % (qtype, self.server)]))

    def test_no_records(self):
        self.assertEqual(self.dns("AAAA", "nomail.test"),
                         (1, ["nomail.test AAAA: no records: nomail.test has no AAAA records (from %s)" % self.server]))
        rc, out = self.dns("MX", "nomail.test")
        self.assertEqual(rc, 1)
        self.assertRegex(out[0], r"^nomail\.test MX: no MX records, and no address for the domain itself: "
                                 r"nomail\.test A: no records: nomail\.test has no A records \(from ")

    def test_null_mx(self):
        self.assertEqual(self.dns("MX", "null.test"), (1, ["null.test MX: null MX (RFC 7505): null.test accepts no mail"]))

    def test_unreachable_server_is_a_named_timeout(self):
        # The resolver's default timeouts (5 s x 2 tries): both commands at once.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:   # bound, never answers
            hole.bind(("127.0.0.1", 0))
            server = "127.0.0.1:%d" % hole.getsockname()[1]
            procs = {qtype: subprocess.Popen([PY, "mailsrv.py", "dns", qtype, "ok.test", "--dns-server", server,
                                              "--data", self.tmp.name], cwd=ROOT,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for qtype in ("MX", "A")}
            for qtype, proc in procs.items():
                out, _ = proc.communicate(timeout=60)
                self.assertEqual(proc.returncode, 1)
                self.assertRegex(out.decode().strip(), r"^ok\.test %s: timeout: no reply from %s within [\d.]+ s$"
                                 % (qtype, re.escape(server)))


if __name__ == "__main__":
    unittest.main()
