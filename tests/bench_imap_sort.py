"""IMAP SORT / THREAD benchmark (RFC 5256): not a test, prints a table; mailsrv beside Dovecot.

    python3 tests/bench_imap_sort.py [--messages 10000] [--rounds 5] [--only mailsrv|dovecot]

Measures ``SORT (DATE) UTF-8 ALL`` and ``THREAD REFERENCES UTF-8 ALL`` over
the INBOX (issue 12 "Benchmark"), over loopback, each command on its own:
the server is started afresh over a folder whose state is forgotten (no
uid list, no cache, no index: tests/bench_imap_setup.forget_state, Dovecot's
index directory reset), a session logs in and selects the INBOX (untimed),
then the command is timed four times: the *first* run (every message's
header read), a *later* run in the same session, a *later* run in a new
session, and one more after an APPEND of one message (the folder changed:
no answer kept from before can serve it; mailsrv sorts from its per-folder
columns, Dovecot from its index and cache files).  The time is from sending the command until the tagged OK is read.
The servers and the order of the two commands alternate round by round;
every number is the median over the rounds.  The answers are checked: the
SORT must name every message once, and the two servers' answers are
compared (the same order and the same threads are expected: both follow
RFC 5256 to the letter on this corpus).

The corpus and the servers are those of tests/bench_imap.py
(tests/bench_imap_setup.py: ``bench-data/imap/maildir-N``, each server on
its own copy).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.bench_imap import machine, one_line, remove_copies  # noqa: E402
from tests.bench_imap_compress import Session  # noqa: E402
from tests.bench_imap_setup import DATA, Dovecot, Mailsrv, Unavailable, build_corpus  # noqa: E402

COMMANDS = (b"SORT (DATE) UTF-8 ALL", b"THREAD REFERENCES UTF-8 ALL")
RUNS = ("first", "later, same session", "later, new session", "later, after an APPEND")
# The message appended before the last run: the folder changed, so neither
# server can give a kept answer; it sorts first by date (1990).
APPENDED = (b"Date: Mon, 1 Jan 1990 00:00:00 +0000\r\nFrom: Ann <ann@example.org>\r\n"
            b"Subject: appended\r\nMessage-ID: <appended@example.org>\r\n\r\nHello.\r\n")


def session(server):
    s = Session(server.host, server.port)
    s.command(b"L", b'LOGIN "%s" "%s"' % (server.user.encode(), server.password.encode()))
    s.command(b"S", b"SELECT INBOX")
    return s


def timed(s, command):
    """(seconds, the untagged answer line) of one command."""
    t0 = time.perf_counter()
    out, _wire = s.command(b"T", command)
    seconds = time.perf_counter() - t0
    m = re.search(rb"^\* (?:SORT|THREAD)[^\r\n]*", out, re.M)
    return seconds, m.group() if m else b""


def measure_command(server, command):
    """{run: (seconds, answer)} from a fresh start with the state forgotten."""
    server.forget_state()
    server.start()
    try:
        out = {}
        s = session(server)
        try:
            out[RUNS[0]] = timed(s, command)
            out[RUNS[1]] = timed(s, command)
        finally:
            s.close()
        s = session(server)
        try:
            out[RUNS[2]] = timed(s, command)
            s.command(b"A", b"APPEND INBOX {%d+}\r\n" % len(APPENDED) + APPENDED)
            s.command(b"N", b"NOOP")
            out[RUNS[3]] = timed(s, command)
            s.command(b"D", b"STORE * +FLAGS.SILENT (\\Deleted)")     # the corpus as it was
            s.command(b"E", b"EXPUNGE")
        finally:
            s.close()
        return out
    finally:
        server.stop()


def measure_round(server, rnd):
    order = COMMANDS if rnd % 2 else COMMANDS[::-1]
    return {command: measure_command(server, command) for command in order}


def make_servers(args, corpus, work):
    servers = []
    for name in ("mailsrv", "dovecot"):
        if args.only and args.only != name:
            continue
        try:
            print("setting up %s (its own copy of the corpus) ..." % name, flush=True)
            servers.append(Mailsrv(os.path.join(work, name), corpus, {}) if name == "mailsrv"
                           else Dovecot(os.path.join(work, name), corpus))
        except (Unavailable, OSError, subprocess.SubprocessError) as e:
            print("%s: not measured: %s" % (name, e if isinstance(e, Unavailable) else one_line(e)))
    return servers


def run_rounds(servers, rounds):
    results = {s.name: [] for s in servers}
    live = list(servers)
    for rnd in range(1, rounds + 1):
        for server in list(live if rnd % 2 else live[::-1]):
            try:
                results[server.name].append(measure_round(server, rnd))
            except (Unavailable, OSError, subprocess.SubprocessError) as e:
                print("%s: round %d failed, dropped: %s" % (server.name, rnd,
                                                           e if isinstance(e, Unavailable) else one_line(e)))
                live.remove(server)
        print("round %d of %d done" % (rnd, rounds), flush=True)
    return results


def check_answers(results, names, count):
    """Lines about the answers: SORT names each message once; the servers agree."""
    lines = []
    answers = {}
    for n in names:
        for r in results[n]:
            for command, runs in r.items():
                for run, (_s, answer) in runs.items():
                    answers.setdefault((n, command, run == RUNS[3]), set()).add(answer)
                    numbers = answer.split()[2:]
                    expected = count + (run == RUNS[3])
                    if command.startswith(b"SORT") and sorted(map(int, numbers)) != list(range(1, expected + 1)):
                        lines.append("WRONG ANSWER %s: %s (%s) named %d messages, expected %d once each"
                                     % (n, command.decode(), run, len(numbers), expected))
    for n in names:
        for command in COMMANDS:
            if len(answers.get((n, command, False), ())) > 1:
                lines.append("%s: %s answered differently from run to run" % (n, command.decode()))
    if len(names) == 2:
        for command in COMMANDS:
            a, b = (answers.get((n, command, False), set()) | answers.get((n, command, True), set())
                    for n in names)
            if a and b:
                lines.append("%s: the two servers' answers %s" % (command.decode(), "agree" if a == b else "DIFFER"))
    return lines


def print_table(results, names, count, rounds):
    print("\nSORT / THREAD over %d messages, seconds, medians of %d rounds" % (count, rounds))
    cols = names + (["ratio"] if len(names) == 2 else [])
    print("%-52s" % "" + "".join("%12s" % c for c in cols))
    for command in COMMANDS:
        for run in RUNS:
            values = [statistics.median(r[command][run][0] for r in results[n]) if results[n] else None
                      for n in names]
            line = "%-52s" % ("%s, %s" % (command.decode(), run)) + "".join(
                "%12.3f" % v if v is not None else "%12s" % "-" for v in values)
            if len(names) == 2 and None not in values and values[1]:
                line += "%12.2f" % (values[0] / values[1])
            print(line)
    for line in check_answers(results, names, count):
        print(line)
    if len(names) == 2:
        print("ratio: %s / %s" % (names[0], names[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["mailsrv", "dovecot"])
    args = ap.parse_args()
    print(machine())
    corpus, facts = build_corpus(args.messages)
    work = os.path.join(DATA, "run-%d" % os.getpid())
    servers = []
    try:
        servers = make_servers(args, corpus, work)
        if servers:
            results = run_rounds(servers, args.rounds)
            print_table(results, [s.name for s in servers], facts["messages"], args.rounds)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        for server in servers:
            server.stop()
        remove_copies(work)


if __name__ == "__main__":
    main()
