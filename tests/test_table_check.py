"""Issue 9 §2: the users/aliases files are checked for changes at most once a
second, on a worker thread, not with two stats on the loop thread per RCPT."""

import smtplib
import threading
import unittest

from store.users import UserDB
from tests.helpers import ServerTestCase, wait_for

MSG = b"Subject: x\r\n\r\nhi\r\n"


class TableCheckTest(ServerTestCase):
    tls = False

    def record_checks(self, db):
        calls = []
        real = db.reload_if_changed

        def counted():
            calls.append(threading.current_thread().name)
            return real()
        db.reload_if_changed = counted
        self.addCleanup(lambda: delattr(db, "reload_if_changed"))
        return calls

    def test_forty_recipients_cost_at_most_two_checks_none_on_the_loop(self):
        backend = self.server.backend
        users, aliases = self.record_checks(backend.users), self.record_checks(backend.aliases)
        rcpts = ["bob+%d@example.test" % i for i in range(40)]
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            self.assertEqual(s.sendmail("carol@elsewhere.test", rcpts, MSG), {})
        self.assertLessEqual(len(users), 2, users)
        self.assertLessEqual(len(aliases), 2, aliases)
        for name in users + aliases:
            self.assertTrue(name.startswith("mailsrv-worker"), name)

    def test_a_user_added_by_another_process_is_picked_up(self):
        other = UserDB(self.tmp)                 # another process's view of DATA/users
        other.add("late@example.test", "pw-late")

        def accepted():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                try:
                    return s.sendmail("carol@elsewhere.test", ["late@example.test"], MSG) == {}
                except smtplib.SMTPRecipientsRefused:
                    return False
        wait_for(accepted, "the new user to be accepted", timeout=10)


if __name__ == "__main__":
    unittest.main()
