"""IMAP QUOTA (RFC 9208): transcripts after the RFC's examples against the
in-memory backend (tests/imap_fake.py; whole, byte by byte, split), and the
whole server on loopback with the stdlib's imaplib."""

import imaplib
import os

from store import quota as sq
from tests.imap_fake import FakeImapBackend, feed
from tests.helpers import ServerTestCase
from tests.test_imap_mailboxes import logged_in
from tests.test_imap_session import TranscriptCase

MSG = b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n"


def limited(limit_bytes, limit_messages, messages=0):
    """A session factory: a fresh backend each time, fred's limits set and ``messages`` delivered."""
    def make():
        backend = FakeImapBackend()
        backend.quotas["fred"] = (limit_bytes, limit_messages)
        for _ in range(messages):
            backend.deliver("fred", MSG)
        return logged_in(backend)()
    return make


class QuotaTranscriptTest(TranscriptCase):
    def test_rfc9208_4_1_2_getquotaroot_and_4_1_1_getquota(self):
        """§4.1.2 example (one root "", §4.2.2 "* QUOTAROOT INBOX \"\""); STORAGE in KiB (§5.1)."""
        self.run_transcript("""
C: G0002 GETQUOTAROOT INBOX
S: * QUOTAROOT INBOX ""
S: * QUOTA "" (STORAGE 1 10923847 MESSAGE 3 1000)
S: G0002 OK GETQUOTAROOT completed
C: G0003 GETQUOTAROOT "comp.mail.mime"
S: * QUOTAROOT comp.mail.mime ""
S: * QUOTA "" (STORAGE 1 10923847 MESSAGE 3 1000)
S: G0003 OK GETQUOTAROOT completed
C: G0001 GETQUOTA ""
S: * QUOTA "" (STORAGE 1 10923847 MESSAGE 3 1000)
S: G0001 OK GETQUOTA completed
C: G0004 GETQUOTA "!partition/sda4"
S: G0004 NO [NONEXISTENT] No such quota root !partition/sda4
""", make=limited(10923847 * 1024, 1000, messages=3))

    def test_no_limit_is_an_empty_list(self):
        """§4.2.1: "an empty list means there are no administrative resource limits"."""
        self.run_transcript("""
C: a GETQUOTA ""
S: * QUOTA "" ()
S: a OK GETQUOTA completed
""", make=logged_in())

    def test_setquota_is_refused_and_bad_syntax_is_bad(self):
        """§4.1.3: QUOTASET is not announced; the limits are the administrator's."""
        self.run_transcript("""
C: S0001 SETQUOTA "" (STORAGE 510)
S: S0001 NO [NOPERM] Quota of "" is set by the administrator (mailsrv.py user quota)
C: S0002 SETQUOTA "" STORAGE
S: S0002 BAD expected '(' at 'STORAGE<CRLF>'
C: S0003 GETQUOTA
S: S0003 BAD expected ' ' at '<CRLF>'
""", make=logged_in())

    def test_rfc9208_4_3_1_append_over_quota_is_overquota(self):
        """§4.3.1 Example 1: the tagged NO [OVERQUOTA]; nothing is stored."""
        s, b = limited(0, 2, messages=2)()
        out = feed(s, b"A003 APPEND INBOX (\\Seen) {%d}\r\n" % len(MSG))
        self.assertEqual(out, b"+ Ready for literal data\r\n")
        out = feed(s, MSG + b"\r\n")
        self.assertEqual(out, b"A003 NO [OVERQUOTA] Quota exceeded for fred\r\n")
        self.assertEqual(len(b.boxes["fred"]["INBOX"].messages), 2)
        b.quotas["fred"] = (0, 3)
        out = feed(s, b"A004 APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
        self.assertEqual(out, b"A004 OK [APPENDUID 1000 3] APPEND completed\r\n")

    def test_copy_over_quota_and_status_deleted_storage(self):
        """§4.3.1 for COPY; §4.1.4 STATUS DELETED and DELETED-STORAGE."""
        self.run_transcript("""
C: a SELECT INBOX
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
S: * 1 EXISTS
S: * 1 RECENT
S: * OK [UNSEEN 1] First unseen
S: * OK [UIDVALIDITY 1000] UIDs valid
S: * OK [UIDNEXT 2] Predicted next UID
S: a OK [READ-WRITE] SELECT completed
C: b COPY 1 Archive
S: b NO [OVERQUOTA] Quota exceeded for fred
C: c STORE 1 +FLAGS.SILENT (\\Deleted)
S: c OK STORE completed
C: d STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)
S: * STATUS INBOX (MESSAGES 1 DELETED 1 DELETED-STORAGE %d)
S: d OK STATUS completed
""" % len(MSG), make=limited(0, 1, messages=1))


BOB, BOB_PW = "bob@example.test", "bob-secret"


class ImapQuotaServerTest(ServerTestCase):
    """The whole server: limits from DATA/quotas, usage from maildirsize."""

    extra_config = {"imap_port": "0"}
    tls = False

    def setUp(self):
        self.clear_mailbox(BOB)
        sq.forget(self.maildir(BOB))
        table = sq.QuotaTable(self.tmp)
        table.set(BOB, sq.Limits(2048, 0))
        self.addCleanup(table.set, BOB, sq.Limits())

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(BOB, BOB_PW)[0], "OK")
        return m

    def test_getquotaroot_then_append_over_quota_gets_overquota(self):
        m = self.imap()
        typ, caps = m.capability()
        self.assertIn(b"QUOTA=RES-STORAGE", caps[0].split())
        typ, data = m.getquotaroot("INBOX")
        self.assertEqual(typ, "OK")
        self.assertEqual(data, [[b'INBOX ""'], [b'"" (STORAGE 0 2)']])
        self.assertEqual(m.append("INBOX", None, None, MSG)[0], "OK")
        typ, data = m.append("INBOX", None, None, MSG + b"x" * 2000 + b"\r\n")
        self.assertEqual(typ, "NO")
        self.assertIn(b"[OVERQUOTA]", data[0])
        typ, data = m.getquota('""')
        self.assertEqual(data, [b'"" (STORAGE 1 2)'])
        names = os.listdir(os.path.join(self.maildir(BOB), "cur"))
        self.assertEqual(len(names), 1)
