"""IMAP grammar (protocols/imap/grammar.py, args.py, fetch_args.py, search.py),
the command reader (reader.py) and wire formatting (wire.py): one test per
grammar rule, the RFCs' example commands, the reader fed whole, byte by byte
and at random splits, and the limits under abuse."""

import datetime
import random
import unittest

from protocols.imap import args as A
from protocols.imap import grammar as g
from protocols.imap import search as S
from protocols.imap import wire as W
from protocols.imap.fetch_args import FetchAtt, Section
from protocols.imap.grammar import ImapParseError, SequenceSet
from protocols.imap.reader import DISCARD_MAX, Command, CommandReader, NeedContinuation

# Which argument parser a command name uses (the session has its own table).
ARGS = {
    "SELECT": A.select, "EXAMINE": A.select, "CREATE": A.create,
    "DELETE": A.mailbox_only, "SUBSCRIBE": A.mailbox_only, "UNSUBSCRIBE": A.mailbox_only,
    "RENAME": A.two_mailboxes, "LIST": A.list_args, "LSUB": A.lsub, "STATUS": A.status,
    "APPEND": A.append, "STORE": A.store, "FETCH": A.fetch, "COPY": A.copy, "MOVE": A.copy,
    "SEARCH": S.search_args, "ENABLE": A.enable, "ID": A.id_params,
    "EXPUNGE": lambda rest: A.no_args(rest) if bytes(rest) == b"\r\n" else A.sequence_only(rest),
}


def parse(raw: bytes):
    head = g.command_head(raw)
    return head, ARGS[head.name](head.rest)


class Primitives(unittest.TestCase):
    def test_atom_stops_at_atom_specials(self):
        for special in b'(){ %*"\\]':
            value, rest = g.atom(b"abc" + bytes([special]))
            self.assertEqual((value, bytes(rest)), (b"abc", bytes([special])))
        self.assertRaises(ImapParseError, g.atom, b"(x")

    def test_tag_excludes_plus(self):
        self.assertEqual(g.tag(b"A001 NOOP")[0], b"A001")
        self.assertEqual(g.tag(b"a+b")[0], b"a")
        self.assertRaises(ImapParseError, g.tag, b"+ x")

    def test_numbers(self):
        self.assertEqual(g.number(b"4294967295 ")[0], 2 ** 32 - 1)
        self.assertRaises(ImapParseError, g.number, b"4294967296")
        self.assertEqual(g.number64(b"9223372036854775807")[0], 2 ** 63 - 1)
        self.assertRaises(ImapParseError, g.number64, b"9223372036854775808")
        self.assertRaises(ImapParseError, g.nz_number, b"0")
        self.assertRaises(ImapParseError, g.nz_number, b"012")

    def test_quoted_escapes(self):
        value, rest = g.quoted(b'"a \\"b\\" \\\\ c" tail')
        self.assertEqual((value, bytes(rest)), (b'a "b" \\ c', b" tail"))
        self.assertEqual(g.quoted('"Grüße"'.encode())[0], "Grüße".encode())
        for bad in (b'"a\\nb"', b'"a\r\nb"', b'"open', b'"\xff"', b'"a\x00"'):
            self.assertRaises(ImapParseError, g.quoted, bad)

    def test_literal_forms(self):
        self.assertEqual(g.literal(b"{5}\r\nhello rest")[0], b"hello")
        self.assertEqual(g.literal(b"{5+}\r\nhello")[0], b"hello")  # RFC 7888 §3
        self.assertEqual(g.literal(b"{0}\r\n")[0], b"")
        self.assertRaises(ImapParseError, g.literal, b"{3}\r\na\x00b")  # CHAR8 has no NUL
        self.assertEqual(g.literal(b"~{3}\r\na\x00b", binary=True)[0], b"a\x00b")  # RFC 3516
        self.assertRaises(ImapParseError, g.literal, b"~{3}\r\nabc")
        self.assertRaises(ImapParseError, g.literal, b"{9}\r\nshort")

    def test_astring_nstring(self):
        self.assertEqual(g.astring(b"INBOX.a] x")[0], b"INBOX.a]")  # resp-specials allowed
        self.assertEqual(g.astring(b'"a b"')[0], b"a b")
        self.assertEqual(g.astring(b"{3}\r\nx y")[0], b"x y")
        self.assertRaises(ImapParseError, g.astring, b"%x")
        self.assertEqual(g.nstring(b"NIL)")[0], None)
        self.assertEqual(g.nstring(b'"NIL"')[0], b"NIL")
        self.assertRaises(ImapParseError, g.nstring, b"NILS")

    def test_list_mailbox_allows_wildcards(self):
        self.assertEqual(g.list_mailbox(b"foo/%* x")[0], b"foo/%*")
        self.assertEqual(g.list_mailbox(b'"~/Mail/%"')[0], b"~/Mail/%")

    def test_command_head_with_uid(self):
        head = g.command_head(b"A999 uid fetch 4827313:4828442 FLAGS\r\n")
        self.assertEqual((head.tag, head.name, head.uid), (b"A999", "FETCH", True))
        with self.assertRaises(ImapParseError) as cm:
            g.command_head(b"A1\r\n")
        self.assertEqual(cm.exception.tag, b"A1")


class ModifiedUtf7(unittest.TestCase):
    def test_rfc_example_round_trip(self):
        # RFC 3501 §5.1.3 / RFC 9051 Appendix A.1
        raw = b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        self.assertEqual(g.mutf7_decode(raw), "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e")
        self.assertEqual(g.mutf7_encode(g.mutf7_decode(raw)), raw)

    def test_ampersand_is_amp_dash(self):
        self.assertEqual(g.mutf7_encode("Tom & Jerry"), b"Tom &- Jerry")
        self.assertEqual(g.mutf7_decode(b"Tom &- Jerry"), "Tom & Jerry")

    def test_round_trips(self):
        for name in ("Entwürfe", "Gesendete Elemente", "Входящие", "a😀b", "&&", "é&é", "日本語/x"):
            self.assertEqual(g.mutf7_decode(g.mutf7_encode(name)), name)
            self.assertTrue(all(0x20 <= c < 0x7F for c in g.mutf7_encode(name)))

    def test_malformed_rejected(self):
        for bad in (b"&U,BTFw", b"&AGE-",          # no '-'; encodes printable "a"
                    b"&Jjo!-", b"\xc3\xa9",         # bad base64 char; raw 8-bit
                    b"&AOl-", b"&AA-",              # nonzero pad bits; odd UTF-16
                    b"&2D0-", b"&AOk/-", b"a\x01"):  # lone surrogate; '/' not ','; control
            self.assertRaises(ImapParseError, g.mutf7_decode, bad)
        self.assertEqual(g.mutf7_decode(b"&AOk-"), "é")

    def test_mailbox_inbox_and_utf8_mode(self):
        self.assertEqual(g.mailbox(b"inBox ")[0], "INBOX")
        self.assertEqual(g.mailbox(b"&AOk-")[0], "é")
        self.assertEqual(g.mailbox('"é&x"'.encode(), utf8=True)[0], "é&x")  # RFC 6855 §3
        self.assertRaises(ImapParseError, g.mailbox, '"é"'.encode())
        self.assertRaises(ImapParseError, g.mailbox, b"{2}\r\n\xc3(", utf8=True)


class SequenceSets(unittest.TestCase):
    def test_forms(self):
        self.assertEqual(g.sequence_set(b"1:5,7")[0].ranges, ((1, 5), (7, 7)))
        self.assertEqual(g.sequence_set(b"5:3")[0].ranges, ((3, 5),))  # RFC 9051 §9
        self.assertEqual(g.sequence_set(b"*")[0].ranges, ((None, None),))
        self.assertEqual(g.sequence_set(b"*:4")[0].resolve(10), [(4, 10)])
        self.assertEqual(g.sequence_set(b"4:*")[0].resolve(2), [(2, 4)])
        self.assertEqual(g.sequence_set(b"$ ")[0], SequenceSet(saved=True))  # RFC 5182
        self.assertTrue(g.sequence_set(b"2,4:6")[0].contains(5, 9))
        for bad in (b"0", b"0:3", b":3", b"01", b"4294967296"):
            self.assertRaises(ImapParseError, g.sequence_set, bad)
        self.assertEqual(bytes(g.sequence_set(b"1,")[1]), b",")

    def test_hundred_thousand_uids(self):
        text = ",".join(str(n) for n in range(1, 200001, 2)).encode()
        self.assertGreater(len(text), 64 * 1024)
        seq, rest = g.sequence_set(text + b"\r\n")
        self.assertEqual(len(seq.ranges), 100000)
        self.assertEqual(bytes(rest), b"\r\n")


class Dates(unittest.TestCase):
    def test_date(self):
        self.assertEqual(g.date(b"1-Feb-1994")[0], datetime.date(1994, 2, 1))
        self.assertEqual(g.date(b'"28-oct-2006"')[0], datetime.date(2006, 10, 28))
        for bad in (b"31-Feb-2020", b"1-Foo-1994", b"1-Feb-94", b'"1-Feb-1994'):
            self.assertRaises(ImapParseError, g.date, bad)

    def test_date_time(self):
        value = g.date_time(b'" 7-Feb-1994 21:52:25 -0800"')[0]
        self.assertEqual(value.utcoffset(), datetime.timedelta(hours=-8))
        self.assertEqual((value.day, value.hour), (7, 21))
        self.assertEqual(W.date_time(value), b'"07-Feb-1994 21:52:25 -0800"')
        self.assertEqual(g.date_time(W.date_time(value))[0], value)
        for bad in (b'"7-Feb-1994 21:52:25 -0800"', b'"07-Feb-1994 21:52:25"',
                    b'"07-Feb-1994 25:52:25 +0000"'):
            self.assertRaises(ImapParseError, g.date_time, bad)


class Flags(unittest.TestCase):
    def test_flag_list(self):
        flags = g.flag_list(b"(\\SEEN \\answered $Junk \\X-Ext)")[0]
        self.assertEqual(flags, ("\\Seen", "\\Answered", "$Junk", "\\X-Ext"))
        self.assertEqual(g.flag_list(b"()")[0], ())
        self.assertRaises(ImapParseError, g.flag_list, b"(\\Recent)")  # RFC 9051 §2.3.2
        self.assertRaises(ImapParseError, g.flag_list, b"(\\Seen")


# The RFCs' example commands (RFC 9051 §6, RFC 3501 §6 and the extensions').
RFC_EXAMPLES = [
    b"t2 ENABLE CONDSTORE X-GOOD-IDEA", b"A142 SELECT INBOX", b"A932 EXAMINE blurdybloop",
    b"A003 CREATE owatagusiam/", b'A002 CREATE "INBOX.Sent Mail"', b"A683 DELETE blurdybloop",
    b"Z433 RENAME INBOX old-mail", b"A002 SUBSCRIBE #news.comp.mail.mime",
    b'A682 LIST "" *', b'A101 LIST "" ""', b'A102 LIST #news.comp.mail.misc ""',
    b"A202 LIST ~/Mail/ %", b'A03 LIST () "" "%" RETURN (CHILDREN)',
    b'A05 LIST (REMOTE SUBSCRIBED) "" "*"', b'a1 LIST "" ("foo")',
    b'a3 LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)',
    b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))', b'A002 LIST (SPECIAL-USE) "" "*"',
    b'A003 LSUB "#news." "comp.%"', b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
    b"A004 COPY 2:4 meeting", b"A005 UID COPY 305:310 meeting", b"a UID MOVE 42:69 foo",
    b"A282 SEARCH RETURN (MIN COUNT) FLAGGED", b"A283 SEARCH RETURN () FLAGGED",
    b'A284 SEARCH TEXT "string not in mailbox"', b"A285 UID SEARCH RETURN (MIN MAX) 1:5000",
    b"A301 UID SEARCH UID $ SMALLER 4096", b"A283 FETCH $ (UID INTERNALDATE FLAGS BODY.PEEK[HEADER])",
    b"C286 SEARCH RETURN (MAX SAVE MIN COUNT) SINCE 12-Feb-2006",
    b"A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
    b"A283 SEARCH TEXT \"string not in mailbox\"", b"A003 UID EXPUNGE 3000:3002",
    b"F284 STORE $ +FLAGS.Silent (\\Deleted)", b"A003 STORE 2:4 +FLAGS (\\Deleted)",
    b"m STORE 42 FLAGS f1 f2 f3", b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
    b"A999 UID FETCH 4827313:4828442 FLAGS", b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT (\\Deleted)",
    b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)", b"a FETCH 1:3 (MODSEQ)",
    b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
    b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")',
    b"a023 ID NIL", b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))",
    b"a SEARCH OR SMALLER 10 (YOUNGER 3600 KEYWORD $Junk) UNKEYWORD $Forwarded",
    b'A04 SEARCH MODSEQ "/flags/\\\\draft" all 620162338', b"A1 SEARCH NEW OLD RECENT UNDRAFT",
]


class RfcExamples(unittest.TestCase):
    def test_every_example_parses(self):
        for line in RFC_EXAMPLES:
            with self.subTest(line=line):
                parse(line + b"\r\n")

    def test_rfc9051_append_literal(self):
        # RFC 9051 §6.3.12 and RFC 3502 §6 (MULTIAPPEND)
        msg1, msg2 = b"Date: Mon, 7 Feb 1994\r\n\r\nHello Joe\r\n", b"3:30 is fine\r\n"
        raw = b'A003 APPEND saved-messages (\\Seen) {%d}\r\n%s (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n%s\r\n' % (
            len(msg1), msg1, len(msg2), msg2)
        name, messages = parse(raw)[1]
        self.assertEqual(name, "saved-messages")
        self.assertEqual([m.data for m in messages], [msg1, msg2])
        self.assertEqual(messages[1].date_time.hour, 22)
        self.assertEqual(messages[0].flags, ("\\Seen",))

    def test_append_binary_forms(self):
        _, (m1, m2) = A.append(b" x ~{2}\r\na\x00 UTF8 (~{1}\r\nz)\r\n")  # RFC 3516, RFC 6855
        self.assertEqual((m1.data, m1.binary, m2.data, m2.binary), (b"a\x00", True, b"z", True))
        self.assertRaises(ImapParseError, A.append, b" x\r\n")
        self.assertRaises(ImapParseError, A.append, b' x "abc"\r\n')

    def test_store_forms(self):
        st = A.store(b" 1:7 (UNCHANGEDSINCE 320172338) +FLAGS (\\SEEN)\r\n")
        self.assertEqual((st.mode, st.silent, st.flags, st.unchanged_since), ("+", False, ("\\Seen",), 320172338))
        st = A.store(b" 42 FLAGS.SILENT a b\r\n")
        self.assertEqual((st.mode, st.silent, st.flags), ("", True, ("a", "b")))
        self.assertRaises(ImapParseError, A.store, b" 1 *FLAGS (a)\r\n")

    def test_list_extended(self):
        la = A.list_args(b' (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS (MESSAGES SIZE) CHILDREN)\r\n')
        self.assertEqual((la.select, la.returns, la.status, la.extended),
                         (("SUBSCRIBED", "RECURSIVEMATCH"), ("STATUS", "CHILDREN"), ("MESSAGES", "SIZE"), True))
        la = A.list_args(b' "" &AOk-/*\r\n')
        self.assertEqual((la.patterns, la.extended), (("é/*",), False))
        self.assertRaises(ImapParseError, A.list_args, b' (RECURSIVEMATCH) "" %\r\n')  # RFC 5258 §3.1
        self.assertRaises(ImapParseError, A.list_args, b' (BOGUS) "" %\r\n')

    def test_select_qresync_with_match_data(self):
        # RFC 7162 §3.2.5.2
        sa = A.select(b" INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 15000,22500)))\r\n")
        validity, modseq, known, (seqs, uids) = sa.qresync
        self.assertEqual((validity, modseq, known.ranges), (67890007, 90060115194045000, ((1, 29997),)))
        self.assertEqual((seqs.ranges, uids.ranges), (((5000, 5000), (7500, 7500)), ((15000, 15000), (22500, 22500))))
        self.assertTrue(A.select(b" x (CONDSTORE)\r\n").condstore)
        self.assertRaises(ImapParseError, A.select, b" x (FOO)\r\n")

    def test_no_args_and_sequence_only(self):
        A.no_args(b"\r\n")
        self.assertRaises(ImapParseError, A.no_args, b" x\r\n")
        self.assertEqual(A.sequence_only(b" 3000:3002\r\n").ranges, ((3000, 3002),))
        self.assertRaises(ImapParseError, A.sequence_only, b" 1 2\r\n")

    def test_status_and_id_and_create(self):
        self.assertEqual(A.status(b" x (MESSAGES RECENT SIZE)\r\n"), ("x", ("MESSAGES", "RECENT", "SIZE")))
        self.assertRaises(ImapParseError, A.status, b" x (COLOR)\r\n")
        pairs = A.id_params(b' ("name" "x" "' + b"v" * 40 + b'" "' + b"y" * 2000 + b'")\r\n')
        self.assertEqual((len(pairs[1][0]), len(pairs[1][1])), (30, 1024))  # RFC 2971 §3.3
        self.assertEqual(A.create(b" x (USE (\\Junk))\r\n"), ("x", ("\\Junk",)))
        self.assertRaises(ImapParseError, A.create, b" x (USE (\\Bogus))\r\n")
        self.assertRaises(ImapParseError, A.enable, b"\r\n")


class FetchAttributes(unittest.TestCase):
    def atts(self, text):
        return A.fetch(b" 1 " + text + b"\r\n")[1].atts

    def test_macros(self):
        self.assertEqual([a.name for a in self.atts(b"FAST")], ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
        self.assertEqual(len(self.atts(b"ALL")), 4)
        self.assertEqual(self.atts(b"FULL")[-1], FetchAtt("BODY"))

    def test_sections_and_partials(self):
        (a,) = self.atts(b"BODY.PEEK[1.2.HEADER.FIELDS.NOT (Subject x-y)]<10.20>")
        self.assertEqual(a, FetchAtt("BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("SUBJECT", "X-Y")), (10, 20), True))
        self.assertEqual(self.atts(b"BODY[]")[0].section, Section())
        self.assertEqual(self.atts(b"BODY[3.MIME]")[0].section, Section((3,), "MIME"))
        self.assertEqual(self.atts(b"BINARY.PEEK[1]<0.5>")[0], FetchAtt("BINARY", Section((1,)), (0, 5), True))
        self.assertEqual(self.atts(b"BINARY.SIZE[2]")[0], FetchAtt("BINARY.SIZE", Section((2,))))

    def test_simple_attributes(self):
        names = b"ENVELOPE FLAGS INTERNALDATE RFC822.SIZE RFC822.HEADER RFC822.TEXT RFC822 BODYSTRUCTURE BODY UID MODSEQ SAVEDATE"
        self.assertEqual([a.name for a in self.atts(b"(" + names + b")")], names.decode().split())

    def test_errors(self):
        for bad in (b"BODY[MIME]", b"BODY[HEADER.FIELDS ()]", b"BINARY.SIZE[1]<0.5>", b"BODY[1.]",
                    b"BODY[0]", b"BODY[TEXT]<1.0>", b"COLOR", b"()", b"BINARY[HEADER]", b"BODY.PEEK"):
            with self.subTest(bad=bad):
                self.assertRaises(ImapParseError, self.atts, bad)

    def test_vanished_needs_changedsince(self):
        self.assertTrue(A.fetch(b" 1:* FLAGS (CHANGEDSINCE 1 VANISHED)\r\n")[1].vanished)
        self.assertRaises(ImapParseError, A.fetch, b" 1:* FLAGS (VANISHED)\r\n")


class SearchKeys(unittest.TestCase):
    def key(self, text):
        return S.search_args(b" " + text + b"\r\n").key.args[0]

    def test_every_key(self):
        keys = (b"ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY x CC x DELETED DRAFT FLAGGED FROM x "
                b"HEADER Subject x KEYWORD $Junk LARGER 5 NOT SEEN ON 1-Feb-1994 OR SEEN DRAFT "
                b"SEEN SENTBEFORE 1-Feb-1994 SENTON 1-Feb-1994 SENTSINCE 1-Feb-1994 SINCE 1-Feb-1994 "
                b"SMALLER 5 SUBJECT x TEXT x TO x UID 1:* UNANSWERED UNDELETED UNDRAFT UNFLAGGED "
                b"UNKEYWORD $Junk UNSEEN 1,2:3 (SEEN) NEW OLD RECENT OLDER 5 YOUNGER 5 MODSEQ 3 "
                b"SAVEDBEFORE 1-Feb-1994 SAVEDON 1-Feb-1994 SAVEDSINCE 1-Feb-1994 SAVEDATESUPPORTED")
        args = S.search_args(b" " + keys + b"\r\n")
        every = set(S.FLAG_KEYS + S.STRING_KEYS + S.DATE_KEYS + S.NUMBER_KEYS + S.INTERVAL_KEYS
                    + S.KEYWORD_KEYS) | {"NOT", "OR", "UID", "HEADER", "MODSEQ", "SEQ", "AND"}
        self.assertEqual({k.op for k in args.key.args}, every)

    def test_nesting_or_not(self):
        key = self.key(b"OR (FROM a SUBJECT b) NOT (TO c)")
        self.assertEqual(key.op, "OR")
        self.assertEqual(key.args[0], S.SearchKey("AND", (S.SearchKey("FROM", (b"a",)), S.SearchKey("SUBJECT", (b"b",)))))
        self.assertEqual(key.args[1].op, "NOT")

    def test_charset_and_return(self):
        args = S.search_args(b" RETURN () CHARSET utf-8 TEXT {4}\r\nd\xc3\xa9j\r\n")
        self.assertEqual((args.returns, args.charset, args.key.args[0].args), (("ALL",), "UTF-8", (b"d\xc3\xa9j",)))
        self.assertIsNone(S.search_args(b" ALL\r\n").returns)
        self.assertRaises(ImapParseError, S.search_args, b" RETURN (PARTIAL) ALL\r\n")

    def test_errors(self):
        for bad in (b"", b"FROM", b"BOGUS", b"LARGER x", b"OLDER 0", b"(SEEN", b"OR SEEN", b"SEEN  DRAFT"):
            with self.subTest(bad=bad):
                self.assertRaises(ImapParseError, S.search_args, b" " + bad + b"\r\n")

    def test_depth_limit(self):
        ok = b"(" * (g.MAX_DEPTH - 1) + b"SEEN" + b")" * (g.MAX_DEPTH - 1)
        self.key(ok)
        for deep in (b"(" * 5000 + b"SEEN" + b")" * 5000, b"NOT " * 5000 + b"SEEN",
                     b"OR SEEN " * 5000 + b"SEEN"):
            with self.assertRaises(ImapParseError) as cm:
                self.key(deep)
            self.assertIn("nesting", cm.exception.message)


def drain(reader, log):
    """Pull every event; a NeedContinuation is answered with '+' (as a session would)."""
    while True:
        event = reader.next_event()
        if event is None:
            return
        if isinstance(event, NeedContinuation):
            log.append(("+", event.size))
            reader.continue_literal()
        elif isinstance(event, Command):
            log.append(("cmd", event.raw))
        else:
            log.append(("err", event.tag, event.at_boundary, event.code))
            if not event.at_boundary:
                return


def run_chunks(data, chunks, **kw):
    reader = CommandReader(kw.pop("max_literal", 10000), **kw)
    log = []
    for chunk in chunks:
        reader.feed(chunk)
        drain(reader, log)
    return log, reader


def splits(data, seed):
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, 7)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


class Reader(unittest.TestCase):
    STREAM = (b"a1 NOOP\r\nA003 APPEND saved-messages (\\Seen) {11}\r\nHello\r\nJoe!\r\n"
              b"a2 SEARCH CHARSET UTF-8 TEXT {3+}\r\nxyz SUBJECT {2}\r\nab\r\n"
              b"a3 APPEND x ~{3}\r\n\x00\x01\x02\r\na4 LOGOUT\n")

    def test_whole_bytewise_and_random_splits_agree(self):
        whole, _ = run_chunks(self.STREAM, [self.STREAM])
        self.assertEqual([e[0] for e in whole], ["cmd", "+", "cmd", "+", "cmd", "+", "cmd", "cmd"])
        self.assertEqual(whole[2][1], b"A003 APPEND saved-messages (\\Seen) {11}\r\nHello\r\nJoe!\r\n")
        self.assertEqual(whole[-1], ("cmd", b"a4 LOGOUT\r\n"))
        bytewise, _ = run_chunks(self.STREAM, [self.STREAM[i:i + 1] for i in range(len(self.STREAM))])
        self.assertEqual(bytewise, whole)
        for seed in range(30):
            self.assertEqual(run_chunks(self.STREAM, splits(self.STREAM, seed))[0], whole)
        for _, raw in (e for e in whole if e[0] == "cmd"):
            head = g.command_head(raw)
            if head.name in ARGS:
                ARGS[head.name](head.rest)

    def test_waiting_for_literal_octets(self):
        reader = CommandReader(100)
        reader.feed(b"a APPEND x {10+}\r\nabc")
        self.assertIsNone(reader.next_event())
        self.assertEqual(reader.waiting_for, 7)

    def test_sync_literal_over_limit_refused_without_plus(self):
        log, reader = run_chunks(b"", [b"a APPEND x {10001}\r\n", b"b NOOP\r\n"])
        self.assertEqual(log, [("err", b"a", True, "TOOBIG"), ("cmd", b"b NOOP\r\n")])

    def test_refused_literal_octets_never_become_commands(self):
        reader = CommandReader(100)
        reader.feed(b"a APPEND x {20}\r\n")
        self.assertIsInstance(reader.next_event(), NeedContinuation)
        reader.refuse_literal()  # the session said "a NO [TOOBIG]"
        reader.feed(b"b NOOP\r\n")
        self.assertEqual(reader.next_event(), Command(b"b NOOP\r\n", b"b"))
        # Octets that came before the refusal are the literal: BYE, never commands.
        reader = CommandReader(100)
        reader.feed(b"a APPEND x {20}\r\nc DELETE INBOX\r\n!!!!")
        reader.next_event()
        reader.refuse_literal()
        event = reader.next_event()
        self.assertIsInstance(event, ImapParseError)
        self.assertFalse(event.at_boundary)
        reader.feed(b"d NOOP\r\n")
        self.assertIsNone(reader.next_event())

    def test_nonsync_over_limit_is_discarded_then_bad(self):
        payload = b"x DELETE INBOX\r\n" * 700  # 11200 octets that look like commands
        data = b"a APPEND x {%d+}\r\n%s\r\nb NOOP\r\n" % (len(payload), payload)
        for chunks in ([data], splits(data, 1), [data[i:i + 1000] for i in range(0, len(data), 1000)]):
            log, _ = run_chunks(data, chunks)
            self.assertEqual(log, [("err", b"a", True, "TOOBIG"), ("cmd", b"b NOOP\r\n")])

    def test_literal_minus_limit(self):
        # RFC 7888 §5: under LITERAL- a {n+} over 4096 is refused, its octets discarded.
        body = b"y" * 4097
        data = b"a APPEND x {4097+}\r\n%s\r\nb APPEND x {4096+}\r\n%s\r\n" % (body, body[:4096])
        log, _ = run_chunks(data, [data], max_literal=100000, literal_minus=True)
        self.assertEqual([e[0] for e in log], ["err", "cmd"])
        self.assertEqual(log[0][3], "TOOBIG")
        self.assertEqual(run_chunks(data, [data], max_literal=100000)[0][0][0], "cmd")

    def test_huge_literal_bounded_memory(self):
        reader = CommandReader(1000)
        reader.feed(b"a APPEND x {%d+}\r\n" % (DISCARD_MAX - 1))
        self.assertIsNone(reader.next_event())
        chunk = b"z" * 65536
        peak = 0
        for _ in range(200):  # 13 MB of discarded literal
            reader.feed(chunk)
            self.assertIsNone(reader.next_event())
            peak = max(peak, reader.buffered)
        self.assertLessEqual(peak, 65536)
        # Beyond DISCARD_MAX the reader gives up: BYE.
        reader = CommandReader(1000)
        reader.feed(b"a APPEND x {99999999999999999999999+}\r\n")
        event = reader.next_event()
        self.assertEqual((event.at_boundary, event.code), (False, "TOOBIG"))

    def test_over_long_line_bad_and_bounded(self):
        reader = CommandReader(1000, max_line=4096)
        log, peak = [], 0
        reader.feed(b"a1 SEARCH ")
        for _ in range(1000):
            reader.feed(b"1,2,3,4,5," * 100)
            drain(reader, log)
            peak = max(peak, reader.buffered)
        reader.feed(b"6\r\na2 NOOP\r\n")
        drain(reader, log)
        self.assertLessEqual(peak, 4096 + 1000)
        self.assertEqual(log, [("err", b"a1", True, None), ("cmd", b"a2 NOOP\r\n")])

    def test_over_long_line_ending_in_literal_skips_its_octets(self):
        data = b"a1 X " + b"y" * 5000 + b" {16+}\r\nz DELETE INBOX\r\n\r\na2 NOOP\r\n"
        for chunks in ([data], [data[i:i + 1] for i in range(len(data))], splits(data, 3)):
            log, _ = run_chunks(data, chunks, max_line=4096)
            self.assertEqual(log, [("err", b"a1", True, None), ("cmd", b"a2 NOOP\r\n")])
        # A synchronizing literal there: BAD at once, no "+", the next line is a command.
        data = b"a1 X " + b"y" * 5000 + b" {16}\r\na2 NOOP\r\n"
        self.assertEqual(run_chunks(data, [data], max_line=4096)[0],
                         [("err", b"a1", True, None), ("cmd", b"a2 NOOP\r\n")])

    def test_line_limit_counts_all_lines_of_a_command_but_not_literals(self):
        data = b"a1 APPEND x {3000+}\r\n" + b"q" * 3000 + b" {3000+}\r\n" + b"q" * 3000 + b"\r\n"
        self.assertEqual(run_chunks(data, [data], max_line=100)[0][0][0], "cmd")


class Wire(unittest.TestCase):
    def test_string_choice(self):
        self.assertEqual(W.string(b'say "hi" \\o/'), b'"say \\"hi\\" \\\\o/"')
        self.assertEqual(W.string(b"a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(W.string("é".encode()), b"{2}\r\n\xc3\xa9")
        self.assertEqual(W.string("é".encode(), utf8=True), '"é"'.encode())
        self.assertEqual(W.string(b"x" * 2000)[:7], b"{2000}\r")
        self.assertEqual(W.nstring(None), b"NIL")
        self.assertEqual(W.astring(b"INBOX"), b"INBOX")
        self.assertEqual(W.astring(b"NIL"), b'"NIL"')
        self.assertEqual(W.astring(b""), b'""')
        self.assertEqual(W.literal(b"\x00", binary=True), b"~{1}\r\n\x00")

    def test_mailbox_names(self):
        self.assertEqual(W.mailbox("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"), b"~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        self.assertEqual(W.mailbox("Sent Items"), b'"Sent Items"')
        self.assertEqual(W.mailbox("é", utf8=True), '"é"'.encode())
        self.assertEqual(W.mailbox("inbox"), b"INBOX")

    def test_lists_and_sets(self):
        self.assertEqual(W.paren([b"\\Seen", 3, None, [b"a", b"b"]]), b"(\\Seen 3 NIL (a b))")
        self.assertEqual(W.sequence_set([7, 3, 1, 2, 4, 5, 5]), b"1:5,7")
        self.assertEqual(W.sequence_set([9]), b"9")
        self.assertEqual(W.sequence_set(range(1, 100001)), b"1:100000")
        self.assertEqual(g.sequence_set(W.sequence_set([1, 3, 4, 10]))[0].ranges, ((1, 1), (3, 4), (10, 10)))
        self.assertRaises(ValueError, W.sequence_set, [])

    def test_response_lines(self):
        self.assertEqual(W.tagged(b"A1", b"OK", "done", W.response_code("APPENDUID", [38505, 3955])),
                         b"A1 OK [APPENDUID (38505 3955)] done\r\n")
        self.assertEqual(W.tagged(b"A1", b"NO", "x", W.response_code("TRYCREATE")), b"A1 NO [TRYCREATE] x\r\n")
        self.assertEqual(W.status_line(None, b"BYE", "bye\r\nnow"), b"* BYE bye  now\r\n")
        self.assertEqual(W.untagged(b"3 EXISTS"), b"* 3 EXISTS\r\n")
        self.assertEqual(W.continuation(), b"+ Ready\r\n")
        self.assertEqual(W.continuation(b""), b"+ Ready\r\n")  # never a bare "+"
        self.assertEqual(W.continuation("idling"), b"+ idling\r\n")
        self.assertRaises(ValueError, W.tagged, b"A1", b"MAYBE", "x")


if __name__ == "__main__":
    unittest.main()


class Mutations(unittest.TestCase):
    def test_mutated_examples_raise_only_parse_errors(self):
        """Bad input is BAD, never a crash: every RFC example, mutated 300 times."""
        rnd = random.Random(10)
        alphabet = b' ()[]{}<>."\\*%$:,+-~0123456789\r\nAZaz\x00\xff'
        for line in RFC_EXAMPLES:
            for _ in range(300):
                data = bytearray(line)
                for _ in range(rnd.randint(1, 4)):
                    pos = rnd.randrange(len(data) + 1)
                    op = rnd.randrange(3)
                    if op == 0 and pos < len(data):
                        del data[pos]
                    elif op == 1 and pos < len(data):
                        data[pos] = rnd.choice(alphabet)
                    else:
                        data[pos:pos] = bytes([rnd.choice(alphabet)])
                try:
                    head = g.command_head(bytes(data) + b"\r\n")
                    if head.name in ARGS:
                        ARGS[head.name](head.rest)
                except ImapParseError:
                    pass

    def test_reader_on_random_streams_stays_bounded(self):
        rnd = random.Random(11)
        pieces = [b"a APPEND x {5}\r\n", b"{3+}\r\n", b"~{2}\r\n", b"{99999}\r\n", b"{70000+}\r\n",
                  b"\r\n", b"\n", b"b NOOP\r\n", b"x" * 300, b"{", b"}", b"+"]
        for _ in range(200):
            reader = CommandReader(1000, max_line=512)
            data = b"".join(rnd.choice(pieces) for _ in range(40))
            for chunk in splits(data, rnd.random()):
                reader.feed(chunk)
                while True:
                    event = reader.next_event()
                    if isinstance(event, NeedContinuation):
                        (reader.continue_literal if rnd.random() < 0.5 else reader.refuse_literal)()
                        continue
                    if event is None or isinstance(event, ImapParseError) and not event.at_boundary:
                        break
                    self.assertIsInstance(event, (Command, ImapParseError))
                self.assertLessEqual(reader.buffered - len(chunk), 512 + 1000)
