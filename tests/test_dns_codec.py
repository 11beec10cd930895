"""Tests for protocols/dns/codec.py: hand-written byte vectors (RFC 1035 §4.1),
compression (§4.1.4) including hostile pointers, truncation and fuzzing."""

import random
import struct
import unittest

from protocols.dns import codec as dns
from protocols.dns.codec import (MX, SOA, DnsFormatError, DnsNameError, Message, Question, Record,
                           decode_message, encode_message, encode_query)

# Header: ID 0x1234, flags 0x0100 (RD), QDCOUNT 1, AN/NS/AR 0 (RFC 1035 §4.1.1).
QUERY_EXAMPLE_ORG_MX = (
    b"\x12\x34" b"\x01\x00" b"\x00\x01" b"\x00\x00" b"\x00\x00" b"\x00\x00"
    b"\x07example\x03org\x00"   # QNAME (§4.1.2)
    b"\x00\x0f" b"\x00\x01"      # QTYPE MX, QCLASS IN
)

# A response to it with compression: answer owners point at offset 12 (the
# QNAME), the MX exchange "mail" + pointer to 12, and an A record for
# mail.example.org whose owner points at the exchange (offset 43).
RESPONSE_MX = (
    b"\x12\x34" b"\x81\x80" b"\x00\x01" b"\x00\x02" b"\x00\x00" b"\x00\x01"
    b"\x07example\x03org\x00" b"\x00\x0f\x00\x01"            # 12..28
    # answer 1 at 29: owner ptr 12, MX IN ttl 3600, rdlength 9
    b"\xc0\x0c" b"\x00\x0f\x00\x01" b"\x00\x00\x0e\x10" b"\x00\x09"
    b"\x00\x0a" b"\x04mail\xc0\x0c"                           # pref 10, exchange at 43
    # answer 2: owner ptr 12, MX pref 20, exchange "mx2" + ptr 12
    b"\xc0\x0c" b"\x00\x0f\x00\x01" b"\x00\x00\x0e\x10" b"\x00\x08"
    b"\x00\x14" b"\x03mx2\xc0\x0c"
    # additional: owner ptr 43 (mail.example.org), A 192.0.2.25
    b"\xc0\x2b" b"\x00\x01\x00\x01" b"\x00\x00\x0e\x10" b"\x00\x04" b"\xc0\x00\x02\x19"
)


def header(qd=1, an=0, ns=0, ar=0, flags=0x8180, qid=0x1234):
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def question(name=b"\x07example\x03org\x00", qtype=15):
    return name + struct.pack("!HH", qtype, 1)


def rr(owner, rtype, rdata, ttl=300):
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


class QueryEncodingTest(unittest.TestCase):
    def test_example_org_mx_exact_bytes(self):
        self.assertEqual(encode_query("example.org", dns.TYPE_MX, 0x1234), QUERY_EXAMPLE_ORG_MX)

    def test_trailing_dot_and_case_do_not_change_the_name(self):
        self.assertEqual(encode_query("example.org.", dns.TYPE_MX, 0x1234), QUERY_EXAMPLE_ORG_MX)

    def test_rd_clear(self):
        self.assertEqual(encode_query("example.org", 15, 0x1234, rd=False)[2:4], b"\x00\x00")

    def test_edns_opt_record(self):
        # RFC 6891 §6.1.2: root owner, TYPE 41, CLASS = payload, TTL 0, RDLEN 0.
        q = encode_query("example.org", dns.TYPE_MX, 0x1234, edns_payload=1232)
        self.assertEqual(q[10:12], b"\x00\x01")  # ARCOUNT
        self.assertEqual(q[len(QUERY_EXAMPLE_ORG_MX):], b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")

    def test_idn_is_encoded_with_idna(self):
        q = encode_query("bücher.example", dns.TYPE_A, 1)
        self.assertIn(b"\x0dxn--bcher-kva\x07example\x00", q)

    def test_label_over_63_rejected(self):
        with self.assertRaises(DnsNameError):
            encode_query("a" * 64 + ".org", dns.TYPE_A, 1)
        encode_query("a" * 63 + ".org", dns.TYPE_A, 1)

    def test_name_over_255_rejected(self):
        name = ".".join(["a" * 63] * 3 + ["a" * 62])  # 3*64 + 63 + 1 = 256 octets
        with self.assertRaises(DnsNameError):
            encode_query(name, dns.TYPE_A, 1)
        encode_query(name[:-1], dns.TYPE_A, 1)  # 255 octets is fine

    def test_empty_label_rejected(self):
        with self.assertRaises(DnsNameError):
            encode_query("a..org", dns.TYPE_A, 1)


class DecodeTest(unittest.TestCase):
    def test_query_round_trip(self):
        m = decode_message(QUERY_EXAMPLE_ORG_MX)
        self.assertEqual((m.id, m.qr, m.rd, m.opcode, m.rcode), (0x1234, False, True, 0, 0))
        self.assertEqual(m.questions, [Question("example.org", 15, 1)])

    def test_response_with_compression(self):
        m = decode_message(RESPONSE_MX)
        self.assertTrue(m.qr and m.rd and m.ra)
        self.assertFalse(m.aa or m.tc)
        self.assertEqual([r.data for r in m.answers], [MX(10, "mail.example.org"), MX(20, "mx2.example.org")])
        self.assertEqual(m.answers[0].name, "example.org")
        self.assertEqual(m.answers[0].ttl, 3600)
        self.assertEqual(m.additional, [Record("mail.example.org", 1, 1, 3600, "192.0.2.25")])

    def test_names_are_lowercased(self):
        msg = header(an=1) + question(b"\x07EXAMPLE\x03Org\x00") + rr(b"\xc0\x0c", 5, b"\x03WWW\xc0\x0c")
        m = decode_message(msg)
        self.assertEqual(m.questions[0].name, "example.org")
        self.assertEqual(m.answers[0].data, "www.example.org")

    def test_aaaa(self):
        addr = bytes.fromhex("20010db8000000000000000000000025")
        m = decode_message(header(an=1) + question(qtype=28) + rr(b"\xc0\x0c", 28, addr))
        self.assertEqual(m.answers[0].data, "2001:db8::25")

    def test_soa_in_authority(self):
        rdata = (b"\x02ns\xc0\x0c" b"\x0ahostmaster\xc0\x0c"
                 + struct.pack("!5I", 2024010101, 7200, 3600, 1209600, 300))
        m = decode_message(header(ns=1, flags=0x8583) + question() + rr(b"\xc0\x0c", 6, rdata))
        self.assertEqual(m.rcode, dns.RCODE_NXDOMAIN)
        self.assertTrue(m.aa)
        self.assertEqual(m.authority[0].data, SOA("ns.example.org", "hostmaster.example.org",
                                                   2024010101, 7200, 3600, 1209600, 300))

    def test_unknown_type_kept_raw(self):
        m = decode_message(header(an=1) + question(qtype=99) + rr(b"\xc0\x0c", 99, b"\x05hello"))
        self.assertEqual(m.answers[0].data, b"\x05hello")  # type 99 (SPF, RFC 7208 §14.1): not decoded

    def test_root_name_and_odd_octets_are_escaped(self):
        m = decode_message(header(an=1) + question(b"\x00", 2) + rr(b"\x03a.b\x00", 5, b"\x02\x00z\x00"))
        self.assertEqual(m.questions[0].name, "")
        self.assertEqual(m.answers[0].name, "a\\046b")
        self.assertEqual(m.answers[0].data, "\\000z")


class HostileInputTest(unittest.TestCase):
    def assertFormatError(self, data):
        with self.assertRaises(DnsFormatError):
            decode_message(data)

    def test_pointer_to_itself(self):
        self.assertFormatError(header() + b"\xc0\x0c\x00\x01\x00\x01")

    def test_pointer_loop_between_two_names(self):
        # Name at 12: "a" then pointer to 12 again; would loop for ever.
        self.assertFormatError(header() + b"\x01a\xc0\x0c\x00\x01\x00\x01")
        # Two pointers pointing at each other.
        self.assertFormatError(header(an=1) + question() + rr(b"\xc0\x1f", 5, b"\xc0\x1d"))

    def test_forward_pointer(self):
        # Owner of the answer points forward into its own rdata.
        self.assertFormatError(header(an=1) + question() + rr(b"\xc0\x1f", 5, b"\x01x\x00"))

    def test_pointer_out_of_bounds(self):
        self.assertFormatError(header() + b"\xc0\xff\x00\x01\x00\x01")
        self.assertFormatError(header() + b"\x3f\xff\x00\x01\x00\x01")

    def test_truncated_pointer(self):
        self.assertFormatError(header() + b"\xc0")

    def test_reserved_label_types(self):
        self.assertFormatError(header() + b"\x40\x00\x00\x01\x00\x01")  # 01 prefix (RFC 6891 §5)
        self.assertFormatError(header() + b"\x80\x00\x00\x01\x00\x01")

    def test_label_over_63_on_the_wire(self):
        # 0x40 is a reserved type, so lengths above 63 can never be plain labels.
        self.assertFormatError(header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")

    def test_name_over_255_octets(self):
        long_name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 octets
        self.assertFormatError(header() + long_name + b"\x00\x01\x00\x01")
        ok_name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"  # 255
        self.assertEqual(len(decode_message(header() + ok_name + b"\x00\x01\x00\x01").questions[0].name), 253)

    def test_name_over_255_through_pointers(self):
        part = (b"\x3f" + b"a" * 63) * 3 + b"\x00"           # at 12, 193 octets
        msg = header(qd=2) + part + b"\x00\x01\x00\x01" + b"\x3f" + b"b" * 63 + b"\xc0\x0c\x00\x01\x00\x01"
        self.assertFormatError(msg)

    def test_rdlength_beyond_the_end(self):
        self.assertFormatError(header(an=1) + question() + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 40) + b"\x01\x02\x03\x04")

    def test_rdata_shorter_than_rdlength(self):
        self.assertFormatError(header(an=1) + question() + rr(b"\xc0\x0c", 15, b"\x00\x0a\x00\x00"))

    def test_wrong_a_length(self):
        self.assertFormatError(header(an=1) + question() + rr(b"\xc0\x0c", 1, b"\x01\x02\x03"))

    def test_counts_larger_than_content(self):
        self.assertFormatError(header(an=5) + question())

    def test_trailing_garbage(self):
        self.assertFormatError(QUERY_EXAMPLE_ORG_MX + b"\x00")

    def test_every_truncation_of_a_valid_response(self):
        for packet in (RESPONSE_MX, encode_message(_big_response()), QUERY_EXAMPLE_ORG_MX):
            for n in range(len(packet)):
                with self.subTest(length=n):
                    self.assertFormatError(packet[:n])

    def test_mutation_fuzz_raises_only_format_errors(self):
        rng = random.Random(1035)
        seeds = [RESPONSE_MX, QUERY_EXAMPLE_ORG_MX, encode_message(_big_response())]
        decoded = 0
        for _ in range(5000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                op = rng.random()
                pos = rng.randrange(len(data))
                if op < 0.6:
                    data[pos] = rng.randrange(256)
                elif op < 0.8:
                    del data[pos:pos + rng.randint(1, 4)]
                else:
                    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
                if not data:
                    data = bytearray(b"\x00")
            try:
                decode_message(bytes(data))
                decoded += 1
            except DnsFormatError:
                pass
        self.assertGreater(decoded, 0)  # some mutations stay valid: the fuzz is not vacuous


def _big_response():
    return Message(id=7, qr=True, aa=True, questions=[Question("example.org", dns.TYPE_MX)],
                   answers=[Record("example.org", dns.TYPE_MX, 1, 60, MX(5, "mx.example.org")),
                            Record("alias.example.org", dns.TYPE_CNAME, 1, 60, "mx.example.org")],
                   authority=[Record("example.org", dns.TYPE_SOA, 1, 60,
                                     SOA("ns.example.org", "h.example.org", 1, 2, 3, 4, 5))],
                   additional=[Record("mx.example.org", dns.TYPE_A, 1, 60, "192.0.2.1"),
                               Record("mx.example.org", dns.TYPE_AAAA, 1, 60, "2001:db8::1")])


class EncodeResponseTest(unittest.TestCase):
    def test_round_trip_every_supported_type(self):
        msg = _big_response()
        self.assertEqual(decode_message(encode_message(msg)), msg)
        self.assertEqual(decode_message(encode_message(msg, compress=False)), msg)

    def test_compression_shrinks_and_points_backwards(self):
        msg = _big_response()
        packed = encode_message(msg)
        self.assertLess(len(packed), len(encode_message(msg, compress=False)))
        self.assertIn(b"\xc0\x0c", packed)  # the QNAME at offset 12 is reused

    def test_null_mx(self):
        msg = Message(id=1, qr=True, questions=[Question("example.org", 15)],
                      answers=[Record("example.org", 15, 1, 60, MX(0, ""))])
        packed = encode_message(msg)
        self.assertTrue(packed.endswith(b"\x00\x03\x00\x00\x00"))  # RFC 7505 §3: rdlength 3, pref 0, root
        self.assertEqual(decode_message(packed).answers[0].data, MX(0, ""))


class RoundTripPropertyTest(unittest.TestCase):
    """Seeded random messages survive encode → decode, compressed or not."""

    def random_name(self, rng, suffixes):
        if suffixes and rng.random() < 0.5:  # share suffixes so compression has work to do
            base = rng.choice(suffixes)
        else:
            base = ".".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-")
                                    for _ in range(rng.randint(1, 20))) for _ in range(rng.randint(1, 3)))
        name = base if rng.random() < 0.3 else "x%d.%s" % (rng.randrange(100), base)
        suffixes.append(base)
        return name

    def random_record(self, rng, suffixes):
        name = self.random_name(rng, suffixes)
        kind = rng.randrange(6)
        ttl = rng.randrange(1 << 31)
        if kind == 0:
            return Record(name, dns.TYPE_A, 1, ttl, ".".join(str(rng.randrange(256)) for _ in range(4)))
        if kind == 1:
            return Record(name, dns.TYPE_AAAA, 1, ttl, "2001:db8::%x" % rng.randrange(1 << 16))
        if kind == 2:
            return Record(name, dns.TYPE_MX, 1, ttl, MX(rng.randrange(1 << 16), self.random_name(rng, suffixes)))
        if kind == 3:
            return Record(name, dns.TYPE_CNAME, 1, ttl, self.random_name(rng, suffixes))
        if kind == 4:
            return Record(name, dns.TYPE_SOA, 1, ttl, SOA(self.random_name(rng, suffixes),
                                                          self.random_name(rng, suffixes),
                                                          *(rng.randrange(1 << 32) for _ in range(5))))
        return Record(name, dns.TYPE_TXT, 1, ttl, tuple(bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
                                                        for _ in range(1 + rng.randrange(3))))

    def test_round_trip(self):
        rng = random.Random(3596)
        for _ in range(300):
            suffixes = []
            sections = [[self.random_record(rng, suffixes) for _ in range(rng.randrange(4))] for _ in range(3)]
            msg = Message(id=rng.randrange(1 << 16), qr=True, opcode=rng.randrange(16), aa=rng.random() < 0.5,
                          tc=rng.random() < 0.5, rd=rng.random() < 0.5, ra=rng.random() < 0.5,
                          rcode=rng.randrange(16), questions=[Question(self.random_name(rng, suffixes), 15)],
                          answers=sections[0], authority=sections[1], additional=sections[2])
            for compress in (True, False):
                self.assertEqual(decode_message(encode_message(msg, compress)), msg)


class NameHelpersTest(unittest.TestCase):
    def test_names_equal_is_case_insensitive(self):
        self.assertTrue(dns.names_equal("MX.Example.ORG.", "mx.example.org"))
        self.assertFalse(dns.names_equal("mx.example.org", "mx.example.net"))

    def test_normalize_idn(self):
        self.assertEqual(dns.normalize_name("Bücher.Example."), "xn--bcher-kva.example")

    def test_escapes_round_trip(self):
        self.assertEqual(dns.name_to_labels("a\\046b.c"), [b"a.b", b"c"])
        self.assertEqual(dns.name_to_labels("a\\.b.c"), [b"a.b", b"c"])
        self.assertEqual(dns.normalize_name("a\\.b.c"), "a\\046b.c")


if __name__ == "__main__":
    unittest.main()
