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
import base64
import binascii
import email.utils
import imaplib
import json
import os
import platform
import queue
import random
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from store.folder import MTIME_SLACK_S  # noqa: E402
from tests import dovecot_imap  # noqa: E402

DATA = os.path.join(ROOT, "bench-data", "imap")
USER, PASSWORD = "bob@example.test", "bench-password"
SUBJECT_WORD, BODY_WORD = "invoice", "zeppelin"
APPENDS = 1000               # issue 10: "APPEND of 1,000 messages"
IDLE_SAMPLES = 20
TIMEOUT = 600                # seconds for one IMAP command on 10,000 messages on a busy 2-core machine
START_TIMEOUT = 60
SOURCES = 50                 # client addresses 127.0.0.2.. for the IDLE connections (per-address limits)
KEEP_AT_ROOT = {"subscriptions", "maildirfolder"}   # a Maildir's own files; the rest is a server's state


class Unavailable(Exception):
    """A server that cannot be measured: one line says why."""


# ---------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------

PEOPLE = ["Alice Martin", "Bruno Keller", "Chloé Dubois", "David Okafor", "Emma Larsen", "Farid Haddad",
          "Grace Liu", "Hugo Silva", "Ines Moreau", "Jonas Berg", "Kenji Sato", "Lena Novak",
          "Marco Rossi", "Nadia Petrova", "Oscar Nilsson", "Priya Raman"]
DOMAINS = ["example.org", "mail.example.net", "corp.example.com", "lists.example.org", "shop.example"]
WORDS = ("the of and to in is it that for on with as was at by this from are be or have an not but "
         "what all were when we there can your which their said if do will each about how up out them "
         "then she many some so these would other into has more her two like him see time could no "
         "make than first been its who now people my made over did down only way find use may water "
         "long little very after words called just where most know get through back much go good new "
         "write our me man too any day same right look think also around another came come work three "
         "must because does part even place well such here take why help put different away again "
         "off went old number great tell men say small every found still between name should home big "
         "give air line set own under read last never us left end along while might next sound below "
         "saw something thought both few those always show large often together asked house world "
         "going want school important until form food keep children feet land side without boy once "
         "animal life enough took four head above kind began almost live page got earth need far hand "
         "high year mother light country father let night picture being study second soon story since "
         "white ever paper hard near sentence better best across during today however sure knew try "
         "told young sun thing whole hear example heard several change answer room sea against top "
         "turned learn point city play toward five himself usually money seen car morning").split()
TOPICS = ["Invoice %(n)d for %(month)s", "Re: meeting on %(day)s", "Weekly report %(n)d",
          "Fwd: %(w1)s %(w2)s", "[team] %(w1)s %(w2)s %(w3)s", "Your order %(n)d has shipped",
          "Re: Re: %(w1)s and %(w2)s", "=?utf-8?q?Caf=C3=A9_%(w1)s?=", "Question about %(w1)s",
          "=?utf-8?b?%(b64)s?="]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def text(rng, size, word=False):
    """Lines of words up to about ``size`` octets; ``word``: BODY_WORD somewhere in it."""
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."
        lines.append(line)
        total += len(line) + 1
    if word:
        at = rng.randrange(len(lines))
        lines[at] = lines[at][:-1] + " aboard the " + BODY_WORD + "."
    return "\n".join(lines) + "\n"


def address(rng):
    name = rng.choice(PEOPLE)
    local = name.split()[0].lower().replace("é", "e")
    return name, "%s@%s" % (local, rng.choice(DOMAINS))


def subject(rng, n):
    values = {"n": n * 7 + 1000, "month": rng.choice(MONTHS), "day": rng.choice(MONTHS) + " %d" % rng.randint(1, 28),
              "w1": rng.choice(WORDS), "w2": rng.choice(WORDS), "w3": rng.choice(WORDS)}
    values["b64"] = base64.b64encode(("Ünïcode %s" % values["w1"]).encode()).decode()
    return rng.choice(TOPICS) % values


def body_part(rng, size, word):
    """(headers, body) of the text: 7bit, or quoted-printable with a few accents."""
    if rng.random() < 0.25:
        raw = text(rng, size, word).replace(" the ", " thé ", 3).encode()
        return ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
                binascii.b2a_qp(raw).decode().replace("\r\n", "\n"))
    return "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n", text(rng, size, word)


def message(rng, n, when):
    """One message (LF line ends, as Maildirs hold them) and its facts for the checks."""
    name, sender = address(rng)
    subj = subject(rng, n)
    word = rng.random() < 0.04
    size = int(1024 * 20 ** rng.random())          # text 1-20 KB, smaller ones more common
    head = ["Return-Path: <%s>" % sender,
            "Received: from mx.%s (mx.%s [192.0.2.%d])\n\tby mx.example.test with ESMTPS id B%d\n\tfor <%s>; %s"
            % (sender.split("@")[1], sender.split("@")[1], n % 250 + 1, n, USER, email.utils.formatdate(when)),
            "Date: %s" % email.utils.formatdate(when, localtime=False).replace("-0000", rng.choice(
                ["+0000", "+0100", "-0500", "+0900"])),
            "From: %s <%s>" % (encoded_word(name) if "é" in name else name, sender),
            "To: Bob <%s>" % USER, "Subject: %s" % subj,
            "Message-ID: <%d.%d@%s>" % (n, when, sender.split("@")[1]), "MIME-Version: 1.0"]
    if rng.random() < 0.2:
        head.append("Cc: %s <%s>" % address(rng))
    kind = rng.random()
    if kind < 0.8:
        part_head, part = body_part(rng, size, word)
        return "\n".join(head) + "\n" + part_head + "\n" + part, subj, word
    boundary = "=_bench_%d" % n
    part_head, part = body_part(rng, size, word)
    if kind < 0.9:
        html = "<html><body><p>%s</p></body></html>\n" % text(rng, size // 2, word).replace("\n", "</p>\n<p>")
        second = "Content-Type: text/html; charset=us-ascii\n\n" + html
        ctype = "multipart/alternative"
    else:
        k = 1024 * rng.randint(2, 40)
        blob = base64.encodebytes(rng.getrandbits(8 * k).to_bytes(k, "little")).decode()
        second = ('Content-Type: application/pdf; name="report-%d.pdf"\nContent-Transfer-Encoding: base64\n'
                  'Content-Disposition: attachment; filename="report-%d.pdf"\n\n%s' % (n, n, blob))
        ctype = "multipart/mixed"
    head.append('Content-Type: %s; boundary="%s"' % (ctype, boundary))
    out = "\n".join(head) + "\n\nThis is a multi-part message in MIME format.\n\n--%s\n%s\n%s\n--%s\n%s\n--%s--\n" % (
        boundary, part_head, part, boundary, second, boundary)
    return out, subj, word


def encoded_word(name):
    """RFC 2047 Q-encoding of a display name."""
    return "=?utf-8?q?%s?=" % "".join(c if c.isalnum() and ord(c) < 128 else "_" if c == " " else
                                      "".join("=%02X" % b for b in c.encode()) for c in name)


def build_corpus(count):
    """bench-data/imap/maildir-COUNT (built once, then reused) and its facts."""
    final = os.path.join(DATA, "maildir-%d" % count)
    facts_path = final + ".json"
    if os.path.isdir(final) and os.path.exists(facts_path):
        with open(facts_path) as f:
            return final, json.load(f)
    partial = final + ".partial"        # an interrupted build is finished, its files overwritten in place
    print("writing %d messages to %s (once; kept for later runs) ..." % (count, final), flush=True)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(partial, sub), exist_ok=True)
    rng = random.Random(10)
    start = time.time() - 2 * 365 * 86400
    facts = {"messages": count, "subject_hits": 0, "body_hits": 0}
    for n in range(count):
        when = int(start + n * (2 * 365 * 86400 / count))
        data, subj, word = message(rng, n, when)
        raw = data.encode("utf-8")
        # \Seen and \Answered, never \Flagged: STORE +FLAGS (\Flagged) changes every message and the
        # -FLAGS after it restores the folder exactly
        flags = ("R" if rng.random() < 0.1 else "") + ("S" if rng.random() < 0.8 else "")
        name = "%d.M%dP4242Q%d.bench,S=%d,W=%d:2,%s" % (when, n, n, len(raw), len(raw) + raw.count(b"\n"), flags)
        path = os.path.join(partial, "cur", name)
        with open(path, "wb") as f:
            f.write(raw)
        os.utime(path, (when, when))    # a Maildir's internal date is the file's mtime
        facts["subject_hits"] += SUBJECT_WORD in subj.lower()
        facts["body_hits"] += word
    with open(facts_path, "w") as f:
        json.dump(facts, f)
    os.rename(partial, final)
    return final, facts


def copy_maildir(src, dest):
    """cur/ file by file (mtimes kept: internal dates), empty new/ and tmp/."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    for name in os.listdir(os.path.join(src, "cur")):
        shutil.copy2(os.path.join(src, "cur", name), os.path.join(dest, "cur", name))


def forget_state(maildir):
    """Every server's state at the INBOX root (uidlist, keywords, index, cache): gone, for a first open."""
    for name in os.listdir(maildir):
        path = os.path.join(maildir, name)
        if name in KEEP_AT_ROOT or name.startswith(".") or name in ("cur", "new", "tmp"):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# ---------------------------------------------------------------------------
# The servers: start, stop, forget their state, their memory
# ---------------------------------------------------------------------------

def proc_kb(pid, field, path="status"):
    """A "Field:   N kB" line of /proc/PID/status (or smaps_rollup), in kB; 0 if gone."""
    try:
        with open("/proc/%d/%s" % (pid, path)) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Mailsrv:
    """``python3 mailsrv.py --config FILE`` over its own copy of the corpus."""

    name = "mailsrv"
    host = "127.0.0.1"

    def __init__(self, work, corpus, settings):
        self.work, self.proc, self.port = work, None, None
        self.data = os.path.join(work, "data")
        self.maildir = os.path.join(self.data, "mail", "example.test", "bob")
        self.conf = os.path.join(work, "mailsrv.ini")
        values = {"data_dir": self.data, "hostname": "mx.example.test", "domains": "example.test",
                  "imap_port": "0", "log_level": "WARNING", "max_connections": "4000",
                  "max_connections_per_ip": "4000"}
        for key in ("smtp_port", "submission_port", "smtps_port", "pop3_port", "pop3s_port", "imaps_port"):
            values[key] = "off"
        values.update(settings)
        os.makedirs(work)
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\n" + "".join("%s = %s\n" % kv for kv in values.items()))
        p = subprocess.run([sys.executable, "mailsrv.py", "--config", self.conf, "user", "add", USER], cwd=ROOT,
                           input=(PASSWORD + "\n").encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        if p.returncode != 0:
            raise Unavailable("mailsrv.py user add failed: %s" % last_line(p.stderr))
        self.start()            # does this checkout serve IMAP at all?  Asked before copying the corpus
        self.stop()
        copy_maildir(corpus, self.maildir)

    def forget_state(self):
        forget_state(self.maildir)

    def start(self):
        log = open(os.path.join(self.work, "mailsrv.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "mailsrv.py", "--config", self.conf], cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                     bufsize=0)     # unbuffered: select() then sees every line
        log.close()
        deadline, lines = time.monotonic() + START_TIMEOUT, []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
            if ready and not line:           # stdout closed: it exited
                break
            lines.append(line)
            m = re.match(r"listening imap (\S+):(\d+)$", line)
            if m:
                self.port = int(m.group(2))
            if line.startswith("running as pid"):
                break
        if self.port is None:
            self.stop()
            if lines and lines[-1].startswith("running as pid"):
                raise Unavailable("mailsrv printed no 'listening imap' line at start-up: this checkout has "
                                  "no IMAP listener yet (issue 10)")
            raise Unavailable("mailsrv did not start: %s" % (self.log_tail() or "no output"))

    def log_tail(self):
        try:
            with open(os.path.join(self.work, "mailsrv.log"), "rb") as f:
                return last_line(f.read())
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc.stdout.close()
        self.proc = None

    def memory(self):
        """(RSS kB, PSS kB) of the server process."""
        return proc_kb(self.proc.pid, "VmRSS"), proc_kb(self.proc.pid, "Pss", "smaps_rollup")


class Dovecot:
    """tests/dovecot_imap.py over its own copy of the corpus."""

    name = "dovecot"
    host = "127.0.0.1"

    def __init__(self, work, corpus):
        reason = dovecot_imap.skip_reason()
        if reason:
            raise Unavailable(reason)
        self.maildir = os.path.join(work, "Maildir")
        copy_maildir(corpus, self.maildir)
        self.server = dovecot_imap.DovecotImap(self.maildir, USER, PASSWORD, work=os.path.join(work, "dovecot"),
                                               max_connections=2100)

    def forget_state(self):
        forget_state(self.maildir)
        self.server.reset_index()

    def start(self):
        try:
            self.server.start()
        except RuntimeError as e:
            raise Unavailable(str(e).splitlines()[0][:300]) from None
        self.port = self.server.port

    def stop(self):
        self.server.stop()

    def memory(self):
        """Sums over the imap processes (one per session): (RSS kB, PSS kB)."""
        pids = self.server.imap_pids()
        return (sum(proc_kb(p, "VmRSS") for p in pids), sum(proc_kb(p, "Pss", "smaps_rollup") for p in pids))


class External:
    """An already-running server (--port): nothing to start, no first open."""

    def __init__(self, name, hostport, pid):
        self.name = name
        self.host, _, port = hostport.rpartition(":")
        self.port, self.pid = int(port), pid

    def forget_state(self):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def memory(self):
        if not self.pid:
            raise Unavailable("no --pid given: memory not measured")
        return proc_kb(self.pid, "VmRSS"), proc_kb(self.pid, "Pss", "smaps_rollup")


def last_line(data):
    lines = data.decode(errors="replace").strip().splitlines() if isinstance(data, bytes) else data.splitlines()
    return lines[-1][:300] if lines else ""


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
    ok(c.login(USER, PASSWORD), "LOGIN")
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
    ("FETCH 1:* " + HEADER_FIELDS, lambda c: responses(ok(c.fetch("1:*", "(%s)" % HEADER_FIELDS), "FETCH")),
     "messages"),
    ("SEARCH SUBJECT " + SUBJECT_WORD, lambda c: len(ok(c.search(None, "SUBJECT", SUBJECT_WORD), "SEARCH")[0].split()),
     "subject_hits"),
    ("SEARCH BODY " + BODY_WORD, lambda c: len(ok(c.search(None, "BODY", BODY_WORD), "SEARCH")[0].split()),
     "body_hits"),
]


def measure_reads(server, label, out, counts):
    """login+SELECT and every READS row in one session; the rows get ``label``."""
    t, (c, exists) = timed(lambda: login_select(server))
    out["login+SELECT INBOX, " + label] = t
    counts["SELECT EXISTS"] = exists
    for row, call, what in READS:
        t, n = timed(lambda: call(c))
        out[row + ", " + label] = t
        counts[row] = (n, what)
    c.logout()


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
                n, t1 = reader.seen.get(timeout=30)
            except queue.Empty:
                raise Unavailable("no EXISTS within 30 s of an APPEND by another session (IDLE)") from None
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
    """One round on a freshly started server: {row: seconds}, {check: (got, expected key)}."""
    out, counts = {}, {}
    if first_open:
        server.forget_state()
    server.start()
    try:
        measure_reads(server, "first open" if first_open else "open", out, counts)
        time.sleep(MTIME_SLACK_S + 0.2)    # a later open comes later (see the module docstring)
        measure_reads(server, "later open", out, counts)
        measure_store(server, out, counts)
        measure_append(server, corpus, "Append-%d-%d" % (os.getpid(), rnd), out, counts)
        measure_idle_latency(server, "Idle", out, counts)
    finally:
        server.stop()
    return out, counts


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
        return [External(args.only or "server", args.port, args.pid)]
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
                servers.append(Dovecot(os.path.join(work, name), corpus))
                print("peer: Dovecot %s (imap, maildir, default fsync settings)" % dovecot_imap.version_text())
        except (Unavailable, OSError, subprocess.SubprocessError) as e:
            print("%s: not measured: %s" % (name, one_line(e) if not isinstance(e, Unavailable) else e))
    return servers


def run_rounds(servers, corpus, rounds, first_open):
    """Alternating servers round by round; a server that fails is dropped with one line."""
    results = {s.name: [] for s in servers}
    live = list(servers)
    for rnd in range(1, rounds + 1):
        for server in (live if rnd % 2 else live[::-1]):
            try:
                results[server.name].append(measure_round(server, corpus, rnd, first_open))
            except (Unavailable, OSError, imaplib.IMAP4.error, EOFError, ValueError) as e:
                msg = str(e) if isinstance(e, Unavailable) else one_line(e)
                print("%s: round %d failed, dropped from the run: %s" % (server.name, rnd, msg), flush=True)
                live.remove(server)
                server.stop()
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
        except (Unavailable, OSError, imaplib.IMAP4.error, EOFError) as e:
            msg = str(e) if isinstance(e, Unavailable) else one_line(e)
            print("%s: memory of %d IDLE sessions not measured: %s" % (server.name, count, msg), flush=True)
    return out


def print_table(results, memory, names, facts, count, rounds, idle_count):
    rows = []
    for name in names:
        for out, _counts in results.get(name, []):
            rows += [r for r in out if r not in rows]
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
    for i, label in ((0, "RSS"), (2, "PSS")):
        line = "%-66s" % ("%d sessions IDLE on INBOX: %s added (MB)" % (idle_count, label))
        values = [(memory[n][i + 1] - memory[n][i]) / 1024 if n in memory else None for n in names]
        line += "".join("%12.1f" % v if v is not None else "%12s" % "-" for v in values)
        if len(names) == 2 and None not in values and values[1] > 0:
            line += "%12.2f" % (values[0] / values[1])
        print(line)
    if len(names) == 2:
        print("ratio: %s / %s (below 1: %s is faster or smaller)" % (names[0], names[1], names[0]))
    if "dovecot" in names:
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
        print("answers checked: every FETCH answered for all %d messages, SEARCH SUBJECT %s found %d, SEARCH BODY "
              "%s found %d, every APPEND arrived" % (facts["messages"], SUBJECT_WORD, facts["subject_hits"],
                                                     BODY_WORD, facts["body_hits"]))


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
    ap.add_argument("--mailsrv-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra mailsrv configuration key (repeatable)")
    args = ap.parse_args()
    if args.messages < APPENDS:
        ap.error("--messages must be at least %d (APPEND sends that many of the corpus)" % APPENDS)
    return args


def main():
    global USER, PASSWORD
    args = parse_args()
    USER, PASSWORD = args.user, args.password
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
