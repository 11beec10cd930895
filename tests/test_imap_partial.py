"""PARTIAL (RFC 9394): paged SEARCH (RETURN (PARTIAL ...)) and the PARTIAL
modifier of UID FETCH, the RFC's examples as transcripts (whole, byte by
byte, split; the folders scaled down from the examples' 23,764 results),
ranges out of bounds, SAVE (§3.2 Table 1), the grammar, and the whole server
on loopback."""

import socket
import unittest

from protocols.imap import grammar as g
from protocols.imap import partial
from protocols.imap.fetch_args import fetch_args
from protocols.imap.search import search_args
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_catenate import _exchange
from tests.test_imap_session import TranscriptCase


def inbox(uids, flags=None):
    """A logged-in rev2 session with INBOX selected, holding ``uids`` (flags by UID)."""
    flags = flags or {}

    def make():
        s, b = make_session(FakeImapBackend())
        login(s)
        box = b.mailboxes("fred")["INBOX"]
        for uid in uids:
            box.uidnext = uid
            box.add(b"Subject: %d\r\n\r\nx\r\n" % uid, flags.get(uid, ()))
        box.unclaimed_recent.clear()
        feed(s, b"E ENABLE IMAP4rev2\r\nS SELECT INBOX\r\n")
        return s, b
    return make


# 300 messages; every 7th \Deleted, every 11th $Junk: 234 match UNDELETED UNKEYWORD $Junk.
UIDS = list(range(1, 301))
FLAGS = {u: (["\\Deleted"] if u % 7 == 0 else []) + (["$Junk"] if u % 11 == 0 else []) for u in UIDS}
HITS = [u for u in UIDS if u % 7 and u % 11]


def seqset(numbers):
    from protocols.imap import wire
    return wire.sequence_set(numbers).decode()


class RfcExamplesTest(TranscriptCase):
    def test_rfc9394_3_1_paged_uid_search(self):
        """§3.1 examples: the newest 100, a page spanning the end, the first 500,
        a page past the end (NIL); the range is repeated as asked."""
        self.assertEqual(len(HITS), 234)
        self.run_transcript("""
C: A01 UID SEARCH RETURN (PARTIAL -1:-100) UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "A01") UID PARTIAL (-1:-100 %s)
S: A01 OK SEARCH completed
C: A02 UID SEARCH RETURN (PARTIAL 200:300) UNDELETED UNKEYWORD $Junk
C: A03 UID SEARCH RETURN (PARTIAL 1:500) UNDELETED UNKEYWORD $Junk
C: A04 UID SEARCH RETURN (PARTIAL 300:500) UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "A02") UID PARTIAL (200:300 %s)
S: A02 OK SEARCH completed
S: * ESEARCH (TAG "A03") UID PARTIAL (1:500 %s)
S: A03 OK SEARCH completed
S: * ESEARCH (TAG "A04") UID PARTIAL (300:500 NIL)
S: A04 OK SEARCH completed
""" % (seqset(HITS[-100:]), seqset(HITS[199:]), seqset(HITS)), make=inbox(UIDS, FLAGS))

    def test_rfc9394_3_3_uid_fetch_partial(self):
        """§3.3 examples: the last 3 and the first 5 messages of a UID range."""
        uids = [100, 25900, 25902, 26310, 26311, 26498, 25996, 25997, 26600, 27000]
        flags = {25900: ["\\Seen"], 25902: ["\\Flagged"], 26310: ["\\Answered"], 26498: ["\\Answered"],
                 25996: ["\\Seen"], 25997: ["\\Flagged", "\\Answered"]}
        self.run_transcript("""
C: 10 UID FETCH 25900:26600 (UID FLAGS) (PARTIAL -1:-3)
S: * 7 FETCH (UID 26311 FLAGS ())
S: * 8 FETCH (UID 26498 FLAGS (\\Answered))
S: * 9 FETCH (UID 26600 FLAGS ())
S: 10 OK FETCH completed
C: 11 UID FETCH 25900:26600 (UID FLAGS) (PARTIAL 1:5)
S: * 2 FETCH (UID 25900 FLAGS (\\Seen))
S: * 3 FETCH (UID 25902 FLAGS (\\Flagged))
S: * 4 FETCH (UID 25996 FLAGS (\\Seen))
S: * 5 FETCH (UID 25997 FLAGS (\\Answered \\Flagged))
S: * 6 FETCH (UID 26310 FLAGS (\\Answered))
S: 11 OK FETCH completed
C: 12 UID FETCH 1:* (FLAGS) (PARTIAL -50:-1)
S: * 1 FETCH (UID 100 FLAGS ())
S: * 2 FETCH (UID 25900 FLAGS (\\Seen))
S: * 3 FETCH (UID 25902 FLAGS (\\Flagged))
S: * 4 FETCH (UID 25996 FLAGS (\\Seen))
S: * 5 FETCH (UID 25997 FLAGS (\\Answered \\Flagged))
S: * 6 FETCH (UID 26310 FLAGS (\\Answered))
S: * 7 FETCH (UID 26311 FLAGS ())
S: * 8 FETCH (UID 26498 FLAGS (\\Answered))
S: * 9 FETCH (UID 26600 FLAGS ())
S: * 10 FETCH (UID 27000 FLAGS ())
S: 12 OK FETCH completed
C: 13 UID FETCH 1:* (FLAGS) (PARTIAL 11:20)
S: 13 OK FETCH completed
""", make=inbox(sorted(uids), flags))


class BoundsAndSaveTest(TranscriptCase):
    def test_out_of_bounds_ranges_and_other_options(self):
        """§3.1: what exists of the range; NIL when none; MIN/MAX/COUNT beside PARTIAL."""
        self.run_transcript("""
C: a SEARCH RETURN (PARTIAL 4:9) ALL
S: * ESEARCH (TAG "a") PARTIAL (4:9 4:5)
S: a OK SEARCH completed
C: b SEARCH RETURN (PARTIAL -9:-4) ALL
S: * ESEARCH (TAG "b") PARTIAL (-9:-4 1:2)
S: b OK SEARCH completed
C: c SEARCH RETURN (PARTIAL -4294967295:-6) ALL
S: * ESEARCH (TAG "c") PARTIAL (-4294967295:-6 NIL)
S: c OK SEARCH completed
C: d UID SEARCH RETURN (COUNT PARTIAL 2:1 MAX) UID 30:50
S: * ESEARCH (TAG "d") UID MAX 50 COUNT 3 PARTIAL (2:1 30,40)
S: d OK SEARCH completed
C: e SEARCH RETURN (PARTIAL 1:1) KEYWORD nothing
S: * ESEARCH (TAG "e") PARTIAL (1:1 NIL)
S: e OK SEARCH completed
C: f UID SEARCH RETURN (PARTIAL 4294967295:4294967295) ALL
S: * ESEARCH (TAG "f") UID PARTIAL (4294967295:4294967295 NIL)
S: f OK SEARCH completed
""", make=inbox([10, 20, 30, 40, 50]))

    def test_rfc9394_3_2_table_1_save(self):
        """§3.2 Table 1: what "$" holds after SAVE with PARTIAL."""
        cases = ((b"SAVE PARTIAL 2:3", [20, 30], True),
                 (b"SAVE PARTIAL 2:3 MIN", [10, 20, 30], True),
                 (b"SAVE PARTIAL -2:-3 MAX", [30, 40, 50], True),
                 (b"SAVE PARTIAL 2:2 MIN MAX", [10, 20, 50], True),
                 (b"SAVE PARTIAL 2:2 COUNT MIN", [10, 20, 30, 40, 50], True))
        for options, saved, _ in cases:
            with self.subTest(options=options):
                s, _b = inbox([10, 20, 30, 40, 50])()
                out = feed(s, b"a UID SEARCH RETURN (%s) ALL\r\n" % options)
                self.assertIn(b"PARTIAL (", out)
                out = feed(s, b"b UID SEARCH UID $\r\n")
                self.assertEqual(out, b'* ESEARCH (TAG "b") UID ALL %s\r\nb OK SEARCH completed\r\n'
                                 % seqset(saved).encode())

    def test_refusals(self):
        """§3.1: one PARTIAL, never with ALL; §4: nz-numbers, same sign, no "*";
        §3.3: a UID FETCH modifier only."""
        for command, reply in (
                (b"a SEARCH RETURN (PARTIAL 1:2 ALL) ALL", b"a BAD RETURN takes one PARTIAL and no ALL with it (RFC 9394 \xc2\xa73.1)"),
                (b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL", b"a BAD RETURN takes one PARTIAL and no ALL with it (RFC 9394 \xc2\xa73.1)"),
                (b"a SEARCH RETURN (PARTIAL 0:2) ALL", b"a BAD expected non-zero number at '0:2) ALL<CRLF>'"),
                (b"a SEARCH RETURN (PARTIAL -1:5) ALL", b"a BAD expected ':-' at ':5) ALL<CRLF>'"),
                (b"a SEARCH RETURN (PARTIAL 1:*) ALL", b"a BAD expected number at '*) ALL<CRLF>'"),
                (b"a SEARCH RETURN (PARTIAL 1:4294967296) ALL", b"a BAD expected number at '4294967296) ALL<CRLF>'"),
                (b"a SEARCH RETURN (PARTIAL) ALL", b"a BAD expected ' ' at ') ALL<CRLF>'"),
                (b"a FETCH 1:* FLAGS (PARTIAL 1:2)", b"a BAD PARTIAL is a UID FETCH modifier (RFC 9394 \xc2\xa73.3)"),
                (b"a UID FETCH 1:* FLAGS (PARTIAL 1:2 PARTIAL 1:2)", b"a BAD PARTIAL given twice (RFC 9394 \xc2\xa73.3)")):
            with self.subTest(command=command):
                s, _b = inbox([1, 2, 3])()
                self.assertEqual(feed(s, command + b"\r\n"), reply + b"\r\n")


class GrammarTest(unittest.TestCase):
    def test_parse_and_pick(self):
        self.assertEqual(search_args(b" RETURN (PARTIAL -1:-100) ALL\r\n").partial, (-1, -100))
        self.assertEqual(search_args(b" RETURN (MIN partial 5:1) ALL\r\n").returns, ("MIN", "PARTIAL"))
        self.assertEqual(fetch_args(b"FLAGS (PARTIAL 500:400)")[0].partial, (500, 400))
        self.assertIsNone(fetch_args(b"FLAGS")[0].partial)
        items = list(range(1, 11))
        self.assertEqual(partial.pick(items, (500, 400)), [])
        self.assertEqual(partial.pick(items, (10, 9)), [9, 10])
        self.assertEqual(partial.pick(items, (-1, -3)), [8, 9, 10])
        self.assertEqual(partial.pick(items, (-3, -1)), [8, 9, 10])
        self.assertEqual(partial.pick(items, (-10, -20)), [1])
        self.assertEqual(partial.pick(items, (-11, -20)), [])
        self.assertEqual(partial.pick([], (1, 5)), [])
        self.assertRaises(g.ImapParseError, search_args, b" RETURN (PARTIAL -0:-1) ALL\r\n")


class PartialServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}

    def test_partial_search_and_fetch_over_loopback(self):
        with socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=10) as sock:
            sock.recv(4096)
            self.assertIn(b"a OK", _exchange(sock, b"a LOGIN alice@example.test alice-secret\r\n", b"a"))
            _exchange(sock, b"c CREATE Paged\r\n", b"c")
            uids = []
            for i in range(6):
                out = _exchange(sock, b"p APPEND Paged {1+}\r\n%d\r\n" % i, b"p")
                uids.append(int(out.split(b" ")[4].rstrip(b"]")))
            self.assertIn(b"s OK", _exchange(sock, b"s SELECT Paged\r\n", b"s"))
            out = _exchange(sock, b"t UID SEARCH RETURN (PARTIAL -1:-2 COUNT) ALL\r\n", b"t")
            self.assertEqual(out, b'* ESEARCH (TAG "t") UID COUNT 6 PARTIAL (-1:-2 %d:%d)\r\nt OK SEARCH completed\r\n'
                             % (uids[-2], uids[-1]))
            out = _exchange(sock, b"f UID FETCH 1:* (FLAGS) (PARTIAL 2:3)\r\n", b"f")
            self.assertEqual(out, b"* 2 FETCH (UID %d FLAGS (\\Recent))\r\n* 3 FETCH (UID %d FLAGS (\\Recent))\r\n"
                                  b"f OK FETCH completed\r\n" % (uids[1], uids[2]))


if __name__ == "__main__":
    unittest.main()
