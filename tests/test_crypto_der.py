"""DER (X.690) and PEM (RFC 7468) in protocols/crypto/der.py: known encodings,
round trips, and the non-DER input that must be refused."""

import datetime
import unittest

from protocols.crypto import der

UTC = datetime.timezone.utc


class EncodingTest(unittest.TestCase):
    def test_integers_in_their_fewest_octets_with_the_sign_bit(self):
        # X.690 clause 8.3's examples and the usual edge cases
        cases = {0: "020100", 1: "020101", 127: "02017f", 128: "02020080", 256: "02020100",
                 255: "020200ff", -1: "0201ff", -128: "020180", -129: "0202ff7f", 65537: "0203010001"}
        for n, hexed in cases.items():
            with self.subTest(n=n):
                self.assertEqual(der.integer(n).hex(), hexed)
                self.assertEqual(der.to_int(der.read_all(der.integer(n))), n)

    def test_lengths_short_and_long_form(self):
        self.assertEqual(der.octet_string(b"a" * 127)[:2].hex(), "047f")
        self.assertEqual(der.octet_string(b"a" * 128)[:3].hex(), "048180")
        self.assertEqual(der.octet_string(b"a" * 256)[:4].hex(), "04820100")
        for size in (0, 1, 127, 128, 255, 256, 70000):
            self.assertEqual(der.read_all(der.octet_string(b"x" * size)).value, b"x" * size)

    def test_object_identifiers(self):
        known = {"1.2.840.113549.1.1.11": "06092a864886f70d01010b", "2.5.4.3": "0603550403",
                 "1.3.101.112": "06032b6570", "2.5.29.17": "0603551d11", "2.999.3": "0603883703"}
        for dotted, hexed in known.items():
            with self.subTest(oid=dotted):
                self.assertEqual(der.oid(dotted).hex(), hexed)
                self.assertEqual(der.to_oid(der.read_all(bytes.fromhex(hexed))), dotted)

    def test_times_utc_until_2049_generalized_from_2050(self):
        t = datetime.datetime(2026, 11, 29, 20, 5, 9, tzinfo=UTC)
        self.assertEqual(der.validity_time(t), b"\x17\x0d261129200509Z")
        late = datetime.datetime(2050, 1, 1, tzinfo=UTC)
        self.assertEqual(der.validity_time(late), b"\x18\x0f20500101000000Z")
        for when in (t, late, datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)):
            self.assertEqual(der.to_time(der.read_all(der.validity_time(when))), when)

    def test_named_bits_drop_trailing_zeros(self):
        # keyUsage digitalSignature(0) + keyEncipherment(2): 101 then 5 unused bits
        self.assertEqual(der.named_bits(0, 2).hex(), "030205a0")
        self.assertEqual(der.named_bits(0).hex(), "03020780")

    def test_set_of_sorts_its_members(self):
        self.assertEqual(der.set_of(der.integer(2), der.integer(1)).hex(), "3106020101020102")

    def test_sequences_and_context_tags_round_trip(self):
        inner = der.sequence(der.integer(5), der.null(), der.utf8("é"), der.printable("AB"),
                             der.bit_string(b"\x01\x02"), der.boolean(True),
                             der.context(0, der.integer(2)), der.context(2, b"host", constructed=False))
        items = der.children(der.read_all(inner))
        self.assertEqual([i.tag for i in items], [0x02, 0x05, 0x0C, 0x13, 0x03, 0x01, 0xA0, 0x82])
        self.assertEqual(der.to_bits(items[4]), b"\x01\x02")
        self.assertEqual(items[2].value.decode("utf-8"), "é")
        self.assertEqual(der.to_int(der.read_all(items[6].value)), 2)


class StrictDecodingTest(unittest.TestCase):
    def test_non_der_is_refused_with_a_reason(self):
        bad = {"0202007f": "shortest", "0202ff80": "shortest", "0481050102030405": "shortest",
               "3080": "indefinite", "040501": "truncated", "02": "truncated", "1f0100": "high tag",
               "0601": "truncated", "060180": "malformed", "06020180": "malformed"}
        for hexed, words in bad.items():
            with self.subTest(der=hexed):
                with self.assertRaises(der.DerError) as cm:
                    item = der.read_all(bytes.fromhex(hexed))
                    der.to_int(item) if item.tag == der.INTEGER else der.to_oid(item)
                self.assertIn(words, str(cm.exception))

    def test_trailing_octets_and_wrong_tags(self):
        with self.assertRaises(der.DerError):
            der.read_all(bytes.fromhex("02010100"))
        with self.assertRaises(der.DerError):
            der.children(der.read_all(der.integer(1)))
        with self.assertRaises(der.DerError):
            der.to_bits(der.read_all(der.bit_string(b"\x80", unused=7)))


class PemTest(unittest.TestCase):
    def test_lines_of_64_and_back(self):
        body = bytes(range(256)) * 2
        text = der.pem("CERTIFICATE", body)
        lines = text.splitlines()
        self.assertEqual(lines[0], b"-----BEGIN CERTIFICATE-----")
        self.assertEqual(lines[-1], b"-----END CERTIFICATE-----")
        self.assertTrue(all(len(line) == 64 for line in lines[1:-2]))
        self.assertEqual(der.pem_block(b"text before\n" + text + b"after", "CERTIFICATE"), ("CERTIFICATE", body))

    def test_several_blocks_crlf_and_bad_base64(self):
        text = der.pem("A", b"1") + der.pem("B", b"22").replace(b"\n", b"\r\n")
        self.assertEqual(der.pem_blocks(text), [("A", b"1"), ("B", b"22")])
        with self.assertRaises(der.DerError):
            der.pem_block(text, "C")
        with self.assertRaises(der.DerError):
            der.pem_blocks(b"-----BEGIN X-----\n!!!!\n-----END X-----\n")


if __name__ == "__main__":
    unittest.main()
