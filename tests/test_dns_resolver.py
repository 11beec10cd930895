"""Tests for protocols/dns/resolver.py over the real EventLoop and tests/dnsfake.py
(127.0.0.1 only; every wait is bounded by a loop timer, never a sleep)."""

import os
import random
import unittest

from protocols.dns import codec as dns
from protocols.dns.codec import MX, Message, Question, Record
from protocols.dns.mx import (LOOPS_BACK, MAX_MX_ADDRESSES, MAX_MX_HOSTS, NO_ADDRESS, NO_DOMAIN, NULL_MX,
                              TEMP_FAIL, MxHost)
from protocols.dns.resolver import (MAX_WAITING, Answer, DnsError, Resolver, TcpQuerySession, _address_family,
                                    _same_address, interpret, parse_resolv_conf)
from protocols.loop import EventLoop
from tests.dnsfake import FakeDnsServer

GUARD = 10.0  # seconds: no test waits longer than this, even when broken
SLACK_FDS = 2  # descriptors besides the queries' sockets: a TCP socket closing, the sampler's listdir


class ReverseRng:
    """A deterministic stand-in for random.shuffle: reverses the list."""

    def shuffle(self, items):
        items.reverse()


class LoopTestCase(unittest.TestCase):
    def setUp(self):
        self.srv = FakeDnsServer().start()
        self.addCleanup(self.srv.stop)
        self.loop = EventLoop()
        self.addCleanup(self.loop.close)
        self.now = [1000.0]
        self.resolver = self.make_resolver()

    def make_resolver(self, servers=None, **kw):
        kw.setdefault("timeout", 2.0)
        kw.setdefault("attempts", 1)
        kw.setdefault("clock", lambda: self.now[0])
        kw.setdefault("rng", ReverseRng())
        return Resolver(self.loop, servers or [self.srv.address], **kw)

    def wait(self, start):
        """Run the loop until ``start(done)`` delivers one result."""
        results = []

        def done(result):
            results.append(result)
            self.loop.stop()

        start(done)
        guard = self.loop.call_later(GUARD, self.loop.stop)
        self.loop.run()
        guard.cancel()
        self.assertEqual(len(results), 1, "no result within the guard time")
        return results[0]

    def resolve(self, name, qtype, resolver=None):
        return self.wait(lambda done: (resolver or self.resolver).resolve(name, qtype, done))

    def mx(self, domain, local_names=frozenset(), resolver=None):
        return self.wait(lambda done: (resolver or self.resolver).lookup_mx_hosts(domain, done, local_names))


class ResolveTest(LoopTestCase):
    def test_a_and_aaaa(self):
        self.srv.add("host.test", dns.TYPE_A, "192.0.2.1", ttl=60)
        self.srv.add("host.test", dns.TYPE_A, "192.0.2.2", ttl=30)
        self.srv.add("host.test", dns.TYPE_AAAA, "2001:db8::1")
        self.assertEqual(self.resolve("HOST.test.", dns.TYPE_A), Answer(["192.0.2.1", "192.0.2.2"], 30, "host.test"))
        self.assertEqual(self.resolve("host.test", dns.TYPE_AAAA).records, ["2001:db8::1"])

    def test_nxdomain_is_permanent(self):
        result = self.resolve("nowhere.test", dns.TYPE_A)
        self.assertIsInstance(result, DnsError)
        self.assertEqual(result.kind, "nxdomain")

    def test_nodata(self):
        self.srv.add("host.test", dns.TYPE_A, "192.0.2.1")
        self.assertEqual(self.resolve("host.test", dns.TYPE_MX).kind, "nodata")

    def test_cname_chain_in_one_reply(self):
        self.srv.add("www.test", dns.TYPE_CNAME, "web.test", ttl=40)
        self.srv.add("web.test", dns.TYPE_CNAME, "real.test")
        self.srv.add("real.test", dns.TYPE_A, "192.0.2.7")
        self.assertEqual(self.resolve("www.test", dns.TYPE_A), Answer(["192.0.2.7"], 40, "real.test"))
        self.assertEqual(self.srv.count("real.test", dns.TYPE_A), 0)

    def test_cname_target_asked_again_when_the_reply_stops_at_the_alias(self):
        self.srv.chase_cnames = False
        self.srv.add("www.test", dns.TYPE_CNAME, "real.test")
        self.srv.add("real.test", dns.TYPE_A, "192.0.2.7")
        self.assertEqual(self.resolve("www.test", dns.TYPE_A), Answer(["192.0.2.7"], 300, "real.test"))
        self.assertEqual(self.srv.count("real.test", dns.TYPE_A), 1)

    def test_cached_ttl_is_capped_by_the_cname_ttl(self):
        # The alias may not outlive its own TTL (RFC 1034 §3.6.2 chains, each link with its TTL).
        self.srv.chase_cnames = False
        self.srv.add("www.test", dns.TYPE_CNAME, "real.test", ttl=10)
        self.srv.add("real.test", dns.TYPE_A, "192.0.2.7", ttl=300)
        self.assertEqual(self.resolve("www.test", dns.TYPE_A).ttl, 10)
        self.now[0] += 11
        self.resolve("www.test", dns.TYPE_A)
        self.assertEqual(self.srv.count("www.test", dns.TYPE_A), 2)

    def test_cname_loop_is_bounded(self):
        self.srv.chase_cnames = False
        self.srv.add("a.test", dns.TYPE_CNAME, "b.test")
        self.srv.add("b.test", dns.TYPE_CNAME, "a.test")
        result = self.resolve("a.test", dns.TYPE_A)
        self.assertEqual(result.kind, "temporary")
        self.assertLessEqual(self.srv.count("a.test", dns.TYPE_A) + self.srv.count("b.test", dns.TYPE_A), 9)

    def test_truncated_reply_is_retried_over_tcp(self):
        for i in range(40):
            self.srv.add("big.test", dns.TYPE_A, "192.0.2.%d" % i)
        self.srv.behaviour[("big.test", dns.TYPE_A)] = "truncate"
        result = self.resolve("big.test", dns.TYPE_A)
        self.assertEqual(len(result.records), 40)
        self.assertEqual([p for p, n, _ in self.srv.queries if n == "big.test"], ["udp", "tcp"])

    def test_tcp_closed_without_answer_is_temporary(self):
        self.srv.add("big.test", dns.TYPE_A, "192.0.2.1")
        self.srv.behaviour[("big.test", dns.TYPE_A)] = "truncate-tcpdrop"
        result = self.resolve("big.test", dns.TYPE_A)
        self.assertEqual(result.kind, "temporary")
        self.assertEqual([p for p, n, _ in self.srv.queries if n == "big.test"], ["udp", "tcp"])

    def test_formerr_to_edns_retries_without_it(self):
        # RFC 6891 §7: a responder that does not know EDNS answers FORMERR.
        self.srv.add("old.test", dns.TYPE_A, "192.0.2.4")
        self.srv.behaviour[("old.test", dns.TYPE_A)] = "formerr-edns"
        resolver = self.make_resolver(edns_payload=dns.EDNS_PAYLOAD)
        self.assertEqual(self.resolve("old.test", dns.TYPE_A, resolver).records, ["192.0.2.4"])
        self.assertEqual(self.srv.count("old.test", dns.TYPE_A), 2)

    def test_ipv6_server(self):
        try:
            srv6 = FakeDnsServer("::1").start()
        except OSError:
            self.skipTest("no IPv6 loopback")
        self.addCleanup(srv6.stop)
        srv6.add("six.test", dns.TYPE_AAAA, "2001:db8::6")
        resolver = self.make_resolver([srv6.address])
        self.assertEqual(self.resolve("six.test", dns.TYPE_AAAA, resolver).records, ["2001:db8::6"])

    def test_servfail_is_temporary(self):
        self.srv.behaviour[("sf.test", dns.TYPE_A)] = "servfail"
        self.assertEqual(self.resolve("sf.test", dns.TYPE_A).kind, "temporary")

    def test_refused_is_temporary(self):
        self.srv.behaviour[("rf.test", dns.TYPE_A)] = "refused"
        self.assertEqual(self.resolve("rf.test", dns.TYPE_A).kind, "temporary")

    def test_servfail_then_next_server_answers(self):
        other = FakeDnsServer().start()
        self.addCleanup(other.stop)
        self.srv.behaviour[("x.test", dns.TYPE_A)] = "servfail"
        other.add("x.test", dns.TYPE_A, "192.0.2.9")
        resolver = self.make_resolver([self.srv.address, other.address])
        self.assertEqual(self.resolve("x.test", dns.TYPE_A, resolver).records, ["192.0.2.9"])

    def test_timeout_is_temporary_after_all_attempts(self):
        self.srv.behaviour[("slow.test", dns.TYPE_A)] = "drop"
        resolver = self.make_resolver(timeout=0.2, attempts=2)
        result = self.resolve("slow.test", dns.TYPE_A, resolver)
        self.assertEqual(result.kind, "temporary")
        self.assertIn("timeout: no reply from 127.0.0.1:", result.message)
        self.assertEqual(self.srv.count("slow.test", dns.TYPE_A), 2)

    def test_invalid_name(self):
        self.assertEqual(self.resolve("a..test", dns.TYPE_A).kind, "nxdomain")
        self.assertEqual(self.srv.queries, [])

    def test_edns_query_is_answered(self):
        self.srv.add("host.test", dns.TYPE_A, "192.0.2.1")
        resolver = self.make_resolver(edns_payload=dns.EDNS_PAYLOAD)
        self.assertEqual(self.resolve("host.test", dns.TYPE_A, resolver).records, ["192.0.2.1"])


class ForgeryTest(LoopTestCase):
    """RFC 5452 §9.1: forged replies arrive first and must be ignored."""

    def check(self, how):
        self.srv.add("bank.test", dns.TYPE_A, "192.0.2.10")
        self.srv.behaviour[("bank.test", dns.TYPE_A)] = how
        self.assertEqual(self.resolve("bank.test", dns.TYPE_A).records, ["192.0.2.10"])

    def test_wrong_id_ignored(self):
        self.check("spoof-id")

    def test_reply_from_another_port_ignored(self):
        self.check("spoof-port")

    def test_reply_for_another_name_ignored(self):
        self.check("spoof-name")

    def test_malformed_datagram_ignored(self):
        self.check("spoof-garbage")

    def test_ids_and_source_ports_vary(self):
        # RFC 5452 §9.2: unpredictable ID and source port for every query.
        for i in range(12):
            self.srv.add("h%d.test" % i, dns.TYPE_A, "192.0.2.1")
            self.resolve("h%d.test" % i, dns.TYPE_A)
        ids = [qid for qid, _ in self.srv.udp_origins]
        ports = [port for _, port in self.srv.udp_origins]
        self.assertEqual(len(ids), 12)
        self.assertGreater(len(set(ids)), 6)
        self.assertGreater(len(set(ports)), 6)

    def test_address_family_comes_from_the_loop(self):
        self.assertEqual(_address_family(self.loop, "::1"), EventLoop.AF_INET6)
        self.assertEqual(_address_family(self.loop, "127.0.0.1"), EventLoop.AF_INET)

    def test_same_address(self):
        self.assertTrue(_same_address(("127.0.0.1", 53), ("127.0.0.1", 53)))
        self.assertTrue(_same_address(("::1", 53, 0, 0), ("0:0::1", 53)))
        self.assertFalse(_same_address(("127.0.0.2", 53), ("127.0.0.1", 53)))
        self.assertFalse(_same_address(("127.0.0.1", 5353), ("127.0.0.1", 53)))


class CacheTest(LoopTestCase):
    def test_positive_answer_cached_for_its_ttl(self):
        self.srv.add("c.test", dns.TYPE_A, "192.0.2.1", ttl=60)
        self.resolve("c.test", dns.TYPE_A)
        self.now[0] += 59
        self.assertEqual(self.resolve("C.TEST", dns.TYPE_A).records, ["192.0.2.1"])
        self.assertEqual(self.srv.count("c.test", dns.TYPE_A), 1)  # second lookup sent no query
        self.now[0] += 2
        self.resolve("c.test", dns.TYPE_A)
        self.assertEqual(self.srv.count("c.test", dns.TYPE_A), 2)

    def test_cache_hit_is_delivered_later_not_inside_resolve(self):
        self.srv.add("c.test", dns.TYPE_A, "192.0.2.1")
        self.resolve("c.test", dns.TYPE_A)
        got = []
        self.resolver.resolve("c.test", dns.TYPE_A, got.append)
        self.assertEqual(got, [])
        self.resolve("c.test", dns.TYPE_A)
        self.assertEqual(len(got), 1)

    def test_negative_answer_cached_for_soa_minimum(self):
        # RFC 2308 §5: min(SOA MINIMUM = 300, SOA TTL = 60) = 60.
        self.srv.soa_ttl = 60
        self.resolve("gone.test", dns.TYPE_A)
        self.now[0] += 59
        self.assertEqual(self.resolve("gone.test", dns.TYPE_A).kind, "nxdomain")
        self.assertEqual(self.srv.count("gone.test", dns.TYPE_A), 1)
        self.now[0] += 2
        self.resolve("gone.test", dns.TYPE_A)
        self.assertEqual(self.srv.count("gone.test", dns.TYPE_A), 2)

    def test_temporary_failures_are_not_cached(self):
        self.srv.behaviour[("sf.test", dns.TYPE_A)] = "servfail"
        self.resolve("sf.test", dns.TYPE_A)
        self.resolve("sf.test", dns.TYPE_A)
        self.assertEqual(self.srv.count("sf.test", dns.TYPE_A), 2)


class MxTest(LoopTestCase):
    def add_mx(self, domain, *entries):
        for pref, host in entries:
            self.srv.add(domain, dns.TYPE_MX, MX(pref, host))

    def test_ordered_by_preference_with_addresses_ipv4_first(self):
        self.add_mx("example.test", (20, "b.mx.test"), (10, "a.mx.test"), (30, "c.mx.test"))
        self.srv.add("a.mx.test", dns.TYPE_AAAA, "2001:db8::a")
        self.srv.add("a.mx.test", dns.TYPE_A, "192.0.2.1")
        self.srv.add("b.mx.test", dns.TYPE_A, "192.0.2.2")
        self.srv.add("c.mx.test", dns.TYPE_AAAA, "2001:db8::c")
        result = self.mx("example.test")
        self.assertTrue(result.ok)
        self.assertEqual(result.hosts, [MxHost(10, "a.mx.test", ["192.0.2.1", "2001:db8::a"]),
                                        MxHost(20, "b.mx.test", ["192.0.2.2"]),
                                        MxHost(30, "c.mx.test", ["2001:db8::c"])])
        pref, host, addrs = result.hosts[0]  # unpacks as (preference, hostname, [addresses])

    def test_equal_preferences_are_shuffled(self):
        self.add_mx("example.test", (10, "a.test"), (10, "b.test"), (10, "c.test"), (5, "first.test"))
        for host in ("a.test", "b.test", "c.test", "first.test"):
            self.srv.add(host, dns.TYPE_A, "192.0.2.1")
        orders = set()
        for seed in range(40):
            resolver = self.make_resolver(rng=random.Random(seed))
            hosts = [h.host for h in self.mx("example.test", resolver=resolver).hosts]
            self.assertEqual(hosts[0], "first.test")
            self.assertEqual(sorted(hosts[1:]), ["a.test", "b.test", "c.test"])
            orders.add(tuple(hosts))
        self.assertEqual(len(orders), 6)  # every permutation of the three occurs

    def test_implicit_mx(self):
        self.srv.add("plain.test", dns.TYPE_A, "192.0.2.5")
        result = self.mx("plain.test")
        self.assertTrue(result.implicit)
        self.assertEqual(result.hosts, [MxHost(0, "plain.test", ["192.0.2.5"])])

    def test_implicit_mx_without_address_is_permanent(self):
        self.srv.add("txtonly.test", dns.TYPE_TXT, b"\x02hi")
        result = self.mx("txtonly.test")
        self.assertTrue(result.permanent)
        self.assertEqual(result.hosts, [])

    def test_null_mx(self):
        self.add_mx("nomail.test", (0, ""))
        result = self.mx("nomail.test")
        self.assertEqual(result.reply, NULL_MX)
        self.assertEqual(result.reply[:2], (556, "5.1.10"))
        self.assertTrue(result.permanent)

    def test_nxdomain_is_permanent(self):
        result = self.mx("nowhere.test")
        self.assertEqual(result.reply, NO_DOMAIN)
        self.assertTrue(result.permanent)

    def test_servfail_is_temporary(self):
        self.srv.behaviour[("sf.test", dns.TYPE_MX)] = "servfail"
        result = self.mx("sf.test")
        self.assertEqual(result.reply, TEMP_FAIL)
        self.assertFalse(result.permanent)

    def test_mx_host_lookup_temporary_failure(self):
        self.add_mx("example.test", (10, "broken.test"))
        self.srv.behaviour[("broken.test", dns.TYPE_A)] = "servfail"
        self.srv.behaviour[("broken.test", dns.TYPE_AAAA)] = "servfail"
        self.assertEqual(self.mx("example.test").reply, TEMP_FAIL)

    def test_mx_hosts_without_addresses_are_permanent(self):
        self.add_mx("example.test", (10, "ghost.test"))
        self.assertEqual(self.mx("example.test").reply, NO_ADDRESS)

    def test_our_own_mx_drops_it_and_worse(self):
        self.add_mx("example.test", (10, "best.test"), (20, "me.test"), (20, "peer.test"), (30, "worse.test"))
        for host in ("best.test", "me.test", "peer.test", "worse.test"):
            self.srv.add(host, dns.TYPE_A, "192.0.2.1")
        result = self.mx("example.test", local_names=frozenset({"ME.test."}))
        self.assertEqual([h.host for h in result.hosts], ["best.test"])

    def test_mail_loops_back_when_we_are_the_best_mx(self):
        self.add_mx("example.test", (10, "me.test"), (20, "backup.test"))
        result = self.mx("example.test", local_names=frozenset({"me.test"}))
        self.assertEqual(result.reply, LOOPS_BACK)
        self.assertTrue(result.permanent)
        self.assertEqual(self.srv.count("backup.test", dns.TYPE_A), 0)

    def test_mx_found_through_cname(self):
        self.srv.add("alias.test", dns.TYPE_CNAME, "example.test")
        self.add_mx("example.test", (10, "a.test"))
        self.srv.add("a.test", dns.TYPE_A, "192.0.2.3")
        self.assertEqual(self.mx("alias.test").hosts, [MxHost(10, "a.test", ["192.0.2.3"])])


class FanOutTest(LoopTestCase):
    """Issue 7 item 5: a huge MX set must not become thousands of queries and sockets."""

    HOSTS = 1000      # 1,000 MX RRs: ~21 KB, over TCP after TC (RFC 7766 §5)

    def open_fds(self):
        return len(os.listdir("/proc/self/fd"))

    def sample_fds(self, peak):
        """Note the open descriptors every millisecond while the loop runs."""
        def tick():
            peak[0] = max(peak[0], self.open_fds())
            self.loop.call_later(0.001, tick)
        self.loop.call_soon(tick)

    def test_huge_mx_set_over_tcp_looks_up_a_bounded_number_of_hosts(self):
        for i in range(self.HOSTS):
            self.srv.add("big.test", dns.TYPE_MX, MX(i, "h%d.big.test" % i))
            self.srv.add("h%d.big.test" % i, dns.TYPE_A, "192.0.2.%d" % (i % 250 + 1))
            self.srv.add("h%d.big.test" % i, dns.TYPE_AAAA, "2001:db8::%x" % (i + 1))
        self.srv.behaviour[("big.test", dns.TYPE_MX)] = "truncate"
        baseline, peak = self.open_fds(), [0]
        self.sample_fds(peak)
        result = self.mx("big.test")
        self.assertTrue(result.ok)
        self.assertEqual(self.srv.count("big.test", dns.TYPE_MX), 2)      # UDP (TC), then TCP
        address_queries = sum(1 for _, name, qtype in self.srv.queries if qtype in (dns.TYPE_A, dns.TYPE_AAAA))
        self.assertLessEqual(address_queries, 2 * MAX_MX_HOSTS)
        addresses = [a for h in result.hosts for a in h.addresses]
        self.assertEqual(addresses, ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2", "192.0.2.3"])
        self.assertLessEqual(len(addresses), MAX_MX_ADDRESSES)
        self.assertLessEqual(peak[0] - baseline, 2 * MAX_MX_HOSTS + SLACK_FDS)

    def test_queries_in_flight_are_bounded_resolver_wide_and_all_answered(self):
        names = ["n%d.test" % i for i in range(200)]
        for name in names:
            self.srv.add(name, dns.TYPE_A, "192.0.2.7")
        resolver = self.make_resolver(max_in_flight=4)
        baseline, peak, results = self.open_fds(), [0], []
        self.sample_fds(peak)

        def done(result):
            results.append(result)
            if len(results) == len(names):
                self.loop.stop()
        for name in names:
            resolver.resolve(name, dns.TYPE_A, done)
        self.assertLessEqual(resolver.in_flight, 4)
        guard = self.loop.call_later(GUARD, self.loop.stop)
        self.loop.run()
        guard.cancel()
        self.assertEqual([r.records for r in results], [["192.0.2.7"]] * len(names))
        self.assertEqual(resolver.peak_in_flight, 4)
        self.assertEqual((resolver.in_flight, len(resolver._waiting)), (0, 0))
        self.assertLessEqual(peak[0] - baseline, 4 + SLACK_FDS)

    def test_a_full_wait_queue_fails_fast_as_temporary(self):
        self.srv.behaviour[("slow.test", dns.TYPE_A)] = "drop"
        resolver = self.make_resolver(max_in_flight=1)
        resolver.resolve("slow.test", dns.TYPE_A, lambda _result: None)    # holds the one slot
        resolver._waiting.extend([None] * MAX_WAITING)      # as if that many were waiting
        result = self.resolve("x.test", dns.TYPE_A, resolver=resolver)
        resolver._waiting.clear()
        self.assertEqual(result.kind, "temporary")
        self.assertIn("resolver busy", result.message)


class InterpretTest(unittest.TestCase):
    def reply(self, answers=(), rcode=0, authority=()):
        return Message(id=1, qr=True, rcode=rcode, questions=[Question("a.test", 1)],
                       answers=list(answers), authority=list(authority))

    def test_ttl_with_top_bit_is_zero(self):
        # RFC 2181 §8
        result, ttl, _, _ = interpret("a.test", 1, self.reply([Record("a.test", 1, 1, 0x80000001, "192.0.2.1")]))
        self.assertEqual((result.ttl, ttl), (0, 0))

    def test_records_of_other_owners_are_ignored(self):
        result, _, _, _ = interpret("a.test", 1, self.reply([Record("evil.test", 1, 1, 60, "6.6.6.6")]))
        self.assertEqual(result.kind, "nodata")

    def test_negative_without_soa_is_not_cached(self):
        # RFC 2308 §5
        result, ttl, _, _ = interpret("a.test", 1, self.reply(rcode=3))
        self.assertEqual((result.kind, ttl), ("nxdomain", 0))


class TcpSessionTest(unittest.TestCase):
    def test_length_prefix_and_reply_fed_one_byte_at_a_time(self):
        got = []
        s = TcpQuerySession(None, b"QUERY", got.append, 5.0)
        self.assertEqual(s.data_to_send(), b"\x00\x05QUERY")
        self.assertEqual(s.data_to_send(), b"")
        for octet in b"\x00\x03abc":
            s.receive_data(bytes([octet]))
        self.assertEqual(got, [b"abc"])
        self.assertTrue(s.closed)

    def test_eof_and_timeout_report_none_once(self):
        got = []
        s = TcpQuerySession(None, b"Q", got.append, 5.0)
        s.receive_data(b"\x00\x09ab")
        s.receive_data(b"")
        s.timeout()
        self.assertEqual(got, [None])


class ResolvConfTest(unittest.TestCase):
    def test_parse(self):
        text = ("# comment\nsearch example.com\nnameserver 192.0.2.53\n"
                "nameserver 2001:db8::53 # v6\nnameserver not-an-ip\nnameserver fe80::1%eth0\n"
                "options rotate timeout:3 attempts:4 ndots:2\n")
        servers, timeout, attempts = parse_resolv_conf(text)
        self.assertEqual(servers, [("192.0.2.53", 53), ("2001:db8::53", 53), ("fe80::1", 53)])
        self.assertEqual((timeout, attempts), (3.0, 4))

    def test_resolver_from_resolv_conf(self):
        loop = EventLoop()
        self.addCleanup(loop.close)
        r = Resolver.from_resolv_conf(loop, "nameserver 192.0.2.53\noptions timeout:2 attempts:3\n")
        self.assertEqual((r.servers, r.timeout, r.attempts), ([("192.0.2.53", 53)], 2.0, 3))

    def test_defaults_and_caps(self):
        self.assertEqual(parse_resolv_conf(""), ([("127.0.0.1", 53)], 5.0, 2))
        _, timeout, attempts = parse_resolv_conf("options timeout:99 attempts:99\n")
        self.assertEqual((timeout, attempts), (30.0, 5))


if __name__ == "__main__":
    unittest.main()
