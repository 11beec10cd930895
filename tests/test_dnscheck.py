"""`dns check` without a network (protocols/dnscheck.py): expected records
against DNS answers, status per line, the record to publish, the exit status
(issue 13, "Operator help")."""

import base64
import unittest

from protocols import dnscheck
from protocols.crypto import ed25519
from protocols.dns import codec as dns
from protocols.dns.resolver import Answer, DnsError
from store.dkimkeys import KeyFile

HOST = "mail.example.org"
IP4, IP6 = "192.0.2.10", "2001:db8::10"
KEY = ed25519.generate()
P = base64.b64encode(KEY.public.raw).decode()
HELD = dnscheck.dkim_keys([KeyFile("example.org", "s1", "ed25519", "/k", 0.0, KEY.pem())])


def txt(*texts):
    return Answer([(t.encode(),) for t in texts], 300)


def good_zone():
    return {
        ("example.org", "MX"): Answer([dns.MX(10, HOST)], 300),
        (HOST, "A"): Answer([IP4], 300),
        (HOST, "AAAA"): Answer([IP6], 300),
        ("example.org", "TXT"): txt("google-site-verification=x", "v=spf1 mx -all"),
        ("s1._domainkey.example.org", "TXT"): Answer([(b"v=DKIM1; k=ed25519; ", ("p=" + P).encode())], 300),
        ("_dmarc.example.org", "TXT"): txt("v=DMARC1; p=reject"),
        ("_mta-sts.example.org", "TXT"): txt("v=STSv1; id=20261129"),
        ("_smtp._tls.example.org", "TXT"): txt("v=TLSRPTv1; rua=mailto:tls@example.org"),
        ("10.2.0.192.in-addr.arpa", "PTR"): Answer([HOST], 300),
        ("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR"): Answer([HOST + "."], 300),
    }


def run(zone, ips=(IP4, IP6), held=HELD):
    return dnscheck.report("example.org", HOST, list(ips), held, zone, "20261129")


def line(lines, what):
    found = [(i, s) for i, s in enumerate(lines) if what in s]
    assert len(found) == 1, (what, lines)
    return found[0]


class DnsCheckTest(unittest.TestCase):
    def test_all_ok(self):
        lines, ok = run(good_zone())
        self.assertTrue(ok, lines)
        self.assertEqual(lines[-1], "all required records are ok")
        self.assertEqual(len(lines), 11)          # MX A AAAA SPF DKIM DMARC STS TLSRPT PTR PTR + summary
        self.assertTrue(all(s.startswith("ok ") for s in lines[:-1]), lines)
        self.assertEqual(lines[0], "ok               MX example.org (RFC 5321 §5.1): 10 mail.example.org")

    def test_queries_cover_every_record(self):
        asked = dnscheck.queries("Example.org.", HOST, ["s1"]) + dnscheck.ptr_queries([IP4, IP6])
        self.assertEqual(sorted(asked), sorted(good_zone()))

    def test_missing_spf(self):
        zone = good_zone()
        zone[("example.org", "TXT")] = txt("google-site-verification=x")
        lines, ok = run(zone)
        self.assertFalse(ok)
        i, s = line(lines, "SPF example.org")
        self.assertEqual(s, "missing          SPF example.org (RFC 7208 §4.5): no v=spf1 record")
        self.assertEqual(lines[i + 1].strip(), 'publish: example.org. IN TXT "v=spf1 mx -all"')
        self.assertEqual(lines[-1], "1 required record(s) not ok")

    def test_two_spf_records_differ_permerror(self):
        zone = good_zone()
        zone[("example.org", "TXT")] = txt("v=spf1 mx -all", "v=spf1 ip4:192.0.2.10 -all")
        lines, ok = run(zone)
        self.assertFalse(ok)
        i, s = line(lines, "SPF example.org")
        self.assertTrue(s.startswith("differs"), s)
        self.assertIn("2 v=spf1 records: permerror (RFC 7208 §4.5)", s)
        self.assertIn("publish:", lines[i + 1])

    def test_spf_without_our_address_differs_and_ip4_covering_us_is_ok(self):
        zone = good_zone()
        zone[("example.org", "TXT")] = txt("v=spf1 ip4:198.51.100.0/24 -all")
        self.assertTrue(line(run(zone)[0], "SPF example.org")[1].startswith("differs"))
        zone[("example.org", "TXT")] = txt("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
        self.assertTrue(run(zone)[1])

    def test_dkim_key_mismatch(self):
        zone = good_zone()
        other = base64.b64encode(ed25519.generate().public.raw).decode()
        zone[("s1._domainkey.example.org", "TXT")] = txt("v=DKIM1; k=ed25519; p=" + other)
        lines, ok = run(zone)
        self.assertFalse(ok)
        i, s = line(lines, "DKIM s1._domainkey.example.org")
        self.assertTrue(s.startswith("differs"), s)
        self.assertEqual(lines[i + 1].strip(),
                         'publish: s1._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=%s" )' % P)

    def test_dkim_without_keys_says_how_to_make_one(self):
        lines, ok = run(good_zone(), held=[])
        self.assertFalse(ok)
        i, s = line(lines, "DKIM example.org")
        self.assertIn("no key in DATA/dkim/example.org/", s)
        self.assertIn("mailsrv.py dkim keygen example.org", lines[i + 1])

    def test_unreadable_key_file_is_named(self):
        held = dnscheck.dkim_keys([KeyFile("example.org", "s2", "rsa", "/d/s2.rsa.pem", 0.0, b"junk")])
        zone = good_zone()
        zone[("s2._domainkey.example.org", "TXT")] = txt("v=DKIM1; k=rsa; p=")
        lines, ok = run(zone, held=held)
        self.assertFalse(ok)
        i, s = line(lines, "DKIM s2._domainkey.example.org")
        self.assertTrue(s.startswith("differs"), s)
        self.assertIn("(DKIM key /d/s2.rsa.pem: ", lines[i + 1])

    def test_dmarc_absent_suggests_quarantine_and_any_valid_record_is_ok(self):
        zone = good_zone()
        del zone[("_dmarc.example.org", "TXT")]
        zone[("_dmarc.example.org", "TXT")] = DnsError("nxdomain", "NXDOMAIN")
        lines, ok = run(zone)
        self.assertFalse(ok)
        i, s = line(lines, "DMARC _dmarc.example.org")
        self.assertTrue(s.startswith("missing"), s)
        self.assertEqual(lines[i + 1].strip(), 'publish: _dmarc.example.org. IN TXT '
                                               '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"')
        zone[("_dmarc.example.org", "TXT")] = txt("v=DMARC1; p=none")
        self.assertTrue(run(zone)[1])

    def test_ptr_wrong(self):
        zone = good_zone()
        zone[("10.2.0.192.in-addr.arpa", "PTR")] = Answer(["host-10.provider.example"], 300)
        lines, ok = run(zone)
        self.assertFalse(ok)
        i, s = line(lines, "PTR 192.0.2.10")
        self.assertEqual(s, "differs          PTR 192.0.2.10 (RFC 8601 §3 iprev): host-10.provider.example")
        self.assertIn("10.2.0.192.in-addr.arpa. IN PTR mail.example.org.", lines[i + 1])

    def test_optional_records_missing_do_not_fail(self):
        zone = good_zone()
        zone[("_mta-sts.example.org", "TXT")] = DnsError("nxdomain", "NXDOMAIN")
        zone[("_smtp._tls.example.org", "TXT")] = DnsError("nodata", "no records")
        lines, ok = run(zone)
        self.assertTrue(ok, lines)
        i, s = line(lines, "MTA-STS")
        self.assertTrue(s.startswith("optional-missing"), s)
        self.assertIn('"v=STSv1; id=20261129"', lines[i + 1])
        self.assertTrue(line(lines, "TLS-RPT")[1].startswith("optional-missing"))

    def test_address_differs_and_dns_error_is_one_line_naming_the_server(self):
        zone = good_zone()
        zone[(HOST, "A")] = Answer(["198.51.100.7"], 300)
        zone[("example.org", "MX")] = DnsError("temporary", "SERVFAIL from 127.0.0.1:53")
        lines, ok = run(zone)
        self.assertFalse(ok)
        self.assertTrue(line(lines, " A mail.example.org")[1].startswith("differs"))
        i, s = line(lines, "MX example.org")
        self.assertEqual(s, "error            MX example.org (RFC 5321 §5.1): "
                            "example.org MX: SERVFAIL from 127.0.0.1:53")
        self.assertNotIn("publish", lines[i + 1])

    def test_without_known_addresses_any_address_will_do(self):
        lines, ok = dnscheck.report("example.org", HOST, [], HELD, good_zone(), "1", seen=[IP4, IP6])
        self.assertTrue(ok, lines)
        self.assertEqual(dnscheck.server_ips([], ["127.0.0.1", "0.0.0.0", "9.9.9.9"]), ["9.9.9.9"])
        self.assertEqual(dnscheck.addresses(HOST, good_zone()), [IP4, IP6])


if __name__ == "__main__":
    unittest.main()
