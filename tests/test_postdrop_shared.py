"""shared_data: two hosts picking up one DATA/postdrop/ (issue 14) claim each
file by renaming it first, so every dropped message is delivered once; a
host's own claims left by a crash are taken up again, another host's only
once they are old (that host died)."""

import os
import tempfile
import time
import unittest

from protocols.backend.pickup import Pickup
from store import postdrop


class SyncLoop:
    """Just enough of the event loop: worker calls run at once."""

    def __init__(self):
        self.now = time.time()

    def run_in_thread(self, fn, callback):
        try:
            result = fn()
        except Exception as exc:
            result = exc
        callback(result)

    def call_later(self, delay, fn):
        return None

    def call_soon(self, fn):
        fn()

    def time(self):
        return self.now


class SharedPickupTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.data = self.tmp.name
        self.delivered = []

    def drop(self, n):
        postdrop.write(self.data, "%d.1.n%03d" % (1700000000 + n, n), "joe@example.org", ["ann@example.org"],
                       b"Subject: %d\r\n\r\nhi\r\n" % n)

    def pickup(self, host, on_deliver=None):
        def deliver(dropped, data, qid, done):
            self.delivered.append((host, dropped.message.split(b"\r\n")[0]))
            if on_deliver is not None:
                on_deliver()
            done(True)
        return Pickup(SyncLoop(), self.data, host, lambda: 1 << 20, deliver, lambda: "Q", shared=True)

    def left(self):
        return os.listdir(postdrop.drop_dir(self.data))

    def test_two_hosts_racing_deliver_each_message_once(self):
        for n in range(20):
            self.drop(n)
        b = self.pickup("mx2.example.test")
        started = []

        def b_runs_in_the_middle():
            if not started:            # while mx1 has listed everything, mx2 takes a round
                started.append(1)
                b.kick()
        a = self.pickup("mx1.example.test", b_runs_in_the_middle)
        a.kick()
        got = sorted(m for _h, m in self.delivered)
        self.assertEqual(got, sorted(b"Subject: %d" % n for n in range(20)))
        self.assertEqual({h for h, _m in self.delivered}, {"mx1.example.test", "mx2.example.test"})
        self.assertEqual(self.left(), [])

    def test_claims_left_by_a_crash(self):
        self.drop(1)
        self.drop(2)
        folder = postdrop.drop_dir(self.data)
        first, second = sorted(self.left())
        os.rename(os.path.join(folder, first), os.path.join(folder, postdrop.claim_prefix("mx1") + first))
        os.rename(os.path.join(folder, second), os.path.join(folder, postdrop.claim_prefix("mx2") + second))
        self.pickup("mx1").kick()            # its own claim again; mx2's is fresh: not touched
        self.assertEqual([m for _h, m in self.delivered], [b"Subject: 1"])
        self.assertEqual(self.left(), [postdrop.claim_prefix("mx2") + second])
        old = time.time() - postdrop.CLAIM_STALE - 10
        os.utime(os.path.join(folder, self.left()[0]), (old, old))
        self.pickup("mx1").kick()            # mx2 died: its stale claim is taken over
        self.assertEqual([m for _h, m in self.delivered], [b"Subject: 1", b"Subject: 2"])
        self.assertEqual(self.left(), [])

    def test_a_bad_file_is_set_aside_under_its_claimed_name(self):
        folder = postdrop.drop_dir(self.data)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "1700000000.1.bad"), "wb") as f:
            f.write(b"not json\n")
        self.pickup("mx1").kick()
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.left(), [".bad-" + postdrop.claim_prefix("mx1") + "1700000000.1.bad"])


if __name__ == "__main__":
    unittest.main()
