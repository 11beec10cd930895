"""protocols/outbound/dsn.py: bounces parsed back with the stdlib email package (RFC 3464, RFC 6522, RFC 3834)."""

import email
import email.policy
import unittest

from protocols.outbound.dsn import build_bounce, build_report, should_bounce

ORIGINAL = (b"Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
            b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
            b"Subject: lunch\r\nMessage-ID: <m1@example.org>\r\n\r\n"
            b"SECRET BODY TEXT\r\n")
DATE = "Thu, 01 Jan 2026 00:10:00 +0000"


def bounce(failed=None, original=ORIGINAL, sender="alice@example.org"):
    failed = failed or [("bob@example.com", "5.1.1", "smtp; 550 5.1.1 <bob@example.com>: no such user",
                         "mx.example.com")]
    return build_bounce("mail.example.org", sender, failed, original, "QID1", DATE,
                        "<QID1.bounce@mail.example.org>", arrival_date="Thu, 01 Jan 2026 00:00:01 +0000")


class BounceStructureTest(unittest.TestCase):
    def setUp(self):
        self.raw = bounce()
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)

    def test_crlf_only_and_ascii(self):
        self.assertNotIn(b"\n", self.raw.replace(b"\r\n", b""))
        self.raw.decode("ascii")

    def test_top_level_headers(self):
        m = self.msg
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertEqual(m.get_param("report-type"), "delivery-status")
        self.assertEqual(m["From"], "Mail Delivery System <MAILER-DAEMON@mail.example.org>")
        self.assertEqual(m["To"], "<alice@example.org>")
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        self.assertEqual(m["Message-ID"], "<QID1.bounce@mail.example.org>")
        self.assertEqual(m["Date"], DATE)
        self.assertEqual(m["MIME-Version"], "1.0")

    def test_three_parts_in_order(self):
        parts = self.msg.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertIn("<bob@example.com>: smtp; 550 5.1.1", parts[0].get_payload())
        self.assertFalse(self.msg.defects)

    def test_delivery_status_fields(self):
        ds = self.msg.get_payload()[1]
        blocks = ds.get_payload()   # email parses message/delivery-status into header blocks
        self.assertEqual(len(blocks), 2)
        per_msg, per_rcpt = blocks
        self.assertEqual(per_msg["Reporting-MTA"], "dns; mail.example.org")
        self.assertEqual(per_msg["Arrival-Date"], "Thu, 01 Jan 2026 00:00:01 +0000")
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; bob@example.com")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertEqual(per_rcpt["Remote-MTA"], "dns; mx.example.com")
        self.assertEqual(per_rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 <bob@example.com>: no such user")
        self.assertEqual(per_rcpt["Last-Attempt-Date"], DATE)

    def test_original_headers_without_body(self):
        part = self.msg.get_payload()[2]
        text = part.get_payload()
        self.assertIn("Subject: lunch", text)
        self.assertIn("Message-ID: <m1@example.org>", text)
        self.assertNotIn("SECRET", text)
        self.assertNotIn(b"SECRET", self.raw)


class BounceDetailsTest(unittest.TestCase):
    def test_several_recipients_each_get_a_block(self):
        raw = bounce([("a@x.com", "5.1.1", "smtp; 550 5.1.1 unknown", "mx.x.com"),
                      ("b@y.com", "5.1.10", "smtp; 556 5.1.10 null MX", "")])
        ds = email.message_from_bytes(raw).get_payload()[1].get_payload()
        self.assertEqual([b["Final-Recipient"] for b in ds[1:]], ["rfc822; a@x.com", "rfc822; b@y.com"])
        self.assertIsNone(ds[2]["Remote-MTA"])
        self.assertEqual(ds[2]["Status"], "5.1.10")

    def test_remote_text_cannot_inject_header_fields(self):
        raw = bounce([("a@x.com", "5.0.0", "smtp; 550 bad\r\nX-Evil: 1", "mx")])
        ds = email.message_from_bytes(raw).get_payload()[1].get_payload()
        self.assertIsNone(ds[1]["X-Evil"])
        self.assertEqual(ds[1]["Diagnostic-Code"], "smtp; 550 bad X-Evil: 1")

    def test_lf_only_original_and_header_only_original(self):
        raw = bounce(original=b"Subject: lf\nFrom: a@b\n\nbody\n")
        part = email.message_from_bytes(raw).get_payload()[2]
        self.assertIn("Subject: lf", part.get_payload())
        self.assertNotIn("body", part.get_payload())
        raw = bounce(original=b"Subject: no body")
        self.assertIn("Subject: no body", email.message_from_bytes(raw).get_payload()[2].get_payload())

    def test_utf8_recipient_marks_8bit(self):
        raw = bounce([("jos\u00e9@x.com", "5.1.1", "smtp; 550 5.1.1 unknown", "mx")])
        m = email.message_from_bytes(raw)
        self.assertEqual(m["Content-Transfer-Encoding"], "8bit")
        self.assertIn("jos\u00e9@x.com".encode(), raw)

    def test_delay_notice(self):
        raw = build_report("delayed", "mail.example.org", "alice@example.org",
                           [("bob@example.com", "4.4.1", "smtp; 451 4.4.1 no answer", "mx")],
                           ORIGINAL, "QID1", DATE, "<d@mail.example.org>",
                           retry_until="Tue, 06 Jan 2026 00:00:00 +0000")
        m = email.message_from_bytes(raw)
        rc = m.get_payload()[1].get_payload()[1]
        self.assertEqual(rc["Action"], "delayed")
        self.assertEqual(rc["Will-Retry-Until"], "Tue, 06 Jan 2026 00:00:00 +0000")
        self.assertIn("Delayed", m["Subject"])


class ShouldBounceTest(unittest.TestCase):
    def test_null_sender_never_bounced(self):
        self.assertFalse(should_bounce(""))
        self.assertFalse(should_bounce("<>"))
        self.assertFalse(should_bounce("MAILER-DAEMON@example.org"))
        self.assertTrue(should_bounce("alice@example.org"))


if __name__ == "__main__":
    unittest.main()
