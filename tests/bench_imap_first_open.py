"""The IMAP first open alone (not a test, prints a table): LOGIN, then SELECT INBOX
of a 10,000-message folder nobody has indexed, timed apart.

    python3 tests/bench_imap_first_open.py [--rounds 9] [--baseline CHECKOUT]

The first-open row of tests/bench_imap.py, with the login (password check) and
the SELECT (the folder's first sync: store/folder.py) measured separately, so
each can be told from the other; the servers are this checkout, Dovecot (as in
tests/bench_imap.py) and, with ``--baseline``, another checkout of mailsrv (a
``git worktree add`` of an older commit), alternating round by round, each
started afresh after its state was forgotten (tests/bench_imap_setup.py
``forget_state``).  Dovecot is measured twice: with the ``{PLAIN}`` passwd-file of
tests/bench_imap.py, and with a salted SHA512-CRYPT hash of about the cost of
mailsrv's scrypt (``setup.HASHED_PEER``), so LOGIN compares like with like.
Medians over the rounds.  Copies of the corpus go to a
temporary directory, removed at the end.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tests.bench_imap_setup as setup  # noqa: E402
from tests.bench_imap import login, ok  # noqa: E402


class Checkout(setup.Mailsrv):
    """setup.Mailsrv run from another checkout (its mailsrv.py, its store)."""

    def __init__(self, root, work, corpus):
        self.root, self.name = root, "mailsrv " + os.path.basename(os.path.abspath(root))
        with self._from_root():
            super().__init__(work, corpus, {})

    def _from_root(self):
        class Swap:
            def __enter__(_):
                setup.ROOT = self.root

            def __exit__(_, *exc):
                setup.ROOT = ROOT
        return Swap()

    def start(self):
        with self._from_root():
            super().start()


def cpu_ns(pids):
    """On-CPU nanoseconds of every thread of ``pids`` (the first field of
    /proc/PID/task/TID/schedstat): steadier than wall time on a busy machine."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


def serving_pids(server):
    """The processes that serve the session: mailsrv's one, Dovecot's imap process(es)."""
    return server.server.imap_pids() if isinstance(server, setup.Dovecot) else [server.proc.pid]


def all_to_new(maildir):
    """Every message of cur/ back in new/ without its info part, as delivered (``--in-new``)."""
    cur, new = os.path.join(maildir, "cur"), os.path.join(maildir, "new")
    for name in os.listdir(cur):
        os.rename(os.path.join(cur, name), os.path.join(new, name.partition(":")[0]))


def one_round(server, messages, in_new=False):
    server.forget_state()
    if in_new:
        all_to_new(server.maildir)
    server.start()
    try:
        t0 = time.perf_counter()
        client = login(server)
        t1 = time.perf_counter()
        pids = serving_pids(server)
        before = cpu_ns(pids)
        t2 = time.perf_counter()
        exists = int(ok(client.select("INBOX"), "SELECT INBOX")[0])
        t3 = time.perf_counter()
        cpu = (cpu_ns(pids) - before) / 1e9
        client.logout()
    finally:
        server.stop()
    if exists != messages:
        raise SystemExit("%s: SELECT said %d EXISTS, the corpus has %d" % (server.name, exists, messages))
    return t1 - t0, t3 - t2, (t1 - t0) + (t3 - t2), cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--baseline", help="another checkout of mailsrv to measure beside this one")
    ap.add_argument("--in-new", action="store_true",
                    help="every message in new/ before each round, as delivered (a SELECT moves them to cur/ "
                         "in Dovecot; mailsrv leaves them there)")
    args = ap.parse_args()
    corpus, _facts = setup.build_corpus(args.messages)
    work = tempfile.mkdtemp(prefix="mailsrv-bench-first-open-")
    os.chmod(work, 0o755)          # Dovecot's mail processes (nobody, when we are root) pass through it
    try:
        servers = [Checkout(ROOT, os.path.join(work, "this"), corpus)]
        if args.baseline:
            servers.append(Checkout(args.baseline, os.path.join(work, "baseline"), corpus))
        try:
            servers.append(setup.Dovecot(os.path.join(work, "dovecot"), corpus))
            servers.append(setup.Dovecot(os.path.join(work, "dovecot-hashed"), corpus, setup.HASHED_PEER,
                                         "dovecot %s" % setup.HASHED_PEER[0]))
        except (setup.Unavailable, RuntimeError) as e:
            print("dovecot: not measured: %s" % e)
        times = {s.name: [] for s in servers}
        for r in range(args.rounds):
            for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                times[server.name].append(one_round(server, args.messages, args.in_new))
        print("IMAP first open of INBOX (%d messages%s), medians of %d rounds (seconds)"
              % (args.messages, ", all in new/" if args.in_new else "", args.rounds))
        print("%-28s %10s %10s %14s %12s" % ("", "LOGIN", "SELECT", "LOGIN+SELECT", "SELECT CPU"))
        for name, rows in times.items():
            print("%-28s %10.4f %10.4f %14.4f %12.4f" % ((name,) + tuple(statistics.median(r[i] for r in rows)
                                                                        for i in range(4))))
        print("SELECT CPU: on-CPU time of the serving process over the SELECT (mailsrv: its threads; "
              "Dovecot: its imap process)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
