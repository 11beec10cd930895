"""TXT records (RFC 1035 §3.3.14): the codec, and lookups through our resolver
over loopback against tests/dnsfake.py (cache, TCP after truncation)."""

import struct
import unittest

from protocols.dns import codec as dns
from protocols.dns.codec import Message, Question, Record, decode_message, encode_message
from protocols.dns.resolver import Answer, DnsError
from tests.test_dns_resolver import LoopTestCase


def reply_with(rdata: bytes) -> bytes:
    """A reply to "example.org TXT" whose one answer carries ``rdata``."""
    msg = Message(id=7, qr=True, questions=[Question("example.org", dns.TYPE_TXT)],
                  answers=[Record("example.org", dns.TYPE_TXT, 1, 60, b"")])
    wire = encode_message(msg)
    return wire[:-2] + struct.pack("!H", len(rdata)) + rdata


class TxtCodecTest(unittest.TestCase):
    def test_multi_string(self):
        msg = decode_message(reply_with(b"\x07v=spf1 \x04-all"))
        self.assertEqual(msg.answers[0].data, (b"v=spf1 ", b"-all"))
        self.assertEqual(dns.txt_text(msg.answers[0].data), b"v=spf1 -all")

    def test_empty_string_and_empty_rdata(self):
        self.assertEqual(decode_message(reply_with(b"\x00")).answers[0].data, (b"",))
        self.assertEqual(decode_message(reply_with(b"\x00\x02hi\x00")).answers[0].data, (b"", b"hi", b""))
        self.assertEqual(decode_message(reply_with(b"")).answers[0].data, ())

    def test_string_past_rdlength_is_a_format_error(self):
        with self.assertRaises(dns.DnsFormatError):
            decode_message(reply_with(b"\x05abc"))
        with self.assertRaises(dns.DnsFormatError):
            decode_message(reply_with(b"\x02hi\x09"))

    def test_255_octet_limit(self):
        self.assertEqual(dns.encode_txt([b"x" * 255]), b"\xff" + b"x" * 255)
        with self.assertRaises(dns.DnsNameError):
            dns.encode_txt([b"x" * 256])
        parts = dns.split_txt(b"k" * 600)
        self.assertEqual([len(p) for p in parts], [255, 255, 90])
        self.assertEqual(dns.split_txt(b""), (b"",))

    def test_round_trip(self):
        for strings in ((b"",), (b"a", b"", b"b" * 255), tuple(bytes([i]) * i for i in range(0, 256, 51))):
            msg = Message(id=1, qr=True, answers=[Record("t.example", dns.TYPE_TXT, 1, 5, strings)])
            self.assertEqual(decode_message(encode_message(msg)).answers[0].data, strings)

    def test_str_values_encode_as_utf8(self):
        self.assertEqual(dns.encode_txt(["h\u00e9"]), b"\x03h\xc3\xa9")
        self.assertEqual(dns.encode_txt("one"), b"\x03one")


class TxtResolverTest(LoopTestCase):
    def test_txt_lookup(self):
        self.srv.add("example.org", dns.TYPE_TXT, (b"v=spf1 ", b"mx -all"))
        self.srv.add("example.org", dns.TYPE_TXT, (b"google-site-verification=x",))
        result = self.resolve("example.org", dns.TYPE_TXT)
        self.assertIsInstance(result, Answer)
        self.assertEqual(sorted(result.records), [(b"google-site-verification=x",), (b"v=spf1 ", b"mx -all")])

    def test_txt_cached(self):
        self.srv.add("example.org", dns.TYPE_TXT, (b"v=spf1 -all",))
        self.resolve("example.org", dns.TYPE_TXT)
        self.resolve("example.org", dns.TYPE_TXT)
        self.assertEqual(self.srv.count("example.org", dns.TYPE_TXT), 1)

    def test_big_txt_over_tcp_after_truncation(self):
        big = dns.split_txt(b"v=spf1 " + b" ".join(b"ip4:192.0.2.%d" % i for i in range(100)) + b" -all")
        self.srv.add("big.example.org", dns.TYPE_TXT, big)
        self.srv.behaviour[("big.example.org", dns.TYPE_TXT)] = "truncate"
        result = self.resolve("big.example.org", dns.TYPE_TXT)
        self.assertEqual(result.records, [big])
        self.assertEqual([p for p, n, t in self.srv.queries if n == "big.example.org"], ["udp", "tcp"])

    def test_nodata_and_nxdomain(self):
        self.srv.add("a.example.org", dns.TYPE_A, "192.0.2.1")
        self.assertEqual(self.resolve("a.example.org", dns.TYPE_TXT).kind, "nodata")
        result = self.resolve("none.example.org", dns.TYPE_TXT)
        self.assertIsInstance(result, DnsError)
        self.assertEqual(result.kind, "nxdomain")

    def test_ptr_lookup(self):
        self.srv.add("1.2.0.192.in-addr.arpa", dns.TYPE_PTR, "mail.example.org")
        self.assertEqual(self.resolve("1.2.0.192.in-addr.arpa", dns.TYPE_PTR).records, ["mail.example.org"])


class SpfOverLoopbackTest(LoopTestCase):
    """check_host() driven by the real EventLoop and resolver."""

    def test_pass_and_fail(self):
        from protocols import spf
        self.srv.add("example.org", dns.TYPE_TXT, (b"v=spf1 mx -all",))
        self.srv.add("example.org", dns.TYPE_MX, dns.MX(10, "mx.example.org"))
        self.srv.add("mx.example.org", dns.TYPE_A, "192.0.2.25")
        for ip, want in (("192.0.2.25", "pass"), ("192.0.2.26", "fail")):
            result = self.wait(lambda done: spf.check_host(ip, "example.org", "a@example.org", "h", self.resolver,
                                                           done))
            self.assertEqual(result.result, want)


if __name__ == "__main__":
    unittest.main()
