"""Maildir interoperability with the programs Debian ships: Dovecot and mutt.

The README ("Storage layout") claims that mutt opens our Maildir directly and
Dovecot can take it over: files named per the maildir spec with ``,S=<size>,W=<CRLF size>``
(the file's size and its size with CRLF line ends) and flags in the ``:2,`` info (S R F T D), the
Maildir++ folders .Sent .Drafts .Trash .Junk .Archive laid out like Dovecot's,
and files written by other programs (bare LF, flags changed) served correctly
by our POP3: RETR in CRLF form, LIST and "+OK n octets" counting the CRLF
form (RFC 1939 §5, §11).

Dovecot (``apt-get install dovecot-core``) works on a *copy* of the user's
Maildir through ``doveadm`` alone, no daemon: ``doveadm`` without ``-u``
takes the user from $USER and does no userdb lookup (``-u`` would need a
running auth service), running as ``mail_uid``/``mail_gid`` from the
throwaway configuration.  Dovecot refuses to run mail processes as uid 0, so
as root the copy is handed to ``nobody`` (as tests/bench_pop3.py does).

mutt (``apt-get install mutt``, driven through ``tmux``) opens the live
Maildir read-only (``-R``) in a detached tmux session with a fixed terminal
size; the pane is captured until the index (or the pager) shows what is
expected (bounded polling), then the private tmux server is killed.  Messages
are stored with LF line ends, as mutt expects: with CRLF files mutt 2.2's pager
showed "^M" at the end of header lines (karelzak/mutt-kz#55), which is why the
store writes LF and the protocols add the CR back on the wire.

The Dovecot configuration is written in 2.3 syntax (Debian 12); with Dovecot
2.4 or later the Dovecot tests are skipped, saying so.

Every test is skipped when its tool is missing or MAILSRV_SKIP_INTEROP is set;
every subprocess is bounded by a timeout.
"""

import glob
import os
import poplib
import pwd
import re
import shlex
import shutil
import smtplib
import subprocess
import tempfile
import time
import unittest

from store.folder import Folder
from tests.helpers import ServerTestCase

BOB, BOB_PW = "bob@example.test", "bob-secret"
ALICE, ALICE_PW = "alice@example.test", "alice-secret"
SUBJECTS = ["maildir interop %d" % n for n in range(1, 6)]
# maildir-spec info letters and the IMAP system flags Dovecot maps them to (RFC 3501 §2.3.2)
FLAG_OF = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft"}
LETTERS = "SRFTD"
FOLDERS = ["Sent", "Drafts", "Trash", "Junk", "Archive"]
TIMEOUT = 20
SKIP = bool(os.environ.get("MAILSRV_SKIP_INTEROP"))
DOVEADM = shutil.which("doveadm") or ("/usr/bin/doveadm" if os.path.exists("/usr/bin/doveadm") else None)
MUTT = shutil.which("mutt")
TMUX = shutil.which("tmux")
MAIL_USER = "nobody"   # owner of the Maildir copy when we run as root (Dovecot refuses uid 0)

# Dovecot 2.3 syntax (Debian 12).  maildir:<dir> without LAYOUT= is Dovecot's
# Maildir++ layout: folders are the ".Name" directories of the root.
DOVECOT_CONF = """\
base_dir = {work}/run
state_dir = {work}/state
ssl = no
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{maildir}
"""


def message(subject):
    """A CRLF message with a line that needs dot-stuffing (RFC 1939 §3)."""
    return ("From: carol@elsewhere.test\r\nTo: %s\r\nSubject: %s\r\n\r\n"
            "Hello.\r\n.a line starting with a dot\r\nbye\r\n" % (BOB, subject)).encode()


def deliver(port, rcpt, subjects):
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
        for subject in subjects:
            assert s.sendmail("carol@elsewhere.test", [rcpt], message(subject)) == {}


def retr(pop, n):
    """RETR ``n`` as poplib gives it (dot-unstuffed), re-joined with CRLF."""
    resp, lines, _ = pop.retr(n)
    return b"".join(line + b"\r\n" for line in lines), resp


def subject_of(text):
    return re.search(rb"^Subject: (.*?)\r?$", text, re.M).group(1).decode()


def messages_in(maildir):
    return glob.glob(os.path.join(maildir, "new", "*")) + glob.glob(os.path.join(maildir, "cur", "*"))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def dovecot_version():
    """(major, minor) of the installed Dovecot, or None if unknown."""
    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    try:
        out = subprocess.run([dovecot, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=TIMEOUT).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def dovecot_skip_reason():
    if SKIP:
        return "MAILSRV_SKIP_INTEROP is set"
    if not DOVEADM:
        return "doveadm missing (apt-get install dovecot-core)"
    version = dovecot_version()
    if version is not None and version >= (2, 4):
        return "Dovecot %d.%d: this test writes Dovecot 2.3 configuration syntax" % version
    return None


class DovecotCopy:
    """A copy of one Maildir under ``work``, and doveadm pointed at it."""

    def __init__(self, maildir, work, user):
        self.work, self.user = work, user
        self.maildir = os.path.join(work, "Maildir")
        shutil.copytree(maildir, self.maildir)
        owner = pwd.getpwnam(MAIL_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        os.chmod(work, 0o755)
        for d in ("run", "state"):
            os.makedirs(os.path.join(work, d))
        if os.geteuid() == 0:
            for base, dirs, files in os.walk(self.maildir):
                for path in [base] + [os.path.join(base, f) for f in files]:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
        self.conf = os.path.join(work, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(work=work, maildir=self.maildir, uid=owner.pw_uid, gid=owner.pw_gid))

    def own(self):
        """Give the files mailsrv wrote into the copy (dovecot-uidlist, ...) to the mail user."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam(MAIL_USER)
            for base, dirs, files in os.walk(self.maildir):
                for path in [base] + [os.path.join(base, f) for f in files]:
                    os.chown(path, owner.pw_uid, owner.pw_gid)

    def doveadm(self, *args, stdin=None):
        """Run ``doveadm -c CONF -f tab ARGS`` as the user; stdout as text.

        Anything on stderr fails the test: that is where Dovecot reports a
        Maildir it disagrees with (e.g. "Cached message size smaller than
        expected" for a wrong ``,S=``)."""
        env = dict(os.environ, USER=self.user, HOME=self.maildir)
        p = subprocess.run([DOVEADM, "-c", self.conf, "-f", "tab"] + list(args), input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT, env=env)
        if p.returncode != 0 or p.stderr.strip():
            raise AssertionError("doveadm %s: rc=%d %s" % (args[0], p.returncode, p.stderr.decode()[-2000:]))
        return p.stdout.decode()

    def fetch(self, fields):
        """Rows of ``doveadm fetch FIELDS mailbox INBOX`` as dicts."""
        lines = self.doveadm("fetch", fields, "mailbox", "INBOX").splitlines()
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"))) for line in lines[1:]]


@unittest.skipIf(dovecot_skip_reason(), dovecot_skip_reason())
class DovecotInteropTest(ServerTestCase):
    """Dovecot takes over a copy of our Maildir, and we serve what it wrote."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        deliver(cls.ports["smtp"], BOB, SUBJECTS)
        pop = poplib.POP3("127.0.0.1", cls.ports["pop3"], timeout=TIMEOUT)
        try:
            pop.user(BOB)
            pop.pass_(BOB_PW)
            pop.retr(1)    # marks the first message \Seen (":2,S")
            pop.quit()
        finally:
            pop.close()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="mailsrv-dovecot-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_dovecot_reads_delivered_messages_and_seen_flag(self):
        dovecot = DovecotCopy(self.maildir(BOB), self.work, "bob")
        rows = dovecot.fetch("uid flags hdr.subject size.physical")
        self.assertEqual(sorted(r["hdr.subject"] for r in rows), sorted(SUBJECTS))
        flags = {r["hdr.subject"]: r["flags"].split() for r in rows}
        self.assertIn("\\Seen", flags[SUBJECTS[0]])
        for subject in SUBJECTS[1:]:
            self.assertNotIn("\\Seen", flags[subject])
        # Dovecot trusts ",S=" in the name as the physical size: it must be the file's size.
        files = {os.path.basename(p): os.path.getsize(p) for p in messages_in(dovecot.maildir)}
        self.assertEqual(sorted(int(r["size.physical"]) for r in rows), sorted(files.values()))
        for name, size in files.items():
            self.assertIn(",S=%d" % size, name)

    def test_flag_letters_mean_the_same_to_dovecot(self):
        """maildir-spec "info" flags R S T D F (not P) = IMAP \\Answered \\Seen \\Deleted \\Draft \\Flagged, both ways."""
        dovecot = DovecotCopy(self.maildir(BOB), self.work, "bob")
        folder = Folder(dovecot.maildir)
        letter_of = {}
        for entry, letter in zip(folder.snapshot().messages, LETTERS):
            letter_of[subject_of(read(entry.path))] = letter
            folder.set_flags([entry.uid], letter, "replace")
        self.assertEqual(sorted(letter_of), sorted(SUBJECTS))
        dovecot.own()
        rows = dovecot.fetch("uid flags hdr.subject")
        for row in rows:
            flags = set(row["flags"].split()) - {"\\Recent"}
            self.assertEqual(flags, {FLAG_OF[letter_of[row["hdr.subject"]]]}, row)
        # the other way: Dovecot gives each message the next flag; our index reads the letters
        for row in rows:
            letter = LETTERS[(LETTERS.index(letter_of[row["hdr.subject"]]) + 1) % len(LETTERS)]
            dovecot.doveadm("flags", "replace", FLAG_OF[letter], "mailbox", "INBOX", "uid", row["uid"])
            letter_of[row["hdr.subject"]] = letter
        entries = Folder(dovecot.maildir).snapshot().messages
        self.assertEqual({subject_of(read(e.path)): e.flags for e in entries}, letter_of)

    def test_dovecot_lists_the_maildirplusplus_folders(self):
        dovecot = DovecotCopy(self.maildir(BOB), self.work, "bob")
        listed = dovecot.doveadm("mailbox", "list").splitlines()[1:]
        self.assertEqual(sorted(listed), sorted(FOLDERS + ["INBOX"]))
        subscribed = dovecot.doveadm("mailbox", "list", "-s").splitlines()[1:]
        self.assertTrue(set(FOLDERS) <= set(subscribed), subscribed)
        # and Dovecot can file into one: it lands in our .Sent directory.
        dovecot.doveadm("save", "-m", "Sent", stdin=b"Subject: filed\n\nx\n")
        self.assertEqual(len(os.listdir(os.path.join(dovecot.maildir, ".Sent", "new"))), 1)

    def test_message_written_by_dovecot_is_served_by_our_pop3(self):
        deliver(self.ports["smtp"], ALICE, SUBJECTS[:2])
        live = self.maildir(ALICE)
        dovecot = DovecotCopy(live, self.work, "alice")
        saved = (b"From: dave@elsewhere.test\nTo: alice@example.test\nSubject: saved by dovecot\n\n"
                 b"first line\n.starts with a dot\n..two dots\nlast line\n")
        dovecot.doveadm("save", "-m", "INBOX", stdin=saved)
        uid = [r["uid"] for r in dovecot.fetch("uid hdr.subject") if r["hdr.subject"] == SUBJECTS[1]][0]
        dovecot.doveadm("flags", "add", "\\Flagged \\Answered", "mailbox", "INBOX", "uid", uid)
        files = {os.path.basename(p): read(p) for p in messages_in(dovecot.maildir)}
        self.assertEqual([v for v in files.values() if b"saved by dovecot" in v], [saved],
                         "Dovecot wrote the LF form as given")
        self.assertEqual(len([n for n in files if n.endswith(":2,FR")]), 1, sorted(files))
        expected = {SUBJECTS[0]: message(SUBJECTS[0]), SUBJECTS[1]: message(SUBJECTS[1]),
                    "saved by dovecot": saved.replace(b"\n", b"\r\n")}
        # Dovecot's Maildir (index files, dovecot-uidlist and all) replaces ours.
        shutil.rmtree(live)
        shutil.copytree(dovecot.maildir, live)
        pop = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=TIMEOUT)
        try:
            pop.user(ALICE)
            pop.pass_(ALICE_PW)
            count, _ = pop.stat()
            self.assertEqual(count, 3)
            sizes = {int(n): int(s) for n, s in (line.split() for line in pop.list()[1])}
            got = {}
            for n in range(1, count + 1):
                text, resp = retr(pop, n)
                subject = subject_of(text)
                self.assertEqual(sizes[n], len(text), "LIST size of %r" % subject)
                self.assertEqual(int(resp.split()[1]), len(text), "RETR octets of %r" % subject)
                got[subject] = text
            pop.quit()
        finally:
            pop.close()
        self.assertEqual(sorted(got), sorted(expected))
        for subject, text in got.items():
            self.assertTrue(text.endswith(expected[subject]), subject)   # ours carry our trace headers in front
        self.assertEqual(got["saved by dovecot"], expected["saved by dovecot"])


@unittest.skipIf(SKIP, "MAILSRV_SKIP_INTEROP is set")
@unittest.skipIf(not MUTT, "mutt missing (apt-get install mutt)")
@unittest.skipIf(not TMUX, "tmux missing (apt-get install tmux)")
class MuttInteropTest(ServerTestCase):
    """mutt opens the live Maildir read-only: its index and its pager."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        deliver(cls.ports["smtp"], BOB, SUBJECTS)
        pop = poplib.POP3("127.0.0.1", cls.ports["pop3"], timeout=TIMEOUT)
        try:
            pop.user(BOB)
            pop.pass_(BOB_PW)
            pop.retr(1)    # \Seen: mutt must show it as read, the others as new
            pop.quit()
        finally:
            pop.close()

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="mailsrv-mutt-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_mutt_index_shows_every_message(self):
        pane = self.mutt_screen(lambda pane: len(index_rows(pane)) >= len(SUBJECTS)
                                and "Msgs:%d" % len(SUBJECTS) in pane)
        index = {subject: flags.strip() for flags, subject in index_rows(pane)}
        self.assertEqual(sorted(index), sorted(SUBJECTS))
        self.assertEqual(index[SUBJECTS[0]], "", "the message RETR marked \\Seen shows as read")
        for subject in SUBJECTS[1:]:
            self.assertEqual(index[subject], "N")

    def test_mutt_pager_shows_the_message_cleanly(self):
        """The first message of the index in mutt's pager: headers and body without
        a stray CR ("^M", which mutt 2.2 shows for CRLF files), the dot line as sent."""
        pane = self.mutt_screen(lambda pane: "\nbye" in pane, "push <display-message>")
        lines = [line.rstrip() for line in pane.splitlines()]
        self.assertIn("Hello.", lines)
        self.assertIn(".a line starting with a dot", lines)
        self.assertIn("bye", lines)
        self.assertIn("From: carol@elsewhere.test", lines)
        shown = [m.group(1) for m in map(re.compile(r"Subject: (.*?)$").match, lines) if m]
        self.assertEqual(len(shown), 1, pane)
        self.assertIn(shown[0], SUBJECTS)
        self.assertNotIn("^M", pane, "no CR shown anywhere")

    def mutt_screen(self, ready, *commands):
        """Run mutt -R on bob's Maildir in a private detached tmux server (fixed
        200x50 terminal) with extra ``-e`` commands; the pane once ``ready(pane)``."""
        sock = os.path.join(self.work, "tmux.sock")
        tmux = [TMUX, "-S", sock]
        # -n -F /dev/null: no system or user muttrc; folder= an existing directory, or
        # mutt asks whether to create ~/Mail.  Each index line: marker, flags, subject.
        settings = ["set folder=%s" % self.work, "set sort=mailbox-order",
                    'set index_format="MUTTIDX|%Z|%s"'] + list(commands)
        command = " ".join([shlex.quote(MUTT), "-n", "-F", "/dev/null", "-R", "-f", shlex.quote(self.maildir(BOB))]
                           + ["-e %s" % shlex.quote(c) for c in settings])
        env = dict(os.environ, HOME=self.work, TERM="xterm")
        subprocess.run(tmux + ["new-session", "-d", "-s", "mutt", "-x", "200", "-y", "50", command],
                       check=True, timeout=TIMEOUT, env=env)
        self.addCleanup(subprocess.run, tmux + ["kill-server"], timeout=TIMEOUT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while True:
            pane = subprocess.run(tmux + ["capture-pane", "-p", "-t", "mutt"], stdout=subprocess.PIPE,
                                  timeout=TIMEOUT, env=env).stdout.decode()
            if ready(pane):
                return pane
            if time.monotonic() > deadline:
                self.fail("mutt did not show what was expected within %d s:\n%s" % (TIMEOUT, pane))
            time.sleep(0.05)   # bounded polling of the pane, not synchronisation


def index_rows(pane):
    """(flags, subject) of each mutt index line (index_format MUTTIDX|%Z|%s)."""
    return re.findall(r"MUTTIDX\|(.*?)\|(.*?)\s*$", pane, re.M)


if __name__ == "__main__":
    unittest.main()
