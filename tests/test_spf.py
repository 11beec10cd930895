"""SPF (RFC 7208): macros, record syntax, every mechanism and modifier, every
result, the processing limits and the Appendix A examples, against the fake
resolver of tests/spffake.py (no network)."""

import ipaddress
import unittest

from protocols import spf
from protocols.dns import codec as dns
from protocols.spf_header import authres_clause, received_spf
from protocols.spf_macro import MacroContext, SpfSyntaxError, expand, parse_domain_spec, parse_macro_string
from protocols.spf_record import parse_record
from tests.spffake import FakeResolver


def run(resolver, ip, domain, sender=None, helo="helo.example.net", **kw):
    out = []
    spf.check_host(ip, domain, sender if sender is not None else "user@" + domain, helo, resolver, out.append, **kw)
    resolver.flush() if resolver.deferred else None
    assert len(out) == 1, out
    return out[0]


def appendix_a_zone():
    """The DNS setup of RFC 7208 Appendix A."""
    r = FakeResolver()
    r.add("example.com", "MX", (10, "mail-a.example.com"), (20, "mail-b.example.com"))
    r.add("example.com", "A", "192.0.2.10", "192.0.2.11")
    r.add("amy.example.com", "A", "192.0.2.65")
    r.add("bob.example.com", "A", "192.0.2.66")
    r.add("mail-a.example.com", "A", "192.0.2.129")
    r.add("mail-b.example.com", "A", "192.0.2.130")
    r.add("www.example.com", "A", "192.0.2.10", "192.0.2.11")       # CNAME example.com., as a resolver returns it
    r.add("example.org", "MX", (10, "mail-c.example.org"))
    r.add("mail-c.example.org", "A", "192.0.2.140")
    for last, name in ((10, "example.com"), (11, "example.com"), (65, "amy.example.com"), (66, "bob.example.com"),
                       (129, "mail-a.example.com"), (130, "mail-b.example.com"), (140, "mail-c.example.org")):
        r.add("%d.2.0.192.in-addr.arpa" % last, "PTR", name)
    r.add("4.0.0.10.in-addr.arpa", "PTR", "bob.example.com")          # the rogue reverse entry
    return r


class MacroExamplesTest(unittest.TestCase):
    """RFC 7208 §7.4, exactly."""

    def ctx(self, ip="192.0.2.3"):
        return MacroContext("strong-bad@email.example.com", "email.example.com", ipaddress.ip_address(ip),
                            helo="mx.example.org")

    def expand(self, text, ip="192.0.2.3"):
        return expand(parse_macro_string(text)[0], self.ctx(ip))

    def test_single_macros(self):
        table = {"%{s}": "strong-bad@email.example.com", "%{o}": "email.example.com",
                 "%{d}": "email.example.com", "%{d4}": "email.example.com", "%{d3}": "email.example.com",
                 "%{d2}": "example.com", "%{d1}": "com", "%{dr}": "com.example.email",
                 "%{d2r}": "example.email", "%{l}": "strong-bad", "%{l-}": "strong.bad",
                 "%{lr}": "strong-bad", "%{lr-}": "bad.strong", "%{l1r-}": "strong"}
        for macro, want in table.items():
            self.assertEqual(self.expand(macro), want, macro)

    def test_macro_strings(self):
        table = {"%{ir}.%{v}._spf.%{d2}": "3.2.0.192.in-addr._spf.example.com",
                 "%{lr-}.lp._spf.%{d2}": "bad.strong.lp._spf.example.com",
                 "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}": "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
                 "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}": "3.2.0.192.in-addr.strong.lp._spf.example.com",
                 "%{d2}.trusted-domains.example.net": "example.com.trusted-domains.example.net"}
        for macro, want in table.items():
            self.assertEqual(self.expand(macro), want, macro)

    def test_ipv6(self):
        self.assertEqual(self.expand("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01"),
                         "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")

    def test_specials_and_uppercase_url_escape(self):
        self.assertEqual(self.expand("a%%b%_c%-d"), "a%b c%20d")                       # §7.1
        self.assertEqual(self.expand("%{L}"), "strong-bad")
        ctx = MacroContext("a b/c@x.example", "x.example", ipaddress.ip_address("192.0.2.3"))
        self.assertEqual(expand(parse_macro_string("%{S}")[0], ctx), "a%20b%2Fc%40x.example")  # §7.3

    def test_exp_only_letters(self):
        ctx = MacroContext("a@x.example", "x.example", ipaddress.ip_address("2001:db8::1"),
                           receiver="mx.example.net", now=1234567890)
        self.assertEqual(expand(parse_macro_string("%{c} %{r} %{t}", exp=True)[0], ctx),
                         "2001:db8::1 mx.example.net 1234567890")
        for letter in "crt":                                                          # §7.2
            with self.assertRaises(SpfSyntaxError):
                parse_macro_string("%%{%s}" % letter)

    def test_delimiters_and_bounds(self):
        self.assertEqual(self.expand("%{l+-}"), "strong.bad")
        self.assertEqual(self.expand("%{d127}"), "email.example.com")                # §7.3: at least 127
        with self.assertRaises(SpfSyntaxError):
            parse_macro_string("%{d0}")                                              # §7.3: nonzero

    def test_syntax_errors(self):
        for bad in ("%(ir).sbl.example.org", "%{x}", "%{ir", "%", "a b"):
            with self.assertRaises(SpfSyntaxError, msg=bad):
                parse_macro_string(bad)

    def test_domain_end(self):
        for good in ("example.com", "example.com.", "%{d}", "foo.%{d}", "x.xn--p1ai", "a.b-c", "_spf.%{d2}"):
            parse_domain_spec(good)
        for bad in ("foo", "example.123", "example.com-", "example.-com", "", "%{d}.", "foo.com/"):
            with self.assertRaises(SpfSyntaxError, msg=bad):
                parse_domain_spec(bad)


class RecordSyntaxTest(unittest.TestCase):
    def test_terms(self):
        rec = parse_record("v=spf1 +a:example.com/24//64 -mx ~ptr ?ip4:192.0.2.0/24 ip6:2001:db8::/32 "
                           "exists:%{i}.x.example include:_spf.example.com all redirect=example.net "
                           "exp=exp.example.com unknown=%{d} x-y.z=abc")
        self.assertEqual([m.name for m in rec.mechanisms],
                         ["a", "mx", "ptr", "ip4", "ip6", "exists", "include", "all"])
        self.assertEqual((rec.mechanisms[0].cidr4, rec.mechanisms[0].cidr6), (24, 64))
        self.assertEqual([m.qualifier for m in rec.mechanisms[:4]], ["+", "-", "~", "?"])
        self.assertIsNotNone(rec.redirect)
        self.assertIsNotNone(rec.exp)

    def test_case_and_spaces(self):
        rec = parse_record("V=SPF1   MX  IP4:192.0.2.1   -ALL  ")
        self.assertEqual([m.name for m in rec.mechanisms], ["mx", "ip4", "all"])

    def test_bad_syntax(self):
        for bad in ("v=spf1 foo", "v=spf1 a:", "v=spf1 a/33", "v=spf1 a//129", "v=spf1 ip4:192.0.2",
                    "v=spf1 ip4:192.0.2.1/33", "v=spf1 ip4:192.0.2.01", "v=spf1 ip6:2001:db8::/129",
                    "v=spf1 ip6:192.0.2.1", "v=spf1 include", "v=spf1 exists", "v=spf1 all:x",
                    "v=spf1 redirect=a.example redirect=b.example", "v=spf1 exp=a.example exp=b.example",
                    "v=spf1 -redirect=a.example", "v=spf1 a/024", "v=spf1 mx:foo", "v=spf1 ptr:",
                    "v=spf1 unknown=%z", "v=spf1 a:%{c}.example.com", "v=spf1 ip4:1.2.3.4/", "v=spf10"):
            with self.assertRaises(SpfSyntaxError, msg=bad):
                parse_record(bad)


class MechanismTest(unittest.TestCase):
    def zone(self, record, *extra):
        """example.com's record and (name, type, value) entries."""
        r = FakeResolver()
        r.add("example.com", "TXT", record)
        for name, qtype, *values in extra:
            r.add(name, qtype, *values)
        return r

    def test_all_and_qualifiers(self):
        for q, want in (("", "pass"), ("+", "pass"), ("-", "fail"), ("~", "softfail"), ("?", "neutral")):
            self.assertEqual(run(self.zone("v=spf1 %sall" % q), "192.0.2.1", "example.com").result, want)

    def test_default_is_neutral(self):
        res = run(self.zone("v=spf1 ip4:198.51.100.1"), "192.0.2.1", "example.com")
        self.assertEqual((res.result, res.mechanism), ("neutral", "default"))        # §4.7

    def test_ip4_ip6(self):
        r = self.zone("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
        self.assertEqual(run(r, "192.0.2.200", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.3.1", "example.com").result, "fail")
        self.assertEqual(run(r, "2001:db8:1::5", "example.com").result, "pass")
        self.assertEqual(run(r, "2001:db9::5", "example.com").result, "fail")
        self.assertEqual(run(r, "::ffff:192.0.2.9", "example.com").result, "pass")   # §5: IPv4-mapped is IPv4
        self.assertEqual(r.queries, [("example.com", dns.TYPE_TXT)] * 5)            # no other DNS (§4.6.4)

    def test_a_with_dual_cidr(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 a/24//64 -all")
        r.add("example.com", "A", "192.0.2.10").add("example.com", "AAAA", "2001:db8::10")
        self.assertEqual(run(r, "192.0.2.99", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.3.10", "example.com").result, "fail")
        self.assertEqual(run(r, "2001:db8::ffff:1", "example.com").result, "pass")
        self.assertEqual(run(r, "2001:db8:0:1::10", "example.com").result, "fail")

    def test_a_asks_aaaa_for_ipv6(self):
        r = self.zone("v=spf1 a:host.example.com -all")
        r.add("host.example.com", "A", "192.0.2.5")
        self.assertEqual(run(r, "2001:db8::5", "example.com").result, "fail")
        self.assertIn(("host.example.com", dns.TYPE_AAAA), r.queries)
        self.assertNotIn(("host.example.com", dns.TYPE_A), r.queries)

    def test_mx(self):
        r = self.zone("v=spf1 mx:mail.example.com/30 -all")
        r.add("mail.example.com", "MX", (20, "b.example.com"), (10, "a.example.com"))
        r.add("a.example.com", "A", "192.0.2.1").add("b.example.com", "A", "192.0.2.129")
        self.assertEqual(run(r, "192.0.2.130", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.2.140", "example.com").result, "fail")

    def test_mx_has_no_implicit_mx(self):
        r = self.zone("v=spf1 mx -all")
        r.add("example.com", "A", "192.0.2.1")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "fail")          # §5.4 note

    def test_mx_more_than_ten_names_is_permerror(self):
        r = self.zone("v=spf1 mx -all")
        r.add("example.com", "MX", *[(i, "mx%d.example.com" % i) for i in range(11)])
        for i in range(11):
            r.add("mx%d.example.com" % i, "A", "198.51.100.%d" % i)
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")     # §4.6.4
        self.assertEqual(run(r, "198.51.100.3", "example.com").result, "pass")       # matched before the 11th

    def test_ptr(self):
        r = appendix_a_zone()
        r.add("example.com", "TXT", "v=spf1 ptr -all")
        self.assertEqual(run(r, "192.0.2.65", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.2.140", "example.com").result, "fail")
        self.assertEqual(run(r, "10.0.0.4", "example.com").result, "fail")           # forward does not match

    def test_ptr_dns_error_does_not_match(self):
        r = self.zone("v=spf1 ptr ?all")
        r.temporary.add("1.2.0.192.in-addr.arpa")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "neutral")      # §5.5

    def test_ptr_only_first_ten_names(self):
        r = self.zone("v=spf1 ptr -all")
        names = ["h%d.example.com" % i for i in range(12)]
        r.add("1.2.0.192.in-addr.arpa", "PTR", *names)
        for name in names[:10]:
            r.add(name, "A", "198.51.100.1")
        r.add(names[11], "A", "192.0.2.1")                                           # would validate
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "fail")
        self.assertNotIn((names[10], dns.TYPE_A), r.queries)                         # §4.6.4: rest ignored
        self.assertNotIn((names[11], dns.TYPE_A), r.queries)

    def test_exists(self):
        r = self.zone("v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all")
        r.add("1.2.0.192.someuser._spf.example.com", "A", "127.0.0.2")
        self.assertEqual(run(r, "192.0.2.1", "example.com", "someuser@example.com").result, "pass")
        self.assertEqual(run(r, "192.0.2.1", "example.com", "other@example.com").result, "fail")

    def test_exists_asks_a_even_for_ipv6(self):
        r = self.zone("v=spf1 exists:x.example.com -all")
        r.add("x.example.com", "A", "127.0.0.2")
        self.assertEqual(run(r, "2001:db8::1", "example.com").result, "pass")        # §5.7

    def test_include_table(self):
        for inner, want in (("+all", "pass"), ("-all", "fail"), ("~all", "fail"), ("?all", "fail")):
            r = self.zone("v=spf1 include:inc.example.com -all", ("inc.example.com", "TXT", "v=spf1 " + inner))
            self.assertEqual(run(r, "192.0.2.1", "example.com").result, want, inner)
        r = self.zone("v=spf1 include:none.example.com -all", ("none.example.com", "A", "192.0.2.1"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")     # none → permerror
        r = self.zone("v=spf1 include:bad.example.com -all", ("bad.example.com", "TXT", "v=spf1 nope"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")
        r = self.zone("v=spf1 include:tmp.example.com -all")
        r.temporary.add("tmp.example.com")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "temperror")
        r = self.zone("v=spf1 -include:inc.example.com +all", ("inc.example.com", "TXT", "v=spf1 +all"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "fail")

    def test_redirect(self):
        r = self.zone("v=spf1 redirect=_spf.example.com", ("_spf.example.com", "TXT", "v=spf1 ip4:192.0.2.1 -all"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.2.2", "example.com").result, "fail")

    def test_redirect_ignored_with_all(self):
        r = self.zone("v=spf1 redirect=_spf.example.com ?all", ("_spf.example.com", "TXT", "v=spf1 -all"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "neutral")      # §5.1 / §6.1

    def test_redirect_to_nothing_is_permerror(self):
        r = self.zone("v=spf1 redirect=nothing.example.com")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")    # §6.1

    def test_redirect_uses_domain_of_target_for_macros(self):
        r = self.zone("v=spf1 redirect=_spf.example.net", ("_spf.example.net", "TXT", "v=spf1 exists:%{d}.x.test -all"))
        r.add("_spf.example.net.x.test", "A", "127.0.0.2")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "pass")

    def test_unknown_modifier_ignored(self):
        r = self.zone("v=spf1 foo=bar -all moo.cow-far_out=man:dog/cat")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "fail")


class ResultsTest(unittest.TestCase):
    def test_none(self):
        r = FakeResolver().add("example.com", "A", "192.0.2.1").add("txt.example.com", "TXT", "hello")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "none")          # no TXT
        self.assertEqual(run(r, "192.0.2.1", "nx.example.com").result, "none")       # NXDOMAIN, §4.3
        self.assertEqual(run(r, "192.0.2.1", "txt.example.com").result, "none")      # no v=spf1
        self.assertEqual(run(r, "192.0.2.1", "localhost").result, "none")            # single label, §4.3
        self.assertEqual(run(r, "192.0.2.1", "a..example.com").result, "none")
        self.assertEqual(run(r, "192.0.2.1", "x" * 64 + ".com").result, "none")
        self.assertEqual(r.queries, [("example.com", 16), ("nx.example.com", 16), ("txt.example.com", 16)])

    def test_version_must_be_exact(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf10 -all", "v=spf1x -all", "spf1 -all")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "none")          # §4.5

    def test_two_records_is_permerror(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 -all", "v=spf1 +all", "other text")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")     # §4.5

    def test_multi_string_record_is_concatenated(self):
        r = FakeResolver().add("example.com", "TXT", ("v=spf1 ip4:192.0.2.1", " -all"))
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "pass")          # §3.3
        self.assertEqual(run(r, "192.0.2.2", "example.com").result, "fail")

    def test_non_ascii_record_is_permerror(self):
        r = FakeResolver()
        r.zone[("example.com", dns.TYPE_TXT)] = [(b"v=spf1 a:caf\xc3\xa9.example.com -all",)]
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")     # §3: US-ASCII

    def test_syntax_error_anywhere_is_permerror(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 +all ip4:bogus")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")     # §4.6

    def test_temperror_on_txt_lookup(self):
        r = FakeResolver()
        r.temporary.add("example.com")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "temperror")     # §4.4

    def test_temperror_in_mechanism(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 a:down.example.com +all")
        r.temporary.add("down.example.com")
        res = run(r, "192.0.2.1", "example.com")
        self.assertEqual(res.result, "temperror")                                     # §5
        self.assertIn("down.example.com", res.problem)

    def test_bad_client_ip_is_permerror(self):
        self.assertEqual(run(FakeResolver(), "not-an-ip", "example.com").result, "permerror")

    def test_domains_lowercase_in_macros_local_part_as_given(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 -all exp=e.example.com")
        r.add("e.example.com", "TXT", "%{d} %{o} %{l} %{s}")
        res = run(r, "192.0.2.1", "Example.COM", "Joe@Example.COM")
        self.assertEqual((res.result, res.explanation), ("fail", "example.com example.com Joe Joe@Example.COM"))

    def test_sender_without_local_part_is_postmaster(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 exists:%{l}.x.example.com -all")
        r.add("postmaster.x.example.com", "A", "127.0.0.2")
        self.assertEqual(run(r, "192.0.2.1", "example.com", "example.com").result, "pass")   # §4.3
        self.assertEqual(run(r, "192.0.2.1", "example.com", "@example.com").result, "pass")


class FuzzTest(unittest.TestCase):
    """Random records: the parser raises only SpfSyntaxError, and check_host()
    always answers once with one of the seven results (RFC 7208 §2.6)."""

    MECHS = ["a", "mx", "ptr", "all", "include", "exists", "ip4", "ip6", "redirect=", "exp=", "foo=", "bar"]
    DOMAINS = ["example.com", "example.org", "x.example.com", "%{d}", "%{ir}.%{v}.example.com", "%{p}.example.com",
               "%{d2}", "%{l1r-}.example.com", "%{o}", "nx.example.com", "%{x}", "%", "example.com.", "foo",
               "192.0.2.0", "2001:db8::", "%{c}", "%%.example.com", "a..example.com"]
    ARGS = ["", ":{d}", "/{n}", "//{n}", ":{d}/{n}", ":{d}/{n}//{n}", ":", "/"]
    NUMS = ["0", "24", "28", "30", "32", "33", "64", "128", "129", "024", "x"]

    def term(self, rng):
        if rng.random() < 0.05:
            return rng.choice(["\xff", "\t", "%", "=", ":", "v=spf1"])
        mech = rng.choice(self.MECHS)
        if mech.endswith("="):
            return mech + rng.choice(self.DOMAINS)
        arg = rng.choice(self.ARGS).format(d=rng.choice(self.DOMAINS), n=rng.choice(self.NUMS))
        return rng.choice(["", "", "+", "-", "~", "?"]) + mech + arg

    def test_random_records(self):
        import random
        rng = random.Random(7208)
        zone = appendix_a_zone()
        seen = set()
        for _ in range(500):
            text = "v=spf1" + "".join(" " * rng.randrange(1, 3) + self.term(rng) for _ in range(rng.randrange(0, 6)))
            try:
                parse_record(text)
            except SpfSyntaxError:
                pass
            zone.zone[("x.example.com", dns.TYPE_TXT)] = [(text.encode("latin-1"),)]
            for ip in ("192.0.2.65", "2001:db8::1"):
                res = run(zone, ip, "x.example.com")
                self.assertIn(res.result, spf.RESULTS, text)
                self.assertNotEqual(res.problem, "internal error", text)
                seen.add(res.result)
        self.assertLessEqual({"pass", "fail", "neutral", "permerror"}, seen)    # the generator reaches them


class LimitsTest(unittest.TestCase):
    def test_ten_dns_terms_pass_eleven_are_permerror(self):
        r = FakeResolver()
        r.add("example.com", "TXT", "v=spf1 " + " ".join("include:i%d.example.com" % i for i in range(10)) + " -all")
        for i in range(10):
            r.add("i%d.example.com" % i, "TXT", "v=spf1 ip4:198.51.100.%d -all" % i)
        self.assertEqual(run(r, "198.51.100.9", "example.com").result, "pass")
        r = FakeResolver()
        r.add("example.com", "TXT", "v=spf1 " + " ".join("include:i%d.example.com" % i for i in range(11)) + " -all")
        for i in range(11):
            r.add("i%d.example.com" % i, "TXT", "v=spf1 ip4:198.51.100.%d -all" % i)
        res = run(r, "198.51.100.10", "example.com")
        self.assertEqual(res.result, "permerror")                                     # §4.6.4
        self.assertIn("more than 10", res.problem)
        self.assertNotIn(("i10.example.com", dns.TYPE_TXT), r.queries)

    def test_limit_counts_across_includes_and_redirect(self):
        r = FakeResolver()
        r.add("example.com", "TXT", "v=spf1 a:h.example.com include:inc.example.com redirect=r.example.com")
        r.add("h.example.com", "A", "198.51.100.1")
        r.add("inc.example.com", "TXT", "v=spf1 " + " ".join(["a:h.example.com"] * 6) + " -all")
        r.add("r.example.com", "TXT", "v=spf1 a:h.example.com -all")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "fail")           # exactly 10
        r.zone[("r.example.com", dns.TYPE_TXT)] = [(b"v=spf1 a:h.example.com a:h.example.com -all",)]
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")      # 11

    def test_ip_all_and_exp_do_not_count(self):
        r = FakeResolver()
        r.add("example.com", "TXT", "v=spf1 " + " ".join(["a:h.example.com"] * 10)
              + " " + " ".join("ip4:198.51.100.%d" % i for i in range(20)) + " -all exp=e.example.com")
        r.add("h.example.com", "A", "198.51.100.200").add("e.example.com", "TXT", "no")
        res = run(r, "192.0.2.1", "example.com")
        self.assertEqual((res.result, res.explanation), ("fail", "no"))

    def test_two_void_lookups_pass_three_are_permerror(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 a:v1.example.com a:v2.example.com ip4:192.0.2.1 -all")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "pass")
        r = FakeResolver().add("example.com", "TXT",
                               "v=spf1 a:v1.example.com mx:v2.example.com exists:v3.example.com ip4:192.0.2.1 -all")
        res = run(r, "192.0.2.1", "example.com")
        self.assertEqual(res.result, "permerror")                                     # §4.6.4
        self.assertIn("void", res.problem)

    def test_include_of_itself_is_permerror(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 include:example.com -all")
        self.assertEqual(run(r, "192.0.2.1", "example.com").result, "permerror")
        self.assertEqual(len(r.queries), 11)

    def test_redirect_loop_is_permerror(self):
        r = FakeResolver().add("a.example.com", "TXT", "v=spf1 redirect=b.example.com")
        r.add("b.example.com", "TXT", "v=spf1 redirect=a.example.com")
        self.assertEqual(run(r, "192.0.2.1", "a.example.com").result, "permerror")

    def test_long_expansion_is_truncated_on_the_left(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.x.example.com -all")
        local = "a" * 60
        spf.check_host("192.0.2.1", "example.com", local + "@example.com", "h", r, lambda res: None)
        name = r.queries[-1][0]
        self.assertLessEqual(len(name), 253)                                          # §7.3
        self.assertTrue(name.endswith(".x.example.com"))


class ExplanationTest(unittest.TestCase):
    def zone(self, exp_txt, record="v=spf1 mx -all exp=explain._spf.%{d}"):
        r = FakeResolver().add("example.com", "TXT", record)
        if exp_txt is not None:
            r.add("explain._spf.example.com", "TXT", *exp_txt)
        return r

    def test_rfc_examples(self):
        res = run(self.zone(["%{i} is not one of %{d}'s designated mail servers."]), "192.0.2.1", "example.com")
        self.assertEqual((res.result, res.explanation),
                         ("fail", "192.0.2.1 is not one of example.com's designated mail servers."))
        res = run(self.zone(["See http://%{d}/why.html?s=%{S}&i=%{I}"]), "192.0.2.1", "example.com",
                  "a b@example.com")
        self.assertEqual(res.explanation, "See http://example.com/why.html?s=a%20b%40example.com&i=192.0.2.1")

    def test_exp_only_letters_and_spaces(self):
        res = run(self.zone(["%{c} %{r} %{t}"]), "2001:db8::1", "example.com", receiver="mx.test", now=42)
        self.assertEqual(res.explanation, "2001:db8::1 mx.test 42")

    def test_errors_give_no_explanation(self):
        for txt in (None, ["one", "two"], ["bad %{x}"], ["caf\u00e9"]):
            res = run(self.zone(txt), "192.0.2.1", "example.com")
            self.assertEqual((res.result, res.explanation), ("fail", ""), txt)

    def test_only_for_fail(self):
        res = run(self.zone(["why"], "v=spf1 ~all exp=explain._spf.%{d}"), "192.0.2.1", "example.com")
        self.assertEqual((res.result, res.explanation), ("softfail", ""))

    def test_include_exp_not_used_redirect_exp_used(self):
        r = FakeResolver().add("example.com", "TXT", "v=spf1 include:inc.example.com -all exp=outer.example.com")
        r.add("inc.example.com", "TXT", "v=spf1 -all exp=inner.example.com")
        r.add("outer.example.com", "TXT", "outer").add("inner.example.com", "TXT", "inner")
        self.assertEqual(run(r, "192.0.2.1", "example.com").explanation, "outer")
        self.assertNotIn(("inner.example.com", dns.TYPE_TXT), r.queries)
        r.add("r.example.com", "TXT", "v=spf1 redirect=inc.example.com exp=outer.example.com")
        self.assertEqual(run(r, "192.0.2.1", "r.example.com").explanation, "inner")  # §6.2


class AppendixATest(unittest.TestCase):
    """RFC 7208 Appendix A.1-A.4 on its DNS setup."""

    def check(self, record, passing, failing, domain="example.com"):
        r = appendix_a_zone()
        r.zone[(domain, dns.TYPE_TXT)] = [(record.encode(),)]
        for ip in passing:
            self.assertEqual(run(r, ip, domain).result, "pass", (record, ip))
        for ip in failing:
            self.assertEqual(run(r, ip, domain).result, "fail", (record, ip))

    def test_a1(self):
        every = ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.129", "192.0.2.130", "192.0.2.140",
                 "10.0.0.4"]
        cases = [("v=spf1 +all", every),
                 ("v=spf1 a -all", ["192.0.2.10", "192.0.2.11"]),
                 ("v=spf1 a:example.org -all", []),
                 ("v=spf1 mx -all", ["192.0.2.129", "192.0.2.130"]),
                 ("v=spf1 mx:example.org -all", ["192.0.2.140"]),
                 ("v=spf1 mx mx:example.org -all", ["192.0.2.129", "192.0.2.130", "192.0.2.140"]),
                 ("v=spf1 mx/30 mx:example.org/30 -all", ["192.0.2.128", "192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140",
                                                          "192.0.2.143"]),
                 ("v=spf1 ptr -all", ["192.0.2.65", "192.0.2.10", "192.0.2.11", "192.0.2.129", "192.0.2.130"]),
                 ("v=spf1 ip4:192.0.2.128/28 -all", ["192.0.2.129", "192.0.2.130", "192.0.2.140"])]
        for record, passing in cases:
            self.check(record, passing, [ip for ip in every if ip not in passing])

    def test_a2(self):
        r = appendix_a_zone()
        r.add("example.org", "TXT", "v=spf1 include:example.com include:example.net -all")
        r.add("example.com", "TXT", "v=spf1 mx -all").add("example.net", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
        r.add("la.example.org", "TXT", "v=spf1 redirect=example.org")
        for domain in ("example.org", "la.example.org"):
            self.assertEqual(run(r, "192.0.2.129", domain).result, "pass")
            self.assertEqual(run(r, "198.51.100.7", domain).result, "pass")
            self.assertEqual(run(r, "192.0.2.140", domain).result, "fail")

    def test_a3_dnsbl_style(self):
        r = appendix_a_zone()
        r.add("example.com", "TXT", "v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all")
        r.add("mobile-users._spf.example.com", "TXT", "v=spf1 exists:%{l1r+}.%{d}")
        r.add("remote-users._spf.example.com", "TXT", "v=spf1 exists:%{ir}.%{l1r+}.%{d}")
        for name in ("mary.mobile-users", "fred.mobile-users", "15.15.168.192.joel.remote-users",
                     "16.15.168.192.joel.remote-users"):
            r.add(name + "._spf.example.com", "A", "127.0.0.2")
        self.assertEqual(run(r, "198.51.100.1", "example.com", "mary@example.com").result, "pass")
        self.assertEqual(run(r, "192.168.15.15", "example.com", "joel@example.com").result, "pass")
        self.assertEqual(run(r, "192.168.15.17", "example.com", "joel@example.com").result, "fail")
        self.assertEqual(run(r, "192.0.2.129", "example.com", "anyone@example.com").result, "pass")

    def test_a4_multiple_requirements(self):
        r = appendix_a_zone()
        r.add("example.com", "TXT", "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all")
        r.add("ip4._spf.example.com", "TXT", "v=spf1 -ip4:192.0.2.0/24 +all")
        # As printed, "-ptr" names ptr._spf.example.com itself (§5.5: the current
        # <domain>), under which no PTR name lies; the example means example.com.
        r.add("ptr._spf.example.com", "TXT", "v=spf1 -ptr:example.com +all")
        self.assertEqual(run(r, "192.0.2.65", "example.com").result, "pass")         # in range, valid PTR
        self.assertEqual(run(r, "192.0.2.140", "example.com").result, "fail")        # PTR outside example.com
        self.assertEqual(run(r, "198.51.100.1", "example.com").result, "fail")       # outside the range
        self.assertEqual(run(r, "10.0.0.4", "example.com").result, "fail")


class ValidatedNameMacroTest(unittest.TestCase):
    def test_p_prefers_the_domain_then_subdomain(self):
        r = appendix_a_zone()
        r.add("example.com", "TXT", "v=spf1 exists:%{p}.x.example.com -all")
        r.add("amy.example.com.x.example.com", "A", "127.0.0.2")
        r.add("unknown.x.example.com", "A", "127.0.0.2")
        self.assertEqual(run(r, "192.0.2.65", "example.com").result, "pass")
        self.assertEqual(run(r, "192.0.2.66", "example.com").result, "fail")         # bob.… not listed
        self.assertEqual(run(r, "198.51.100.1", "example.com").result, "pass")       # no PTR: "unknown"


class IdentityTest(unittest.TestCase):
    def zone(self):
        r = FakeResolver().add("mail.example.com", "TXT", "v=spf1 a -all").add("mail.example.com", "A", "192.0.2.1")
        return r.add("example.com", "TXT", "v=spf1 exists:%{l}.%{o}.x.example.com -all") \
                .add("joe.example.com.x.example.com", "A", "127.0.0.2")

    def check(self, fn, *args):
        out = []
        fn(*args, self.zone(), out.append)
        return out[0]

    def test_helo(self):
        res = self.check(spf.check_helo, "192.0.2.1", "mail.example.com")
        self.assertEqual((res.result, res.identity, res.sender), ("pass", "helo", "postmaster@mail.example.com"))
        self.assertEqual(self.check(spf.check_helo, "192.0.2.2", "mail.example.com").result, "fail")
        self.assertEqual(self.check(spf.check_helo, "192.0.2.1", "[192.0.2.1]").result, "none")   # §2.3
        self.assertEqual(self.check(spf.check_helo, "192.0.2.1", "localhost").result, "none")

    def test_null_reverse_path_uses_postmaster_at_helo(self):
        res = self.check(spf.check_mail_from, "192.0.2.1", "<>", "mail.example.com")
        self.assertEqual((res.result, res.sender, res.domain), ("pass", "postmaster@mail.example.com",
                                                                "mail.example.com"))   # §2.4

    def test_mail_from(self):
        res = self.check(spf.check_mail_from, "192.0.2.9", "<joe@example.com>", "h.example.net")
        self.assertEqual((res.result, res.domain, res.sender), ("pass", "example.com", "joe@example.com"))
        self.assertEqual(self.check(spf.check_mail_from, "192.0.2.9", "<ann@example.com>", "h.example.net").result,
                         "fail")


class DriverTest(unittest.TestCase):
    def test_deferred_answers(self):
        r = appendix_a_zone()
        r.deferred = True
        r.add("example.com", "TXT", "v=spf1 mx mx:example.org -all")
        out = []
        spf.check_host("192.0.2.140", "example.com", "a@example.com", "h", r, out.append)
        self.assertEqual(out, [])                          # nothing until the resolver answers
        r.flush()
        self.assertEqual([o.result for o in out], ["pass"])

    def test_done_called_once_and_timer_cancelled(self):
        class Loop:
            def __init__(self):
                self.timers = []

            def call_later(self, delay, fn):
                timer = type("T", (), {"cancelled": False, "cancel": lambda s: setattr(s, "cancelled", True)})()
                self.timers.append((delay, fn, timer))
                return timer
        r = FakeResolver(deferred=True).add("example.com", "TXT", "v=spf1 -all")
        r.loop = Loop()
        out = []
        spf.check_host("192.0.2.1", "example.com", "a@example.com", "h", r, out.append)
        delay, fire, timer = r.loop.timers[0]
        self.assertEqual(delay, spf.MAX_SECONDS)
        fire()                                             # §4.6.4: too slow → temperror
        r.flush()                                          # the late answer is ignored
        self.assertEqual([o.result for o in out], ["temperror"])


class HeaderTest(unittest.TestCase):
    def result(self, **kw):
        base = dict(result="pass", domain="example.com", mechanism="ip4:192.0.2.1", identity="mailfrom",
                    sender="myname@example.com", ip="192.0.2.1", helo="foo.example.com")
        base.update(kw)
        return spf.SpfResult(**base)

    def test_received_spf(self):
        text = received_spf(self.result(), "mybox.example.org").decode()
        unfolded = text.replace("\r\n\t", " ")
        self.assertEqual(unfolded, "Received-SPF: pass (mybox.example.org: domain of myname@example.com "
                         "designates 192.0.2.1 as permitted sender) receiver=mybox.example.org; "
                         "client-ip=192.0.2.1; envelope-from=\"myname@example.com\"; helo=foo.example.com; "
                         "identity=mailfrom; mechanism=\"ip4:192.0.2.1\";\r\n")
        self.assertTrue(all(len(line) <= 78 for line in text.split("\r\n")))

    def test_no_injection(self):
        text = received_spf(self.result(result="permerror", sender='x"\r\nBcc: evil@x.test', problem="a\nb"),
                            "mx.test").decode()
        self.assertEqual(text.count("\r\n"), text.count("\r\n\t") + 1)
        self.assertNotIn("\n", text.replace("\r\n", ""))
        self.assertIn("problem=", text)

    def test_authentication_results_clause(self):
        self.assertEqual(authres_clause(self.result()), "spf=pass smtp.mailfrom=myname@example.com")
        self.assertEqual(authres_clause(self.result(result="fail", identity="helo")),
                         "spf=fail smtp.helo=foo.example.com")
        self.assertEqual(authres_clause(self.result(sender="a b@example.com")),
                         'spf=pass smtp.mailfrom="a b@example.com"')


if __name__ == "__main__":
    unittest.main()
