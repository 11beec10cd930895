"""IMAP interoperability with the clients Debian ships (issue 10 "Tests").

Each test fills bob's INBOX through our SMTP listener (smtplib), lets a real
client work on it over IMAP on loopback, and checks the result where it
cannot lie: the files of bob's Maildir on our side (Dovecot's Maildir++
layout: INBOX is the root, folder "a/b" is the directory ".a.b"; flags are
the letters after ":2,") and what the client stored on its side.

- isync/mbsync and offlineimap3 sync 500 messages both ways (a new folder,
  flags, deletions), and a second run changes nothing on either side; with
  CONDSTORE / QRESYNC offered (RFC 7162: neither isync 1.4 nor offlineimap3
  uses them, they must not be confused by them), changes made on the server by
  a QRESYNC session (flags, expunges it hears as VANISHED) reach the client,
  and a run after that changes nothing again;
- imapfilter searches, flags and moves;
- curl lists, fetches (byte-identical to what was sent) and appends;
- fetchmail and getmail6 fetch over IMAP;
- neomutt (driven through tmux) opens INBOX over IMAP and copies every
  message to Archive.

Every test is skipped when its tool is missing (the skip names the Debian
package) or when MAILSRV_SKIP_INTEROP is set; every subprocess is bounded by
a timeout.
"""

import glob
import imaplib
import os
import pwd
import re
import shlex
import shutil
import smtplib
import subprocess
import tempfile
import time
import unittest

from tests.helpers import ServerTestCase, strip_trace
from tests.test_interop_pop3 import as_sent, getmail_command, message, run_fetchmail

BOB, BOB_PW = "bob@example.test", "bob-secret"
TIMEOUT = 180
SKIP = bool(os.environ.get("MAILSRV_SKIP_INTEROP"))
PACKAGE = {"mbsync": "isync", "offlineimap": "offlineimap3", "getmail": "getmail6"}


def tool(name):
    return unittest.skipUnless(shutil.which(name), "%s is not installed (apt-get install %s)"
                               % (name, PACKAGE.get(name, name)))


def flags_of(path):
    """The Maildir flag letters of a message file (after ":2,")."""
    name = os.path.basename(path)
    return name.split(":2,", 1)[1].split(",")[0] if ":2," in name else ""


def messages_in(folder_dir):
    return sorted(glob.glob(os.path.join(folder_dir, "new", "*")) + glob.glob(os.path.join(folder_dir, "cur", "*")))


# Headers the clients add on their side: mbsync's X-TUID (its own tracking id),
# getmail's X-getmail-retrieved-from-mailbox.
CLIENT_HEADERS = re.compile(rb"(?m)^(?:X-TUID|X-getmail-retrieved-from-mailbox): [^\r\n]*\r?\n")


def as_fetched(data):
    """What a client stored, back in the form our SMTP client sent it."""
    return as_sent(CLIENT_HEADERS.sub(b"", data), lf_client=True)


def tree_listing(root):
    """Every file under root with its size, for "a second run changes nothing"."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out.append((os.path.relpath(path, root), os.path.getsize(path)))
    return sorted(out)


@unittest.skipIf(SKIP, "MAILSRV_SKIP_INTEROP is set")
class ImapInteropTest(ServerTestCase):
    extra_config = {"imap_port": "0", "imaps_port": "0"}
    count = 100

    def setUp(self):
        self.clear_all()
        self.sent = [message(n) for n in range(1, self.count + 1)]
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
            for body in self.sent:
                self.assertEqual(s.sendmail("carol@elsewhere.test", [BOB], body, mail_options=["BODY=8BITMIME"]), {})
        self.work = tempfile.mkdtemp(prefix="mailsrv-interop-imap-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def clear_all(self):
        """Remove every folder but INBOX and every message: each test starts from a fresh INBOX."""
        base = self.maildir(BOB)
        for d in glob.glob(os.path.join(base, ".*")):
            if os.path.isdir(d) and os.path.basename(d) not in (".", ".."):
                shutil.rmtree(d)
        self.clear_mailbox(BOB)

    def assert_same_messages(self, paths):
        """The files a client stored are the messages sent, each once (no list diff:
        difflib on 500 messages takes minutes)."""
        got = []
        for path in paths:
            with open(path, "rb") as f:
                got.append(as_fetched(f.read()))
        self.assertEqual(len(got), len(self.sent))
        missing = [m for m in self.sent if m not in set(got)]
        self.assertFalse(missing, "%d messages differ; first sent: %r; first got: %r"
                         % (len(missing), missing[:1], sorted(set(got) - set(self.sent))[:1]))

    def run_tool(self, args, env=None, cwd=None, check=True):
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                           env=env, cwd=cwd or self.work)
        if check:
            self.assertEqual(p.returncode, 0, "%s failed (%d): %s %s"
                             % (args[0], p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        return p

    def server_folder(self, name=""):
        return self.maildir(BOB, "." + name.replace("/", ".") if name else "")

    def server_state(self):
        """{folder: sorted [(subject line, flags)]} over bob's whole Maildir on our side."""
        state = {}
        base = self.maildir(BOB)
        for d in [base] + sorted(glob.glob(os.path.join(base, ".*"))):
            if not os.path.isdir(os.path.join(d, "cur")):
                continue
            name = "INBOX" if d == base else os.path.basename(d)[1:]
            rows = []
            for path in messages_in(d):
                with open(path, "rb") as f:
                    subject = [line for line in f.read().splitlines() if line.startswith(b"Subject:")][:1]
                rows.append((subject[0] if subject else b"", flags_of(path)))
            state[name] = sorted(rows)
        return state


class SyncClientsTest(ImapInteropTest):
    """mbsync and offlineimap3 both ways on 500 messages."""

    count = 500

    def local_changes(self, inbox):
        """On the client's side: flag 10 messages, delete 5, and add a folder with 3 messages."""
        files = messages_in(inbox)
        self.assertEqual(len(files), self.count)
        for path in files[:10]:
            base, _, letters = os.path.basename(path).partition(":2,")
            new = os.path.join(os.path.dirname(os.path.dirname(path)), "cur",
                               base + ":2," + "".join(sorted(set(letters + "F"))))
            os.rename(path, new)
        for path in messages_in(inbox)[-5:]:
            os.unlink(path)
        return files

    def assert_server_after_changes(self, projects_name):
        state = self.server_state()
        self.assertEqual(len(state["INBOX"]), self.count - 5)
        self.assertEqual(sum(1 for _s, f in state["INBOX"] if "F" in f), 10)
        self.assertEqual(sorted(s for s, _f in state[projects_name]),
                         [b"Subject: project %d" % i for i in range(3)])

    def add_local_folder(self, path):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        for i in range(3):
            with open(os.path.join(path, "new", "17000000%02d.local%d.host" % (i, i)), "wb") as f:
                f.write(b"From: bob@example.test\nSubject: project %d\n\nbody %d\n" % (i, i))

    # -- isync / mbsync --------------------------------------------------------
    @tool("mbsync")
    def test_mbsync_both_ways_and_idempotent(self):
        local = os.path.join(self.work, "local")
        os.makedirs(local)
        conf = os.path.join(self.work, "mbsyncrc")
        with open(conf, "w") as f:
            f.write("IMAPAccount srv\nHost 127.0.0.1\nPort %d\nUser %s\nPass %s\nSSLType None\nAuthMechs LOGIN\n\n"
                    "IMAPStore srv\nAccount srv\n\n"
                    "MaildirStore loc\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
                    "Channel ch\nFar :srv:\nNear :loc:\nPatterns *\nCreate Both\nExpunge Both\n"
                    "SyncState *\nSync All\n" % (self.ports["imap"], BOB, BOB_PW, local, local))
        self.sync_three_times(lambda: self.run_tool(["mbsync", "-c", conf, "-a"]), local)

    def sync_three_times(self, sync, local):
        """First sync brings every message; the second carries 10 flags, 5 deletions
        and a new folder to the server; the third changes nothing on either side."""
        sync()
        inbox = os.path.join(local, "INBOX")
        self.assert_same_messages(messages_in(inbox))
        self.local_changes(inbox)
        self.add_local_folder(os.path.join(local, "Projects"))
        sync()
        self.assert_server_after_changes("Projects")
        server_before, local_before = self.local_messages(self.maildir(BOB)), self.local_messages(local)
        sync()
        self.assertEqual(self.local_messages(local), local_before)
        self.assertEqual(self.local_messages(self.maildir(BOB)), server_before)
        self.server_changes_by_qresync_session()
        sync()
        files = messages_in(inbox)
        self.assertEqual(len(files), self.count - 5 - 2)
        self.assertEqual(sum(1 for p in files if "R" in flags_of(p)), 3)
        server_before, local_before = self.local_messages(self.maildir(BOB)), self.local_messages(local)
        sync()
        self.assertEqual(self.local_messages(local), local_before)
        self.assertEqual(self.local_messages(self.maildir(BOB)), server_before)

    def server_changes_by_qresync_session(self):
        """Another client, QRESYNC enabled: \\Answered on the three lowest UIDs, the two
        highest expunged (heard as VANISHED, RFC 7162 §3.2.10.2)."""
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=30)
        try:
            m.login(BOB, BOB_PW)
            self.assertEqual(m.enable("QRESYNC")[0], "OK")
            typ, data = m.select("INBOX")
            self.assertEqual(typ, "OK")
            self.assertTrue(m.response("HIGHESTMODSEQ")[1][0])
            uids = [int(u) for u in m.uid("SEARCH", "ALL")[1][0].split()]
            store = m.uid("STORE", "%d:%d" % (uids[0], uids[2]), "+FLAGS", "(\\Answered)")
            self.assertEqual(store[0], "OK")
            self.assertIn(b"MODSEQ", store[1][0])
            m.uid("STORE", "%d,%d" % (uids[-2], uids[-1]), "+FLAGS.SILENT", "(\\Deleted)")
            typ, data = m.expunge()
            self.assertEqual(typ, "OK")
            self.assertEqual(m.response("VANISHED")[1], [b"%d:%d" % (uids[-2], uids[-1])])
        finally:
            m.logout()

    @staticmethod
    def is_message(rel):
        return "/cur/" in "/" + rel or "/new/" in "/" + rel

    def local_messages(self, root):
        return [r for r in tree_listing(root) if self.is_message(r[0])]

    # -- offlineimap3 ----------------------------------------------------------
    @tool("offlineimap")
    def test_offlineimap_both_ways_and_idempotent(self):
        local = os.path.join(self.work, "olocal")
        os.makedirs(local)
        conf = os.path.join(self.work, "offlineimaprc")
        with open(conf, "w") as f:
            f.write("[general]\naccounts = t\nmetadata = %s/meta\n\n"
                    "[Account t]\nlocalrepository = loc\nremoterepository = srv\n\n"
                    "[Repository loc]\ntype = Maildir\nlocalfolders = %s\nsep = /\n\n"
                    "[Repository srv]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = %d\n"
                    "remoteuser = %s\nremotepass = %s\nssl = no\nstarttls = no\n"
                    % (self.work, local, self.ports["imap"], BOB, BOB_PW))
        self.sync_three_times(lambda: self.run_tool(["offlineimap", "-c", conf, "-o", "-u", "quiet"]), local)


class ReadingClientsTest(ImapInteropTest):
    """imapfilter, curl, fetchmail, getmail6 on 100 messages."""

    # -- imapfilter ------------------------------------------------------------
    @tool("imapfilter")
    def test_imapfilter_search_flag_move(self):
        conf = os.path.join(self.work, "config.lua")
        with open(conf, "w") as f:
            f.write("options.timeout = 60\noptions.starttls = false\noptions.certificates = false\n"
                    "acc = IMAP { server = '127.0.0.1', port = %d, username = '%s', password = '%s' }\n"
                    "res = acc.INBOX:contain_subject('interop 7')\n"
                    "res:add_flags({ '\\\\Flagged' })\n"
                    "acc:create_mailbox('Filtered')\n"
                    "res:move_messages(acc.Filtered)\n"
                    "seen = acc.INBOX:is_smaller(100000) * acc.INBOX:contain_body('Line one of 3.')\n"
                    "seen:mark_seen()\n" % (self.ports["imap"], BOB, BOB_PW))
        self.run_tool(["imapfilter", "-c", conf], env=dict(os.environ, HOME=self.work))
        moved = [n for n in range(1, self.count + 1) if "interop 7" in "interop %d" % n]
        state = self.server_state()
        self.assertEqual(sorted(s for s, _f in state["Filtered"]),
                         sorted(b"Subject: interop %d" % n for n in moved))
        self.assertTrue(all("F" in f for _s, f in state["Filtered"]))
        self.assertEqual(len(state["INBOX"]), self.count - len(moved))
        seen = [s for s, f in state["INBOX"] if "S" in f]
        self.assertEqual(seen, [b"Subject: interop 3"])

    # -- curl ------------------------------------------------------------------
    def curl(self, *args):
        return self.run_tool(["curl", "-sS", "--max-time", str(TIMEOUT), "-u", "%s:%s" % (BOB, BOB_PW),
                              *args]).stdout

    @tool("curl")
    def test_curl_list_fetch_append(self):
        url = "imap://127.0.0.1:%d/" % self.ports["imap"]
        listing = self.curl(url)
        self.assertIn(b'"/" INBOX', listing)
        for name in (b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"):
            self.assertIn(b'"/" ' + name, listing)
        # one message by UID, byte-identical to what our SMTP client sent
        for uid in (1, 50, self.count):
            got = self.curl(url + "INBOX;UID=%d" % uid)
            self.assertIn(strip_trace(got), self.sent)
        # curl's EXAMINE + SEARCH: every UID
        found = self.curl(url + "INBOX?ALL")
        self.assertEqual(found.split(b"\r\n")[0].split()[:2], [b"*", b"SEARCH"])
        self.assertEqual(len(found.split(b"\r\n")[0].split()) - 2, self.count)
        draft = os.path.join(self.work, "draft.eml")
        with open(draft, "wb") as f:
            f.write(b"From: bob@example.test\r\nTo: carol@elsewhere.test\r\nSubject: appended by curl\r\n\r\nhello\r\n")
        self.curl("-T", draft, url + "Drafts")
        stored = messages_in(self.server_folder("Drafts"))
        self.assertEqual(len(stored), 1)
        with open(stored[0], "rb") as f, open(draft, "rb") as g:
            self.assertEqual(f.read().replace(b"\r\n", b"\n"), g.read().replace(b"\r\n", b"\n"))

    # -- fetchmail -------------------------------------------------------------
    @tool("fetchmail")
    def test_fetchmail_over_imap(self):
        self.assert_same_messages(run_fetchmail(self, "imap", self.ports["imap"], keep=False))
        self.assertEqual(self.server_state()["INBOX"], [])     # --nokeep: \Deleted + EXPUNGE

    # -- getmail6 --------------------------------------------------------------
    @tool("getmail")
    def test_getmail_over_imap(self):
        md = os.path.join(self.work, "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub))
        run_as = ""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (self.work, md, *(os.path.join(md, s) for s in ("cur", "new", "tmp"))):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            run_as = "user = nobody\n"
        rc = os.path.join(self.work, "getmailrc")
        with open(rc, "w") as f:
            f.write("[retriever]\ntype = SimpleIMAPRetriever\nserver = 127.0.0.1\nport = %d\n"
                    "username = %s\npassword = %s\nmailboxes = (\"INBOX\",)\n\n"
                    "[destination]\ntype = Maildir\npath = %s/\n%s\n"
                    "[options]\nread_all = true\ndelete = false\ndelivered_to = false\nreceived = false\n"
                    % (self.ports["imap"], BOB, BOB_PW, md, run_as))
        self.run_tool([*getmail_command(), "--getmaildir", self.work, "--rcfile", rc, "--quiet"])
        self.assert_same_messages(glob.glob(os.path.join(md, "new", "*")))
        self.assertEqual(len(self.server_state()["INBOX"]), self.count)   # delete = false keeps them

    # -- neomutt under tmux ----------------------------------------------------
    @tool("neomutt")
    @tool("tmux")
    def test_neomutt_opens_inbox_and_copies(self):
        sock = os.path.join(self.work, "tmux.sock")
        tmux = ["tmux", "-S", sock]
        url = "imap://127.0.0.1:%d/" % self.ports["imap"]
        settings = ["set imap_user=%s" % BOB, "set imap_pass=%s" % BOB_PW, "set ssl_starttls=no",
                    "set ssl_force_tls=no", "set folder=%s" % url, "set confirmcreate=no",
                    "set confirmappend=no", "set sort=mailbox-order", 'set index_format="NMIDX|%s"',
                    "set header_cache=", "set message_cachedir="]
        command = " ".join(["neomutt", "-n", "-F", "/dev/null", "-f", shlex.quote(url + "INBOX")]
                           + ["-e %s" % shlex.quote(c) for c in settings])
        env = dict(os.environ, HOME=self.work, TERM="xterm")
        subprocess.run(tmux + ["new-session", "-d", "-s", "nm", "-x", "200", "-y", "50", command],
                       check=True, timeout=TIMEOUT, env=env)
        self.addCleanup(subprocess.run, tmux + ["kill-server"], timeout=TIMEOUT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def pane():
            return subprocess.run(tmux + ["capture-pane", "-p", "-t", "nm"], stdout=subprocess.PIPE,
                                  timeout=TIMEOUT, env=env).stdout.decode(errors="replace")
        deadline = time.monotonic() + TIMEOUT
        while len(re.findall(r"NMIDX\|interop \d+", pane())) < 40:     # a screenful of the index
            self.assertLess(time.monotonic(), deadline, "neomutt showed no index:\n" + pane())
            time.sleep(0.05)   # bounded polling of the pane, not synchronisation
        keys = "<tag-pattern>~A<enter><tag-prefix><copy-message>=Archive<enter>"
        subprocess.run(tmux + ["send-keys", "-t", "nm", ":push %s" % keys, "Enter"], check=True, timeout=TIMEOUT)
        archive = self.server_folder("Archive")
        while len(messages_in(archive)) < self.count:
            self.assertLess(time.monotonic(), deadline, "neomutt copied %d of %d:\n%s"
                            % (len(messages_in(archive)), self.count, pane()))
            time.sleep(0.05)   # bounded polling of the server's Maildir
        state = self.server_state()
        self.assertEqual(sorted(state["Archive"]), sorted(state["INBOX"]))
        self.assertEqual(len(state["INBOX"]), self.count)


if __name__ == "__main__":
    unittest.main()
