"""store/folder_bulk.py and the first sync of a folder nobody indexed: the column-wise
shortcuts give exactly what the one-message-at-a-time rules give (property tests over
random names and random folders, against a reference written the plain way)."""

import gc
import os
import random
import re
import shutil
import tempfile
import unittest
from unittest import mock

from store import dovecot_files as dv
from store import folder_bulk as fb
from store import maildrop
from store.folder import Folder
from store.folder_types import crlf_size, name_size, order_key, sort_keys, split_name
from store.modseq import MODSEQ_FILE

SIZE_W = re.compile(r",W=(\d+)")
# Pieces random keys are glued from: times, usecs of every length, dots, Unicode digits,
# sizes well and badly formed, line breaks (which the shortcuts must hand back).
PIECES = ["1", "12", "0", "1732904532", "M", "M5", "M123456", "M1234567", "M12345678", "P42", ".",
          "..", "Q3", "host", ",S=1", ",W=12", ",W=", ",W=7,X", "x", "\u0663", "M\u0663", "\n", ".M7", ".M"]
KEYWORDS = ["$Forwarded", "Junk", "todo"]


def random_key(rng):
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))


class ShortcutTests(unittest.TestCase):
    def test_sort_keys_is_order_key_order(self):
        rng = random.Random(9)
        for _ in range(5000):
            keys = list(dict.fromkeys(random_key(rng) for _ in range(rng.randint(0, 8))))
            self.assertEqual(sort_keys(keys), sorted(keys, key=order_key), keys)

    def test_name_sizes_are_name_size_or_nothing(self):
        rng = random.Random(10)
        for _ in range(5000):
            keys = [random_key(rng) for _ in range(rng.randint(1, 4))]
            for key in keys:
                m = SIZE_W.search(key)
                self.assertEqual(name_size(key), int(m.group(1)) if m else None, key)
            bulk = fb.name_sizes(keys)
            if bulk is not None:
                self.assertEqual(bulk, [name_size(k) for k in keys], keys)

    def test_uid_and_journal_lines_are_the_formats_of_one_line(self):
        names = ["1.M1P1.h,S=3,W=4", "2.M2P1.h,S=3,W=4:2,FS", "3.x:2,Sa,tail"]
        self.assertEqual(fb.uid_lines(7, names),
                         "".join(dv.format_record(dv.Record(7 + i, n)) for i, n in enumerate(names)))
        items = [(1, (5, "S")), (4, (6, "")), (9, (7, "FSab"))]
        self.assertEqual(fb.journal_lines(items), "".join("%d %d %s\n" % (u, m, f) for u, (m, f) in items))

    def test_scan_dir_splits_each_name_as_split_name(self):
        rng = random.Random(11)
        infos = ["", ":2,", ":2,S", ":2,SR", ":2,RS", ":2,Sa", ":2,S,tail", ":2,S,t,u", ":1,x", ":2", ":2,ab:c"]
        for trial in range(60):
            with tempfile.TemporaryDirectory() as tmp:
                names = {"%d.M%dP1.h%s" % (rng.randint(1, 99), rng.randint(0, 9999), rng.choice(infos))
                         for _ in range(rng.randint(1, 30))}
                if trial % 5 == 0:
                    names.add(".hidden")
                for n in names:
                    open(os.path.join(tmp, n), "wb").close()
                if trial % 7 == 0:
                    os.mkdir(os.path.join(tmp, "subdir"))
                found = {}
                fb.scan_dir(tmp, found)
                want = {}
                for n in sorted(names):
                    if not n.startswith("."):
                        key, letters, tail = split_name(n)
                        want[key] = (os.path.join(tmp, n), letters, tail)
                # a key twice (same key, two infos) keeps one of its files, as the name-by-name scan did
                self.assertEqual(set(found), set(want))
                for key, (path, letters, tail) in found.items():
                    self.assertEqual(split_name(os.path.basename(path))[1:], (letters, tail))
                    self.assertTrue(os.path.exists(path))


class MaildropListingTests(unittest.TestCase):
    def test_pop3_uids_of_a_whole_maildrop_are_pop3_uid_of_each_key(self):
        """RFC 1939 §7: the UIDL of a key never changes; the one-pass form must agree."""
        rng = random.Random(15)
        pieces = ["a", "H", "x" * 69, "x" * 70, " ", "\x7f", "\u00e9", ":", "~", "!", "\udcff", "\n", "\t"]
        for _ in range(5000):
            keys = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(0, 5))]
            self.assertEqual(maildrop._pop3_uids(keys), [maildrop.pop3_uid(k) for k in keys], keys)
        ours = ["1795982523.M%dP28161Q%dR3c8c13d89989ae4c.mx.bench.test,S=4089,W=4159" % (i, i) for i in range(50)]
        self.assertEqual(maildrop._pop3_uids(ours), [maildrop.pop3_uid(k) for k in ours])


@unittest.skipUnless(os.path.isdir("/proc/self/fd"), "names the flushed files through /proc")
class FirstSyncTests(unittest.TestCase):
    """A random folder's first sync against the rules written out plainly: UIDs in
    delivery order (order_key), flags and keywords from the names, sizes from ,W= or
    the file in CRLF, a uidlist and a journal Dovecot's parser and ours read back."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="folder-bulk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def make(self, rng, n):
        box = os.path.join(self.tmp, "box%d" % rng.randint(0, 1 << 30))
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(box, sub))
        with open(os.path.join(box, dv.KEYWORDS), "w") as f:
            f.write("".join("%d %s\n" % (i, w) for i, w in enumerate(KEYWORDS)))
        for i in range(n):
            body = b"Subject: %d\n\n" % i + b"line\n" * rng.randint(0, 5) + (b"crlf\r\n" if rng.random() < 0.3 else b"")
            t, us = rng.randint(1700000000, 1700000050), rng.randint(0, 999999)
            shape = rng.random()
            if shape < 0.6:
                key = "%d.M%dP%dQ%d.host,S=%d,W=%d" % (t, us, rng.randint(1, 99), i, len(body), rng.randint(1, 9999))
            elif shape < 0.8:
                key = "%d.M%dP%d.host,S=%d" % (t, us, i, len(body))          # LF file with S= alone
            elif shape < 0.9:
                key = "%d.%d_%d.host" % (t, rng.randint(1, 99999), i)        # qmail
            else:
                key = "odd%d" % i
            if rng.random() < 0.5:
                name = key
                sub = "new"
            else:
                letters = "".join(rng.sample("DFRSTabc", rng.randint(0, 4)))
                name = key + ":2," + letters + (",x" if rng.random() < 0.1 else "")
                sub = "cur"
            with open(os.path.join(box, sub, name), "wb") as f:
                f.write(body)
        if rng.random() < 0.2:
            os.mkdir(os.path.join(box, "cur", "subdir"))
        return box

    def expected(self, box):
        found = {}
        for sub in ("new", "cur"):
            for name in sorted(os.listdir(os.path.join(box, sub))):
                path = os.path.join(box, sub, name)
                if not name.startswith(".") and not os.path.isdir(path):
                    found[split_name(name)[0]] = path
        out = []
        for uid, key in enumerate(sorted(found, key=order_key), 1):
            path = found[key]
            _k, letters, _tail = split_name(os.path.basename(path))
            keywords = frozenset(KEYWORDS["abc".index(c)] for c in letters if c in "abc")
            size = name_size(key)
            out.append((uid, key, path, "".join(c for c in letters if c.isupper()), keywords,
                        size if size is not None else crlf_size(path), letters))
        return out

    def test_first_sync_matches_the_plain_rules(self):
        rng = random.Random(12)
        for n in (0, 1, 2, 3, 17, 150, 400):
            box = self.make(rng, n)
            want = self.expected(box)
            snap = Folder(box).snapshot()
            got = [(m.uid, m.key, m.path, m.flags, m.keywords, m.size) for m in snap.messages]
            self.assertEqual(got, [w[:6] for w in want])
            self.assertEqual(snap.uidnext, n + 1)
            self.assertEqual({m.modseq for m in snap.messages} or {snap.highestmodseq}, {snap.highestmodseq})
            with open(os.path.join(box, dv.UIDLIST)) as f:
                header, records, _parsed = dv.parse_uidlist(f.read())
            self.assertEqual((header.uidvalidity, header.nextuid), (snap.uidvalidity, n + 1))
            self.assertEqual([(r.uid, r.name) for r in records], [(w[0], os.path.basename(w[2])) for w in want])
            self.assertEqual([r.field("W") for r in records],
                             [None if name_size(w[1]) is not None else str(w[5]) for w in want])
            with open(os.path.join(box, MODSEQ_FILE)) as f:
                lines = [l.split(" ") for l in f.read().splitlines() if l[:1].isdigit() and not l.startswith("1 V")]
            self.assertEqual([(int(u), int(m), l) for u, m, l in lines],
                             [(w[0], snap.highestmodseq, w[6]) for w in want])
            # another process reading those files (no scan of its own first) sees the same
            again = Folder(box).snapshot()
            self.assertEqual(again.messages, snap.messages)
            self.assertEqual((again.uidvalidity, again.highestmodseq), (snap.uidvalidity, snap.highestmodseq))

    def test_a_first_sync_writes_the_uidlist_once_and_flushes_only_it(self):
        """Dovecot writes a new uidlist whole, once; so do we now (it was a header written,
        fsync'd and renamed, then the records appended and fdatasync'd, and the journal
        written and fsync'd the same way: five flushes).  The journal is not flushed while
        the boot id is known (store/modseq.py), the uidlist and its directory are."""
        box = self.make(random.Random(14), 50)
        flushed, replaced = [], []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            flushed.append(os.readlink("/proc/self/fd/%d" % fd))
            real_fsync(fd)

        def replace(src, dst, *a, **k):
            replaced.append(os.path.basename(dst))
            real_replace(src, dst, *a, **k)

        with mock.patch("store.modseq.BOOT_ID", "test-boot"), mock.patch("os.fsync", fsync), \
                mock.patch("store.folder_uidlist._fdatasync", fsync), mock.patch("os.replace", replace):
            Folder(box).snapshot()
        self.assertEqual(sorted(replaced), [dv.UIDLIST, MODSEQ_FILE])
        self.assertEqual(sorted(os.path.basename(p) for p in flushed),
                         sorted([os.path.basename(box), dv.UIDLIST + ".tmp.%d" % os.getpid()]))

    def test_a_first_sync_runs_no_garbage_collection(self):
        """The first snapshot's ~7 container objects a message are acyclic: the collector
        waits until it is built (fb.gc_paused), which then hands them to the oldest
        generation, where it ran every 700 objects (about 25 times for these 3,000
        messages) and once more after them."""
        box = self.make(random.Random(18), 3000)
        runs = []

        def count(phase, info):
            if phase == "start":
                runs.append(info["generation"])
        self.assertTrue(gc.isenabled())
        gc.collect()
        gc.callbacks.append(count)
        try:
            snap = Folder(box).snapshot()
            young = gc.get_count()[0]        # what the next young collection would look at
        finally:
            gc.callbacks.remove(count)
        self.assertEqual(len(snap.messages), 3000)
        self.assertEqual(runs, [])
        self.assertLess(young, gc.get_threshold()[0])
        self.assertTrue(gc.isenabled())

    def test_a_small_first_sync_leaves_its_few_objects_to_the_young_generation(self):
        box = self.make(random.Random(19), 5)
        gc.collect()
        Folder(box).snapshot()
        self.assertGreater(gc.get_count()[0], 0)        # not promoted: a young collection takes them

    def test_the_collector_pause_puts_back_the_state_it_found(self):
        with self.assertRaises(KeyError):
            with fb.gc_paused():
                self.assertFalse(gc.isenabled())
                raise KeyError("a build that fails")
        self.assertTrue(gc.isenabled())
        with fb.gc_paused(False):
            self.assertTrue(gc.isenabled())
        gc.disable()
        try:
            with fb.gc_paused():
                self.assertFalse(gc.isenabled())
            self.assertFalse(gc.isenabled())         # off before: stays off
        finally:
            gc.enable()

    def test_a_first_sync_that_fails_midway_leaves_no_uidlist_in_memory(self):
        """The new uidlist is written at the end of the change; if the change fails first,
        the next one reads the disk (another process may have written one meanwhile)."""
        box = self.make(random.Random(16), 5)
        ours = Folder(box)
        with mock.patch("store.folder.sort_keys", side_effect=MemoryError):
            with self.assertRaises(MemoryError):
                ours.sync()
        self.assertFalse(os.path.exists(os.path.join(box, dv.UIDLIST)))
        other = Folder(box)                              # another process, first
        other.initialize(12345)
        theirs = other.snapshot()
        self.assertEqual(ours.snapshot().uidvalidity, 12345)
        self.assertEqual(ours.snapshot().messages, theirs.messages)

    def test_messages_into_a_folder_known_empty_get_journal_lines_another_process_reads(self):
        rng = random.Random(17)
        box = self.make(rng, 0)
        folder = Folder(box)
        empty = folder.snapshot()
        more = self.make(rng, 30)
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(more, sub)):
                if not os.path.isdir(os.path.join(more, sub, name)):
                    os.rename(os.path.join(more, sub, name), os.path.join(box, sub, name))
        snap = folder.sync().snapshot
        self.assertGreater(snap.highestmodseq, empty.highestmodseq)
        self.assertEqual({m.modseq for m in snap.messages}, {snap.highestmodseq})
        again = Folder(box).snapshot()
        self.assertEqual((again.messages, again.highestmodseq), (snap.messages, snap.highestmodseq))

    def test_later_messages_continue_the_uids_the_plain_way(self):
        rng = random.Random(13)
        box = self.make(rng, 60)
        folder = Folder(box)
        first = folder.snapshot()
        more = self.make(rng, 40)
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(more, sub)):
                if not os.path.isdir(os.path.join(more, sub, name)):
                    os.rename(os.path.join(more, sub, name), os.path.join(box, sub, "x" + name))
        later = folder.sync()
        self.assertEqual(later.snapshot.messages[:len(first.messages)], first.messages)
        added = later.snapshot.messages[len(first.messages):]
        self.assertEqual([m.uid for m in added], list(range(first.uidnext, first.uidnext + len(added))))
        self.assertEqual([m.key for m in added], sorted((m.key for m in added), key=order_key))
        self.assertEqual(later.new, tuple(m.uid for m in added))
        self.assertEqual(Folder(box).snapshot().messages, later.snapshot.messages)


if __name__ == "__main__":
    unittest.main()
