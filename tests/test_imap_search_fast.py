"""SEARCH BODY / TEXT answered from the raw octets (search_text.surely_absent)
gives the answers of the full decoding (RFC 9051 §6.4.4: substring,
case-insensitive, after Content-Transfer-Encoding and charset; BODY the body
alone, TEXT header and body), over the test corpora, the benchmark's
generated corpus and tricky messages."""

from __future__ import annotations

import re
import unittest

from protocols.imap import search_eval as E
from protocols.imap import search_text
from protocols.imap.collation import casemap
from tests.bench_imap_content import corpus
from tests.test_imap_derived import MESSAGES


def crlf(*lines: str, raw: bytes = b"") -> bytes:
    return "\r\n".join(lines).encode("latin-1") + raw


TRICKY = {
    "qp_soft_break": crlf("Subject: a", "Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable",
                          "", "the zep=", "pelin flies", ""),
    "qp_escape": crlf("Subject: a", "Content-Transfer-Encoding: Quoted-Printable", "", "=5Aeppelin", ""),
    "base64": crlf("Subject: a", "Content-Transfer-Encoding: base64", "", "dGhlIHplcHBlbGlu", ""),
    "latin1": crlf("Subject: a", "Content-Type: text/plain; charset=iso-8859-1", "", "")
    + b"Gr\xfc\xdfe zeppelin \xc4rger\r\n",
    "kelvin_utf8": crlf("Subject: a", "Content-Type: text/plain; charset=utf-8", "", "")
    + "\u212aelvin".encode("utf-8") + b"\r\n",
    "utf16": crlf("Subject: a", 'Content-Type: text/plain; charset="utf-16-le"', "", "")
    + "zeppelin".encode("utf-16-le") + b"\r\n",
    "utf7": crlf("Subject: a", "Content-Type: text/plain; charset=utf-7", "", "+AHo-eppelin", ""),
    "rfc2231_charset": crlf("Subject: a", "Content-Type: text/plain; charset*=utf-7''", "", "+AHo-eppelin", ""),
    "needle_in_header": crlf("Subject: zeppelin", "X-Thing: blimp", "", "nothing here", ""),
    "encoded_subject": crlf("Subject: =?utf-8?q?zep=70elin?=", "", "nothing here", ""),
    "attachment_b64": crlf("Subject: a", "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b"', "",
                           "--b", "Content-Type: text/plain", "", "nothing", "--b",
                           "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64", "",
                           "emVwcGVsaW4=", "--b--", ""),
    "text_attachment_b64": crlf("Subject: a", 'Content-Type: multipart/mixed; boundary="b"', "",
                                "--b", "Content-Type: text/plain", "", "nothing", "--b",
                                "Content-Type: text/plain", "Content-Transfer-Encoding: base64", "",
                                "emVwcGVsaW4=", "--b--", ""),
    "enclosed": crlf("Subject: a", "Content-Type: message/rfc822", "", "Subject: =?utf-8?b?emVwcGVsaW4=?=",
                     "", "inner", ""),
    "folded_mime_header": crlf("Subject: a", 'Content-Type: multipart/mixed; boundary="b"', "", "--b",
                               "Content-Type: text/plain;", " name=zeppelin", "", "x", "--b--", ""),
    "bad_header_line": crlf("Subject: a", "not a field", "=?utf-8?q?zeppelin?=", "", "x", ""),
}
NEEDLES = ["zeppelin", "ZEPPELIN", "eppelin", "kelvin", "grüße", "blimp", "nothing", "subject", "inner",
           "content-type", "base64", "zep pelin", "name=zeppelin", "b", "x-thing: blimp"]


def slow(data: bytes, needle: str, text: bool) -> bool:
    mail = E._Mail(data)
    return casemap(needle) in (mail.all_text() if text else mail.body_text())


def words(data: bytes) -> list:
    mail = E._Mail(data)
    found = re.findall(r"[A-Za-z0-9=._-]{3,12}", mail.all_text()[:20000])
    return found[::max(1, len(found) // 12)]


class FastPathTest(unittest.TestCase):
    def check(self, name: str, data: bytes, needles) -> int:
        fast = 0
        for needle in needles:
            for text in (False, True):
                want = slow(data, needle, text)
                got = E._Mail(data).body_has(casemap(needle), text=text)
                self.assertEqual(got, want, (name, needle, text))
                raw = casemap(needle).lower()
                if raw.isascii() and not re.search(r"[ \t:]", raw):
                    fast += search_text.surely_absent(data, raw.encode("ascii"), text)
        return fast

    def test_tricky_messages(self):
        for name, data in TRICKY.items():
            self.check(name, data, NEEDLES)

    def test_tricky_messages_are_not_answered_from_octets(self):
        for name in ("qp_soft_break", "qp_escape", "base64", "kelvin_utf8", "utf7",
                     "rfc2231_charset", "encoded_subject", "text_attachment_b64", "enclosed",
                     "bad_header_line"):
            self.assertFalse(search_text.surely_absent(TRICKY[name], b"zeppelin", name == "encoded_subject"),
                             name)
        self.assertTrue(E._Mail(TRICKY["qp_soft_break"]).body_has("zeppelin"))
        self.assertTrue(E._Mail(TRICKY["text_attachment_b64"]).body_has("zeppelin"))
        self.assertFalse(E._Mail(TRICKY["attachment_b64"]).body_has("zeppelin"))
        self.assertFalse(E._Mail(TRICKY["needle_in_header"]).body_has("zeppelin"))
        self.assertTrue(E._Mail(TRICKY["needle_in_header"]).body_has("zeppelin", text=True))

    def test_the_test_corpus(self):
        fast = 0
        for name, data in MESSAGES.items():
            fast += self.check(name, data, NEEDLES + words(data))
        self.assertGreater(fast, 0)

    def test_the_benchmark_corpus(self):
        fast = 0
        for n, data in enumerate(corpus(150, seed=3)):
            fast += self.check("bench %d" % n, data, ["zeppelin", "needlework", "zyxwvut"] + words(data)[:4])
        self.assertGreater(fast, 100)


if __name__ == "__main__":
    unittest.main()


class SessionReadManyTest(unittest.TestCase):
    """SEARCH BODY reads a batch of messages in one backend step when the
    backend has read_many (contracts.OpenFolder.read_many), one by one else,
    with the same answers."""

    def transcript(self, many: bool):
        from unittest import mock
        from tests.imap_fake import FakeImapBackend, FakeOpenFolder, feed, login, make_session
        b = FakeImapBackend()
        for data in list(TRICKY.values()) + list(MESSAGES.values()):
            b.deliver("fred", data)
        calls = {"read": 0, "read_many": 0}
        real_read = FakeOpenFolder.read

        def read(folder, uid, done):
            calls["read"] += 1
            return real_read(folder, uid, done)

        def read_many(folder, uids, done):
            calls["read_many"] += 1
            out = {u: folder.box.messages[u].data for u in uids if u in folder.box.messages and u != 2}
            folder.backend.call(done, out)      # UID 2 "gone" for read_many: read looks again
        patches = [mock.patch.object(FakeOpenFolder, "read", read)]
        if many:
            patches.append(mock.patch.object(FakeOpenFolder, "read_many", read_many, create=True))
        for p in patches:
            p.start()
            self.addCleanup(p.stop)
        s, _ = make_session(b)
        login(s)
        out = feed(s, b"s SELECT INBOX\r\n")
        for needle in (b"zeppelin", b"nothing", b"body", b"x"):
            out += feed(s, b"q SEARCH BODY %s\r\n" % needle) + feed(s, b"t SEARCH TEXT %s\r\n" % needle)
        for p in patches:
            p.stop()
        return out, calls

    def test_the_same_answers_in_fewer_steps(self):
        one, calls_one = self.transcript(False)
        many, calls_many = self.transcript(True)
        self.assertEqual(many, one)
        self.assertIn(b"* SEARCH 1 ", one)
        self.assertEqual(calls_many, {"read": 8, "read_many": 8})
        self.assertEqual(calls_one["read"], 8 * (len(TRICKY) + len(MESSAGES)))
