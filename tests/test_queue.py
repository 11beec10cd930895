"""store/queue.py: durability, crash recovery, retry schedule and expiry (RFC 5321 §4.5.4.1)."""

import errno
import json
import os
import tempfile
import unittest
from unittest import mock

from store.queue import (DEFAULT_MAX_AGE, DELIVERED, DEFERRED, FAILED, PENDING,
                         MemoryQueue, Queue, has_8bit)

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
T0 = 1_700_000_000.0


class QueueContract:
    """Behaviour both backends share; subclasses provide make()."""

    def make(self, **kw):
        raise NotImplementedError

    def test_enqueue_then_get_list_due_and_read(self):
        q = self.make()
        e = q.enqueue("a@example.org", ["x@example.com", "y@example.net"], MSG, "Q1", T0)
        self.assertEqual(e.open_recipients(), ["x@example.com", "y@example.net"])
        self.assertEqual([r.state for r in e.recipients], [PENDING, PENDING])
        self.assertEqual(q.get("Q1").sender, "a@example.org")
        self.assertEqual([x.id for x in q.list()], ["Q1"])
        self.assertEqual([x.id for x in q.due(T0)], ["Q1"])
        self.assertEqual(q.read_message("Q1"), MSG)
        self.assertIsNone(q.get("nope"))

    def test_duplicate_recipients_collapse_and_empty_list_refused(self):
        q = self.make()
        e = q.enqueue("", ["x@example.com", "x@example.com"], MSG, "Q1", T0)
        self.assertEqual(e.open_recipients(), ["x@example.com"])
        with self.assertRaises(ValueError):
            q.enqueue("", [], MSG, "Q2", T0)

    def test_bad_queue_id_refused(self):
        q = self.make()
        with self.assertRaises(ValueError):
            q.enqueue("", ["x@example.com"], MSG, "../etc", T0)

    def test_body_8bit_detected(self):
        q = self.make()
        self.assertFalse(q.enqueue("", ["x@e.com"], MSG, "A", T0).body_8bit)
        self.assertTrue(q.enqueue("", ["x@e.com"], "Subject: é\r\n\r\n".encode(), "B", T0).body_8bit)

    def test_record_results_sets_states_and_backoff(self):
        q = self.make(schedule=(300, 600, 1800))
        q.enqueue("a@example.org", ["x@e.com", "y@e.com", "z@e.com"], MSG, "Q1", T0)
        e = q.record_results("Q1", {"x@e.com": (DELIVERED, "250 ok"),
                                    "y@e.com": (DEFERRED, "451 4.3.0 try later"),
                                    "z@e.com": (FAILED, "550 5.1.1 no such user")}, T0)
        self.assertEqual([r.state for r in e.recipients], [DELIVERED, DEFERRED, FAILED])
        self.assertEqual(e.attempts, 1)
        self.assertEqual(e.next_try, T0 + 300)
        self.assertEqual(e.last_error, "550 5.1.1 no such user")
        self.assertEqual(q.due(T0 + 299), [])
        self.assertEqual([x.id for x in q.due(T0 + 300)], ["Q1"])
        # Later attempts: 600, then the last step repeats.
        self.assertEqual(q.record_results("Q1", {"y@e.com": (DEFERRED, "451")}, T0 + 300).next_try, T0 + 900)
        self.assertEqual(q.record_results("Q1", {"y@e.com": (DEFERRED, "451")}, T0 + 900).next_try, T0 + 2700)
        self.assertEqual(q.record_results("Q1", {"y@e.com": (DEFERRED, "451")}, T0 + 2700).next_try, T0 + 4500)

    def test_final_states_are_not_overwritten(self):
        q = self.make()
        q.enqueue("", ["x@e.com"], MSG, "Q1", T0)
        q.record_results("Q1", {"x@e.com": (DELIVERED, "250")}, T0)
        e = q.record_results("Q1", {"x@e.com": (FAILED, "550")}, T0 + 1)
        self.assertEqual(e.recipients[0].state, DELIVERED)
        self.assertEqual(q.due(T0 + 10 ** 6), [])   # nothing open: never due

    def test_expired_entry_turns_deferred_into_failed(self):
        q = self.make()
        q.enqueue("a@example.org", ["x@e.com", "y@e.com"], MSG, "Q1", T0)
        e = q.record_results("Q1", {"x@e.com": (DEFERRED, "451 4.4.1 no answer")}, T0 + DEFAULT_MAX_AGE)
        self.assertEqual([r.state for r in e.recipients], [FAILED, FAILED])
        self.assertIn("451 4.4.1 no answer", e.recipients[0].last_error)
        self.assertIn("4.4.7", e.recipients[0].last_error)
        self.assertEqual(e.open_recipients(), [])

    def test_bad_status_refused(self):
        q = self.make()
        q.enqueue("", ["x@e.com"], MSG, "Q1", T0)
        with self.assertRaises(ValueError):
            q.record_results("Q1", {"x@e.com": ("maybe", "")}, T0)

    def test_remove(self):
        q = self.make()
        q.enqueue("", ["x@e.com"], MSG, "Q1", T0)
        q.remove("Q1")
        self.assertIsNone(q.get("Q1"))
        self.assertEqual(q.list(), [])
        q.remove("Q1")   # idempotent

    def test_returned_entries_are_copies(self):
        q = self.make()
        e = q.enqueue("", ["x@e.com"], MSG, "Q1", T0)
        e.recipients[0].state = FAILED
        self.assertEqual(q.get("Q1").recipients[0].state, PENDING)


class MemoryQueueTest(QueueContract, unittest.TestCase):
    def make(self, **kw):
        return MemoryQueue(**kw)


class DiskQueueTest(QueueContract, unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.data = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def make(self, **kw):
        return Queue(self.data, **kw)

    def qdir(self):
        return os.path.join(self.data, "queue")

    def test_new_queue_object_sees_committed_entry(self):
        Queue(self.data).enqueue("a@example.org", ["x@e.com"], MSG, "Q1", T0, smtputf8=True)
        q2 = Queue(self.data)
        e = q2.get("Q1")
        self.assertEqual((e.sender, e.open_recipients(), e.smtputf8, e.size),
                         ("a@example.org", ["x@e.com"], True, len(MSG)))
        self.assertEqual(q2.read_message("Q1"), MSG)
        self.assertEqual(sorted(os.listdir(self.qdir())), ["Q1.env", "Q1.msg"])

    def test_envelope_is_json_with_per_recipient_state(self):
        q = Queue(self.data)
        q.enqueue("a@example.org", ["x@e.com"], MSG, "Q1", T0)
        q.record_results("Q1", {"x@e.com": (DEFERRED, "451 later")}, T0)
        with open(os.path.join(self.qdir(), "Q1.env"), "rb") as f:
            obj = json.loads(f.read())
        self.assertEqual(obj["recipients"], [{"address": "x@e.com", "state": "deferred", "last_error": "451 later"}])
        self.assertEqual((obj["attempts"], obj["first_seen"], obj["next_try"]), (1, T0, T0 + 300))
        self.assertEqual(Queue(self.data).get("Q1").recipients[0].state, DEFERRED)

    def test_message_without_envelope_and_tmp_files_are_cleaned_at_start(self):
        Queue(self.data).enqueue("", ["x@e.com"], MSG, "KEEP", T0)
        for name in ("LOST.msg", "tmp-123-X.env"):
            with open(os.path.join(self.qdir(), name), "wb") as f:
                f.write(b"junk")
        q = Queue(self.data)
        self.assertEqual(sorted(q.cleaned), ["LOST.msg", "tmp-123-X.env"])
        self.assertEqual(sorted(os.listdir(self.qdir())), ["KEEP.env", "KEEP.msg"])
        self.assertEqual([e.id for e in q.list()], ["KEEP"])

    def test_remove_deletes_both_files(self):
        q = Queue(self.data)
        q.enqueue("", ["x@e.com"], MSG, "Q1", T0)
        q.remove("Q1")
        self.assertEqual(os.listdir(self.qdir()), [])
        self.assertIsNone(Queue(self.data).get("Q1"))

    def enospc_after(self, writes):
        """os.write succeeds ``writes`` times, then fails as on a full disk."""
        real = os.write
        calls = []

        def write(fd, data):
            calls.append(len(data))
            if len(calls) > writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data)
        return mock.patch("os.write", write)

    def test_failed_envelope_write_removes_the_message_at_once(self):
        # issue 7 item 6: the .msg was written, the .env was not (disk full)
        q = Queue(self.data)
        with self.enospc_after(1), self.assertRaises(OSError) as cm:
            q.enqueue("a@example.org", ["x@e.com"], MSG, "Q1", T0)
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        self.assertEqual(os.listdir(self.qdir()), [])       # not only at the next start
        self.assertIsNone(q.get("Q1"))
        q.enqueue("a@example.org", ["x@e.com"], MSG, "Q2", T0)   # the disk has room again
        self.assertEqual(sorted(os.listdir(self.qdir())), ["Q2.env", "Q2.msg"])

    def test_failed_incoming_write_leaves_nothing(self):
        q = Queue(self.data)
        for writes in (0, 1):           # the message's own append, or the envelope
            f = q.open_incoming("Q%d" % writes)
            f.write(MSG * 2000)         # over the append buffer: written now
            with self.enospc_after(writes), self.assertRaises(OSError):
                f.write(MSG)
                q.enqueue_file(f, "a@example.org", ["x@e.com"], "Q%d" % writes, T0, False, False)
            self.assertEqual(os.listdir(self.qdir()), [], writes)

    def test_incoming_file_is_committed_and_read_in_chunks(self):
        q = Queue(self.data)
        f = q.open_incoming("Q1")
        big = MSG * 5000
        for i in range(0, len(big), 1000):
            f.write(big[i:i + 1000])
        e = q.enqueue_file(f, "a@example.org", ["x@e.com"], "Q1", T0, smtputf8=False, body_8bit=True)
        self.assertEqual((e.size, e.body_8bit), (len(big), True))
        self.assertEqual(sorted(os.listdir(self.qdir())), ["Q1.env", "Q1.msg"])
        src = Queue(self.data).message_source("Q1")
        pieces = list(src.chunks())
        self.assertEqual((b"".join(pieces), len(src)), (big, len(big)))
        self.assertLessEqual(max(map(len, pieces)), 64 * 1024)
        self.assertEqual(q.read_head("Q1", 10), big[:10])

    def test_files_are_private(self):
        Queue(self.data).enqueue("", ["x@e.com"], MSG, "Q1", T0)
        for name in ("Q1.env", "Q1.msg"):
            self.assertEqual(os.stat(os.path.join(self.qdir(), name)).st_mode & 0o077, 0)


class HelpersTest(unittest.TestCase):
    def test_has_8bit(self):
        self.assertFalse(has_8bit(b"plain ascii\r\n"))
        self.assertTrue(has_8bit(b"caf\xc3\xa9"))


if __name__ == "__main__":
    unittest.main()
