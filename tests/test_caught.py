"""The catch-all catalog (protocols/backend/caught.py, store/caught.py): the
CaughtMail contract, the envelope log across a restart, a corrupt log line.
"""

import inspect
import json
import os
import shutil
import smtplib
import tempfile
import unittest

from mailsrv import TestServer
from protocols.backend.caught import head_fields, message_id
from protocols.backend import contracts
from protocols.backend.contracts import CaughtMessage
from protocols.loop_sync import call_and_wait
from store.caught import ENVELOPE_LOG

MSG = (b"From: =?utf-8?q?Caf=C3=A9?= <shop@a.test>\r\nTo: Bob <bob@example.org>\r\n"
       b"Subject: =?utf-8?q?Bienvenue_=C3=A0_vous?=\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n")


def on_loop(mail, start, timeout=10):
    return call_and_wait(mail.server.loop, start, timeout)


class Contract(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mail = TestServer().start()
        cls.catalog = cls.mail.backend.caught

    @classmethod
    def tearDownClass(cls):
        cls.mail.stop()

    def setUp(self):
        self.mail.reset()

    def send(self, rcpts, data=MSG, sender="shop@a.test"):
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=10) as s:
            s.sendmail(sender, rcpts, data)

    def test_methods_match_the_contract(self):
        for name, fn in inspect.getmembers(contracts.CaughtMail, inspect.isfunction):
            if name.startswith("_"):
                continue
            impl = getattr(self.catalog, name, None)
            self.assertTrue(callable(impl), name)
            self.assertEqual(list(inspect.signature(impl).parameters),
                             list(inspect.signature(fn).parameters)[1:], name)

    def test_list_newest_first_with_decoded_fields_and_the_envelope(self):
        self.send(["bob@example.org"])
        self.send(["carol@example.org"], b"Subject: second\r\n\r\nx\r\n", sender="")
        found = on_loop(self.mail, lambda done: self.catalog.list_caught({}, 0, done))
        self.assertTrue(all(isinstance(m, CaughtMessage) for m in found))
        self.assertEqual([m.subject for m in found], ["second", "Bienvenue \u00e0 vous"])
        first = found[1]
        self.assertEqual((first.header_from, first.header_to, first.date),
                         ("Caf\u00e9 <shop@a.test>", "Bob <bob@example.org>", "Sun, 29 Nov 2026 10:00:00 +0000"))
        self.assertEqual((first.mail_from, first.rcpt_to, first.listener, first.peer_ip, first.mailbox),
                         ("shop@a.test", ("bob@example.org",), "smtp", "127.0.0.1", "bob@example.org"))
        self.assertEqual(found[0].mail_from, "")     # the null reverse-path <>
        self.assertEqual(first.id, message_id(first.mailbox, "INBOX", self._key(first)))
        self.assertRegex(first.id, r"^[0-9a-f]+$")
        limited = on_loop(self.mail, lambda done: self.catalog.list_caught({}, 1, done))
        self.assertEqual([m.subject for m in limited], ["second"])

    def _key(self, msg):
        records = on_loop(self.mail, self.catalog.submitted)
        rec = [r for r in records if msg.mailbox in r["files"]][0]
        return rec["files"][msg.mailbox]

    def test_query_keys(self):
        self.send(["bob@example.org"])
        self.send(["carol@example.org"], b"To: someone@else.test\r\nSubject: other\r\n\r\nx\r\n", sender="news@b.test")

        def subjects(query):
            return sorted(m.subject for m in on_loop(self.mail, lambda done: self.catalog.list_caught(query, 0, done)))
        self.assertEqual(subjects({"to": "CAROL"}), ["other"])              # envelope recipient
        self.assertEqual(subjects({"to": "else.test"}), ["other"])          # the To field
        self.assertEqual(subjects({"from": "caf\u00e9"}), ["Bienvenue \u00e0 vous"])
        self.assertEqual(subjects({"from": "news@", "subject": "oth"}), ["other"])
        self.assertEqual(subjects({"from": "news@", "subject": "bien"}), [])
        self.assertEqual(subjects({"text": "carol@example"}), ["other"])

    def test_raw_delete_and_unknown_ids(self):
        self.send(["bob@example.org", "carol@example.org"])
        found = on_loop(self.mail, lambda done: self.catalog.list_caught({}, 0, done))
        msg, raw = on_loop(self.mail, lambda done: self.catalog.caught_raw(found[0].id, done))
        self.assertEqual(msg.id, found[0].id)
        self.assertIn(b"\r\nhi\r\n", raw)
        self.assertIsNone(on_loop(self.mail, lambda done: self.catalog.caught_raw("nope", done)))
        self.assertTrue(on_loop(self.mail, lambda done: self.catalog.delete_caught(found[0].id, done)))
        self.assertFalse(on_loop(self.mail, lambda done: self.catalog.delete_caught(found[0].id, done)))
        left = on_loop(self.mail, lambda done: self.catalog.list_caught({}, 0, done))
        self.assertEqual([m.id for m in left], [found[1].id])
        self.assertEqual(on_loop(self.mail, lambda done: self.catalog.delete_all_caught(done)), 1)
        self.assertEqual(on_loop(self.mail, lambda done: self.catalog.list_caught({}, 0, done)), [])

    def test_watch_caught_hears_each_new_message_once_until_stopped(self):
        heard = []
        stop = on_loop(self.mail, lambda done: done(self.catalog.watch_caught(heard.append)))
        self.send(["bob@example.org", "carol@example.org"])
        self.mail.wait_for(count=2)
        on_loop(self.mail, lambda done: self.catalog.list_caught({}, 0, done))    # another listing: no repeat
        on_loop(self.mail, lambda done: done(stop()))
        self.send(["dave@example.org"])
        self.mail.wait_for(to="dave@example.org")
        self.assertEqual(sorted(m.mailbox for m in heard), ["bob@example.org", "carol@example.org"])

    def test_head_fields_of_hostile_headers_are_strings(self):
        for head in (b"", b"\xff\xfe: \x00\r\n\r\n", b"Subject: =?bogus?x?zz?=\r\n", b"From: <<<@>>>\r\n" * 100):
            with self.subTest(head=head[:20]):
                fields = head_fields(head)
                self.assertTrue(all(isinstance(v, str) for v in fields.values()))


class Restart(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-test-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def submit(self, mail):
        with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=10) as s:
            s.login("app@shop.test", "app@shop.test")
            s.sendmail("noreply@shop.test", ["bob@example.org"], MSG)

    def test_a_restart_with_the_same_data_keeps_messages_and_envelopes(self):
        with TestServer(data_dir=self.data) as mail:
            self.submit(mail)
            before = mail.caught()
        self.assertTrue(os.path.isdir(self.data))     # a given folder is kept
        with TestServer(data_dir=self.data) as mail:
            self.assertEqual([s.auth_user for s in mail.sent()], ["app@shop.test"])   # before any listing
            after = mail.caught()
            self.assertEqual(after, before)
            self.assertEqual((after[0].auth_user, after[0].mail_from), ("app@shop.test", "noreply@shop.test"))

    def test_a_corrupt_envelope_line_is_skipped_with_one_log_line(self):
        with TestServer(data_dir=self.data) as mail:
            self.submit(mail)
            self.submit(mail)
        path = os.path.join(self.data, ENVELOPE_LOG)
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        with open(path, "wb") as f:
            f.write(lines[0] + b"{not json\n" + b"\xff\xfe\n" + b'["a list"]\n' + lines[1][:-1])  # last: no newline
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            with TestServer(data_dir=self.data) as mail:
                sent = mail.sent()
                caught = mail.caught()
        self.assertEqual(len(sent), 2)
        self.assertTrue(all(c.auth_user == "app@shop.test" for c in caught))
        self.assertEqual(len(logs.records), 3)
        for number, record in zip((2, 3, 4), logs.output):
            self.assertIn("%s line %d skipped" % (path, number), record)

    def test_the_temporary_folder_is_removed_at_stop(self):
        mail = TestServer().start()
        data = mail.data_dir
        self.assertTrue(os.path.isdir(data))
        mail.stop()
        self.assertFalse(os.path.exists(data))

    def test_a_record_names_each_copy(self):
        with TestServer(data_dir=self.data) as mail:
            self.submit(mail)
        with open(os.path.join(self.data, ENVELOPE_LOG), encoding="utf-8") as f:
            rec = json.loads(f.readline())
        self.assertEqual(list(rec["files"]), ["bob@example.org"])
        self.assertTrue(os.path.exists(os.path.join(self.data, "mail", "example.org", "bob", "new",
                                                    rec["files"]["bob@example.org"])))


if __name__ == "__main__":
    unittest.main()
