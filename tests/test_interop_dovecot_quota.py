"""Interop: Debian's Dovecot 2.3 (``quota = maildir``, its Maildir++ quota) and
mailsrv keep one ``maildirsize`` between them (Courier's README.maildirquota).

Dovecot reads the file mailsrv wrote (a line only mailsrv could have written
shows in its GETQUOTAROOT usage, so it did not recount), and mailsrv sums the
line Dovecot appends for its own APPEND."""

import imaplib
import os
import shutil
import tempfile
import unittest

from store import quota as sq
from store.deliver import DeliveryJob, deliver_batch
from store.maildir import MailStore
from tests import dovecot_imap

BOB, BOB_PW = "bob@example.test", "bob-secret"
LIMITS = sq.Limits(2 * 1024 * 1024, 100)
# Dovecot 2.3's Maildir++ quota, limits as ours (so it keeps our maildirsize's first line)
EXTRA = """mail_plugins = $mail_plugins quota imap_quota
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=2M:messages=100
}
"""
MSG = b"From: carol@elsewhere.test\r\nSubject: quota\r\n\r\n" + b"text line\r\n" * 100


def skip_reason():
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    return dovecot_imap.skip_reason()


@unittest.skipIf(skip_reason(), skip_reason())
class DovecotReadsOurMaildirsizeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-dovecot-quota-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        store = MailStore(self.dir, "mx.example.test")
        store.create_mailbox(BOB)
        self.root = store.maildir_path(BOB)
        dovecot_imap.open_path_to(self.root, self.dir)
        sq.usage(self.root, LIMITS)                       # maildirsize made as the server does
        for n in range(3):
            [r] = deliver_batch(store, [DeliveryJob(MSG, "carol@elsewhere.test", [BOB], "Q%d" % n)])
            self.assertTrue(r.ok)
        sq.note(self.root, 10 * 1024, 0)                  # ours alone: no file on disk behind it

    def quota_of(self, m):
        typ, data = m.getquotaroot("INBOX")
        self.assertEqual(typ, "OK", data)
        return data[1][0]

    def test_dovecot_uses_our_counts_and_we_sum_its_lines(self):
        ours = sq.usage(self.root, LIMITS)
        with dovecot_imap.DovecotImap(self.root, BOB, BOB_PW, extra=EXTRA) as dovecot:
            m = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=30)
            try:
                m.login(BOB, BOB_PW)
                line = self.quota_of(m)
                self.assertEqual(line, b'"User quota" (STORAGE %d 2048 MESSAGE 3 100)'
                                 % -(-ours.bytes // 1024), (line, ours, dovecot.log_tail()))   # KiB rounded up, as ours
                self.assertEqual(m.append("INBOX", None, None, MSG)[0], "OK")
            finally:
                m.logout()
        after = sq.usage(self.root, LIMITS)
        self.assertEqual(after.messages, 4)
        self.assertGreater(after.bytes, ours.bytes + len(MSG) // 2)
        self.assertEqual(after.bytes - 10 * 1024, sq.scan(self.root).bytes)   # nothing recounted


if __name__ == "__main__":
    unittest.main()
