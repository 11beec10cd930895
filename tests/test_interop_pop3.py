"""POP3 interoperability with the clients Debian ships: fetchmail, getmail6, curl.

Each test delivers 100 messages to bob through our SMTP listener (smtplib),
lets the real client fetch them over POP3 (RFC 1939) on loopback, and compares
what the client hands over with what was sent, byte for byte after undoing
what the client is documented to change: fetchmail and getmail deliver with
LF line ends, and fetchmail inserts its own Received: (RFC 5321 §4.4 trace).
The server's trace headers are removed with ``tests.helpers.strip_trace``.
Where the client deletes (fetchmail --nokeep, getmail delete = true,
curl -X DELE), the Maildir must be empty afterwards; where it keeps, all 100
files must still be there.

Every test is skipped when its tool is missing (``apt-get install fetchmail
getmail6 curl``) or when MAILSRV_SKIP_INTEROP is set, and every subprocess is
bounded by a timeout.
"""

import glob
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import ServerTestCase, strip_trace

BOB, BOB_PW = "bob@example.test", "bob-secret"
COUNT = 100
TIMEOUT = 120
SKIP = bool(os.environ.get("MAILSRV_SKIP_INTEROP"))
# fetchmail's own trace header, e.g. "Received: from 127.0.0.1 [127.0.0.1]\n\tby host with POP3 (fetchmail-6.4.37)..."
FETCHMAIL_RECEIVED = re.compile(rb"Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\(fetchmail-[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n")


# getmail6 (6.18, Debian 12) installs its SIGCHLD handler only *after* fork(),
# so a delivery child that exits first is never noticed and getmail waits 60 s,
# then fails the message (getmail6/getmail6 issues #52, #226, #245).  That race
# is in getmail's fork plumbing, not in POP3, so the test runs getmail through
# this shim: the same program with ForkingBase.forkchild waiting by waitpid().
GETMAIL_SHIM = r"""
import os, runpy, sys
from argparse import Namespace
from getmailcore import baseclasses

def forkchild(self, childfun, with_out=True):
    self.child = child = Namespace()
    child.stdout = baseclasses.TemporaryFile23()
    child.stderr = baseclasses.TemporaryFile23()
    child.childpid = os.fork()
    if child.childpid == 0:
        childfun(child.stdout, child.stderr)
        os._exit(127)
    _, status = os.waitpid(child.childpid, 0)
    child.exitcode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128
    child.stderr.seek(0)
    child.err = child.stderr.read().strip().decode()
    child.stdout.seek(0)
    if with_out:
        child.out = child.stdout.read().strip()
    return child

if hasattr(baseclasses, "ForkingBase") and hasattr(baseclasses, "TemporaryFile23"):
    baseclasses.ForkingBase.forkchild = forkchild
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def getmail_command():
    """[interpreter, -c, shim, /usr/bin/getmail]: getmail under its own Python."""
    path = shutil.which("getmail")
    with open(path, "rb") as f:
        first = f.readline()
    interpreter = first[2:].decode().split()[0] if first.startswith(b"#!") else sys.executable
    return [interpreter, "-c", GETMAIL_SHIM, path]


def run_fetchmail(test, protocol, port, keep):
    """fetchmail over ``protocol`` (pop3 or imap) on loopback into numbered files under
    test.work/out; returns their paths in order.  ``test`` has work and run_tool."""
    out = os.path.join(test.work, "out")
    os.mkdir(out)
    # the MDA stores each message in the next numbered file: a shell script, since
    # fetchmail starts it once per message (a Python MDA cost 5 s for the 100)
    mda = os.path.join(test.work, "mda.sh")
    with open(mda, "w") as f:
        f.write('n=$(ls "$1" | wc -l)\nexec cat > "$1/$(printf %05d "$n")"\n')
    rc = os.path.join(test.work, "fetchmailrc")
    with open(rc, "w") as f:
        # sslproto "": plain on loopback, no opportunistic STARTTLS with our self-signed certificate
        f.write('poll 127.0.0.1 service %d protocol %s user "%s" password "%s" sslproto "" mda "/bin/sh %s %s"\n'
                % (port, protocol, BOB, BOB_PW, mda, out))
    os.chmod(rc, 0o600)      # fetchmail refuses an rcfile others can read
    env = dict(os.environ, HOME=test.work)
    test.run_tool(["fetchmail", "-f", rc, "--nosyslog", "--fetchall", "--keep" if keep else "--nokeep",
                   "--pidfile", os.path.join(test.work, "fetchmail.pid")], env=env)
    return sorted(glob.glob(os.path.join(out, "*")))


def tool(name):
    return unittest.skipUnless(shutil.which(name), "%s is not installed (apt-get install %s)"
                               % (name, {"getmail": "getmail6"}.get(name, name)))


def message(n):
    """Message n: a unique Subject, lines that need byte-stuffing (RFC 1939 §3), 8-bit text."""
    text = ("From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: interop %d\r\n"
            "Message-ID: <interop-%d@elsewhere.test>\r\n\r\n"
            "Line one of %d.\r\n.starts with a dot\r\n..two dots\r\n.\r\nGrüße aus Köln\r\n" % (n, n, n))
    return text.encode("utf-8") + (b"filler line for size %03d\r\n" % n) * (n % 7)


def as_sent(delivered, lf_client):
    """What a client handed over, back in the form our SMTP client sent it.

    ``lf_client``: the client stores LF line ends (fetchmail, getmail);
    otherwise (curl) the octets are taken exactly as they came off the wire."""
    if lf_client:
        delivered = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return strip_trace(FETCHMAIL_RECEIVED.sub(b"", delivered, count=1))


@unittest.skipIf(SKIP, "MAILSRV_SKIP_INTEROP is set")
class Pop3InteropTest(ServerTestCase):
    def setUp(self):
        self.clear_mailbox(BOB)
        self.sent = [message(n) for n in range(1, COUNT + 1)]
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
            for body in self.sent:
                self.assertEqual(s.sendmail("carol@elsewhere.test", [BOB], body, mail_options=["BODY=8BITMIME"]), {})
        self.work = tempfile.mkdtemp(prefix="mailsrv-interop-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def run_tool(self, args, env=None):
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                           env=env, cwd=self.work)
        self.assertEqual(p.returncode, 0, "%s failed: %s %s" % (args[0], p.stdout[-2000:], p.stderr[-2000:]))
        return p

    def stored_count(self):
        base = self.maildir(BOB)
        return len(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")))

    def assert_all_arrived(self, paths, lf_client=True):
        got = []
        for path in paths:
            with open(path, "rb") as f:
                got.append(as_sent(f.read(), lf_client))
        self.assertEqual(len(got), COUNT)
        self.assertEqual(sorted(got), sorted(self.sent))

    # -- fetchmail ---------------------------------------------------------

    def fetchmail(self, keep):
        return run_fetchmail(self, "pop3", self.ports["pop3"], keep)

    @tool("fetchmail")
    def test_fetchmail_keep(self):
        self.assert_all_arrived(self.fetchmail(keep=True))
        self.assertEqual(self.stored_count(), COUNT)

    @tool("fetchmail")
    def test_fetchmail_nokeep_deletes(self):
        self.assert_all_arrived(self.fetchmail(keep=False))
        self.assertEqual(self.stored_count(), 0)

    # -- getmail6 ----------------------------------------------------------

    def getmail(self, delete):
        md = os.path.join(self.work, "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub))
        run_as = ""
        if os.geteuid() == 0:
            # getmail refuses to deliver into a Maildir as root; give it an ordinary user
            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                self.skipTest("getmail will not deliver as root and there is no user 'nobody' to deliver as")
            for path in (self.work, md, *(os.path.join(md, s) for s in ("cur", "new", "tmp"))):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            run_as = "user = nobody\n"
        rc = os.path.join(self.work, "getmailrc")
        with open(rc, "w") as f:
            f.write("[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = %d\n"
                    "username = %s\npassword = %s\n\n[destination]\ntype = Maildir\npath = %s/\n%s\n"
                    "[options]\nread_all = true\ndelete = %s\ndelivered_to = false\nreceived = false\n"
                    % (self.ports["pop3"], BOB, BOB_PW, md, run_as, "true" if delete else "false"))
        self.run_tool([*getmail_command(), "--getmaildir", self.work, "--rcfile", rc, "--quiet"])
        return glob.glob(os.path.join(md, "new", "*"))

    @tool("getmail")
    def test_getmail_keep(self):
        self.assert_all_arrived(self.getmail(delete=False))
        self.assertEqual(self.stored_count(), COUNT)

    @tool("getmail")
    def test_getmail_delete(self):
        self.assert_all_arrived(self.getmail(delete=True))
        self.assertEqual(self.stored_count(), 0)

    # -- curl --------------------------------------------------------------

    def curl(self, *args):
        return self.run_tool(["curl", "-sS", "--max-time", str(TIMEOUT), "-u", "%s:%s" % (BOB, BOB_PW), *args]).stdout

    @tool("curl")
    def test_curl_list_retrieve_delete(self):
        url = "pop3://127.0.0.1:%d/" % self.ports["pop3"]
        listing = self.curl(url).split(b"\r\n")
        self.assertEqual(listing[-1], b"")
        self.assertEqual([int(line.split()[0]) for line in listing[:-1]], list(range(1, COUNT + 1)))
        out = os.path.join(self.work, "out")
        os.mkdir(out)
        # curl's URL globbing: one invocation, one file per message
        self.curl(url + "[1-%d]" % COUNT, "-o", os.path.join(out, "#1.eml"))
        paths = glob.glob(os.path.join(out, "*.eml"))
        for line in listing[:-1]:
            n, size = line.split()
            with open(os.path.join(out, "%s.eml" % n.decode()), "rb") as f:
                self.assertEqual(len(f.read()), int(size))      # RFC 1939 §11: LIST sizes are exact
        self.assert_all_arrived(paths, lf_client=False)
        # DELE of message 1, COUNT times: each curl run is its own session, so the rest renumber
        for _ in range(COUNT):
            self.curl(url + "1", "-X", "DELE", "-I")
        # the server sends "+OK ..." CRLF "." CRLF; curl 7.88 prints a lone CRLF for that empty listing
        self.assertEqual(self.curl(url).strip(), b"")
        self.assertEqual(self.stored_count(), 0)


if __name__ == "__main__":
    unittest.main()
