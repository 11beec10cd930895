"""protocols/imap/fetch_cache.py and protocols/backend/derive_read.py: the
header-only cache entry, computed from the first octets of the file, is the
entry derived.compute gives from the whole message for every item it holds,
and header_end never answers an offset the whole message would not."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest

from protocols import mime
from protocols.backend import derive_read
from protocols.imap import derived, envelope, fetch_cache, fetch_data
from protocols.message import field_value, parse_header
from protocols.imap.fetch_args import FetchAtt, Section
from store.folder_imap import to_crlf
from tests.test_imap_derived import HEADER_ATTS, MESSAGES
from tests.test_imap_fetch_data import msg

# Headers that are easy to get wrong when cut from a prefix of the file.
TRICKY = {
    "folded_everywhere": msg("Subject: one", " two", "\tthree", "From: a@example.test (A", " B)",
                             "To: \"Q, R\" <q@example.test>,", "  s@example.test", "", "body"),
    "rfc2047": msg("Subject: =?utf-8?b?R3LDvMOfZQ==?= =?iso-8859-1?q?caf=E9?=",
                   "From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>", "", "x"),
    "missing_fields": msg("X-Only: nothing the envelope reads", "", "body"),
    "no_fields": msg("", "body only"),
    "eightbit": ("Subject: Gr\u00fc\u00dfe\r\nFrom: \u00fc@example.test\r\n\r\nx\r\n").encode("utf-8")
    + b"Subject: \xff\xfe raw\r\n",
    "duplicates": msg("Subject: first", "Subject: second", "From: a@example.test",
                      "From: b@example.test", "Date: 1 Jan 2020 00:00 +0000", "Date: 2 Jan 2020 00:00 +0000",
                      "", "x"),
    "header_only_no_blank": msg("Subject: just a header", "From: a@example.test"),
    "header_only_no_final_crlf": msg("Subject: just a header", "From: a@example.test", end=False),
    "non_field_line_ends_header": msg("Subject: s", "this is not a field", "From: late@example.test",
                                      "", "x"),
    "empty": b"",
    "odd_addresses": b"From: \"a\\\"b\" <x@y>, (c) d@e, group: f@g, h@i;, <@r1,@r2:k@l>\r\n"
                     b"To: \xc3\xbc <\xff@x>\r\nCc: a@b (Name (nested))\r\nSender:\r\nReply-To:  \r\n\r\n",
    "bare_cr_and_space_before_colon": b"Subject: a\rFrom: hidden\r\nFrom: real@example.test\r\n"
                                      b"Subject : spaced\r\nFROM:\r\n folded@example.test\r\n\r\nx",
    "blank_line_with_space": msg("Subject: s", " ", "From: a@example.test", "", "x"),
    "cr_only_line": b"Subject: s\r\n\r\rFrom: x\r\n\r\nbody\r\n",
    "long_header": msg("Subject: long", "X-Pad: " + "p" * (derive_read.HEAD_READ + 100), "", "body"),
    "header_at_read_edge": msg("Subject: edge", "X-Pad: " + "p" * (derive_read.HEAD_READ - 29), "", "b"),
}
ALL = dict(MESSAGES, **TRICKY)


def lf_form(data: bytes) -> bytes:
    """As Maildir files are written (LF line ends)."""
    return data.replace(b"\r\n", b"\n")


class HeaderEndTest(unittest.TestCase):
    def test_no_prefix_answers_an_offset_the_whole_message_would_not(self):
        for name, data in ALL.items():
            for raw in (data, lf_form(data)):
                if len(raw) > 3000:
                    continue                      # every cut of the small ones is enough
                whole = to_crlf(raw)
                want = fetch_cache.header_end(whole, True)
                for cut in range(len(raw)):
                    got = fetch_cache.header_end(to_crlf(raw[:cut]), False)
                    self.assertIn(got, (None, want), "%s cut at %d" % (name, cut))
                self.assertEqual(fetch_cache.header_end(whole, False) in (None, want), True, name)

    def test_a_usual_header_is_found_before_the_body(self):
        data = MESSAGES["folded"]
        end = data.index(b"\r\n\r\n") + 4
        self.assertEqual(fetch_cache.header_end(data[:end + 1], False), end)
        self.assertIsNone(fetch_cache.header_end(data[:end - 3], False))


def fields_by_parse(data: bytes, names) -> bytes:
    """HEADER.FIELDS as parse_header reads it (the code before the regex)."""
    wanted = set(n.lower().encode("ascii") for n in names)
    head = parse_header(data, 0, mime.parse(data).body_start)
    out = [raw if raw.endswith(b"\n") else raw + b"\r\n" for name, raw in head.fields if name in wanted]
    return b"".join(out) + data[head.fields_end:head.body_start]


class HeaderFieldsTest(unittest.TestCase):
    NAMES = [("FROM", "SUBJECT", "DATE"), ("subject",), ("x-only", "To"), ("nope",), ("X.Y*",),
             ("x-long", "Subject", "SUBJECT"), ("From", "Fro"), ("content-type", "MIME-Version")]

    def test_the_regex_finds_what_parse_header_finds(self):
        for name, data in ALL.items():
            for raw in (data, lf_form(data), to_crlf(data)):
                root = mime.parse(raw)
                for names in self.NAMES:
                    self.assertEqual(fetch_data.header_fields(raw, root, names, False),
                                     fields_by_parse(raw, names), "%s %s" % (name, names))

    def test_header_item_is_derived_render(self):
        for name, data in ALL.items():
            full = derived.compute(data)
            for att in HEADER_ATTS:
                if "HEADER" in full:
                    self.assertEqual(fetch_data.header_item(att, full["HEADER"]), derived.render(att, full),
                                     "%s %s" % (name, att))

    def test_from_the_cached_block_too(self):
        att = FetchAtt("BODY", Section(text="HEADER.FIELDS", fields=("FROM", "SUBJECT", "DATE")), peek=True)
        for name, data in ALL.items():
            full = derived.compute(data)
            if "HEADER" in full:
                self.assertEqual(derived.render(att, full), fetch_data.render(att, data, mime.parse(data)), name)


class ParseMemoTest(unittest.TestCase):
    def test_the_last_header_is_reused_only_for_the_same_object_and_range(self):
        data = ALL["duplicates"]
        head = parse_header(data)
        self.assertIs(parse_header(data), head)
        self.assertIsNot(parse_header(data, 0, len(data) - 1), head)
        self.assertEqual(parse_header(data, 0, 20).fields, [(b"subject", b"Subject: first\r\n")])
        copy = bytes(bytearray(data))
        self.assertIsNot(parse_header(copy), parse_header(data))
        self.assertEqual(parse_header(copy), parse_header(data))
        mutable = bytearray(data)
        first = parse_header(mutable)
        mutable[:7] = b"X-Other"
        self.assertEqual(parse_header(mutable).fields[0][0], b"x-other", first)


class EnvelopeMemoTest(unittest.TestCase):
    def test_a_remembered_address_field_renders_as_a_fresh_one(self):
        for name, data in ALL.items():
            root = mime.parse(data)
            envelope._LISTS.clear()
            fresh = envelope.envelope(data, root.start, root.body_start)
            self.assertEqual(envelope.envelope(data, root.start, root.body_start), fresh, name)

    def test_a_text_field_read_at_once_is_what_field_value_and_nstring_give(self):
        for raw in (b"Subject: a b \r\n", b"Subject:\r\n", b"Subject:  \t \r\n", b"Subject: x \r \n",
                    b"Subject: a\r\n b\r\n", b"Subject: \x00\r\n", b"Subject: \"q\"\r\n", b"Subject: a\\b\r\n",
                    b"Subject: \xff\r\n", b"Subject: x\r\r\n", b"Subject: x\n", b"Subject: x",
                    b"Subject: " + b"y" * 1024 + b"\r\n", b"Subject: " + b"y" * 1025 + b"\r\n",
                    b"Subject :a:b\r\n", b"Subject: \tv\t\r\n", b"Subject: v\n\n"):
            self.assertEqual(envelope._text_field(raw), envelope.nstring(field_value(raw)), raw)

    def test_address_lists_read_as_octets_are_those_read_as_text(self):
        values = [b"a@example.test", b"A B <a@b>", b'"Q, R" <q@r>, s@t', b"\xc3\xbc <\xff@x>", b"x\xfe <y@z>",
                  b"Jo\xc3\xabl Q. Public <jq@example.test>,  \"x y\" <z@w>", b"a@b,c@d", b" a@b , c@d "]
        for data in ALL.values():
            for name, raw in parse_header(data, 0, mime.parse(data).body_start).fields:
                if name in (b"from", b"to", b"cc", b"bcc", b"sender", b"reply-to"):
                    values.append(field_value(raw))
        for value in values:
            if envelope._SIMPLE_LIST_B.fullmatch(value) is None:
                continue
            text = value.decode("utf-8", "surrogateescape")
            self.assertIsNotNone(envelope._SIMPLE_LIST.fullmatch(text), value)
            self.assertEqual(envelope.address_list(value),
                             [envelope._simple_mailbox(m) for m in envelope._SIMPLE_MAILBOX.finditer(text)], value)

    def test_the_memo_is_bounded(self):
        for i in range(envelope._LIST_MEMO_MAX + 10):
            envelope._list_field(b"From: a%d@example.test\r\n" % i)
        self.assertLessEqual(len(envelope._LISTS), envelope._LIST_MEMO_MAX)
        long_field = b"To: " + b"x" * envelope._LIST_MEMO_FIELD + b"@example.test\r\n"
        envelope._list_field(long_field)
        self.assertNotIn(long_field, envelope._LISTS)


class ComputeHeadTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-fetchcache-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def read_head(self, raw: bytes) -> bytes:
        path = os.path.join(self.dir, "m")
        with open(path, "wb") as f:
            f.write(raw)
        return derive_read._header_block(path, fetch_cache.header_end)

    def test_the_entry_from_the_header_read_is_the_full_entrys_part(self):
        for name, data in ALL.items():
            for raw in (data, lf_form(data)):
                full = derived.compute(to_crlf(raw))
                block = self.read_head(raw)
                head = fetch_cache.compute_head(block)
                self.assertEqual(head, fetch_cache.compute_head(to_crlf(raw)), name)
                self.assertEqual(set(head) - set(full), set(), name)
                for key, value in head.items():
                    self.assertEqual(value, full[key], "%s %s" % (name, key))
                self.assertEqual("HEADER" in head, "HEADER" in full, name)

    def test_items_render_the_same_from_either_entry(self):
        atts = [FetchAtt("ENVELOPE")] + HEADER_ATTS
        for name, data in ALL.items():
            full = derived.compute(to_crlf(data))
            head = fetch_cache.compute_head(self.read_head(lf_form(data)))
            for att in atts:
                self.assertTrue(fetch_cache.from_head(att))
                self.assertEqual(derived.render(att, head), derived.render(att, full), "%s %s" % (name, att))

    def test_long_header_takes_a_second_read(self):
        raw = lf_form(TRICKY["long_header"])
        self.assertGreater(raw.index(b"\n\n"), derive_read.HEAD_READ)
        block = self.read_head(raw)
        self.assertTrue(block.endswith(b"\r\n\r\n"))
        self.assertEqual(block, to_crlf(raw)[:to_crlf(raw).index(b"\r\n\r\n") + 4])

    def test_body_items_are_not_answered_from_the_head(self):
        for att in (FetchAtt("BODYSTRUCTURE"), FetchAtt("BODY"),
                    FetchAtt("BODY", Section(text="TEXT"), peek=True),
                    FetchAtt("BODY", Section(part=(1,), text="HEADER"), peek=True)):
            self.assertFalse(fetch_cache.from_head(att), att)


if __name__ == "__main__":
    unittest.main()
