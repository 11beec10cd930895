"""store/uidindex.py: UIDs per Maildir folder (RFC 3501 §2.3.1.1), flags, keywords."""

import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from store import uidindex
from store.uidindex import (UIDLIST, CorruptIndex, UidIndex, crlf_size, format_uidlist,
                            parse_uidlist, split_name)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b"Subject: hi\r\n\r\nhello\r\n"


def make_maildir(parent: str, name: str = "box") -> str:
    path = os.path.join(parent, name)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub))
    return path


def our_name(sec: int, usec: int, q: int, size: int = len(BODY)) -> str:
    """A name in the form store/maildir.py delivers (maildir-spec unique name + ,S=)."""
    return "%d.M%dP4242Q%dR%016x.mx.example.test,S=%d" % (sec, usec, q, q, size)


def put(folder: str, name: str, data: bytes = BODY, sub: str = "new") -> str:
    path = os.path.join(folder, sub, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def age(folder: str, seconds: float = 60) -> None:
    """Make new/, cur/ and the uidlist look untouched for a while (for the cache)."""
    then = time.time() - seconds
    for name in ("new", "cur", UIDLIST):
        os.utime(os.path.join(folder, name), (then, then))


class UidIndexTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="uidindex-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.box = make_maildir(self.tmp)

    def keys_to_uids(self, snap):
        return {e.key: e.uid for e in snap.entries}


class AssignmentTests(UidIndexTestCase):
    def test_first_sync_numbers_in_delivery_order(self):
        put(self.box, our_name(1000, 40, 3))
        put(self.box, our_name(1000, 5, 2))
        put(self.box, our_name(999, 999999, 1))
        put(self.box, "oddname")                       # no time prefix: last
        snap = UidIndex(self.box).sync()
        self.assertEqual([e.uid for e in snap.entries], [1, 2, 3, 4])
        self.assertEqual([e.key for e in snap.entries],
                         [our_name(999, 999999, 1), our_name(1000, 5, 2), our_name(1000, 40, 3), "oddname"])
        self.assertEqual(snap.uidnext, 5)

    def test_uids_never_reused_after_delete_and_restart(self):
        for q in range(3):
            put(self.box, our_name(1000, q, q))
        first = UidIndex(self.box).sync()
        last = first.entries[-1]
        os.unlink(last.path)                           # removed by an outside program
        after = UidIndex(self.box).sync()              # a new object = a restart
        self.assertEqual([e.uid for e in after.entries], [1, 2])
        self.assertEqual(after.uidnext, 4)             # RFC 3501 §2.3.1.1: UIDNEXT never goes back
        put(self.box, our_name(2000, 0, 9))
        again = UidIndex(self.box).sync()
        self.assertEqual([e.uid for e in again.entries], [1, 2, 4])
        self.assertEqual(again.uidnext, 5)

    def test_uidvalidity_stable_across_restarts(self):
        put(self.box, our_name(1000, 0, 1))
        v = UidIndex(self.box).sync().uidvalidity
        uidindex._cache.clear()
        put(self.box, our_name(1001, 0, 2))
        snap = UidIndex(self.box).sync()
        self.assertEqual(snap.uidvalidity, v)
        self.assertEqual(self.keys_to_uids(snap), {our_name(1000, 0, 1): 1, our_name(1001, 0, 2): 2})

    def test_outside_adds_and_removes_are_picked_up(self):
        index = UidIndex(self.box)
        self.assertEqual(index.sync().entries, ())
        a = put(self.box, our_name(1000, 0, 1))
        put(self.box, "1001.mutt_42.host:2,S", b"x\n", sub="cur")
        snap = index.sync()
        self.assertEqual([(e.uid, e.key, e.flags) for e in snap.entries],
                         [(1, our_name(1000, 0, 1), ""), (2, "1001.mutt_42.host", "S")])
        os.unlink(a)
        self.assertEqual([e.uid for e in index.sync().entries], [2])

    def test_uidlist_format_is_dovecot_like(self):
        put(self.box, our_name(1000, 0, 1))
        snap = UidIndex(self.box).sync()
        with open(os.path.join(self.box, UIDLIST)) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, ["3 V%d N2" % snap.uidvalidity, "1 :" + our_name(1000, 0, 1)])

    def test_hidden_files_directories_and_line_breaks_are_not_messages(self):
        put(self.box, ".hidden")
        put(self.box, "12.bad\nname")
        os.mkdir(os.path.join(self.box, "cur", "12.dir"))
        put(self.box, our_name(12, 0, 1))
        self.assertEqual([e.key for e in UidIndex(self.box).sync().entries], [our_name(12, 0, 1)])

    def test_same_key_in_new_and_cur_is_one_message(self):
        put(self.box, "5.x.host")
        put(self.box, "5.x.host:2,S", sub="cur")
        snap = UidIndex(self.box).sync()
        self.assertEqual([(e.key, e.flags) for e in snap.entries], [("5.x.host", "S")])

    def test_properties_sync_on_first_use(self):
        index = UidIndex(self.box)
        self.assertGreater(index.uidvalidity, 0)
        self.assertEqual(index.uidnext, 1)

    def test_missing_folder_raises(self):
        with self.assertRaises(FileNotFoundError):
            UidIndex(os.path.join(self.tmp, "nope")).sync()


class ValidityTests(UidIndexTestCase):
    """RFC 3501 §2.3.1.1: lost UIDs must show as a greater UIDVALIDITY."""

    def corrupt_and_resync(self, text: bytes):
        put(self.box, our_name(1000, 0, 1))
        put(self.box, our_name(1001, 0, 2))
        old = UidIndex(self.box).sync()
        with open(os.path.join(self.box, UIDLIST), "wb") as f:
            f.write(text)
        with self.assertLogs("mailsrv.store.uidindex", "WARNING"):
            new = UidIndex(self.box).sync()
        self.assertGreater(new.uidvalidity, old.uidvalidity)
        self.assertEqual([e.uid for e in new.entries], [1, 2])
        return old, new

    def test_garbage_index_gets_new_uidvalidity(self):
        self.corrupt_and_resync(b"\x00garbage\n")

    def test_empty_index_gets_new_uidvalidity(self):
        self.corrupt_and_resync(b"")

    def test_descending_uids_are_corrupt(self):
        self.corrupt_and_resync(b"3 V1 N9\n5 :a\n4 :b\n")

    def test_deleted_index_gets_new_uidvalidity(self):
        put(self.box, our_name(1000, 0, 1))
        old = UidIndex(self.box).sync()
        os.unlink(os.path.join(self.box, UIDLIST))
        self.assertGreater(UidIndex(self.box).sync().uidvalidity, old.uidvalidity)

    def test_exhausted_uids_renumber_under_new_uidvalidity(self):
        put(self.box, "1.a.host")
        with open(os.path.join(self.box, UIDLIST), "wb") as f:
            f.write(b"3 V77 N4294967295\n4294967294 :1.a.host\n")
        put(self.box, "2.b.host")
        put(self.box, "3.c.host")
        with self.assertLogs("mailsrv.store.uidindex", "WARNING"):
            snap = UidIndex(self.box).sync()
        self.assertGreater(snap.uidvalidity, 77)
        self.assertEqual([(e.uid, e.key) for e in snap.entries],
                         [(1, "1.a.host"), (2, "2.b.host"), (3, "3.c.host")])


class ParseTests(unittest.TestCase):
    def test_round_trip(self):
        rows = [(1, "1.a.host,S=5", None), (7, "2.b host", 12)]
        text = format_uidlist(99, 8, rows).decode()
        self.assertEqual(parse_uidlist(text), (99, 8, rows))

    def test_rejects(self):
        for text in ("", "2 V1 N2\n", "3 V0 N2\n", "3 V1 N2\n2 :a\n", "3 V1 N5\n1 :a\n2 :a\n",
                     "3 V1 N5\n1 a\n", "3 V1 N5\nx :a\n", "3 N5\n"):
            with self.subTest(text=text), self.assertRaises(CorruptIndex):
                parse_uidlist(text)

    def test_split_name(self):
        self.assertEqual(split_name("k.x:2,SRF"), ("k.x", "FRS"))
        self.assertEqual(split_name("k.x:1,foo"), ("k.x", ""))
        self.assertEqual(split_name("k.x"), ("k.x", ""))


class SizeTests(UidIndexTestCase):
    def test_size_from_name_without_reading(self):
        put(self.box, "1.a.host,S=999", b"12345")          # S= trusted: the file is never read
        put(self.box, "2.b.host,S=5,W=7", b"1\n2\n3")       # Dovecot's W= (CRLF size) preferred
        sizes = [e.size for e in UidIndex(self.box).sync().entries]
        self.assertEqual(sizes, [999, 7])

    def test_lf_only_file_counts_crlf_octets_once(self):
        data = b"Subject: x\n\nline1\r\nline2\n"
        path = put(self.box, "3.mutt.host", data)
        snap = UidIndex(self.box).sync()
        expected = len(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        self.assertEqual(snap.entries[0].size, expected)
        with open(os.path.join(self.box, UIDLIST)) as f:
            self.assertIn("1 W%d :3.mutt.host" % expected, f.read())
        with open(path, "wb") as f:                         # cached: not measured again
            f.write(b"x")
        self.assertEqual(UidIndex(self.box).sync().entries[0].size, expected)

    def test_crlf_size_across_chunk_boundaries(self):
        data = b"a\r\nb\nc\r\r\n\n"
        path = put(self.box, "x", data)
        for chunk in (1, 2, 3, 65536):
            self.assertEqual(crlf_size(path, chunk), len(data) + 2)


class FlagTests(UidIndexTestCase):
    def test_set_flags_moves_to_cur_and_keeps_uid(self):
        key = our_name(1000, 0, 1)
        put(self.box, key)
        index = UidIndex(self.box)
        uid = index.sync().entries[0].uid
        path = index.set_flags(key, "SF")
        self.assertEqual(path, os.path.join(self.box, "cur", key + ":2,FS"))
        self.assertEqual(os.listdir(os.path.join(self.box, "new")), [])
        entry = UidIndex(self.box).lookup(key)
        self.assertEqual((entry.uid, entry.flags, entry.path), (uid, "FS", path))

    def test_add_and_remove_flags_keep_the_others(self):
        put(self.box, "7.k.host:2,F", sub="cur")
        index = UidIndex(self.box)
        index.add_flags("7.k.host", "S")
        self.assertEqual(index.lookup("7.k.host").flags, "FS")
        index.remove_flags("7.k.host", "F")
        self.assertEqual(index.lookup("7.k.host").flags, "S")
        self.assertEqual(os.listdir(os.path.join(self.box, "cur")), ["7.k.host:2,S"])

    def test_set_flags_follows_outside_rename(self):
        put(self.box, "8.k.host")
        index = UidIndex(self.box)
        index.sync()
        os.rename(os.path.join(self.box, "new", "8.k.host"), os.path.join(self.box, "cur", "8.k.host:2,R"))
        index.add_flags("8.k.host", "S")
        self.assertEqual(os.listdir(os.path.join(self.box, "cur")), ["8.k.host:2,RS"])

    def test_bad_flags_and_unknown_keys(self):
        put(self.box, "9.k.host")
        index = UidIndex(self.box)
        with self.assertRaises(ValueError):
            index.set_flags("9.k.host", "S:")
        with self.assertRaises(KeyError):
            index.set_flags("nope", "S")


class KeywordTests(UidIndexTestCase):
    def test_round_trip_and_persistence(self):
        put(self.box, "1.k.host")
        index = UidIndex(self.box)
        self.assertEqual(index.get_keywords("1.k.host"), set())
        index.set_keywords("1.k.host", {"$Forwarded", "work"})
        self.assertEqual(UidIndex(self.box).get_keywords("1.k.host"), {"$Forwarded", "work"})
        self.assertEqual(UidIndex(self.box).all_keywords(), {"$Forwarded", "work"})
        index.set_keywords("1.k.host", [])
        self.assertEqual(UidIndex(self.box).get_keywords("1.k.host"), set())

    def test_invalid_keywords_refused(self):
        index = UidIndex(self.box)
        for bad in ("", "two words", "\\Seen", "par(en", "quo\"te", "caf\u00e9"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                index.set_keywords("1.k.host", [bad])

    def test_keywords_of_vanished_messages_are_dropped(self):
        path = put(self.box, "1.k.host")
        index = UidIndex(self.box)
        index.sync()
        index.set_keywords("1.k.host", ["work"])
        os.unlink(path)
        index.sync()
        with open(os.path.join(self.box, "mailsrv-keywords")) as f:
            self.assertEqual(json.load(f)["keywords"], {})


class RemoveTests(UidIndexTestCase):
    def test_remove_unlinks_and_drops_entries(self):
        for q in range(3):
            put(self.box, our_name(1000, q, q))
        index = UidIndex(self.box)
        keys = [e.key for e in index.sync().entries]
        self.assertEqual(index.remove([keys[0], keys[2], "gone-already"]), [])
        self.assertEqual(sorted(os.listdir(os.path.join(self.box, "new"))), [keys[1]])
        with open(os.path.join(self.box, UIDLIST)) as f:
            self.assertEqual(f.read().splitlines()[1:], ["2 :" + keys[1]])
        snap = UidIndex(self.box).sync()
        self.assertEqual(([e.uid for e in snap.entries], snap.uidnext), ([2], 4))

    def test_remove_reports_files_it_could_not_unlink(self):
        put(self.box, "1.a.host")
        put(self.box, "2.b.host")
        index = UidIndex(self.box)
        index.sync()
        real_unlink = os.unlink

        def unlink(path, *a, **kw):
            if path.endswith("1.a.host"):
                raise PermissionError(13, "denied")
            return real_unlink(path, *a, **kw)
        with mock.patch("store.uidindex.os.unlink", unlink), \
                self.assertLogs("mailsrv.store.uidindex", "WARNING"):
            self.assertEqual(index.remove(["1.a.host", "2.b.host"]), ["1.a.host"])
        self.assertEqual([e.key for e in index.sync().entries], ["1.a.host"])


class CacheTests(UidIndexTestCase):
    def test_unchanged_folder_reuses_the_snapshot(self):
        put(self.box, our_name(1000, 0, 1))
        UidIndex(self.box).sync()
        age(self.box)
        first = UidIndex(self.box).sync()
        self.assertIs(UidIndex(self.box).sync(), first)
        put(self.box, our_name(1001, 0, 2))
        age(self.box, 30)                                  # a change shows as another mtime
        self.assertEqual(len(UidIndex(self.box).sync().entries), 2)

    def test_recent_directory_is_rescanned_even_with_equal_mtime(self):
        put(self.box, our_name(1000, 0, 1))
        UidIndex(self.box).sync()
        before = os.stat(os.path.join(self.box, "new")).st_mtime_ns
        put(self.box, our_name(1000, 1, 2))               # same mtime tick on a coarse file system
        os.utime(os.path.join(self.box, "new"), ns=(before, before))
        self.assertEqual(len(UidIndex(self.box).sync().entries), 2)


class ScaleTests(UidIndexTestCase):
    def test_ten_thousand_messages(self):
        new = os.path.join(self.box, "new")
        names = [our_name(1_700_000_000 + i // 100, (i % 100) * 1000, i) for i in range(10000)]
        for name in names:
            os.close(os.open(os.path.join(new, name), os.O_WRONLY | os.O_CREAT, 0o600))
        snap = UidIndex(self.box).sync()
        self.assertEqual([e.key for e in snap.entries], names)
        self.assertEqual([e.uid for e in snap.entries], list(range(1, 10001)))
        self.assertTrue(all(e.size == len(BODY) for e in snap.entries))
        uidindex._cache.clear()
        again = UidIndex(self.box).sync()
        self.assertEqual(again.entries, snap.entries)
        self.assertEqual(again.by_uid(5000).key, names[4999])


WORKER = r"""
import json, os, sys
from store.uidindex import UidIndex
box, wid, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {}
for n in range(count):
    name = "%d.M%dP%sQ%d.host" % (1000 + n, n, wid, n)
    tmp = os.path.join(box, "tmp", name)
    open(tmp, "wb").close()
    os.rename(tmp, os.path.join(box, "new", name))
    for e in UidIndex(box).sync().entries:
        if seen.setdefault(e.key, e.uid) != e.uid:
            sys.exit("uid of %s changed" % e.key)
print(json.dumps(seen))
"""


class InteropTests(UidIndexTestCase):
    """Outside programs: the stdlib mailbox.Maildir stands in for mutt."""

    def test_stdlib_maildir_adds_and_flags_are_seen(self):
        md = mailbox.Maildir(self.box, factory=None, create=False)
        k1 = md.add(b"Subject: one\n\nbody\n")
        msg = mailbox.MaildirMessage(b"Subject: two\r\n\r\nbody\r\n")
        msg.set_subdir("cur")
        msg.set_flags("FS")
        k2 = md.add(msg)
        snap = UidIndex(self.box).sync()
        self.assertEqual({e.key: e.flags for e in snap.entries}, {k1: "", k2: "FS"})
        self.assertEqual(snap.by_key(k1).size, len(b"Subject: one\r\n\r\nbody\r\n"))

    def test_our_flags_are_seen_by_stdlib_maildir(self):
        md = mailbox.Maildir(self.box, factory=None, create=False)
        key = md.add(b"Subject: one\n\nbody\n")
        UidIndex(self.box).set_flags(key, "RS")
        md = mailbox.Maildir(self.box, factory=None, create=False)
        self.assertEqual(md.get_message(key).get_flags(), "RS")
        self.assertEqual(md.get_message(key).get_subdir(), "cur")


class ConcurrencyTests(UidIndexTestCase):
    def test_threads_syncing_at_once_never_share_a_uid(self):
        seen, errors = [], []

        def work(wid):
            try:
                for n in range(30):
                    put(self.box, "%d.M%dP1Q%d_%d.host" % (2000 + n, n, wid, n))
                    seen.append(self.keys_to_uids(UidIndex(self.box).sync()))
            except Exception as e:                             # pragma: no cover
                errors.append(e)
        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        final = self.keys_to_uids(UidIndex(self.box).sync())
        self.assertEqual(sorted(final.values()), list(range(1, 121)))
        for view in seen:
            for key, uid in view.items():
                self.assertEqual(final[key], uid)

    def test_processes_syncing_at_once_never_share_a_uid(self):
        env = dict(os.environ, PYTHONPATH=ROOT)
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, self.box, str(w), "40"],
                                  stdout=subprocess.PIPE, env=env, cwd=ROOT) for w in range(4)]
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0)
            results.append(json.loads(out))
        final = self.keys_to_uids(UidIndex(self.box).sync())
        self.assertEqual(len(final), 160)
        self.assertEqual(len(set(final.values())), 160)
        for seen in results:                               # every process saw the same UIDs
            for key, uid in seen.items():
                self.assertEqual(final[key], uid)


if __name__ == "__main__":
    unittest.main()
