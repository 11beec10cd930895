"""AUTH flood benchmark (issue 7 item 1): not a test, prints a table.

    python3 tests/bench_auth.py [--attempts 800] [--addresses 20]

Against ``python3 mailsrv.py`` (a subprocess, default configuration except the
ports): ``--attempts`` concurrent ``AUTH PLAIN`` for unknown users, spread over
``--addresses`` loopback source addresses (127.0.1.x), and meanwhile, from
127.0.0.1, a POP3 login whose password is in the auth cache (USER/PASS/STAT/
QUIT) and an authenticated submission (cached AUTH, MAIL, RCPT to a remote
address: a queue write, DATA).  Each is timed alone first, then once the flood
has started.  Also printed: how the flood's attempts were answered and how long
until the last one was.  Data in a temporary directory, removed afterwards.
"""

import argparse
import base64
import os
import re
import select
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ALICE, PASSWORD = "alice@bench.test", "alice-bench-secret"


def start_server(data):
    conf = os.path.join(data, "mailsrv.ini")
    with open(conf, "w") as f:
        f.write("[mailsrv]\nhostname = mx.bench.test\ndomains = bench.test\nlog_level = ERROR\n"
                "smtp_port = off\nsubmission_port = 0\nsmtps_port = off\npop3_port = 0\npop3s_port = off\n"
                "imap_port = off\nimaps_port = off\ntrusted_networks = none\ndns_servers = 127.0.0.1:9\n"
                "max_connections_per_ip = 100\nworkers = 1\n")
    subprocess.run([PY, "mailsrv.py", "user", "add", ALICE, "--data", data], cwd=ROOT, check=True,
                   input=(PASSWORD + "\n").encode(), capture_output=True)
    proc = subprocess.Popen([PY, "mailsrv.py", "--config", conf, "--data", data], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    ports = {}
    while len(ports) < 2:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready:
            raise SystemExit("server did not start")
        m = re.match(rb"listening (\w+) \S+:(\d+)", proc.stdout.readline())
        if m:
            ports[m.group(1).decode()] = int(m.group(2))
    return proc, ports


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def pop3_login(port):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
        f = s.makefile("rb")
        f.readline()
        for cmd in ("USER " + ALICE, "PASS " + PASSWORD, "STAT", "QUIT"):
            s.sendall(cmd.encode() + b"\r\n")
            line = f.readline()
            assert line.startswith(b"+OK"), line
    return time.monotonic() - t0


def submit(port):
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
        s.ehlo("bench.test")
        code, _ = s.docmd("AUTH", "PLAIN " + plain(ALICE, PASSWORD))
        assert code == 235, code
        s.sendmail(ALICE, ["someone@remote.example"], b"Subject: bench\r\n\r\nhello\r\n")
    return time.monotonic() - t0


def flood(port, attempts, addresses, answers, started):
    def one(i):
        try:
            with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.1.%d" % (1 + i % addresses), 0),
                              timeout=300) as s:
                s.ehlo("attacker.test")
                started.release()
                code = s.docmd("AUTH", "PLAIN " + plain("nobody%d@bench.test" % i, "guess"))[0]
        except (OSError, smtplib.SMTPException) as exc:
            code = type(exc).__name__
        answers.append((code, time.monotonic()))
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(attempts)]
    for t in threads:
        t.start()
    return threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=800)
    ap.add_argument("--addresses", type=int, default=20)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="mailsrv-bench-auth-")
    proc, ports = start_server(data)
    try:
        pop3_login(ports["pop3"])           # puts the password in the auth cache
        alone = (pop3_login(ports["pop3"]), submit(ports["submission"]))
        answers, started = [], threading.Semaphore(0)
        t0 = time.monotonic()
        threads = flood(ports["submission"], args.attempts, args.addresses, answers, started)
        for _ in range(min(args.attempts, 100)):
            started.acquire(timeout=60)     # the flood is on: its first 100 AUTHs are going out
        during = (pop3_login(ports["pop3"]), submit(ports["submission"]))
        for t in threads:
            t.join(600)
        last = max(t for _, t in answers) - t0
        counts = {}
        for code, _ in answers:
            counts[code] = counts.get(code, 0) + 1
        print("| | alone | during the flood |\n|---|---|---|")
        print("| cached POP3 login (USER/PASS/STAT/QUIT) | %.2f s | %.2f s |" % (alone[0], during[0]))
        print("| submission to a remote address (queue write) | %.2f s | %.2f s |" % (alone[1], during[1]))
        print("\nflood: %d AUTH PLAIN from %d addresses, answered %s, last answer after %.1f s"
              % (args.attempts, args.addresses, ", ".join("%s x%d" % kv for kv in sorted(counts.items(), key=str)),
                 last))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
