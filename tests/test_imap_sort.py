"""IMAP SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267
§3.1): base subject extraction, sent dates, addresses and Message IDs
(sort_keys.py), the i;unicode-casemap comparator (RFC 5051, collation.py),
the threading algorithms (thread.py) with loops, missing parents, duplicate
Message-IDs and deep chains; transcripts after the RFCs' examples against the
in-memory backend (whole, byte by byte, split) and the whole server on
loopback with the stdlib's imaplib."""

import imaplib
import random
import re
import unittest
from unittest import mock

from protocols.imap import collation, sort_context, sort_keys, thread
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, drain, feed, login, make_session
from tests.test_imap_session import TranscriptCase


def message(subject=None, date=None, mid=None, refs=None, irt=None, frm="a@example.org",
            to="b@example.org", cc=None, body="body"):
    h = "From: %s\r\nTo: %s\r\n" % (frm, to)
    for name, value in (("Cc", cc), ("Subject", subject), ("Date", date)):
        if value is not None:
            h += "%s: %s\r\n" % (name, value)
    if mid:
        h += "Message-ID: <%s>\r\n" % mid
    if refs:
        h += "References: %s\r\n" % " ".join("<%s>" % r for r in refs)
    if irt:
        h += "In-Reply-To: %s\r\n" % irt
    return (h + "\r\n" + body + "\r\n").encode("utf-8")


def selected(messages):
    """A session factory: fred's INBOX holding ``messages`` (bytes, or
    (bytes, internal date)), selected."""
    def make():
        backend = FakeImapBackend()
        for item in messages:
            data, when = item if isinstance(item, tuple) else (item, None)
            if when is not None:
                backend.clock = when
            backend.deliver("fred", data)
        s, b = make_session(backend)
        login(s)
        out = feed(s, b"S1 SELECT INBOX\r\n")
        assert b"S1 OK" in out, out
        return s, b
    return make


class BaseSubjectTest(unittest.TestCase):
    """RFC 5256 §2.1 steps 1-7 and §4's reply-or-forward rule."""

    def check(self, raw, base, reply):
        self.assertEqual(sort_keys.base_subject(raw), (base, reply), raw)

    def test_leaders_trailers_and_blobs(self):
        self.check("Re: hello", "hello", True)
        self.check("RE: Re:  re: hello  ", "hello", True)
        self.check("Fwd: hello", "hello", True)
        self.check("fw: hello", "hello", True)
        self.check("Re[2]: hello", "hello", True)
        self.check("[list] Re: hello", "hello", True)
        self.check("[list] hello", "hello", False)
        self.check("hello (fwd)", "hello", True)
        self.check("hello (FWD) (fwd)  ", "hello", True)
        self.check("\thello\r\n  world", "hello world", False)

    def test_forward_header_and_trailer(self):
        self.check("[fwd: hello]", "hello", True)
        self.check("[Fwd: Re: [list] hello (fwd)]", "hello", True)
        self.check("[fwd: [fwd: x]]", "x", True)

    def test_a_blob_alone_is_the_subject(self):
        """(4): the blob is removed only if a non-empty subj-base remains."""
        self.check("[list]", "[list]", False)
        self.check("Re: [list]", "[list]", True)
        self.check("[a][b]", "[b]", False)

    def test_long_runs_of_artifacts(self):
        """One pass over many artifacts (a crafted subject must not cost quadratic time)."""
        n = 5000
        self.check("[a]" * n + "x", "x", False)
        self.check("[a]" * n, "[a]", False)
        self.check("[a] " * n + "Re: x", "x", True)
        self.check("x" + " (fwd)" * n, "x", True)
        self.check("Re: " * n + "x", "x", True)
        self.check("[fwd: " * n + "x" + "]" * n, "x", True)

    def test_not_a_leader(self):
        self.check("Reply hello", "Reply hello", False)
        self.check("Research: x", "Research: x", False)
        self.check("", "", False)

    def test_encoded_words_are_decoded_and_casemapped(self):
        header = b"Subject: =?utf-8?q?Re=3A_gr=C3=BC=C3=9Fe?=\r\n\r\n"
        keys = sort_keys.keys_of(header)
        self.assertEqual(keys.subject, collation.casemap("grüße"))
        self.assertTrue(keys.reply)


class CollationTest(unittest.TestCase):
    """RFC 5051 §2: titlecase, then NFKD; compared as UTF-8 octets."""

    def test_case_and_compatibility_forms_are_equal(self):
        c = collation.casemap
        self.assertEqual(c("hello"), c("HeLLo"))
        self.assertEqual(c("ǆ"), c("ǅ"))            # titlecase of the digraph
        self.assertEqual(c("é"), c("É"))
        self.assertEqual(c("é"), c("E\u0301"))
        self.assertNotEqual(c("ß"), c("ss"))         # no simple titlecase mapping: stays

    def test_order_is_utf8_octet_order(self):
        words = ["b", "A", "ä", "z", "Ø", ""]
        ordered = sorted(words, key=collation.casemap)
        self.assertEqual(ordered, ["", "A", "ä", "b", "z", "Ø"])


class KeysTest(unittest.TestCase):
    def test_sent_date_rules(self):
        """RFC 5256 §2.2: normalized to UTC; an invalid zone is UTC; no date: None (INTERNALDATE)."""
        self.assertEqual(sort_keys.sent_date(b"31 Dec 2000 16:01:33 -0800"),
                         sort_keys.sent_date(b"1 Jan 2001 00:01:33 +0000"))
        self.assertEqual(sort_keys.sent_date(b"1 Jan 2001 00:01:33 XYZ"),
                         sort_keys.sent_date(b"1 Jan 2001 00:01:33 +0000"))
        self.assertIsNone(sort_keys.sent_date(b"yesterday"))
        self.assertIsNone(sort_keys.sent_date(None))

    def test_message_ids_are_normalized(self):
        """§4: <"01KF8JCEOCBS0045PS"@xxx.yyy.com> is <01KF8JCEOCBS0045PS@xxx.yyy.com>."""
        self.assertEqual(sort_keys.msg_ids(b'<"01KF8JCEOCBS0045PS"@xxx.yyy.com>'),
                         ["01KF8JCEOCBS0045PS@xxx.yyy.com"])
        self.assertEqual(sort_keys.msg_ids(b"<a@b> junk <no-at> <c@D>"), ["a@b", "c@D"])

    def test_in_reply_to_only_without_references(self):
        keys = sort_keys.keys_of(message("x", mid="m@x", irt="<p@x> junk <q@x>"))
        self.assertEqual(keys.refs, ("p@x",))
        keys = sort_keys.keys_of(message("x", mid="m@x", refs=["r@x", "s@x"], irt="<p@x>"))
        self.assertEqual(keys.refs, ("r@x", "s@x"))

    def test_addresses(self):
        """RFC 5256 §3: addr-mailbox of the first address; RFC 5957 §3: the
        display name (decoded), else the addr-spec."""
        keys = sort_keys.keys_of(message(frm="=?utf-8?q?J=C3=BCrgen?= <jm@x.org>, b@y",
                                         to="undisclosed: ;, Ann <ann@z>", cc="cc@x"))
        self.assertEqual((keys.from_, keys.display_from), ("JM", collation.casemap("Jürgen")))
        # a group's start is the first address (its addr-mailbox the group's name), as Dovecot reads it
        self.assertEqual((keys.to, keys.display_to), ("UNDISCLOSED", "UNDISCLOSED"))
        self.assertEqual(keys.cc, "CC")
        keys = sort_keys.keys_of(b"Subject: x\r\n\r\n")
        self.assertEqual((keys.from_, keys.to, keys.cc, keys.display_from), ("", "", "", ""))

    def test_the_date_entry_reads_the_date_keys_of_reads(self):
        """sort_keys.compute_date (a first SORT (DATE)) gives Keys.date, header cut as parse_header cuts it."""
        from tests.test_imap_derived import MESSAGES
        cases = list(MESSAGES.values()) if isinstance(MESSAGES, dict) else list(MESSAGES)
        cases += [message("x", "1 Jan 2001 00:00:00 +0000", body="Date: 2 Feb 2002 00:00:00 +0000"),
                  message("x", body="Date: 2 Feb 2002 00:00:00 +0000"),
                  b"Subject: x\r\nDATE :\r\n 3 Mar 2003 10:00:00 -0100\r\nDate: 4 Apr 2004 00:00:00 +0000\r\n\r\n",
                  b"Subject: x\r\nnot a field\r\nDate: 4 Apr 2004 00:00:00 +0000\r\n\r\n"]
        for data in cases:
            data = data[1] if isinstance(data, tuple) else data
            self.assertEqual(sort_keys.decode_date(sort_keys.compute_date(data)).date,
                             sort_keys.keys_of(data).date, data[:200])

    def test_entry_round_trip(self):
        keys = sort_keys.keys_of(message("Re: x", "1 Jan 2001 00:00:00 +0000", "m@x", ["a@x"]))
        self.assertEqual(sort_keys.decode(sort_keys.compute_sort(message(
            "Re: x", "1 Jan 2001 00:00:00 +0000", "m@x", ["a@x"]))), keys)
        self.assertIsNone(sort_keys.decode({"SORT": b"[1]"}))
        self.assertIsNone(sort_keys.decode({}))


def msg(n, date, mid=None, refs=(), subject="", reply=False):
    return thread.Msg(n, n, date, subject, reply, mid, tuple(refs))


def rendered(roots):
    return thread.render(roots).decode()


class ThreadTest(unittest.TestCase):
    def test_rfc5256_response_examples(self):
        """§4 BASE.7.2.THREAD: (2)(3 6 (4 23)(44 7 96)) and ((3)(5))."""
        msgs = [msg(2, 1, "2"), msg(3, 2, "3"), msg(6, 3, "6", ["3"]), msg(4, 4, "4", ["3", "6"]),
                msg(23, 5, "23", ["3", "6", "4"]), msg(44, 6, "44", ["3", "6"]),
                msg(7, 7, "7", ["44"]), msg(96, 8, "96", ["44", "7"])]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n")
        msgs = [msg(3, 1, "3", ["gone"]), msg(5, 2, "5", ["gone"])]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD ((3)(5))\r\n")
        self.assertEqual(rendered([]), "* THREAD\r\n")

    def test_a_loop_in_references_is_not_made(self):
        """§4 1.A/1.B: no link that would make a loop."""
        msgs = [msg(1, 1, "a", ["b"]), msg(2, 2, "b", ["a"]), msg(3, 3, "c", ["c"])]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (2 1)(3)\r\n")

    def test_truncated_references_are_corrected_by_the_last_one(self):
        """1.B: the last reference is the parent, an earlier link broken."""
        msgs = [msg(1, 1, "a"), msg(2, 2, "b"), msg(3, 3, "c", ["a"]), msg(4, 4, "d", ["b", "c"])]
        # 3 has a parent "a"; "c" in 4's list after "b" does not change that (1.A)
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (1 3 4)(2)\r\n")

    def test_duplicate_message_ids_use_the_first(self):
        msgs = [msg(1, 1, "a"), msg(2, 2, "a"), msg(3, 3, "r", ["a"])]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (1 3)(2)\r\n")

    def test_missing_parents_are_dummies_pruned(self):
        """§4 step 3: a dummy in the middle is spliced out, one at the top with one child promoted."""
        msgs = [msg(1, 1, "a"), msg(2, 2, "c", ["a", "gone"]), msg(3, 3, "d", ["a", "gone"]),
                msg(4, 4, "e", ["x1", "x2"])]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (1 (2)(3))(4)\r\n")

    def test_subject_merging(self):
        """§4 step 5: same base subject merged; a reply goes under the original."""
        msgs = [msg(1, 1, "a", subject="X"), msg(2, 2, "b", subject="X", reply=True),
                msg(3, 3, "c", subject="Y"), msg(4, 4, "d", subject="Y")]
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (1 2)((3)(4))\r\n")
        self.assertEqual(rendered(thread.refs(msgs)), "* THREAD (1)(2)(3)(4)\r\n")

    def test_refs_orders_threads_by_their_newest_message(self):
        msgs = [msg(1, 1, "a"), msg(2, 2, "b"), msg(3, 9, "c", ["a"])]
        self.assertEqual(rendered(thread.refs(msgs)), "* THREAD (2)(1 3)\r\n")
        self.assertEqual(rendered(thread.references(msgs)), "* THREAD (1 3)(2)\r\n")

    def test_ordered_subject(self):
        """§3 ORDEREDSUBJECT: no grandchildren; threads by their first date."""
        msgs = [msg(1, 5, subject="B"), msg(2, 1, subject="A"), msg(3, 3, subject="B"),
                msg(4, 2, subject="A"), msg(5, 4, subject="A")]
        self.assertEqual(rendered(thread.ordered_subject(msgs)), "* THREAD (2 (4)(5))(3 1)\r\n")

    def test_loop_checks_are_bounded(self):
        """thread.MAX_WALK: past the budget a link is not made (as if it
        would loop); before it, the same links as without a bound."""
        n = 60
        msgs = [msg(i, i, "c%d" % i, ["c%d" % (i - 1)] if i > 1 else []) for i in range(1, n + 1)]
        for k in range(n):      # y_k: a dummy with a child, then linked under the chain's tip
            msgs.append(msg(n + 2 * k + 1, n + 2 * k + 1, "z%d" % k, ["y%d" % k]))
            msgs.append(msg(n + 2 * k + 2, n + 2 * k + 2, "x%d" % k, ["c%d" % n, "y%d" % k]))
        full = thread.link_all(msgs)
        self.assertTrue(all(full["y%d" % k].parent is full["c%d" % n] for k in range(n)))
        with mock.patch.object(thread, "MAX_WALK", 10 * n):
            bounded = thread.link_all(msgs)
        linked = [k for k in range(n) if bounded["y%d" % k].parent is not None]
        self.assertEqual(linked, list(range(len(linked))))
        self.assertTrue(5 <= len(linked) < n, linked)
        self.assertTrue(thread.render(thread.gather_roots(bounded)).startswith(b"* THREAD ("))

    def test_a_deep_chain_needs_no_recursion(self):
        n = 5000
        msgs = [msg(i, i, "m%d" % i, ["m%d" % (i - 1)] if i > 1 else []) for i in range(1, n + 1)]
        out = rendered(thread.references(msgs))
        self.assertEqual(out, "* THREAD (" + " ".join(str(i) for i in range(1, n + 1)) + ")\r\n")
        msgs = [msg(i, i, "m%d" % i, ["m%d" % j for j in range(max(1, i - 200), i)]) for i in range(1, n + 1)]
        self.assertEqual(rendered(thread.refs(msgs)), out)


# RFC 5256 §3's SORT example: five messages whose (SUBJECT REVERSE DATE) order is 5 3 4 1 2.
FIVE = [message("beta", "3 Jan 2001 00:00:00 +0000"), message("Re: beta", "2 Jan 2001 00:00:00 +0000"),
        message("alpha", "1 Jan 2001 00:00:00 +0000"), message("[fwd: alpha]", "1 Jan 2000 00:00:00 +0000"),
        message("", "1 Jan 2001 00:00:00 +0000")]


def example_threads():
    """96 messages, matching SUBJECT topic: 2 alone, then 3's thread of §4's example."""
    parents = {6: [3], 4: [3, 6], 23: [3, 6, 4], 44: [3, 6], 7: [3, 6, 44], 96: [3, 6, 44, 7]}
    out = []
    for n in range(1, 97):
        if n == 2:
            out.append(message("topic one", "1 Jan 2001 00:00:%02d +0000" % 0, "m2@x"))
        elif n == 3 or n in parents:
            subject = "topic two" if n == 3 else "Re: topic two"
            out.append(message(subject, "1 Jan 2001 00:%02d:00 +0000" % (n % 60 if n != 96 else 59),
                               "m%d@x" % n, ["m%d@x" % p for p in parents.get(n, [])]))
        else:
            out.append(message("filler", None, "f%d@x" % n))
    return out


class SortTranscriptTest(TranscriptCase):
    def test_rfc5256_sort_examples(self):
        """§3 BASE.6.4.SORT examples A283 and A284 (A282's numbers need its mailbox)."""
        self.run_transcript("""
C: A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL
S: * SORT 5 3 4 1 2
S: A283 OK SORT completed
C: A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"
S: * SORT
S: A284 OK SORT completed
C: A285 UID SORT (SUBJECT) UTF-8 2:4
S: * SORT 3 4 2
S: A285 OK SORT completed
C: A286 SORT (REVERSE SIZE) UTF-8 ALL
S: * SORT 4 2 3 1 5
S: A286 OK SORT completed
""", make=selected(FIVE))

    def test_rfc5267_esort_example(self):
        """RFC 5267 §3.3 (our mailbox): RETURN () is ALL, in the sort order; ranges ascend."""
        self.run_transcript("""
C: E01 UID SORT RETURN () (REVERSE DATE) UTF-8 UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "E01") UID ALL 1:3,5,4
S: E01 OK SORT completed
C: E02 SORT RETURN (MIN MAX COUNT) (SUBJECT) UTF-8 ALL
S: * ESEARCH (TAG "E02") MIN 5 MAX 2 COUNT 5
S: E02 OK SORT completed
C: E03 SORT RETURN (ALL) (DATE) UTF-8 SUBJECT alpha
S: * ESEARCH (TAG "E03") ALL 4,3
S: E03 OK SORT completed
C: E04 SORT RETURN (COUNT MIN) (DATE) UTF-8 SUBJECT nothing
S: * ESEARCH (TAG "E04") COUNT 0
S: E04 OK SORT completed
""", make=selected(FIVE))

    def test_sort_display(self):
        """RFC 5957 §3: DISPLAYFROM sorts by display name, else addr-spec; FROM by mailbox."""
        mails = [message("1", frm="Zoe <a@x>"), message("2", frm="b@x"), message("3", frm="=?utf-8?q?=C3=89ve?= <c@x>"),
                 message("4", frm="Anna <z@x>", to="Carl <c@y>")]
        self.run_transcript("""
C: a SORT (DISPLAYFROM) UTF-8 ALL
S: * SORT 4 2 3 1
S: a OK SORT completed
C: b SORT (FROM) UTF-8 ALL
S: * SORT 1 2 3 4
S: b OK SORT completed
C: c SORT (REVERSE DISPLAYTO) UTF-8 ALL
S: * SORT 4 1 2 3
S: c OK SORT completed
""", make=selected(mails))

    def test_date_falls_back_to_internaldate_and_arrival(self):
        """§2.2: no Date field: the INTERNALDATE; ARRIVAL is the INTERNALDATE."""
        mails = [(message("1", "1 Jan 2001 00:00:00 +0000"), 990000000.0), (message("2"), 970000000.0),
                 (message("3", "bad date"), 1000000000.0)]
        self.run_transcript("""
C: a SORT (DATE) UTF-8 ALL
S: * SORT 2 1 3
S: a OK SORT completed
C: b SORT (REVERSE ARRIVAL) UTF-8 ALL
S: * SORT 3 1 2
S: b OK SORT completed
""", make=selected(mails))

    def test_errors(self):
        self.run_transcript("""
C: a SORT (DATE) KOI9-Q ALL
S: a NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset
C: b SORT (SHOE) UTF-8 ALL
S: b BAD unknown sort key 'SHOE'
C: c SORT () UTF-8 ALL
S: c BAD expected at least one item at ') UTF-8 ALL<CRLF>'
C: d SORT (DATE) ALL
S: d BAD expected ' ' at '<CRLF>'
C: e THREAD PHASES UTF-8 ALL
S: e BAD unknown threading algorithm 'PHASES'
C: f UID THREAD REFERENCES UTF-8
S: f BAD expected ' ' at '<CRLF>'
""", make=selected(FIVE))

    def test_not_before_select(self):
        def make():
            s, b = make_session()
            login(s)
            return s, b
        self.run_transcript("""
C: a SORT (DATE) UTF-8 ALL
S: a BAD SORT not allowed in the AUTHENTICATED state
""", make=make)


class ThreadTranscriptTest(TranscriptCase):
    def test_rfc5256_thread_examples(self):
        """§3 BASE.6.4.THREAD (A284) and §4's response example, on a mailbox made for it."""
        self.run_transcript("""
C: A284 THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"
S: * THREAD
S: A284 OK THREAD completed
C: A285 THREAD REFERENCES UTF-8 SUBJECT topic
S: * THREAD (2)(3 6 (4 23)(44 7 96))
S: A285 OK THREAD completed
C: A286 THREAD ORDEREDSUBJECT UTF-8 SUBJECT topic
S: * THREAD (2)(3 (4)(6)(7)(23)(44)(96))
S: A286 OK THREAD completed
C: A287 UID THREAD REFS UTF-8 SUBJECT topic
S: * THREAD (2)(3 6 (4 23)(44 7 96))
S: A287 OK THREAD completed
""", make=selected(example_threads()))

    def test_missing_parent_is_one_thread(self):
        """§4 BASE.7.2.THREAD: ((3)(5)), siblings under a parent not in the mailbox."""
        mails = [message("x", "1 Jan 2001 00:00:00 +0000", "1@x"), message("y", "1 Jan 2001 00:00:01 +0000", "2@x"),
                 message("Re: gone", "1 Jan 2001 00:00:02 +0000", "3@x", ["gone@x"]),
                 message("z", "1 Jan 2001 00:00:03 +0000", "4@x"),
                 message("Re: gone", "1 Jan 2001 00:00:04 +0000", "5@x", ["gone@x"])]
        self.run_transcript("""
C: a THREAD REFERENCES UTF-8 ALL
S: * THREAD (1)(2)((3)(5))(4)
S: a OK THREAD completed
""", make=selected(mails))


class KeptAnswerTest(unittest.TestCase):
    def test_a_kept_answer_follows_the_mailbox(self):
        """The folder's kept answers (sorting.RESULTS) are given again only
        for the same matches in the same mailbox."""
        s, b = selected(FIVE)()
        self.assertIn(b"* SORT 4 3 5 2 1\r\n", feed(s, b"a SORT (DATE) UTF-8 ALL\r\n"))
        self.assertIn(b"* THREAD (4)(3)(5)(2)(1)\r\n", feed(s, b"b THREAD REFS UTF-8 ALL\r\n"))
        b.deliver("fred", message("new", "1 Jan 1990 00:00:00 +0000"))
        self.assertIn(b"* 6 EXISTS", feed(s, b"n NOOP\r\n"))
        self.assertIn(b"* SORT 6 4 3 5 2 1\r\n", feed(s, b"c SORT (DATE) UTF-8 ALL\r\n"))
        self.assertIn(b"* THREAD (6)(4)(3)(5)(2)(1)\r\n", feed(s, b"d THREAD REFS UTF-8 ALL\r\n"))
        self.assertIn(b"* SORT 4 3 5 2\r\n", feed(s, b"e SORT (DATE) UTF-8 1:5 NOT 1\r\n"))
        self.assertIn(b"* SORT 2 3 5 4\r\n", feed(s, b"f UID SORT (REVERSE DATE) UTF-8 1:5 NOT 1\r\n"))


class ContextTranscriptTest(TranscriptCase):
    def test_rfc5267_4_3_update_addto_removefrom_cancelupdate(self):
        """RFC 5267 §4.3 (B01's program on our mailbox): tag reuse is BAD;
        ADDTO after the FETCHes, REMOVEFROM before the EXPUNGEs (§4.3.4);
        CANCELUPDATE ends the updates (§4.3.5)."""
        self.run_transcript("""
C: B01 UID SORT RETURN (UPDATE COUNT) (DATE) UTF-8 DELETED KEYWORD $Junk
S: * ESEARCH (TAG "B01") UID COUNT 0
S: B01 OK SORT completed
C: B01 SORT RETURN (UPDATE) (DATE) UTF-8 FLAGGED
S: B01 BAD Tag reuse
C: B03 STORE 2,4 +FLAGS (\\Deleted $Junk)
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] Flags permitted
S: * 2 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * 4 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * ESEARCH (TAG "B01") UID ADDTO (1 4,2)
S: B03 OK STORE completed
C: B04 EXPUNGE
S: * ESEARCH (TAG "B01") UID REMOVEFROM (1 4,2)
S: * 4 EXPUNGE
S: * 2 EXPUNGE
S: B04 OK EXPUNGE completed
C: B05 CANCELUPDATE "B01"
S: B05 OK CANCELUPDATE completed
C: B06 CANCELUPDATE "B01"
S: B06 BAD Unknown update context B01
C: B07 STORE 1 +FLAGS (\\Deleted $Junk)
S: * 1 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: B07 OK STORE completed
""", make=selected(FIVE))

    def test_rfc5267_4_2_context_and_4_4_partial(self):
        """§4.2: CONTEXT is a hint; §4.4: PARTIAL in the sort order, NIL past
        the end, at most one PARTIAL or ALL; §4.3.1: NOUPDATE for a program
        with message numbers."""
        self.run_transcript("""
C: A01 SORT RETURN (CONTEXT COUNT) (SUBJECT) UTF-8 UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "A01") COUNT 5
S: A01 OK SORT completed
C: A02 SORT RETURN (PARTIAL 1:2) (SUBJECT) UTF-8 ALL
S: * ESEARCH (TAG "A02") PARTIAL (1:2 5,3)
S: A02 OK SORT completed
C: A03 UID SORT RETURN (PARTIAL 4:9) (SUBJECT) UTF-8 ALL
S: * ESEARCH (TAG "A03") UID PARTIAL (4:9 1:2)
S: A03 OK SORT completed
C: A04 SORT RETURN (PARTIAL 7:9) (SUBJECT) UTF-8 ALL
S: * ESEARCH (TAG "A04") PARTIAL (7:9 NIL)
S: A04 OK SORT completed
C: A05 SORT RETURN (PARTIAL 1:2 ALL) (SUBJECT) UTF-8 ALL
S: A05 BAD at most one PARTIAL or ALL
C: A06 SORT RETURN (UPDATE) (SUBJECT) UTF-8 1:2
S: * ESEARCH (TAG "A06") ALL 1:2
S: * NO [NOUPDATE "A06"] No updates for a program with message numbers
S: A06 OK SORT completed
""", make=selected(FIVE))

    def test_too_many_contexts(self):
        """§4.3.1: past MAX_CONTEXTS, NOUPDATE; the other return options still answered."""
        lines = []
        for n in range(sort_context.MAX_CONTEXTS):
            lines += ["C: u%d SORT RETURN (UPDATE MIN) (DATE) UTF-8 ALL" % n,
                      'S: * ESEARCH (TAG "u%d") MIN 4' % n, "S: u%d OK SORT completed" % n]
        lines += ["C: x SORT RETURN (UPDATE MIN) (DATE) UTF-8 ALL", 'S: * ESEARCH (TAG "x") MIN 4',
                  'S: * NO [NOUPDATE "x"] Too many update contexts', "S: x OK SORT completed"]
        self.run_transcript("\n".join(lines) + "\n", make=selected(FIVE))


class ContextTwoSessionsTest(unittest.TestCase):
    def test_another_sessions_changes_are_notified(self):
        """RFC 5267 §4.3: a flag change by another session and a delivery
        reach the context on the next command: REMOVEFROM, then EXISTS, then
        ADDTO with the new message's number (§4.3.3: after the EXISTS)."""
        s, b = selected(FIVE)()
        self.assertIn(b'* ESEARCH (TAG "C01") PARTIAL (1:2 5,3)\r\n',
                      feed(s, b"C01 SORT RETURN (UPDATE PARTIAL 1:2) (SUBJECT) UTF-8 UNSEEN\r\n"))
        other, _ = make_session(b)
        login(other)
        feed(other, b"S SELECT INBOX\r\n")
        self.assertIn(b"X OK", feed(other, b"X STORE 3 +FLAGS (\\Seen)\r\n"))
        b.deliver("fred", message("aardvark", "1 Jan 1980 00:00:00 +0000"))
        out = feed(s, b"N NOOP\r\n")
        self.assertEqual(out.split(b"\r\n")[0], b'* ESEARCH (TAG "C01") REMOVEFROM (2 3)')
        self.assertLess(out.index(b"* 6 EXISTS"), out.index(b'* ESEARCH (TAG "C01") ADDTO (2 6)'))
        self.assertNotIn(b"ESEARCH", feed(s, b"M NOOP\r\n"))


def expand(text):
    """A sequence-set in its order (RFC 5267 §3.2: each range ascending)."""
    out = []
    for part in text.split(","):
        a, _, b = part.partition(":")
        out += list(range(int(a), int(b or a) + 1))
    return out


class ClientList:
    """What a client holds for one context: the result, kept by applying the
    updates and EXPUNGEs in the order they come (RFC 5267 §4.3.2)."""

    def __init__(self, tag, uid, first):
        self.tag, self.uid, self.items = tag, uid, first

    def apply(self, out: bytes):
        for line in out.decode().split("\r\n"):
            m = re.match(r'\* ESEARCH \(TAG "%s"\)(?: UID)? (ADDTO|REMOVEFROM) \((.*)\)$' % self.tag, line)
            if m:
                pairs = m.group(2).split()
                for pos, items in zip(pairs[::2], pairs[1::2]):
                    pos, items = int(pos) - 1, expand(items)
                    if m.group(1) == "ADDTO":
                        self.items[pos:pos] = items
                    else:
                        self.assertion(self.items[pos:pos + len(items)] == items, line)
                        del self.items[pos:pos + len(items)]
            m = re.match(r"\* (\d+) EXPUNGE$", line)
            if m and not self.uid:
                n = int(m.group(1))
                self.items = [i - (i > n) for i in self.items if i != n]

    def assertion(self, ok, line):
        if not ok:
            raise AssertionError("%s does not apply to %s" % (line, self.items))


class ContextRandomChangesTest(unittest.TestCase):
    def test_updates_keep_the_clients_list_equal_to_a_new_sort(self):
        """Random deliveries, flag changes and expunges from another session
        and from this one, commands and IDLE: after every command, each
        context's list as the client keeps it equals the answer of the same
        SORT asked afresh."""
        rng = random.Random(5267)
        for run in range(12):
            s, b = selected(FIVE)()
            other, _ = make_session(b)
            login(other)
            feed(other, b"S SELECT INBOX\r\n")
            programs = {"u": b"UID SORT RETURN (UPDATE ALL) (SUBJECT REVERSE DATE) UTF-8 UNSEEN",
                        "n": b"SORT RETURN (UPDATE ALL) (REVERSE ARRIVAL) UTF-8 UNDELETED"}
            clients = {}
            for tag, program in programs.items():
                out = feed(s, tag.encode() + b" " + program + b"\r\n").decode()
                m = re.search(r"ALL (\S+)", out)
                clients[tag] = ClientList(tag, tag == "u", expand(m.group(1)) if m else [])
            for step in range(25):
                what = rng.randrange(5)
                if what == 0:
                    b.deliver("fred", message("m%d" % rng.randrange(5), "%d Jan 2001 00:00:00 +0000" % rng.randint(1, 9)))
                elif what == 1:
                    feed(other, b"o STORE %d %sFLAGS (\\Seen)\r\n" % (rng.randint(1, 4), rng.choice([b"+", b"-"])))
                elif what == 2:
                    feed(other, b"o STORE %d +FLAGS (\\Deleted)\r\no EXPUNGE\r\n" % rng.randint(1, 3))
                elif what == 3:
                    own = feed(s, b"x STORE %d %sFLAGS (\\Deleted \\Seen)\r\n" % (rng.randint(1, 4),
                                                                              rng.choice([b"+", b"-"])))
                    for c in clients.values():
                        c.apply(own)
                cmd = rng.choice([b"y NOOP\r\n", b"y EXPUNGE\r\n", b"y FETCH 1 FLAGS\r\n", b"y UID FETCH 1 FLAGS\r\n",
                                  b"y IDLE\r\nDONE\r\n"])
                out = feed(s, cmd)
                for c in clients.values():
                    c.apply(out)
                feed(other, b"o NOOP\r\n")
                for tag, program in programs.items():
                    # the fresh answer comes before that command's own updates (and EXPUNGEs)
                    fresh = feed(s, b"z " + program.replace(b"UPDATE ", b"") + b"\r\n")
                    m = re.search(r"ALL (\S+)", fresh.decode())
                    self.assertEqual(clients[tag].items, expand(m.group(1)) if m else [],
                                     "run %d step %d context %s after %r" % (run, step, tag, cmd))
                    for c in clients.values():
                        c.apply(fresh)


class ContextWhileIdleTest(unittest.TestCase):
    def contexts_then_idle(self):
        s, b = selected(FIVE)()
        feed(s, b"u UID SORT RETURN (UPDATE) (DATE) UTF-8 ALL\r\n")
        feed(s, b"n SORT RETURN (UPDATE) (DATE) UTF-8 ALL\r\n")
        self.assertIn(b"+ idling", feed(s, b"i IDLE\r\n"))
        other, _ = make_session(b)
        login(other)
        feed(other, b"S SELECT INBOX\r\n")
        return s, b, other

    def test_updates_come_while_idle(self):
        """RFC 5267 §4.3.2: updates while IDLE runs; REMOVEFROM before the
        EXPUNGE (§4.3.4), ADDTO after the EXISTS (§4.3.3)."""
        s, b, other = self.contexts_then_idle()
        feed(other, b"o STORE 3 +FLAGS (\\Deleted)\r\n")
        self.assertEqual(drain(s), b"* 3 FETCH (FLAGS (\\Deleted \\Recent))\r\n")
        feed(other, b"o EXPUNGE\r\n")
        self.assertEqual(drain(s), b'* ESEARCH (TAG "u") UID REMOVEFROM (2 3)\r\n'
                                   b'* ESEARCH (TAG "n") REMOVEFROM (2 3)\r\n* 3 EXPUNGE\r\n')
        b.deliver("fred", message("new", "1 Jan 1990 00:00:00 +0000"))
        self.assertEqual(drain(s), b'* 5 EXISTS\r\n* 5 RECENT\r\n* ESEARCH (TAG "u") UID ADDTO (1 6)\r\n'
                                   b'* ESEARCH (TAG "n") ADDTO (1 5)\r\n')
        self.assertEqual(feed(s, b"DONE\r\n"), b"i OK IDLE terminated\r\n")

    def test_done_before_the_update_is_computed(self):
        """DONE while the refresh is still out: the update comes with the next command, once."""
        s, b, other = self.contexts_then_idle()
        feed(other, b"o STORE 3 +FLAGS (\\Deleted)\r\n")
        drain(s)
        b.deferred = True
        feed(other, b"o EXPUNGE\r\n")
        while b.pending and not s._idle_refreshing:
            b.pending.pop(0)()              # up to the IDLE session's refresh, left waiting
        self.assertTrue(s._idle_refreshing)
        self.assertEqual(feed(s, b"DONE\r\n"), b"i OK IDLE terminated\r\n")
        b.deferred = False
        b.run_pending()
        self.assertEqual(drain(s), b"")
        self.assertEqual(feed(s, b"x NOOP\r\n"), b'* ESEARCH (TAG "u") UID REMOVEFROM (2 3)\r\n'
                                                   b'* ESEARCH (TAG "n") REMOVEFROM (2 3)\r\n'
                                                   b"* 3 EXPUNGE\r\nx OK NOOP completed\r\n")
        self.assertEqual(feed(s, b"y NOOP\r\n"), b"y OK NOOP completed\r\n")


class ContextDiskFailureTest(unittest.TestCase):
    def test_a_failed_update_ends_the_context_not_the_session(self):
        s, b = selected(FIVE)()
        feed(s, b"c SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL\r\n")
        s._folder.derived = lambda uids, kind, compute, done: done(OSError("disk gone"))
        b.deliver("fred", message("late"))
        out = feed(s, b"n NOOP\r\n")
        self.assertIn(b'* NO [NOUPDATE "c"] Updates stopped: Cannot read messages, try again\r\n', out)
        self.assertTrue(out.endswith(b"n OK NOOP completed\r\n"), out)
        self.assertNotIn(b"ESEARCH", feed(s, b"m NOOP\r\n"))


class ExpungeDuringSortTest(unittest.TestCase):
    def test_expunge_is_held_for_sort_and_sent_for_uid_sort(self):
        """RFC 5256 §3: no untagged EXPUNGE during SORT / THREAD, allowed during UID SORT."""
        s, b = selected(FIVE)()
        box = b.mailboxes("fred")["INBOX"]
        box.messages.pop(1)
        b.announce(box)
        out = feed(s, b"a SORT (DATE) UTF-8 ALL\r\n")
        self.assertNotIn(b"EXPUNGE", out)
        self.assertIn(b"* SORT", out)
        out = feed(s, b"b UID SORT (DATE) UTF-8 ALL\r\n")
        self.assertIn(b"* 1 EXPUNGE\r\n", out)
        self.assertIn(b"* SORT 4 3 5 2\r\n", out)


BOB, BOB_PW = "bob@example.test", "bob-secret"


class ImapSortServerTest(ServerTestCase):
    """The whole server: SORT and THREAD over a real Maildir, the keys from the disk cache."""

    extra_config = {"imap_port": "0"}
    tls = False

    def setUp(self):
        self.clear_mailbox(BOB)

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(BOB, BOB_PW)[0], "OK")
        return m

    def test_sort_and_thread_over_loopback(self):
        m = self.imap()
        caps = m.capability()[1][0].split()
        for cap in (b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=REFERENCES", b"THREAD=REFS",
                    b"THREAD=ORDEREDSUBJECT", b"I18NLEVEL=1"):
            self.assertIn(cap, caps)
        for data in FIVE[:3] + [message("Re: alpha", "3 Jan 2001 00:00:00 +0000", "r@x", ["a@x"]),
                                message("alpha", "1 Jan 1999 00:00:00 +0000", "a@x")]:
            self.assertEqual(m.append("INBOX", None, None, data)[0], "OK")
        m.select("INBOX")
        uids = m.uid("SEARCH", "ALL")[1][0]         # (UIDs go on from earlier tests' messages)
        for _ in range(2):      # the second from the shared column
            self.assertEqual(m.sort("(DATE)", "UTF-8", "ALL"), ("OK", [b"5 3 2 1 4"]))
            self.assertEqual(m.uid("SORT", "(REVERSE SUBJECT)", "UTF-8", "ALL"), ("OK", [uids]))
            self.assertEqual(m.thread("REFERENCES", "UTF-8", "ALL"), ("OK", [b"((5 4)(3))(1 2)"]))
        m.close()
        m.select("INBOX")        # a new session's column: the disk cache answers
        self.assertEqual(m.sort("(SUBJECT DATE)", "UTF-8", "ALL"), ("OK", [b"5 3 4 2 1"]))

    def test_context_sort_updates_over_loopback(self):
        """RFC 5267 §4.3: a second connection's APPEND reaches the first's
        updating SORT as ADDTO on its next command; CANCELUPDATE ends it."""
        m = self.imap()
        for data in FIVE[:2]:
            self.assertEqual(m.append("INBOX", None, None, data)[0], "OK")
        m.select("INBOX")
        imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))     # imaplib lacks RFC 5267's command
        u1, u2 = m.uid("SEARCH", "ALL")[1][0].split()
        typ, data = m.uid("SORT", "RETURN", "(UPDATE ALL)", "(DATE)", "UTF-8", "UNSEEN")
        self.assertEqual(typ, "OK")
        first = m.untagged_responses.pop("ESEARCH")
        self.assertEqual(len(first), 1)
        self.assertTrue(first[0].endswith(b" UID ALL %s,%s" % (u2, u1)), first)
        other = self.imap()
        self.assertEqual(other.append("INBOX", None, None, message("early", "1 Jan 1990 00:00:00 +0000"))[0], "OK")
        self.assertEqual(m.noop()[0], "OK")
        updates = m.untagged_responses.pop("ESEARCH")
        self.assertEqual(len(updates), 1)
        self.assertTrue(updates[0].endswith(b" UID ADDTO (1 %d)" % (int(u2) + 1)), updates)
        tag = first[0].split(b'"')[1].decode()
        self.assertEqual(updates[0].split(b'"')[1].decode(), tag)
        self.assertEqual(m._simple_command("CANCELUPDATE", '"%s"' % tag)[0], "OK")
        self.assertEqual(other.append("INBOX", None, None, message("later", "1 Jan 1991 00:00:00 +0000"))[0], "OK")
        self.assertEqual(m.noop()[0], "OK")
        self.assertNotIn("ESEARCH", m.untagged_responses)


if __name__ == "__main__":
    unittest.main()
