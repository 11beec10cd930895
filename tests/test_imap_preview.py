"""IMAP PREVIEW (RFC 8970): the preview text over a corpus of MIME shapes
(charset, quoted-printable, base64, HTML, attachments), the RFC's examples as
transcripts (whole, byte by byte, split) against the in-memory backend, LAZY
against the real mail access (cache only, then filled by a plain PREVIEW),
and the whole server on loopback with imaplib."""

import imaplib
import shutil
import unittest

from protocols.imap import preview
from protocols.imap.fetch_args import FetchAtt, fetch_args
from protocols.imap.grammar import ImapParseError
from store.folder import Folder
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_derived import RealBackend
from tests.test_imap_session import TranscriptCase

LOREM = (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"
         b"Curabitur aliquam turpis et ante dictum, et pulvinar dui congue.\r\n"
         b"Maecenas hendrerit, lorem non imperdiet pellentesque, nulla\r\n"
         b"ligula nullam tempor, sed facilisis elit sem in purus. Integer ut.\r\n")
PLAIN = b"Subject: lorem\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + LOREM
ALT = (b"Subject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
       b"--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"Caf=E9 cr=E8me,=\r\n soft break\r\n"
       b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML version</p>\r\n--b1--\r\n")
HTML = (b"Subject: html\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + __import__("base64").encodebytes(
            "<html><head><title>t</title><style>p {color: red}</style></head><body>"
            "<!-- hidden --><script>alert(1)</script><p>Gr\u00fc\u00dfe &amp; <b>bye</b>&#33;</p>"
            "</body></html>".encode("utf-8")).replace(b"\n", b"\r\n"))
ATTACHED = (b"Subject: att\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n"
            b"--m\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nnot this\r\n"
            b"--m\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--m--\r\n")
IMAGE_ONLY = b"Subject: img\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"


class PreviewTextTest(unittest.TestCase):
    def test_corpus(self):
        cases = {
            PLAIN: " ".join(LOREM.decode().split())[:200],
            ALT: "Caf\u00e9 cr\u00e8me, soft break",
            HTML: "Gr\u00fc\u00dfe & bye!",
            ATTACHED: "",
            IMAGE_ONLY: "",
            b"Subject: none\r\n\r\n": "",
            b"Subject: bad b64\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%%\r\n": "",
            b"Subject: odd charset\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nh\xc3\xa9\xff\r\n":
                "h\u00e9\ufffd",
            b"Subject: controls\r\n\r\na\x00b\tc\x1b\r\n\r\n  d\r\n": "a b c d",
        }
        for data, want in cases.items():
            with self.subTest(data=data[:30]):
                self.assertEqual(preview.preview_text(data), want)
                self.assertEqual(preview.compute(data), {"PREVIEW": want.encode("utf-8")})

    def test_at_most_200_characters_of_a_huge_message(self):
        """RFC 8970 §3.3: SHOULD 200, MUST NOT 256 characters; a 20 MB body decodes only RAW_LIMIT."""
        text = preview.preview_text(b"Subject: big\r\n\r\n" + "\u00e9".encode("utf-8") * 10_000_000)
        self.assertEqual(text, "\u00e9" * 200)

    def test_fetch_att_grammar(self):
        """RFC 8970 §6: fetch-att =/ "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"]."""
        self.assertEqual(fetch_args(b"(UID PREVIEW (LAZY))")[0].atts, (FetchAtt("UID"), FetchAtt("PREVIEW", lazy=True)))
        self.assertEqual(fetch_args(b"PREVIEW (lazy LAZY)")[0].atts, (FetchAtt("PREVIEW", lazy=True),))
        self.assertEqual(fetch_args(b"PREVIEW")[0].atts, (FetchAtt("PREVIEW"),))
        for bad in (b"(PREVIEW (LAZY FOO))", b"(PREVIEW (LAZY)", b"(PREVIEWX)"):
            with self.subTest(bad=bad), self.assertRaises(ImapParseError):
                fa, rest = fetch_args(bad)
                if bytes(rest):
                    raise ImapParseError("left over")


def fake(*messages):
    def make():
        b = FakeImapBackend()
        for m in messages:
            b.deliver("fred", m)
        s, _ = make_session(b)
        login(s)
        feed(s, b"s SELECT INBOX\r\n")
        return s, b
    return make


class PreviewTranscripts(TranscriptCase):
    def test_rfc8970_5_example_1_preview_as_a_literal(self):
        lorem = preview.preview_text(PLAIN)
        self.run_transcript("""
C: A2 FETCH 1 (RFC822.SIZE PREVIEW)
S: * 1 FETCH (RFC822.SIZE %d PREVIEW "%s")
S: A2 OK FETCH completed
""" % (len(PLAIN), lorem), make=fake(PLAIN))

    def test_rfc8970_5_example_2_lazy_then_plain(self):
        """§4.1: LAZY answers NIL for what is not ready (this backend has no cache),
        never NIL without LAZY; an empty preview is "" (§3.2)."""
        self.run_transcript("""
C: B1 FETCH 1:3 (UID PREVIEW (LAZY))
S: * 1 FETCH (UID 1 PREVIEW NIL)
S: * 2 FETCH (UID 2 PREVIEW NIL)
S: * 3 FETCH (UID 3 PREVIEW NIL)
S: B1 OK FETCH completed
C: B2 FETCH 2:3 (PREVIEW)
S: * 2 FETCH (PREVIEW "")
S: * 3 FETCH (PREVIEW {24}
S: Caf\u00e9 cr\u00e8me, soft break)
S: B2 OK FETCH completed
C: B3 FETCH 3 (PREVIEW (LAZY) PREVIEW)
S: * 3 FETCH (PREVIEW {24}
S: Caf\u00e9 cr\u00e8me, soft break PREVIEW {24}
S: Caf\u00e9 cr\u00e8me, soft break)
S: B3 OK FETCH completed
""", make=fake(PLAIN, IMAGE_ONLY, ALT))

    def test_rfc8970_5_example_3_searchres(self):
        self.run_transcript("""
C: C2 SEARCH RETURN (SAVE) FROM "FOO"
C: C3 UID FETCH $ (UID PREVIEW)
S: C2 OK SEARCH completed
S: * 2 FETCH (UID 2 PREVIEW "HTML only")
S: C3 OK FETCH completed
C: C4 FETCH 1 PREVIEW (CHANGEDSINCE 1)
S: * OK [HIGHESTMODSEQ 3] Highest
S: * 1 FETCH (MODSEQ (2) PREVIEW "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Curabitur aliquam turpis et ante dictum, et pulvinar dui congue. Maecenas hendrerit, lorem non imperdiet pellentesque, nulla ligula nullam temp")
S: C4 OK FETCH completed
""", make=fake(PLAIN, b"From: foo@example.org\r\nContent-Type: text/html\r\n\r\n<p>HTML only</p>\r\n"))

    def test_utf8_accept_sends_a_quoted_string(self):
        b = FakeImapBackend()
        b.deliver("fred", ALT)
        s, _ = make_session(b)
        login(s)
        feed(s, b"e ENABLE UTF8=ACCEPT\r\ns SELECT INBOX\r\n")      # RFC 6855 §3: UTF-8 in quoted strings
        self.assertEqual(feed(s, b"a FETCH 1 PREVIEW\r\n"),
                         "* 1 FETCH (PREVIEW \"Caf\u00e9 cr\u00e8me, soft break\")\r\na OK FETCH completed\r\n"
                         .encode("utf-8"))


class LazyWithTheCacheTest(unittest.TestCase):
    """The real mail access: LAZY reads the cache alone; a plain PREVIEW fills it."""

    def test_lazy_is_nil_until_cached_and_no_file_is_read_for_it(self):
        b = RealBackend()
        self.addCleanup(shutil.rmtree, b.dir, True)
        for m in (PLAIN, ALT, HTML):
            b.append(m)
        reads = []
        real = Folder.read_crlf

        def counting(folder, uid):
            reads.append(uid)
            return real(folder, uid)
        Folder.read_crlf = counting
        self.addCleanup(setattr, Folder, "read_crlf", real)
        s, _ = make_session(b)
        login(s)
        feed(s, b"s SELECT INBOX\r\n")
        self.assertEqual(feed(s, b"a FETCH 1:3 (PREVIEW (LAZY))\r\n"),
                         b"* 1 FETCH (PREVIEW NIL)\r\n* 2 FETCH (PREVIEW NIL)\r\n* 3 FETCH (PREVIEW NIL)\r\n"
                         b"a OK FETCH completed\r\n")
        self.assertEqual(reads, [])
        out = feed(s, b"b FETCH 2 PREVIEW\r\n")
        self.assertIn(b"PREVIEW {24}\r\nCaf\xc3\xa9 cr\xc3\xa8me, soft break)", out)
        self.assertEqual(reads, [2])
        s2, _ = make_session(b)                        # another session: from the cache file
        login(s2)
        feed(s2, b"s SELECT INBOX\r\n")
        out = feed(s2, b"c FETCH 1:3 (PREVIEW (LAZY))\r\nd FETCH 2 PREVIEW\r\n")
        self.assertIn(b"* 1 FETCH (PREVIEW NIL)\r\n* 2 FETCH (PREVIEW {24}", out)
        self.assertIn(b"* 3 FETCH (PREVIEW NIL)\r\nc OK", out)
        self.assertEqual(reads, [2])


class PreviewServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}
    tls = False
    BOB, BOB_PW = "bob@example.test", "bob-secret"

    def setUp(self):
        self.clear_mailbox(self.BOB)

    def test_fetch_preview_over_loopback(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(self.BOB, self.BOB_PW)[0], "OK")
        self.assertIn(b"PREVIEW", m.capability()[1][0].split())
        self.assertEqual(m.append("INBOX", None, None, HTML)[0], "OK")
        m.select("INBOX")
        typ, data = m.fetch("1", "(PREVIEW (LAZY))")
        self.assertEqual(data, [b"1 (PREVIEW NIL)"])
        typ, data = m.fetch("1", "(UID PREVIEW)")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][0], b"1 (UID 1 PREVIEW {14}")
        self.assertEqual(data[0][1].decode("utf-8"), "Gr\u00fc\u00dfe & bye!")
        typ, data = m.fetch("1", "(PREVIEW (LAZY))")
        self.assertEqual(data[0][1].decode("utf-8"), "Gr\u00fc\u00dfe & bye!")


if __name__ == "__main__":
    unittest.main()
