"""CONDSTORE and QRESYNC (RFC 7162) and UIDONLY (RFC 9586) (protocols/imap/condstore.py, view.py):
the RFC's examples as transcripts (our MODSEQs and texts), fed whole, one byte
at a time and split at random; two sessions on one folder (one changes flags
and expunges, the other hears MODSEQ FETCHes and VANISHED, also in IDLE); the
QRESYNC resync from the expunge log and from a trimmed one (RFC 7162 §3.2.5.2); and
UNCHANGEDSINCE conflicts answered [MODIFIED]."""

import unittest

from protocols.imap import condstore
from protocols.imap import grammar as g
from tests.imap_fake import FakeImapBackend, drain, feed, login, make_session
from tests.test_imap_session import POST_CAPS, TranscriptCase

RFC1 = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"


def body(i: int) -> bytes:
    return b"From: a@example.test\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (i, i)


def change(box, uid, *flags) -> None:
    """Another client's flag change: a new MODSEQ for the message."""
    box.modseq += 1
    m = box.messages[uid]
    m.flags |= set(flags)
    m.modseq = box.modseq
    box.note_keywords(flags)


def synced():
    """INBOX (UIDVALIDITY 1000) with UIDs 1..10 at MODSEQs 2..11 (a client last
    synced at 11), then: UID 4 \\Seen (12), UIDs 3 and 5 expunged (13), UID 9
    $Forwarded (14)."""
    b = FakeImapBackend()
    for i in range(1, 11):
        b.deliver("fred", body(i))
    box = b.boxes["fred"]["INBOX"]
    box.unclaimed_recent.clear()
    change(box, 4, "\\Seen")
    box.remove([3, 5])
    change(box, 9, "$Forwarded")
    return b


def make_synced():
    return make_session(synced())


def rev1_head(exists, unseen=1, uidnext=11, flags="\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded"):
    return ("S: * FLAGS (%s)\nS: * OK [PERMANENTFLAGS (%s \\*)] Flags permitted\nS: * %d EXISTS\n"
            "S: * 0 RECENT\nS: * OK [UNSEEN %d] First unseen\nS: * OK [UIDVALIDITY 1000] UIDs valid\n"
            "S: * OK [UIDNEXT %d] Predicted next UID\n" % (flags, flags, exists, unseen, uidnext))


class EnableTest(TranscriptCase):
    def test_capabilities_offer_them(self):
        self.assertIn(" CONDSTORE QRESYNC UIDONLY ", POST_CAPS)
        s, _ = make_session()
        self.assertIn(b" CONDSTORE QRESYNC UIDONLY", s.greeting)

    def test_rfc7162_3_2_3_enable_qresync_condstore(self):
        self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: b ENABLE QRESYNC CONDSTORE
S: * ENABLED QRESYNC
S: b OK ENABLE completed
C: c ENABLE CONDSTORE QRESYNC
S: * ENABLED
S: c OK ENABLE completed
""" % POST_CAPS, make=make_synced)

    def test_unauthenticate_turns_them_off(self):
        s, _ = make_synced()
        login(s)
        feed(s, b"a ENABLE QRESYNC\r\n")
        feed(s, b"b UNAUTHENTICATE\r\n")
        login(s)
        self.assertEqual(feed(s, b"c SELECT INBOX (QRESYNC (1000 11))\r\n")[:6], b"c BAD ")


class CondstoreTest(TranscriptCase):
    def test_rfc7162_3_1_8_select_condstore(self):
        """Example 18: SELECT (CONDSTORE) says HIGHESTMODSEQ and enables."""
        self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: A142 SELECT INBOX (CONDSTORE)
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: A142 OK [READ-WRITE] SELECT completed
C: b STORE 1 +FLAGS.SILENT (\\Deleted)
S: * 1 FETCH (UID 1 MODSEQ (15))
S: b OK STORE completed
""" % (POST_CAPS, rev1_head(8)), make=make_synced)

    def test_rfc7162_3_1_first_enabling_command_when_selected_sends_highestmodseq(self):
        """Examples 5 and 13: the first CONDSTORE enabling command in the
        selected state answers HIGHESTMODSEQ before its FETCH responses."""
        self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: b SELECT INBOX
%sS: b OK [READ-WRITE] SELECT completed
C: c STORE 7 (UNCHANGEDSINCE 14) -FLAGS.SILENT ($Forwarded)
S: * OK [HIGHESTMODSEQ 14] Highest
S: * 7 FETCH (UID 9 MODSEQ (15))
S: c OK STORE completed
C: d FETCH 1:3 (MODSEQ)
S: * 1 FETCH (MODSEQ (2))
S: * 2 FETCH (MODSEQ (3))
S: * 3 FETCH (MODSEQ (12))
S: d OK FETCH completed
""" % (POST_CAPS, rev1_head(8)), make=make_synced)

    def test_rfc7162_3_1_3_unchangedsince_conflicts_give_modified(self):
        """Examples 3, 6 and 8: passing messages get FETCH MODSEQ even with
        .SILENT; failing ones are listed in [MODIFIED] (numbers, or UIDs for
        UID STORE), and their flags are left alone; 0 always fails."""
        s, b = self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: b ENABLE CONDSTORE
S: * ENABLED CONDSTORE
S: b OK ENABLE completed
C: c SELECT INBOX
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: c OK [READ-WRITE] SELECT completed
C: a103 UID STORE 6,2,8 (UNCHANGEDSINCE 12) +FLAGS.SILENT (\\Deleted)
S: * 2 FETCH (UID 2 MODSEQ (15))
S: * 4 FETCH (UID 6 MODSEQ (16))
S: * 6 FETCH (UID 8 MODSEQ (17))
S: a103 OK STORE completed
C: d105 STORE 7,3,1 (UNCHANGEDSINCE 11) +FLAGS.SILENT (\\Deleted)
S: * 1 FETCH (UID 1 MODSEQ (18))
S: d105 OK [MODIFIED 3,7] Conditional STORE failed for some messages
C: d106 UID STORE 4,9 (UNCHANGEDSINCE 11) +FLAGS (\\Flagged)
S: d106 OK [MODIFIED 4,9] Conditional STORE failed for some messages
C: a102 STORE 5 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Draft)
S: a102 OK [MODIFIED 5] Conditional STORE failed for some messages
""" % (POST_CAPS, rev1_head(8)), make=make_synced)
        box = b.boxes["fred"]["INBOX"]
        self.assertEqual(box.messages[4].flags, {"\\Seen"})
        self.assertEqual(box.messages[9].flags, {"$Forwarded"})
        self.assertEqual(box.messages[7].flags, set())
        self.assertEqual(box.messages[1].flags, {"\\Deleted"})

    def test_rfc7162_3_1_4_changedsince(self):
        """Example 12: only messages changed since, MODSEQ implied."""
        self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: b SELECT INBOX
%sS: b OK [READ-WRITE] SELECT completed
C: s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 11)
S: * OK [HIGHESTMODSEQ 14] Highest
S: * 3 FETCH (UID 4 MODSEQ (12) FLAGS (\\Seen))
S: * 7 FETCH (UID 9 MODSEQ (14) FLAGS ($Forwarded))
S: s100 OK FETCH completed
C: s101 FETCH 1:5 (FLAGS) (CHANGEDSINCE 11)
S: * 3 FETCH (MODSEQ (12) FLAGS (\\Seen))
S: s101 OK FETCH completed
C: s102 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 11 VANISHED)
S: s102 BAD VANISHED needs ENABLE QRESYNC first (RFC 7162 \u00a73.2.6)
""" % (POST_CAPS, rev1_head(8)), make=make_synced)

    def test_rfc7162_3_1_5_search_modseq(self):
        """Examples 15, 16, 17 and 19: SEARCH MODSEQ ends in the hits' highest
        MODSEQ, ESEARCH carries it, an empty result none; STATUS HIGHESTMODSEQ."""
        self.run_transcript("""
C: a LOGIN fred secret
S: a OK [CAPABILITY %s] Logged in
C: A042 STATUS INBOX (UIDNEXT MESSAGES HIGHESTMODSEQ)
S: * STATUS INBOX (UIDNEXT 11 MESSAGES 8 HIGHESTMODSEQ 14)
S: A042 OK STATUS completed
C: b SELECT INBOX
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: b OK [READ-WRITE] SELECT completed
C: a SEARCH MODSEQ "/flags/\\\\draft" all 12
S: * SEARCH 3 7 (MODSEQ 14)
S: a OK SEARCH completed
C: t SEARCH OR NOT MODSEQ 2 LARGER 50000
S: * SEARCH
S: t OK SEARCH completed
C: u UID SEARCH RETURN (ALL) MODSEQ 12
S: * ESEARCH (TAG "u") UID ALL 4,9 MODSEQ 14
S: u OK SEARCH completed
""" % (POST_CAPS, rev1_head(8)), make=make_synced)


class QresyncTest(TranscriptCase):
    HEAD = "C: a LOGIN fred secret\nS: a OK [CAPABILITY %s] Logged in\n" \
           "C: b ENABLE QRESYNC\nS: * ENABLED QRESYNC\nS: b OK ENABLE completed\n" % POST_CAPS

    def test_rfc7162_3_2_5_1_select_qresync(self):
        """What changed since MODSEQ 11: VANISHED (EARLIER) from the expunge
        log, then the changed messages with UID, FLAGS and MODSEQ."""
        self.run_transcript(self.HEAD + """
C: A03 SELECT INBOX (QRESYNC (1000 11 1:10))
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: * VANISHED (EARLIER) 3,5
S: * 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (12))
S: * 7 FETCH (UID 9 FLAGS ($Forwarded) MODSEQ (14))
S: A03 OK [READ-WRITE] SELECT completed
C: A04 EXAMINE INBOX (QRESYNC (1000 12 4:8))
S: * OK [CLOSED] Previous mailbox closed
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: * VANISHED (EARLIER) 5
S: A04 OK [READ-ONLY] EXAMINE completed
C: A05 EXAMINE INBOX (QRESYNC (1000 14))
S: * OK [CLOSED] Previous mailbox closed
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: A05 OK [READ-ONLY] EXAMINE completed
""" % (rev1_head(8), rev1_head(8).replace("(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)",
                                           "()").replace("Flags permitted", "Read-only mailbox"),
       rev1_head(8).replace("(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)",
                            "()").replace("Flags permitted", "Read-only mailbox")), make=make_synced)

    def test_rfc7162_3_2_5_uidvalidity_mismatch(self):
        self.run_transcript(self.HEAD + """
C: A02 SELECT INBOX (QRESYNC (67890007 11 1:10))
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: A02 OK [READ-WRITE] SELECT completed
""" % rev1_head(8), make=make_synced)

    def test_rfc7162_3_2_6_uid_fetch_vanished(self):
        self.run_transcript(self.HEAD + """
C: s SELECT INBOX
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: s OK [READ-WRITE] SELECT completed
C: s100 UID FETCH 2:8 (FLAGS) (CHANGEDSINCE 11 VANISHED)
S: * VANISHED (EARLIER) 3,5
S: * 3 FETCH (UID 4 MODSEQ (12) FLAGS (\\Seen))
S: s100 OK FETCH completed
C: s101 FETCH 1:* (FLAGS) (CHANGEDSINCE 11 VANISHED)
S: s101 BAD VANISHED is for UID FETCH only (RFC 7162 \u00a73.2.6)
""" % rev1_head(8), make=make_synced)

    def test_rfc7162_3_2_7_expunge_answers_vanished_and_highestmodseq(self):
        """§3.2.7, §3.2.9: VANISHED, HIGHESTMODSEQ in the tagged OK; §3.2.8:
        CLOSE says nothing; the log then answers a resync."""
        s, b = self.run_transcript(self.HEAD + """
C: s SELECT INBOX
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: s OK [READ-WRITE] SELECT completed
C: B202 STORE 1,2,4,8 +FLAGS.SILENT (\\Deleted)
S: * 1 FETCH (UID 1 MODSEQ (15))
S: * 2 FETCH (UID 2 MODSEQ (16))
S: * 4 FETCH (UID 6 MODSEQ (17))
S: * 8 FETCH (UID 10 MODSEQ (18))
S: B202 OK STORE completed
C: c UID EXPUNGE 1:2
S: * VANISHED 1:2
S: c OK [HIGHESTMODSEQ 19] EXPUNGE completed
C: d EXPUNGE
S: * VANISHED 6,10
S: d OK [HIGHESTMODSEQ 20] EXPUNGE completed
C: e CLOSE
S: e OK CLOSE completed
C: f SELECT INBOX (QRESYNC (1000 18 1:10))
%sS: * OK [HIGHESTMODSEQ 20] Highest
S: * VANISHED (EARLIER) 1:2,6,10
S: f OK [READ-WRITE] SELECT completed
""" % (rev1_head(8), rev1_head(4, unseen=2)), make=make_synced)

    def test_rfc7162_3_2_5_2_trimmed_log_names_every_uid_not_present(self):
        """A MODSEQ older than the log: every known UID not here (§3.2.6
        note), narrowed by the sequence match data (§3.2.5.2)."""
        def trimmed():
            b = synced()
            b.boxes["fred"]["INBOX"].expunge_start = 13
            return make_session(b)
        self.run_transcript(self.HEAD + """
C: A04 SELECT INBOX (QRESYNC (1000 5 1:20))
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: * VANISHED (EARLIER) 3,5
S: * 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (12))
S: * 4 FETCH (UID 6 FLAGS () MODSEQ (7))
S: * 5 FETCH (UID 7 FLAGS () MODSEQ (8))
S: * 6 FETCH (UID 8 FLAGS () MODSEQ (9))
S: * 7 FETCH (UID 9 FLAGS ($Forwarded) MODSEQ (14))
S: * 8 FETCH (UID 10 FLAGS () MODSEQ (11))
S: A04 OK [READ-WRITE] SELECT completed
C: B04 SELECT INBOX (QRESYNC (1000 10 1:10 (1,3,5 1,4,8)))
S: * OK [CLOSED] Previous mailbox closed
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: * VANISHED (EARLIER) 5
S: * 3 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (12))
S: * 7 FETCH (UID 9 FLAGS ($Forwarded) MODSEQ (14))
S: * 8 FETCH (UID 10 FLAGS () MODSEQ (11))
S: B04 OK [READ-WRITE] SELECT completed
""" % (rev1_head(8), rev1_head(8)), make=trimmed)


UIDREQUIRED = "BAD [UIDREQUIRED] Message numbers are not allowed once UIDONLY is enabled (RFC 9586 \u00a73)"


class UidonlyTest(TranscriptCase):
    """RFC 9586: the examples of §3.1 - §3.7 (our UIDs and texts)."""

    HEAD = "C: a LOGIN fred secret\nS: a OK [CAPABILITY %s] Logged in\n" \
           "C: 01 ENABLE UIDONLY\nS: * ENABLED UIDONLY\nS: 01 OK ENABLE completed\n" % POST_CAPS
    SELECT = ("C: 02 SELECT INBOX\n" + rev1_head(8).replace("S: * OK [UNSEEN 1] First unseen\n", "")
              + "S: 02 OK [READ-WRITE] SELECT completed\n")

    def test_rfc9586_3_numbers_are_refused_with_uidrequired(self):
        self.run_transcript(self.HEAD + self.SELECT + """
C: 07 FETCH 1:2 (UID FLAGS)
S: 07 %s
C: 08 STORE 1 +FLAGS (\\Seen)
S: 08 %s
C: 09 SEARCH ALL
S: 09 %s
C: 10 COPY 1 Trash
S: 10 %s
C: 11 MOVE 1 Trash
S: 11 %s
C: 12 UID SEARCH 1:3
S: 12 %s
C: 13 UID SEARCH UID 1:3
S: * SEARCH 1 2
S: 13 OK SEARCH completed
""" % ((UIDREQUIRED,) * 6), make=make_synced)

    def test_rfc9586_3_3_to_3_6_uidfetch_and_vanished(self):
        self.run_transcript(self.HEAD + self.SELECT + """
C: 10 UID FETCH 1:4 (FLAGS)
S: * 1 UIDFETCH (FLAGS ())
S: * 2 UIDFETCH (FLAGS ())
S: * 4 UIDFETCH (FLAGS (\\Seen))
S: 10 OK FETCH completed
C: 11 UID FETCH 1:4 (UID FLAGS)
S: * 1 UIDFETCH (UID 1 FLAGS ())
S: * 2 UIDFETCH (UID 2 FLAGS ())
S: * 4 UIDFETCH (UID 4 FLAGS (\\Seen))
S: 11 OK FETCH completed
C: 14 UID STORE 1,2 +FLAGS (\\Deleted)
S: * 1 UIDFETCH (FLAGS (\\Deleted))
S: * 2 UIDFETCH (FLAGS (\\Deleted))
S: 14 OK STORE completed
C: 12 EXPUNGE
S: * VANISHED 1:2
S: 12 OK EXPUNGE completed
C: 15 UID MOVE 4 Trash
S: * OK [COPYUID 1003 4 1] Moved
S: * VANISHED 4
S: 15 OK MOVE completed
C: 16 UID FETCH 7 (BODY[TEXT])
S: * 7 UIDFETCH (BODY[TEXT] {8}
S: body 7
S:  FLAGS (\\Seen))
S: 16 OK FETCH completed
""", make=make_synced)

    def test_rfc9586_3_7_with_condstore_and_qresync(self):
        self.run_transcript(self.HEAD + """
C: 03 ENABLE QRESYNC
S: * ENABLED QRESYNC
S: 03 OK ENABLE completed
C: 04 SELECT INBOX (QRESYNC (1000 11 1:10 (1 1)))
S: 04 %s
C: 05 SELECT INBOX (QRESYNC (1000 11 1:10))
%sS: * OK [HIGHESTMODSEQ 14] Highest
S: * VANISHED (EARLIER) 3,5
S: * 4 UIDFETCH (FLAGS (\\Seen) MODSEQ (12))
S: * 9 UIDFETCH (FLAGS ($Forwarded) MODSEQ (14))
S: 05 OK [READ-WRITE] SELECT completed
C: 06 UID STORE 6 +FLAGS.SILENT (\\Seen)
S: * 6 UIDFETCH (MODSEQ (15))
S: 06 OK STORE completed
C: 07 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 14 VANISHED)
S: * 6 UIDFETCH (MODSEQ (15) FLAGS (\\Seen))
S: 07 OK FETCH completed
""" % (UIDREQUIRED, rev1_head(8).replace("S: * OK [UNSEEN 1] First unseen\n", "")), make=make_synced)

    def test_other_sessions_changes_come_as_uidfetch(self):
        b = synced()
        s1, _ = make_session(b)
        s2, _ = make_session(b)
        login(s1)
        login(s2)
        feed(s2, b"u ENABLE UIDONLY\r\n")
        feed(s1, b"s SELECT INBOX\r\n")
        feed(s2, b"s SELECT INBOX\r\n")
        feed(s1, b"a STORE 7 +FLAGS (\\Flagged)\r\n")
        self.assertEqual(feed(s2, b"n NOOP\r\n"), b"* 9 UIDFETCH (FLAGS (\\Flagged $Forwarded))\r\nn OK NOOP completed\r\n")
        feed(s1, b"b UID STORE 9 +FLAGS (\\Deleted)\r\nc EXPUNGE\r\n")
        self.assertEqual(feed(s2, b"n NOOP\r\n"), b"* VANISHED 9\r\nn OK NOOP completed\r\n")


class TwoSessionsTest(unittest.TestCase):
    def setUp(self):
        self.b = synced()
        self.s1, _ = make_session(self.b)
        self.s2, _ = make_session(self.b)
        login(self.s1)
        login(self.s2)
        feed(self.s2, b"q ENABLE QRESYNC\r\n")
        feed(self.s1, b"s SELECT INBOX\r\n")
        feed(self.s2, b"s SELECT INBOX\r\n")

    def test_flag_change_and_expunge_seen_as_modseq_fetch_and_vanished(self):
        self.assertEqual(feed(self.s1, b"a STORE 1,2 +FLAGS (\\Deleted)\r\n"),
                         b"* 1 FETCH (FLAGS (\\Deleted))\r\n* 2 FETCH (FLAGS (\\Deleted))\r\na OK STORE completed\r\n")
        self.assertEqual(feed(self.s2, b"n NOOP\r\n"),
                         b"* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (15))\r\n"
                         b"* 2 FETCH (UID 2 FLAGS (\\Deleted) MODSEQ (16))\r\nn OK NOOP completed\r\n")
        self.assertEqual(feed(self.s1, b"b EXPUNGE\r\n"), b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nb OK EXPUNGE completed\r\n")
        self.assertEqual(feed(self.s2, b"n NOOP\r\n"), b"* VANISHED 1:2\r\nn OK NOOP completed\r\n")
        self.assertEqual(feed(self.s2, b"f FETCH 1 UID\r\n"), b"* 1 FETCH (UID 4)\r\nf OK FETCH completed\r\n")

    def test_idle_hears_vanished_and_fetch_with_modseq(self):
        self.assertEqual(feed(self.s2, b"i IDLE\r\n"), b"+ idling\r\n")
        feed(self.s1, b"a STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(drain(self.s2), b"* 3 FETCH (UID 4 FLAGS (\\Deleted \\Seen) MODSEQ (15))\r\n")
        feed(self.s1, b"b EXPUNGE\r\n")
        self.assertEqual(drain(self.s2), b"* VANISHED 4\r\n")
        self.assertEqual(feed(self.s2, b"DONE\r\n"), b"i OK IDLE terminated\r\n")

    def test_flag_change_waits_while_an_expunge_is_held(self):
        """RFC 7162 §3.2: no flag change newer than an expunge the client has not
        heard, and a HIGHESTMODSEQ below that expunge after answers that carry newer ones."""
        feed(self.s1, b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        feed(self.s1, b"b EXPUNGE\r\n")
        feed(self.s1, b"c STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
        self.assertEqual(feed(self.s2, b"f FETCH 2 FLAGS\r\n"), b"* 2 FETCH (FLAGS ())\r\n"
                         b"* OK [HIGHESTMODSEQ 14] Expunges pending\r\nf OK FETCH completed\r\n")
        # its own STORE answers a MODSEQ above the held expunge's: HIGHESTMODSEQ below it follows (§6)
        self.assertEqual(feed(self.s2, b"g STORE 3 +FLAGS (\\Answered)\r\n"),
                         b"* 3 FETCH (UID 4 FLAGS (\\Answered \\Seen) MODSEQ (18))\r\n"
                         b"* OK [HIGHESTMODSEQ 14] Expunges pending\r\ng OK STORE completed\r\n")
        self.assertEqual(feed(self.s2, b"n NOOP\r\n"),
                         b"* VANISHED 1\r\n* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (17))\r\nn OK NOOP completed\r\n")


class HelpersTest(unittest.TestCase):
    def test_missing_ranges_are_arithmetic(self):
        self.assertEqual(condstore._missing([(1, 4294967295)], [3, 4, 9]), [(1, 2), (5, 8), (10, 4294967295)])
        self.assertEqual(condstore._missing([(2, 3), (7, 9)], [3, 7]), [(2, 2), (8, 9)])
        self.assertEqual(condstore._missing([(1, 5)], []), [(1, 5)])

    def test_clip_merges_and_cuts_at_uidnext(self):
        self.assertEqual(condstore._clip([(5, 9), (1, 3), (4, 4), (20, 30)], 10), [(1, 9)])
        self.assertEqual(condstore._clip([(0, 1)], 0), [])       # 1:* of an empty mailbox

    def test_modseq_key_found_anywhere(self):
        from protocols.imap import search as S
        self.assertTrue(condstore.has_modseq_key(S.search_args(b" OR NOT MODSEQ 5 LARGER 50\r\n").key))
        self.assertFalse(condstore.has_modseq_key(S.search_args(b" OR SEEN LARGER 50\r\n").key))

    def test_sequence_set_resolve_used_by_known_uids(self):
        seq, _ = g.sequence_set(b"1:*")
        self.assertEqual(condstore._clip(seq.resolve(10), 10), [(1, 10)])


if __name__ == "__main__":
    unittest.main()
