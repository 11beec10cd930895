"""DMARC (RFC 7489, protocols/dmarc.py) rule by rule with a fake resolver,
and the one Authentication-Results field (RFC 8601) of
protocols/dmarc_inbound.py."""

import unittest

from protocols import dkim_canon as canon
from protocols import dmarc
from protocols.dkim import DkimResult
from protocols.dmarc_inbound import (InboundChecks, action_for, authentication_results, clauses,
                                     replace_results)
from protocols.spf import SpfResult
from tests.spffake import FakeResolver


def fields(head):
    return canon.split_message(head.encode() + b"\r\nbody\r\n")[0]


def spf(result, domain):
    return SpfResult(result, domain, identity="mailfrom", sender="x@" + domain, ip="192.0.2.1")


def run(zone, from_, spf_res=None, dkim_res=(), draw=0):
    out = []
    dmarc.check(fields("From: <a@%s>\r\n" % from_), spf_res, list(dkim_res), zone, out.append, lambda: draw)
    assert len(out) == 1
    return out[0]


class RecordParse(unittest.TestCase):
    def test_full_record(self):
        rec = dmarc.parse_record("v=DMARC1; p=Reject; sp=none; pct=20; adkim=s; aspf=r; "
                                 "rua=mailto:a@x.example,mailto:b@x.example; ruf=mailto:f@x.example; "
                                 "fo=1; rf=afrf; ri=3600; zz=unknown;")
        self.assertEqual((rec.p, rec.sp, rec.pct, rec.adkim, rec.aspf, rec.ri, rec.fo),
                         ("reject", "none", 20, "s", "r", 3600, "1"))
        self.assertEqual(rec.rua, ["mailto:a@x.example", "mailto:b@x.example"])
        self.assertEqual(rec.defects, [])

    def test_version_must_come_first(self):
        self.assertFalse(dmarc.is_dmarc("p=none; v=DMARC1"))
        self.assertTrue(dmarc.is_dmarc("v = DMARC1 ;p=none"))
        self.assertFalse(dmarc.is_dmarc("v=DMARC10; p=none"))
        with self.assertRaises(dmarc.RecordError):
            dmarc.parse_record("p=none; v=DMARC1")

    def test_missing_or_bad_p(self):
        for text in ("v=DMARC1", "v=DMARC1; p=block", "v=DMARC1; p=none; sp=maybe"):
            with self.assertRaises(dmarc.RecordError, msg=text):
                dmarc.parse_record(text)
        # RFC 7489 §6.6.3 step 6.1: with a usable rua=, read as p=none
        rec = dmarc.parse_record("v=DMARC1; p=block; rua=mailto:r@x.example")
        self.assertEqual(rec.p, "none")
        self.assertTrue(rec.defects)

    def test_duplicated_and_malformed_tags(self):
        for text in ("v=DMARC1; p=none; p=reject", "v=DMARC1; p=none; junk", "v=DMARC1; p=none; 1x=y"):
            with self.assertRaises(dmarc.RecordError, msg=text):
                dmarc.parse_record(text)

    def test_bad_optional_values_are_defaults(self):
        rec = dmarc.parse_record("v=DMARC1; p=quarantine; pct=200; adkim=x; ri=soon")
        self.assertEqual((rec.pct, rec.adkim, rec.ri), (100, "r", 86400))
        self.assertEqual(len(rec.defects), 3)


class TreeWalk(unittest.TestCase):
    def test_names(self):
        self.assertEqual(dmarc.walk_names("a.b.example.org"), ["a.b.example.org", "b.example.org", "example.org", "org"])
        long = ".".join("l%d" % i for i in range(10))
        names = dmarc.walk_names(long)
        self.assertEqual(len(names), 8)
        self.assertEqual(len(names[1].split(".")), 7)
        self.assertEqual(names[-1], "l9")

    def test_org_domain(self):
        rec = dmarc.parse_record("v=DMARC1; p=none")
        F = dmarc.Found
        self.assertEqual(dmarc.org_domain("a.b.example.org", [F("a.b.example.org"), F("b.example.org"),
                                                              F("example.org", rec), F("org")]), "example.org")
        self.assertEqual(dmarc.org_domain("a.example.org", [F("a.example.org"), F("example.org"), F("org")]),
                         "a.example.org")
        psd = dmarc.parse_record("v=DMARC1; p=none; psd=y")
        self.assertEqual(dmarc.org_domain("a.b.gov.example", [F("a.b.gov.example"), F("b.gov.example"),
                                                              F("gov.example", psd), F("example")]), "b.gov.example")
        own = dmarc.parse_record("v=DMARC1; p=none; psd=n")
        self.assertEqual(dmarc.org_domain("a.b.example.org", [F("a.b.example.org"), F("b.example.org", own),
                                                              F("example.org", rec)]), "b.example.org")

    def test_subdomain_policy_found_at_the_org_domain(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; sp=quarantine")
        res = run(zone, "mail.example.org", spf("fail", "mail.example.org"))
        self.assertEqual((res.result, res.policy, res.disposition, res.record_domain, res.org_domain),
                         ("fail", "quarantine", "quarantine", "example.org", "example.org"))
        self.assertEqual([q for q, _t in zone.queries], ["_dmarc.mail.example.org", "_dmarc.example.org", "_dmarc.org"])
        res = run(zone, "example.org", spf("fail", "example.org"))
        self.assertEqual((res.policy, res.disposition), ("reject", "reject"))
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
        self.assertEqual(run(zone, "a.example.org").policy, "reject")       # no sp=: p


class Alignment(unittest.TestCase):
    def zone(self, extra=""):
        return FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject" + extra)

    def test_relaxed_spf_and_dkim(self):
        self.assertEqual(run(self.zone(), "example.org", spf("pass", "bounce.example.org")).result, "pass")
        dk = DkimResult("pass", "mail.example.org", "s")
        self.assertEqual(run(self.zone(), "news.example.org", None, [dk]).result, "pass")

    def test_strict_spf_and_dkim(self):
        zone = self.zone("; aspf=s; adkim=s")
        self.assertEqual(run(zone, "example.org", spf("pass", "bounce.example.org")).result, "fail")
        self.assertEqual(run(zone, "example.org", None, [DkimResult("pass", "mail.example.org")]).result, "fail")
        self.assertEqual(run(zone, "example.org", spf("pass", "EXAMPLE.org.")).result, "pass")
        self.assertEqual(run(zone, "example.org", None, [DkimResult("pass", "example.org")]).result, "pass")

    def test_unrelated_or_failing_identifiers_do_not_align(self):
        zone = self.zone()
        self.assertEqual(run(zone, "example.org", spf("pass", "example.net")).result, "fail")
        self.assertEqual(run(zone, "example.org", spf("softfail", "example.org"),
                             [DkimResult("fail", "example.org"), DkimResult("pass", "other.example")]).result, "fail")
        # a sibling under a public suffix: "org" has no record, so the org domains differ
        self.assertEqual(run(zone, "example.org", spf("pass", "org")).result, "fail")

    def test_an_own_record_below_makes_its_own_org_domain(self):
        zone = self.zone().add("_dmarc.shop.example.org", "TXT", "v=DMARC1; p=none; psd=n")
        res = run(zone, "example.org", None, [DkimResult("pass", "shop.example.org")])
        self.assertEqual(res.result, "fail")


class Results(unittest.TestCase):
    def test_none_temperror_permerror(self):
        self.assertEqual(run(FakeResolver(), "example.org").result, "none")
        zone = FakeResolver()
        zone.temporary.add("_dmarc.example.org")
        self.assertEqual(run(zone, "example.org").result, "temperror")
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=nonsense")
        res = run(zone, "example.org")
        self.assertEqual(res.result, "permerror")
        self.assertIn("p=nonsense", res.ar_text())
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=none", "v=DMARC1; p=reject")
        self.assertEqual(run(zone, "example.org").result, "permerror")
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=spf1 -all")     # not DMARC: discarded
        self.assertEqual(run(zone, "example.org").result, "none")

    def test_aligned_temporary_failure_is_temperror_not_fail(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
        res = run(zone, "example.org", spf("temperror", "example.org"))
        self.assertEqual((res.result, res.disposition), ("temperror", "none"))

    def test_several_or_no_from_addresses(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
        for head in ("From: a@example.org, b@example.net\r\n", "From: a@example.org\r\nFrom: b@example.org\r\n",
                     "Subject: none\r\n", "From: undisclosed\r\n"):
            out = []
            dmarc.check(fields(head), None, [], zone, out.append)
            self.assertEqual(out[0].result, "permerror", head)
            self.assertEqual(out[0].disposition, "none")
        self.assertEqual(zone.queries, [])

    def test_pct_sampling_downgrades_outside_the_sample(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; pct=30")
        self.assertEqual(run(zone, "example.org", draw=29).disposition, "reject")
        self.assertEqual(run(zone, "example.org", draw=30).disposition, "quarantine")
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=quarantine; pct=0")
        self.assertEqual(run(zone, "example.org", draw=0).disposition, "none")

    def test_ar_text(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
        self.assertEqual(run(zone, "example.org", spf("pass", "example.org")).ar_text(),
                         "dmarc=pass (p=reject dis=none) header.from=example.org")
        self.assertEqual(run(zone, "example.org").ar_text(),
                         "dmarc=fail (p=reject dis=reject) header.from=example.org")

    def test_actions(self):
        fail = dmarc.DmarcResult("fail", "example.org", "reject", "reject")
        quarantine = dmarc.DmarcResult("fail", "example.org", "quarantine", "quarantine")
        self.assertEqual([action_for(fail, "enforce", a) for a in ("reject", "junk", "mark")], ["reject", "junk", ""])
        self.assertEqual([action_for(quarantine, "enforce", a) for a in ("reject", "junk", "mark")], ["junk", "junk", ""])
        self.assertEqual(action_for(fail, "header", "reject"), "")
        self.assertEqual(action_for(dmarc.DmarcResult("pass", "x", "reject"), "enforce", "reject"), "")


class Env:
    peer_ip, mail_from, helo, queue_id, spf = "192.0.2.1", "joe@example.org", "mx.example.org", "Q1", None


class CombinedField(unittest.TestCase):
    MESSAGE = (b"Authentication-Results: MX.Example.TEST ; dmarc=pass header.from=bank.example\r\n"
               b"Authentication-Results: other.example; spf=pass\r\n"
               b"From: Joe <joe@example.org>\r\nSubject: hi\r\n\r\nbody\r\n")

    def test_one_field_our_host_first_forgeries_removed(self):
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject").add(
            "example.org", "TXT", "v=spf1 -all")
        out = []
        checks = InboundChecks("mx.example.test", Env(), zone, None, 0, False, False, "enforce", "junk",
                               draw=lambda: 0)
        checks.run(self.MESSAGE, lambda data, action: out.append((data, action)))
        [(data, action)] = out
        self.assertEqual(action, "junk")
        head = data.split(b"\r\n\r\n")[0]
        fields_ = canon.split_message(data)[0]
        ours = [raw for name, raw in fields_ if name == b"authentication-results"]
        self.assertEqual(len(ours), 2)              # ours and other.example's
        self.assertTrue(data.startswith(b"Authentication-Results: mx.example.test;"))
        value = ours[0].decode().partition(":")[2].replace("\r\n", "")
        parts = [p.strip() for p in value.split(";")]
        self.assertEqual(parts[0], "mx.example.test")
        self.assertTrue(parts[1].startswith("spf=fail smtp.mailfrom=joe@example.org"), parts)
        self.assertEqual(parts[2], "dkim=none")
        self.assertEqual(parts[3], "dmarc=fail (p=reject dis=reject) header.from=example.org")
        self.assertNotIn(b"bank.example", head)
        self.assertIn(b"Authentication-Results: other.example; spf=pass", head)

    def test_clauses_and_field(self):
        self.assertEqual(clauses(None, None, None), ["none"])
        self.assertEqual(authentication_results("h", ["spf=pass smtp.mailfrom=a@b", "dkim=none"]),
                         b"Authentication-Results: h;\r\n\tspf=pass smtp.mailfrom=a@b;\r\n\tdkim=none\r\n")
        self.assertEqual(replace_results(b"Subject: x\r\n\r\nb\r\n", "h", b"A: 1\r\n"), b"A: 1\r\nSubject: x\r\n\r\nb\r\n")

    def test_session_spf_result_is_used_not_asked_again(self):
        env = Env()
        env.spf = spf("pass", "example.org")
        zone = FakeResolver().add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
        out = []
        InboundChecks("mx.example.test", env, zone, None, 0, True, False, "header").run(
            self.MESSAGE, lambda data, action: out.append((data, action)))
        self.assertNotIn(("example.org", 16), zone.queries)
        self.assertIn(b"dmarc=pass (p=reject dis=none) header.from=example.org", out[0][0])
        self.assertEqual(out[0][1], "")



class Deferred(unittest.TestCase):
    def test_answers_that_come_later(self):
        zone = FakeResolver(deferred=True).add("_dmarc.example.org", "TXT", "v=DMARC1; p=quarantine")
        out = []
        dmarc.check(fields("From: a@mail.example.org\r\n"), spf("pass", "example.org"), [], zone, out.append)
        for _ in range(10):
            zone.flush()
        self.assertEqual([(r.result, r.policy) for r in out], [("pass", "quarantine")])


if __name__ == "__main__":
    unittest.main()
