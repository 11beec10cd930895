"""Interop: Debian's swaks (a real, independent SMTP client) against our server.

Each test runs ``swaks`` in a subprocess against the in-process server of
tests.helpers, asserts its exit status and the reply codes in its transcript,
and reads the message back from the Maildir byte for byte.  swaks runs with
``--no-data-fixup`` so the DATA file goes on the wire exactly as written: CRLF
lines, dot-stuffed by us (RFC 5321 §4.5.2), ending in "." to which swaks adds
the final CRLF.  The stored message must be the un-stuffed text after the
trace headers the server prepends (RFC 5321 §4.4).

Skipped, with the reason printed by `make test`, when swaks is missing or
MAILSRV_SKIP_INTEROP is set; the TLS tests also need Perl's Net::SSLeay
(Debian: libnet-ssleay-perl, a swaks recommendation).
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from tests.helpers import ServerTestCase, strip_trace

SWAKS = shutil.which("swaks")
SKIP_ALL = ("MAILSRV_SKIP_INTEROP is set" if os.environ.get("MAILSRV_SKIP_INTEROP")
            else None if SWAKS else "swaks not installed (apt-get install swaks)")


def _have_net_ssleay() -> bool:
    if not SWAKS or not shutil.which("perl"):
        return False
    try:
        return subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


HAVE_TLS = _have_net_ssleay()
NO_TLS = "swaks TLS needs Perl Net::SSLeay (apt-get install libnet-ssleay-perl)"

# A message as the client means it; dot_stuff() makes the wire form.
BODY = (b"From: a@elsewhere.test\r\nTo: bob@example.test\r\nSubject: swaks interop\r\n"
        b"Message-ID: <swaks-1@elsewhere.test>\r\n\r\nHello from swaks.\r\n.a line with a leading dot\r\n"
        b"..two dots\r\n.\r\n\r\ntrailing blank line above\r\n")
# What an authenticated user submits: own From:, and a Date: so the MSA adds none (RFC 6409 §8.2).
SUBMITTED = BODY.replace(b"From: a@elsewhere.test",
                         b"From: alice@example.test\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000")
# Reply lines in swaks' transcript: "<-" plain, "<~" over TLS, a "*" marks a reply swaks did not expect.
REPLY = re.compile(r"^<[-~][ *] (\d{3})([ -])", re.M)


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line starting with "." gets one more; then the end mark
    without its last CRLF (swaks appends CRLF to what it sends)."""
    lines = message.split(b"\r\n")
    assert lines[-1] == b"", "message must end in CRLF"
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines[:-1]) + b"\r\n."


def final_codes(transcript: str):
    """The reply codes of complete replies (the last line of each multiline reply)."""
    return [int(code) for code, sep in REPLY.findall(transcript) if sep == " "]


@unittest.skipIf(SKIP_ALL, SKIP_ALL or "")
class SwaksInteropTest(ServerTestCase):
    def setUp(self):
        for u in self.users:
            self.clear_mailbox(u)
        fd, self.data_file = tempfile.mkstemp(prefix="swaks-", suffix=".eml")
        os.close(fd)
        self.addCleanup(os.unlink, self.data_file)

    def swaks(self, *args, port="smtp", body=BODY, sender="a@elsewhere.test", to="bob@example.test"):
        """Run swaks once; returns (exit status, transcript)."""
        with open(self.data_file, "wb") as f:
            f.write(dot_stuff(body))
        cmd = [SWAKS, "--server", "127.0.0.1", "--port", str(self.ports[port]), "--helo", "client.test",
               "--from", sender, "--to", to, "--data", "@" + self.data_file, "--no-data-fixup",
               "--timeout", "20", *args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def assert_delivered(self, user, body=BODY, count=1):
        stored = self.new_messages(user)
        self.assertEqual(len(stored), count)
        for m in stored:
            self.assertEqual(strip_trace(m), body)
        return stored

    def test_plain_delivery(self):
        rc, out = self.swaks()
        self.assertEqual(rc, 0, out)
        # RFC 5321 §4.3.2: 220 greeting, EHLO 250, MAIL 250, RCPT 250, DATA 354, end 250, QUIT 221
        self.assertEqual(final_codes(out), [220, 250, 250, 250, 354, 250, 221], out)
        [stored] = self.assert_delivered("bob@example.test")
        self.assertTrue(stored.startswith(b"Return-Path: <a@elsewhere.test>\r\n"))
        self.assertIn(b"with ESMTP id", stored)

    def test_pipelining_two_recipients(self):
        rc, out = self.swaks("--pipeline", to="bob@example.test,alice@example.test")
        self.assertEqual(rc, 0, out)
        self.assertIn("250-PIPELINING", out)
        # RFC 2920 §3.1: MAIL, RCPTs and DATA went out as one group before any reply was read
        self.assertRegex(out, r" -> MAIL FROM:<a@elsewhere\.test>\n -> RCPT TO:<bob@example\.test>\n"
                              r" -> RCPT TO:<alice@example\.test>\n -> DATA\n")
        self.assertEqual(final_codes(out), [220, 250, 250, 250, 250, 354, 250, 221], out)
        self.assert_delivered("bob@example.test")
        self.assert_delivered("alice@example.test")

    def test_large_body_pipelined(self):
        body = b"Subject: big\r\n\r\n" + b"".join(b"%05d " % i + b"x" * 90 + b"\r\n" for i in range(3000))
        body += b".\r\n..\r\n"
        rc, out = self.swaks("--pipeline", "--suppress-data", body=body)
        self.assertEqual(rc, 0, out)
        self.assertEqual(final_codes(out)[-2:], [250, 221], out)
        self.assert_delivered("bob@example.test", body)

    def test_unknown_recipient_refused(self):
        rc, out = self.swaks(to="nobody@example.test")
        self.assertNotEqual(rc, 0, out)
        # RFC 5321 §4.2.2 / RFC 3463 §3.2 (X.1.1): no such mailbox at RCPT, no DATA sent
        self.assertIn("550 5.1.1", out)
        self.assertNotIn("-> DATA", out)
        self.assertEqual(self.new_messages("bob@example.test"), [])

    @unittest.skipUnless(HAVE_TLS, NO_TLS)
    def test_starttls_delivery(self):
        rc, out = self.swaks("--tls")
        self.assertEqual(rc, 0, out)
        self.assertIn("250-STARTTLS", out)
        self.assertIn("=== TLS started", out)
        # RFC 3207 §4: 220 to STARTTLS, then a fresh EHLO over TLS
        self.assertEqual(final_codes(out), [220, 250, 220, 250, 250, 250, 354, 250, 221], out)
        self.assertRegex(out, r"<~  250 2\.0\.0 ")
        [stored] = self.assert_delivered("bob@example.test")
        self.assertIn(b"with ESMTPS id", stored)      # RFC 3848 §3

    @unittest.skipUnless(HAVE_TLS, NO_TLS)
    def test_submission_auth_plain_and_login_over_starttls(self):
        body = SUBMITTED
        for mech in ("PLAIN", "LOGIN"):
            with self.subTest(mech=mech):
                self.clear_mailbox("bob@example.test")
                rc, out = self.swaks("--tls", "--auth", mech, "--auth-user", "alice@example.test",
                                     "--auth-password", "alice-secret", port="submission", body=body,
                                     sender="alice@example.test")
                self.assertEqual(rc, 0, out)
                self.assertIn("AUTH " + mech, out)
                self.assertIn(235, final_codes(out), out)     # RFC 4954 §6
                self.assertEqual(final_codes(out)[-4:], [250, 354, 250, 221], out)
                [stored] = self.assert_delivered("bob@example.test", body)
                self.assertIn(b"with ESMTPSA id", stored)     # RFC 3848 §3
        self.assertNotIn(b"alice-secret", b"".join(self.new_messages("bob@example.test")))

    @unittest.skipUnless(HAVE_TLS, NO_TLS)
    def test_implicit_tls_submission_with_auth(self):
        body = SUBMITTED
        rc, out = self.swaks("--tls-on-connect", "--auth", "PLAIN", "--auth-user", "alice@example.test",
                             "--auth-password", "alice-secret", "--pipeline", port="smtps", body=body,
                             sender="alice@example.test")
        self.assertEqual(rc, 0, out)
        # RFC 8314 §3.3: TLS from the first octet, so even the greeting comes over TLS
        self.assertRegex(out, r"=== TLS started[^\n]*\n(?:===[^\n]*\n)*<~  220 ")
        self.assertNotIn("STARTTLS\n", out.split("=== TLS started")[1])
        self.assertIn(235, final_codes(out), out)
        [stored] = self.assert_delivered("bob@example.test", body)
        self.assertIn(b"with ESMTPSA id", stored)

    @unittest.skipUnless(HAVE_TLS, NO_TLS)
    def test_submission_wrong_password_refused(self):
        rc, out = self.swaks("--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test",
                             "--auth-password", "wrong", port="submission", sender="alice@example.test")
        self.assertNotEqual(rc, 0, out)
        self.assertIn(535, final_codes(out), out)             # RFC 4954 §6
        self.assertNotIn("-> MAIL", out)
        self.assertEqual(self.new_messages("bob@example.test"), [])

    @unittest.skipUnless(HAVE_TLS, NO_TLS)
    def test_submission_without_auth_refused(self):
        rc, out = self.swaks("--tls", port="submission")
        self.assertNotEqual(rc, 0, out)
        # RFC 6409 §4.3 / RFC 4954 §6: 530 5.7.0 authentication required
        self.assertIn("530 5.7.0", out)
        self.assertEqual(self.new_messages("bob@example.test"), [])


if __name__ == "__main__":
    unittest.main()
