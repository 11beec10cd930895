"""One queue, several processes (issue 14, shared_data): store/queue_lease.py's
leases, Queue.rescan / lease_fresh, and two relays on one queue directory
delivering every entry exactly once, one taking over the entries of a dead
holder once their leases run out."""

import os
import queue as stdqueue
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from protocols.loop import EventLoop
from protocols.outbound.relay import Relay, RelayConfig
from protocols.smtp.client import ClientConfig
from store import queue_lease
from store.queue import Queue
from tests.helpers import wait_for
from tests.smtpsink import SmtpSink
from tests.test_relay import FakeResolver

NOW = 1_700_000_000.0


def dead_pid() -> int:
    """The pid of a process that has exited (reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class LeaseTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.a = queue_lease.Leases(self.tmp.name, 60, holder="hostA:1:aa")
        self.b = queue_lease.Leases(self.tmp.name, 60, holder="hostB:2:bb")

    def test_one_holder_at_a_time_until_it_runs_out(self):
        self.assertTrue(self.a.take("Q1", NOW))
        self.assertTrue(self.a.take("Q1", NOW + 1))          # ours again: renewed
        self.assertFalse(self.b.take("Q1", NOW + 30))
        self.assertTrue(self.b.take("Q1", NOW + 61.5))       # A stopped renewing: ran out
        self.assertEqual(self.a.renew(["Q1"], NOW + 62), ["Q1"])   # A learns it lost it
        self.assertEqual(self.b.read("Q1")[0], "hostB:2:bb")

    def test_release_lets_the_other_in_and_never_drops_anothers(self):
        self.assertTrue(self.a.take("Q1", NOW))
        self.b.release("Q1")                                  # not B's: stays
        self.assertFalse(self.b.take("Q1", NOW))
        self.a.release("Q1")
        self.assertTrue(self.b.take("Q1", NOW))

    def test_a_dead_process_of_this_host_frees_its_lease_at_once(self):
        host = queue_lease.new_holder().split(":")[0]
        dead = queue_lease.Leases(self.tmp.name, 600, holder="%s:%d:cc" % (host, dead_pid()))
        self.assertTrue(dead.take("Q1", NOW))
        me = queue_lease.Leases(self.tmp.name, 600)
        self.assertTrue(me.take("Q1", NOW + 1))               # no 600 s wait after a restart
        alive = queue_lease.Leases(self.tmp.name, 600, holder="%s:%d:dd" % (host, os.getpid()))
        self.assertTrue(alive.take("Q2", NOW))
        self.assertFalse(me.take("Q2", NOW + 1))              # a live process of this host keeps it

    def test_a_damaged_lease_file_is_free(self):
        with open(os.path.join(self.tmp.name, "Q1.lease"), "w") as f:
            f.write("garbage")
        self.assertTrue(self.a.take("Q1", NOW))

    def test_concurrent_takers_exactly_one_wins(self):
        winners = []
        barrier = threading.Barrier(8)

        def taker(i):
            leases = queue_lease.Leases(self.tmp.name, 60, holder="host%d:%d:x" % (i, i))
            barrier.wait()
            if leases.take("Q9", NOW):
                winners.append(i)
        threads = [threading.Thread(target=taker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(len(winners), 1)


class SharedQueueTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_rescan_sees_the_other_process(self):
        a, b = Queue(self.tmp.name, shared=True), Queue(self.tmp.name, shared=True)
        a.enqueue("s@example.org", ["r@example.com"], b"x\r\n", "Q1", NOW)
        self.assertIsNone(b.get("Q1"))
        self.assertEqual(b.rescan(), (1, 0))
        self.assertEqual(b.get("Q1").recipients[0].address, "r@example.com")
        a.remove("Q1")
        self.assertEqual(b.rescan(), (0, 1))
        self.assertIsNone(b.get("Q1"))

    def test_lease_fresh_reads_the_envelope_again(self):
        a, b = Queue(self.tmp.name, shared=True), Queue(self.tmp.name, shared=True)
        a.enqueue("s@example.org", ["r1@example.com", "r2@example.net"], b"x\r\n", "Q1", NOW)
        b.rescan()
        a.record_results("Q1", {"r1@example.com": ("delivered", "250 ok")}, NOW)    # A delivered one
        leases = queue_lease.Leases(b.dir, 60, holder="hB:1:b")
        fresh = b.lease_fresh("Q1", leases, NOW)
        self.assertEqual(fresh.open_recipients(), ["r2@example.net"])
        a.remove("Q1")
        self.assertIsNone(b.lease_fresh("Q1", leases, NOW))
        self.assertFalse(os.path.exists(os.path.join(b.dir, "Q1.lease")))

    def test_start_leaves_another_hosts_message_in_progress(self):
        q = Queue(self.tmp.name)
        tmp = os.path.join(q.dir, "tmp-123-Q2.msg")
        orphan = os.path.join(q.dir, "Q3.msg")       # renamed, envelope not yet written
        for path in (tmp, orphan):
            with open(path, "wb") as f:
                f.write(b"arriving")
        Queue(self.tmp.name, shared=True)
        self.assertTrue(os.path.exists(tmp) and os.path.exists(orphan))
        old = time.time() - 37 * 3600
        os.utime(tmp, (old, old))
        Queue(self.tmp.name, shared=True)
        self.assertFalse(os.path.exists(tmp))
        self.assertTrue(os.path.exists(orphan))
        Queue(self.tmp.name)                         # alone on the folder: garbage at once
        self.assertFalse(os.path.exists(orphan))


class TwoRelaysTest(unittest.TestCase):
    """Two relays (two "hosts") on one queue directory and one remote MX."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.sink = SmtpSink()
        self.addCleanup(self.sink.close)
        self.now = NOW
        self.rounds = stdqueue.Queue()
        self.relays = [self._relay("host%d:%d:t" % (i, 100 + i)) for i in range(2)]

    def _relay(self, holder):
        loop = EventLoop()
        q = Queue(self.tmp.name, shared=True)
        leases = queue_lease.Leases(q.dir, 60, holder=holder)
        cfg = RelayConfig(hostname="mail.example.org", relay_port=self.sink.port, connect_timeout=5,
                          client=ClientConfig(), interval=3600, max_connections=6)   # under the sink's backlog of 16
        relay = Relay(loop, q, FakeResolver(loop), cfg, clock=lambda: self.now, on_round=self.rounds.put,
                      leases=leases)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()

        def stop():
            loop.stop()
            thread.join(10)
            loop.close(wait=True)       # its jobs write in the queue folder the cleanup removes
        self.addCleanup(stop)
        return relay

    def entries_left(self):
        return [n for n in os.listdir(os.path.join(self.tmp.name, "queue")) if n.endswith(".env")]

    def run_both(self):
        for relay in self.relays:
            relay._running = True
            relay.loop.call_soon_threadsafe(relay._shared_tick)

    def test_every_entry_delivered_exactly_once(self):
        writer = Queue(self.tmp.name, shared=True)
        for i in range(200):
            writer.enqueue("alice@example.org", ["bob@example.com"], b"Subject: %d\r\n\r\nhi\r\n" % i,
                           "Q%03d" % i, NOW)
        for _ in range(3):                # several passes of both, racing for the same entries
            self.run_both()
        wait_for(lambda: not self.entries_left(), "the queue to empty", timeout=60)
        subjects = sorted(m[2].split(b"\r\n")[0] for m in self.sink.messages)
        self.assertEqual(subjects, sorted(b"Subject: %d" % i for i in range(200)))
        # each lease is let go after its entry is removed: wait for the last of them
        wait_for(lambda: sorted(os.listdir(os.path.join(self.tmp.name, "queue"))) == ["lease.lock"],
                 "every lease let go", timeout=10)

    def administer(self, relay, command, queue_id):
        outcome = stdqueue.Queue()
        relay.loop.call_soon_threadsafe(lambda: relay.administer(command, queue_id, outcome.put))
        return outcome.get(timeout=10)

    def test_queue_delete_taken_by_a_process_that_has_not_seen_the_entry(self):
        # `mailsrv.py queue delete ID` is taken by whichever worker unlinks the request
        # first; that one may not have rescanned since a sibling queued the entry
        Queue(self.tmp.name, shared=True).enqueue("alice@example.org", ["bob@example.com"],
                                                 b"Subject: x\r\n\r\nhi\r\n", "Q900", NOW)
        self.assertIsNone(self.relays[1].queue.get("Q900"))          # not in its cache yet
        self.assertEqual(self.administer(self.relays[1], "delete", "Q900"), "deleted")
        self.assertEqual(self.entries_left(), [])
        wait_for(lambda: sorted(os.listdir(os.path.join(self.tmp.name, "queue"))) == ["lease.lock"],
                 "its lease let go", timeout=10)
        self.assertEqual(self.administer(self.relays[1], "delete", "Q900"), "not in the queue")

    def test_queue_delete_waits_for_the_lease_another_process_holds(self):
        Queue(self.tmp.name, shared=True).enqueue("alice@example.org", ["bob@example.com"],
                                                 b"Subject: x\r\n\r\nhi\r\n", "Q901", NOW)
        other = queue_lease.Leases(os.path.join(self.tmp.name, "queue"), 60, holder="host0:100:t")
        self.assertTrue(other.take("Q901", NOW))        # relays[0] is delivering it
        outcome = stdqueue.Queue()
        relay = self.relays[1]
        relay.loop.call_soon_threadsafe(lambda: relay.administer("bounce", "Q901", outcome.put))
        wait_for(lambda: relay.leases.read("Q901")[0] == "host0:100:t" and outcome.empty(), "the request held")
        other.release("Q901")                           # its round is written
        self.assertEqual(outcome.get(timeout=10), "bounced")
        self.assertNotIn("Q901.env", self.entries_left())      # (its bounce to alice is queued)

    def test_a_dead_holders_entries_wait_for_its_leases_to_run_out(self):
        writer = Queue(self.tmp.name, shared=True)
        for i in range(5):
            writer.enqueue("alice@example.org", ["bob@example.com"], b"Subject: %d\r\n\r\nhi\r\n" % i,
                           "Q%d" % i, NOW)
        gone = queue_lease.Leases(writer.dir, 60, holder="otherhost:4242:zz")   # killed mid-delivery
        for i in range(5):
            self.assertTrue(gone.take("Q%d" % i, NOW))
        self.run_both()
        wait_for(lambda: all(not r._active for r in self.relays), "the passes to find every entry taken")
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(len(self.entries_left()), 5)
        self.now = NOW + 61                # the dead holder's leases run out
        self.run_both()
        wait_for(lambda: not self.entries_left(), "the takeover", timeout=30)
        self.assertEqual(len(self.sink.messages), 5)


if __name__ == "__main__":
    unittest.main()
