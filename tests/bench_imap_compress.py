"""IMAP COMPRESS=DEFLATE benchmark (RFC 4978): not a test, prints a table; mailsrv beside Dovecot.

    python3 tests/bench_imap_compress.py [--messages 10000] [--rounds 5] [--only mailsrv|dovecot]

Measures a full ``FETCH 1:* (FLAGS ENVELOPE)`` of the INBOX (issue 12
"Benchmark") over loopback, once in a plain session and once in a session
that sent ``COMPRESS DEFLATE`` first: the octets the server sent for the
FETCH (on the wire, and what they inflate to) and the time from sending the
command until the tagged OK is read and inflated.  The client is a socket
and zlib (raw deflate, level 6 both ways as RFC 4978 §4 leaves to each side);
the same client for both servers.

The corpus and the servers are those of tests/bench_imap.py
(tests/bench_imap_setup.py: ``bench-data/imap/maildir-N``, each server on
its own copy); Dovecot 2.3 gets its ``zlib`` and ``imap_zlib`` plugins in its
throwaway configuration, so it announces COMPRESS=DEFLATE as a Dovecot
installation with them does.  Each round starts each server afresh, reads the
folder once untimed (both servers then answer from their caches: mailsrv's
per-message cache, Dovecot's index), then times the plain and the compressed
session, in an order that alternates round by round; the servers alternate
too.  Every number is the median over the rounds; the count of FETCH
responses is checked against the corpus.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.bench_imap import machine, one_line, remove_copies  # noqa: E402
from tests.bench_imap_setup import DATA, Dovecot, Mailsrv, Unavailable, build_corpus  # noqa: E402

TIMEOUT = 600      # seconds for one FETCH of 10,000 messages on a busy 2-core machine
LEVEL = 6          # the client's deflate level: zlib's default (Dovecot's imap_zlib_compress_level too)
# Dovecot 2.3: imap_zlib serves COMPRESS and needs the zlib plugin loaded.
DOVECOT_ZLIB = ("mail_plugins = $mail_plugins zlib\n"
                "protocol imap {\n  mail_plugins = $mail_plugins zlib imap_zlib\n}\n")
FETCH = b"FETCH 1:* (FLAGS ENVELOPE)"


class Session:
    """One IMAP connection; reads whole answers (fast: the tail is searched, not every line)."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deflate = self.inflate = None
        self.read_until(None)

    def send(self, text):
        if self.deflate is not None:
            text = self.deflate.compress(text) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(text)

    def read_until(self, tag):
        """(plain octets, wire octets) up to the tagged reply of ``tag`` (None: the greeting)."""
        end = re.compile(rb"\r\n" + (re.escape(tag) if tag else rb"\*") + rb" [^\r\n]*\r\n\Z")
        chunks, wire, tail = [], 0, b"\r\n"
        while True:
            data = self.sock.recv(262144)
            if not data:
                raise Unavailable("the server closed the connection: %r" % b"".join(chunks)[-200:])
            wire += len(data)
            plain = self.inflate.decompress(data) if self.inflate is not None else data
            chunks.append(plain)
            tail = (tail + plain)[-1024:]
            if plain.endswith(b"\r\n") and end.search(tail):
                return b"".join(chunks), wire

    def command(self, tag, text):
        self.send(tag + b" " + text + b"\r\n")
        out, wire = self.read_until(tag)
        if not re.search(rb"(?:\A|\r\n)" + re.escape(tag) + rb" OK", out):
            raise Unavailable("%s answered %r" % (text.decode(errors="replace")[:40],
                                                  out[-200:].decode(errors="replace")))
        return out, wire

    def compress(self):
        self.command(b"Z", b"COMPRESS DEFLATE")
        self.deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def close(self):
        try:
            self.send(b"q LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()


def fetch_once(server, compressed):
    """(seconds, wire octets, plain octets, FETCH responses) of one full FETCH."""
    s = Session(server.host, server.port)
    try:
        s.command(b"L", b'LOGIN "%s" "%s"' % (server.user.encode(), server.password.encode()))
        if compressed:
            s.compress()
        s.command(b"S", b"SELECT INBOX")
        t0 = time.perf_counter()
        out, wire = s.command(b"F", FETCH)
        seconds = time.perf_counter() - t0
        return seconds, wire, len(out), out.count(b" FETCH (")
    finally:
        s.close()


def measure_round(server, rnd):
    server.start()
    try:
        fetch_once(server, False)              # warm: caches and index built, untimed
        out = {}
        for compressed in ((False, True) if rnd % 2 else (True, False)):
            label = "COMPRESS" if compressed else "plain"
            seconds, wire, plain, count = fetch_once(server, compressed)
            out[label] = (seconds, wire, plain, count)
        return out
    finally:
        server.stop()


def make_servers(args, corpus, work):
    servers = []
    for name in ("mailsrv", "dovecot"):
        if args.only and args.only != name:
            continue
        try:
            print("setting up %s (its own copy of the corpus) ..." % name, flush=True)
            if name == "mailsrv":
                servers.append(Mailsrv(os.path.join(work, name), corpus, {}))
            else:
                server = Dovecot(os.path.join(work, name), corpus)
                server.server.extra = DOVECOT_ZLIB
                servers.append(server)
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


def print_table(results, names, count, rounds):
    rows = [("plain: time (s)", "plain", 0, "%12.3f"), ("plain: octets on the wire", "plain", 1, "%12d"),
            ("COMPRESS: time (s)", "COMPRESS", 0, "%12.3f"),
            ("COMPRESS: octets on the wire", "COMPRESS", 1, "%12d"),
            ("COMPRESS: octets inflated", "COMPRESS", 2, "%12d")]
    print("\n%s of %d messages, medians of %d rounds" % (FETCH.decode(), count, rounds))
    cols = names + (["ratio"] if len(names) == 2 else [])
    print("%-34s" % "" + "".join("%12s" % c for c in cols))
    for title, label, i, fmt in rows:
        values = [statistics.median(r[label][i] for r in results[n]) if results[n] else None for n in names]
        line = "%-34s" % title + "".join(fmt % v if v is not None else "%12s" % "-" for v in values)
        if len(names) == 2 and None not in values and values[1]:
            line += "%12.2f" % (values[0] / values[1])
        print(line)
    for n in names:
        if results[n]:
            saved = statistics.median(1 - r["COMPRESS"][1] / r["plain"][1] for r in results[n])
            print("%s: COMPRESS saves %.0f%% of the octets" % (n, 100 * saved))
    wrong = ["%s: %s answered %d FETCH responses, expected %d" % (n, label, r[label][3], count)
             for n in names for r in results[n] for label in r if r[label][3] != count]
    for line in wrong[:10]:
        print("WRONG ANSWER " + line)
    if not wrong and any(results.values()):
        print("answers checked: every FETCH answered for all %d messages" % count)
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
