"""protocols/imap/fetch_data.py: FETCH ENVELOPE, BODYSTRUCTURE, BODY,
BODY[section]<partial>, BINARY, BINARY.SIZE and RFC822* over a corpus of
hand-made MIME messages.  The expected bytes are worked out by hand from
how each message is built (RFC 9051 §7.5.2 and RFC 3501 §7.4.2 examples
where they exist); a walk over every part of every message checks that
each BODYSTRUCTURE size and line count is exactly what BODY[part] sends."""

import itertools
import random
import unittest

from protocols import mime
from protocols.imap import fetch_data as fd
from protocols.imap.fetch_args import fetch_att

CRLF = "\r\n"


def msg(*lines, end=True):
    """A message from its lines, CRLF between them (and after the last)."""
    return (CRLF.join(lines) + (CRLF if end else "")).encode("utf-8")


def filled(total, count, char="x"):
    """``count`` CRLF-ended lines of ``char`` whose octets sum to ``total``."""
    width, extra = divmod(total - 2 * count, count)
    return "".join(char * (width + (1 if i < extra else 0)) + CRLF for i in range(count))


def fetch(spec, data):
    """render() of one fetch-att as a client writes it."""
    att, rest = fetch_att(spec.encode())
    assert not bytes(rest), spec
    return fd.render(att, data, mime.parse(data))


# -- the corpus -------------------------------------------------------------------

RFC3501_HEADER = msg(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    "From: Terry Gray <gray@cac.washington.edu>",
    "Subject: IMAP4rev1 WG mtg summary and minutes",
    "To: imap@cac.washington.edu",
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>",
    "Message-Id: <B27397-0100000@cac.washington.edu>",
    "MIME-Version: 1.0",
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII", "")
# RFC 3501 §8: a text body of 3028 octets in 92 lines.
RFC3501 = RFC3501_HEADER + filled(3028, 92).encode()

# RFC 9051 §7.5.2: "a two-part message consisting of a text and a
# base64-encoded text attachment".
RFC9051_MIXED = msg(
    "From: a@example.org", "MIME-Version: 1.0",
    "Content-Type: MULTIPART/MIXED; BOUNDARY=b", "",
    "--b", "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII", "", end=False) + (
    CRLF + filled(1152, 23) + CRLF + "--b" + CRLF
    + "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff" + CRLF
    + "Content-ID: <960723163407.20117h@cac.washington.edu>" + CRLF
    + "Content-Description: Compiler diff" + CRLF
    + "Content-Transfer-Encoding: BASE64" + CRLF + CRLF
    + filled(4554, 73, "Q") + CRLF + "--b--" + CRLF).encode()

INNER = msg(
    "From: c@example.org", "Subject: inner", "Content-Type: multipart/mixed; boundary=in", "",
    "--in", "Content-Type: text/plain", "", "inner text",
    "--in", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
    "Content-Disposition: attachment; filename=data.bin", "", "AAEC", "--in--")
PART2 = msg("--alt", "Content-Type: text/plain", "", "plain",
            "--alt", "Content-Type: text/html", "Content-Transfer-Encoding: quoted-printable", "",
            "<p>caf=C3=A9</p>", "--alt--", end=False)
NESTED = msg(
    "From: a@example.org", "To: b@example.org", "Subject: nested", "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer"', "",
    "preamble",
    "--outer", "Content-Type: text/plain; charset=utf-8", "", "part one",
    "--outer", "Content-Type: multipart/alternative; boundary=alt", "", end=True) + PART2 + msg(
    "", "--outer", "Content-Type: message/rfc822", "", end=True) + INNER + msg(
    "", "--outer", "Content-Type: image/gif", "Content-Transfer-Encoding: base64",
    "Content-ID: <gif@x>", "Content-Description: a picture", "Content-Disposition: inline",
    "Content-Language: en, de", "Content-Location: http://example.org/a.gif",
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==", "", "R0lGODlh", "--outer--", "epilogue")

ADDRESSES = msg(
    'From: "Joe Q. Public" <john.q.public@example.com>',
    "Sender: ",
    "Reply-To: Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
    "To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
    "Cc: Undisclosed recipients:;",
    'Bcc: <@route.test,@two.test:bob@example.net>, "quoted local"@example.net (Bob Q),',
    " , Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
    "In-Reply-To: ",
    "Message-ID: <1234@local.machine.example>",
    "Date: Tue, 1 Jul 2003 10:52:37 +0200",
    "Subject: =?ISO-8859-1?Q?Andr=E9?= Pirard", "", "body")

EIGHTBIT = msg(
    "From: Jürgen Müller <jm@example.de>", 'To: "Zoë" <z@example.fr>',
    "Subject: Grüße aus Köln", "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit", "", "Schöne Grüße")

RFC2231 = msg(
    'Content-Type: application/pdf; name*0="very"; name*1="long.pdf"',
    "Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC;",
    " filename*1*=%20rates.pdf", "Content-Transfer-Encoding: base64", "", "JVBERg==")

BAD_BOUNDARY = msg('Content-Type: multipart/mixed; boundary="right"', "",
                   "--wrong", "Content-Type: text/plain", "", "x", "--wrong--")
NO_CLOSE = msg("Content-Type: multipart/mixed; boundary=b", "", "--b", "", "first", "--b",
               "Content-Type: text/html", "", "<b>runs to the end</b>")
NO_CONTENT_TYPE = msg("From: x@y.test", "Subject: plain", "", "hello", "world")
EMPTY_BODY = msg("Subject: e", "")
HEADER_ONLY = msg("Subject: e")
NO_HEADER = msg("", "body only")
SINGLE_RFC822 = msg("Subject: outer", "Content-Type: message/rfc822", "",
                    "Subject: inner", "Content-Type: text/plain", "", "inner body")
DIGEST = msg("Content-Type: multipart/digest; boundary=d", "",
             "--d", "", "Subject: one", "", "first",
             "--d", "", "Subject: two", "", "second", "--d--")
OPAQUE_RFC822 = msg("Content-Type: multipart/mixed; boundary=b", "", "--b", "", "text",
                    "--b", "Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", "",
                    "U3ViamVjdDogeA0KDQpoaQ0K", "--b--")
UNKNOWN_CTE = msg("Content-Type: application/x-thing", "Content-Transfer-Encoding: x-uuencode", "",
                  "begin 644 f", "end")
BASE64_TEXT = msg("Content-Type: text/plain", "Content-Transfer-Encoding: base64", "", "YQpiCg==")
QP_SINGLE = msg("Subject: q", "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: quoted-printable", "", "caf=C3=A9 =", "soft  ", "end")
# What Dovecot's own bodystructure and envelope tests exercise, in a message of
# ours: a folded quoted boundary, an escaped quote in a parameter, an invalid
# encoding token, a Content-Language list, a comment as the name, groups.
QUIRKS = msg(
    "From: list@example.net (The List)",
    "To: team: ann@example.net, bob@example.net;, others: (none) ;",
    "Date: Fri, 2 Feb 2024 10:00:00 +0100", "MIME-Version: 1.0",
    'Content-Type: multipart/related; boundary="two', ' words"', "",
    "prologue", "",
    "--two words", 'Content-Type: text/x-note; charset=us-ascii; label="say \\"hi\\""',
    "Content-Language: en, fr, nl", "Content-Disposition: inline; tag=one", "", "note", "",
    "--two words", "Content-Type: text/plain", "Content-Transfer-Encoding: ?bogus", "",
    "bogus encoding", "", "--two words--", "epilogue")

CORPUS = {
    "rfc3501": RFC3501, "rfc9051_mixed": RFC9051_MIXED, "nested": NESTED,
    "addresses": ADDRESSES, "eightbit": EIGHTBIT, "rfc2231": RFC2231,
    "bad_boundary": BAD_BOUNDARY, "no_close": NO_CLOSE, "no_content_type": NO_CONTENT_TYPE,
    "empty_body": EMPTY_BODY, "header_only": HEADER_ONLY, "no_header": NO_HEADER,
    "single_rfc822": SINGLE_RFC822, "digest": DIGEST, "opaque_rfc822": OPAQUE_RFC822,
    "unknown_cte": UNKNOWN_CTE, "quirks": QUIRKS, "base64_text": BASE64_TEXT, "qp_single": QP_SINGLE,
}


# -- a reader for what we send (RFC 9051 §9, enough for the body structure) -------------

def read_item(buf, i=0):
    """One value at buf[i]: list, quoted, literal / literal8, NIL, number or atom."""
    while buf[i:i + 1] == b" ":
        i += 1
    c = buf[i:i + 1]
    if c == b"(":
        out, i = [], i + 1
        while buf[i:i + 1] != b")":
            value, i = read_item(buf, i)
            out.append(value)
            while buf[i:i + 1] == b" ":
                i += 1
        return out, i + 1
    if c == b'"':
        out, i = bytearray(), i + 1
        while buf[i:i + 1] != b'"':
            if buf[i:i + 1] == b"\\":
                i += 1
            assert buf[i:i + 1] not in (b"\r", b"\n", b""), "CR/LF in a quoted string"
            out += buf[i:i + 1]
            i += 1
        return bytes(out), i + 1
    if c in (b"{", b"~"):
        close = buf.index(b"}\r\n", i)
        n = int(buf[i + (2 if c == b"~" else 1):close])
        return buf[close + 3:close + 3 + n], close + 3 + n
    j = i
    while j < len(buf) and buf[j:j + 1] not in b" ()":
        j += 1
    word = buf[i:j]
    assert word, "nothing at %d: %r" % (i, buf[i:i + 20])
    return (None if word == b"NIL" else int(word) if word.isdigit() else word), j


def fetch_value(item):
    """The value of ``NAME value`` (the name may hold a section with spaces)."""
    head = item.index(b"]") + 1 if b"[" in item.split(b" ", 1)[0] else item.index(b" ")
    if item[head:head + 1] == b"<":                  # BODY[...]<origin>
        head = item.index(b">", head) + 1
    value, end = read_item(item, head)
    assert end == len(item), "junk after the value: %r" % item[end:]
    return value


def leaves(structure, path):
    """(section, size, lines or None, type) of every non-multipart body in a
    body structure, numbered as RFC 9051 §6.4.5.1 numbers them."""
    if isinstance(structure[0], list):            # body-type-mpart: 1*body SP subtype ...
        for n, kid in enumerate(itertools.takewhile(lambda x: isinstance(x, list), structure), 1):
            yield from leaves(kid, path + [n])
        return
    kind = (structure[0].lower(), structure[1].lower())
    here = path or [1]                             # part 1 of a message that is not multipart
    rfc822 = kind == (b"message", b"rfc822")
    lines = structure[7] if kind[0] == b"text" else structure[9] if rfc822 else None
    yield here, structure[6], lines, kind
    if rfc822:                                     # the enclosed message's parts: here.1 ...
        inner = structure[8]
        yield from leaves(inner, here if isinstance(inner[0], list) else here + [1])


def assert_sizes_match(test, data):
    """Each body's size and lines in BODYSTRUCTURE are those of BODY[part]."""
    for path, size, lines, _kind in leaves(fetch_value(fetch("BODYSTRUCTURE", data)), []):
        got = fetch_value(fetch("BODY.PEEK[%s]" % ".".join(map(str, path)), data))
        test.assertEqual((size, lines), (len(got), got.count(b"\n") if lines is not None else None), path)


class SizesMatchBodyTest(unittest.TestCase):
    def test_every_part_size_and_lines_are_those_of_body_section(self):
        for name, data in CORPUS.items():
            with self.subTest(message=name):
                assert_sizes_match(self, data)

    def test_body_is_bodystructure_without_extension_data(self):
        for name, data in CORPUS.items():
            with self.subTest(message=name):
                full, plain = fetch_value(fetch("BODYSTRUCTURE", data)), fetch_value(fetch("BODY", data))
                self.assertEqual(list(leaves(full, [])), list(leaves(plain, [])))
                self.assertLess(len(fetch("BODY", data)), len(fetch("BODYSTRUCTURE", data)))

    def test_every_envelope_has_ten_members(self):
        for name, data in CORPUS.items():
            with self.subTest(message=name):
                self.assertEqual(len(fetch_value(fetch("ENVELOPE", data))), 10)

    def test_rfc822_parts_nested_numbers_reach_the_enclosed_parts(self):
        self.assertEqual([p for p, *_ in leaves(fetch_value(fetch("BODYSTRUCTURE", NESTED)), [])],
                         [[1], [2, 1], [2, 2], [3], [3, 1], [3, 2], [4]])
        self.assertEqual([p for p, *_ in leaves(fetch_value(fetch("BODYSTRUCTURE", SINGLE_RFC822)), [])],
                         [[1], [1, 1]])


def addr(name, mailbox, host, adl="NIL"):
    return "(%s %s %s %s)" % (name, adl, mailbox, host)


class EnvelopeTest(unittest.TestCase):
    def test_rfc3501_sample_envelope(self):
        # RFC 3501 §8 (a003 fetch 12 full), the line breaks of the sample removed.
        gray = '(("Terry Gray" NIL "gray" "cac.washington.edu"))'
        want = ('ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
                '"IMAP4rev1 WG mtg summary and minutes" ' + " ".join([gray] * 3)
                + ' ((NIL NIL "imap" "cac.washington.edu")) '
                '((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
                'NIL NIL "<B27397-0100000@cac.washington.edu>")')
        self.assertEqual(fetch("ENVELOPE", RFC3501), want.encode())

    def test_groups_routes_comments_quoting_and_defaults(self):
        want = " ".join([
            '"Tue, 1 Jul 2003 10:52:37 +0200"',
            '"=?ISO-8859-1?Q?Andr=E9?= Pirard"',             # RFC 2047 words kept as sent
            "(" + addr('"Joe Q. Public"', '"john.q.public"', '"example.com"') + ")",
            # Sender present but empty: the From list (RFC 9051 §7.5.2).
            "(" + addr('"Joe Q. Public"', '"john.q.public"', '"example.com"') + ")",
            "(" + addr('"Mary Smith"', '"mary"', '"x.test"') + addr("NIL", '"jdoe"', '"example.org"')
            + addr('"Who?"', '"one"', '"y.test"') + ")",
            "(" + addr("NIL", '"A Group"', "NIL") + addr('"Ed Jones"', '"c"', '"a.test"')
            + addr("NIL", '"joe"', '"where.test"') + addr('"John"', '"jdoe"', '"one.test"')
            + addr("NIL", "NIL", "NIL") + ")",
            "(" + addr("NIL", '"Undisclosed recipients"', "NIL") + addr("NIL", "NIL", "NIL") + ")",
            "(" + addr("NIL", '"bob"', '"example.net"', adl='"@route.test,@two.test"')
            + addr('"Bob Q"', '"quoted local"', '"example.net"') + addr('"Pete"', '"pete"', '"silly.test"') + ")",
            '""',                                            # In-Reply-To present but empty
            '"<1234@local.machine.example>"'])
        self.assertEqual(fetch("ENVELOPE", ADDRESSES), ("ENVELOPE (" + want + ")").encode())

    def test_eight_bit_header_text_goes_as_literals(self):
        subject, name, zoe = ("Grüße aus Köln".encode(), "Jürgen Müller".encode(), "Zoë".encode())
        jm = b"((" + b"{%d}\r\n" % len(name) + name + b' NIL "jm" "example.de"))'
        want = (b"ENVELOPE (NIL {%d}\r\n" % len(subject) + subject + b" " + b" ".join([jm] * 3)
                + b" (({%d}\r\n" % len(zoe) + zoe + b' NIL "z" "example.fr")) NIL NIL NIL NIL)')
        self.assertEqual(fetch("ENVELOPE", EIGHTBIT), want)

    def test_comment_as_name_and_groups_with_empty_members(self):
        env = fetch("ENVELOPE", QUIRKS)
        listing = b'(("The List" NIL "list" "example.net"))'
        self.assertEqual(env, b'ENVELOPE ("Fri, 2 Feb 2024 10:00:00 +0100" NIL ' + b" ".join([listing] * 3)
                         + b' ((NIL NIL "team" NIL)(NIL NIL "ann" "example.net")(NIL NIL "bob" "example.net")'
                         b'(NIL NIL NIL NIL)(NIL NIL "others" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)')

    def test_no_header_is_all_nil(self):
        self.assertEqual(fetch("ENVELOPE", NO_HEADER), b"ENVELOPE (" + b" ".join([b"NIL"] * 10) + b")")

    def test_missing_parts_of_an_address_are_filled_as_dovecot_does(self):
        data = msg("To: bare, <>, @odd", "", "x")
        self.assertEqual(fetch_value(fetch("ENVELOPE", data))[5], [
            [None, None, b"bare", b"MISSING_DOMAIN"],
            [None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN"],
            [None, None, b"MISSING_MAILBOX", b"odd"]])

    def test_empty_members_and_lone_comments_are_no_addresses(self):
        data = msg("To: , (nobody) ,a@b.test,,", "Cc: (just a comment)", "Bcc:  ", "", "x")
        env = fetch_value(fetch("ENVELOPE", data))
        self.assertEqual(env[5:8], [[[None, None, b"a", b"b.test"]], None, None])

    def test_folded_fields_are_unfolded(self):
        data = msg("Subject: one", "\ttwo", "To: a@b.test,", " c@d.test", "", "x")
        env = fetch_value(fetch("ENVELOPE", data))
        self.assertEqual(env[1], b"one\ttwo")
        self.assertEqual(env[5], [[None, None, b"a", b"b.test"], [None, None, b"c", b"d.test"]])


class BodyStructureTest(unittest.TestCase):
    def test_rfc3501_sample_body(self):
        self.assertEqual(len(RFC3501_HEADER), 342)           # RFC 3501 §8: BODY[HEADER] {342}
        want = b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
        got = fetch("BODY", RFC3501)
        self.assertEqual(got, b'BODY ("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 3028 92)')
        self.assertEqual(got.lower(), want.lower())           # media types are case-insensitive

    def test_rfc9051_two_part_example(self):
        # RFC 9051 §7.5.2, in the case-insensitive parts in lower case.
        want = (b'BODY (("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 1152 23)'
                b'("text" "plain" ("charset" "US-ASCII" "name" "cc.diff") '
                b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "base64" 4554 73) "mixed")')
        self.assertEqual(fetch("BODY", RFC9051_MIXED), want)

    def test_nested_bodystructure(self):
        text = '"text" "plain" ("charset" "%s") NIL NIL "7bit" %d %d NIL NIL NIL NIL'
        inner_env = ('(NIL "inner" ((NIL NIL "c" "example.org")) ((NIL NIL "c" "example.org")) '
                     '((NIL NIL "c" "example.org")) NIL NIL NIL NIL NIL)')
        inner_body = ('((' + text % ("us-ascii", 10, 0) + ')("application" "octet-stream" NIL NIL NIL "base64" 4 '
                      'NIL ("attachment" ("filename" "data.bin")) NIL NIL) "mixed" ("boundary" "in") NIL NIL NIL)')
        want = ("BODYSTRUCTURE ((" + text % ("utf-8", 8, 0) + ")"
                "((" + text % ("us-ascii", 5, 0) + ')("text" "html" ("charset" "us-ascii") NIL NIL '
                '"quoted-printable" 16 0 NIL NIL NIL NIL) "alternative" ("boundary" "alt") NIL NIL NIL)'
                '("message" "rfc822" NIL NIL NIL "7bit" %d %s %s %d NIL NIL NIL NIL)'
                % (len(INNER), inner_env, inner_body, INNER.count(b"\n"))
                + '("image" "gif" NIL "<gif@x>" "a picture" "base64" 8 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
                '("inline" NIL) ("en" "de") "http://example.org/a.gif") '
                '"mixed" ("boundary" "outer") NIL NIL NIL)')
        self.assertEqual(fetch("BODYSTRUCTURE", NESTED), want.encode())

    def test_folded_boundary_escaped_quote_bad_encoding_languages(self):
        want = (b'BODYSTRUCTURE (("text" "x-note" ("charset" "us-ascii" "label" "say \\"hi\\"") NIL NIL "7bit" 6 1 '
                b'NIL ("inline" ("tag" "one")) ("en" "fr" "nl") NIL)'
                b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 16 1 NIL NIL NIL NIL) '
                b'"related" ("boundary" "two words") NIL NIL NIL)')
        self.assertEqual(fetch("BODYSTRUCTURE", QUIRKS), want)

    def test_rfc2231_parameters(self):
        # Continuations joined; an extended value stays name* in its encoded form (RFC 9051 §7.5.2).
        want = (b'BODYSTRUCTURE ("application" "pdf" ("name" "verylong.pdf") NIL NIL "base64" 10 NIL '
                b'("attachment" ("filename*" "utf-8\'\'%E2%82%AC%20rates.pdf")) NIL NIL)')
        self.assertEqual(fetch("BODYSTRUCTURE", RFC2231), want)

    def test_no_content_type_is_text_plain_us_ascii(self):
        self.assertEqual(fetch("BODY", NO_CONTENT_TYPE),
                         b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2)')

    def test_bad_boundary_gives_one_empty_text_part(self):
        self.assertEqual(fetch("BODYSTRUCTURE", BAD_BOUNDARY),
                         b'BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
                         b' "mixed" ("boundary" "right") NIL NIL NIL)')
        self.assertEqual(fetch("BODY", BAD_BOUNDARY),
                         b'BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")')

    def test_empty_and_headerless_messages(self):
        empty = b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
        self.assertEqual(fetch("BODY", EMPTY_BODY), empty)
        self.assertEqual(fetch("BODY", HEADER_ONLY), empty)
        self.assertEqual(fetch("BODY", NO_HEADER),
                         b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1)')

    def test_message_rfc822_as_the_whole_message(self):
        inner = msg("Subject: inner", "Content-Type: text/plain", "", "inner body")
        self.assertEqual(fetch("BODY", SINGLE_RFC822),
                         b'BODY ("message" "rfc822" NIL NIL NIL "7bit" %d (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)'
                         b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1) 4)' % len(inner))

    def test_encoded_message_rfc822_keeps_the_message_form(self):
        part = fetch_value(fetch("BODY", OPAQUE_RFC822))[1]
        self.assertEqual(part[:7], [b"message", b"rfc822", None, None, None, b"base64", 24])
        self.assertEqual(part[7], [None] * 10)
        self.assertEqual(part[8], [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0])
        self.assertEqual(fetch("BODY[2.1]", OPAQUE_RFC822), b"BODY[2.1] {0}\r\n")


    def test_encoding_with_a_comment_is_its_token(self):
        # RFC 2045 §6.1 mechanism is a token; RFC 5322 §3.2.2 comments around it (mime.py fix).
        data = msg("Content-Type: multipart/mixed; boundary=b", "Content-Transfer-Encoding: 7bit (plain)", "",
                   "--b", "Content-Transfer-Encoding: (x) BASE64 ", "", "YWJj", "--b--")
        self.assertEqual(fetch("BODY", data),
                         b'BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "base64" 4 0) "mixed")')
        self.assertEqual(fetch("BINARY[1]", data), b"BINARY[1] {3}\r\nabc")

class BodySectionTest(unittest.TestCase):
    def test_whole_header_text(self):
        header_end = NESTED.index(b"\r\n\r\n") + 4
        self.assertEqual(fetch("BODY[]", NESTED), b"BODY[] " + b"{%d}\r\n" % len(NESTED) + NESTED)
        self.assertEqual(fetch("BODY.PEEK[HEADER]", NESTED),
                         b"BODY[HEADER] {%d}\r\n" % header_end + NESTED[:header_end])
        self.assertEqual(fetch("BODY[TEXT]", NESTED),
                         b"BODY[TEXT] {%d}\r\n" % (len(NESTED) - header_end) + NESTED[header_end:])
        self.assertEqual(fetch("RFC822", NESTED), b"RFC822 {%d}\r\n" % len(NESTED) + NESTED)
        self.assertEqual(fetch("RFC822.HEADER", NESTED), b"RFC822.HEADER {%d}\r\n" % header_end + NESTED[:header_end])
        self.assertEqual(fetch("RFC822.TEXT", NESTED), b"RFC822.TEXT {%d}\r\n" % (len(NESTED) - header_end)
                         + NESTED[header_end:])

    def test_numbered_parts_mime_and_encapsulated_header(self):
        inner_header = INNER[:INNER.index(b"\r\n\r\n") + 4]
        cases = {
            "BODY[1]": b"part one",
            "BODY[1.MIME]": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
            "BODY[2]": PART2,
            "BODY[2.2]": b"<p>caf=C3=A9</p>",
            "BODY[3]": INNER,
            "BODY[3.HEADER]": inner_header,
            "BODY[3.TEXT]": INNER[len(inner_header):],
            "BODY[3.MIME]": b"Content-Type: message/rfc822\r\n\r\n",
            "BODY[3.2]": b"AAEC",
            "BODY[3.2.MIME]": b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                              b"Content-Disposition: attachment; filename=data.bin\r\n\r\n",
            "BODY[3.HEADER.FIELDS (subject)]": b"Subject: inner\r\n\r\n",
            "BODY[4]": b"R0lGODlh",
        }
        for spec, want in cases.items():
            with self.subTest(spec):
                self.assertEqual(fetch(spec, NESTED), spec.replace("subject", "SUBJECT").encode()
                                 + b" {%d}\r\n" % len(want) + want)

    def test_missing_parts_and_header_of_a_non_message_are_empty(self):
        for spec in ("BODY[5]", "BODY[3.3]", "BODY[1.1]", "BODY[1.HEADER]", "BODY[2.TEXT]", "BODY[9.MIME]"):
            with self.subTest(spec):
                self.assertEqual(fetch(spec, NESTED), spec.encode() + b" {0}\r\n")

    def test_part_one_of_a_single_part_message_is_its_body(self):
        self.assertEqual(fetch("BODY[1]", NO_CONTENT_TYPE), b"BODY[1] {14}\r\nhello\r\nworld\r\n")
        self.assertEqual(fetch("BODY[1.MIME]", NO_CONTENT_TYPE)[:14], b"BODY[1.MIME] {")
        self.assertEqual(fetch("BODY[2]", NO_CONTENT_TYPE), b"BODY[2] {0}\r\n")
        inner = msg("Subject: inner", "Content-Type: text/plain", "", "inner body")
        self.assertEqual(fetch("BODY[1]", SINGLE_RFC822), b"BODY[1] {%d}\r\n" % len(inner) + inner)
        self.assertEqual(fetch("BODY[1.HEADER]", SINGLE_RFC822),
                         b"BODY[1.HEADER] {44}\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\n")
        self.assertEqual(fetch("BODY[1.1]", SINGLE_RFC822), b"BODY[1.1] {12}\r\ninner body\r\n")
        self.assertEqual(fetch("BODY[1.TEXT]", SINGLE_RFC822), b"BODY[1.TEXT] {12}\r\ninner body\r\n")

    def test_header_fields_in_message_order_case_insensitive_with_blank_line(self):
        data = msg("Subject: s", "From: f@x.test", "X-Long: a", " b", "to: t@x.test", "", "body")
        self.assertEqual(fetch("BODY.PEEK[HEADER.FIELDS (TO subject X-LONG)]", data),
                         b"BODY[HEADER.FIELDS (TO SUBJECT X-LONG)] {43}\r\n"
                         b"Subject: s\r\nX-Long: a\r\n b\r\nto: t@x.test\r\n\r\n")
        self.assertEqual(fetch("BODY[HEADER.FIELDS.NOT (to subject x-long)]", data),
                         b"BODY[HEADER.FIELDS.NOT (TO SUBJECT X-LONG)] {18}\r\nFrom: f@x.test\r\n\r\n")
        self.assertEqual(fetch("BODY[HEADER.FIELDS (NOPE)]", data), b"BODY[HEADER.FIELDS (NOPE)] {2}\r\n\r\n")
        self.assertEqual(fetch('BODY[HEADER.FIELDS ("a]b" "x y")]', data),
                         b'BODY[HEADER.FIELDS ("A]B" "X Y")] {2}\r\n\r\n')

    def test_no_blank_line_when_the_message_has_no_body_and_no_blank_line(self):
        self.assertEqual(fetch("BODY[HEADER]", HEADER_ONLY), b"BODY[HEADER] {12}\r\nSubject: e\r\n")
        self.assertEqual(fetch("BODY[HEADER.FIELDS (SUBJECT)]", HEADER_ONLY),
                         b"BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: e\r\n")
        self.assertEqual(fetch("BODY[HEADER]", EMPTY_BODY), b"BODY[HEADER] {14}\r\nSubject: e\r\n\r\n")
        self.assertEqual(fetch("BODY[TEXT]", EMPTY_BODY), b"BODY[TEXT] {0}\r\n")
        self.assertEqual(fetch("BODY[HEADER]", NO_HEADER), b"BODY[HEADER] {2}\r\n\r\n")
        self.assertEqual(fetch("BODY[TEXT]", NO_HEADER), b"BODY[TEXT] {11}\r\nbody only\r\n")

    def test_partial_names_its_origin_and_truncates(self):
        # RFC 9051 §6.4.5: BODY[]<0.2048> of a shorter message is BODY[]<0> with all of it.
        self.assertEqual(fetch("BODY[]<0.100000>", EMPTY_BODY), b"BODY[]<0> {14}\r\nSubject: e\r\n\r\n")
        self.assertEqual(fetch("BODY[1]<2.3>", NESTED), b"BODY[1]<2> {3}\r\nrt ")
        self.assertEqual(fetch("BODY[1]<8.3>", NESTED), b"BODY[1]<8> {0}\r\n")
        self.assertEqual(fetch("BODY[1]<99.3>", NESTED), b"BODY[1]<99> {0}\r\n")
        # RFC 9051 §6.4.5: a substring of HEADER.FIELDS is taken after the subsetting.
        self.assertEqual(fetch("BODY.PEEK[HEADER.FIELDS (SUBJECT)]<9.3>", NESTED),
                         b"BODY[HEADER.FIELDS (SUBJECT)]<9> {3}\r\nnes")

    def test_nul_cannot_go_in_a_literal(self):
        data = msg("Subject: n", "", "a\x00b")
        self.assertEqual(fetch("BODY[TEXT]", data), b"BODY[TEXT] {5}\r\na\x80b\r\n")


class BinaryTest(unittest.TestCase):
    def test_base64_with_nul_is_literal8(self):
        self.assertEqual(fetch("BINARY[3.2]", NESTED), b"BINARY[3.2] ~{3}\r\n\x00\x01\x02")
        # The part sent has no NUL: a plain literal (RFC 9051 §7.5.2 SHOULD).
        self.assertEqual(fetch("BINARY.PEEK[3.2]<1.5>", NESTED), b"BINARY[3.2]<1> {2}\r\n\x01\x02")
        self.assertEqual(fetch("BINARY.SIZE[3.2]", NESTED), b"BINARY.SIZE[3.2] 3")

    def test_quoted_printable_and_text_line_ends(self):
        self.assertEqual(fetch("BINARY[2.2]", NESTED), b"BINARY[2.2] {12}\r\n" + "<p>café</p>".encode())
        # RFC 2045 §6.7: soft line break, trailing white space removed.
        self.assertEqual(fetch("BINARY[1]", QP_SINGLE), b"BINARY[1] {17}\r\n" + "café soft\r\nend\r\n".encode())
        # RFC 9051 §7.5.2: text in CRLF even when the decoded text has bare LFs.
        self.assertEqual(fetch("BINARY[1]", BASE64_TEXT), b"BINARY[1] {6}\r\na\r\nb\r\n")
        self.assertEqual(fetch("BINARY.SIZE[1]", BASE64_TEXT), b"BINARY.SIZE[1] 6")

    def test_identity_encodings_unchanged(self):
        self.assertEqual(fetch("BINARY[1]", NESTED), b"BINARY[1] {8}\r\npart one")
        self.assertEqual(fetch("BINARY[1]", EIGHTBIT), b"BINARY[1] {17}\r\n" + "Schöne Grüße\r\n".encode())
        self.assertEqual(fetch("BINARY[2]", NESTED), b"BINARY[2] {%d}\r\n" % len(PART2) + PART2)

    def test_whole_message_drops_the_encoding_field(self):
        self.assertEqual(fetch("BINARY[]", BASE64_TEXT), b"BINARY[] {34}\r\nContent-Type: text/plain\r\n\r\na\r\nb\r\n")
        self.assertEqual(fetch("BINARY[]", NESTED), b"BINARY[] {%d}\r\n" % len(NESTED) + NESTED)

    def test_missing_part_is_empty(self):
        self.assertEqual(fetch("BINARY[7]", NESTED), b"BINARY[7] {0}\r\n")
        self.assertEqual(fetch("BINARY.SIZE[7]", NESTED), b"BINARY.SIZE[7] 0")

    def test_unknown_encoding_is_unknown_cte(self):
        for spec in ("BINARY[1]", "BINARY.PEEK[1]", "BINARY.SIZE[1]"):
            with self.subTest(spec):
                with self.assertRaises(fd.FetchError) as caught:
                    fetch(spec, UNKNOWN_CTE)
                self.assertEqual(caught.exception.code, "UNKNOWN-CTE")
                self.assertIn("x-uuencode", caught.exception.text)
        self.assertEqual(fetch("BODY[1]", UNKNOWN_CTE), b"BODY[1] {18}\r\nbegin 644 f\r\nend\r\n")

    def test_size_matches_binary_for_every_leaf(self):
        for name, data in CORPUS.items():
            if name == "unknown_cte":
                continue
            for path, *_ in leaves(fetch_value(fetch("BODYSTRUCTURE", data)), []):
                spec = ".".join(map(str, path))
                with self.subTest(message=name, part=spec):
                    self.assertEqual(fetch_value(fetch("BINARY.SIZE[%s]" % spec, data)),
                                     len(fetch_value(fetch("BINARY[%s]" % spec, data))))


class SeenAndContentTest(unittest.TestCase):
    def test_which_items_set_seen_and_read_the_message(self):
        table = {   # spec: (sets_seen, needs_content), RFC 9051 §6.4.5, RFC 3501 §6.4.5
            "BODY[]": (True, True), "BODY.PEEK[]": (False, True), "BODY[1.MIME]": (True, True),
            "BINARY[1]": (True, True), "BINARY.PEEK[1]": (False, True), "BINARY.SIZE[1]": (False, True),
            "RFC822": (True, True), "RFC822.TEXT": (True, True), "RFC822.HEADER": (False, True),
            "BODY": (False, True), "BODYSTRUCTURE": (False, True), "ENVELOPE": (False, True),
            "FLAGS": (False, False), "UID": (False, False), "RFC822.SIZE": (False, False),
            "INTERNALDATE": (False, False),
        }
        for spec, (seen, content) in table.items():
            with self.subTest(spec):
                att, _rest = fetch_att(spec.encode())
                self.assertEqual((fd.sets_seen(att), fd.needs_content(att)), (seen, content))

    def test_items_without_content_are_not_rendered_here(self):
        att, _rest = fetch_att(b"FLAGS")
        with self.assertRaises(ValueError):
            fd.render(att, EMPTY_BODY, mime.parse(EMPTY_BODY))


ALL_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY[]", "BODY[HEADER]", "BODY[TEXT]",
             "BODY[HEADER.FIELDS (FROM TO SUBJECT)]", "BODY[HEADER.FIELDS.NOT (SUBJECT)]",
             "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY[]", "BINARY.SIZE[1]")


class DamagedInputTest(unittest.TestCase):
    """Bad input gets an answer or FetchError, never another exception, and
    what is sent always reads back as IMAP (RFC 9051 §9)."""

    def check(self, data):
        for spec in ALL_ITEMS:
            try:
                item = fetch(spec, data)
            except fd.FetchError:
                continue
            fetch_value(item)
        assert_sizes_match(self, data)
        for path, *_ in leaves(fetch_value(fetch("BODYSTRUCTURE", data)), []):
            for spec in ("BODY[%s.MIME]", "BODY[%s.HEADER]", "BINARY.SIZE[%s]", "BINARY[%s]<1.7>"):
                try:
                    fetch_value(fetch(spec % ".".join(map(str, path)), data))
                except fd.FetchError as e:
                    self.assertEqual(e.code, "UNKNOWN-CTE")

    def test_cut_and_mangled_corpus_messages(self):
        rng = random.Random(10)
        noise = [b"\x00", b"\xff", b"(", b")", b'"', b"\\", b"<", b">", b"@", b",", b";", b":",
                 b"\r\n", b"\n", b"--", b"=?", b"*0*=", b"'", b"\r\n\r\n"]
        for name, data in CORPUS.items():
            for n in range(40):
                cut = bytearray(data[:rng.randrange(len(data) + 1)] if n % 4 == 0 else data)
                for _ in range(rng.randrange(1, 6)):
                    at = rng.randrange(len(cut) + 1)
                    cut[at:at + rng.randrange(3)] = rng.choice(noise)
                with self.subTest(message=name, n=n):
                    self.check(bytes(cut))

    def test_long_display_names_without_an_address(self):
        """A phrase of many words and no address: no exponential regex
        backtracking; its words become the mailbox, as Dovecot makes it."""
        data = msg("From: " + "word " * 60 + "end", "", "x")
        self.assertEqual(fetch_value(fetch("ENVELOPE", data))[2][0][2:], [b"word" * 60 + b"end", b"MISSING_DOMAIN"])

    def test_nul_in_header_text(self):
        data = msg("Subject: a\x00b", "From: N\x00ame <a@b.test>", "Content-Type: text/plain; name=x\x00y", "", "x")
        self.assertEqual(fetch_value(fetch("ENVELOPE", data))[1], b"a\x80b")
        self.assertNotIn(b"\x00", fetch("ENVELOPE", data) + fetch("BODYSTRUCTURE", data))

