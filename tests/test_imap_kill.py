"""A server killed (SIGKILL) in the middle of IMAP MOVE loses no message (issue 10
"Durability"): the message is in the source, the target or both, never in
neither, and the folders served after the restart agree with the files.

RFC 6851 §3.3 lets MOVE be copy + expunge; the store copies, fsyncs the target
(file and directory), and only then removes from the source, so any instant of
a kill leaves at least one complete copy, and nothing half-written is visible
(a file in ``tmp/`` is not a message).  The kill comes at a different moment
of the MOVE each round: after a random pause once the command is sent (fault
injection timing, not synchronisation).
"""

import glob
import imaplib
import os
import random
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOB, BOB_PW = "bob@example.test", "bob-secret"
COUNT = 40
ROUNDS = 8
WAIT = 30


class Server:
    """`python3 mailsrv.py` on free ports, SMTP and IMAP only."""

    def __init__(self, data):
        self.proc = subprocess.Popen(
            [sys.executable, "mailsrv.py", "--data", data, "--hostname", "mx.example.test",
             "--domain", "example.test", "--log-level", "WARNING", "--smtp-port", "0", "--imap-port", "0",
             "--submission-port", "off", "--smtps-port", "off", "--pop3-port", "off", "--pop3s-port", "off",
             "--imaps-port", "off"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.ports = {}
        deadline, buf = time.monotonic() + WAIT, b""
        while "imap" not in self.ports:
            # the raw pipe, not readline(): select() cannot see lines already buffered
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.kill()
                raise AssertionError("no 'listening imap' line; printed %r" % buf)
            buf += chunk
            for m in re.finditer(rb"^listening (\w+) \S+:(\d+)$", buf, re.M):
                self.ports[m.group(1).decode()] = int(m.group(2))

    def kill(self):
        """SIGKILL to every process of the server (the supervisor and its workers:
        a crash, not the graceful end workers make when only their supervisor dies)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()


def message_ids(folder_dir):
    """Message-IDs of the complete messages in a folder (cur/ and new/, never tmp/)."""
    ids = []
    for path in glob.glob(os.path.join(folder_dir, "new", "*")) + glob.glob(os.path.join(folder_dir, "cur", "*")):
        with open(path, "rb") as f:
            m = re.search(rb"^Message-ID: <(kill-\d+)@", f.read(), re.M)
        assert m, "a message file without its Message-ID (half-written?): %s" % path
        ids.append(m.group(1).decode())
    return ids


class MoveKillTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-kill-")
        self.addCleanup(shutil.rmtree, self.data, True)
        p = subprocess.run([sys.executable, "mailsrv.py", "user", "add", BOB, "--data", self.data], cwd=ROOT,
                           input=BOB_PW.encode() + b"\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.inbox = os.path.join(self.data, "mail", "example.test", "bob")
        self.archive = os.path.join(self.inbox, ".Archive")

    def start(self):
        server = Server(self.data)
        self.addCleanup(server.kill)
        return server

    def test_sigkill_during_move_never_loses_a_message(self):
        server = self.start()
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=WAIT) as s:
            for n in range(COUNT):
                s.sendmail("carol@elsewhere.test", [BOB], b"From: carol@elsewhere.test\r\nSubject: kill %d\r\n"
                           b"Message-ID: <kill-%d@elsewhere.test>\r\n\r\n%s\r\n" % (n, n, b"line\r\n" * n))
        expected = {"kill-%d" % n for n in range(COUNT)}
        rng = random.Random(7)
        for round_ in range(ROUNDS):
            source, target = ("INBOX", "Archive") if round_ % 2 == 0 else ("Archive", "INBOX")
            sock = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=WAIT)
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"a LOGIN %s %s\r\nb SELECT %s\r\n" % (BOB.encode(), BOB_PW.encode(), source.encode()))
            while not f.readline().startswith(b"b "):
                pass
            sock.sendall(b"c UID MOVE 1:* %s\r\n" % target.encode())
            time.sleep(rng.uniform(0, 0.05))       # where in the MOVE the kill lands (fault injection)
            server.kill()
            sock.close()
            # on disk: every message complete in the source, the target or both
            found = set(message_ids(self.inbox)) | set(message_ids(self.archive))
            self.assertEqual(found, expected, "round %d: lost %s" % (round_, sorted(expected - found)))
            server = self.start()
        # after the last restart, IMAP serves what is on disk, with UIDs unique per folder
        m = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=WAIT)
        m.login(BOB, BOB_PW)
        served = 0
        for name, path in (("INBOX", self.inbox), ("Archive", self.archive)):
            typ, data = m.select(name)
            self.assertEqual(typ, "OK")
            self.assertEqual(int(data[0]), len(message_ids(path)), name)
            uids = m.uid("SEARCH", "ALL")[1][0].split()
            self.assertEqual(len(uids), len(set(uids)), name)
            served += len(uids)
        self.assertGreaterEqual(served, COUNT)
        m.logout()


if __name__ == "__main__":
    unittest.main()
