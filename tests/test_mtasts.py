"""MTA-STS (RFC 8461) without a network: the TXT record (§3.1), the policy file
(§3.2, strictly), MX matching (§4.1), and the policy cache of
protocols/outbound/mtasts_fetch.py (§3.3, §5.1: id, max_age, refresh, the
five-minute pause after a failed fetch, durability under DATA)."""

import queue as stdqueue
import tempfile
import threading
import unittest

from protocols.dns import codec as dnscodec
from protocols.dns.resolver import Answer, DnsError
from protocols.loop import EventLoop
from protocols.loop_https import HttpsError, HttpsReply
from protocols.outbound import mtasts
from protocols.outbound.mtasts import PolicyError, mx_matches, parse_policy, parse_record
from protocols.outbound.mtasts_fetch import FETCH_RETRY_AFTER, REFRESH_AFTER, StsPolicies
from store.stscache import StsCache

WAIT = 10.0

# RFC 8461 §3.2's example and Appendix A's, as served (CRLF) and with LF only.
RFC_EXAMPLE = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n" \
              b"mx: backupmx.example.com\r\nmax_age: 604800\r\n"
APPENDIX_A = b"version: STSv1\nmode: testing\nmx: mx1.example.com\nmx: mx2.example.com\n" \
             b"mx: mx.backup-example.com\nmax_age: 1296000"


class RecordTest(unittest.TestCase):
    def test_rfc_example_record(self):
        self.assertEqual(parse_record(["v=STSv1; id=20160831085700Z;"]), "20160831085700Z")
        self.assertEqual(parse_record(["v=STSv1;id=abc"]), "abc")
        self.assertEqual(parse_record(["v=spf1 -all", "v=STSv1; id=1; ext=x.y"]), "1")

    def test_bad_records_mean_no_policy(self):
        for texts in ([], ["v=spf1 -all"], ["v=STSv1; id=1", "v=STSv1; id=2"], ["v=STSv1; id=a-b"],
                      ["v=STSv1; id=" + "a" * 33], ["v=STSv1"], ["v=STSv1; id"], ["v=STSv1; x=a=b; id=1"],
                      ["id=1; v=STSv1"]):
            with self.assertRaises(PolicyError, msg=texts):
                parse_record(texts)


class PolicyTest(unittest.TestCase):
    def test_rfc_examples(self):
        p = parse_policy(RFC_EXAMPLE)
        self.assertEqual((p.mode, p.max_age, p.mx), ("enforce", 604800, ["mail.example.com", "*.example.net",
                                                                          "backupmx.example.com"]))
        p = parse_policy(APPENDIX_A)
        self.assertEqual((p.mode, p.max_age, len(p.mx)), ("testing", 1296000, 3))

    def test_tolerated_forms(self):
        # unknown fields ignored, a repeated non-mx field: the first counts (§3.2), *WSP after values
        p = parse_policy(b"version: STSv1\nmode: testing\nmode: enforce\nmx:mx.a.example  \n"
                         b"ext_1: anything goes\nmax_age: 0\n")
        self.assertEqual((p.mode, p.mx, p.max_age), ("testing", ["mx.a.example"], 0))
        self.assertEqual(parse_policy(b"version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n").mx, [])

    def test_bad_policies(self):
        bad = [
            b"", b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            b"mode: enforce\nmx: a.example\nmax_age: 1\n",                       # no version
            b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",      # %s: case-sensitive
            b"version: STSv1\nmode: enforce\nmax_age: 1\n",                     # no mx in enforce
            b"version: STSv1\nmode: testing\nmx: a.example\n",                  # no max_age
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
            b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: mail.*.example\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\ngarbage line\n",
            b"version: STSv1\nmode: enforce\n\nmx: a.example\nmax_age: 1\n",   # an empty line
            b"<html><body>hello</body></html>",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n\xff\n",
        ]
        for body in bad:
            with self.assertRaises(PolicyError, msg=body):
                parse_policy(body)

    def test_served_policy_parses_back(self):
        text = mtasts.policy_text("enforce", ["mx.example.org", "*.example.net"], 86400)
        self.assertEqual(text, b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmx: *.example.net\r\n"
                               b"max_age: 86400\r\n")
        self.assertEqual(parse_policy(text).mx, ["mx.example.org", "*.example.net"])
        self.assertEqual(mtasts.policy_url("Example.ORG."), "https://mta-sts.example.org/.well-known/mta-sts.txt")


class MatchTest(unittest.TestCase):
    def test_section_4_1(self):
        self.assertTrue(mx_matches("*.example.com", "mail.example.com"))
        self.assertTrue(mx_matches("*.example.com", "MAIL.Example.com."))
        self.assertFalse(mx_matches("*.example.com", "example.com"))
        self.assertFalse(mx_matches("*.example.com", "foo.bar.example.com"))
        self.assertTrue(mx_matches("mail.example.com", "Mail.Example.Com"))
        self.assertFalse(mx_matches("mail.example.com", "mail2.example.com"))
        self.assertFalse(mx_matches("mail.example.com", "x.mail.example.com"))


# -- the cache -----------------------------------------------------------------
class FakeResolver:
    def __init__(self, loop):
        self.loop, self.txt, self.asked = loop, {}, []

    def resolve(self, name, qtype, done):
        self.asked.append(name)
        assert qtype == dnscodec.TYPE_TXT
        value = self.txt.get(name)
        result = value if isinstance(value, DnsError) else \
            Answer([(t.encode(),) for t in value], 300) if value else DnsError("nxdomain", "NXDOMAIN")
        self.loop.call_soon(lambda: done(result))


class PolicyCacheTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.now = 1_800_000_000.0
        self.loop = EventLoop(clock=lambda: self.now)
        self.resolver = FakeResolver(self.loop)
        self.fetched = []
        self.body = RFC_EXAMPLE.replace(b"604800", b"3600")
        self.fail_with = None
        self.sts = self.make()
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def make(self):
        return StsPolicies(self.loop, self.resolver, StsCache(self.tmp.name), fetch=self.fetch)

    def tearDown(self):
        self.loop.stop()
        self.thread.join(WAIT)
        self.sts.close()
        self.loop.close()
        self.tmp.cleanup()

    def fetch(self, url):
        self.fetched.append(url)
        if self.fail_with:
            raise HttpsError(url + ": " + self.fail_with)
        return HttpsReply(200, {"content-type": "text/plain; charset=utf-8"}, self.body, url)

    def ask(self, domain="example.com", sts=None):
        got = stdqueue.Queue()
        self.loop.call_soon_threadsafe(lambda: (sts or self.sts).policy_for(domain, got.put))
        return got.get(timeout=WAIT)

    def test_fetch_once_then_cached_by_id_until_max_age(self):
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
        out = self.ask()
        self.assertEqual((out.source, out.policy.mode, out.sts_id), ("fetched", "enforce", "one"))
        self.assertEqual(self.fetched, ["https://mta-sts.example.com/.well-known/mta-sts.txt"])
        self.now += 3599
        self.assertEqual(self.ask().source, "cached")
        self.assertEqual(len(self.fetched), 1)
        # durable: a new instance (a restart) reads the cache under DATA without fetching
        other = self.make()
        try:
            self.assertEqual(self.ask(sts=other).source, "cached")
        finally:
            other.close()
        self.assertEqual(len(self.fetched), 1)
        # max_age passed: fetched again (same id)
        self.now += 2
        self.assertEqual(self.ask().source, "fetched")
        self.assertEqual(len(self.fetched), 2)

    def test_new_id_fetches_and_a_failed_fetch_keeps_the_cached_policy(self):
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
        self.ask()
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
        self.fail_with = "connection refused"
        out = self.ask()
        # RFC 8461 §3.3: no live policy, a valid cached one: apply the cached one
        self.assertEqual((out.source, out.sts_id, out.failure), ("cached", "one", "sts-policy-fetch-error"))
        self.assertIn("connection refused", out.reason)
        self.assertEqual(len(self.fetched), 2)
        # §3.3: not fetched again within five minutes for that id
        self.now += FETCH_RETRY_AFTER - 1
        self.assertEqual(self.ask().source, "cached")
        self.assertEqual(len(self.fetched), 2)
        self.now += 2
        self.fail_with = None
        out = self.ask()
        self.assertEqual((out.source, out.sts_id), ("fetched", "two"))

    def test_record_gone_uses_cache_until_expiry_then_none(self):
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
        self.ask()
        del self.resolver.txt["_mta-sts.example.com"]
        self.assertEqual(self.ask().source, "cached")           # §3.1 note, §5.1
        self.resolver.txt["_mta-sts.example.com"] = DnsError("temporary", "SERVFAIL")
        self.assertEqual(self.ask().source, "cached")
        self.now += 3600
        out = self.ask()
        self.assertIsNone(out.policy)
        self.assertEqual(len(self.fetched), 1)

    def test_invalid_policy_and_wrong_media_type_are_no_policy(self):
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
        self.body = b"version: STSv1\nmode: enforce\nmax_age: 60\n"
        out = self.ask()
        self.assertIsNone(out.policy)
        self.assertEqual(out.failure, "sts-policy-invalid")
        self.resolver.txt["_mta-sts.example.net"] = ["v=STSv1; id=one"]
        self.body = RFC_EXAMPLE
        orig = self.fetch
        self.sts.fetch = lambda url: HttpsReply(200, {"content-type": "text/html"}, orig(url).body, url)
        out = self.ask("example.net")
        self.assertIsNone(out.policy)
        self.assertIn("text/plain", out.reason)

    def test_daily_refresh_and_mode_none(self):
        self.body = RFC_EXAMPLE      # max_age a week
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=one"]
        self.ask()
        self.now += REFRESH_AFTER + 1
        self.assertEqual(self.ask().source, "fetched")           # §3.3: refreshed once a day
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=off"]
        self.body = b"version: STSv1\nmode: none\nmax_age: 86400\n"
        out = self.ask()
        self.assertIsNone(out.policy)                            # §5 item 3: none is no policy
        self.assertEqual(StsCache(self.tmp.name).get("example.com")["id"], "off")

    def test_no_record_no_fetch(self):
        self.assertIsNone(self.ask("plain.example").policy)
        self.assertEqual(self.fetched, [])
        self.assertEqual(self.resolver.asked, ["_mta-sts.plain.example"])


if __name__ == "__main__":
    unittest.main()


class ConfigTest(unittest.TestCase):
    def test_our_policy_keys_are_checked_at_load(self):
        from protocols.config import Config, ConfigError
        names = (lambda: "mx.example.org", lambda: "mx")
        cfg = Config({"mta_sts_mode": "enforce", "mta_sts_mx": "mx.example.org, *.example.net"}, names=names)
        self.assertEqual(cfg.mta_sts_mx, ["mx.example.org", "*.example.net"])
        for values, words in (({"mta_sts_mode": "strict"}, "mta_sts_mode must be none, testing or enforce"),
                              ({"mta_sts_max_age": "31557601"}, "mta_sts_max_age must be 0 to 31557600"),
                              ({"mta_sts_mx": "mail.*.example"}, "bad mta_sts_mx pattern: 'mail.*.example'")):
            with self.assertRaises(ConfigError) as cm:
                Config(values, names=names)
            self.assertIn(words, str(cm.exception))
