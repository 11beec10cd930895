"""protocols/backend/mailaccess.py: the order of a mailbox's disk steps.

The worker pool is replaced by a loop whose ``run_in_thread`` only records
each job; the test runs them in the order it chooses, so the check is exact.
"""

import shutil
import tempfile
import unittest

from protocols.backend.contracts import MailboxInUse
from protocols.backend.mailaccess import MailAccessService
from store.maildir import MailStore

USER = "bob@example.org"


class StepLoop:
    """run_in_thread records (fn, callback); run_next() runs the oldest job."""

    def __init__(self):
        self.jobs = []

    def run_in_thread(self, fn, callback):
        self.jobs.append((fn, callback))

    def run_next(self):
        fn, callback = self.jobs.pop(0)
        try:
            result = fn()
        except Exception as exc:       # as the real loop hands it over
            result = exc
        callback(result)

    def call_later(self, delay, fn):
        return None

    def call_soon(self, fn):
        fn()


class ReopenAfterSessionEndTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-access-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        store = MailStore(self.dir, "mx.example.org")
        store.create_mailbox(USER)
        self.loop = StepLoop()
        self.access = MailAccessService(self.loop, store)
        self.results = []

    def open(self):
        self.access.open_maildrop(None, USER, self.results.append)

    def test_a_login_right_after_a_session_ended_waits_for_its_unlock(self):
        # A client drops the connection and logs in again at once (RFC 1939 §8:
        # the lock is released when the session ends): the new open must not
        # find the old session's lock, which a worker is still releasing.
        self.open()
        self.loop.run_next()
        first = self.results.pop()
        first.close()
        self.open()
        self.assertEqual(len(self.loop.jobs), 1, "the open waits for the unlock, it does not race it")
        self.loop.run_next()                 # the unlock
        self.loop.run_next()                 # now the open
        second = self.results.pop()
        self.assertNotIsInstance(second, BaseException)
        second.close()
        self.loop.run_next()

    def test_a_session_still_open_keeps_the_mailbox_in_use(self):
        # RFC 1939 §8: a second session while the first holds the lock gets [IN-USE]
        self.open()
        self.loop.run_next()
        first = self.results.pop()
        self.open()
        self.loop.run_next()
        self.assertIsInstance(self.results.pop(), MailboxInUse)
        first.close()
        self.loop.run_next()


if __name__ == "__main__":
    unittest.main()
