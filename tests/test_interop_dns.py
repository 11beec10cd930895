"""Our resolver against a real DNS server: Debian's dnsmasq serving a test zone.

Two ways in: the `python3 mailsrv.py dns TYPE NAME --dns-server 127.0.0.1:PORT`
command in a subprocess, and ``protocols.dns.resolver.Resolver`` driven by a
``protocols.loop.EventLoop`` in this process.  The zone covers RFC 5321 §5.1
MX selection (two MX hosts ordered by preference; the implicit MX of a domain
with only an A record), RFC 7505 null MX (556 5.1.10), NXDOMAIN (RFC 1035
§4.1.1 RCODE 3), a CNAME to an A record (RFC 1034 §3.6.2), and an MX RRset
too big for a 512-octet UDP reply (RFC 1035 §2.3.4), which dnsmasq truncates
(TC, RFC 1035 §4.1.1) so that the resolver must ask again over TCP
(RFC 7766 §5).

dnsmasq runs as a throwaway on a free high port of 127.0.0.1, and is polled
with real queries until it answers.  The tests skip, saying why, when
/usr/sbin/dnsmasq is missing or MAILSRV_SKIP_INTEROP is set.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from protocols.dns import codec as dns
from protocols.dns.mx import MAX_MX_ADDRESSES, NO_DOMAIN, NULL_MX
from protocols.dns.resolver import Answer, DnsError, Resolver
from protocols.loop import EventLoop
from tests.helpers import ROOT

PY = sys.executable
DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
BIG_MX = 30          # 30 MX RRs (~900 octets) exceed the 512 of RFC 1035 §2.3.4, yet fit in 1232 (EDNS, RFC 6891)
READY_NAME = "ready.test"


def skip_reason():
    """Why the dnsmasq tests cannot run here, or None."""
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    if DNSMASQ is None:
        return "dnsmasq is not installed (apt-get install dnsmasq-base)"
    return None


def free_udp_tcp_port(host="127.0.0.1"):
    """A port that is free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free UDP+TCP port pair")


def zone_args(records):
    """dnsmasq flags for a zone given as (kind, ...) tuples:
    ("mx", domain, host, pref), ("a", name, address...), ("cname", alias, target), ("raw", flag)."""
    out = []
    for rec in records:
        if rec[0] == "mx":
            out.append("--mx-host=%s,%s,%d" % rec[1:])
        elif rec[0] == "a":
            out.append("--host-record=" + ",".join(rec[1:]))
        elif rec[0] == "cname":
            out.append("--cname=%s,%s" % rec[1:])
        elif rec[0] == "raw":           # any other dnsmasq flag (--txt-record, --ptr-record...)
            out.append(rec[1])
    return out


class Dnsmasq:
    """A dnsmasq on 127.0.0.1:<free port>, authoritative-only for ``.test``
    (``--local=/test/``: unknown names under test. get NXDOMAIN, nothing is
    forwarded), with a TTL of 60 s (dnsmasq's default for its own records is 0,
    "do not cache", RFC 1035 §3.2.1).  Every query is logged (``--log-queries``) to ``log_path``."""

    def __init__(self, records, host="127.0.0.1"):
        self.host = host
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-dnsmasq-")
        self.log_path = os.path.join(self.tmp, "dnsmasq.log")
        self.records = list(records) + [("a", READY_NAME, "127.0.0.9")]
        self.proc = None
        self.port = None

    def start(self, timeout=10.0):
        for _ in range(3):      # another process may grab the port between our probe and dnsmasq's bind
            self.port = free_udp_tcp_port(self.host)
            args = [DNSMASQ, "--no-daemon", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                    "--conf-file=/dev/null", "--listen-address=" + self.host, "--bind-interfaces",
                    "--port=%d" % self.port, "--local=/test/", "--log-queries", "--log-facility=-",
                    "--pid-file=", "--local-ttl=60", *zone_args(self.records)]
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise AssertionError("dnsmasq did not start: " + self.log())

    def _wait_ready(self, timeout):
        """Poll with a real UDP query until dnsmasq answers it (bounded)."""
        deadline = time.monotonic() + timeout
        query = dns.encode_query(READY_NAME, dns.TYPE_A, 0x4242)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    s.sendto(query, (self.host, self.port))
                    data, _ = s.recvfrom(4096)
                except OSError:     # timeout, or ICMP port unreachable before it binds
                    continue
                msg = dns.decode_message(data)
                if msg.id == 0x4242 and msg.answers:
                    return True
        return False

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def query_count(self, qtype, name):
        """How often dnsmasq received ``qtype name`` (over UDP or TCP)."""
        return sum(1 for line in self.log().splitlines() if "query[%s] %s from " % (qtype, name) in line)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


ZONE = [
    ("mx", "two.test", "mx-b.two.test", 20),      # listed first on purpose: order comes from preference
    ("mx", "two.test", "mx-a.two.test", 10),
    ("a", "mx-a.two.test", "127.0.0.3"),
    ("a", "mx-b.two.test", "127.0.0.4"),
    ("a", "implicit.test", "127.0.0.5"),          # A only: implicit MX (RFC 5321 §5.1)
    ("a", "dual.test", "127.0.0.6", "2001:db8::6"),
    ("mx", "null.test", ".", 0),                  # RFC 7505 §3: "0 ."
    ("cname", "alias.test", "implicit.test"),
    ("cname", "c1.test", "c2.test"),              # a two-link chain
    ("cname", "c2.test", "c3.test"),
    ("a", "c3.test", "127.0.0.7"),
    ("mx", "cn.test", "alias.test", 5),           # an MX exchange that is a CNAME (RFC 2181 §10.3)
] + [("mx", "big.test", "mx%d.big.test" % i, i) for i in range(1, BIG_MX + 1)] \
  + [("a", "mx%d.big.test" % i, "127.0.1.%d" % i) for i in range(1, BIG_MX + 1)]


class DnsmasqTestCase(unittest.TestCase):
    """One dnsmasq per test class, serving ZONE."""

    @classmethod
    def setUpClass(cls):
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.dnsmasq = Dnsmasq(ZONE).start()

    @classmethod
    def tearDownClass(cls):
        cls.dnsmasq.close()


class CliAgainstDnsmasq(DnsmasqTestCase):
    """`python3 mailsrv.py dns ...` prints what the resolver found."""

    def dns(self, qtype, name):
        p = subprocess.run([PY, "mailsrv.py", "dns", qtype, name, "--dns-server", self.dnsmasq.address],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stdout.decode().splitlines()

    def test_mx_hosts_in_preference_order(self):
        # RFC 5321 §5.1: lower preference first, with the addresses of each host
        self.assertEqual(self.dns("MX", "two.test"), (0, ["10 mx-a.two.test 127.0.0.3", "20 mx-b.two.test 127.0.0.4"]))

    def test_domain_with_only_an_a_record_is_its_own_implicit_mx(self):
        self.assertEqual(self.dns("MX", "implicit.test"), (0, ["0 implicit.test 127.0.0.5  (implicit MX)"]))

    def test_null_mx_is_said_in_dns_terms(self):
        # RFC 7505 §3: a single MX of preference 0 with the root as exchange
        self.assertEqual(self.dns("MX", "null.test"), (1, ["null.test MX: null MX (RFC 7505): null.test accepts no mail"]))

    def test_nxdomain(self):
        # the same words for every type, naming the server (issue 8)
        for qtype in ("MX", "A"):
            self.assertEqual(self.dns(qtype, "nosuch.test"), (1, ["nosuch.test %s: NXDOMAIN: nosuch.test does not exist "
                                                                  "(from %s)" % (qtype, self.dnsmasq.address)]))

    def test_cname_is_followed_to_the_a_record(self):
        self.assertEqual(self.dns("A", "alias.test"), (0, ["127.0.0.5"]))

    def test_names_are_case_insensitive(self):
        # RFC 4343 §3 / RFC 1035 §2.3.3: "Two.TEST" is two.test
        self.assertEqual(self.dns("MX", "Two.TEST"), (0, ["10 mx-a.two.test 127.0.0.3", "20 mx-b.two.test 127.0.0.4"]))
        self.assertEqual(self.dns("A", "ALIAS.test"), (0, ["127.0.0.5"]))

    def test_cname_chain(self):
        self.assertEqual(self.dns("A", "c1.test"), (0, ["127.0.0.7"]))

    def test_aaaa(self):
        self.assertEqual(self.dns("AAAA", "dual.test"), (0, ["2001:db8::6"]))
        self.assertEqual(self.dns("A", "dual.test"), (0, ["127.0.0.6"]))

    def test_mx_too_big_for_udp_is_fetched_over_tcp(self):
        before = self.dnsmasq.query_count("MX", "big.test")
        rc, out = self.dns("MX", "big.test")
        self.assertEqual(rc, 0)
        # only the first MAX_MX_ADDRESSES addresses are kept (Postfix smtp_mx_address_limit)
        self.assertEqual(out, ["%d mx%d.big.test 127.0.1.%d" % (i, i, i) for i in range(1, MAX_MX_ADDRESSES + 1)])
        # The truncated UDP reply (TC) made the resolver ask the same question again over TCP
        # (RFC 7766 §5): dnsmasq saw it twice, where an answer that fits in UDP is asked once.
        self.assertEqual(self.dnsmasq.query_count("MX", "big.test") - before, 2, self.dnsmasq.log()[-3000:])
        before_two = self.dnsmasq.query_count("MX", "two.test")
        self.dns("MX", "two.test")
        self.assertEqual(self.dnsmasq.query_count("MX", "two.test") - before_two, 1)


class _RecordingLoop(EventLoop):
    """An EventLoop that remembers where ``connect`` went (the resolver's TCP queries)."""

    def __init__(self):
        super().__init__()
        self.connects = []

    def connect(self, host, port, *args, **kwargs):
        self.connects.append((host, port))
        return super().connect(host, port, *args, **kwargs)


class ResolverAgainstDnsmasq(DnsmasqTestCase):
    """protocols.dns.resolver.Resolver on a real EventLoop in this process."""

    def setUp(self):
        self.loop = _RecordingLoop()
        self.addCleanup(self.loop.close)
        self.resolver = Resolver(self.loop, [("127.0.0.1", self.dnsmasq.port)], timeout=3, attempts=2)

    def run_lookup(self, start, timeout=15.0):
        """Run the loop until the lookup calls back (bounded by ``timeout``)."""
        out = []

        def done(result):
            out.append(result)
            self.loop.stop()
        guard = self.loop.call_later(timeout, self.loop.stop)
        start(done)
        self.loop.run()
        guard.cancel()
        self.assertEqual(len(out), 1, "no answer within %ss" % timeout)
        return out[0]

    def resolve(self, name, qtype):
        return self.run_lookup(lambda done: self.resolver.resolve(name, qtype, done))

    def mx_hosts(self, domain):
        return self.run_lookup(lambda done: self.resolver.lookup_mx_hosts(domain, done))

    def test_mx_records(self):
        res = self.resolve("two.test", dns.TYPE_MX)
        self.assertIsInstance(res, Answer)
        self.assertEqual(sorted((mx.preference, mx.exchange) for mx in res.records),
                         [(10, "mx-a.two.test"), (20, "mx-b.two.test")])
        self.assertEqual(self.loop.connects, [])     # fits in UDP: no TCP

    def test_mx_hosts_ordered_with_addresses(self):
        res = self.mx_hosts("two.test")
        self.assertTrue(res.ok)
        self.assertFalse(res.implicit)
        self.assertEqual([(h.preference, h.host, h.addresses) for h in res.hosts],
                         [(10, "mx-a.two.test", ["127.0.0.3"]), (20, "mx-b.two.test", ["127.0.0.4"])])

    def test_implicit_mx(self):
        res = self.mx_hosts("implicit.test")
        self.assertTrue(res.implicit)
        self.assertEqual([(h.preference, h.host, h.addresses) for h in res.hosts], [(0, "implicit.test", ["127.0.0.5"])])

    def test_null_mx(self):
        res = self.mx_hosts("null.test")
        self.assertEqual(res.reply, NULL_MX)
        self.assertEqual(res.reply[:2], (556, "5.1.10"))
        self.assertTrue(res.permanent)

    def test_nxdomain(self):
        res = self.resolve("nosuch.test", dns.TYPE_A)
        self.assertIsInstance(res, DnsError)
        self.assertEqual(res.kind, "nxdomain")
        mx = self.mx_hosts("nosuch.test")
        self.assertEqual(mx.reply, NO_DOMAIN)
        self.assertTrue(mx.permanent)

    def test_nodata(self):
        # RFC 2308 §2.2: the name exists, the type does not
        res = self.resolve("implicit.test", dns.TYPE_AAAA)
        self.assertIsInstance(res, DnsError)
        self.assertEqual(res.kind, "nodata")

    def test_cname_to_a(self):
        res = self.resolve("alias.test", dns.TYPE_A)
        self.assertIsInstance(res, Answer)
        self.assertEqual((res.records, res.name), (["127.0.0.5"], "implicit.test"))

    def test_truncated_udp_answer_is_asked_again_over_tcp(self):
        res = self.resolve("big.test", dns.TYPE_MX)
        self.assertIsInstance(res, Answer)
        self.assertEqual(sorted((mx.preference, mx.exchange) for mx in res.records),
                         [(i, "mx%d.big.test" % i) for i in range(1, BIG_MX + 1)])
        # RFC 7766 §5: exactly one TCP connection, to the server that sent TC
        self.assertEqual(self.loop.connects, [("127.0.0.1", self.dnsmasq.port)])

    def test_two_link_cname_chain(self):
        res = self.resolve("c1.test", dns.TYPE_A)
        self.assertEqual((res.records, res.name), (["127.0.0.7"], "c3.test"))

    def test_mx_exchange_that_is_a_cname_is_followed(self):
        # RFC 2181 §10.3 forbids it; MxLookup follows it anyway (see its docstring)
        res = self.mx_hosts("cn.test")
        self.assertEqual([(h.preference, h.host, h.addresses) for h in res.hosts], [(5, "alias.test", ["127.0.0.5"])])

    def test_edns0_lets_the_big_answer_come_over_udp(self):
        # RFC 6891 §6.2.3/§6.2.5: with an OPT RR advertising 4096 octets no TCP retry is needed
        resolver = Resolver(self.loop, [("127.0.0.1", self.dnsmasq.port)], timeout=3, edns_payload=4096)
        res = self.run_lookup(lambda done: resolver.resolve("big.test", dns.TYPE_MX, done))
        self.assertEqual(len(res.records), BIG_MX)
        self.assertEqual(self.loop.connects, [])

    def test_cached_answer_needs_no_second_query(self):
        # RFC 2181 §5.2 / RFC 1035 §7.4: positive answers are cached for their TTL
        before = self.dnsmasq.query_count("A", "dual.test")
        first = self.resolve("dual.test", dns.TYPE_A)
        second = self.resolve("dual.test", dns.TYPE_A)
        self.assertEqual((first.records, second.records), (["127.0.0.6"], ["127.0.0.6"]))
        self.assertEqual(self.resolver.queries_sent, 1)
        self.assertEqual(self.dnsmasq.query_count("A", "dual.test") - before, 1)


if __name__ == "__main__":
    unittest.main()
