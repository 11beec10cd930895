"""store/gang.py: a batch run by several threads at once, the caller's included."""

import threading
import unittest

from store.gang import Gang


class GangTest(unittest.TestCase):
    def setUp(self):
        self.gang = Gang(3, "test-gang")
        self.addCleanup(self.gang.close)

    def test_every_item_runs_once_and_they_run_at_the_same_time(self):
        barrier = threading.Barrier(4, timeout=10)    # three gang threads and the caller
        seen, lock = [], threading.Lock()

        def fn(item):
            barrier.wait()                            # breaks (and raises) unless four run at once
            with lock:
                seen.append((item, threading.current_thread().name))
        self.gang.map(fn, list(range(4)))
        self.assertEqual(sorted(i for i, _ in seen), [0, 1, 2, 3])
        self.assertEqual(len({name for _, name in seen}), 4)
        self.assertIn(threading.current_thread().name, {name for _, name in seen})

    def test_more_items_than_threads_and_many_batches(self):
        for n in (0, 1, 2, 7, 50):
            out, lock = [], threading.Lock()

            def fn(item):
                with lock:
                    out.append(item)
            self.gang.map(fn, list(range(n)))
            self.assertEqual(sorted(out), list(range(n)))

    def test_an_exception_is_raised_in_the_caller_after_the_rest_ran(self):
        done = []

        def fn(item):
            if item == 3:
                raise ValueError("bad item")
            done.append(item)
        with self.assertRaisesRegex(ValueError, "bad item"):
            self.gang.map(fn, list(range(6)))
        self.assertEqual(sorted(done), [0, 1, 2, 4, 5])
        self.gang.map(done.append, [9, 10])            # still works afterwards
        self.assertIn(10, done)

    def test_close_ends_the_threads(self):
        gang = Gang(2, "test-gang-close")
        gang.close()
        self.assertFalse(any(t.is_alive() for t in gang._threads))


if __name__ == "__main__":
    unittest.main()
