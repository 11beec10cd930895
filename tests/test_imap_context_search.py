"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (CONTEXT / UPDATE / PARTIAL),
ADDTO and REMOVEFROM as the selected mailbox changes, CANCELUPDATE and the
NOUPDATE refusals (protocols/imap/sort_context.py, selected.py, search.py):
transcripts after the RFC's examples on our mailbox (whole, byte by byte,
split), two sessions, IDLE, random changes whose updates must rebuild a
fresh SEARCH, and the whole server on loopback with the stdlib's imaplib."""

import imaplib
import random
import re
import unittest

from protocols.imap import search as S
from protocols.imap import sort_context
from tests.helpers import ServerTestCase
from tests.imap_fake import drain, feed, login, make_session
from tests.test_imap_session import TranscriptCase
from tests.test_imap_sort import FIVE, expand, message, selected

_FLAGS = ("S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\n"
          "S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] "
          "Flags permitted\n")


class ContextSearchTranscriptTest(TranscriptCase):
    def test_rfc5267_4_3_update_addto_removefrom_cancelupdate(self):
        """RFC 5267 §4.3 (B01's program on our five messages): tag reuse is
        BAD for SEARCH and SORT; ADDTO after the FETCHes at position 0 in
        mailbox order (§4.3.3's ``UID ADDTO (0 32768:32769)``), REMOVEFROM
        before the EXPUNGEs (§4.3.4); message numbers for SEARCH, UIDs for
        UID SEARCH (§4.3.2); CANCELUPDATE ends the updates (§4.3.5)."""
        self.run_transcript("""
C: B01 UID SEARCH RETURN (UPDATE COUNT) DELETED KEYWORD $Junk
S: * ESEARCH (TAG "B01") UID COUNT 0
S: B01 OK SEARCH completed
C: B01 SORT RETURN (UPDATE) (DATE) UTF-8 FLAGGED
S: B01 BAD Tag reuse
C: B01 SEARCH RETURN (UPDATE) FLAGGED
S: B01 BAD Tag reuse
C: C01 SEARCH RETURN (UPDATE) UNDELETED
S: * ESEARCH (TAG "C01") ALL 1:5
S: C01 OK SEARCH completed
C: B03 STORE 2,4 +FLAGS (\\Deleted $Junk)
""" + _FLAGS + """S: * 2 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * 4 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * ESEARCH (TAG "C01") REMOVEFROM (0 2,4)
S: * ESEARCH (TAG "B01") UID ADDTO (0 2,4)
S: B03 OK STORE completed
C: B04 EXPUNGE
S: * ESEARCH (TAG "B01") UID REMOVEFROM (0 2,4)
S: * 4 EXPUNGE
S: * 2 EXPUNGE
S: B04 OK EXPUNGE completed
C: B05 CANCELUPDATE "B01"
S: B05 OK CANCELUPDATE completed
C: B06 CANCELUPDATE "B01"
S: B06 BAD Unknown update context B01
C: B07 STORE 1,3 +FLAGS (\\Deleted $Junk)
S: * 1 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * 3 FETCH (FLAGS (\\Deleted $Junk \\Recent))
S: * ESEARCH (TAG "C01") REMOVEFROM (0 1,3)
S: B07 OK STORE completed
""", make=selected(FIVE))

    def test_rfc5267_4_2_context_and_4_4_partial(self):
        """§4.2: CONTEXT is a hint (alone it means ALL); §4.4 (RFC 9394
        §3.1): PARTIAL in mailbox order, NIL past the end, not with ALL;
        PARTIAL with UPDATE answers the slice and updates every result."""
        self.run_transcript("""
C: A01 SEARCH RETURN (CONTEXT COUNT) UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "A01") COUNT 5
S: A01 OK SEARCH completed
C: A02 UID SEARCH RETURN (PARTIAL 4:9) UNDELETED UNKEYWORD $Junk
C: A03 UID SEARCH RETURN (PARTIAL 1:2) UNDELETED UNKEYWORD $Junk
C: A04 UID SEARCH RETURN (PARTIAL 7:9) UNDELETED UNKEYWORD $Junk
S: * ESEARCH (TAG "A02") UID PARTIAL (4:9 4:5)
S: A02 OK SEARCH completed
S: * ESEARCH (TAG "A03") UID PARTIAL (1:2 1:2)
S: A03 OK SEARCH completed
S: * ESEARCH (TAG "A04") UID PARTIAL (7:9 NIL)
S: A04 OK SEARCH completed
C: A05 SEARCH RETURN (CONTEXT) SUBJECT alpha
S: * ESEARCH (TAG "A05") ALL 3:4
S: A05 OK SEARCH completed
C: A06 SEARCH RETURN (PARTIAL 1:2 ALL CONTEXT) ALL
S: A06 BAD RETURN takes one PARTIAL and no ALL with it (RFC 9394 §3.1)
C: P1 UID SEARCH RETURN (UPDATE PARTIAL -1:-2) UNSEEN
S: * ESEARCH (TAG "P1") UID PARTIAL (-1:-2 4:5)
S: P1 OK SEARCH completed
C: P2 STORE 1 +FLAGS.SILENT (\\Seen)
S: * ESEARCH (TAG "P1") UID REMOVEFROM (0 1)
S: P2 OK STORE completed
""", make=selected(FIVE))

    def test_rfc5267_4_3_1_noupdate(self):
        """RFC 5267 §4.3.1: NOUPDATE for a program with message numbers or
        ``$`` (evaluated once, RFC 5267 §4.3), past MAX_CONTEXTS (shared with SORT), and
        for the ESEARCH command (RFC 7377 §2.2); the other return options
        are still answered.  RETURN (SAVE UPDATE) sends no ESEARCH (RFC 5182
        §2.1) and still updates."""
        lines = """
C: A06 SEARCH RETURN (UPDATE) 1:2
S: * ESEARCH (TAG "A06") ALL 1:2
S: * NO [NOUPDATE "A06"] No updates for a program with message numbers
S: A06 OK SEARCH completed
C: A07 SEARCH RETURN (UPDATE COUNT) UID $
S: * ESEARCH (TAG "A07") COUNT 0
S: * NO [NOUPDATE "A07"] No updates for a program with message numbers
S: A07 OK SEARCH completed
C: A08 ESEARCH RETURN (UPDATE MIN) UNSEEN
S: * ESEARCH (TAG "A08" MAILBOX INBOX UIDVALIDITY 1000) UID MIN 1
S: * NO [NOUPDATE "A08"] No updates for ESEARCH, use SEARCH RETURN (UPDATE)
S: A08 OK ESEARCH completed
C: s0 SEARCH RETURN (SAVE UPDATE) UNSEEN
S: s0 OK SEARCH completed
""".strip().split("\n")
        for n in range(1, sort_context.MAX_CONTEXTS):
            verb = "SORT RETURN (UPDATE MIN) (DATE) UTF-8" if n % 2 else "SEARCH RETURN (UPDATE MIN)"
            lines += ["C: u%d %s ALL" % (n, verb), 'S: * ESEARCH (TAG "u%d") MIN %d' % (n, 4 if n % 2 else 1),
                      "S: u%d OK %s completed" % (n, verb.split()[0])]
        lines += ["C: x SEARCH RETURN (UPDATE MIN) ALL", 'S: * ESEARCH (TAG "x") MIN 1',
                  'S: * NO [NOUPDATE "x"] Too many update contexts', "S: x OK SEARCH completed",
                  "C: y STORE 5 +FLAGS.SILENT (\\Seen)", 'S: * ESEARCH (TAG "s0") REMOVEFROM (0 5)',
                  "S: y OK STORE completed"]
        self.run_transcript("\n".join(lines) + "\n", make=selected(FIVE))

    def test_esearch_update_needs_a_selected_mailbox(self):
        """RFC 7377 §2.2: UPDATE without a selected mailbox is BAD."""
        def make():
            s, b = selected(FIVE)()
            feed(s, b"u UNSELECT\r\n")
            return s, b
        self.run_transcript("""
C: E1 ESEARCH IN (personal) RETURN (UPDATE) ALL
S: E1 BAD RETURN (UPDATE) needs a selected mailbox (RFC 7377 §2.2)
""", make=make)

    def test_modseq_search_keeps_its_answer_and_updates(self):
        """RFC 7162 §3.1.5 MODSEQ with UPDATE: the answer still carries
        MODSEQ; a flag change raises the message's MODSEQ into the result."""
        s, _ = selected(FIVE)()
        out = feed(s, b"m SEARCH RETURN (UPDATE) MODSEQ 1\r\n")
        self.assertRegex(out, rb'^\* OK \[HIGHESTMODSEQ \d+\] Highest\r\n'
                              rb'\* ESEARCH \(TAG "m"\) ALL 1:5 MODSEQ \d+\r\nm OK SEARCH completed\r\n$')
        high = int(re.search(rb"MODSEQ (\d+)", out).group(1))
        feed(s, b"c CANCELUPDATE \"m\"\r\n")
        out = feed(s, b"n UID SEARCH RETURN (UPDATE) MODSEQ %d\r\n" % (high + 1))
        self.assertEqual(out, b'* ESEARCH (TAG "n") UID\r\nn OK SEARCH completed\r\n')
        out = feed(s, b"f STORE 3 +FLAGS.SILENT (\\Flagged)\r\n")
        self.assertEqual(out, b"* 3 FETCH (UID 3 MODSEQ (%d))\r\n" % (high + 1) +   # RFC 7162 §3.1.3
                         b'* ESEARCH (TAG "n") UID ADDTO (0 3)\r\nf OK STORE completed\r\n')


class ContextSearchTwoSessionsTest(unittest.TestCase):
    def test_another_sessions_store_expunge_and_a_delivery(self):
        """RFC 5267 §4.3: another session's STORE and EXPUNGE and a delivery
        reach the contexts on the next command, without asking: REMOVEFROM
        before the EXPUNGE (§4.3.4), ADDTO after the EXISTS (§4.3.3), the new
        message's number valid there."""
        s, b = selected(FIVE)()
        self.assertIn(b'* ESEARCH (TAG "n") ALL 1:5\r\n', feed(s, b"n SEARCH RETURN (UPDATE) UNSEEN\r\n"))
        self.assertIn(b'* ESEARCH (TAG "u") UID COUNT 5\r\n',
                      feed(s, b"u UID SEARCH RETURN (UPDATE COUNT) UNSEEN\r\n"))
        other, _ = make_session(b)
        login(other)
        feed(other, b"S SELECT INBOX\r\n")
        self.assertIn(b"X OK", feed(other, b"X STORE 3 +FLAGS (\\Seen)\r\n"))
        self.assertIn(b"Y OK", feed(other, b"Y STORE 2 +FLAGS (\\Deleted)\r\nZ EXPUNGE\r\n"))
        b.deliver("fred", message("new"))
        out = feed(s, b"N NOOP\r\n")
        self.assertEqual(out, b'* ESEARCH (TAG "n") REMOVEFROM (0 2:3)\r\n'
                              b'* ESEARCH (TAG "u") UID REMOVEFROM (0 2:3)\r\n'
                              b"* 2 EXPUNGE\r\n* 5 EXISTS\r\n* 2 FETCH (FLAGS (\\Seen \\Recent))\r\n"
                              b'* ESEARCH (TAG "n") ADDTO (0 5)\r\n'
                              b'* ESEARCH (TAG "u") UID ADDTO (0 6)\r\n'
                              b"N OK NOOP completed\r\n")
        self.assertEqual(feed(s, b"M NOOP\r\n"), b"M OK NOOP completed\r\n")
        self.assertIn(b'ALL 1,3:5\r\n', feed(s, b"F SEARCH RETURN (ALL) UNSEEN\r\n"))

    def test_updates_come_while_idle(self):
        """RFC 5267 §4.3.2: updates while IDLE runs, in the same order."""
        s, b = selected(FIVE)()
        feed(s, b"u UID SEARCH RETURN (UPDATE) UNDELETED\r\n")
        feed(s, b"n SEARCH RETURN (UPDATE) UNDELETED\r\n")
        self.assertIn(b"+ idling", feed(s, b"i IDLE\r\n"))
        other, _ = make_session(b)
        login(other)
        feed(other, b"S SELECT INBOX\r\n")
        feed(other, b"o STORE 3 +FLAGS (\\Deleted)\r\n")
        self.assertEqual(drain(s), b'* ESEARCH (TAG "u") UID REMOVEFROM (0 3)\r\n'
                                   b'* ESEARCH (TAG "n") REMOVEFROM (0 3)\r\n'
                                   b"* 3 FETCH (FLAGS (\\Deleted \\Recent))\r\n")
        feed(other, b"o EXPUNGE\r\n")
        self.assertEqual(drain(s), b"* 3 EXPUNGE\r\n")
        b.deliver("fred", message("new"))
        self.assertEqual(drain(s), b'* 5 EXISTS\r\n* 5 RECENT\r\n* ESEARCH (TAG "u") UID ADDTO (0 6)\r\n'
                                   b'* ESEARCH (TAG "n") ADDTO (0 5)\r\n')
        self.assertEqual(feed(s, b"DONE\r\n"), b"i OK IDLE terminated\r\n")


class IncrementalTest(unittest.TestCase):
    def test_a_text_search_reads_only_the_changed_messages(self):
        """A BODY context reads the new or changed messages alone at an
        update (sort_context.per_message); a program with ``*`` all again."""
        s, b = selected(FIVE + [message("x", body="needle")])()
        feed(s, b"t UID SEARCH RETURN (UPDATE) OR BODY needle FLAGGED\r\n")
        reads = []
        real = s._folder.read
        s._folder.read = lambda uid, done: (reads.append(uid), real(uid, done))
        self.assertEqual(feed(s, b"f STORE 2 +FLAGS.SILENT (\\Flagged)\r\n"),
                         b'* ESEARCH (TAG "t") UID ADDTO (0 2)\r\nf OK STORE completed\r\n')
        self.assertEqual(reads, [2])
        b.deliver("fred", message("y", body="needle"))
        self.assertIn(b'* ESEARCH (TAG "t") UID ADDTO (0 7)\r\n', feed(s, b"n NOOP\r\n"))
        self.assertEqual(reads, [2, 7])
        self.assertTrue(sort_context.per_message(S.search_args(b" BODY a NOT SEEN\r\n").key))
        self.assertFalse(sort_context.per_message(S.search_args(b" BODY a UID 3:*\r\n").key))
        self.assertFalse(sort_context.per_message(S.search_args(b" OR BODY a YOUNGER 60\r\n").key))


class SearchClientList:
    """What a client holds for one SEARCH context: the result in mailbox
    order, kept by applying the updates (position 0: inserted in mailbox
    order, removed wherever they are, RFC 5267 §4.3.3, §4.3.4) and the
    EXPUNGEs in the order they come (§4.3.2)."""

    def __init__(self, tag, uid, first):
        self.tag, self.uid, self.items = tag, uid, first

    def apply(self, out: bytes, test):
        for line in out.decode().split("\r\n"):
            m = re.match(r'\* ESEARCH \(TAG "%s"\)(?: UID)? (ADDTO|REMOVEFROM) \((.*)\)$' % self.tag, line)
            if m:
                pairs = m.group(2).split()
                for pos, items in zip(pairs[::2], pairs[1::2]):
                    test.assertEqual(pos, "0", line)
                    items = expand(items)
                    if m.group(1) == "ADDTO":
                        test.assertFalse(set(items) & set(self.items), line)
                        self.items = sorted(self.items + items)
                    else:
                        test.assertTrue(set(items) <= set(self.items), "%s to %s" % (line, self.items))
                        self.items = [i for i in self.items if i not in items]
            m = re.match(r"\* (\d+) EXPUNGE$", line)
            if m and not self.uid:
                n = int(m.group(1))
                test.assertNotIn(n, self.items, "EXPUNGE of a result not removed first (§4.3.4)")
                self.items = [i - (i > n) for i in self.items]


class ContextSearchRandomChangesTest(unittest.TestCase):
    # sort_context.MAX_CONTEXTS of them: flags (the columns), SUBJECT (the
    # kept envelope), BODY / TEXT (the changed messages alone: per_message)
    PROGRAMS = {"u": b"UID SEARCH RETURN (UPDATE ALL) UNSEEN",
                "n": b"SEARCH RETURN (UPDATE ALL) UNDELETED",
                "h": b"SEARCH RETURN (UPDATE CONTEXT) OR SUBJECT m1 FLAGGED",
                "b": b"UID SEARCH RETURN (UPDATE) NOT BODY m2",
                "t": b"UID SEARCH RETURN (UPDATE) SINCE 1-Jan-2000 NOT TEXT m3"}

    def test_updates_keep_the_clients_list_equal_to_a_new_search(self):
        """Random deliveries, flag changes and expunges from another session
        and from this one, commands and IDLE: after every command, each
        context's list as the client keeps it equals the answer of the same
        SEARCH asked afresh."""
        rng = random.Random(5267)
        for run in range(10):
            s, b = selected(FIVE)()
            other, _ = make_session(b)
            login(other)
            feed(other, b"S SELECT INBOX\r\n")
            clients = {}
            for tag, program in self.PROGRAMS.items():
                out = feed(s, tag.encode() + b" " + program + b"\r\n").decode()
                m = re.search(r"ALL (\S+)", out)
                clients[tag] = SearchClientList(tag, program.startswith(b"UID"), expand(m.group(1)) if m else [])
            for step in range(25):
                cmd = self.change(rng, s, b, other, clients)
                out = feed(s, cmd)
                for c in clients.values():
                    c.apply(out, self)
                feed(other, b"o NOOP\r\n")
                for tag, program in self.PROGRAMS.items():
                    # the fresh answer comes before that command's own updates (and EXPUNGEs)
                    fresh = feed(s, b"z " + program.replace(b"UPDATE", b"ALL") + b"\r\n")
                    m = re.search(r"ALL (\S+)", fresh.decode())
                    self.assertEqual(clients[tag].items, expand(m.group(1)) if m else [],
                                     "run %d step %d context %s after %r" % (run, step, tag, cmd))
                    for c in clients.values():
                        c.apply(fresh, self)

    def change(self, rng, s, b, other, clients) -> bytes:
        what = rng.randrange(5)
        if what == 0:
            b.deliver("fred", message("m%d" % rng.randrange(4), body="m%d" % rng.randrange(4)))
        elif what == 1:
            feed(other, b"o STORE %d %sFLAGS (\\Seen \\Flagged)\r\n" % (rng.randint(1, 4), rng.choice([b"+", b"-"])))
        elif what == 2:
            feed(other, b"o STORE %d +FLAGS (\\Deleted)\r\no EXPUNGE\r\n" % rng.randint(1, 3))
        elif what == 3:
            own = feed(s, b"x STORE %d %sFLAGS (\\Deleted \\Seen)\r\n" % (rng.randint(1, 4), rng.choice([b"+", b"-"])))
            for c in clients.values():
                c.apply(own, self)
        return rng.choice([b"y NOOP\r\n", b"y EXPUNGE\r\n", b"y FETCH 1 FLAGS\r\n", b"y UID FETCH 1 FLAGS\r\n",
                           b"y IDLE\r\nDONE\r\n", b"y UID SEARCH ALL\r\n"])


BOB, BOB_PW = "bob@example.test", "bob-secret"


class ImapContextSearchServerTest(ServerTestCase):
    """The whole server: CONTEXT=SEARCH announced, updates over loopback."""

    extra_config = {"imap_port": "0"}
    tls = False

    def setUp(self):
        self.clear_mailbox(BOB)

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(BOB, BOB_PW)[0], "OK")
        return m

    def test_context_search_updates_over_loopback(self):
        """RFC 5267 §4.3: "unread" kept up to date: a second connection's
        APPEND and STORE reach the first's SEARCH RETURN (UPDATE) as ADDTO
        and REMOVEFROM on its next command; CANCELUPDATE ends it."""
        m = self.imap()
        self.assertIn(b"CONTEXT=SEARCH", m.capability()[1][0].split())
        for data in FIVE[:2]:
            self.assertEqual(m.append("INBOX", None, None, data)[0], "OK")
        m.select("INBOX")
        imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))     # imaplib lacks RFC 5267's command
        u1, u2 = m.uid("SEARCH", "ALL")[1][0].split()
        typ, _ = m.uid("SEARCH", "RETURN", "(UPDATE)", "UNSEEN")
        self.assertEqual(typ, "OK")
        first = m.untagged_responses.pop("ESEARCH")
        self.assertEqual(len(first), 1)
        self.assertTrue(first[0].endswith(b" UID ALL %s:%s" % (u1, u2)), first)
        tag = first[0].split(b'"')[1].decode()
        other = self.imap()
        self.assertEqual(other.append("INBOX", None, None, message("new"))[0], "OK")
        other.select("INBOX")
        self.assertEqual(other.uid("STORE", u1, "+FLAGS", "(\\Seen)")[0], "OK")
        self.assertEqual(m.noop()[0], "OK")
        updates = m.untagged_responses.pop("ESEARCH")
        self.assertEqual([u.split(b'"')[1].decode() for u in updates], [tag] * len(updates))
        self.assertEqual(b" ".join(u.split(b") ", 1)[1] for u in updates),
                         b"UID REMOVEFROM (0 %s) UID ADDTO (0 %d)" % (u1, int(u2) + 1))
        self.assertEqual(m._simple_command("CANCELUPDATE", '"%s"' % tag)[0], "OK")
        self.assertEqual(other.append("INBOX", None, None, message("later"))[0], "OK")
        self.assertEqual(m.noop()[0], "OK")
        self.assertNotIn("ESEARCH", m.untagged_responses)

    def test_an_emailid_search_follows_a_copy(self):
        """RFC 8474 §6 EMAILID with UPDATE: the key is resolved again at each
        update, so a copy (the same EMAILID, RFC 8474 §5.1) arriving from
        another connection comes as ADDTO."""
        m = self.imap()
        self.assertEqual(m.append("INBOX", None, None, FIVE[0])[0], "OK")
        m.select("INBOX")
        (uid,) = m.uid("SEARCH", "ALL")[1][0].split()
        fetched = m.uid("FETCH", uid, "(EMAILID)")[1][0]
        eid = re.search(rb"EMAILID \(([^)]+)\)", fetched).group(1).decode()
        self.assertEqual(m.uid("SEARCH", "RETURN", "(UPDATE)", "EMAILID", eid)[0], "OK")
        self.assertTrue(m.untagged_responses.pop("ESEARCH")[0].endswith(b" UID ALL " + uid))
        other = self.imap()
        other.select("INBOX")
        self.assertEqual(other.uid("COPY", uid, "INBOX")[0], "OK")
        self.assertEqual(m.noop()[0], "OK")
        (update,) = m.untagged_responses.pop("ESEARCH")
        self.assertTrue(update.endswith(b" UID ADDTO (0 %d)" % (int(uid) + 1)), update)


if __name__ == "__main__":
    unittest.main()
