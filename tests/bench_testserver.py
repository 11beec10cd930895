"""TestServer benchmark (`make bench`): not a test, prints a few lines.

    python3 tests/bench_testserver.py [--runs 50]

What is measured, in this process, each a median over ``--runs`` servers:

* start: ``TestServer().start()`` until the first SMTP connection to it is
  accepted and its 220 greeting read (issue 11: "well under a second");
* first message: one smtplib message to a new address, until its 250
  (file, directory and envelope-log fsyncs, the mailbox made on first use),
  then ``wait_for`` returning it;
* stop: ``stop()`` until it returns (threads joined, temporary folder removed).
"""

import argparse
import os
import smtplib
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mailsrv import TestServer  # noqa: E402


def one_run():
    t0 = time.perf_counter()
    mail = TestServer().start()
    with socket.create_connection(("127.0.0.1", mail.smtp_port), timeout=10) as sock:
        greeting = sock.recv(512)
    t1 = time.perf_counter()
    assert greeting.startswith(b"220"), greeting
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=10) as s:
        s.sendmail("app@shop.test", ["bob@example.org"], b"Subject: bench\r\n\r\nx\r\n")
    t2 = time.perf_counter()
    mail.wait_for(to="bob@example.org", timeout=10)
    t3 = time.perf_counter()
    mail.stop()
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    with TestServer():          # imports and one-time caches out of the figures
        pass
    runs = [one_run() for _ in range(args.runs)]
    names = ("start to first accepted SMTP connection", "first message (250)", "wait_for it", "stop")
    print("command: python3 tests/bench_testserver.py --runs %d" % args.runs)
    for i, name in enumerate(names):
        values = sorted(r[i] for r in runs)
        print("%-40s median %7.1f ms   max %7.1f ms" % (name, 1000 * statistics.median(values), 1000 * values[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
