"""The IMAP benchmark's corpus and servers (tests/bench_imap.py runs them).

The corpus: a Maildir of realistic messages written once as files (no SMTP)
under bench-data/imap/maildir-N and kept; each run copies it for each server.
The servers: mailsrv as ``python3 mailsrv.py --config FILE`` (IMAP its only
listener), Dovecot from tests/dovecot_imap.py, or one already running
(``--port``).  Each says why it cannot be measured with ``Unavailable``.
"""

import base64
import binascii
import email.utils
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import dovecot_imap  # noqa: E402
from tests.bench_proc import stop_process  # noqa: E402

DATA = os.path.join(ROOT, "bench-data", "imap")
USER, PASSWORD = "bob@example.test", "bench-password"
SUBJECT_WORD, BODY_WORD = "invoice", "zeppelin"     # SEARCH SUBJECT / SEARCH BODY: about 10% and 4% of messages
START_TIMEOUT = 60           # seconds for `python3 mailsrv.py` to print its start-up lines on a busy machine
KEEP_AT_ROOT = {"subscriptions", "maildirfolder"}   # a Maildir's own files; the rest is a server's state
# Raised for the 1,000 IDLE sessions of one user, as the Dovecot peer's limits are
# (tests/dovecot_imap.py), where this checkout of mailsrv has the key.
# The Dovecot peer's salted, deliberately slow password hash when asked for one
# (tests/bench_imap_first_open.py): SHA512-CRYPT with the rounds whose check costs
# what mailsrv's scrypt (store/passwords.py: N=2**14, r=8, p=1) costs, ~0.057 s on
# the benchmark machine (crypt(3) timed beside hashlib.scrypt, README "### IMAP").
HASHED_PEER = ("SHA512-CRYPT", 115000)
RAISED_LIMITS = {"max_connections": "4000", "max_connections_per_ip": "4000", "imap_max_userip_connections": "4000",
                 "workers": "1"}   # one process: its CPU time and memory are read from /proc/PID


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
    host, user, password = "127.0.0.1", USER, PASSWORD

    def __init__(self, work, corpus, settings):
        self.work, self.proc, self.port, self.log_seen = work, None, None, 0
        self.data = os.path.join(work, "data")
        self.maildir = os.path.join(self.data, "mail", "example.test", "bob")
        self.conf = os.path.join(work, "mailsrv.ini")
        values = {"data_dir": self.data, "hostname": "mx.example.test", "domains": "example.test",
                  "imap_port": "0", "log_level": "WARNING"}
        for key in ("smtp_port", "submission_port", "smtps_port", "pop3_port", "pop3s_port", "imaps_port"):
            values[key] = "off"
        known = subprocess.run([sys.executable, "mailsrv.py", "config-example"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=120).stdout.decode()
        for key, value in RAISED_LIMITS.items():
            if re.search(r"^#?\s*%s\s*=" % key, known, re.M):     # keys this checkout knows
                values[key] = value
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
        stop_process(self.proc)
        self.proc = None

    def notes(self):
        """Warnings and errors mailsrv logged since the last call."""
        return log_notes(self, os.path.join(self.work, "mailsrv.log"), r" (WARNING|ERROR|CRITICAL) ",
                         r"^\S+ \S+ ")

    def memory(self):
        """(RSS kB, PSS kB) of the server process."""
        return proc_kb(self.proc.pid, "VmRSS"), proc_kb(self.proc.pid, "Pss", "smaps_rollup")


class Dovecot:
    """tests/dovecot_imap.py over its own copy of the corpus."""

    name = "dovecot"
    host, user, password = "127.0.0.1", USER, PASSWORD

    def __init__(self, work, corpus, password_scheme=None, name="dovecot"):
        """``password_scheme``: (scheme, rounds) of the passwd-file's hash (None: {PLAIN})."""
        self.name = name
        reason = dovecot_imap.skip_reason()
        if reason:
            raise Unavailable(reason)
        self.maildir = os.path.join(work, "Maildir")
        copy_maildir(corpus, self.maildir)
        self.log_seen = 0
        self.server = dovecot_imap.DovecotImap(self.maildir, USER, PASSWORD, work=os.path.join(work, "dovecot"),
                                               max_connections=2100, password_scheme=password_scheme)

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

    def notes(self):
        """Warnings and errors Dovecot logged since the last call (e.g. no inotify: IDLE polls)."""
        notes = log_notes(self, self.server.log_path, r": (Warning|Error|Fatal|Panic): ", r"^.*?: (?=[A-Z]\w+: )")
        return [n for n in notes if "Killed with signal 15 (by pid=%d " % os.getpid() not in n]    # our stop()

    def memory(self):
        """Sums over the imap processes (one per session): (RSS kB, PSS kB)."""
        pids = self.server.imap_pids()
        return (sum(proc_kb(p, "VmRSS") for p in pids), sum(proc_kb(p, "Pss", "smaps_rollup") for p in pids))


class External:
    """An already-running server (--port): nothing to start, no first open."""

    def __init__(self, name, hostport, pid, user, password):
        self.name, self.user, self.password = name, user, password
        self.host, _, port = hostport.rpartition(":")
        self.port, self.pid = int(port), pid

    def forget_state(self):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def notes(self):
        return []

    def memory(self):
        if not self.pid:
            raise Unavailable("no --pid given (the server's process)")
        return proc_kb(self.pid, "VmRSS"), proc_kb(self.pid, "Pss", "smaps_rollup")


def log_notes(server, path, pattern, strip):
    """The lines of the log at ``path`` matching ``pattern`` since the last call, each once,
    without the part ``strip`` removes (time stamps, process ids)."""
    try:
        with open(path, errors="replace") as f:
            f.seek(server.log_seen)
            text = f.read()
            server.log_seen = f.tell()
    except OSError:
        return []
    found = [re.sub(strip, "", line) for line in text.splitlines() if re.search(pattern, line)]
    return ["log: " + line[:300] for line in dict.fromkeys(found)]


def last_line(data):
    lines = data.decode(errors="replace").strip().splitlines() if isinstance(data, bytes) else data.splitlines()
    return lines[-1][:300] if lines else ""
