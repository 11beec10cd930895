"""SMTP throughput benchmark (`make bench`): not a test, prints a table.

    python3 tests/bench_smtp.py [--runs 5] [--seconds 3] [--senders 1,8,32] [--keep] [--profile]
                                [--baseline DIR]

What is measured: durable messages per second accepted by ``python3 mailsrv.py``
(a subprocess; every 250 after DATA means the message is fsync'd into the
recipient's Maildir, store/deliver.py) and, alternating with it in the same
run, by a peer: the stdlib ``smtpd`` module (Python <= 3.11) whose
``process_message`` does ``mailbox.Maildir.add`` -- it fsyncs the file but
not the directory it is linked into (not durable), like the issue's aiosmtpd
reference.  Medians of N runs; each measurement gets a fresh
data directory under ./bench-data/<stamp>/ and this run's directories are
removed only after the last measurement (``--keep`` keeps them).

Senders: threads in this process, each keeping ONE connection for all its
messages (a successful transaction needs no RSET, RFC 5321 §4.1.1.4), 4 KB
bodies to one local recipient, through ``LeanSender``: a raw-socket client
that pipelines MAIL/RCPT/DATA when the server offers PIPELINING (mailsrv
does, smtpd does not), as real MTAs do.  smtplib would spend more CPU per
message than the servers under test, taking it from them on a 2-core box.  All senders
connect (one after another) and EHLO before the clock starts; each sends for ``--seconds`` and the
rate is acknowledged messages / wall time until the last sender finished.
Note that the senders share the machine (and this process's GIL) with the
server under test, identically for both servers.

CPU/msg is the server process's user+system CPU time during the measurement
divided by the messages acknowledged (medians): less sensitive than msg/s to
other load on a shared machine.

Peak RSS is VmHWM from /proc/<pid>/status of the mailsrv process just before
it is stopped (the largest of the N runs).

``--baseline DIR`` adds the mailsrv of another checkout (say the commit
before a change, from ``git worktree add`` or ``git archive``) as one more
server in the alternation, so a change is compared under the same load.

``--profile`` runs mailsrv under cProfile for one extra 32-sender run and prints
the top functions (the delivery I/O threads are not in that profile: it covers
the event-loop thread only).
"""

import argparse
import importlib.util
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.bench_proc import ServerProcess  # noqa: E402  (run as a script: tests/ is not a package root)

BENCH_DIR = os.path.join(ROOT, "bench-data")
PY311 = os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3")
RCPT = "bob@example.test"
BODY = (b"From: a@elsewhere.test\r\nTo: bob@example.test\r\nSubject: bench\r\n\r\n"
        + (b"x" * 62 + b"\r\n") * 63)
BODY += b"y" * (4096 - len(BODY) - 2) + b"\r\n"          # exactly 4 KB

PEER = r'''
import mailbox, os, smtpd, asyncore, sys, signal, warnings
warnings.simplefilter("ignore")
box = mailbox.Maildir(sys.argv[1], create=True)
class Peer(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        box.add(data)          # mailbox.Maildir.add: fsync of tmp/ file, link, no dir fsync
server = Peer(("127.0.0.1", 0), None, decode_data=False)
server.socket.listen(1024)     # smtpd listens with a backlog of 5; do not measure SYN retries
print("listening smtp 127.0.0.1:%d" % server.socket.getsockname()[1], flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
asyncore.loop(timeout=1)
'''


# aiosmtpd's Controller listens with asyncio's default backlog of 100: 128 sessions
# connecting at once would measure SYN retransmits; this one listens with 1024.
AIOSMTPD_PEER = r'''
import asyncio, mailbox, signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
from aiosmtpd.controller import Controller
box = mailbox.Maildir(sys.argv[1], create=True)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        box.add(envelope.original_content)   # mailbox.Maildir.add: fsync of tmp/ file, link, no dir fsync
        return "250 OK"
class Backlog(Controller):
    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                       backlog=1024)
probe = socket.socket()
probe.bind(("127.0.0.1", 0))               # Controller cannot take port 0: pick a free one
port = probe.getsockname()[1]
probe.close()
controller = Backlog(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print("listening smtp 127.0.0.1:%d" % port, flush=True)
signal.sigwait([signal.SIGTERM])
controller.stop()
'''
# The reference peer is aiosmtpd.  It is not in the standard library, so it is
# never used by mailsrv or its tests; `make bench-peers` installs it into this venv,
# for the benchmark only, and the benchmark adds it as a second peer when present.
AIOSMTPD_VENV = os.path.join(BENCH_DIR, ".venv-aiosmtpd")


def aiosmtpd_python():
    py = os.path.join(AIOSMTPD_VENV, "bin", "python")
    if os.path.exists(py) and subprocess.run([py, "-c", "import aiosmtpd"], stderr=subprocess.DEVNULL).returncode == 0:
        return py
    return None


def peer_python() -> str:
    if importlib.util.find_spec("smtpd") is not None:
        return sys.executable
    if os.path.exists(PY311):
        return PY311
    sys.exit("the peer needs the stdlib smtpd module (Python <= 3.11); none found")


class Server(ServerProcess):
    """A server subprocess that prints ``listening smtp HOST:PORT`` first (tests/bench_proc.py)."""

    def peak_rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (proc(5) stat fields 14, 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_process(root=ROOT):
    """``--workers 1`` for a checkout that has workers (default auto): the CPU and
    memory read from /proc/PID are then the whole server's."""
    with open(os.path.join(root, "mailsrv.py"), encoding="utf-8") as f:
        return ["--workers", "1"] if '"--workers"' in f.read() else []


def start_mailsrv(data, profile_to=None, root=ROOT):
    add = subprocess.run([sys.executable, "mailsrv.py", "user", "add", RCPT, "--data", data], cwd=root,
                         input=b"bench-secret\n", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    if add.returncode:
        sys.exit(f"user add failed: {add.stderr.decode()}")
    prefix = [sys.executable] + (["-m", "cProfile", "-o", profile_to] if profile_to else [])
    off = []
    for proto in ("submission", "smtps", "pop3", "pop3s", "imap", "imaps"):
        off += [f"--{proto}-port", "off"]
    return Server(prefix + ["mailsrv.py", "--data", data, "--hostname", "mx.example.test", "--domain",
                            "example.test", "--smtp-port", "0", "--log-level", "WARNING", *off, *one_process(root)],
                  cwd=root)


def start_peer(data):
    return Server([peer_python(), "-c", PEER, os.path.join(data, "Maildir")])


def start_aiosmtpd(data):
    return Server([aiosmtpd_python(), "-c", AIOSMTPD_PEER, os.path.join(data, "Maildir")])


def servers(baseline=None):
    """mailsrv and its peers, in the order they alternate.  ``baseline``: the
    mailsrv of another checkout (the code before a change) as a peer."""
    out = {"mailsrv": start_mailsrv, "smtpd": start_peer}
    if baseline:
        out["baseline"] = lambda data: start_mailsrv(data, root=os.path.abspath(baseline))
    if aiosmtpd_python():
        out["aiosmtpd"] = start_aiosmtpd
    return out


class LeanSender:
    """A minimal SMTP client for the benchmark: one persistent connection,
    raw socket, and PIPELINING (RFC 2920) when the server offers it, as real
    MTAs do (Postfix pipelines whenever it is advertised).  smtplib costs more
    CPU per message than the servers under test, and on a 2-core box that
    CPU is taken from them; both servers get this same client."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.reply()                                    # 220 greeting
        self.sock.sendall(b"EHLO bench.test\r\n")
        self.pipelining = b"PIPELINING" in b"".join(self.reply()).upper()
        stuffed = BODY.replace(b"\r\n.", b"\r\n..")
        self.envelope = (b"MAIL FROM:<a@elsewhere.test>\r\n", b"RCPT TO:<%s>\r\n" % RCPT.encode(), b"DATA\r\n")
        self.data = stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def expect(self, code):
        last = self.reply()[-1]
        if not last.startswith(code):
            raise RuntimeError("unexpected reply %r" % last)

    def send(self):
        if self.pipelining:
            self.sock.sendall(b"".join(self.envelope))
            for code in (b"250", b"250", b"354"):
                self.expect(code)
        else:
            for cmd, code in zip(self.envelope, (b"250", b"250", b"354")):
                self.sock.sendall(cmd)
                self.expect(code)
        self.sock.sendall(self.data)
        self.expect(b"250")

    def quit(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        finally:
            self.sock.close()


def drive(port, senders, seconds):
    """Run ``senders`` persistent connections for ``seconds``; returns (msg/s, messages).

    The connections are opened one after another before any thread starts
    (a burst of connects would overflow a small listen backlog, smtpd's is 5,
    and SYN retransmits would be measured instead of the server)."""
    conns = []
    try:
        for _ in range(senders):
            conns.append(LeanSender(port))
    except (OSError, RuntimeError) as e:
        for c in conns:
            c.sock.close()
        sys.exit(f"connect failed: {e!r}")
    counts = [0] * senders
    errors = []
    go = threading.Event()
    deadline = [0.0]

    def sender(i, c):
        go.wait()
        try:
            while time.monotonic() < deadline[0]:
                c.send()
                counts[i] += 1
            c.quit()
        except Exception as e:            # reported below; a benchmark must not hide failures
            errors.append(repr(e))
            c.sock.close()

    threads = [threading.Thread(target=sender, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    start = time.monotonic()
    deadline[0] = start + seconds
    go.set()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.monotonic() - start
    if errors:
        sys.exit(f"sender failed: {errors[0]}")
    return sum(counts) / elapsed, sum(counts)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return (f"machine: nproc={os.cpu_count()} cpu={model or platform.processor()} "
            f"python={platform.python_version()} peer-python={peer_python()} "
            f"({platform.system()} {platform.release()})")


def measure(args, stamp):
    rows = []
    kinds = servers(args.baseline)
    for n in args.senders:
        rates = {k: [] for k in kinds}
        cpu = {k: [] for k in kinds}
        rss = []
        for run in range(args.runs):
            for kind, start in kinds.items():          # alternating, same conditions
                data = os.path.join(BENCH_DIR, stamp, f"{kind}-{n}-{run}")
                os.makedirs(data)
                srv = start(data)
                try:
                    before = srv.cpu_seconds()
                    rate, count = drive(srv.port, n, args.seconds)
                    cpu[kind].append((srv.cpu_seconds() - before) * 1000 / max(count, 1))
                    if kind == "mailsrv":
                        rss.append(srv.peak_rss_kb())
                finally:
                    srv.stop()
                rates[kind].append(rate)
                print(f"  senders={n:<3} run={run} {kind:<8} {rate:8.1f} msg/s", file=sys.stderr, flush=True)
        rows.append((n, {k: statistics.median(v) for k, v in rates.items()},
                     {k: statistics.median(v) for k, v in cpu.items()}, max(rss)))
    return list(kinds), rows


def profile(args, stamp):
    data = os.path.join(BENCH_DIR, stamp, "profile")
    os.makedirs(data)
    out = os.path.join(data, "mailsrv.prof")
    srv = start_mailsrv(data, profile_to=out)
    try:
        rate, _count = drive(srv.port, 32, args.seconds)
    finally:
        srv.stop()
    print(f"\nprofile: 32 senders, {rate:.1f} msg/s under cProfile (event-loop thread only)")
    stats = pstats.Stats(out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="measurements per server and sender count (median)")
    p.add_argument("--seconds", type=float, default=3.0, help="sending time per measurement")
    p.add_argument("--senders", default="1,8,32", help="comma separated sender counts")
    p.add_argument("--keep", action="store_true", help="keep this run's directories under bench-data/")
    p.add_argument("--profile", action="store_true", help="also profile mailsrv at 32 senders")
    p.add_argument("--baseline", metavar="DIR", help="also measure the mailsrv of this checkout, alternating")
    args = p.parse_args(argv)
    args.senders = [int(x) for x in args.senders.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    print(machine())
    print("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
    print(f"mode: persistent connection per sender, 4096-octet messages, 1 recipient, {args.seconds:g} s per "
          f"measurement, median of {args.runs}; mailsrv fsyncs every message (file and directory), the peers "
          f"(stdlib smtpd, and aiosmtpd when `make bench-peers` installed it, each saving with "
          f"mailbox.Maildir.add) do not")
    try:
        sys.stdout.flush()
        kinds, rows = measure(args, stamp)
        peers = kinds[1:]
        head = f"{'senders':>7}  {'mailsrv msg/s':>13}"
        for peer in peers:
            head += f"  {peer + ' msg/s':>14}  {'ratio':>5}"
        head += f"  {'mailsrv RSS':>11}  {'CPU/msg':>7} " + " ".join(f"{p + ' CPU/msg':>16}" for p in peers)
        print("\n" + head)
        for n, rate, cpu, rss in rows:
            line = f"{n:>7}  {rate['mailsrv']:>13.1f}"
            for peer in peers:
                line += f"  {rate[peer]:>14.1f}  {rate['mailsrv'] / rate[peer]:>5.2f}"
            line += f"  {rss / 1024:>8.1f} MB  {cpu['mailsrv']:>4.2f} ms " + " ".join(
                f"{cpu[p]:>13.2f} ms" for p in peers)
            print(line)
        if args.profile:
            profile(args, stamp)
    finally:
        if not args.keep:
            shutil.rmtree(os.path.join(BENCH_DIR, stamp), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
