"""Direct tests of the RFC 5321 §4.1.2 path grammar in protocols/smtp/address.py."""

import unittest

from protocols.smtp.address import (Address, AddressError, parse_forward_path,
                                    parse_parameters, parse_reverse_path)


class ReversePathTest(unittest.TestCase):
    def test_simple_mailbox_and_parameters(self):
        addr, rest = parse_reverse_path("<alice@example.org> SIZE=100 BODY=8BITMIME")
        self.assertEqual(addr, Address("alice", "example.org", False))
        self.assertEqual(addr.text, "alice@example.org")
        self.assertEqual(rest, "SIZE=100 BODY=8BITMIME")

    def test_null_reverse_path(self):
        self.assertEqual(parse_reverse_path("<>"), (None, ""))
        self.assertEqual(parse_reverse_path("<> SIZE=1"), (None, "SIZE=1"))

    def test_space_after_colon_is_tolerated(self):
        addr, _ = parse_reverse_path(" <a@b.example>")
        self.assertEqual(addr.text, "a@b.example")

    def test_missing_angle_brackets_is_501(self):
        with self.assertRaises(AddressError) as cm:
            parse_reverse_path("alice@example.org")
        self.assertEqual(cm.exception.reply_tuple[:2], (501, "5.1.7"))

    def test_junk_after_path(self):
        with self.assertRaises(AddressError):
            parse_reverse_path("<a@b.example>SIZE=1")


class ForwardPathTest(unittest.TestCase):
    def ok(self, text, smtputf8=False):
        addr, rest = parse_forward_path(text, smtputf8=smtputf8)
        self.assertEqual(rest, "")
        return addr

    def bad(self, text, code=None, smtputf8=False):
        with self.assertRaises(AddressError) as cm:
            parse_forward_path(text, smtputf8=smtputf8)
        if code is not None:
            self.assertEqual(cm.exception.code, code)
        self.assertTrue(cm.exception.reply.endswith(b"\r\n"))
        return cm.exception

    def test_source_route_is_accepted_and_ignored(self):
        # RFC 5321 §4.1.1.3 / Appendix C
        self.assertEqual(self.ok("<@relay1.example,@relay2.example:joe@example.org>").text,
                         "joe@example.org")

    def test_bad_source_route(self):
        self.bad("<@relay1.example;joe@example.org>", 501)
        self.bad("<@:joe@example.org>", 501)

    def test_quoted_local_part(self):
        addr = self.ok('<"john smith"@example.org>')
        self.assertEqual(addr.local, "john smith")
        self.assertEqual(addr.text, '"john smith"@example.org')
        # a quoted string that is a valid Dot-string is shown unquoted
        self.assertEqual(self.ok('<"joe"@example.org>').text, "joe@example.org")
        # quoted-pairSMTP and a ">" inside quotes
        self.assertEqual(self.ok('<"a\\"b>c"@example.org>').local, 'a"b>c')

    def test_address_literals(self):
        self.assertEqual(self.ok("<joe@[192.0.2.1]>"), Address("joe", "[192.0.2.1]", True))
        self.assertTrue(self.ok("<joe@[IPv6:2001:db8::1]>").literal)
        self.bad("<joe@[300.1.1.1]>", 501)
        self.bad("<joe@[IPv6:zz::1]>", 501)
        self.bad("<joe@[192.0.2.1>", 501)

    def test_postmaster_without_domain(self):
        addr, _ = parse_forward_path("<Postmaster>", postmaster_domain="mx.example.org")
        self.assertEqual(addr.text, "postmaster@mx.example.org")

    def test_null_forward_path_refused(self):
        self.bad("<>", 501)

    def test_user_at_remote_at_local_refused(self):
        self.bad("<user@remote.example@local.example>", 501)

    def test_domain_syntax(self):
        self.bad("<joe@example.org.>", 501)      # trailing dot
        self.bad("<joe@example..org>", 501)      # empty label
        self.bad("<joe@.example.org>", 501)
        self.bad("<joe@-example.org>", 501)
        self.bad("<joe@>", 501)
        self.bad("<joe>", 501)
        self.bad("<@example.org>", 501)

    def test_local_part_syntax(self):
        self.bad("<.joe@example.org>", 501)
        self.bad("<joe.@example.org>", 501)
        self.bad("<jo..e@example.org>", 501)
        self.bad('<"unterminated@example.org>', 501)

    def test_control_characters_refused(self):
        self.bad("<jo\x00e@example.org>", 501)
        self.bad('<"jo\x07e"@example.org>', 501)
        self.bad("<joe@exa\x7fmple.org>", 501)

    def test_length_limits(self):
        # RFC 5321 §4.5.3.1.1: 64 octets of local part
        self.ok("<%s@example.org>" % ("a" * 64))
        self.assertEqual(self.bad("<%s@example.org>" % ("a" * 65)).code, 553)
        # RFC 1035 §2.3.4: 63-octet labels
        self.bad("<a@%s.org>" % ("b" * 64), 553)
        # RFC 5321 §4.5.3.1.3: whole path 256 octets (and §4.5.3.1.2: domain 255)
        domain = ".".join(["c" * 60] * 4)    # 243 octets
        self.ok("<%s@%s>" % ("a" * 10, domain))
        err = self.bad("<%s@%s>" % ("a" * 20, domain), 501)
        self.assertIn("Path too long", err.text)
        long_domain = ".".join(["d" * 63] * 4) + ".org"    # 259 octets
        self.bad("<a@%s>" % long_domain)

    def test_utf8_needs_smtputf8(self):
        err = self.bad("<jörg@example.org>")
        self.assertEqual(err.reply_tuple[:2], (553, "5.6.7"))    # RFC 6531 §3.5
        self.assertEqual(self.ok("<jörg@example.org>", smtputf8=True).local, "jörg")
        self.assertEqual(self.ok("<user@bücher.example>", smtputf8=True).domain, "bücher.example")
        self.bad("<user@bücher.example>")

    def test_utf8_path_limit_counts_octets(self):
        self.bad("<%s@example.org>" % ("ö" * 40), 553, smtputf8=True)   # 80 octets > 64


class ParameterTest(unittest.TestCase):
    def test_keywords_case_insensitive(self):
        self.assertEqual(parse_parameters("size=10 Body=8BITMIME smtputf8"),
                         {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None})
        self.assertEqual(parse_parameters(""), {})

    def test_bad_parameters(self):
        for text in ("-X=1", "SIZE=", "A=b=c", "SIZE=1 size=2", "X=\x01"):
            with self.assertRaises(AddressError, msg=text) as cm:
                parse_parameters(text)
            self.assertEqual(cm.exception.reply_tuple[:2], (501, "5.5.4"))


if __name__ == "__main__":
    unittest.main()


class FastPathTest(unittest.TestCase):
    """The one-regex path for common addresses answers as the full parser does,
    for every input it takes (random paths around each rule's edges)."""

    PIECES = ["a", "Z", "0", "9", ".", "-", "@", "<", ">", " ", "+", "=", "_", "~", '"', "\\", ":",
              ",", "[", "]", "ö", "\x01", "\x7f", "a" * 60, "b" * 63, "c" * 64, "d" * 200,
              "x.example", "SIZE=10", "BODY=8BITMIME", "Postmaster"]

    def full(self, fn, s):
        from unittest import mock
        try:
            with mock.patch("protocols.smtp.address._simple_path", return_value=None):
                return fn(s)
        except AddressError as e:
            return ("error", e.reply_tuple)

    def test_fast_and_full_parser_agree(self):
        import random
        from protocols.smtp import address
        rnd, taken = random.Random(5321), 0
        shapes = ["<{l}@{d}>{r}", " <{l}@{d}>{r}", "<{l}@{d}.{d}>{r}", "{x}"]
        for _ in range(20000):
            part = lambda: "".join(rnd.choice(self.PIECES if rnd.random() < 0.2 else self.PIECES[:4] + ["-", "."])
                                   for _ in range(rnd.randint(1, 4)))
            s = rnd.choice(shapes).format(l=part(), d=part(), x=part(),
                                          r=rnd.choice(["", " ", "  ", " SIZE=1", " x y ", "x", ">"]))
            simple = address._simple_path(s)
            if simple is None:
                continue
            taken += 1
            for fn in (parse_reverse_path, parse_forward_path):
                self.assertEqual(fn(s), self.full(fn, s), repr(s))
        self.assertGreater(taken, 1000)

    def test_limits_go_to_the_full_parser(self):
        from protocols.smtp import address
        self.assertIsNotNone(address._simple_path("<%s@example.org>" % ("a" * 64)))
        for s in ("<%s@example.org>" % ("a" * 65), "<a@%s>" % ".".join(["d" * 63] * 4 + ["org"]),
                  "<%s@%s>" % ("a" * 20, ".".join(["c" * 60] * 4))):
            self.assertIsNone(address._simple_path(s), s)
            with self.assertRaises(AddressError):
                parse_forward_path(s)
