"""POP3's first login after 10,000 new messages, this checkout beside another (not a
test, prints a table).

    python3 tests/bench_pop3_first_login.py --baseline CHECKOUT [--runs 9]

The "first login+STAT" row of tests/bench_pop3.py (USER/PASS/STAT on its
10,000-message maildrop just after the UID index was removed) for this checkout
and for ``--baseline`` (a ``git worktree add`` of an older commit), alternating
run by run, each run a fresh server started by that checkout's own
tests/bench_pop3.py (its data in its own bench-data/pop3/, delivered there at
the first run), plus a login to the empty maildrop (the password check alone).
Medians over the runs: on a shared machine only runs that alternate compare.
"""

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in the checkout measured, with its tests.bench_pop3: one first login+STAT, one
# login to the empty drop; prints the two times.
ONE_RUN = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import tests.bench_pop3 as bench
server = bench.Mailsrv(bench.populate())
server.reset_first_login()
server.start()
try:
    (first, (p, (count, _))) = bench.timed(lambda: bench.login_stat(server.port, bench.BIG_USER))
    p.quit()
    assert count == bench.BIG_COUNT, count
    (empty, (p, _)) = bench.timed(lambda: bench.login_stat(server.port, bench.EMPTY_USER))
    p.quit()
finally:
    server.stop()
print("%.6f %.6f" % (first, empty))
"""


def one_run(checkout):
    out = subprocess.run([sys.executable, "-c", ONE_RUN], cwd=checkout, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    if out.returncode != 0:
        raise SystemExit("%s: %s" % (checkout, (out.stderr.strip().splitlines() or ["failed"])[-1]))
    first, empty = out.stdout.split()[-2:]
    return float(first), float(empty)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="another checkout of mailsrv")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    checkouts = [ROOT, os.path.abspath(args.baseline)]
    times = {c: [] for c in checkouts}
    for run in range(args.runs):
        for checkout in (checkouts if run % 2 == 0 else checkouts[::-1]):
            times[checkout].append(one_run(checkout))
    print("POP3 first login after 10,000 new messages, medians of %d alternating runs (seconds)" % args.runs)
    print("%-40s %18s %22s" % ("", "first login+STAT", "login, empty drop"))
    for checkout, rows in times.items():
        print("%-40s %18.4f %22.4f" % (checkout, statistics.median(r[0] for r in rows),
                                        statistics.median(r[1] for r in rows)))


if __name__ == "__main__":
    main()
