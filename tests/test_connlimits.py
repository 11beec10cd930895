"""Connection limits held across workers (protocols/loop_connlimits.py, README "Workers").

The table: two or three "workers" in this process sharing one SharedTable
(admission, release, per listener, the total, a dead worker's counts cleared,
collisions refuse and never admit, publication before the sum), one forked
process seeing it.  End to end: ``python3 mailsrv.py`` with workers = 2 and
max_connections_per_ip = 3 admits exactly 3 connections of an address
whichever worker accepts them, 3 of another address meanwhile, new ones after
those close, and, after a worker holding some is killed with SIGKILL, as many
as it held once it has been started again.
"""

import os
import random
import re
import shutil
import signal
import socket
import struct
import tempfile
import unittest

from protocols.loop_connlimits import SLOTS_MAX, SLOTS_MIN, LocalCounts, SharedTable, slots_for
from tests.helpers import add_user_cli, wait_for
from tests.test_workers import HAS_PROC, WAIT, Server, children

SMTP, SUBMISSION = ("smtp", "127.0.0.1", 25), ("submission", "127.0.0.1", 587)
SECRET = b"k" * 16


def table(workers=2, slots=1024):
    return SharedTable(workers, [SMTP, SUBMISSION], slots, secret=SECRET)


class SharedTableTest(unittest.TestCase):
    def views(self, t, max_total=100, max_per_ip=3, key=SMTP):
        return [t.counts(w, key, max_total, max_per_ip) for w in range(t.workers)]

    def test_the_per_address_limit_holds_across_workers(self):
        w0, w1 = self.views(table())
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.1"))
        self.assertFalse(w1.admit("192.0.2.1"))     # 2 + 1: the third is the last, whoever holds them
        self.assertFalse(w0.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.2"))      # another address is counted apart
        self.assertTrue(w1.admit("2001:db8::1"))
        w0.release("192.0.2.1")
        self.assertTrue(w1.admit("192.0.2.1"))      # a released one frees a place in every worker
        self.assertFalse(w0.admit("192.0.2.1"))

    def test_a_refusal_leaves_no_count_behind(self):
        w0, w1 = self.views(table(), max_per_ip=1)
        self.assertTrue(w0.admit("192.0.2.1"))
        for _ in range(5):
            self.assertFalse(w1.admit("192.0.2.1"))
        w0.release("192.0.2.1")
        self.assertTrue(w1.admit("192.0.2.1"))

    def test_limits_are_per_listener(self):
        t = table()
        smtp = self.views(t, max_per_ip=1)
        submission = self.views(t, max_per_ip=1, key=SUBMISSION)
        self.assertTrue(smtp[0].admit("192.0.2.1"))
        self.assertFalse(smtp[1].admit("192.0.2.1"))
        self.assertTrue(submission[1].admit("192.0.2.1"))
        self.assertIsNone(t.counts(0, ("imap", "127.0.0.1", 143), 10, 10))     # not a listener of the table
        self.assertIsNone(t.counts(2, SMTP, 10, 10))                          # nor a worker

    def test_the_total_holds_across_workers(self):
        w0, w1 = self.views(table(), max_total=3, max_per_ip=10)
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.2"))
        self.assertTrue(w1.admit("192.0.2.3"))
        self.assertFalse(w0.admit("192.0.2.4"))
        w1.release("192.0.2.2")
        self.assertTrue(w0.admit("192.0.2.4"))

    def test_a_dead_workers_counts_are_cleared_and_no_one_elses(self):
        t = table()
        w0, w1 = self.views(t, max_total=5)
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.9"))
        self.assertFalse(w0.admit("192.0.2.1"))
        t.clear(1)                                  # the supervisor, worker 1 dead
        again = t.counts(1, SMTP, 5, 3)             # its replacement starts from nothing
        self.assertTrue(again.admit("192.0.2.1"))
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertFalse(again.admit("192.0.2.1"))  # worker 0's one was kept: 1 + 1 + 1
        self.assertTrue(again.admit("192.0.2.8"))
        self.assertTrue(w0.admit("192.0.2.7"))
        self.assertFalse(again.admit("192.0.2.6"))  # total 5: worker 0's 3 and the new worker's 2
        for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.7"):
            w0.release(ip)
        self.assertEqual(sum(t.words[:t.region]), 0)    # worker 0's region back to zero

    def test_colliding_addresses_are_refused_never_admitted(self):
        """One counter a row: every address collides with every other, so the
        table refuses early (conservative) and never lets one in over its limit."""
        w0, w1 = self.views(table(slots=1), max_per_ip=2)
        self.assertTrue(w0.admit("192.0.2.1"))
        self.assertTrue(w1.admit("192.0.2.2"))
        self.assertFalse(w0.admit("192.0.2.3"))     # counted with the others: refused
        self.assertFalse(w1.admit("192.0.2.1"))

    def test_matches_one_exact_count_in_a_random_walk(self):
        """Three workers admitting and releasing at random agree with one process's
        exact dictionaries (LocalCounts): the same answer to every admission."""
        rng = random.Random(14)
        t = table(workers=3, slots=slots_for(1000))
        views, exact = self.views(t, max_total=40, max_per_ip=4), LocalCounts(40, 4)
        held = []
        addresses = ["192.0.2.%d" % i for i in range(30)] + ["2001:db8::%x" % i for i in range(10)]
        for _ in range(5000):
            if held and rng.random() < 0.45:
                w, ip = held.pop(rng.randrange(len(held)))
                views[w].release(ip)
                exact.release(ip)
            else:
                w, ip = rng.randrange(3), rng.choice(addresses)
                admitted = views[w].admit(ip)
                self.assertEqual(admitted, exact.admit(ip), (w, ip, exact.per_ip.get(ip)))
                if admitted:
                    held.append((w, ip))

    def test_a_worker_publishes_before_it_sums(self):
        """Two workers admit the same address at once, each at the worst moment of
        the other: worker 1 between its publication and its sum sees worker 0 admit
        whole.  One of them gets the last place, never both."""
        w0, w1 = self.views(table(), max_per_ip=1)
        over = w1._over
        answers = []

        def race(where, per_ip):
            answers.append(w0.admit("192.0.2.1"))   # worker 0, all of it, in worker 1's window
            return over(where, per_ip)
        w1._over = race
        answers.append(w1.admit("192.0.2.1"))
        self.assertEqual(sorted(answers), [False, True], answers)
        self.assertFalse(w0.admit("192.0.2.1"))

    def test_a_forked_process_shares_the_table(self):
        t = table()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:        # the "worker": admit two, say so, wait for the parent to let go
            try:
                view = t.counts(1, SMTP, 10, 2)
                os.write(w, b"%d" % (view.admit("192.0.2.1") + view.admit("192.0.2.1")))
            finally:
                os._exit(0)
        os.close(w)
        self.assertEqual(os.read(r, 8), b"2")
        os.close(r)
        os.waitpid(pid, 0)
        self.assertFalse(t.counts(0, SMTP, 10, 2).admit("192.0.2.1"))   # the child's two are seen here
        t.clear(1)
        self.assertTrue(t.counts(0, SMTP, 10, 2).admit("192.0.2.1"))

    def test_size_is_bounded(self):
        self.assertEqual(slots_for(1), SLOTS_MIN)
        self.assertEqual(slots_for(1000), 8192)
        self.assertEqual(slots_for(10 ** 9), SLOTS_MAX)
        with self.assertRaises(ValueError):
            SharedTable(2, [SMTP], 1000)


class LocalCountsTest(unittest.TestCase):
    def test_one_process_counts_exactly(self):
        c = LocalCounts(max_total=3, max_per_ip=2)
        self.assertEqual([c.admit("a"), c.admit("a"), c.admit("a"), c.admit("b"), c.admit("c")],
                         [True, True, False, True, False])
        c.release("a")
        self.assertEqual(c.per_ip, {"a": 1, "b": 1})
        self.assertTrue(c.admit("c"))


# -- end to end: python3 mailsrv.py, workers = 2 ---------------------------------

def hex_endpoint(ip, port):
    """An endpoint as /proc/net/tcp writes it (IPv4: the address as a little-endian word)."""
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port)


def holder(client, workers):
    """The worker whose descriptors hold the server side of ``client`` (Linux /proc)."""
    local, remote = client.sock.getpeername(), client.sock.getsockname()
    want = (hex_endpoint(*local), hex_endpoint(*remote))
    with open("/proc/net/tcp") as f:
        inodes = [line.split()[9] for line in f.readlines()[1:] if tuple(line.split()[1:3]) == want]
    for pid in workers:
        try:
            links = {os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)}
        except OSError:
            continue
        if any("socket:[%s]" % inode in links for inode in inodes):
            return pid
    return None


class Client:
    """One SMTP connection from ``source``; ``first`` is the server's first line (greeting or busy)."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.first = None

    def greeted(self):
        if self.first is None:
            self.first = self.file.readline()
        return self.first.startswith(b"220 ")

    def quit(self):
        """QUIT, then the server's close (read to EOF): the server has let go of it."""
        self.sock.sendall(b"QUIT\r\n")
        while self.file.readline():
            pass
        self.close()

    def close(self):
        self.file.close()
        self.sock.close()


@unittest.skipUnless(HAS_PROC, "reads the process tree and sockets from /proc")
class WorkersLimitTest(unittest.TestCase):
    LIMIT = 3

    def setUp(self):
        self.top = tempfile.mkdtemp(prefix="mailsrv-connlimits-")
        self.addCleanup(shutil.rmtree, self.top, True)
        add_user_cli(os.path.join(self.top, "data"), "alice@example.test")
        self.server = Server(self.top, 2, "max_connections_per_ip = %d\n" % self.LIMIT)
        self.addCleanup(self.server.stop, signal.SIGKILL)
        self.clients = []
        self.addCleanup(lambda: [c.close() for c in self.clients])

    def workers(self, other_than=()):
        return wait_for(lambda: len(children(self.server.proc.pid) - set(other_than)) == 2
                        and children(self.server.proc.pid), "two workers", self.server.log_text, WAIT)

    def open(self, source, count):
        """``count`` connections from ``source``, all made before any first line is read."""
        batch = [Client(self.server.port, source) for _ in range(count)]
        self.clients += batch
        return batch

    def admitted(self, batch):
        """Those greeted (held open); the others had RFC 5321 §3.8's 421 and the server's close."""
        kept = []
        for c in batch:
            if c.greeted():
                kept.append(c)
            else:
                self.assertTrue(c.first.startswith(b"421 4."), c.first)
                self.assertEqual(c.file.read(), b"")
        return kept

    def one_more(self, source):
        """A new connection of ``source`` greeted, trying until the server has let the last go."""
        def attempt():
            c = self.open(source, 1)[0]
            return c if c.greeted() else c.close()
        return wait_for(attempt, "a connection from %s admitted" % source, self.server.log_text, WAIT)

    def test_the_per_address_limit_holds_across_two_workers(self):
        workers = self.workers()
        crossed = False             # some worker refused while it held fewer than the limit itself
        for _ in range(10):         # until the kernel has spread one address over both workers
            five, six = self.open("127.0.0.5", 12), self.open("127.0.0.6", 12)
            held5, held6 = self.admitted(five), self.admitted(six)
            self.assertEqual((len(held5), len(held6)), (self.LIMIT, self.LIMIT))
            holders = [holder(c, workers) for c in held5]
            self.assertNotIn(None, holders)
            refused_by = self.refusers("127.0.0.5", [c for c in five if c not in held5])
            crossed = any(holders.count(pid) < self.LIMIT for pid in refused_by)
            for c in held5 + held6:
                c.quit()
            if crossed:
                break
        self.assertTrue(crossed, "both workers took connections of 127.0.0.5 in 10 rounds")
        kept = [self.one_more("127.0.0.5") for _ in range(self.LIMIT)]     # after closing: new ones get in
        self.assertEqual(self.admitted(self.open("127.0.0.5", 4)), [])
        self.assertEqual(len(kept), self.LIMIT)

    def refusers(self, source, refused):
        """The workers that logged a refusal of one of ``refused`` (its client port)."""
        ports = {c.sock.getsockname()[1] for c in refused}
        lines = re.findall(r"\[(\d+)\]: busy listener=smtp peer=%s:(\d+):" % re.escape(source), self.server.log_text())
        return {int(pid) for pid, port in lines if int(port) in ports}

    def test_a_killed_workers_connections_are_freed_once_it_is_started_again(self):
        workers = self.workers()
        held = self.admitted(self.open("127.0.0.7", 6))
        self.assertEqual(len(held), self.LIMIT)
        holders = [holder(c, workers) for c in held]
        victim = holders[0]
        lost = holders.count(victim)
        os.kill(victim, signal.SIGKILL)
        self.workers(other_than=[victim])           # its replacement is running
        wait_for(lambda: "(pid %d) killed by signal 9" % victim in self.server.log_text(), "the death logged",
                 self.server.log_text, WAIT)
        again = [self.one_more("127.0.0.7") for _ in range(lost)]      # the dead worker's places, free again
        self.assertEqual(len(again), lost)
        self.assertEqual(self.admitted(self.open("127.0.0.7", 4)), [])  # and no more: the survivors' still count
        self.assertEqual(self.server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
