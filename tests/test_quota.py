"""Quota: the limits file, Maildir++ maildirsize (Courier's README.maildirquota,
as Dovecot's ``quota = maildir`` reads it), the CLI, and SMTP delivery over
quota (452 4.2.2, RFC 3463 §3.3) over real loopback sockets."""

import os
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from store import quota as sq
from store.deliver import DeliveryJob, deliver_batch
from store.maildir import MailStore
from tests.helpers import ServerTestCase, add_user_cli, mailsrv_cli, wait_for

USER = "dora@example.test"


class SizesTest(unittest.TestCase):
    def test_sizes_are_1024_based_like_dovecot(self):
        self.assertEqual(sq.parse_size("2G"), 2 * 1024 ** 3)
        self.assertEqual(sq.parse_size("500m"), 500 * 1024 ** 2)
        self.assertEqual(sq.parse_size("100K"), 102400)
        self.assertEqual(sq.parse_size("12345"), 12345)
        for none in ("0", "none", "NONE"):
            self.assertEqual(sq.parse_size(none), 0)
        with self.assertRaisesRegex(ValueError, "'2X'"):
            sq.parse_size("2X")
        self.assertEqual(sq.format_size(2 * 1024 ** 3), "2G")
        self.assertEqual(sq.format_size(1000), "1000")


    def test_default_quota_key_is_checked_at_load(self):
        from protocols.config import Config, ConfigError
        self.assertEqual(Config({"default_quota": "2G"}).default_quota, "2G")
        with self.assertRaisesRegex(ConfigError, "default_quota: quota 'lots'"):
            Config({"default_quota": "lots"})


class MaildirsizeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-quota-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = MailStore(self.dir, "mx.example.test")
        self.store.create_mailbox(USER)
        self.root = self.store.maildir_path(USER)
        self.path = os.path.join(self.root, "maildirsize")

    def put(self, folder, name, size):
        with open(os.path.join(self.root, folder, name), "wb") as f:
            f.write(b"x" * size)

    def test_missing_file_is_recalculated_from_the_s_fields_of_every_folder(self):
        self.put("cur", "1.M1P1.host,S=1000,W=1020:2,S", 10)     # ,S= wins over the real size
        self.put("new", "2.M2P2.host", 300)                       # no ,S=: stat
        self.put(".Sent/cur", "3.M3P3.host,S=200:2,S", 1)
        limits = sq.Limits(10000, 50)
        self.assertEqual(sq.usage(self.root, limits), sq.Usage(1500, 3))
        with open(self.path) as f:
            self.assertEqual(f.read(), "10000S,50C\n1500 3\n")     # README.maildirquota format

    def test_changes_are_appended_and_summed_without_a_scan(self):
        limits = sq.Limits(10000, 0)
        sq.usage(self.root, limits)
        sq.note(self.root, 700, 1)
        sq.note(self.root, -200, -1)
        self.put("cur", "9.M9P9.host,S=5000", 1)                  # not noted: no scan sees it
        self.assertEqual(sq.usage(self.root, limits), sq.Usage(500, 0))
        with open(self.path) as f:
            self.assertEqual(f.read().splitlines(), ["10000S", "0 0", "700 1", "-200 -1"])

    def test_recalculated_when_5120_bytes_or_limits_change_or_over_and_stale(self):
        limits = sq.Limits(10000, 0)
        sq.usage(self.root, limits)
        self.put("cur", "1.M1P1.host,S=40", 40)
        for _ in range(1300):                    # > 5120 octets of lines
            sq.note(self.root, 1, 0)
        self.assertEqual(sq.usage(self.root, limits), sq.Usage(40, 1))
        self.assertEqual(sq.usage(self.root, sq.Limits(20, 0)), sq.Usage(40, 1))   # new header
        with open(self.path) as f:
            self.assertEqual(f.readline(), "20S\n")
        sq.note(self.root, 100000, 0)            # says over quota...
        later = time.time() + sq.RECALC_AGE_S + 60
        self.assertEqual(sq.usage(self.root, sq.Limits(20, 0), now=later), sq.Usage(40, 1))

    def test_over_quota_recalculated_when_mail_was_removed_by_another_program(self):
        limits = sq.Limits(1000, 0)
        self.put("cur", "1.M1P1.host,S=2000", 1)
        self.assertTrue(sq.over(sq.usage(self.root, limits), limits))
        past = time.time() - 5
        os.utime(self.path, (past, past))
        os.unlink(os.path.join(self.root, "cur", "1.M1P1.host,S=2000"))     # POP3 DELE, say
        self.assertEqual(sq.usage(self.root, limits), sq.Usage(0, 0))

    def test_concurrent_appends_lose_no_line(self):
        limits = sq.Limits(10 ** 9, 0)
        sq.usage(self.root, limits)

        def writer():
            for _ in range(100):
                sq.note(self.root, 3, 1)
        threads = [threading.Thread(target=writer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with open(self.path) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 802)        # the limits, the count at the start, 800
        self.assertEqual(sq._read(self.path)[1], sq.Usage(2400, 800))

    def test_delivery_appends_its_files_size(self):
        sq.usage(self.root, sq.Limits(10 ** 6, 0))
        [result] = deliver_batch(self.store, [DeliveryJob(b"Subject: q\r\n\r\nhi\r\n", "a@b.test", [USER], "Q1")])
        self.assertTrue(result.ok)
        size = os.path.getsize(result.paths[0])
        self.assertEqual(sq._read(self.path)[1], sq.Usage(size, 1))

    def test_no_file_is_made_for_a_user_without_limits(self):
        sq.note(self.root, 10, 1)
        self.assertFalse(os.path.exists(self.path))


class QuotaTableTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-quota-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_bad_lines_are_skipped_with_one_warning_naming_file_and_line(self):
        path = os.path.join(self.dir, "quotas")
        with open(path, "w") as f:
            f.write("a@example.test 2G 100\nnonsense\nb@example.test 10Q\nc@example.test 1M\n")
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            table = sq.QuotaTable(self.dir, sq.Limits(5, 0))
        self.assertEqual(len(logs.output), 2)
        self.assertIn("%s line 2 skipped" % path, logs.output[0])
        self.assertIn("line 3", logs.output[1])
        self.assertEqual(table.get("a@example.test"), sq.Limits(2 * 1024 ** 3, 100))
        self.assertEqual(table.get("c@example.test"), sq.Limits(1024 ** 2, 0))
        self.assertEqual(table.get("z@example.test"), sq.Limits(5, 0))     # the default
        table.set("c@example.test", sq.Limits())                            # removed; bad lines kept
        with open(path) as f:
            self.assertEqual(f.read(), "a@example.test 2147483648 100\nnonsense\nb@example.test 10Q\n")


class QuotaCliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-quota-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        add_user_cli(self.dir, USER)

    def cli(self, *argv):
        return mailsrv_cli("user", "quota", *argv, "--data", self.dir)

    def test_set_show_and_remove(self):
        rc, out, err = self.cli(USER, "2G", "--messages", "500")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "%s: storage 0 of 2G, messages 0 of 500" % USER)
        with open(os.path.join(self.dir, "quotas")) as f:
            self.assertEqual(f.read(), "%s 2147483648 500\n" % USER)
        rc, out, _ = self.cli(USER)
        self.assertIn("of 2G", out)
        rc, out, _ = self.cli(USER, "none", "--messages", "0")
        self.assertEqual(out.strip(), "%s: storage 0 of unlimited, messages 0 of unlimited (default_quota)" % USER)
        with open(os.path.join(self.dir, "quotas")) as f:
            self.assertEqual(f.read(), "")

    def test_bad_size_and_unknown_user_are_one_line_errors(self):
        rc, _, err = self.cli(USER, "lots")
        self.assertNotEqual(rc, 0)
        self.assertIn("'lots'", err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        rc, _, err = self.cli("nobody@example.test", "1G")
        self.assertNotEqual(rc, 0)
        self.assertIn("nobody@example.test", err)


MSG = b"From: x@elsewhere.test\r\nSubject: quota\r\n\r\n" + b"line of text\r\n" * 200


class SmtpOverQuotaTest(ServerTestCase):
    """RFC 3463 §3.3 X.2.2 mailbox full, temporary (452, RFC 5321 §4.2.2) as Postfix and Dovecot LMTP."""

    tls = False
    users = {"alice@example.test": "a", "bob@example.test": "b", "carol@example.test": "c"}

    def setUp(self):
        table = sq.QuotaTable(self.tmp)
        for user in ("bob@example.test", "carol@example.test"):
            table.set(user, sq.Limits(len(MSG) * 3 // 2, 0))

    def send(self, rcpt):
        s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10)
        self.addCleanup(s.close)
        try:
            return s.sendmail("x@elsewhere.test", [rcpt], MSG)
        finally:
            s.close()

    def test_under_quota_gets_mail_then_over_quota_is_refused_with_452_and_nothing_stored(self):
        self.assertEqual(self.send("bob@example.test"), {})
        self.assertEqual(len(self.new_messages("bob@example.test")), 1)
        with self.assertRaises(smtplib.SMTPDataError) as caught:   # this one would pass the limit
            self.send("bob@example.test")
        self.assertEqual(caught.exception.smtp_code, 452)
        self.assertIn(b"4.2.2", caught.exception.smtp_error)
        self.assertEqual(len(self.new_messages("bob@example.test")), 1)
        self.assertEqual(self.send("alice@example.test"), {})      # others are not limited

    def test_a_user_already_over_is_refused_at_rcpt(self):
        with open(os.path.join(self.maildir("carol@example.test"), "cur", "1.M1P1.host,S=999999:2,S"), "wb") as f:
            f.write(b"big")

        def refused_at_rcpt():
            s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10)
            try:
                s.ehlo("client.test")
                s.mail("x@elsewhere.test")
                code, text = s.rcpt("carol@example.test")
            finally:
                s.close()
            return code == 452 and b"4.2.2" in text
        wait_for(refused_at_rcpt, "452 4.2.2 at RCPT")     # the flag is refreshed on a worker
        self.assertEqual(len(self.new_messages("carol@example.test")), 1)   # only the big file


if __name__ == "__main__":
    unittest.main()
