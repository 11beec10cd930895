"""SEARCH evaluation (protocols/imap/search_eval.py): each key of RFC 9051
§6.4.4 (and rev1's NEW / OLD / RECENT, WITHIN, MODSEQ, SAVEDATE) on a message
that matches and one that does not, keys parsed by search.py as a client
sends them; decoded header and body text; the ESEARCH and SEARCH responses."""

import base64
import datetime
import random
import unittest
from unittest import mock

from protocols.backend.contracts import MessageMeta
from protocols.imap import search as S
from protocols.imap import search_eval as E

# 2023-02-15 03:00:00 UTC (14 Feb 19:00 at -0800).
INTERNAL = datetime.datetime(2023, 2, 15, 3, 0, tzinfo=datetime.timezone.utc).timestamp()
PST = datetime.timezone(datetime.timedelta(hours=-8))

PLAIN = (
    b"From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.com>\r\n"
    b"To: alice@example.org, Bob <bob@example.net>\r\n"
    b"Cc: carol@example.com\r\n"
    b"Bcc: dave@example.com\r\n"
    b"Subject: =?ISO-8859-1?B?Q2Fm6Q==?= meeting\r\n"
    b" folded part\r\n"
    b"Date: Tue, 14 Feb 2023 23:30:00 -0800\r\n"
    b"Message-ID: <abc@example.com>\r\n"
    b"X-Empty:\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hello w=C3=B6rld, this is a soft=\r\n"
    b" break.\r\n")

LATIN = "Grüße aus Köln".encode("iso-8859-1")
MULTI = (
    b"From: someone@example.com\r\n"
    b"Subject: report\r\n"
    b"Date: not a date at all\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="BB"\r\n'
    b"\r\n"
    b"--BB\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(LATIN).replace(b"\n", b"\r\n") +
    b"--BB\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(b"secretword").replace(b"\n", b"\r\n") +
    b"--BB\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.com\r\n"
    b"Subject: inner subject\r\n"
    b"\r\n"
    b"inner body text\r\n"
    b"--BB--\r\n")


def meta(uid=10, flags=(), size=100, internal=INTERNAL, modseq=5, save=None):
    return MessageMeta(uid, frozenset(flags), size, internal, modseq, save)


def ctx(**kw):
    args = dict(largest_seq=3, largest_uid=30, saved=(), now=INTERNAL + 100)
    args.update(kw)
    return E.SearchContext(**args)


def key(text):
    """The key of ``SEARCH text`` as search.py parses it."""
    return S.search_args(b" " + text + b"\r\n").key


def hit(text, data=PLAIN, seq=1, m=None, recent=False, c=None):
    k = key(text)
    return E.matches(k, seq, m or meta(), recent, data if E.needs_content(k) else None, c or ctx())


class KeyTest(unittest.TestCase):
    def check(self, text, yes, no):
        """``text`` matches the message ``yes`` and not ``no`` (kwargs of hit)."""
        self.assertTrue(hit(text, **yes), "%s should match %r" % (text, yes))
        self.assertFalse(hit(text, **no), "%s should not match %r" % (text, no))

    def test_flag_keys(self):
        for name, flag in (("ANSWERED", "\\Answered"), ("DELETED", "\\Deleted"), ("DRAFT", "\\Draft"),
                           ("FLAGGED", "\\Flagged"), ("SEEN", "\\Seen")):
            with self.subTest(name):
                self.check(name.encode(), {"m": meta(flags=[flag])}, {"m": meta(flags=["\\Other"])})
                self.check(b"UN" + name.encode(), {"m": meta()}, {"m": meta(flags=[flag])})

    def test_all(self):
        self.assertTrue(hit(b"ALL"))

    def test_recent_new_old_rev1(self):
        self.check(b"RECENT", {"recent": True}, {"recent": False})
        self.check(b"OLD", {"recent": False}, {"recent": True})
        self.check(b"NEW", {"recent": True}, {"recent": True, "m": meta(flags=["\\Seen"])})
        self.assertFalse(hit(b"NEW", recent=False))

    def test_keyword_case_insensitive(self):
        self.check(b"KEYWORD $forwarded", {"m": meta(flags=["$Forwarded"])}, {"m": meta(flags=["$Junk"])})
        self.check(b"UNKEYWORD $Junk", {"m": meta(flags=["$Forwarded"])}, {"m": meta(flags=["$junk"])})

    def test_larger_smaller_on_rfc822_size(self):
        self.check(b"LARGER 99", {"m": meta(size=100)}, {"m": meta(size=99)})
        self.check(b"SMALLER 101", {"m": meta(size=100)}, {"m": meta(size=101)})

    def test_internal_date_keys_in_the_context_zone(self):
        self.check(b"ON 15-Feb-2023", {}, {"c": ctx(tz=PST)})
        self.check(b"ON 14-Feb-2023", {"c": ctx(tz=PST)}, {})
        self.check(b"BEFORE 16-Feb-2023", {}, {"m": meta(internal=INTERNAL + 86400)})
        self.assertFalse(hit(b"BEFORE 15-Feb-2023"))
        self.check(b"SINCE 15-Feb-2023", {}, {"c": ctx(tz=PST)})
        self.assertFalse(hit(b"SINCE 16-Feb-2023"))

    def test_sent_date_keys_use_the_date_field_as_written(self):
        # Date: 14 Feb 23:30 -0800 is 15 Feb in UTC: its own day counts.
        self.check(b"SENTON 14-Feb-2023", {}, {"data": MULTI})
        self.assertFalse(hit(b"SENTON 15-Feb-2023"))
        self.check(b"SENTBEFORE 15-Feb-2023", {}, {"data": MULTI})
        self.assertFalse(hit(b"SENTBEFORE 14-Feb-2023"))
        self.check(b"SENTSINCE 14-Feb-2023", {}, {"data": MULTI})
        self.assertFalse(hit(b"SENTSINCE 15-Feb-2023"))

    def test_unreadable_or_missing_date_matches_no_sent_key(self):
        for text in (b"SENTBEFORE 1-Jan-2100", b"SENTSINCE 1-Jan-1970", b"SENTON 14-Feb-2023"):
            self.assertFalse(hit(text, data=MULTI))
            self.assertFalse(hit(text, data=b"Subject: no date\r\n\r\nbody\r\n"))
        self.assertTrue(hit(b"NOT SENTBEFORE 1-Jan-2100", data=MULTI))

    def test_saved_date_keys_fall_back_to_internal_date(self):
        later = INTERNAL + 10 * 86400      # 25 Feb 2023
        self.check(b"SAVEDON 25-Feb-2023", {"m": meta(save=later)}, {"m": meta()})
        self.check(b"SAVEDON 15-Feb-2023", {"m": meta()}, {"m": meta(save=later)})
        self.check(b"SAVEDBEFORE 16-Feb-2023", {"m": meta()}, {"m": meta(save=later)})
        self.check(b"SAVEDSINCE 20-Feb-2023", {"m": meta(save=later)}, {"m": meta()})
        self.assertTrue(hit(b"SAVEDATESUPPORTED"))

    def test_within_older_younger(self):
        # now is the internal date + 100 s (RFC 5032 §2: "or equal to").
        self.check(b"OLDER 100", {}, {"c": ctx(now=INTERNAL + 99)})
        self.assertFalse(hit(b"OLDER 101"))
        self.check(b"YOUNGER 100", {}, {"c": ctx(now=INTERNAL + 101)})
        self.assertFalse(hit(b"YOUNGER 99"))

    def test_modseq(self):
        self.check(b"MODSEQ 5", {"m": meta(modseq=5)}, {"m": meta(modseq=4)})
        self.check(b'MODSEQ "/flags/\\\\draft" all 5', {"m": meta(modseq=9)}, {"m": meta(modseq=4)})

    def test_sequence_sets(self):
        self.check(b"2:*", {"seq": 3}, {"seq": 1})
        self.check(b"1,3", {"seq": 3}, {"seq": 2})
        self.check(b"3:2", {"seq": 2}, {"seq": 1})        # a range either way round
        self.check(b"UID 10:20", {"m": meta(uid=10)}, {"m": meta(uid=21)})
        # RFC 9051 §6.4.9: 559:* holds the last UID even when 559 is higher.
        self.assertTrue(hit(b"UID 559:*", m=meta(uid=30), c=ctx(largest_uid=30)))
        self.assertFalse(hit(b"UID 559:*", m=meta(uid=29), c=ctx(largest_uid=30)))

    def test_a_large_uid_set(self):
        uids = b",".join(b"%d" % n for n in range(1, 200000, 2))
        k = key(b"UID " + uids)
        c = ctx(largest_uid=200000)
        found = [u for u in range(1, 2001) if E.matches(k, u, meta(uid=u), False, None, c)]
        self.assertEqual(found, list(range(1, 2001, 2)))

    def test_saved_result_dollar(self):
        c = ctx(saved=(10, 30))
        self.check(b"$", {"m": meta(uid=10), "c": c}, {"m": meta(uid=20), "c": c})
        self.check(b"UID $", {"m": meta(uid=30), "c": c}, {"m": meta(uid=20), "c": c})
        # RFC 5182 §2.1: an empty "$" is valid and matches nothing.
        self.assertFalse(hit(b"$", m=meta(uid=10), c=ctx(saved=())))
        self.assertTrue(hit(b"OR $ 1", seq=1, c=ctx(saved=())))

    def test_nested_or_not(self):
        k = b"OR (SEEN FLAGGED) NOT (OR DELETED DRAFT)"
        self.assertTrue(hit(k, m=meta(flags=["\\Seen", "\\Flagged", "\\Deleted"])))
        self.assertTrue(hit(k, m=meta()))
        self.assertFalse(hit(k, m=meta(flags=["\\Seen", "\\Draft"])))
        self.assertTrue(hit(b"NOT NOT SEEN", m=meta(flags=["\\Seen"])))
        self.assertFalse(hit(b"(SEEN (FLAGGED NOT DELETED))", m=meta(flags=["\\Seen", "\\Flagged", "\\Deleted"])))
        self.assertTrue(hit(b"OR SUBJECT nothing-here OR FROM nobody BODY rld", data=PLAIN))


class TextTest(unittest.TestCase):
    def test_envelope_keys_on_decoded_headers(self):
        self.assertTrue(hit(b'FROM "J\xc3\xb6rg M\xc3\xbcller"'))       # RFC 2047 Q, UTF-8
        self.assertTrue(hit(b"FROM JORG@example.COM"))
        self.assertFalse(hit(b"FROM nobody"))
        self.assertTrue(hit(b"TO bob@example.net"))
        self.assertFalse(hit(b"TO carol"))
        self.assertTrue(hit(b"CC carol"))
        self.assertFalse(hit(b"CC dave"))
        self.assertTrue(hit(b"BCC dave"))
        self.assertFalse(hit(b"BCC carol"))
        self.assertTrue(hit(b'SUBJECT "caf\xc3\xa9 meeting folded part"'))  # B, Latin-1, unfolded
        self.assertFalse(hit(b"SUBJECT report"))
        self.assertTrue(hit(b"SUBJECT report", data=MULTI))

    def test_header_key(self):
        self.assertTrue(hit(b'HEADER Message-ID "<abc@"'))
        self.assertFalse(hit(b'HEADER Message-ID "<xyz@"'))
        self.assertTrue(hit(b'HEADER x-empty ""'))         # empty string: the field is there
        self.assertFalse(hit(b'HEADER X-Missing ""'))
        self.assertTrue(hit(b'HEADER Subject "caf\xc3\xa9"'))

    def test_body_quoted_printable_and_soft_breaks(self):
        self.assertTrue(hit(b'BODY "w\xc3\xb6rld"'))
        self.assertTrue(hit(b'BODY "SOFT BREAK."'))
        self.assertFalse(hit(b"BODY meeting"))           # the header is not body
        self.assertFalse(hit(b"BODY =C3"))

    def test_body_base64_latin1_part_and_skipped_parts(self):
        self.assertTrue(hit('BODY "grüße aus köln"'.encode(), data=MULTI))
        self.assertFalse(hit(b"BODY secretword", data=MULTI))           # application/* skipped
        self.assertFalse(hit(b"BODY R3L1", data=MULTI))                  # not the base64 text
        self.assertTrue(hit(b'BODY "inner subject"', data=MULTI))        # enclosed message header
        self.assertTrue(hit(b'BODY "inner body text"', data=MULTI))
        self.assertFalse(hit(b"BODY application/octet-stream", data=MULTI))

    def test_text_is_header_mime_headers_and_body(self):
        self.assertTrue(hit(b"TEXT meeting"))
        self.assertTrue(hit(b"TEXT soft"))
        self.assertTrue(hit(b"TEXT application/octet-stream", data=MULTI))
        self.assertFalse(hit(b"TEXT secretword", data=MULTI))
        self.assertFalse(hit(b"TEXT absent-everywhere"))

    def test_iso_8859_1_charset_search(self):
        args = S.search_args(b" CHARSET ISO-8859-1 BODY {4}\r\nK\xf6ln\r\n")
        c = ctx(charset=E.check_charset(args.charset))
        self.assertTrue(E.matches(args.key, 1, meta(), False, MULTI, c))
        self.assertFalse(E.matches(args.key, 1, meta(), False, PLAIN, c))
        # The same octets read as UTF-8 are not "Köln".
        self.assertFalse(E.matches(args.key, 1, meta(), False, MULTI, ctx()))

    def test_content_keys_without_data_never_match(self):
        for text in (b"BODY x", b'HEADER Subject ""', b"SUBJECT m", b"TEXT m", b"SENTSINCE 1-Jan-1970"):
            self.assertTrue(E.needs_content(key(text)))
            self.assertFalse(E.matches(key(text), 1, meta(), False, None, ctx()))
        self.assertFalse(E.needs_content(key(b"OR SEEN (UID 1:* NOT LARGER 5)")))
        self.assertTrue(E.needs_content(key(b"OR SEEN (UID 1:* NOT TO x)")))

    def test_decoded_text_is_cached_per_call(self):
        k = key(b"OR BODY q1 OR BODY q2 OR TEXT q3 OR BODY q4 SUBJECT q5")
        with mock.patch.object(E, "_body_text", wraps=E._body_text) as body:
            self.assertFalse(E.matches(k, 1, meta(), False, b"Subject: x\r\n"
                                       b"Content-Transfer-Encoding: base64\r\n\r\neno6\r\n", ctx()))
        self.assertEqual(body.call_count, 1)
        # An ASCII message with nothing encoded is answered from its octets alone.
        with mock.patch.object(E, "_body_text", wraps=E._body_text) as body:
            self.assertFalse(E.matches(k, 1, meta(), False, b"Subject: x\r\n\r\nzzz\r\n", ctx()))
        self.assertEqual(body.call_count, 0)

    def test_content_not_decoded_when_a_flag_key_fails(self):
        with mock.patch.object(E, "_body_text", wraps=E._body_text) as body:
            self.assertFalse(E.matches(key(b"BODY zzz SEEN"), 1, meta(), False, PLAIN, ctx()))
        self.assertEqual(body.call_count, 0)

    def test_searched_text_is_capped(self):
        data = b"Subject: big\r\n\r\n" + b"x" * 2000 + b"needle\r\n"
        with mock.patch.object(E, "MAX_SEARCH_TEXT", 1000):
            self.assertFalse(hit(b"BODY needle", data=data))
            self.assertTrue(hit(b"BODY xxx", data=data))
        self.assertTrue(hit(b"BODY needle", data=data))

    def test_bad_content_never_raises(self):
        bad = [b"", b"\r\n", b"Date: \xff\xfe 99 Foo 99999\r\n\r\n", b"Subject: =?x-nope?B?!!!?=\r\n\r\n",
               b"Content-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@=\r\n",
               b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain; charset=utf-16"
               b"\r\n\r\n\xff\r\n--q", b"From: =?utf-8?q?=ZZ?=\r\n\r\n"]
        k = key(b"OR TEXT a OR FROM b OR SENTON 1-Jan-2000 HEADER date x")
        for data in bad:
            with self.subTest(data=data):
                E.matches(k, 1, meta(), False, data, ctx())


    def test_mangled_messages_never_raise(self):
        """Seeded random damage to real messages: truncation, flipped
        octets, stray encoded-word and boundary markers."""
        rnd = random.Random(9051)
        k = key(b"OR TEXT q OR BODY r OR SUBJECT s OR HEADER content-type t SENTON 1-Jan-2000")
        junk = (b"=?", b"?=", b"=?utf-8?b?", b"--BB", b"\r\n\r\n", b"=\r\n", b"\xff", b";charset=")
        for n in range(300):
            data = bytearray(rnd.choice((PLAIN, MULTI)))
            for _ in range(rnd.randint(1, 8)):
                at = rnd.randrange(len(data) + 1)
                if rnd.random() < 0.5:
                    data[at:at] = rnd.choice(junk)
                elif data:
                    data[min(at, len(data) - 1)] = rnd.randrange(256)
            if rnd.random() < 0.2:
                del data[rnd.randrange(len(data) + 1):]
            with self.subTest(n=n):
                E.matches(k, 1, meta(), False, bytes(data), ctx())


class RawOctetsTest(unittest.TestCase):
    """BODY and TEXT look in the raw octets where they can (search_eval
    _Mail.body_has): the answers must be those of the decoded text."""

    def body(self, charset, octets, cte=b"8bit"):
        return (b"Subject: s\r\nContent-Type: text/plain; charset=" + charset
                + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + octets + b"\r\n")

    def test_non_ascii_text_that_casemaps_to_ascii(self):
        """i;unicode-casemap (RFC 5051 §2): U+212A decomposes to "K"; U+00DF
        and U+FB01 have no titlecase property, so they stay "\xdf" and "fi"."""
        self.assertTrue(hit(b"BODY kelvin", data=self.body(b"utf-8", "\u212aelvin".encode())))
        self.assertFalse(hit(b"BODY strasse", data=self.body(b"iso-8859-1", b"Stra\xdfe")))
        self.assertFalse(hit(b"BODY fine", data=self.body(b"utf-8", "\ufb01ne".encode())))

    def test_charsets_whose_ascii_octets_mean_something_else(self):
        self.assertTrue(hit(b"BODY day", data=self.body(b"utf-7", b"+AGQ-ay", b"7bit")))
        jis = "\u65e5\u672c".encode("iso-2022-jp")          # ESC $ B then ASCII octets
        self.assertFalse(hit(b"BODY " + jis[3:5], data=self.body(b"iso-2022-jp", jis, b"7bit")))

    def test_soft_line_break_and_encoded_words(self):
        self.assertTrue(hit(b"BODY budget", data=self.body(b"us-ascii", b"bud=\r\nget", b"quoted-printable")))
        inner = b"Content-Type: message/rfc822\r\n\r\nSubject: =?utf-8?q?K=C3=B6ln_x?=\r\n\r\nhi\r\n"
        self.assertTrue(hit(b"BODY ln_x", data=inner) is False and hit(b'BODY "ln x"', data=inner))

    def test_text_header_as_written_and_as_decoded(self):
        data = b"X-A:  b\r\n\tc:d\r\nFrom : Mr  X <x@y>\r\n\r\nbody\r\n"
        self.assertTrue(hit(b'TEXT "x-a: b"', data=data))           # stripped, one space after ":"
        self.assertTrue(hit(b'TEXT "from: mr  x"', data=data))
        self.assertTrue(hit(b"TEXT c:d", data=data))
        self.assertFalse(hit(b'TEXT "a:  b"', data=data))


class ParseErrorTest(unittest.TestCase):
    """search.py's errors name the key (one line naming the value)."""

    def error(self, text):
        with self.assertRaises(S.g.ImapParseError) as cm:
            S.search_args(b" " + text + b"\r\n")
        return cm.exception.message

    def test_unknown_key_named_even_at_the_end(self):
        self.assertEqual(self.error(b"BOGUS"), "unknown search key 'BOGUS'")
        self.assertEqual(self.error(b"SEEN BOGUS"), "unknown search key 'BOGUS'")
        self.assertEqual(self.error(b"BOGUS x"), "unknown search key 'BOGUS'")

    def test_missing_argument_named(self):
        self.assertEqual(self.error(b"SUBJECT"), "search key SUBJECT needs an argument")
        self.assertEqual(self.error(b"NOT SEEN UID"), "search key UID needs an argument")


class DecodeWordsTest(unittest.TestCase):
    def test_rfc2047_examples(self):
        # RFC 2047 §8: white space between adjacent encoded words is dropped.
        self.assertEqual(E.decode_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)"), "(ab)")
        self.assertEqual(E.decode_words("(=?ISO-8859-1?Q?a?=  b)"), "(a  b)")
        self.assertEqual(E.decode_words("(=?ISO-8859-1?Q?a_b?=)"), "(a b)")
        self.assertEqual(E.decode_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)"), "(a b)")
        self.assertEqual(E.decode_words("=?US-ASCII*EN?Q?Keith_Moore?= <m@x>"), "Keith Moore <m@x>")

    def test_a_character_split_over_two_words(self):
        self.assertEqual(E.decode_words("=?UTF-8?B?ww==?= =?UTF-8?B?qQ?="), "é")   # lenient base64
        self.assertEqual(E.decode_words("=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9t=C3=A9?="), "été")


class CharsetTest(unittest.TestCase):
    def test_known_charsets(self):
        self.assertEqual(E.check_charset(None), "utf-8")
        self.assertEqual(E.check_charset("UTF-8"), "utf-8")
        self.assertEqual(E.check_charset("us-ascii"), "ascii")
        self.assertEqual(E.check_charset("ISO-8859-1"), "iso8859-1")
        self.assertEqual(E.check_charset("KOI8-R"), "koi8-r")

    def test_unknown_charsets_are_refused(self):
        for name in ("X-BOGUS", "", "rot13", "base64", "zlib", "unicode_escape", "undefined", "idna", "x" * 41):
            with self.subTest(name=name):
                self.assertRaises(E.SearchCharsetError, E.check_charset, name)


def run(text, messages, c):
    """The numbers (sequence numbers) matching ``SEARCH text`` over ``messages``."""
    k = key(text)
    return [i for i, (m, data) in enumerate(messages, 1)
            if E.matches(k, i, m, False, data if E.needs_content(k) else None, c)]


class ResponseTest(unittest.TestCase):
    def test_rfc_examples(self):
        self.assertEqual(E.esearch(b"A282", False, [2, 10, 11], ("MIN", "COUNT")),
                         b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n')
        self.assertEqual(E.esearch(b"A283", False, [11, 2, 10], ("ALL",)),
                         b'* ESEARCH (TAG "A283") ALL 2,10:11\r\n')
        self.assertEqual(E.esearch(b"A284", False, [], ("ALL",)), b'* ESEARCH (TAG "A284")\r\n')
        self.assertEqual(E.esearch(b"A285", True, [7, 100, 3800], ("MIN", "MAX")),
                         b'* ESEARCH (TAG "A285") UID MIN 7 MAX 3800\r\n')
        self.assertEqual(E.esearch(b"A286", False, range(1, 16), ("COUNT",)),
                         b'* ESEARCH (TAG "A286") COUNT 15\r\n')
        # RFC 7162 §3.1.10, example 19.
        self.assertEqual(E.esearch(b"a", False, [1, 2, 3, 5], ("ALL",), modseq=1236),
                         b'* ESEARCH (TAG "a") ALL 1:3,5 MODSEQ 1236\r\n')

    def test_every_return_combination_found_and_empty(self):
        found = [9, 1, 2, 3]
        expect = {
            ("MIN",): (b"MIN 1", b""), ("MAX",): (b"MAX 9", b""), ("COUNT",): (b"COUNT 4", b"COUNT 0"),
            ("ALL",): (b"ALL 1:3,9", b""), (): (b"ALL 1:3,9", b""),
            ("MIN", "MAX"): (b"MIN 1 MAX 9", b""), ("MAX", "MIN", "COUNT"): (b"MIN 1 MAX 9 COUNT 4", b"COUNT 0"),
            ("ALL", "COUNT", "MIN", "MAX"): (b"MIN 1 MAX 9 COUNT 4 ALL 1:3,9", b"COUNT 0"),
            ("ALL", "SAVE"): (b"ALL 1:3,9", b""), ("SAVE", "MIN"): (b"MIN 1", b""),
            ("SAVE", "COUNT"): (b"COUNT 4", b"COUNT 0"),
        }
        for returns, (full, empty) in expect.items():
            for uid in (False, True):
                head = b'* ESEARCH (TAG "t1")' + (b" UID" if uid else b"")
                with self.subTest(returns=returns, uid=uid):
                    self.assertEqual(E.esearch(b"t1", uid, found, returns), head + b" " + full + b"\r\n")
                    self.assertEqual(E.esearch(b"t1", uid, [], returns),
                                     head + (b" " + empty if empty else b"") + b"\r\n")

    def test_save_alone_sends_no_esearch(self):
        self.assertEqual(E.esearch(b"t", False, [1, 2], ("SAVE",)), b"")
        self.assertEqual(E.esearch(b"t", True, [], ("SAVE",)), b"")

    def test_modseq_only_with_a_result(self):
        self.assertEqual(E.esearch(b"a1", False, [2], ("MIN",), modseq=917162488),
                         b'* ESEARCH (TAG "a1") MIN 2 MODSEQ 917162488\r\n')
        self.assertEqual(E.esearch(b"a1", False, [], ("COUNT",), modseq=5), b'* ESEARCH (TAG "a1") COUNT 0\r\n')

    def test_search_response(self):
        self.assertEqual(E.search_response([6, 2, 3]), b"* SEARCH 2 3 6\r\n")      # RFC 3501 §7.2.5
        self.assertEqual(E.search_response([]), b"* SEARCH\r\n")
        self.assertEqual(E.search_response([2, 5], modseq=917162500), b"* SEARCH 2 5 (MODSEQ 917162500)\r\n")
        self.assertEqual(E.search_response([], modseq=9), b"* SEARCH\r\n")           # RFC 7162 example 16

    def test_star_on_an_empty_view(self):
        c = ctx(largest_seq=0, largest_uid=0)
        for text in (b"*", b"1:*", b"UID *", b"UID 5:*", b"ALL"):
            numbers = run(text, [], c)
            self.assertEqual(numbers, [])
            self.assertEqual(E.esearch(b"e", False, numbers, ("MIN", "MAX", "ALL", "COUNT")),
                             b'* ESEARCH (TAG "e") COUNT 0\r\n')
            self.assertEqual(E.search_response(numbers), b"* SEARCH\r\n")

    def test_a_search_over_a_folder(self):
        folder = [(meta(uid=3, flags=["\\Seen"]), PLAIN), (meta(uid=7), MULTI), (meta(uid=8), PLAIN)]
        c = ctx(largest_seq=3, largest_uid=8)
        self.assertEqual(run(b"UNSEEN SUBJECT meeting", folder, c), [3])
        self.assertEqual(run(b"*", folder, c), [3])
        self.assertEqual(run(b"UID 8:*", folder, c), [3])
        self.assertEqual(run(b"OR FROM someone 1", folder, c), [1, 2])


if __name__ == "__main__":
    unittest.main()
