"""Memory benchmark (`make bench`): peak RSS of the server receiving large messages.

    python3 tests/bench_memory.py [--root DIR] [--keep]

What is measured (issue 7 item 3): the RSS of a ``python3 mailsrv.py``
subprocess (VmRSS when idle, VmHWM = peak, VmRSS after) while it receives

* one 50 MB message over DATA, then one over BDAT (two 25 MB chunks);
* 32 concurrent 25 MB messages over DATA, one connection each, from one
  client address (within the default limits: 50 connections per address,
  25 MiB messages);

each scenario against a fresh server and data directory (under
./bench-data/, removed afterwards unless ``--keep``).  Every message is
acknowledged with 250 (durable in the recipient's Maildir) before the
numbers are read.  ``--root`` runs the server of another checkout (the code
before a change) with this same client.  The client (threads in this
process) sends one prepared dot-stuffed message with sendall in 1 MiB
pieces; its memory is not counted.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.bench_smtp import Server, one_process  # noqa: E402  (the script's directory is not a package root)

RCPT = "bob@example.test"
MB = 1000 * 1000
PIECE = 1024 * 1024


def message(size: int) -> bytes:
    """``size`` octets of 78-octet lines after a small header (nothing to stuff)."""
    head = b"From: a@elsewhere.test\r\nTo: bob@example.test\r\nSubject: big\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"y" * (size - len(head) - len(body) - 2) + b"\r\n"


def rss_kb(proc_pid: int, field: str) -> int:
    with open(f"/proc/{proc_pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start(root: str, data: str) -> Server:
    add = subprocess.run([sys.executable, "mailsrv.py", "user", "add", RCPT, "--data", data], cwd=root,
                         input=b"bench-secret\n", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    if add.returncode:
        sys.exit(f"user add failed: {add.stderr.decode()}")
    conf = os.path.join(data, "bench.conf")
    with open(conf, "w") as f:
        # room for the 50 MB message; everything else at its default
        f.write("[mailsrv]\nmax_message_size = %d\n" % (60 * MB))
    off = []
    for proto in ("submission", "smtps", "pop3", "pop3s", "imap", "imaps"):
        off += [f"--{proto}-port", "off"]
    return Server([sys.executable, "mailsrv.py", "--config", conf, "--data", data, "--hostname",
                   "mx.example.test", "--domain", "example.test", "--smtp-port", "0",
                   "--log-level", "WARNING", *off, *one_process(root)], cwd=root)


class Client:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.f = self.sock.makefile("rb")
        self.expect(b"220")
        self.sock.sendall(b"EHLO bench.test\r\n")
        while self.f.readline()[3:4] == b"-":
            pass

    def expect(self, code: bytes) -> None:
        line = self.f.readline()
        if not line.startswith(code):
            raise RuntimeError("expected %s, got %r" % (code.decode(), line))

    def envelope(self) -> None:
        self.sock.sendall(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<%s>\r\n" % RCPT.encode())
        self.expect(b"250")
        self.expect(b"250")

    def data(self, msg: bytes) -> None:
        self.envelope()
        self.sock.sendall(b"DATA\r\n")
        self.expect(b"354")
        view = memoryview(msg)
        for i in range(0, len(msg), PIECE):
            self.sock.sendall(view[i:i + PIECE])
        self.sock.sendall(b".\r\n")
        self.expect(b"250")

    def bdat(self, msg: bytes, chunks: int = 2) -> None:
        self.envelope()
        step = -(-len(msg) // chunks)
        view = memoryview(msg)
        for i in range(0, len(msg), step):
            last = i + step >= len(msg)
            part = view[i:i + step]
            self.sock.sendall(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b""))
            for j in range(0, len(part), PIECE):
                self.sock.sendall(part[j:j + PIECE])
            self.expect(b"250")

    def close(self) -> None:
        self.sock.sendall(b"QUIT\r\n")
        self.f.close()
        self.sock.close()


def one_50mb(port: int) -> None:
    c = Client(port)
    c.data(message(50 * MB))
    c.close()


def one_50mb_bdat(port: int) -> None:
    c = Client(port)
    c.bdat(message(50 * MB))
    c.close()


def concurrent_25mb(port: int, n: int = 32) -> None:
    msg = message(25 * MB)
    clients = [Client(port) for _ in range(n)]
    errors = []

    def send(c):
        try:
            c.data(msg)
            c.close()
        except Exception as exc:      # reported below, the benchmark must not hang
            errors.append(exc)
    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("%d of %d failed: %s" % (len(errors), n, errors[0]))


SCENARIOS = [("1 x 50 MB, DATA", one_50mb), ("1 x 50 MB, BDAT", one_50mb_bdat),
             ("32 x 25 MB at once, DATA", concurrent_25mb)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=ROOT, help="checkout whose mailsrv.py is measured (default: this one)")
    p.add_argument("--keep", action="store_true", help="keep the data directories under bench-data/")
    args = p.parse_args(argv)
    root = os.path.abspath(args.root)
    base = os.path.join(ROOT, "bench-data", "memory-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), os.getpid()))
    print("command: python3 tests/bench_memory.py%s" % ("" if root == ROOT else " --root " + root))
    print("%-26s %12s %12s %12s %9s" % ("scenario", "idle RSS", "peak RSS", "RSS after", "seconds"))
    try:
        for i, (name, fn) in enumerate(SCENARIOS):
            data = os.path.join(base, str(i))
            os.makedirs(data)
            server = start(root, data)
            try:
                time.sleep(0.5)
                idle = rss_kb(server.proc.pid, "VmRSS")
                t0 = time.monotonic()
                fn(server.port)
                elapsed = time.monotonic() - t0
                time.sleep(0.5)
                peak, after = rss_kb(server.proc.pid, "VmHWM"), rss_kb(server.proc.pid, "VmRSS")
            finally:
                server.stop()
            print("%-26s %9.1f MB %9.1f MB %9.1f MB %9.1f" % (name, idle / 1024, peak / 1024,
                                                             after / 1024, elapsed), flush=True)
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
