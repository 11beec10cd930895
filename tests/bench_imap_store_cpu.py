"""The server CPU time of STORE 1:* (not a test, prints a table).

    python3 tests/bench_imap_store_cpu.py [--rounds 5] [--baseline CHECKOUT]

On the benchmark's 10,000-message INBOX (tests/bench_imap_setup.py), each
round starts each server afresh on its own copy, SELECTs, fetches the flags,
waits MTIME_SLACK_S and more (as the folder is in tests/bench_imap.py by the
time it stores), then times ``STORE 1:* +FLAGS (\\Flagged)`` and the ``-FLAGS``
that restores it: the wall time, and the CPU time the server's processes
spent (utime + stime from /proc/PID/stat; Dovecot: its imap processes) over
the STORE and the NOOP after it (which shows the session's next look at the
folder).  On a shared machine the CPU time is steadier than the wall time.
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
from store.folder import MTIME_SLACK_S  # noqa: E402
from tests.bench_imap import login, ok  # noqa: E402
from tests.bench_imap_first_open import Checkout  # noqa: E402


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])      # utime, stime (proc(5))
        except FileNotFoundError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def pids_of(server):
    return server.server.imap_pids() if isinstance(server, setup.Dovecot) else [server.proc.pid]


def one_round(server):
    server.forget_state()
    server.start()
    try:
        client = login(server)
        ok(client.select("INBOX"), "SELECT INBOX")
        ok(client.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH")
        time.sleep(MTIME_SLACK_S + 0.5)
        out = []
        for mode in ("+FLAGS", "-FLAGS"):
            before, t = cpu_seconds(pids_of(server)), time.perf_counter()
            ok(client.store("1:*", mode, "(\\Flagged)"), "STORE " + mode)
            wall = time.perf_counter() - t
            ok(client.noop(), "NOOP")
            out += [cpu_seconds(pids_of(server)) - before, wall]
        client.logout()
        return out
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", help="another checkout of mailsrv to measure beside this one")
    args = ap.parse_args()
    corpus, _facts = setup.build_corpus(10000)
    work = tempfile.mkdtemp(prefix="mailsrv-bench-store-cpu-")
    os.chmod(work, 0o755)          # Dovecot's mail processes (nobody, when we are root) pass through it
    try:
        servers = [Checkout(ROOT, os.path.join(work, "this"), corpus)]
        if args.baseline:
            servers.append(Checkout(args.baseline, os.path.join(work, "baseline"), corpus))
        try:
            servers.append(setup.Dovecot(os.path.join(work, "dovecot"), corpus))
            servers[-1].name = "Dovecot"
        except setup.Unavailable as e:
            print("dovecot: not measured: %s" % e)
        rows = {s.name: [] for s in servers}
        for r in range(args.rounds):
            for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                rows[server.name].append(one_round(server))
        print("STORE 1:* on 10000 messages, medians of %d rounds (seconds; CPU: the server's, with the NOOP after)"
              % args.rounds)
        print("%-28s %10s %10s %10s %10s" % ("", "+FLAGS CPU", "wall", "-FLAGS CPU", "wall"))
        for name, got in rows.items():
            print("%-28s %10.3f %10.3f %10.3f %10.3f" % ((name,) + tuple(statistics.median(g[i] for g in got)
                                                                         for i in range(4))))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
