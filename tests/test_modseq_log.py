"""The expunge log of store/modseq.py (RFC 7162 §3.2.5.1, §3.2.6): bounded, durable
across a reopen, and honest about what it has forgotten (§3.2.5.2)."""

import os
import shutil
import tempfile
import unittest
from unittest import mock

from store.folder import Folder
from store.modseq import MODSEQ_FILE

MSG = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"


class ExpungeLogTest(unittest.TestCase):
    def setUp(self):
        self.box = tempfile.mkdtemp(prefix="mailsrv-modseq-")
        self.addCleanup(shutil.rmtree, self.box, True)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.box, sub))

    def test_trimmed_log_says_it_is_incomplete_and_keeps_the_newest(self):
        folder = Folder(self.box)
        for _ in range(8):
            folder.append(MSG)
        mark = folder.snapshot().highestmodseq
        marks = []
        with mock.patch("store.modseq.MAX_EXPUNGED", 5), mock.patch("store.modseq.COMPACT_SLACK", 0):
            for uid in range(1, 9):
                marks.append(folder.snapshot().highestmodseq)
                folder.expunge([uid])
        uids, complete = Folder(self.box).expunged_since(mark)          # a reopen reads the file
        self.assertFalse(complete, "older expunges were forgotten: the session reports all missing UIDs")
        self.assertTrue(set(uids) <= set(range(1, 9)))
        self.assertEqual(Folder(self.box).expunged_since(marks[-3]), ([6, 7, 8], True))
        with open(os.path.join(self.box, MODSEQ_FILE)) as f:
            self.assertLessEqual(sum(1 for line in f if line.startswith("-")), 6)     # bounded on disk

    def test_log_survives_a_reopen_and_a_newer_modseq_sees_only_newer_expunges(self):
        folder = Folder(self.box)
        for _ in range(4):
            folder.append(MSG)
        mark = folder.snapshot().highestmodseq
        first = folder.expunge([1]).modseq
        folder.expunge([3])
        again = Folder(self.box)
        self.assertEqual(again.expunged_since(mark), ([1, 3], True))
        self.assertEqual(again.expunged_since(first), ([3], True))
        self.assertEqual(again.expunged_since(again.snapshot().highestmodseq), ([], True))


if __name__ == "__main__":
    unittest.main()
