"""DKIM (RFC 6376, RFC 8301, RFC 8463): canonicalization, tag lists, signing
and verification, with the RFCs' own examples."""

import base64
import hashlib
import random
import re
import unittest

from protocols import dkim
from protocols import dkim_canon as canon
from protocols.crypto import ed25519, keys, rsa
from tests.spffake import FakeResolver

NOW = 1528637909                                    # t= of the RFC 8463 example
D = "football.example.com"

# RFC 8463 Appendix A.3, the signed message (lines as printed there, CRLF-joined).
RFC8463_MESSAGE = "\r\n".join([
    'DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;',
    ' d=football.example.com; i=@football.example.com;',
    ' q=dns/txt; s=brisbane; t=1528637909; h=from : to :',
    ' subject : date : message-id : from : subject : date;',
    ' bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;',
    ' b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus',
    ' Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==',
    'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;',
    ' d=football.example.com; i=@football.example.com;',
    ' q=dns/txt; s=test; t=1528637909; h=from : to : subject :',
    ' date : message-id : from : subject : date;',
    ' bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;',
    ' b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3',
    ' DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz',
    ' dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=',
    'From: Joe SixPack <joe@football.example.com>',
    'To: Suzie Q <suzie@shopping.example.net>',
    'Subject: Is dinner ready?',
    'Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)',
    'Message-ID: <20030712040037.46341.5F8J@football.example.com>',
    '',
    'Hi.',
    '',
    'We lost the game.  Are you hungry yet?',
    '',
    'Joe.',
    '',
]).encode()
# RFC 8463 Appendix A.1: the RSA secret key.
RFC8463_RSA_PEM = "\n".join([
    '-----BEGIN RSA PRIVATE KEY-----',
    'MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi',
    'Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM',
    'KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB',
    'AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm',
    '6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe',
    'zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy',
    '6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc',
    'uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy',
    'WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd',
    'WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a',
    'licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst',
    'o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe',
    'uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL',
    '-----END RSA PRIVATE KEY-----',
]).encode()
# RFC 8463 Appendix A.1 (RFC 8032 §7.1 test 1) and A.2: the Ed25519 seed, the key records.
RFC8463_ED25519_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RECORDS = {"brisbane": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
           "test": ("v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
                    'iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3Fu'
                    'tACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBf'
                    'O2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB')}
MSG = RFC8463_MESSAGE
RSA_KEY = keys.load_private_key(RFC8463_RSA_PEM)
ED_KEY = ed25519.Ed25519PrivateKey(base64.b64decode(RFC8463_ED25519_SEED))

PLAIN = MSG[MSG.index(b"From: "):]      # the example without its signatures


def resolver(records=None, domain=D):
    r = FakeResolver()
    for sel, rec in (RECORDS if records is None else records).items():
        r.add("%s._domainkey.%s" % (sel, domain), "TXT", rec)
    return r


def run(data, res=None, now=NOW):
    out = []
    dkim.verify(data, res or resolver(), out.extend, now)
    return out


def results(data, res=None, now=NOW):
    return [r.result for r in run(data, res, now)]


class CanonicalizationExamples(unittest.TestCase):
    """RFC 6376 §3.4.5, examples 1 to 3, exactly."""
    MESSAGE = (b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n")

    def test_example_1_relaxed_relaxed(self):
        fields, body = canon.split_message(self.MESSAGE)
        self.assertEqual([canon.header_relaxed(f) for _, f in fields], [b"a:X\r\n", b"b:Y Z\r\n"])
        self.assertEqual(canon.body_relaxed(body), b" C\r\nD E\r\n")

    def test_example_2_simple_simple(self):
        fields, body = canon.split_message(self.MESSAGE)
        self.assertEqual(b"".join(canon.header_simple(f) for _, f in fields), b"A: X\r\nB : Y\t\r\n\tZ  \r\n")
        self.assertEqual(canon.body_simple(body), b" C \r\nD \t E\r\n")

    def test_example_3_relaxed_simple(self):
        fields, body = canon.split_message(self.MESSAGE)
        self.assertEqual(b"".join(canon.header_relaxed(f) for _, f in fields), b"a:X\r\nb:Y Z\r\n")
        self.assertEqual(canon.body_simple(body), b" C \r\nD \t E\r\n")

    def test_empty_bodies(self):
        """§3.4.3: simple makes an empty body one CRLF; §3.4.4: relaxed leaves it empty."""
        self.assertEqual(canon.body_simple(b""), b"\r\n")
        self.assertEqual(canon.body_relaxed(b""), b"")
        self.assertEqual(canon.body_relaxed(b"\r\n\r\n"), b"")
        self.assertEqual(canon.body_simple(b"x"), b"x\r\n")


class TagLists(unittest.TestCase):
    def test_fws_and_trailing_semicolon(self):
        """§3.2: whitespace around names and values ignored; a final ';' allowed."""
        self.assertEqual(canon.parse_tags(" v = 1 ;\r\n\ta=rsa-sha256;"), {"v": "1", "a": "rsa-sha256"})

    def test_duplicate_tag_is_an_error(self):
        with self.assertRaises(canon.TagError):
            canon.parse_tags("v=1; v=1")

    def test_b_value_removed_not_bh(self):
        """§3.7: only b='s value is emptied, bh= stays."""
        field = b"DKIM-Signature: bh=abc; b=xy\r\n z; d=x\r\n"
        self.assertEqual(canon.without_b(field), b"DKIM-Signature: bh=abc; b=; d=x\r\n")

    def test_missing_required_tag_is_neutral(self):
        bad = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=AA==\r\n" + PLAIN
        self.assertEqual(results(bad), ["neutral"])

    def test_h_without_from_is_neutral(self):
        bad = re.sub(rb"from :", b"to :", MSG, count=2)          # the first signature's h=
        self.assertEqual(results(bad)[0], "neutral")


class MangledInput(unittest.TestCase):
    def test_mangled_messages_get_a_verdict_never_an_exception(self):
        """Bytes changed, dropped or inserted in the signed RFC 8463 example
        (its signature fields first): always one result per signature or
        "none", never an exception (seeded, 400 variants)."""
        rnd = random.Random(6376)
        for _ in range(400):
            b = bytearray(MSG)
            for _ in range(rnd.randint(1, 6)):
                pos = rnd.randrange(0, 900)
                op = rnd.random()
                if op < 0.4:
                    b[pos] = rnd.choice(b";=: \t\r\nabvhx09-")
                elif op < 0.7:
                    del b[pos]
                else:
                    b.insert(pos, rnd.randrange(256))
            out = run(bytes(b))
            self.assertTrue(out)
            self.assertTrue(all(r.result in ("pass", "fail", "neutral", "permerror", "temperror", "none")
                                for r in out))


class Rfc8463Example(unittest.TestCase):
    """RFC 8463 Appendix A: both signatures verify against the RFC's key records."""

    def test_both_signatures_pass(self):
        out = run(MSG)
        self.assertEqual([(r.result, r.algorithm, r.selector) for r in out],
                         [("pass", "ed25519-sha256", "brisbane"), ("pass", "rsa-sha256", "test")])
        self.assertEqual(out[0].ar_text(), "dkim=pass header.d=football.example.com header.s=brisbane "
                                           "header.b=/gCrinpc")

    def test_keys_match_the_records(self):
        self.assertEqual(base64.b64encode(ED_KEY.public.raw).decode(), RECORDS["brisbane"].split("p=")[1])
        self.assertEqual(base64.b64encode(RSA_KEY.public.spki()).decode(), RECORDS["test"].split("p=")[1])

    def test_tampered_body_fails_both(self):
        self.assertEqual(results(MSG.replace(b"hungry", b"thirsty")), ["fail", "fail"])

    def test_tampered_header_fails_both(self):
        out = run(MSG.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"))
        self.assertEqual([r.result for r in out], ["fail", "fail"])
        self.assertIn("signature did not verify", out[0].problem)

    def test_no_signature_is_none(self):
        self.assertEqual(results(PLAIN), ["none"])

    def test_revoked_key_is_permerror(self):
        out = run(MSG, resolver({"brisbane": "v=DKIM1; k=ed25519; p=", "test": "v=DKIM1; p="}))
        self.assertEqual([r.result for r in out], ["permerror", "permerror"])
        self.assertIn("revoked", out[0].problem)

    def test_missing_key_is_permerror_and_dns_failure_temperror(self):
        res = resolver({"brisbane": RECORDS["brisbane"]})
        res.temporary.add("brisbane._domainkey." + D)
        self.assertEqual(results(MSG, res), ["temperror", "permerror"])

    def test_key_type_mismatch(self):
        out = run(MSG, resolver({"brisbane": RECORDS["test"], "test": RECORDS["brisbane"]}))
        self.assertEqual([r.result for r in out], ["permerror", "permerror"])

    def test_key_h_refusing_sha256(self):
        recs = dict(RECORDS, test=RECORDS["test"].replace("k=rsa;", "k=rsa; h=sha1;"))
        self.assertEqual(results(MSG, resolver(recs)), ["pass", "permerror"])

    def test_testing_flag_is_reported(self):
        recs = dict(RECORDS, brisbane=RECORDS["brisbane"] + "; t=y")
        self.assertTrue(run(MSG, resolver(recs))[0].testing)


def signed(data, key, selector="sel", domain="example.org", now=NOW, **kw):
    return dkim.sign(data, domain, selector, key, now, **kw) + data


MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
           b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\nMessage-ID: <1@example.org>\r\n\r\n"
           b"Hello  there. \r\n\r\n")


def key_record(key):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(key.public.raw).decode()
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(key.public.spki()).decode()


class RoundTrips(unittest.TestCase):
    def check(self, data, key, want, records=None, now=NOW, domain="example.org"):
        res = resolver(records or {"sel": key_record(key)}, domain)
        self.assertEqual(results(data, res, now), want)

    def test_sign_then_verify_both_types(self):
        for key in (RSA_KEY, ED_KEY):
            with self.subTest(key=type(key).__name__):
                self.check(signed(MESSAGE, key), key, ["pass"])

    def test_both_signatures_on_one_message(self):
        data = dkim.sign_message(MESSAGE, [("example.org", "r", RSA_KEY), ("example.org", "e", ED_KEY)], NOW)
        self.check(data, None, ["pass", "pass"], {"r": key_record(RSA_KEY), "e": key_record(ED_KEY)})

    def test_header_set_and_oversigning(self):
        field = dkim.sign(MESSAGE, "example.org", "sel", ED_KEY, NOW)
        h = canon.parse_tags(canon.field_value(field))["h"]
        names = [n.strip() for n in h.split(":")]
        self.assertEqual(names.count("from"), 2)
        self.assertEqual(names.count("subject"), 2)
        self.assertEqual(names.count("message-id"), 1)
        self.assertNotIn("cc", names)
        self.assertTrue(all(len(line) <= 80 for line in field.split(b"\r\n")))

    def test_second_from_added_after_signing_fails(self):
        """RFC 6376 §8.15: From is listed once more than present, so a From added later breaks it."""
        for key in (RSA_KEY, ED_KEY):
            data = signed(MESSAGE, key)
            forged = data.replace(b"From: Alice", b"From: Mallory <m@evil.example>\r\nFrom: Alice")
            self.check(forged, key, ["fail"])
            appended = data.replace(b"\r\n\r\nHello", b"\r\nSubject: buy now\r\n\r\nHello")
            self.check(appended, key, ["fail"])

    def test_unsigned_header_added_still_passes(self):
        data = signed(MESSAGE, ED_KEY).replace(b"\r\n\r\nHello", b"\r\nX-Spam: no\r\n\r\nHello")
        self.check(data, ED_KEY, ["pass"])

    def test_relaxed_survives_rewrapping(self):
        data = signed(MESSAGE, RSA_KEY)
        self.check(data.replace(b"Subject: hi", b"Subject:   hi\r\n ").replace(b"there. ", b"there."),
                   RSA_KEY, ["pass"])

    def test_expired(self):
        data = signed(MESSAGE, ED_KEY, expire_after=3600)
        self.check(data, ED_KEY, ["pass"], now=NOW + 3600)
        out = run(data, resolver({"sel": key_record(ED_KEY)}, "example.org"), NOW + 3601)
        self.assertEqual(out[0].result, "fail")
        self.assertIn("expired", out[0].problem)

    def test_length_tag_honoured(self):
        """RFC 6376 §3.5 l=: only that many body octets are covered; more is allowed, less fails."""
        body = canon.body_relaxed(MESSAGE.split(b"\r\n\r\n", 1)[1])
        data = self._sign_with_l(MESSAGE, len(body))          # our signer never sets l=: by hand
        self.check(data, ED_KEY, ["pass"])
        self.check(data + b"appended text\r\n", ED_KEY, ["pass"])
        self.check(data.replace(b"Hello", b"Jello"), ED_KEY, ["fail"])
        short = self._sign_with_l(MESSAGE, len(body) + 10)     # l= beyond the body
        self.check(short, ED_KEY, ["fail"])

    def _sign_with_l(self, data, length):
        fields, body = canon.split_message(data)
        names = ["from", "subject"]
        digest, _ = dkim.body_hash(body, "relaxed", length)
        tags = [("v", "1"), ("a", "ed25519-sha256"), ("c", "relaxed/relaxed"), ("d", "example.org"),
                ("s", "sel"), ("l", str(length)), ("h", "from:subject"),
                ("bh", base64.b64encode(digest).decode()), ("b", "")]
        unsigned = canon.fold_tags("DKIM-Signature:", tags).encode()
        h = canon.header_hash_input(canon.select_headers(fields, names), unsigned + b"\r\n", "relaxed")
        sig = ED_KEY.sign(hashlib.sha256(h).digest())
        return unsigned + base64.b64encode(sig) + b"\r\n" + data

    def test_strict_subdomain_flag(self):
        """RFC 6376 §3.6.1 t=s: i= must be exactly d=."""
        data = signed(MESSAGE, ED_KEY).replace(b"d=example.org;", b"d=example.org; i=@sub.example.org;")
        rec = key_record(ED_KEY) + "; t=s"
        out = run(data, resolver({"sel": rec}, "example.org"))
        self.assertEqual(out[0].result, "permerror")
        self.assertIn("t=s", out[0].problem)

    def test_rsa_sha1_refused(self):
        """RFC 8301 §3.1: rsa-sha1 signatures are never valid."""
        data = signed(MESSAGE, RSA_KEY).replace(b"a=rsa-sha256", b"a=rsa-sha1")
        out = run(data, resolver({"sel": key_record(RSA_KEY)}, "example.org"))
        self.assertEqual(out[0].result, "permerror")
        self.assertIn("RFC 8301", out[0].problem)

    def test_small_rsa_key_refused(self):
        """RFC 8301 §3.2: keys below 1024 bits are not accepted."""
        small = rsa.generate(768)
        out = run(signed(MESSAGE, small), resolver({"sel": key_record(small)}, "example.org"))
        self.assertEqual(out[0].result, "permerror")
        self.assertIn("768 bits", out[0].problem)

    def test_several_signatures_each_verified(self):
        data = signed(signed(MESSAGE, ED_KEY, "a"), RSA_KEY, "b")
        data = signed(data, ED_KEY, "gone")
        recs = {"a": key_record(ED_KEY), "b": key_record(RSA_KEY)}
        self.assertEqual(results(data, resolver(recs, "example.org")), ["permerror", "pass", "pass"])

    def test_lf_only_input_signs_as_crlf(self):
        data = signed(MESSAGE.replace(b"\r\n", b"\n"), ED_KEY)
        self.check(data.replace(b"\r\n", b"\n"), ED_KEY, ["pass"])


if __name__ == "__main__":
    unittest.main()
