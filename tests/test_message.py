"""protocols/message.py: the one header-section reader (RFC 5322 §2.1, §2.2)."""

import unittest

from protocols import message
from protocols.backend import sendmail
from protocols.outbound import dsn
from protocols.smtp import data as smtp_data


class ParseHeaderTest(unittest.TestCase):
    def test_fields_folds_and_offsets_with_crlf_and_lf(self):
        for eol in (b"\r\n", b"\n"):
            data = (b"From: a@x" + eol + b"Subject: one" + eol + b"\t two" + eol + eol + b"body" + eol)
            head = message.parse_header(data)
            self.assertEqual([n for n, _ in head.fields], [b"from", b"subject"])
            self.assertEqual(head.get(b"SUBJECT"), b"one\t two")
            self.assertEqual(data[head.fields_end:head.body_start], eol)
            self.assertEqual(data[head.body_start:], b"body" + eol)
            self.assertTrue(head.has_separator)

    def test_a_non_field_line_ends_the_header_without_separator(self):
        data = b"From: a\r\nthis is body\r\n\r\nmore\r\n"
        head = message.parse_header(data)
        self.assertEqual(head.names(), {b"from"})
        self.assertEqual(data[head.body_start:], b"this is body\r\n\r\nmore\r\n")
        self.assertFalse(head.has_separator)
        self.assertTrue(head.defects)

    def test_no_header_at_all_and_first_line_folded(self):
        for data in (b"\r\nbody\r\n", b" folded first\r\nX: y\r\n\r\n", b"", b"body only"):
            head = message.parse_header(data)
            self.assertEqual(head.fields, [], data)
            self.assertEqual(head.fields_end, 0)

    def test_range_is_respected(self):
        data = b"junk" + b"A: 1\r\nB: 2\r\n\r\nxx" + b"C: 3\r\n"
        head = message.parse_header(data, 4, len(data) - 6)
        self.assertEqual(head.names(), {b"a", b"b"})
        self.assertEqual(data[head.body_start:len(data) - 6], b"xx")

    def test_obsolete_space_before_colon_and_repeated_fields(self):
        head = message.parse_header(b"Received : one\r\nreceived: two\r\nX: 1\r\n\r\n")
        self.assertEqual(head.get_all(b"Received"), [b"one", b"two"])
        self.assertEqual(head.count(b"received"), 2)

    def test_unfold_removes_only_breaks_before_white_space(self):
        self.assertEqual(message.unfold(b"a\r\n b\r\n\tc\nd\n e"), b"a b\tc\nd e")


    def test_fast_path_reads_as_the_field_loop_does(self):
        """parse_header's one-findall path (_tiled_fields) gives what the
        loop gives, over random mixes of fields, folds, bad lines, empty
        lines (CRLF, LF, CR CR LF) and ranges."""
        import random
        from unittest import mock
        pieces = [b"Subject: hi\r\n", b"From: a\n", b" fold\r\n", b"\tfold\n", b"\r\n", b"\n",
                  b"\r\r\n", b"X :y\r\n", b"bad line\r\n", b"a:", b"\r", b" ", b"Z:\n", b"\xff: x\n"]
        rnd = random.Random(5)
        cases = []
        for _ in range(20000):
            data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 8)))
            start = min(rnd.randint(0, 3), len(data)) if rnd.random() < 0.3 else 0
            end = None if rnd.random() < 0.7 else rnd.randint(start, len(data))
            cases.append((data, start, end))
        fast = [message.parse_header(*case) for case in cases]
        with mock.patch.object(message, "_tiled_fields", lambda *a: None):
            slow = [message.parse_header(*case) for case in cases]
        for case, a, b in zip(cases, fast, slow):
            self.assertEqual(a, b, case)


class EditTest(unittest.TestCase):
    def test_add_fields_at_end_of_header_in_the_message_line_ends(self):
        self.assertEqual(message.add_fields(b"A: 1\n\nbody\n", [b"B: 2"]), b"A: 1\nB: 2\n\nbody\n")
        self.assertEqual(message.add_fields(b"A: 1\r\n\r\nbody", [b"B: 2"]), b"A: 1\r\nB: 2\r\n\r\nbody")

    def test_add_fields_to_a_message_without_header_or_line_end(self):
        self.assertEqual(message.add_fields(b"Hello\r\n", [b"B: 2"]), b"B: 2\r\n\r\nHello\r\n")
        self.assertEqual(message.add_fields(b"\r\nbody", [b"B: 2"]), b"B: 2\r\n\r\nbody")
        self.assertEqual(message.add_fields(b"A: 1", [b"B: 2"]), b"A: 1\r\nB: 2\r\n")
        self.assertEqual(message.add_fields(b"", [b"B: 2"]), b"B: 2\r\n")

    def test_remove_fields_takes_their_folds(self):
        data = b"To: a\r\nBcc: b,\r\n c\r\nSubject: s\r\n\r\nBcc: in body\r\n"
        self.assertEqual(message.remove_fields(data, [b"bcc"]),
                         b"To: a\r\nSubject: s\r\n\r\nBcc: in body\r\n")

    def test_crlf_length_counts_bare_lf_as_two(self):
        self.assertEqual(message.crlf_length(b"a\nb\r\nc\n"), 9)
        self.assertEqual(message.crlf_length(b"xa\nb", 1, 3), 3)


class CallersTest(unittest.TestCase):
    """The places that once had their own header code now agree with it."""

    def test_header_block_for_dsn_and_relay(self):
        original = b"From: a\nSubject: s\n\nbody\n\nmore\n"
        self.assertEqual(dsn._headers_only(original), b"From: a\r\nSubject: s\r\n")
        self.assertEqual(message.header_block(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2")

    def test_loop_count_reads_fields_only(self):
        msg = b"Received: a\r\nX-Note:\r\n Received: not a field\r\nReceived:b\r\n\r\nReceived: body\r\n"
        self.assertEqual(smtp_data.count_received(msg), 2)
        # the word only in the body, only in a value, in obsolete syntax, after bare LFs
        self.assertEqual(smtp_data.count_received(b"Subject: s\r\n\r\nReceived: b\r\n"), 0)
        self.assertEqual(smtp_data.count_received(b"Subject: received\r\n\r\n"), 0)
        self.assertEqual(smtp_data.count_received(b"ReCeIvEd : a\r\nSubject: s\r\n\r\n"), 1)
        self.assertEqual(smtp_data.count_received(b"Subject: s\nReceived: a\n\nReceived: b\r\n\r\n"), 1)

    def test_sendmail_t_keeps_field_order_and_unfolds(self):
        addrs, out = sendmail.extract(b"Cc: c@x\r\nTo: a@x,\r\n b@x\r\nBcc: d@x\r\n\r\nbody\r\n")
        self.assertEqual(addrs, ["c@x", "a@x", "b@x", "d@x"])
        self.assertEqual(out, b"Cc: c@x\r\nTo: a@x,\r\n b@x\r\n\r\nbody\r\n")


if __name__ == "__main__":
    unittest.main()
