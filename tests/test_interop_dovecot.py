"""Dovecot and mailsrv on one Maildir: the same UIDVALIDITY, UIDs, flags and keywords.

store/folder.py keeps Dovecot's own dovecot-uidlist, dovecot-keywords and
dovecot-uidlist.lock, so a Maildir moves between the two, or is served by both
at once, without a client seeing a UIDVALIDITY change (RFC 3501 §2.3.1.1).
Dovecot's side is doveadm on a throwaway configuration, run as in
tests/test_interop_maildir.py (as ``nobody`` when we are root: Dovecot refuses
uid 0); mailsrv's writes into the same tree run as that user too, in a forked
child process, so both sides can write every file.  Skipped, saying why, when
doveadm is missing, is Dovecot 2.4+, or MAILSRV_SKIP_INTEROP is set.
"""

import os
import pwd
import shutil
import signal
import tempfile
import time
import traceback
import unittest

from store.folder import Folder
from tests.test_interop_maildir import MAIL_USER, TIMEOUT, DovecotCopy, dovecot_skip_reason

FOLDERS = ["Work", "Lists", "Archive"]
IMAP_FLAG = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft"}
LETTER = {v: k for k, v in IMAP_FLAG.items()}
COUNT = 200


def body(n):
    return b"From: a@example.test\nSubject: message %d\n\nline %d\n" % (n, n)


def mailsrv_writer(path, op, *args):
    """mailsrv's side: appends (with a flag and a keyword) or flag/keyword changes."""
    folder = Folder(path)
    if op == "append":
        for i in range(int(args[0])):
            folder.append(b"Subject: %s %d\r\n\r\nx\r\n" % (args[1].encode(), i), "F" if i % 2 else "", ["$mailsrv"])
    else:
        uids = [int(u) for u in args[0].split(",")]
        folder.set_flags(uids, "R")
        folder.set_keywords(uids, ["$Label2"])


class Child:
    """A forked process running mailsrv_writer as the mail user (the interpreter may sit
    where that user cannot exec it, so fork instead of a new ``python3``)."""

    def __init__(self, *args):
        self.pid = os.fork()
        if self.pid == 0:                              # pragma: no cover (the child)
            code = 1
            try:
                if os.geteuid() == 0:
                    owner = pwd.getpwnam(MAIL_USER)
                    os.setgroups([])
                    os.setgid(owner.pw_gid)
                    os.setuid(owner.pw_uid)
                mailsrv_writer(*args)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)                          # bounded polling of an external process
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("mailsrv child still running after %ds" % timeout)


def empty_maildir(parent):
    path = os.path.join(parent, "empty")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub))
    return path


@unittest.skipIf(dovecot_skip_reason(), dovecot_skip_reason())
class DovecotSharesTheMaildirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-dovecot-share-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        os.chmod(self.tmp, 0o755)
        self.dovecot = DovecotCopy(empty_maildir(self.tmp), os.path.join(self.tmp, "work"), "bob")

    def mailsrv(self, *args):
        return Child(*[str(a) for a in args])

    def folder_path(self, name):
        return self.dovecot.maildir if name == "INBOX" else os.path.join(self.dovecot.maildir, "." + name)

    def dovecot_view(self, name):
        """(uidvalidity, {uid: (guid = file base name, flags)}) as Dovecot reports them."""
        status = self.dovecot.doveadm("mailbox", "status", "uidvalidity", name).splitlines()[1]
        rows = self.dovecot.doveadm("fetch", "uid guid flags", "mailbox", name).splitlines()[1:]
        view = {}
        for row in rows:
            uid, guid, flags = (row.split("\t") + [""])[:3]
            view[int(uid)] = (guid, frozenset(flags.split()) - {"\\Recent"})
        return int(status.split("\t")[-1]), view

    def mailsrv_view(self, name):
        snap = Folder(self.folder_path(name)).snapshot()
        view = {m.uid: (m.key, frozenset(IMAP_FLAG[c] for c in m.flags if c in IMAP_FLAG) | m.keywords)
                for m in snap.messages}
        self.dovecot.own()                 # our journal and any rewrite: readable by Dovecot's user
        return snap.uidvalidity, view

    def test_dovecot_maildir_read_by_mailsrv_and_back(self):
        d = self.dovecot
        d.doveadm("mailbox", "create", *FOLDERS)
        boxes = ["INBOX"] + FOLDERS
        for n in range(COUNT):
            d.doveadm("save", "-m", boxes[n % 4], stdin=body(n))
        d.doveadm("flags", "add", "\\Seen $Junk", "mailbox", "INBOX", "uid", "1:20")
        d.doveadm("flags", "add", "\\Flagged $Label1", "mailbox", "Work", "uid", "2:9")
        d.doveadm("flags", "add", "\\Answered \\Draft", "mailbox", "Lists", "uid", "5")
        for name in boxes:
            with self.subTest(folder=name):
                dovecot = self.dovecot_view(name)
                self.assertEqual(len(dovecot[1]), COUNT // 4)
                self.assertEqual(self.mailsrv_view(name), dovecot)
        # back: mailsrv appends and changes flags; Dovecot reports the same
        child = self.mailsrv(self.folder_path("INBOX"), "flags", "3,21")
        self.assertEqual(child.wait(TIMEOUT), 0)
        child = self.mailsrv(self.folder_path("Work"), "append", "4", "back")
        self.assertEqual(child.wait(TIMEOUT), 0)
        for name in ("INBOX", "Work"):
            with self.subTest(folder=name, side="back"):
                ours = self.mailsrv_view(name)
                self.assertEqual(self.dovecot_view(name), ours)
        inbox = self.mailsrv_view("INBOX")[1]
        self.assertEqual(inbox[3][1], frozenset({"\\Seen", "$Junk", "\\Answered", "$Label2"}))
        self.assertEqual(len(self.mailsrv_view("Work")[1]), COUNT // 4 + 4)

    def test_dovecot_and_mailsrv_delivering_at_once(self):
        d = self.dovecot
        d.doveadm("save", "-m", "INBOX", stdin=body(0))          # Dovecot makes the folder's uidlist
        child = self.mailsrv(d.maildir, "append", "40", "mailsrv")
        for n in range(1, 41):
            d.doveadm("save", "-m", "INBOX", stdin=body(n))
        self.assertEqual(child.wait(TIMEOUT * 3), 0)
        validity, dovecot = self.dovecot_view("INBOX")
        ours = self.mailsrv_view("INBOX")
        self.assertEqual(len(dovecot), 81, "no message lost")
        self.assertEqual(len({guid for guid, _f in dovecot.values()}), 81, "no message twice")
        self.assertEqual((validity, {u: g for u, (g, _f) in dovecot.items()}),
                         (ours[0], {u: g for u, (g, _f) in ours[1].items()}))


if __name__ == "__main__":
    unittest.main()
