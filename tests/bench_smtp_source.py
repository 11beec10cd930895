"""SMTP receive beside aiosmtpd and Postfix, loaded by Postfix's smtp-source (issue 14's
benchmark; `make bench`): not a test, prints a table.

    python3 tests/bench_smtp_source.py [--runs 3] [--messages 2000 | --seconds S]
                                       [--sessions 1,8,32,128] [--workers 1,2] [--keep]

The load: Postfix's own test generator, ``smtp-source`` (Debian package
postfix), ``-s SESSIONS`` parallel sessions on persistent connections (``-d``:
every session sends its next message over the same connection; a successful
transaction needs no RSET, RFC 5321 §4.1.1.4), ``-m MESSAGES`` in all,
``-l 4096`` octets of body each (plus smtp-source's few header fields), one
recipient, no pipelining (smtp-source has none).  ``-N`` is not used: every
message goes to the one user the servers know.  ``--seconds S`` instead of
``--messages``: smtp-source runs with ``-c`` (a counter per completed DATA)
and is stopped after S seconds; the count is the counter's last value.

The servers, in the same run, alternating (A B C D, A B C D, ...), each
measurement with a fresh data directory made before the clock starts:

* ``mailsrv w=1``: ``python3 mailsrv.py`` with one process;
* ``mailsrv w=N`` for each N > 1 in ``--workers``: the config file says
  ``workers = N`` (issue 14).  Only when this checkout has the key (``python3
  mailsrv.py config-example`` lists it); else the row says it was skipped;
* ``aiosmtpd``: the issue's reference, a handler storing into a
  ``mailbox.Maildir``, from the venv ``make bench-peers`` builds under
  bench-data/.  ``Maildir.add`` fsyncs the file in tmp/ (the stdlib's
  ``_sync_close``) but not the directory it is linked into, and does it in
  the event loop's thread: its 250 is not durable (the name in new/ can be
  lost in a crash), and every session waits for every other's fsync;
* ``postfix``: a throwaway instance (tests/postfix_instance.py): smtpd ->
  cleanup -> queue -> qmgr -> virtual(8) -> the Maildir of one virtual user.
  Its 250 comes once the queue file is fsync'd; the message is in the
  Maildir later.  Both are reported: ``postfix`` (the 250s) and ``postfix
  in Maildir`` (until the last message is delivered).  Its
  ``default_process_limit`` is raised to 200 (one smtpd per session: the
  default 100 would leave 28 of 128 sessions waiting).

Every session comes from 127.0.0.1: mailsrv's ``max_connections_per_ip`` is
raised to 200 (its default 50 answers the 51st session 421), as Postfix's
process limit is; Postfix exempts $mynetworks from its per-client limits.

mailsrv's and Postfix's 250 both mean the message is on disk (file and
directory fsync'd); aiosmtpd's does not (file only).  mailsrv logs at WARNING (no line per
message); Postfix writes its usual maillog lines (postlogd); aiosmtpd logs
nothing.

msg/s: messages / wall time of smtp-source (connecting included).  CPU
ms/msg: the user+system CPU of the server's process tree during the
measurement (/proc/<pid>/stat of the root and every live descendant, plus the
cutime/cstime of reaped children: Postfix's master and all its daemons;
mailsrv's supervisor and its workers), divided by the messages; for Postfix
until the last message is in the Maildir (its delivery work included).
Medians of ``--runs``.  This run's directories under bench-data/ are removed
only after the last measurement (``--keep`` keeps them): never a mass delete
right before a measurement (this filesystem creates files slowly for minutes
after one).
"""

import argparse
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.bench_proc import ServerProcess  # noqa: E402
from tests.bench_smtp import AIOSMTPD_PEER, AIOSMTPD_VENV, BENCH_DIR, aiosmtpd_python  # noqa: E402
from tests.postfix_instance import PostfixInstance, free_port, skip_reason  # noqa: E402

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
RCPT = "bob@example.test"
SENDER = "a@elsewhere.test"
BODY_OCTETS = 4096              # smtp-source -l: the body; its header fields come on top
POSTFIX_SETTINGS = {"default_process_limit": "200"}   # > 128 sessions, one smtpd each
MAX_PER_IP = 200                # mailsrv's max_connections_per_ip (default 50): every session is 127.0.0.1
DELIVERY_WAIT = 600.0           # bound on waiting for Postfix's deliveries (seconds)
POLL = 0.05                     # Maildir polling interval while Postfix delivers
CLK_TCK = os.sysconf("SC_CLK_TCK")



# ---------------------------------------------------------------------- CPU of a process tree
def tree_cpu(root: int) -> float:
    """User+system CPU seconds of ``root`` and its live descendants, each with the
    cutime/cstime of its reaped children (proc(5) stat fields 14-17)."""
    own, children = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                    # gone meanwhile
        pid = int(name)
        own[pid] = sum(int(x) for x in fields[11:15])
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += own.get(pid, 0)
        todo += children.get(pid, [])
    return total / CLK_TCK


def count_files(directory: str) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------- the servers
class Subprocess(ServerProcess):
    """A server (tests/bench_proc.py) and the Maildir new/ its messages land in."""

    def __init__(self, argv, maildir_new: str):
        super().__init__(argv)
        self.maildir_new = maildir_new
        self.root = self.proc.pid


def mailsrv_has_workers() -> bool:
    """Does this checkout know the ``workers`` key (issue 14)?"""
    out = subprocess.run([sys.executable, "mailsrv.py", "config-example"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, timeout=120).stdout.decode()
    return re.search(r"^workers\s*=", out, re.M) is not None


def start_mailsrv(data: str, workers: int, has_workers: bool) -> Subprocess:
    os.makedirs(data)
    add = subprocess.run([sys.executable, "mailsrv.py", "user", "add", RCPT, "--data", data], cwd=ROOT,
                         input=b"bench-secret\n", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    if add.returncode:
        sys.exit("user add failed: %s" % add.stderr.decode())
    conf = os.path.join(data, "mailsrv.conf")
    with open(conf, "w") as f:
        f.write("[mailsrv]\nmax_connections_per_ip = %d\n" % MAX_PER_IP)
        if has_workers:             # the default is the number of cores: say 1 too
            f.write("workers = %d\n" % workers)
    argv = [sys.executable, "mailsrv.py", "--config", conf, "--data", data, "--hostname", "mx.example.test",
            "--domain", "example.test", "--smtp-port", "0", "--log-level", "WARNING"]
    for proto in ("submission", "smtps", "pop3", "pop3s", "imap", "imaps"):
        argv += ["--%s-port" % proto, "off"]
    return Subprocess(argv, os.path.join(data, "mail", "example.test", "bob", "new"))


def start_aiosmtpd(data: str) -> Subprocess:
    os.makedirs(data)
    box = os.path.join(data, "Maildir")
    return Subprocess([aiosmtpd_python(), "-c", AIOSMTPD_PEER, box], os.path.join(box, "new"))


class Postfix:
    """A throwaway Postfix (tests/postfix_instance.py) delivering to one virtual user."""

    def __init__(self, data: str):
        self.port = free_port()
        self.instance = PostfixInstance(self.port, directory=data, domain="example.test",
                                        mailboxes=[(RCPT, "example.test/bob/")], settings=POSTFIX_SETTINGS)
        try:
            self.instance.start()
            self.root = self.instance.master_pid()
        except BaseException:
            self.instance.stop(remove=False)
            raise
        self.maildir_new = os.path.join(self.instance.maildir("bob"), "new")

    def stop(self):
        self.instance.stop(remove=False)      # removed with the whole run at the end


def servers(worker_counts, has_workers):
    """[(label, start(data) or None, why skipped)] in the order they alternate."""
    out = []
    for n in worker_counts:
        if n > 1 and not has_workers:
            out.append(("mailsrv w=%d" % n, None, "this checkout has no `workers` key "
                        "(python3 mailsrv.py config-example does not list it)"))
        else:
            out.append(("mailsrv w=%d" % n, lambda data, n=n: start_mailsrv(data, n, has_workers), ""))
    out.append(("aiosmtpd", start_aiosmtpd if aiosmtpd_python() else None,
                "no aiosmtpd in %s (make bench-peers)" % os.path.relpath(AIOSMTPD_VENV, ROOT)))
    why = skip_reason()
    out.append(("postfix", None if why else Postfix, why or ""))
    return out


# ---------------------------------------------------------------------- the load
def smtp_source_argv(port: int, sessions: int, messages: int, counter: bool):
    return ([SMTP_SOURCE] + (["-c"] if counter else []) +
            ["-d", "-s", str(sessions), "-m", str(messages), "-l", str(BODY_OCTETS),
             "-f", SENDER, "-t", RCPT, "-M", "bench.test", "127.0.0.1:%d" % port])


def load(port: int, sessions: int, args) -> int:
    """Run smtp-source against ``port``; the messages it completed."""
    if args.seconds is None:
        proc = subprocess.run(smtp_source_argv(port, sessions, args.messages, False), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=3600)
        if proc.returncode:
            sys.exit("smtp-source failed (%d): %s" % (proc.returncode, proc.stdout.decode(errors="replace")[-500:]))
        return args.messages
    proc = subprocess.Popen(smtp_source_argv(port, sessions, 10 ** 9, True), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    deadline, tail = time.monotonic() + args.seconds, b""
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        if left <= 0:
            break
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                sys.exit("smtp-source ended early (%s)" % proc.wait())
            tail = (tail + chunk)[-64:]
    proc.terminate()
    proc.wait(30)
    proc.stdout.close()
    counts = re.findall(rb"(\d+)\r", tail)
    return int(counts[-1]) if counts else 0


def measure_one(start, data: str, sessions: int, args):
    """One measurement: {"rate", "cpu", and for Postfix "delivered"} (CPU in ms per message)."""
    srv = start(data)
    try:
        cpu0, t0 = tree_cpu(srv.root), time.monotonic()
        messages = load(srv.port, sessions, args)
        t1 = time.monotonic()
        out = {"rate": messages / (t1 - t0)}
        # --seconds: smtp-source is stopped mid-flight, and its counter may count a message per
        # session whose reply had not come yet
        least = messages - (sessions if args.seconds else 0)
        if isinstance(srv, Postfix):
            deadline = t1 + DELIVERY_WAIT
            while count_files(srv.maildir_new) < least and time.monotonic() < deadline:
                time.sleep(POLL)    # polling a directory: Postfix tells us nothing
            out["delivered"] = messages / (time.monotonic() - t0)
        out["cpu"] = (tree_cpu(srv.root) - cpu0) * 1000 / max(messages, 1)
        stored = count_files(srv.maildir_new)
    finally:
        srv.stop()
    if stored < least:
        sys.exit("%s: %d messages acknowledged, %d in the Maildir" % (data, messages, stored))
    return out


def measure(args, stamp, kinds):
    """{(sessions, label): [measurement, ...]}, the servers alternating within each run."""
    results = {}
    for n in args.sessions:
        for run in range(args.runs):
            for label, start, _why in kinds:
                if start is None:
                    continue
                data = os.path.join(BENCH_DIR, stamp, "%s-s%d-r%d" % (label.replace(" ", "").replace("=", ""),
                                                                   n, run))
                got = measure_one(start, data, n, args)
                results.setdefault((n, label), []).append(got)
                extra = ", in Maildir %.1f msg/s" % got["delivered"] if "delivered" in got else ""
                print("  sessions=%-3d run=%d %-12s %8.1f msg/s %6.2f ms CPU/msg%s"
                      % (n, run, label, got["rate"], got["cpu"], extra), file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------- the report
def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return "machine: %s, %d cores, %s %s, Python %s" % (model or platform.processor() or "?", os.cpu_count(),
                                                          platform.system(), platform.release(),
                                                          platform.python_version())


def rows(results, kinds, sessions):
    """Table rows: (sessions, server, msg/s, CPU ms/msg, runs, note) as strings."""
    out = []
    for n in sessions:
        base = {}
        for label, start, why in kinds:
            got = results.get((n, label))
            if not got:
                out.append((str(n), label, "-", "-", "0", "skipped (below)"))
                continue
            rate = statistics.median(g["rate"] for g in got)
            cpu = statistics.median(g["cpu"] for g in got)
            base[label] = rate
            note = {"aiosmtpd": "file fsync'd, directory not (not durable)",
                    "postfix": "at smtpd's 250 (queue file fsync'd)"}.get(label, "fsync'd before 250")
            out.append((str(n), label, "%.1f" % rate, "%.2f" % cpu, str(len(got)), note))
            if "delivered" in got[0]:
                out.append((str(n), "postfix in Maildir", "%.1f" % statistics.median(g["delivered"] for g in got),
                            "(above)", str(len(got)), "until the last message is in the Maildir"))
        ours = base.get("mailsrv w=1")
        if ours:
            ratios = ["%s %.2fx" % (k, max(v for lk, v in base.items() if lk.startswith("mailsrv")) / v)
                      for k, v in base.items() if not k.startswith("mailsrv")]
            if ratios:
                out.append(("", "best mailsrv vs", "", "", "", ", ".join(ratios)))
    return out


def print_table(table):
    head = ("sessions", "server", "msg/s", "CPU ms/msg", "runs", "")
    widths = [max(len(r[i]) for r in table + [head]) for i in range(5)]
    fmt = "%*s  %-*s  %*s  %*s  %*s  %s"
    for r in [head] + table:
        print((fmt % (widths[0], r[0], widths[1], r[1], widths[2], r[2], widths[3], r[3], widths[4], r[4],
                      r[5])).rstrip())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="measurements per server and session count (median)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--messages", type=int, default=2000, help="messages per measurement, all sessions together")
    how.add_argument("--seconds", type=float, help="sending time per measurement instead of --messages")
    p.add_argument("--sessions", default="1,8,32,128", help="comma separated smtp-source -s values")
    p.add_argument("--workers", default="1,2", help="comma separated mailsrv process counts (N > 1: workers = N)")
    p.add_argument("--keep", action="store_true", help="keep this run's directories under bench-data/")
    args = p.parse_args(argv)
    args.sessions = [int(x) for x in args.sessions.split(",")]
    if not os.path.exists(SMTP_SOURCE):
        sys.exit("smtp-source not found (Debian: apt-get install postfix)")
    kinds = servers([int(x) for x in args.workers.split(",")], mailsrv_has_workers())
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-%d" % os.getpid()
    print(machine())
    print("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("load: smtp-source -d -s SESSIONS -l %d, %s per measurement, 1 recipient, no pipelining; "
          "medians of %d, servers alternating" % (BODY_OCTETS, "%g s" % args.seconds if args.seconds
                                                   else "%d messages" % args.messages, args.runs))
    sys.stdout.flush()
    try:
        results = measure(args, stamp, kinds)
        print()
        print_table(rows(results, kinds, args.sessions))
        for label, start, why in kinds:
            if start is None:
                print("%s skipped: %s" % (label, why))
        print("\nmailsrv and Postfix answer 250 once the message is fsync'd (file and directory); aiosmtpd "
              "(mailbox.Maildir.add) fsyncs the file but not the directory: its 250 is not durable.", flush=True)
    finally:
        if not args.keep:       # only now: a mass delete slows this file system for minutes
            shutil.rmtree(os.path.join(BENCH_DIR, stamp), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
