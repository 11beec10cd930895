"""store/folder.py after its own changes: the next sync does not list the folder
again while the token our change left is young (a STORE 1:* on 10,000 messages
would pay a second listing), and another process's change is still seen: at
once when it moved a directory's stat, after MTIME_SLACK_S when it fell within
the same mtime tick as ours."""

import os
import shutil
import tempfile
import time
import unittest
from unittest import mock

from store import folder as folder_mod
from store.folder import MTIME_SLACK_S, Folder

MSG = b"Subject: hi\r\n\r\nbody\r\n"


def make_box(parent, count):
    box = os.path.join(parent, "box")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub))
    for i in range(count):
        with open(os.path.join(box, "cur", "%d.M%dP1.host,S=22,W=22:2," % (1000 + i, i)), "wb") as f:
            f.write(MSG)
    return box


def later(seconds):
    """store.folder's clock moved on by ``seconds`` (the slack window passed)."""
    real = time.time
    return mock.patch.object(folder_mod.time, "time", lambda: real() + seconds)


class OwnChangeTests(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="folder-own-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.box = make_box(tmp, 5)
        self.folder = Folder(self.box)
        self.folder.sync()
        old = time.time() - MTIME_SLACK_S - 10    # a folder last changed a while ago
        for name in ("new", "cur", "dovecot-uidlist"):
            os.utime(os.path.join(self.box, name), (old, old))
        self.snap = self.folder.sync().snapshot
        self.uids = [m.uid for m in self.snap.messages]

    def scans(self):
        return mock.patch.object(self.folder, "_scan", wraps=self.folder._scan)

    def other_rename(self, uid, letters, same_tick):
        """Another process renames one file in cur/; ``same_tick``: cur/'s mtime put
        back to what it was (a change within one mtime tick of the last one)."""
        cur = os.path.join(self.box, "cur")
        before = os.stat(cur)
        msg = self.folder.snapshot().by_uid(uid)
        os.rename(msg.path, os.path.join(cur, msg.key + ":2," + letters))
        if same_tick:
            os.utime(cur, ns=(before.st_atime_ns, before.st_mtime_ns))

    def test_sync_after_our_store_lists_nothing(self):
        self.folder.set_flags(self.uids, "F", "add")
        with self.scans() as scan:
            snap = self.folder.sync().snapshot
            self.folder.set_flags(self.uids, "F", "remove")
            self.folder.sync()
        self.assertEqual(scan.call_count, 0)
        self.assertTrue(all("F" in m.flags for m in snap.messages))
        self.assertTrue(all("F" not in m.flags for m in self.folder.sync().snapshot.messages))

    def test_after_append_and_expunge_too(self):
        self.folder.append(MSG, "S")
        with self.scans() as scan:
            snap = self.folder.sync().snapshot
        self.assertEqual(scan.call_count, 0)
        self.assertEqual(len(snap.messages), 6)
        self.folder.expunge([self.uids[0]])
        with self.scans() as scan:
            snap = self.folder.sync().snapshot
        self.assertEqual(scan.call_count, 0)
        self.assertEqual(len(snap.messages), 5)

    def test_another_process_rename_after_our_store_is_seen_at_once(self):
        self.folder.set_flags(self.uids, "F", "add")
        before = self.folder.snapshot().by_uid(self.uids[2]).modseq
        time.sleep(0.01)                        # a later mtime (ns resolution)
        self.other_rename(self.uids[2], "FS", same_tick=False)
        msg = self.folder.sync().snapshot.by_uid(self.uids[2])
        self.assertEqual(msg.flags, "FS")
        self.assertGreater(msg.modseq, before)   # RFC 7162: every change a new MODSEQ

    def test_a_rename_in_the_same_tick_is_seen_once_the_slack_passed(self):
        self.folder.set_flags(self.uids, "F", "add")
        before = self.folder.snapshot().by_uid(self.uids[2]).modseq
        self.other_rename(self.uids[2], "FS", same_tick=True)
        if self.folder.token() != self.folder._own:
            self.skipTest("this file system's directory size changed with the rename")
        with later(MTIME_SLACK_S + 1):
            msg = self.folder.sync().snapshot.by_uid(self.uids[2])
            self.assertEqual(msg.flags, "FS")
            self.assertGreater(msg.modseq, before)
            with self.scans() as scan:          # then, as before: an old, unchanged folder is not listed
                self.folder.sync()
            self.assertEqual(scan.call_count, 0)

    def test_a_file_renamed_in_the_same_tick_is_still_read(self):
        self.folder.set_flags(self.uids, "F", "add")
        self.other_rename(self.uids[1], "FS", same_tick=True)
        self.assertEqual(self.folder.read_crlf(self.uids[1]), MSG)
        self.folder.set_flags([self.uids[1]], "R", "add")     # _rename follows it too
        self.assertEqual(self.folder.sync(rescan=True).snapshot.by_uid(self.uids[1]).flags, "FRS")

    def test_a_change_before_ours_is_not_hidden_by_it(self):
        os.rename(os.path.join(self.box, "cur", self.snap.messages[4].key + ":2,"),
                  os.path.join(self.box, "cur", self.snap.messages[4].key + ":2,T"))   # unseen by us
        self.folder.set_flags(self.uids[:2], "F", "add")
        self.assertEqual(self.folder.sync().snapshot.by_uid(self.uids[4]).flags, "T")

    def test_a_delivery_just_before_our_store_is_seen(self):
        with open(os.path.join(self.box, "new", "2000.M1P2.host"), "wb") as f:
            f.write(MSG)
        self.folder.set_flags(self.uids[:2], "S", "add")
        self.assertEqual(len(self.folder.sync().snapshot.messages), 6)


if __name__ == "__main__":
    unittest.main()
