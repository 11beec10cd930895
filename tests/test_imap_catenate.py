"""CATENATE (RFC 4469) and URL-PARTIAL (RFC 5550): the RFC's examples as
transcripts against the in-memory backend (whole, byte by byte, split), the
IMAP URL parser (RFC 5092), the abuse cases (other users' mailboxes, "..",
huge part counts and totals), and the whole server on loopback."""

import socket
import unittest

from protocols.imap import imapurl
from protocols.imap.catenate import READ_FACTOR
from protocols.imap.catenate_args import MAX_CAT_PARTS
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_session import TranscriptCase

PARAM = b"------------030308070208000400050907"      # the boundary parameter; lines are "--" PARAM
# RFC 4469 Appendix A: UID 20 is multipart/mixed with text/plain and application/x-zip-compressed.
DRAFT20 = (b"From: Bob Ar <bar@example.org>\r\nSubject: About our holiday trip\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed;\r\n boundary=\"" + PARAM + b"\"\r\n\r\n"
           b"--" + PARAM + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           b"Our travel agent has sent the updated schedule.\r\n"
           b"--" + PARAM + b"\r\nContent-Type: application/x-zip-compressed; name=\"a.zip\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nUEsDBAoAAAAAAA==\r\n"
           b"--" + PARAM + b"--\r\n")
DRAFT30 = b"Content-Type: text/plain\r\n\r\nThe second attachment.\r\n"


def with_messages(folder, validity, messages, backend=None):
    """A logged-in session whose ``folder`` has UIDVALIDITY ``validity`` and
    ``messages`` ({uid: octets}) at those UIDs."""
    def make():
        s, b = make_session(backend or FakeImapBackend())
        login(s)
        box = b.mailboxes("fred")[folder]
        box.uidvalidity = validity
        for uid in sorted(messages):
            box.uidnext = uid
            box.add(messages[uid])
        return s, b
    return make


class RfcExamplesTest(TranscriptCase):
    def test_rfc4469_example_1_replace_an_attachment(self):
        """Appendix A Example 1: header, new boundary, the MIME header and body of
        part 1, then all of UID 30, each URL's octets put in place (§3)."""
        s, b = self.run_transcript("""
C: A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER" TEXT {42}
S: + Ready for literal data
C:
C: --------------030308070208000400050907
C:  URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME" URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1" TEXT {42}
S: + Ready for literal data
C:
C: --------------030308070208000400050907
C:  URL "/Drafts;UIDVALIDITY=385759045/;UID=30" TEXT {44}
S: + Ready for literal data
C:
C: --------------030308070208000400050907--
C: )
S: A003 OK [APPENDUID 385759045 31] APPEND completed
""", make=with_messages("Drafts", 385759045, {20: DRAFT20, 30: DRAFT30}))
        head, rest = DRAFT20.split(b"\r\n\r\n", 1)
        sep = b"\r\n--" + PARAM + b"\r\n"
        expected = (head + b"\r\n\r\n" + sep + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                    + b"Our travel agent has sent the updated schedule." + sep + DRAFT30
                    + b"\r\n--" + PARAM + b"--\r\n")
        stored = b.boxes["fred"]["Drafts"].messages[31]
        self.assertEqual(stored.data, expected)
        self.assertEqual(stored.flags, {"\\Seen", "\\Draft", "$MDNSent"})
        self.assertNotIn("\\Seen", b.boxes["fred"]["Drafts"].messages[20].flags)   # §3: no \Seen set

    def test_rfc4469_example_4_badurl_names_the_first_bad_url(self):
        """Example 4: UID 113330 has no part 1.5.9: NO [BADURL that URL], nothing stored."""
        s, b = self.run_transcript("""
C: A003 APPEND Sent (\\Seen $MDNSent) CATENATE (TEXT {39}
S: + Ready for literal data
C: Subject: Digest of the mailing list
C:
C:  URL "/INBOX;UIDVALIDITY=785799047/;UID=11467" TEXT {2}
S: + Ready for literal data
C:
C:  URL "/INBOX;UIDVALIDITY=785799047/;UID=113330/;section=1.5.9" TEXT {2}
S: + Ready for literal data
C:
C:  URL "/INBOX;UIDVALIDITY=785799047/;UID=11916" TEXT {2}
S: + Ready for literal data
C:
C: )
S: A003 NO [BADURL /INBOX;UIDVALIDITY=785799047/;UID=113330/;section=1.5.9] CATENATE failed: no body part 1.5.9
""", make=with_messages("INBOX", 785799047, {11467: DRAFT30, 113330: DRAFT20, 11916: DRAFT30}))
        self.assertEqual(b.boxes["fred"]["Sent"].messages, {})

    def test_rfc5550_url_partial_and_literal_plus(self):
        """RFC 5092 §6 ipartial (URL-PARTIAL, RFC 5550 §5): octets offset.length of
        the section; an offset alone runs to the end; past the end is empty."""
        s, b = self.run_transcript("""
C: A1 APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;PARTIAL=6.6" TEXT {1+}
C: - URL "/INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=3" URL "/INBOX/;UID=1/;PARTIAL=9999.5")
S: A1 OK [APPENDUID 1002 1] APPEND completed
""", make=with_messages("INBOX", 1000, {1: b"Subject: hello\r\n\r\nbody text\r\n"}))
        self.assertEqual(b.boxes["fred"]["Drafts"].messages[1].data, b"t: hel-y text\r\n")

    def test_absolute_urls_of_this_user_and_server(self):
        """imap://user@host/ (RFC 5092 §11), //user@host:port/, ;AUTH=* ignored, the
        selected mailbox read in place, UIDVALIDITY checked."""
        s, b = self.run_transcript("""
C: A1 SELECT INBOX
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
S: * 1 EXISTS
S: * 1 RECENT
S: * OK [UNSEEN 1] First unseen
S: * OK [UIDVALIDITY 7] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: A1 OK [READ-WRITE] SELECT completed
C: A2 APPEND INBOX CATENATE (URL "imap://fred@imap.example.test/INBOX;UIDVALIDITY=7/;UID=2/;SECTION=HEADER.FIELDS%20(SUBJECT)" URL "//FRED;AUTH=*@IMAP.example.test:143/INBOX/;UID=2/;SECTION=TEXT")
S: * 2 EXISTS
S: * 2 RECENT
S: A2 OK [APPENDUID 7 3] APPEND completed
C: A3 FETCH 1 (FLAGS)
S: * 1 FETCH (FLAGS (\\Recent))
S: A3 OK FETCH completed
""", make=with_messages("INBOX", 7, {2: b"Subject: x\r\nTo: y\r\n\r\nbody\r\n"}))
        self.assertEqual(b.boxes["fred"]["INBOX"].messages[3].data, b"Subject: x\r\n\r\nbody\r\n")

    def test_relative_uid_is_a_message_of_the_selected_mailbox(self):
        """RFC 4469 §3: the base URL is the selected mailbox; RFC 5092 §9.1 <;UID=20>."""
        b = FakeImapBackend()
        b.mailboxes("fred")["a;b/c d"] = b.folder("a;b/c d")
        s, b = with_messages("a;b/c d", 7, {2: b"Subject: x\r\n\r\nbody\r\n"}, b)()
        out = feed(s, b'E SELECT "a;b/c d"\r\nA APPEND Drafts CATENATE (URL ";uid=2/;SECTION=TEXT/;PARTIAL=1.2")\r\n')
        self.assertIn(b"A OK [APPENDUID", out)
        self.assertEqual(b.boxes["fred"]["Drafts"].messages[1].data, b"od")
        out = feed(s, b'U UNSELECT\r\nA APPEND Drafts CATENATE (URL ";UID=2")\r\n')
        self.assertIn(b"A NO [BADURL ;UID=2]", out)


class AbuseTest(TranscriptCase):
    def setUp(self):
        self.backend = FakeImapBackend(users={"fred": "secret", "bob": "pw"})
        self.backend.deliver("bob", b"Subject: bob's secret\r\n\r\nbob only\r\n")
        self.backend.mailboxes("bob")["INBOX"].uidvalidity = 1000
        self.session, _ = with_messages("INBOX", 1000, {1: b"Subject: mine\r\n\r\nfred's\r\n"}, self.backend)()

    def append(self, url: bytes) -> bytes:
        return feed(self.session, b'T APPEND Drafts CATENATE (URL "%s")\r\n' % url)

    def assert_badurl(self, url: bytes):
        out = self.append(url)
        self.assertTrue(out.startswith(b"T NO [BADURL "), out)
        self.assertNotIn(b"bob only", out)

    def test_other_users_and_servers_are_badurl_never_their_content(self):
        for url in (b"imap://bob@imap.example.test/INBOX/;UID=1",
                    b"imap://bob;AUTH=*@imap.example.test/INBOX/;UID=1",
                    b"imap://imap.example.test/INBOX/;UID=1",          # no user: RFC 5092 §3.1
                    b"imap://fred@elsewhere.test/INBOX/;UID=1",
                    b"imap://fred@imap.example.test/INBOX/;UID=1/;URLAUTH=anonymous:internal:" + b"0" * 32,
                    b"/INBOX/;UID=1?ALL", b"INBOX/;UID=1", b";UID=1", b";SECTION=1", b"/INBOX", b"/INBOX/;UID=0",
                    b"/INBOX/;UID=99999999999", b"/INBOX;UIDVALIDITY=999/;UID=1",
                    b"/INBOX/;UID=1/;SECTION=9", b"/INBOX/;UID=1/;SECTION=1.HEADER",
                    b"/INBOX/;UID=1/;SECTION=BOGUS", b"/%FF/;UID=1", b"/Nonexistent/;UID=1"):
            with self.subTest(url=url):
                self.assert_badurl(url)
        self.assertEqual(self.backend.boxes["fred"]["Drafts"].messages, {})

    def test_dot_segments_cannot_leave_the_users_mailboxes(self):
        """".." removed as RFC 3986 §5.2.4 says (never above the root), and a
        percent-encoded ".." is a mailbox name check_name refuses."""
        for url in (b"/INBOX/../../bob/INBOX/;UID=1", b"/../bob/INBOX/;UID=1",
                    b"/%2E%2E/bob/INBOX/;UID=1", b"/INBOX/;UID=1/..", b"/./../INBOX/..%2F/;UID=1",
                    b"imap://fred@imap.example.test/../../bob/INBOX/;UID=1"):
            with self.subTest(url=url):
                self.assert_badurl(url)
        out = self.append(b"/Drafts/../INBOX/./;UID=1")
        self.assertTrue(out.startswith(b"T OK [APPENDUID"), out)
        self.assertEqual(self.backend.boxes["fred"]["Drafts"].messages[1].data, b"Subject: mine\r\n\r\nfred's\r\n")

    def test_multiappend_is_all_or_none(self):
        out = feed(self.session, b'T APPEND Drafts {3+}\r\nabc CATENATE (URL "/INBOX/;UID=1") '
                                 b'CATENATE (URL "/INBOX/;UID=2")\r\n')
        self.assertEqual(out, b"T NO [BADURL /INBOX/;UID=2] CATENATE failed: mailbox INBOX has no message UID 2\r\n")
        self.assertEqual(self.backend.boxes["fred"]["Drafts"].messages, {})
        out = feed(self.session, b'T APPEND Drafts {3+}\r\nabc CATENATE (URL "/INBOX/;UID=1" TEXT {2+}\r\nxy)\r\n')
        self.assertRegex(out, rb"\AT OK \[APPENDUID \d+ 1:2\] APPEND completed\r\n\Z")

    def test_badurl_text_is_one_safe_line(self):
        """"]" cannot end the code early, and no line ends with what the client
        sent (a line ending "{1}" would announce a literal to the client)."""
        out = self.append(b"/IN]BOX/;UID=1")
        self.assertEqual(out, b"T NO [BADURL /IN%5DBOX/;UID=1] CATENATE failed: mailbox IN]BOX does not exist\r\n")
        out = self.append(b"/INBOX~{1}/;UID=1")
        self.assertEqual(out, b"T NO [BADURL /INBOX~{1}/;UID=1] CATENATE failed: mailbox INBOX~{1} does not exist\r\n")

    def test_too_many_parts_is_bad(self):
        parts = b" ".join([b'URL "/INBOX/;UID=1"'] * (MAX_CAT_PARTS + 1))
        out = feed(self.session, b"T APPEND Drafts CATENATE (" + parts + b")\r\n")
        self.assertEqual(out, b"T BAD more than %d CATENATE parts\r\n" % MAX_CAT_PARTS)
        parts = b" ".join([b'URL "/INBOX/;UID=1"'] * MAX_CAT_PARTS)
        out = feed(self.session, b"T APPEND Drafts CATENATE (" + parts + b")\r\n")
        self.assertTrue(out.startswith(b"T OK [APPENDUID"), out)

    def test_total_over_the_append_limit_is_toobig_and_reads_stop_there(self):
        """RFC 4469 §4.2: TOOBIG on the total; the command stops at the part that passes it."""
        s, b = make_session(self.backend, max_append=1000)
        login(s)
        reads = []
        big = b"Subject: big\r\n\r\n" + b"x" * 600
        b.mailboxes("fred")["INBOX"].add(big)
        original = type(b.mailboxes("fred")["INBOX"]).add
        feed(s, b"S SELECT INBOX\r\n")
        s._folder.read = lambda uid, done, read=s._folder.read: (reads.append(uid), read(uid, done))
        parts = b" ".join([b'URL "/INBOX/;UID=2"'] * 500)
        out = feed(s, b"T APPEND Drafts CATENATE (" + parts + b")\r\n")
        self.assertEqual(out, b"T NO [TOOBIG] Catenated message over 1000 octets\r\n")
        self.assertEqual(reads, [2])       # one read, kept for the other parts
        self.assertEqual(b.boxes["fred"]["Drafts"].messages, {})
        self.assertIsNotNone(original)


    def test_reads_for_one_command_are_bounded(self):
        """Alternating between two messages that together pass the limit reads
        each again; past READ_FACTOR limits of reading the command ends NO [LIMIT]."""
        s, b = make_session(self.backend, max_append=1000)
        login(s)
        box = b.mailboxes("fred")["INBOX"]
        for _ in range(2):
            box.add(b"Subject: big\r\n\r\n" + b"x" * 600)
        parts = b" ".join([b'URL "/INBOX/;UID=2/;PARTIAL=0.1" URL "/INBOX/;UID=3/;PARTIAL=0.1"'] * 10)
        out = feed(s, b"T APPEND Drafts CATENATE (" + parts + b")\r\n")
        self.assertEqual(out, b"T NO [LIMIT] CATENATE reads more than %d octets of stored messages\r\n"
                         % (READ_FACTOR * 1000))
        self.assertEqual(b.boxes["fred"]["Drafts"].messages, {})


class UrlParserTest(unittest.TestCase):
    def parse(self, url):
        return imapurl.parse(url, "fred@example.test", "mx.example.test")

    def test_forms(self):
        self.assertRaises(imapurl.BadUrl, self.parse, b"/INBOX/;UID=1;section=1")   # RFC 5092 §11: "/;SECTION="
        ref = self.parse(b"/a/b%20c;UIDVALIDITY=5/;UID=7/;SECTION=1.2.MIME/;PARTIAL=0.10")
        self.assertEqual((ref.mailbox, ref.uidvalidity, ref.uid, ref.section.part, ref.section.text, ref.partial),
                         ("a/b c", 5, 7, (1, 2), "MIME", (0, 10)))
        ref = self.parse(b"imap://fred%40example.test@MX.example.test./inbox/;UID=3")
        self.assertEqual((ref.mailbox, ref.uid, ref.uidvalidity), ("INBOX", 3, None))
        ref = self.parse(b"/%E2%82%AC/;UID=3")
        self.assertEqual(ref.mailbox, "\u20ac")       # RFC 5092 §8: UTF-8, percent-encoded

    def test_rfc5092_9_1_dot_segments(self):
        """§9.1: </foo/;UID=20/..> is </foo>; "..;UIDVALIDITY=" is no dot-segment."""
        self.assertEqual(imapurl.remove_dot_segments("/foo/;UID=20/.."), "/foo/")
        self.assertEqual(imapurl.remove_dot_segments("/..;UIDVALIDITY=385759045/;UID=20"),
                         "/..;UIDVALIDITY=385759045/;UID=20")
        self.assertEqual(imapurl.remove_dot_segments("/../../x/./y"), "/x/y")

    def test_badurl_code(self):
        self.assertEqual(imapurl.badurl_code(b"/a]b\r\n\xff"), b"[BADURL /a%5Db%0D%0A%FF]")


def _exchange(sock, data: bytes, tag: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while not any(line.startswith(tag + b" ") for line in got.split(b"\r\n")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


class CatenateServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}

    def test_catenate_over_loopback_stores_durably_and_refuses_other_users(self):
        import smtplib
        bob, alice = "bob@example.test", "alice@example.test"
        self.clear_mailbox(bob)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as smtp:
            smtp.sendmail("carol@elsewhere.test", [bob], b"Subject: to bob\r\n\r\nfor bob\r\n")
            smtp.sendmail("carol@elsewhere.test", [alice], b"Subject: to alice\r\n\r\nalice private\r\n")
        with socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=10) as sock:
            sock.recv(4096)
            self.assertIn(b"a OK", _exchange(sock, b"a LOGIN bob@example.test bob-secret\r\n", b"a"))
            out = _exchange(sock, b'b APPEND Drafts (\\Draft) CATENATE (TEXT {18+}\r\nSubject: built\r\n\r\n'
                                  b' URL "/INBOX/;UID=1/;SECTION=TEXT" URL "/INBOX/;UID=1/;PARTIAL=0.8")\r\n', b"b")
            self.assertRegex(out, rb"b OK \[APPENDUID \d+ 1\] APPEND completed")
            own = b"imap://bob%40example.test@mx.example.test:993/INBOX/;UID=1/;SECTION=TEXT"
            out = _exchange(sock, b'o APPEND Trash CATENATE (URL "' + own + b'")\r\n', b"o")
            self.assertRegex(out, rb"o OK \[APPENDUID \d+ 1\] APPEND completed")
            self.assertEqual(self.new_messages_in(bob, ".Trash"), [b"for bob\r\n"])
            url = b"imap://alice%40example.test@mx.example.test/INBOX/;UID=1"
            out = _exchange(sock, b'c APPEND Drafts CATENATE (URL "' + url + b'")\r\n', b"c")
            self.assertEqual(out, b"c NO [BADURL " + url + b"] CATENATE failed: URL names another user's mailboxes\r\n")
            out = _exchange(sock, b'd UID FETCH 1 BODY.PEEK[]\r\n', b"d")
            self.assertIn(b"d BAD", out)            # not selected: nothing else leaks
            _exchange(sock, b"e SELECT Drafts\r\n", b"e")
            out = _exchange(sock, b"f UID FETCH 1:* (BODY.PEEK[])\r\n", b"f")
        self.assertIn(b"Subject: built\r\n\r\nfor bob\r\nReturn-P)", out)   # after the trace fields
        self.assertNotIn(b"alice private", out)
        stored = self.new_messages_in(bob, ".Drafts")
        self.assertEqual(len(stored), 1)
        self.assertTrue(stored[0].startswith(b"Subject: built\r\n\r\nfor bob\r\nReturn-P"), stored[0])

    def new_messages_in(self, user, folder):
        import glob
        import os
        from tests.helpers import read_stored
        base = self.maildir(user, folder)
        return [read_stored(p) for p in glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*"))]


if __name__ == "__main__":
    unittest.main()
