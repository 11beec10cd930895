"""IMAP OBJECTID (RFC 8474): the RFC's examples as transcripts (whole, byte by
byte, split) against the real mail access over a temporary Maildir
(tests/test_imap_derived.py's RealBackend), the GUIDs in dovecot-uidlist
(store/folder_uidlist.py), and the whole server on loopback with imaplib.

The ids are random per mailbox: the transcripts name them by order of first
appearance (``<F1>``, ``<M2>``), so a transcript checks which ids are equal
and which differ, which is all the RFC asks."""

import imaplib
import os
import random
import re
import shutil
import unittest

from protocols.backend import objectids
from protocols.imap.search import search_args
from store import dovecot_files as dv
from store.folder import Folder
from tests.helpers import ServerTestCase
from tests.imap_fake import FEEDERS, feed, login, make_session, parse_transcript
from tests.test_imap_derived import RealBackend

_IDS = re.compile(rb"\b([FM])([0-9a-f]{24,32})\b")
_VALIDITY = re.compile(rb"(COPYUID|UIDVALIDITY) \d+")

MSG_A = (b"Subject: Message A\r\nMessage-ID: <fake.1521475657.54797@example.com>\r\n\r\nA\r\n")
MSG_B = (b"Subject: Re: Message A\r\nMessage-ID: <fake.1521475657.21213@example.org>\r\n"
         b"References: <fake.1521475657.54797@example.com>\r\n\r\nB\r\n")
MSG_C = (b"Subject: Message C\r\nMessage-ID: <fake.1521475657.60280@example.com>\r\n\r\nC\r\n")


def labelled(data: bytes, labels: dict) -> bytes:
    """Each objectid as ``<F1>`` / ``<M1>``, numbered by first appearance."""
    def name(m):
        key = m.group(0)
        if key not in labels:
            labels[key] = b"<%s%d>" % (m.group(1), sum(1 for k in labels if k[:1] == m.group(1)) + 1)
        return labels[key]
    return _VALIDITY.sub(rb"\1 *", _IDS.sub(name, data))


class ObjectIdTranscripts(unittest.TestCase):
    def backend(self, messages=()):
        b = RealBackend()
        self.addCleanup(shutil.rmtree, b.dir, True)
        for data in messages:
            b.append(data)
        return b

    def run_masked(self, text, messages=(), select=False):
        for feeder in FEEDERS:
            rng = random.Random(8474)
            s, b = make_session(self.backend(messages))
            login(s)
            if select:
                self.assertIn(b"s OK", feed(s, b"s SELECT INBOX\r\n"))
            labels = {}
            for client, expected in parse_transcript(text):
                for key, label in labels.items():     # "<M1>" in a command: the id it stands for
                    client = client.replace(label, key)
                got = labelled(feed(s, client, feeder, rng), labels)
                self.assertEqual(got.decode("utf-8", "replace"), expected.decode("utf-8"),
                                 "feeder %s, after client %r" % (feeder.__name__, client))
        return s, b

    def test_rfc8474_4_1_and_4_3_create_status_rename_list_status(self):
        """§4.1 (CREATE's code, ALREADYEXISTS for the second foo), §4.3 (STATUS,
        RENAME keeps the id, LIST RETURN (STATUS (MAILBOXID)))."""
        self.run_masked("""
C: 3 create foo
S: 3 OK [MAILBOXID (<F1>)] CREATE completed
C: 4 create bar
S: 4 OK [MAILBOXID (<F2>)] CREATE completed
C: 5 create foo
S: 5 NO [ALREADYEXISTS] mailbox foo already exists
C: 6 status foo (mailboxid)
S: * STATUS foo (MAILBOXID (<F1>))
S: 6 OK STATUS completed
C: 7 status bar (mailboxid)
S: * STATUS bar (MAILBOXID (<F2>))
S: 7 OK STATUS completed
C: 8 rename foo renamed
S: 8 OK RENAME completed
C: 9 status renamed (mailboxid)
S: * STATUS renamed (MAILBOXID (<F1>))
S: 9 OK STATUS completed
C: 10 status bar (mailboxid messages)
S: * STATUS bar (MAILBOXID (<F2>) MESSAGES 0)
S: 10 OK STATUS completed
C: 11 list "" ("bar" "renamed") return (status (mailboxid))
S: * LIST (\\HasNoChildren) "/" bar
S: * STATUS bar (MAILBOXID (<F2>))
S: * LIST (\\HasNoChildren) "/" renamed
S: * STATUS renamed (MAILBOXID (<F1>))
S: 11 OK LIST completed
""")

    def test_rfc8474_4_2_select_and_examine_send_the_id(self):
        s, b = make_session(self.backend())
        login(s)
        labels = {}
        st = labelled(feed(s, b"1 status INBOX (MAILBOXID)\r\n"), labels)
        self.assertEqual(st, b"* STATUS INBOX (MAILBOXID (<F1>))\r\n1 OK STATUS completed\r\n")
        for cmd in (b"EXAMINE", b"SELECT"):
            out = labelled(feed(s, b"2 " + cmd + b" INBOX\r\n"), labels)
            self.assertIn(b"* OK [MAILBOXID (<F1>)] Mailbox id\r\n", out)
            self.assertEqual(len(labels), 1)

    def test_rfc8474_5_3_emailid_threadid_survive_move_and_6_search(self):
        """§5.3 example: EMAILID kept by MOVE, THREADID NIL (no threads: §5.2);
        §6 SEARCH EMAILID, SEARCH THREADID matches nothing."""
        self.run_masked("""
C: 21 create foo
S: 21 OK [MAILBOXID (<F1>)] CREATE completed
C: 22 fetch 1:* (emailid threadid)
S: * 1 FETCH (EMAILID (<M1>) THREADID NIL)
S: * 2 FETCH (EMAILID (<M2>) THREADID NIL)
S: * 3 FETCH (EMAILID (<M3>) THREADID NIL)
S: 22 OK FETCH completed
C: 27 search emailid <M1>
S: * SEARCH 1
S: 27 OK SEARCH completed
C: 28 search threadid T64b478a75b7ea9
S: * SEARCH
S: 28 OK SEARCH completed
C: 23 move 2 foo
S: * OK [COPYUID * 2 1] Moved
S: * 2 EXPUNGE
S: 23 OK MOVE completed
C: 24 fetch 1:* (emailid threadid)
S: * 1 FETCH (EMAILID (<M1>) THREADID NIL)
S: * 2 FETCH (EMAILID (<M3>) THREADID NIL)
S: 24 OK FETCH completed
C: 26 examine "foo"
C: 27 fetch 1:* (emailid threadid)
S: * OK [CLOSED] Previous mailbox closed
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS ()] Read-only mailbox
S: * 1 EXISTS
S: * 1 RECENT
S: * OK [UNSEEN 1] First unseen
S: * OK [UIDVALIDITY *] UIDs valid
S: * OK [UIDNEXT 2] Predicted next UID
S: * OK [MAILBOXID (<F1>)] Mailbox id
S: 26 OK [READ-ONLY] EXAMINE completed
S: * 1 FETCH (EMAILID (<M2>) THREADID NIL)
S: 27 OK FETCH completed
""", messages=(MSG_A, MSG_B, MSG_C), select=True)
        s, b = make_session(self.backend((MSG_A, MSG_B, MSG_C)))
        login(s)
        feed(s, b"s SELECT INBOX\r\n")
        labels = {}
        out = labelled(feed(s, b"21 create foo\r\n22 fetch 1:* (emailid threadid)\r\n"), labels)
        self.assertEqual(out, b"21 OK [MAILBOXID (<F1>)] CREATE completed\r\n"
                              b"* 1 FETCH (EMAILID (<M1>) THREADID NIL)\r\n"
                              b"* 2 FETCH (EMAILID (<M2>) THREADID NIL)\r\n"
                              b"* 3 FETCH (EMAILID (<M3>) THREADID NIL)\r\n22 OK FETCH completed\r\n")
        ids = {v: k for k, v in labels.items()}
        for feeder in FEEDERS:
            rng = random.Random(5)
            got = feed(s, b"27 search emailid " + ids[b"<M1>"] + b"\r\n28 search threadid T64b478a75b7ea9\r\n"
                       b"29 UID SEARCH OR EMAILID " + ids[b"<M3>"] + b" EMAILID " + ids[b"<M2>"] + b"\r\n",
                       feeder, rng)
            self.assertEqual(got, b"* SEARCH 1\r\n27 OK SEARCH completed\r\n* SEARCH\r\n28 OK SEARCH completed\r\n"
                                  b"* SEARCH 2 3\r\n29 OK SEARCH completed\r\n")
        out = labelled(feed(s, b"23 move 2 foo\r\n24 fetch 1:* (emailid threadid)\r\n"), labels)
        self.assertRegex(out, rb"^\* OK \[COPYUID \* 2 1\] Moved\r\n\* 2 EXPUNGE\r\n23 OK MOVE completed\r\n"
                              rb"\* 1 FETCH \(EMAILID \(<M1>\) THREADID NIL\)\r\n"
                              rb"\* 2 FETCH \(EMAILID \(<M3>\) THREADID NIL\)\r\n24 OK FETCH completed\r\n$")
        out = labelled(feed(s, b"25 select foo\r\n26 fetch 1:* (emailid threadid)\r\n"), labels)
        self.assertIn(b"* OK [MAILBOXID (<F1>)] Mailbox id\r\n", out)
        self.assertIn(b"* 1 FETCH (EMAILID (<M2>) THREADID NIL)\r\n26 OK FETCH completed\r\n", out)
        out = labelled(feed(s, b"30 copy 1 INBOX\r\n31 select INBOX\r\n32 fetch 3 (emailid)\r\n"
                               b"33 UID SEARCH EMAILID " + ids[b"<M2>"] + b"\r\n"), labels)
        self.assertIn(b"* 3 FETCH (EMAILID (<M2>))\r\n32 OK FETCH completed\r\n", out)   # a copy: the same id
        self.assertIn(b"* SEARCH 4\r\n33 OK SEARCH completed\r\n", out)
        self.assertEqual(len(labels), 5)          # F: INBOX, foo; M: the three messages, no other

    def test_rename_inbox_moves_the_ids_with_the_messages(self):
        """RFC 8474 §4 / §8.2: RENAME INBOX makes a new mailbox (a new MAILBOXID), INBOX
        keeps its own; the messages moved keep their EMAILIDs (a MOVE, §5.1)."""
        s, b = make_session(self.backend((MSG_A, MSG_B)))
        login(s)
        labels = {}
        out = labelled(feed(s, b"a STATUS INBOX (MAILBOXID)\r\nb SELECT INBOX\r\nc FETCH 1:* EMAILID\r\n"
                              b"d UNSELECT\r\ne RENAME INBOX old\r\nf STATUS INBOX (MAILBOXID MESSAGES)\r\n"
                              b"g STATUS old (MAILBOXID MESSAGES)\r\nh EXAMINE old\r\ni FETCH 1:* EMAILID\r\n"), labels)
        self.assertIn(b"* STATUS INBOX (MAILBOXID (<F1>) MESSAGES 0)\r\nf OK", out)
        self.assertIn(b"* STATUS old (MAILBOXID (<F2>) MESSAGES 2)\r\ng OK", out)
        self.assertIn(b"* 1 FETCH (EMAILID (<M1>))\r\n* 2 FETCH (EMAILID (<M2>))\r\ni OK", out)
        self.assertEqual(len(labels), 4)

    def test_an_appended_identical_message_gets_its_own_id(self):
        """§5.1: the same id only for a copy (APPEND of equal octets is a new message)."""
        s, b = make_session(self.backend((MSG_A, MSG_A)))
        login(s)
        out = feed(s, b"s SELECT INBOX\r\nf FETCH 1:2 EMAILID\r\n")
        ids = re.findall(rb"EMAILID \((M[0-9a-f]{24})\)", out)
        self.assertEqual(len(set(ids)), 2, out)

    def test_bad_objectids_are_bad(self):
        s, b = make_session(self.backend((MSG_A,)))
        login(s)
        feed(s, b"s SELECT INBOX\r\n")
        for arg in (b"M.1", b"M" * 256, b'"M1"', b""):
            with self.subTest(arg=arg):
                out = feed(s, b"a SEARCH EMAILID " + arg + b"\r\n")
                self.assertTrue(out.startswith(b"a BAD "), out)
        self.assertEqual(feed(s, b"b SEARCH EMAILID " + b"M" * 255 + b"\r\n"),
                         b"* SEARCH\r\nb OK SEARCH completed\r\n")


class GuidStorageTest(unittest.TestCase):
    """Where the ids live: dovecot-uidlist's header G and the records' G fields."""

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="mailsrv-objectid-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def folder(self, name):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.dir, name, sub), exist_ok=True)
        return Folder(os.path.join(self.dir, name))

    def uidlist(self, name):
        with open(os.path.join(self.dir, name, dv.UIDLIST)) as f:
            return f.read()

    def test_copy_and_move_keep_the_guid_in_the_record_g_field(self):
        a, b = self.folder("a"), self.folder("b")
        a.append(MSG_A)
        a.append(MSG_B)
        before = objectids.email_ids(a, [1, 2])
        self.assertNotIn(" G", self.uidlist("a").split("\n", 1)[1])     # nothing written for the ids
        a.copy([1], b)
        a.move([2], b)
        self.assertEqual(objectids.email_ids(b, [1, 2]), {1: before[1], 2: before[2]})
        key = a.snapshot().by_uid(1).key
        self.assertRegex(self.uidlist("b"), r"\n1 G%s :" % re.escape(key))
        fresh = Folder(os.path.join(self.dir, "b"))               # another process reads the file
        self.assertEqual(objectids.email_ids(fresh, [1, 2]), {1: before[1], 2: before[2]})
        b.copy([1], a)                                            # a copy of a copy: still the same
        self.assertEqual(objectids.email_ids(a, [3]), {3: before[1]})
        self.assertRegex(before[1], r"^M[0-9a-f]{24}$")

    def test_a_uidlist_without_a_guid_gets_one_once(self):
        a = self.folder("a")
        a.append(MSG_A)
        path = os.path.join(self.dir, "a", dv.UIDLIST)
        text = self.uidlist("a")
        head, rest = text.split("\n", 1)
        with open(path, "w") as f:
            f.write(re.sub(r" G[0-9a-f]+", "", head) + "\n" + rest)
        fresh = Folder(os.path.join(self.dir, "a"))
        first = objectids.mailbox_id(fresh)
        self.assertRegex(first, r"^F[0-9a-f]{32}$")
        self.assertIn(" G" + first[1:], self.uidlist("a").split("\n", 1)[0])
        self.assertEqual(objectids.mailbox_id(Folder(os.path.join(self.dir, "a"))), first)
        self.assertEqual(fresh.snapshot().by_uid(1) is not None, True)     # records kept

    def test_dovecot_g_fields_are_read_as_guids(self):
        a = self.folder("a")
        a.append(MSG_A)
        text = self.uidlist("a")
        guid = "0123456789abcdef0123456789abcdef"
        with open(os.path.join(self.dir, "a", dv.UIDLIST), "w") as f:
            f.write(re.sub(r"\n1 ", "\n1 G%s " % guid, text))
        self.assertEqual(objectids.email_ids(Folder(os.path.join(self.dir, "a")), [1]),
                         {1: objectids.email_id(guid)})

    def test_search_parse(self):
        self.assertEqual(search_args(b" EMAILID Mab_-1\r\n").key.args[0].args, ("Mab_-1",))


class ObjectIdServerTest(ServerTestCase):
    """The whole server on loopback (imaplib)."""

    extra_config = {"imap_port": "0"}
    tls = False
    BOB, BOB_PW = "bob@example.test", "bob-secret"

    def setUp(self):
        self.clear_mailbox(self.BOB)

    def test_create_select_copy_rename_over_loopback(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(self.BOB, self.BOB_PW)[0], "OK")
        self.assertIn(b"OBJECTID", m.capability()[1][0].split())
        typ, data = m.create("proj")
        self.assertEqual(typ, "OK")
        created = re.search(rb"MAILBOXID \((F[0-9a-f]{32})\)", data[0]).group(1)
        self.assertEqual(m.append("INBOX", None, None, MSG_A)[0], "OK")
        m.select("INBOX")
        self.assertEqual(m.untagged_responses.get("OK") and
                         any(b"MAILBOXID" in r for r in m.response("OK")[1] if r), True)
        typ, data = m.fetch("1", "(EMAILID THREADID)")
        emailid = re.search(rb"EMAILID \((M[0-9a-f]{24})\) THREADID NIL", data[0]).group(1)
        self.assertEqual(m.copy("1", "proj")[0], "OK")
        self.assertEqual(m.rename("proj", "project")[0], "OK")
        typ, data = m.status("project", "(MAILBOXID MESSAGES)")
        self.assertEqual(data[0], b"project (MAILBOXID (" + created + b") MESSAGES 1)")
        m.select("project")
        typ, data = m.fetch("1", "(EMAILID)")
        self.assertEqual(data[0], b"1 (EMAILID (" + emailid + b"))")
        typ, data = m.uid("SEARCH", "EMAILID", emailid.decode())
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0].split(), [b"1"])


if __name__ == "__main__":
    unittest.main()
