"""store/msgcache.py: the per-folder cache file ``mailsrv-cache``."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import unittest
from typing import List

from store import msgcache
from store.msgcache import CACHE_FILE, MAGIC, MsgCache

KIND = "test-v1"


def entry(n: int):
    return {"A": b"value %d" % n, "B": b"\x00\r\n" * n}


class MsgCacheTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-msgcache-")
        self.path = os.path.join(self.dir, CACHE_FILE)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def fill(self, cache, keys):
        cache.put_many([(k, KIND, entry(i)) for i, k in enumerate(keys)])

    def test_entries_come_back_from_a_new_reader_and_kinds_are_apart(self):
        writer = MsgCache(self.dir)
        self.fill(writer, ["k0", "k1", "k2"])
        reader = MsgCache(self.dir)
        self.assertEqual(reader.get_many(["k0", "k2", "nope"], KIND), {"k0": entry(0), "k2": entry(2)})
        self.assertEqual(reader.get_many(["k0"], "test-v2"), {})
        writer.put_many([("k3", KIND, entry(3))])      # appended after the reader indexed
        self.assertEqual(reader.get_many(["k3"], KIND), {"k3": entry(3)})

    def test_record_bodies_round_trip_and_every_cut_is_damage(self):
        body = msgcache.encode_body("k\udcff1", KIND, {"A": b"x" * 70000, "": b"", "B": b"\r\n"})
        self.assertEqual(msgcache.decode_body(body), ("k\udcff1", KIND, {"A": b"x" * 70000, "": b"", "B": b"\r\n"}))
        self.assertEqual(msgcache.key_kind(body), ("k\udcff1", KIND))
        for cut in list(range(0, 40)) + [len(body) - 1]:
            with self.assertRaises(msgcache.CacheDamaged):
                msgcache.decode_body(body[:cut])
        with self.assertRaises(msgcache.CacheDamaged):
            msgcache.decode_body(body + b"?")

    def test_a_torn_last_record_is_ignored_then_cut_off_by_the_next_writer(self):
        cache = MsgCache(self.dir)
        self.fill(cache, ["k0", "k1"])
        cache.close()
        size = os.path.getsize(self.path)
        with open(self.path, "ab") as f:                # a crash in the middle of a write
            f.write(msgcache.encode_record("k2", KIND, entry(2))[:-5])
        reader = MsgCache(self.dir)
        self.assertEqual(reader.get_many(["k0", "k1", "k2"], KIND), {"k0": entry(0), "k1": entry(1)})
        reader.put_many([("k3", KIND, entry(3))])
        again = MsgCache(self.dir)
        self.assertEqual(again.get_many(["k0", "k1", "k2", "k3"], KIND),
                         {"k0": entry(0), "k1": entry(1), "k3": entry(3)})
        self.assertEqual(os.path.getsize(self.path),
                         size + len(msgcache.encode_record("k3", KIND, entry(3))))

    def test_a_garbage_file_is_deleted_and_rebuilt(self):
        for garbage in (b"not a cache at all\n", MAGIC + b"R\x00\x00\x00\x05\x00\x00\x00\x00hello"):
            with open(self.path, "wb") as f:
                f.write(garbage)
            cache = MsgCache(self.dir)
            self.assertEqual(cache.get_many(["k0"], KIND), {})
            self.fill(cache, ["k0"])
            self.assertEqual(MsgCache(self.dir).get_many(["k0"], KIND), {"k0": entry(0)})
            with open(self.path, "rb") as f:
                self.assertTrue(f.read().startswith(MAGIC))
            cache.close()

    def test_a_deleted_file_is_noticed_and_begun_again(self):
        cache = MsgCache(self.dir)
        self.fill(cache, ["k0"])
        os.unlink(self.path)
        self.assertEqual(cache.get_many(["k0"], KIND), {})
        self.fill(cache, ["k1"])
        self.assertEqual(MsgCache(self.dir).get_many(["k0", "k1"], KIND), {"k1": entry(0)})

    def test_compaction_when_more_than_half_is_dead(self):
        cache = MsgCache(self.dir)
        keys = ["k%d" % i for i in range(10)]
        self.fill(cache, keys)
        other = MsgCache(self.dir)
        other.get_many(keys, KIND)                      # another reader holds the old file open
        self.assertFalse(cache.compact(set(keys[:5])))  # half dead: kept
        before = os.path.getsize(self.path)
        self.assertTrue(cache.compact(set(keys[:4])))
        self.assertLess(os.path.getsize(self.path), before)
        want = {k: entry(i) for i, k in enumerate(keys[:4])}
        self.assertEqual(cache.get_many(keys, KIND), want)
        self.assertEqual(other.get_many(keys, KIND), want)   # it noticed the new file
        other.put_many([("k9", KIND, entry(9))])
        self.assertEqual(MsgCache(self.dir).get_many(["k9"], KIND), {"k9": entry(9)})

    def test_superseded_records_count_as_dead(self):
        cache = MsgCache(self.dir)
        for _ in range(3):
            self.fill(cache, ["k0"])
        self.assertEqual(cache.dead({"k0"}), (2, 3))
        self.assertTrue(cache.compact({"k0"}))
        fresh = MsgCache(self.dir)
        self.assertEqual(fresh.get_many(["k0"], KIND), {"k0": entry(0)})
        self.assertEqual(fresh.dead({"k0"}), (0, 1))

    def test_two_processes_append_at_once_and_every_record_is_whole(self):
        pids = []
        for p in range(2):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    cache = MsgCache(self.dir)
                    for i in range(200):
                        cache.put_many([("p%d-%d" % (p, i), KIND, entry(i))])
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                             else status >> 8, 0)
        keys = ["p%d-%d" % (p, i) for p in range(2) for i in range(200)]
        got = MsgCache(self.dir).get_many(keys, KIND)
        self.assertEqual(got, {k: entry(int(k.split("-")[1])) for k in keys})

    def test_threads_of_one_process_share_a_cache(self):
        cache = msgcache.cache_for(self.dir)
        errors: List[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(100):
                    cache.put_many([("t%d-%d" % (t, i), KIND, entry(i))])
                    self.assertEqual(len(cache.get_many(["t%d-%d" % (t, i)], KIND)), 1)
            except BaseException as exc:      # reported below, in the test's thread
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        keys = ["t%d-%d" % (t, i) for t in range(4) for i in range(100)]
        self.assertEqual(len(MsgCache(self.dir).get_many(keys, KIND)), 400)

    def test_open_caches_are_bounded_per_process(self):
        dirs = []
        for i in range(6):
            d = os.path.join(self.dir, "f%d" % i)
            os.mkdir(d)
            dirs.append(d)
            cache = msgcache.cache_for(d, max_open=3)
            self.fill(cache, ["k"])
        self.assertLessEqual(msgcache.open_count(), 3)
        # an evicted cache reopens on use, entries intact
        self.assertEqual(msgcache.cache_for(dirs[0], max_open=3).get_many(["k"], KIND), {"k": entry(0)})
        self.assertLessEqual(msgcache.open_count(), 3)


if __name__ == "__main__":
    unittest.main()
