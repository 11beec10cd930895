"""IMAP benchmark (`make bench`): not a test, prints a table; mailsrv beside Dovecot.

    python3 tests/bench_imap.py [--messages 10000] [--rounds 5] [--only mailsrv|dovecot]
                                [--idle-connections 1000] [--port HOST:PORT]

What is measured, with the stdlib's imaplib on loopback, on an INBOX of
``--messages`` messages (issue 10 "Benchmark"):

* login + SELECT INBOX on the *first open* (neither the server's UID list nor
  any index or cache of it exists: every file at the Maildir's root but
  ``subscriptions`` is removed, and Dovecot's index directory, while the
  server is stopped) and on a *later open* (a second session of the same
  server process, at least MTIME_SLACK_S + 0.2 s later: store/folder.py
  distrusts directory mtimes younger than that);
* in each of those two sessions: ``UID FETCH 1:* (FLAGS)``,
  ``FETCH 1:* (ENVELOPE)``, ``FETCH 1:* BODY.PEEK[HEADER.FIELDS (FROM SUBJECT
  DATE)]``, ``SEARCH SUBJECT invoice``, ``SEARCH BODY zeppelin``;
* ``STORE 1:* +FLAGS (\\Flagged)`` and the ``-FLAGS`` that restores it;
* APPEND of 1,000 messages (one connection, one APPEND each) into a new
  folder per round;
* IDLE push latency: a session IDLEs on a folder, a second one APPENDs to
  it; the time from the APPEND being sent until the IDLE session reads the
  ``* n EXISTS`` (median of 20 per round);
* QRESYNC SELECT of the INBOX after 10 changes (RFC 7162 §3.2.5;
  tests/bench_imap_qresync.py): its time, and the responses received are
  checked (1 VANISHED (EARLIER) and 7 FETCHes, not 10,000);
* memory of ``--idle-connections`` sessions IDLE on the INBOX, once per
  server after the rounds: the server's RSS before and after, from /proc
  (mailsrv: its one process; Dovecot: the sum over its ``imap`` processes,
  one per session; RSS counts shared pages once per process, so PSS is shown
  too).

Each round starts each server afresh over its own copy of the Maildir; the
servers alternate round by round and every time is the median over the
rounds.  The answers are checked too (counts of FETCH responses and SEARCH
hits against what the corpus holds): a server that answers wrongly gets a
line saying so under the table.

The corpus: ``bench-data/imap/maildir-N/`` (realistic messages, see
``message()``), written once as files (no SMTP) and kept between runs; each
run copies it for each server under ``bench-data/imap/run-PID/`` and removes
those copies only after measuring (this machine's filesystem creates files
slowly for minutes after a mass delete).  mailsrv runs as
``python3 mailsrv.py --config FILE`` (IMAP its only listener, a user added
with ``mailsrv.py user add``), Dovecot from tests/dovecot_imap.py.  A server
that cannot be started gets one line saying why, never a traceback, and the
script always exits 0.  ``--port`` measures an already-running server
instead (user ``--user``/``--password``, INBOX as it is; no first open, no
memory unless ``--pid`` names its process).
"""

import argparse
import imaplib
import os
import platform
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from store.folder import MTIME_SLACK_S  # noqa: E402
from tests import dovecot_imap  # noqa: E402
from tests.bench_imap_qresync import ROW as QRESYNC_ROW, measure_qresync  # noqa: E402
from tests.bench_imap_setup import (BODY_WORD, DATA, PASSWORD, SUBJECT_WORD, USER, Dovecot,  # noqa: E402
                                    External, HASHED_PEER, Mailsrv, Unavailable, build_corpus)

APPENDS = 1000               # issue 10: "APPEND of 1,000 messages"
IDLE_SAMPLES = 20            # issue 10 asks for the IDLE latency; 20 samples give a steady median
IDLE_WAIT = 65               # seconds for an EXISTS: past the 30 s of Dovecot's polling when inotify is
                             # unavailable (mailbox_idle_check_interval), so that shows as a number
TIMEOUT = 600                # seconds for one IMAP command on 10,000 messages on a busy 2-core machine
SOURCES = 100                # client addresses 127.0.0.2.. for the IDLE sessions: 10 each, within a
                             # default per-user-and-address limit of 10 (Dovecot's mail_max_userip_connections)


# ---------------------------------------------------------------------------
# The client side: imaplib
# ---------------------------------------------------------------------------

class Client(imaplib.IMAP4):
    """imaplib from a chosen loopback source address (per-address connection limits)."""

    def __init__(self, host, port, source=None):
        self.source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout=None):
        sock = socket.create_connection((self.host, self.port), timeout, (self.source, 0) if self.source else None)
        # imaplib writes a literal and its CRLF apart: without this, Nagle's algorithm and the
        # server's delayed ACK hold that CRLF up to 40 ms, and APPEND would time the client's TCP
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def ok(result, what):
    typ, data = result
    if typ != "OK":
        raise Unavailable("%s: %s %s" % (what, typ, data[:1]))
    return data


def login(server, source=None):
    c = Client(server.host, server.port, source)
    ok(c.login(server.user, server.password), "LOGIN")
    return c


def login_select(server, mailbox="INBOX"):
    c = login(server)
    return c, int(ok(c.select(mailbox), "SELECT %s" % mailbox)[0])


def responses(data):
    """How many messages a FETCH answered for (imaplib splits literals into tuples)."""
    starts = (d[0] if isinstance(d, tuple) else d for d in data)
    return sum(1 for d in starts if isinstance(d, bytes) and re.match(rb"\d+ \(", d))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


HEADER_FIELDS = "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]"
READS = [  # (row, call, counts what)
    ("UID FETCH 1:* (FLAGS)", lambda c: responses(ok(c.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH")), "messages"),
    ("FETCH 1:* (ENVELOPE)", lambda c: responses(ok(c.fetch("1:*", "(ENVELOPE)"), "FETCH ENVELOPE")), "messages"),
    ("FETCH 1:* " + HEADER_FIELDS,
     lambda c: responses(ok(c.fetch("1:*", "(%s)" % HEADER_FIELDS), "FETCH HEADER.FIELDS")), "messages"),
    ("SEARCH SUBJECT " + SUBJECT_WORD, lambda c: len(ok(c.search(None, "SUBJECT", SUBJECT_WORD), "SEARCH")[0].split()),
     "subject_hits"),
    ("SEARCH BODY " + BODY_WORD, lambda c: len(ok(c.search(None, "BODY", BODY_WORD), "SEARCH")[0].split()),
     "body_hits"),
]


def measure_reads(server, label, out, counts, failures):
    """login+SELECT and every READS row in one session; the rows get ``label``.
    A command the server refuses is a line in ``failures``; the next row goes on."""
    t, (c, exists) = timed(lambda: login_select(server))
    out["login+SELECT INBOX, " + label] = t
    counts["SELECT EXISTS"] = exists
    for row, call, what in READS:
        try:
            t, n = timed(lambda: call(c))
        except imaplib.IMAP4.abort:
            raise                         # the connection is gone: the step fails
        except (Unavailable, imaplib.IMAP4.error) as e:     # a NO or BAD: the session is still usable
            failures.append("%s: %s" % (label, e))
            continue
        out[row + ", " + label] = t
        counts[row + ", " + label] = (n, what)
    c.logout()


def row_order(first_label):
    """The rows in the order they are measured (the table's order, whichever server answered)."""
    rows = []
    for label in (first_label, "later open"):
        rows += ["login+SELECT INBOX, " + label] + [row + ", " + label for row, _call, _what in READS]
    return rows + ["STORE 1:* +FLAGS (\\Flagged)", "STORE 1:* -FLAGS (\\Flagged)", "APPEND 1,000 messages",
                   "IDLE push latency (median of %d)" % IDLE_SAMPLES, QRESYNC_ROW]


def measure_store(server, out, counts):
    c, _ = login_select(server)
    t, data = timed(lambda: ok(c.store("1:*", "+FLAGS", "(\\Flagged)"), "STORE +FLAGS"))
    out["STORE 1:* +FLAGS (\\Flagged)"] = t
    t, _ = timed(lambda: ok(c.store("1:*", "-FLAGS", "(\\Flagged)"), "STORE -FLAGS"))
    out["STORE 1:* -FLAGS (\\Flagged)"] = t
    counts["STORE +FLAGS"] = (responses(data), "messages")
    c.logout()


def measure_append(server, corpus, folder, out, counts):
    """APPENDS messages of the corpus (its first ones, as they are on disk) into a new folder."""
    names = sorted(os.listdir(os.path.join(corpus, "cur")))[:APPENDS]
    bodies = []
    for name in names:
        with open(os.path.join(corpus, "cur", name), "rb") as f:
            bodies.append(f.read().replace(b"\n", b"\r\n"))
    c = login(server)
    ok(c.create(folder), "CREATE")

    def append_all():
        for body in bodies:
            ok(c.append(folder, None, None, body), "APPEND")
    out["APPEND 1,000 messages"], _ = timed(append_all)
    status = ok(c.status(folder, "(MESSAGES)"), "STATUS")[0]
    counts["APPEND then STATUS MESSAGES"] = (int(re.search(rb"MESSAGES (\d+)", status).group(1)), len(bodies))
    c.logout()


class IdleReader(threading.Thread):
    """Reads an IDLE session's lines; each ``* n EXISTS`` goes to ``seen`` with its time."""

    def __init__(self, c, tag):
        super().__init__(daemon=True)
        self.c, self.tag, self.seen, self.error = c, tag, queue.Queue(), None

    def run(self):
        try:
            while True:
                line = self.c.readline()
                if not line or line.startswith(self.tag + b" "):
                    return
                m = re.match(rb"\* (\d+) EXISTS", line)
                if m:
                    self.seen.put((int(m.group(1)), time.perf_counter()))
        except OSError as e:
            self.error = e


def start_idle(c, tag=b"IDLE1"):
    """Send IDLE (RFC 2177) by hand (imaplib before 3.14 has no idle()); wait for the continuation."""
    c.send(tag + b" IDLE\r\n")
    while True:
        line = c.readline()
        if not line or line.startswith(tag + b" "):
            raise Unavailable("IDLE refused: %r" % line[:200])
        if line.startswith(b"+"):
            return


def measure_idle_latency(server, folder, out, counts):
    """IDLE_SAMPLES APPENDs by a second session; from APPEND sent to EXISTS read by the IDLE one."""
    setup = login(server)
    if setup.select(folder)[0] != "OK":
        ok(setup.create(folder), "CREATE")
    setup.logout()
    idler, exists = login_select(server, folder)
    start_idle(idler)
    reader = IdleReader(idler, b"IDLE1")
    reader.start()
    writer = login(server)
    samples = []
    for i in range(IDLE_SAMPLES):
        t0 = time.perf_counter()
        ok(writer.append(folder, None, None, b"Subject: idle %d\r\n\r\nping\r\n" % i), "APPEND")
        while True:
            try:
                n, t1 = reader.seen.get(timeout=IDLE_WAIT)
            except queue.Empty:
                raise Unavailable("no EXISTS within %d s of an APPEND by another session (IDLE)" % IDLE_WAIT) from None
            if n >= exists + i + 1:
                break
        samples.append(t1 - t0)
    idler.send(b"DONE\r\n")
    reader.join(30)
    for c in (idler, writer):
        c.logout()
    out["IDLE push latency (median of %d)" % IDLE_SAMPLES] = statistics.median(samples)


def measure_idle_memory(server, count):
    """(RSS before, RSS after, PSS before, PSS after) in kB around ``count`` sessions IDLE on INBOX."""
    rss0, pss0 = server.memory()
    sessions = []
    try:
        for i in range(count):
            try:
                c = login(server, "127.0.0.%d" % (2 + i % SOURCES))
                ok(c.select("INBOX"), "SELECT")
                start_idle(c)
            except (OSError, imaplib.IMAP4.error, Unavailable) as e:
                raise Unavailable("IDLE session %d of %d: %s" % (i + 1, count, one_line(e))) from None
            sessions.append(c)
        time.sleep(1)                   # let the last sessions' processes settle before reading /proc
        rss1, pss1 = server.memory()
    finally:
        for c in sessions:
            c.shutdown()
    return rss0, rss1, pss0, pss1


def one_line(e):
    text = str(e).strip().splitlines()
    return "%s: %s" % (type(e).__name__, text[0][:300] if text else "")


def measure_round(server, corpus, rnd, first_open):
    """One round on a freshly started server: ({row: seconds}, {check: (got, expected)}, [failures]).

    A step that fails (a command refused, an answer imaplib cannot parse, a
    timeout) is one line in the failures and the round goes on with the next
    step in new sessions: a server still missing one command is measured on
    the others."""
    out, counts, failures = {}, {}, []
    if first_open:
        server.forget_state()
    server.start()
    label = "first open" if first_open else "open"
    steps = [(label, lambda: measure_reads(server, label, out, counts, failures)),
             ("later open", lambda: (time.sleep(MTIME_SLACK_S + 0.2),     # see the module docstring
                                     measure_reads(server, "later open", out, counts, failures))),
             ("STORE", lambda: measure_store(server, out, counts)),
             ("APPEND", lambda: measure_append(server, corpus, "Append-%d-%d" % (os.getpid(), rnd), out, counts)),
             ("IDLE", lambda: measure_idle_latency(server, "Idle", out, counts)),
             ("QRESYNC", lambda: measure_qresync(server, login, out, counts))]
    try:
        for what, step in steps:
            try:
                step()
            except Exception as e:     # a benchmark reports a server's failure in one line and goes on
                failures.append("%s: %s" % (what, str(e) if isinstance(e, Unavailable) else one_line(e)))
    finally:
        server.stop()
    return out, counts, failures


# ---------------------------------------------------------------------------
# Running it, the table
# ---------------------------------------------------------------------------

def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    return "nproc %d, %s, Python %s (%s)" % (os.cpu_count() or 0, model, platform.python_version(),
                                              platform.platform())


def make_servers(args, corpus, work):
    """The servers to measure; one line for each that cannot be set up."""
    if args.port:
        return [External(args.only or "server", args.port, args.pid, args.user, args.password)]
    servers = []
    settings = dict(kv.split("=", 1) for kv in args.mailsrv_set)
    for name in ("mailsrv", "dovecot"):
        if args.only and args.only != name:
            continue
        try:
            print("setting up %s (its own copy of the corpus) ..." % name, flush=True)
            if name == "mailsrv":
                servers.append(Mailsrv(os.path.join(work, name), corpus, settings))
            else:
                servers.append(Dovecot(os.path.join(work, name), corpus, HASHED_PEER if args.dovecot_hashed else None))
                print("peer: Dovecot %s (imap, maildir, default fsync settings, password %s)" % (
                    dovecot_imap.version_text(), "%s rounds=%d" % HASHED_PEER if args.dovecot_hashed else "{PLAIN}"))
        except (Unavailable, OSError, subprocess.SubprocessError) as e:
            print("%s: not measured: %s" % (name, one_line(e) if not isinstance(e, Unavailable) else e))
    return servers


def run_rounds(servers, corpus, rounds, first_open):
    """Alternating servers round by round; a server that cannot start is dropped with one line,
    each failed step is printed once."""
    results = {s.name: [] for s in servers}
    live, said = list(servers), set()
    for rnd in range(1, rounds + 1):
        for server in list(live if rnd % 2 else live[::-1]):
            try:
                out, counts, failures = measure_round(server, corpus, rnd, first_open)
            except (Unavailable, OSError, subprocess.SubprocessError) as e:
                msg = str(e) if isinstance(e, Unavailable) else one_line(e)
                print("%s: round %d failed, dropped from the run: %s" % (server.name, rnd, msg), flush=True)
                live.remove(server)
                server.stop()
                continue
            results[server.name].append((out, counts))
            for failure in failures + server.notes():
                if (server.name, failure) not in said:
                    said.add((server.name, failure))
                    print("%s: round %d: %s" % (server.name, rnd, failure), flush=True)
        print("round %d of %d done" % (rnd, rounds), flush=True)
    return results


def run_memory(servers, count):
    out = {}
    for server in servers:
        try:
            server.start()
            try:
                out[server.name] = measure_idle_memory(server, count)
            finally:
                server.stop()
                for note in server.notes():
                    print("%s: memory of %d IDLE sessions: %s" % (server.name, count, note), flush=True)
        except (Unavailable, OSError, imaplib.IMAP4.error, EOFError) as e:
            msg = str(e) if isinstance(e, Unavailable) else one_line(e)
            print("%s: memory of %d IDLE sessions not measured: %s" % (server.name, count, msg), flush=True)
    return out


def print_table(results, memory, names, facts, count, rounds, idle_count):
    measured = {r for name in names for out, _counts in results.get(name, []) for r in out}
    order = row_order("first open") + row_order("open")
    rows = sorted(measured, key=lambda r: order.index(r) if r in order else len(order))
    print("\nIMAP, medians of %d rounds (seconds); INBOX of %d messages, APPEND %d" % (rounds, count, APPENDS))
    cols = names + (["ratio"] if len(names) == 2 else [])
    print("%-66s" % "" + "".join("%12s" % c for c in cols))
    for row in rows:
        values = []
        for name in names:
            got = [out[row] for out, _c in results.get(name, []) if row in out]
            values.append(statistics.median(got) if got else None)
        line = "%-66s" % row + "".join("%12.4f" % v if v is not None else "%12s" % "-" for v in values)
        if len(names) == 2 and None not in values and values[1] > 0:
            line += "%12.2f" % (values[0] / values[1])
        print(line)
    for i, label in ((0, "RSS"), (2, "PSS")) if idle_count else ():
        line = "%-66s" % ("{:,} sessions IDLE on INBOX: {} added (MB)".format(idle_count, label))
        values = [(memory[n][i + 1] - memory[n][i]) / 1024 if n in memory else None for n in names]
        line += "".join("%12.1f" % v if v is not None else "%12s" % "-" for v in values)
        if len(names) == 2 and None not in values and values[1] > 0:
            line += "%12.2f" % (values[0] / values[1])
        print(line)
    if len(names) == 2:
        print("ratio: %s / %s (below 1: %s is faster or smaller)" % (names[0], names[1], names[0]))
    if "dovecot" in names and idle_count:
        print("Dovecot's memory: the sum over its imap processes, one per session.")
    check_answers(results, names, facts)


def check_answers(results, names, facts):
    """Every answer against the corpus: counts of FETCH responses, SEARCH hits, APPENDed messages."""
    expected = dict(facts)
    wrong = []
    for name in names:
        for rnd, (_out, counts) in enumerate(results.get(name, []), 1):
            for check, value in counts.items():
                if check == "SELECT EXISTS":
                    got, want = value, facts["messages"]
                else:
                    got, what = value
                    want = expected.get(what, what)
                if got != want:
                    wrong.append("%s round %d: %s: %s, expected %s" % (name, rnd, check, got, want))
    for line in wrong[:20]:
        print("WRONG ANSWER " + line)
    if not wrong:
        print("answers checked (of the steps measured): every FETCH answered for all %d messages, SEARCH SUBJECT "
              "%s found %d, SEARCH BODY %s found %d, every APPEND arrived, the QRESYNC SELECT received 8 "
              "responses (1 VANISHED (EARLIER) naming the 3 expunged, 7 FETCH)"
              % (facts["messages"], SUBJECT_WORD, facts["subject_hits"], BODY_WORD, facts["body_hits"]))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000, help="messages in the INBOX (default 10000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per server, alternating (default 5)")
    ap.add_argument("--only", choices=["mailsrv", "dovecot"], help="measure one server")
    ap.add_argument("--idle-connections", type=int, default=1000, help="sessions for the memory row (0: skip)")
    ap.add_argument("--port", metavar="HOST:PORT", help="measure an already-running server (INBOX as it is)")
    ap.add_argument("--user", default=USER)
    ap.add_argument("--password", default=PASSWORD)
    ap.add_argument("--pid", type=int, help="with --port: the server's process, for the memory row")
    ap.add_argument("--dovecot-hashed", action="store_true",
                    help="the Dovecot peer's passwd-file holds a %s hash (rounds=%d, about our scrypt's cost), "
                         "not {PLAIN}" % HASHED_PEER)
    ap.add_argument("--mailsrv-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra mailsrv configuration key (repeatable)")
    args = ap.parse_args()
    if args.messages < APPENDS:
        ap.error("--messages must be at least %d (APPEND sends that many of the corpus)" % APPENDS)
    return args


def main():
    args = parse_args()
    print(machine())
    corpus, facts = build_corpus(args.messages)
    work = os.path.join(DATA, "run-%d" % os.getpid())
    try:
        servers = make_servers(args, corpus, work)
        if not servers:
            print("nothing to measure")
            return
        results = run_rounds(servers, corpus, args.rounds, first_open=not args.port)
        servers = [s for s in servers if results[s.name]]
        if not servers:
            print("no server measured")
            return
        memory = run_memory(servers, args.idle_connections) if args.idle_connections else {}
        print_table(results, memory, [s.name for s in servers], facts, args.messages, args.rounds,
                    args.idle_connections)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        for server in locals().get("servers", []):
            server.stop()
        remove_copies(work)


def remove_copies(work):
    """This run's copies, and those of interrupted runs: after measuring, never before."""
    stale = [os.path.join(DATA, d) for d in os.listdir(DATA)
             if re.match(r"run-\d+$", d) and (os.path.join(DATA, d) == work or not alive(int(d[4:])))]
    if stale:
        print("removing the servers' copies (%s) ..." % ", ".join(os.path.basename(p) for p in stale), flush=True)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


if __name__ == "__main__":
    main()
