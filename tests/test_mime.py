"""protocols/mime.py: the MIME tree over raw bytes, checked by slicing the
message at the offsets and comparing with the exact bytes each part must be
(what IMAP BODY[n] and BODY[n.MIME] will send)."""

import random
import unittest

from protocols import mime


def nested(eol=b"\r\n"):
    """mixed( alternative(text, html), rfc822( mixed(text, octets) ), attachment ) with
    a preamble and an epilogue; returns (message, {section: (mime header, body)})."""
    parts = {
        "1.1": (b"Content-Type: text/plain; charset=utf-8" + eol + eol, b"plain text" + eol + b"two lines"),
        "1.2": (b"Content-Type: text/html" + eol + eol, b"<p>html</p>"),
        "2.1": (b"Content-Type: text/plain" + eol + eol, b"inner text"),
        "2.2": (b"Content-Type: application/octet-stream" + eol + b"Content-Transfer-Encoding: base64"
                + eol + eol, b"AAEC"),
        "3": (b"Content-Type: application/pdf; name=\"a b.pdf\"" + eol
              + b"Content-Disposition: attachment;" + eol + b" filename=\"a b.pdf\"" + eol
              + b"Content-ID: <id1@x>" + eol + eol, b"%PDF" + eol),
    }
    inner_msg = (b"Subject: inner" + eol + b"Content-Type: multipart/mixed; boundary=in" + eol + eol
                 + b"--in" + eol + parts["2.1"][0] + parts["2.1"][1] + eol
                 + b"--in" + eol + parts["2.2"][0] + parts["2.2"][1] + eol + b"--in--" + eol)
    parts["2"] = (b"Content-Type: message/rfc822" + eol + eol, inner_msg)
    alt = (b"--alt" + eol + parts["1.1"][0] + parts["1.1"][1] + eol
           + b"--alt  " + eol + parts["1.2"][0] + parts["1.2"][1] + eol + b"--alt--" + eol)
    parts["1"] = (b"Content-Type: multipart/alternative; boundary=\"alt\"" + eol + eol, alt)
    msg = (b"From: a@x" + eol + b"MIME-Version: 1.0" + eol
           + b"Content-Type: multipart/mixed;" + eol + b"\tboundary=\"=_outer\" (a comment)" + eol + eol
           + b"This is the preamble." + eol
           + b"--=_outer" + eol + parts["1"][0] + parts["1"][1] + eol
           + b"--=_outer" + eol + parts["2"][0] + parts["2"][1] + eol
           + b"--=_outer" + eol + parts["3"][0] + parts["3"][1] + eol
           + b"--=_outer--" + eol + b"epilogue" + eol)
    return msg, parts


def section(root, text):
    return mime.part_at(root, [int(n) for n in text.split(".")])


class TreeTest(unittest.TestCase):
    def test_offsets_give_the_exact_bytes_of_every_part(self):
        for eol in (b"\r\n", b"\n"):
            msg, parts = nested(eol)
            root = mime.parse(msg)
            self.assertEqual(root.content_type, "multipart/mixed")
            self.assertEqual(root.param("boundary"), "=_outer")
            self.assertEqual(len(root.parts), 3)
            for name, (header, body) in parts.items():
                with self.subTest(eol=eol, part=name):
                    p = section(root, name)
                    self.assertEqual(msg[p.start:p.body_start], header)
                    self.assertEqual(msg[p.body_start:p.end], body)
                    self.assertEqual(p.header_lines, header.count(b"\n"))
                    self.assertEqual(p.body_lines, body.count(b"\n"))
                    self.assertEqual(p.defects, [])

    def test_content_fields_of_a_leaf(self):
        msg, _ = nested()
        p = section(mime.parse(msg), "3")
        self.assertEqual((p.content_type, p.param("name")), ("application/pdf", "a b.pdf"))
        self.assertEqual((p.disposition, p.disposition_params), ("attachment", [("filename", "a b.pdf")]))
        self.assertEqual(p.content_id, "<id1@x>")
        self.assertEqual(section(mime.parse(msg), "2.2").encoding, "base64")

    def test_message_rfc822_holds_a_parsed_message(self):
        msg, parts = nested()
        p = section(mime.parse(msg), "2")
        inner = p.message
        self.assertEqual(inner.start, p.body_start)
        self.assertEqual(msg[inner.start:inner.body_start],
                         b"Subject: inner\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n")
        self.assertEqual(inner.content_type, "multipart/mixed")
        self.assertEqual([c.content_type for c in inner.parts], ["text/plain", "application/octet-stream"])

    def test_non_multipart_message_has_only_part_one(self):
        msg = b"Subject: s\nContent-Type: text/plain; charset=\"iso-8859-1\"\n\nline 1\nline 2\n"
        root = mime.parse(msg)
        self.assertIs(mime.part_at(root, [1]), root)
        self.assertIsNone(mime.part_at(root, [2]))
        self.assertIsNone(mime.part_at(root, [1, 1]))
        self.assertEqual(msg[root.body_start:root.end], b"line 1\nline 2\n")
        self.assertEqual((root.header_lines, root.body_lines), (3, 2))
        self.assertEqual(root.param("CHARSET"), "iso-8859-1")

    def test_out_of_range_sections_are_none(self):
        root = mime.parse(nested()[0])
        for path in ([0], [4], [1, 3], [3, 1], [2, 3], [2, 1, 1]):
            self.assertIsNone(mime.part_at(root, path), path)


class DefaultsTest(unittest.TestCase):
    def test_missing_content_type_is_text_plain_us_ascii(self):
        root = mime.parse(b"Subject: s\r\n\r\nbody\r\n")
        self.assertEqual((root.content_type, root.params, root.default_type),
                         ("text/plain", [("charset", "us-ascii")], True))
        self.assertEqual(root.encoding, "7bit")

    def test_invalid_content_type_falls_back_with_a_defect(self):
        for value in (b"text", b"/plain", b";charset=x", b"text/"):
            root = mime.parse(b"Content-Type: " + value + b"\r\n\r\nbody")
            self.assertEqual(root.content_type, "text/plain", value)
            self.assertTrue(root.default_type)
            self.assertTrue(root.defects, value)

    def test_digest_parts_default_to_message_rfc822(self):
        msg = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
               b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n"
               b"--d\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n--d--\r\n")
        root = mime.parse(msg)
        first, second = root.parts
        self.assertEqual((first.content_type, first.default_type), ("message/rfc822", True))
        self.assertEqual(msg[first.message.body_start:first.message.end], b"first")
        self.assertEqual(first.message.content_type, "text/plain")
        self.assertEqual(second.content_type, "text/plain")

    def test_part_without_header_and_empty_part(self):
        msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nno header\r\n--b\r\n--b--\r\n"
        root = mime.parse(msg)
        self.assertEqual(len(root.parts), 2)
        a, b = root.parts
        self.assertEqual((msg[a.start:a.body_start], msg[a.body_start:a.end]), (b"\r\n", b"no header"))
        self.assertEqual((b.start, b.end), (b.body_start, b.end))
        self.assertEqual(msg[b.start:b.end], b"")


class LenientTest(unittest.TestCase):
    def test_missing_boundary_parameter(self):
        root = mime.parse(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n")
        self.assertEqual(root.parts, [])
        self.assertTrue(any("boundary" in d for d in root.defects))

    def test_boundary_never_appears(self):
        root = mime.parse(b"Content-Type: multipart/mixed; boundary=zz\r\n\r\njust text\r\n")
        self.assertEqual(root.parts, [])
        self.assertTrue(root.defects)

    def test_missing_close_delimiter_runs_to_the_end(self):
        msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
        root = mime.parse(msg)
        self.assertEqual([msg[p.body_start:p.end] for p in root.parts], [b"one", b"two\r\n"])
        self.assertTrue(any("close-delimiter" in d for d in root.defects))

    def test_longer_boundary_line_is_not_a_delimiter(self):
        msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--bb is text\r\n"
               b"x--b\r\n--b--\r\n")
        root = mime.parse(msg)
        self.assertEqual([msg[p.body_start:p.end] for p in root.parts], [b"--bb is text\r\nx--b"])

    def test_encoded_message_rfc822_is_a_leaf(self):
        root = mime.parse(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdA==\r\n")
        self.assertIsNone(root.message)
        self.assertTrue(root.defects)

    def test_deep_nesting_stops_with_a_defect(self):
        depth = 300
        msg = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
        msg += b"\r\ninnermost\r\n"
        root = mime.parse(msg)
        levels, p = 0, root
        while p.parts:
            p, levels = p.parts[0], levels + 1
        self.assertEqual(levels, mime.MAX_DEPTH)
        self.assertTrue(any("nested" in d for d in p.defects))

    def test_random_bytes_never_raise(self):
        rng = random.Random(9)
        msg, _ = nested()
        for _ in range(300):
            data = bytearray(msg)
            for _ in range(rng.randint(1, 20)):
                i = rng.randrange(len(data))
                data[i:i + rng.randint(0, 5)] = bytes(rng.choice(b"-\r\n;=\"(*'%bx ") for _ in range(rng.randint(0, 6)))
            root = mime.parse(bytes(data))
            for p in root.walk():
                self.assertTrue(p.start <= p.fields_end <= p.body_start <= p.end <= len(data))


class ParametersTest(unittest.TestCase):
    def ctype(self, value):
        return mime.parse(b"Content-Type: " + value + b"\r\n\r\n")

    def test_rfc2231_continuations_charset_and_language(self):
        # RFC 2231 §4.1's example
        p = self.ctype(b"application/x-stuff;\r\n title*0*=us-ascii'en'This%20is%20even%20more%20;\r\n"
                       b" title*1*=%2A%2A%2Afun%2A%2A%2A%20;\r\n title*2=\"isn't it!\"")
        self.assertEqual(p.param("title"), "This is even more ***fun*** isn't it!")
        self.assertEqual(p.params, [("title*", "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it%21")])

    def test_rfc2231_utf8_filename_and_plain_continuations(self):
        p = self.ctype(b"text/plain; name*=utf-8''%E2%82%AC%20rates.txt; long*0=\"ab\"; long*1=cd")
        self.assertEqual(p.param("name"), "\u20ac rates.txt")
        self.assertEqual(p.param("long"), "abcd")
        self.assertEqual(p.params[1], ("long", "abcd"))

    def test_comments_quoted_pairs_and_unquoted_specials(self):
        p = self.ctype(b"Text/HTML (a (nested) comment) ; charset = \"utf\\\"8\" ; name=a/b.txt;")
        self.assertEqual(p.content_type, "text/html")
        self.assertEqual(p.param("charset"), 'utf"8')
        self.assertEqual(p.param("name"), "a/b.txt")
        self.assertEqual(p.defects, [])

    def test_unknown_charset_and_duplicates_are_lenient(self):
        p = self.ctype(b"text/plain; name*=x-nonesuch''%C3%A9; charset=a; charset=b")
        self.assertEqual(p.param("name"), "\u00e9")
        self.assertEqual(p.param("charset"), "a")
        self.assertTrue(p.defects)

    def test_hostile_values_that_almost_match_the_common_shape(self):
        """Many empty parameters then junk: read by the general parser with
        its defects (a regex that could match these in many ways would take
        2**60 steps here before giving up)."""
        p = self.ctype(b"text/plain" + b"; x= " * 60 + b" (junk")
        self.assertEqual(p.content_type, "text/plain")
        self.assertEqual(p.params[0], ("x", ""))
        self.assertTrue(p.defects)


if __name__ == "__main__":
    unittest.main()
