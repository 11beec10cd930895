"""The benchmarks' server subprocesses: start one, read its port from what it
prints first, stop it (tests/bench_smtp.py, tests/bench_smtp_source.py,
tests/bench_memory.py; tests/bench_imap_setup.py's mailsrv stops with
:func:`stop_process`).  Not a test.
"""

import os
import re
import select
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING_SMTP = rb"listening smtp \S+:(\d+)"      # mailsrv's start-up line, and the peers' (bench_smtp.py)
# Seconds a server gets to say it listens, and to end on SIGTERM (then SIGKILL and
# up to KILL_WAIT more): ours, far above mailsrv's start (a second for its first
# RSA key) and stop (its drain) on a loaded 2-core machine.
START_TIMEOUT = STOP_TIMEOUT = 60
KILL_WAIT = 30


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, a wait, SIGKILL if it did not end; its stdout closed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(KILL_WAIT)
    if proc.stdout is not None:
        proc.stdout.close()


class ServerProcess:
    """A server subprocess that prints ``listening smtp HOST:PORT`` among its first
    lines; the script exits with one line when it does not within START_TIMEOUT
    seconds."""

    def __init__(self, argv, cwd=ROOT):
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        self.port = None
        deadline, line = time.monotonic() + START_TIMEOUT, b""
        while self.port is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = self.proc.stdout.readline() if ready else b""
            if not line:
                break
            m = re.match(LISTENING_SMTP, line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.stop()
            sys.exit("server did not start: %s: %r" % (" ".join(argv), line))

    def stop(self) -> None:
        stop_process(self.proc)
