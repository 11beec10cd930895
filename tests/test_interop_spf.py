"""Our SPF results (RFC 7208) against Debian's `spfquery` (spf-tools-perl, on
Mail::SPF), both asking one dnsmasq that serves a test zone of SPF records
covering every mechanism and modifier, macros, the limits and the error
results.

`spfquery` finds its name server through Net::DNS::Resolver, which reads
/etc/resolv.conf and then the environment: ``RES_NAMESERVERS`` (addresses)
and ``RES_OPTIONS`` (``port:N`` sets the port), so it is pointed at
dnsmasq's high port without root.  Our side is ``protocols.spf.check_host``
over ``protocols.dns.resolver.Resolver`` and the real EventLoop.

Where Mail::SPF departs from RFC 7208 the case says so and checks both
answers: an "mx" with more than 10 MX names is permerror (§4.6.4), which
Mail::SPF instead truncates to 10 names.

Skips, saying why, without dnsmasq or spfquery, or with MAILSRV_SKIP_INTEROP.
"""

import os
import shutil
import subprocess
import tempfile
import unittest

from protocols import spf
from protocols.dns.resolver import Resolver
from protocols.loop import EventLoop
from tests.test_interop_dns import Dnsmasq, skip_reason as dnsmasq_skip_reason

SPFQUERY = shutil.which("spfquery")
V6NAME = "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.m6.test"   # RFC 7208 §7.4's %{ir}

RECORDS = {
    "pass-all.test": "v=spf1 +all",
    "fail-all.test": "v=spf1 -all",
    "softfail.test": "v=spf1 ~all",
    "neutral.test": "v=spf1 ?all",
    "default.test": "v=spf1 ip4:198.51.100.1",
    "ip4.test": "v=spf1 ip4:192.0.2.0/25 -all",
    "ip4-host.test": "v=spf1 ip4:192.0.2.200 -all",
    "ip6.test": "v=spf1 ip6:2001:db8::/64 -all",
    "a.test": "v=spf1 a:h1.test -all",
    "a-self.test": "v=spf1 a -all",
    "a-cidr.test": "v=spf1 a:h2.test/24//64 -all",
    "a-dot.test": "v=spf1 a:h1.test. -all",
    "mx.test": "v=spf1 mx:mxd.test -all",
    "mx-self.test": "v=spf1 mx ~all",
    "mx-cidr.test": "v=spf1 mx:mxd.test/30//120 -all",
    "mx-many.test": "v=spf1 mx -all",
    "ptr.test": "v=spf1 ptr -all",
    "ptr-h1.test": "v=spf1 ptr:h1.test -all",
    "ptr-p.test": "v=spf1 exists:%{p}.pm.test -all",
    "exists.test": "v=spf1 exists:%{ir}.ex.test -all",
    "exists-v6.test": "v=spf1 exists:h1.test -all",
    "include.test": "v=spf1 include:ip4.test ~all",
    "include-none.test": "v=spf1 include:nothing.test -all",
    "include-neg.test": "v=spf1 -include:ip4.test +all",
    "redirect.test": "v=spf1 redirect=ip4.test",
    "redirect-none.test": "v=spf1 redirect=nothing.test",
    "redirect-all.test": "v=spf1 redirect=fail-all.test ?all",
    "redirect-exp.test": "v=spf1 redirect=exp.test",
    "exp.test": "v=spf1 ip4:192.0.2.1 -all exp=why.exp.test",
    "why.exp.test": "%{i} is not one of %{d}'s designated mail servers (%{l} at %{o}: %{s})",
    "syntax.test": "v=spf1 ip4:192.0.2 -all",
    "bad-cidr.test": "v=spf1 ip4:192.0.2.0/33 -all",
    "unknown-mech.test": "v=spf1 foo -all",
    "bad-macro.test": "v=spf1 exists:%(ir).ex.test -all",
    "dup-redirect.test": "v=spf1 redirect=ip4.test redirect=ip4.test",
    "unknown-mod.test": "v=spf1 foo=bar ip4:192.0.2.1 -all",
    "case.test": "V=SPF1 IP4:192.0.2.1 -ALL",
    "void2.test": "v=spf1 a:v1.test a:v2.test ip4:192.0.2.1 -all",
    "void3.test": "v=spf1 a:v1.test a:v2.test a:v3.test ip4:192.0.2.1 -all",
    "l.test": "v=spf1 -all",
    "limit10.test": "v=spf1 " + "include:l.test " * 10 + "ip4:192.0.2.1 -all",
    "limit11.test": "v=spf1 " + "include:l.test " * 11 + "ip4:192.0.2.1 -all",
    "loop.test": "v=spf1 include:loop.test -all",
    "macro-l.test": "v=spf1 exists:%{l1r-}.%{o}.mac.test -all",
    "macro-h.test": "v=spf1 exists:%{h}.hm.test -all",
    "macro-v6.test": "v=spf1 exists:%{ir}.%{v}.m6.test -all",
    "helo.test": "v=spf1 a -all",
    "urlexp.test": "v=spf1 -all exp=why.urlexp.test",
    "why.urlexp.test": "See http://%{d}/why?s=%{S}&i=%{I}&c=%{c}&v=%{v}%_%-%%",
    "sub.macro-d.test": "v=spf1 exists:%{d2}.%{dr}.dm.test -all",
    "macro-s.test": "v=spf1 exists:%{l}.%{o}.%{v}.sm.test -all",
}

ZONE = [("raw", "--txt-record=%s,%s" % item) for item in RECORDS.items()] + [
    ("raw", "--txt-record=two.test,v=spf1 -all"), ("raw", "--txt-record=two.test,v=spf1 +all"),   # §4.5
    ("raw", "--txt-record=multi.test,v=spf1 ip4:192.0.2.1 , -all"),                           # two strings, §3.3
    ("raw", "--local=/in-addr.arpa/"), ("raw", "--local=/ip6.arpa/"),     # reverse names: answered, not forwarded
    ("a", "h1.test", "192.0.2.10"),                       # --host-record also serves the PTR of each address
    ("a", "h2.test", "192.0.2.11", "2001:db8::11"),
    ("a", "a-self.test", "192.0.2.12"),
    ("mx", "mxd.test", "mx1.test", 10), ("mx", "mxd.test", "mx2.test", 20), ("mx", "mx-self.test", "mx1.test", 5),
    ("a", "mx1.test", "192.0.2.20"), ("a", "mx2.test", "192.0.2.21", "2001:db8::21"),
    ("a", "mail.ptr.test", "192.0.2.30"),
    ("raw", "--ptr-record=40.2.0.192.in-addr.arpa,fake.ptr.test"),      # a PTR whose name has no address
    ("a", "mail.ptr.test.pm.test", "127.0.0.2"),
    ("a", "unknown.pm.test", "127.0.0.3"),
    ("a", "10.2.0.192.ex.test", "127.0.0.2"),
    ("a", "strong.macro-l.test.mac.test", "127.0.0.2"),
    ("a", "good.example.hm.test", "127.0.0.2"),
    ("a", V6NAME, "127.0.0.2"),
    ("a", "helo.test", "192.0.2.50"),
    ("a", "macro-d.test.test.macro-d.sub.dm.test", "127.0.0.2"),
    ("a", "joe.macro-s.test.in-addr.sm.test", "127.0.0.2"),
] + [("mx", "mx-many.test", "m%d.mx-many.test" % i, i) for i in range(11)] \
  + [("a", "m%d.mx-many.test" % i, "198.51.100.%d" % (i + 10)) for i in range(11)]

# (ip, sender, helo, expected result, spfquery's result where Mail::SPF departs from RFC 7208)
CASES = [
    ("192.0.2.1", "a@pass-all.test", "", "pass", None),
    ("192.0.2.1", "a@fail-all.test", "", "fail", None),
    ("192.0.2.1", "a@softfail.test", "", "softfail", None),
    ("192.0.2.1", "a@neutral.test", "", "neutral", None),
    ("192.0.2.1", "a@default.test", "", "neutral", None),
    ("192.0.2.1", "a@nothing.test", "", "none", None),
    ("192.0.2.1", "a@h1.test", "", "none", None),
    ("192.0.2.100", "a@ip4.test", "", "pass", None),
    ("192.0.2.200", "a@ip4.test", "", "fail", None),
    ("192.0.2.200", "a@ip4-host.test", "", "pass", None),
    ("2001:db8::1", "a@ip4.test", "", "fail", None),
    ("2001:db8::ffff", "a@ip6.test", "", "pass", None),
    ("2001:db8:1::1", "a@ip6.test", "", "fail", None),
    ("192.0.2.10", "a@a.test", "", "pass", None),
    ("192.0.2.11", "a@a.test", "", "fail", None),
    ("192.0.2.12", "a@a-self.test", "", "pass", None),
    ("192.0.2.99", "a@a-cidr.test", "", "pass", None),
    ("192.0.3.11", "a@a-cidr.test", "", "fail", None),
    ("2001:db8::abcd", "a@a-cidr.test", "", "pass", None),
    ("2001:db8:1::11", "a@a-cidr.test", "", "fail", None),
    ("192.0.2.10", "a@a-dot.test", "", "pass", None),
    ("192.0.2.20", "a@mx.test", "", "pass", None),
    ("192.0.2.21", "a@mx.test", "", "pass", None),
    ("2001:db8::21", "a@mx.test", "", "pass", None),
    ("192.0.2.22", "a@mx.test", "", "fail", None),
    ("192.0.2.20", "a@mx-self.test", "", "pass", None),
    ("192.0.2.9", "a@mx-self.test", "", "softfail", None),
    ("192.0.2.23", "a@mx-cidr.test", "", "pass", None),
    ("192.0.2.24", "a@mx-cidr.test", "", "fail", None),
    ("2001:db8::7f", "a@mx-cidr.test", "", "pass", None),
    ("198.51.100.12", "a@mx-many.test", "", "pass", None),
    ("192.0.2.1", "a@mx-many.test", "", "permerror", "fail"),   # §4.6.4; Mail::SPF truncates to 10
    ("192.0.2.30", "a@ptr.test", "", "pass", None),
    ("192.0.2.10", "a@ptr.test", "", "fail", None),
    ("192.0.2.40", "a@ptr.test", "", "fail", None),
    ("192.0.2.10", "a@ptr-h1.test", "", "pass", None),
    ("192.0.2.30", "a@ptr-p.test", "", "pass", None),
    ("192.0.2.10", "a@ptr-p.test", "", "fail", None),
    ("192.0.2.10", "a@exists.test", "", "pass", None),
    ("192.0.2.11", "a@exists.test", "", "fail", None),
    ("2001:db8::99", "a@exists-v6.test", "", "pass", None),
    ("192.0.2.5", "a@include.test", "", "pass", None),
    ("192.0.2.200", "a@include.test", "", "softfail", None),
    ("192.0.2.1", "a@include-none.test", "", "permerror", None),
    ("192.0.2.5", "a@include-neg.test", "", "fail", None),
    ("192.0.2.200", "a@include-neg.test", "", "pass", None),
    ("192.0.2.5", "a@redirect.test", "", "pass", None),
    ("192.0.2.200", "a@redirect.test", "", "fail", None),
    ("192.0.2.1", "a@redirect-none.test", "", "permerror", None),
    ("192.0.2.1", "a@redirect-all.test", "", "neutral", None),
    ("192.0.2.1", "a@exp.test", "", "pass", None),
    ("192.0.2.9", "joe@exp.test", "", "fail", None),
    ("192.0.2.9", "joe@redirect-exp.test", "", "fail", None),
    ("192.0.2.9", "Joe@Exp.TEST", "", "fail", None),
    ("192.0.2.9", "a+b/c@urlexp.test", "", "fail", None),
    ("2001:db8::cb01", "x@urlexp.test", "", "fail", None),
    ("192.0.2.1", "a@two.test", "", "permerror", None),
    ("192.0.2.1", "a@syntax.test", "", "permerror", None),
    ("192.0.2.1", "a@bad-cidr.test", "", "permerror", None),
    ("192.0.2.1", "a@unknown-mech.test", "", "permerror", None),
    ("192.0.2.1", "a@bad-macro.test", "", "permerror", None),
    ("192.0.2.1", "a@dup-redirect.test", "", "permerror", None),
    ("192.0.2.1", "a@unknown-mod.test", "", "pass", None),
    ("192.0.2.1", "a@case.test", "", "pass", None),
    ("192.0.2.1", "a@multi.test", "", "pass", None),
    ("192.0.2.2", "a@multi.test", "", "fail", None),
    ("192.0.2.1", "a@void2.test", "", "pass", None),
    ("192.0.2.1", "a@void3.test", "", "permerror", None),
    ("192.0.2.1", "a@limit10.test", "", "pass", None),
    ("192.0.2.1", "a@limit11.test", "", "permerror", None),
    ("192.0.2.1", "a@loop.test", "", "permerror", None),
    ("192.0.2.1", "strong-bad@macro-l.test", "", "pass", None),
    ("192.0.2.1", "weak-bad@macro-l.test", "", "fail", None),
    ("192.0.2.1", "a@macro-h.test", "good.example", "pass", None),
    ("192.0.2.1", "a@macro-h.test", "bad.example", "fail", None),
    ("2001:db8::cb01", "a@macro-v6.test", "", "pass", None),
    ("2001:db8::cb02", "a@macro-v6.test", "", "fail", None),
    ("192.0.2.1", "a@sub.macro-d.test", "", "pass", None),
    ("192.0.2.1", "joe@macro-s.test", "", "pass", None),
    ("2001:db8::1", "joe@macro-s.test", "", "fail", None),
]
HELO_CASES = [("192.0.2.50", "helo.test", "pass"), ("192.0.2.51", "helo.test", "fail"),
              ("192.0.2.1", "nothing.test", "none")]


def skip_reason():
    reason = dnsmasq_skip_reason()
    if reason:
        return reason
    if SPFQUERY is None:
        return "spfquery is not installed (apt-get install spf-tools-perl)"
    return None


class SpfAgainstSpfquery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.dnsmasq = Dnsmasq(ZONE).start()
        cls.tmp = tempfile.mkdtemp(prefix="mailsrv-spfquery-")

    @classmethod
    def tearDownClass(cls):
        cls.dnsmasq.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def spfquery(self, scope, lines):
        """spfquery --file: four lines per request (result, authority
        explanation, local explanation, Received-SPF)."""
        path = os.path.join(self.tmp, scope)
        with open(path, "w") as f:
            f.write("".join(" ".join(x for x in line if x) + "\n" for line in lines))
        env = dict(os.environ, RES_NAMESERVERS="127.0.0.1", RES_OPTIONS="port:%d timeout:3 attempts:1"
                   % self.dnsmasq.port)
        p = subprocess.run([SPFQUERY, "--scope", scope, "--file", path, "--default-explanation", "DEFAULT"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        out = p.stdout.decode("utf-8", "replace").splitlines()
        self.assertEqual(len(out), 4 * len(lines), p.stderr.decode()[-2000:])
        return [(out[i], out[i + 1]) for i in range(0, len(out), 4)]

    def ours(self, calls):
        """Run every check at once on one loop and resolver; results in order."""
        loop = EventLoop()
        self.addCleanup(loop.close)
        resolver = Resolver(loop, [("127.0.0.1", self.dnsmasq.port)], timeout=3, attempts=2)
        results = [None] * len(calls)
        left = [len(calls)]

        def done_at(i):
            def done(res):
                results[i] = res
                left[0] -= 1
                if not left[0]:
                    loop.stop()
            return done
        for i, call in enumerate(calls):
            call(resolver, done_at(i))
        guard = loop.call_later(60, loop.stop)
        loop.run()
        guard.cancel()
        self.assertEqual(left[0], 0, "no SPF result within 60 s")
        return results

    def test_zone_covers_every_mechanism_and_modifier(self):
        records = [t for t in RECORDS.values() if t.lower().startswith("v=spf1")]
        self.assertGreaterEqual(len(records), 30)
        text = " ".join(RECORDS.values()).lower()
        for term in ("all", "include:", " a ", " a:", " mx", "mx:", "ptr", "ip4:", "ip6:", "exists:",
                     "redirect=", "exp=", "%{ir}", "%{l1r-}", "%{o}", "%{h}", "%{v}", "%{p}", "%{d2}", "%{dr}", "%{s}", "%{l}"):
            self.assertIn(term, text + " a ")

    def test_mail_from_results_agree(self):
        theirs = self.spfquery("mfrom", [(ip, sender, helo) for ip, sender, helo, _, _ in CASES])
        ours = self.ours([lambda r, d, c=c: spf.check_host(c[0], c[1].rpartition("@")[2], c[1], c[2], r, d)
                          for c in CASES])
        problems = []
        for (ip, sender, helo, want, their_want), mine, (their_result, their_exp) in zip(CASES, ours, theirs):
            if mine.result != want or their_result != (their_want or want):
                problems.append("%s from %s: ours %s (%s), spfquery %s, expected %s%s"
                                % (sender, ip, mine.result, mine.problem, their_result, want,
                                   " (spfquery %s)" % their_want if their_want else ""))
            elif mine.explanation and mine.explanation != their_exp:
                problems.append("%s from %s: explanation %r, spfquery %r" % (sender, ip, mine.explanation, their_exp))
        self.assertEqual(problems, [])
        self.assertEqual([r.explanation for r in ours if r.explanation.startswith("See ")],
                         ["See http://urlexp.test/why?s=a%2Bb%2Fc%40urlexp.test&i=192.0.2.9&c=192.0.2.9&v=in-addr %20%",
                          "See http://urlexp.test/why?s=x%40urlexp.test&i=2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
                          "0.0.0.0.0.0.c.b.0.1&c=2001:db8::cb01&v=ip6 %20%"])      # §7.3: upper case URL-escapes
        exp = [r for r in ours if "designated" in r.explanation]
        self.assertEqual([r.explanation for r in exp],
                         ["192.0.2.9 is not one of exp.test's designated mail servers (%s at %s: %s@%s)" % args
                          for args in (("joe", "exp.test", "joe", "exp.test"),
                                       ("joe", "redirect-exp.test", "joe", "redirect-exp.test"),  # §6.2: the target's exp
                                       ("Joe", "exp.test", "Joe", "Exp.TEST"))])   # %{o} lowercase, %{s} as given

    def test_helo_results_agree(self):
        theirs = self.spfquery("helo", [(ip, name) for ip, name, _ in HELO_CASES])
        ours = self.ours([lambda r, d, c=c: spf.check_helo(c[0], c[1], r, d) for c in HELO_CASES])
        self.assertEqual([(m.result, t[0]) for m, t in zip(ours, theirs)], [(w, w) for _, _, w in HELO_CASES])


if __name__ == "__main__":
    unittest.main()
