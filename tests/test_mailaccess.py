"""protocols/backend/mailaccess.py: the order of a mailbox's disk steps.

The worker pool is replaced by a loop whose ``run_in_thread`` only records
each job; the test runs them in the order it chooses, so the check is exact.
"""

import shutil
import tempfile
import unittest

from protocols.backend.contracts import MailboxInUse
from protocols.backend.mailaccess import MailAccessService
from store.deliver import DeliveryJob, deliver_batch
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


class WorkerJobsPerRetrTest(unittest.TestCase):
    """Issue 9 §2 keeps message files off the loop thread; each worker job is a
    hop to a thread and back, so a RETR costs as few as the disk work allows."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-access-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = MailStore(self.dir, "mx.example.org")
        self.store.create_mailbox(USER)
        self.loop = StepLoop()
        self.access = MailAccessService(self.loop, self.store)

    def deliver(self, *bodies):
        jobs = [DeliveryJob(b, "a@example.net", [USER], "Q%d" % n) for n, b in enumerate(bodies)]
        self.assertTrue(all(r.ok for r in deliver_batch(self.store, jobs)))

    def open_drop(self):
        got = []
        self.access.open_maildrop(None, USER, got.append)
        self.loop.run_next()
        self.addCleanup(self.close_drop, got[0])
        return got[0]

    def close_drop(self, drop):
        drop.close()
        while self.loop.jobs:
            self.loop.run_next()

    def retr(self, drop, i):
        """open_message + read to the end + close, as MessageStream does; the jobs it took."""
        jobs, got = 0, []
        drop.open_message(i, got.append)
        while not got:
            self.loop.run_next()
            jobs += 1
        reader, raw = got.pop(), b""
        while True:
            reader.read(64 * 1024, got.append)
            while not got:
                self.loop.run_next()
                jobs += 1
            chunk = got.pop()
            if not chunk:
                break
            raw += chunk
        reader.close()
        jobs += len(self.loop.jobs)
        while self.loop.jobs:
            self.loop.run_next()
        return raw, jobs

    def test_a_small_retr_costs_one_worker_job(self):
        self.deliver(b"Subject: one\r\n\r\nbody\r\n")
        drop = self.open_drop()
        raw, jobs = self.retr(drop, 0)
        self.assertTrue(raw.endswith(b"\nSubject: one\n\nbody\n"), raw)   # after Return-Path etc.
        self.assertEqual(jobs, 1, "open, the whole read and the close in one job")

    def test_a_large_message_ends_without_a_job_for_the_end_or_the_close(self):
        big = b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n"
        big = big * 2000                                     # 160 KB: three reads of 64 KiB
        self.deliver(big)
        drop = self.open_drop()
        raw, jobs = self.retr(drop, 0)
        self.assertTrue(raw.endswith(b"\n" + big.replace(b"\r\n", b"\n")), raw[:200])
        self.assertEqual(jobs, 3, "open + first 64 KiB, the second, the rest (closing the file)")

    def test_a_sequential_download_reads_the_next_small_messages_in_the_same_job(self):
        self.deliver(*[b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(6)])
        drop = self.open_drop()
        counts = []
        for i in range(6):
            raw, jobs = self.retr(drop, i)
            self.assertTrue(raw.endswith(b"\nSubject: %d\n\nbody %d\n" % (i, i)), raw)
            counts.append(jobs)
        # RETR 1 alone (no sequence yet); RETR 2 reads 3-6 ahead
        self.assertEqual(counts, [1, 1, 0, 0, 0, 0])

    def test_seen_marks_reach_the_store_with_the_next_job_and_before_the_close(self):
        # RFC 3501 §2.3.2: a message RETR'd over POP3 shows as \Seen afterwards
        self.deliver(b"Subject: a\r\n\r\na\r\n", b"Subject: b\r\n\r\nb\r\n")
        drop = self.open_drop()
        self.retr(drop, 1)
        marked = []
        drop.mark_seen(1, marked.append)
        self.assertEqual((marked, self.loop.jobs), ([None], []), "no job of its own")
        self.close_drop(drop)
        base = self.store.maildir_path(USER)
        import os
        names = sorted(os.listdir(os.path.join(base, "cur")))
        self.assertEqual(len(names), 1)
        self.assertTrue(names[0].endswith(":2,S"), names)


if __name__ == "__main__":
    unittest.main()
