"""`python3 mailsrv.py sendmail`, the command cron and PHP's mail() call, run for real.

With a running server (signalled at once) and without (the message waits in
DATA/postdrop/ until the server starts); -t/-i framing; Bcc removed; the
sysexits.h codes; the pick-up's refusal of files it must not trust.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from protocols.backend import sendmail as sm
from store import postdrop
from tests.helpers import ROOT, add_user_cli, read_stored, strip_trace, wait_for
from tests.test_reload import StderrReader
from tests.test_server_cli import PY, ServerProcess

MSG = (b"From: Cron Daemon <cron@example.test>\n"
       b"To: bob@example.test\n"
       b"Subject: backup report\n"
       b"Date: Sun, 29 Nov 2026 12:00:00 +0000\n"
       b"Message-ID: <report.1@example.test>\n"
       b"\n"
       b"all good\n"
       b".\n"
       b"(a lone dot above, kept with -i)\n")


def crlf(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


def sendmail(data, *args, stdin=MSG):
    return subprocess.run([PY, "mailsrv.py", "sendmail", "--data", data, *args], cwd=ROOT, input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


class SendmailCommandTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-sendmail-")
        self.addCleanup(shutil.rmtree, self.data, True)
        for user in ("bob@example.test", "carol@example.test"):
            add_user_cli(self.data, user)

    def server(self):
        srv = ServerProcess(self.data)
        self.addCleanup(srv.kill)
        return srv

    def stored(self, user, count=1):
        local, domain = user.split("@")
        pattern = os.path.join(self.data, "mail", domain, local, "new", "*")
        paths = wait_for(lambda: len(glob.glob(pattern)) >= count and sorted(glob.glob(pattern)),
                         "delivery to %s" % user)
        return [read_stored(p) for p in paths]

    def test_without_a_server_the_message_waits_and_arrives_when_it_starts(self):
        p = sendmail(self.data, "-i", "-f", "cron@example.test", "bob@example.test")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(postdrop.pending(self.data)), 1)
        self.server()
        [stored] = self.stored("bob@example.test")
        self.assertTrue(stored.startswith(b"Return-Path: <cron@example.test>\r\nDelivered-To: bob@example.test\r\n"
                                          b"Received: by mx.example.test (mailsrv, from userid %d)" % os.getuid()),
                        stored[:200])
        self.assertEqual(strip_trace(stored), crlf(MSG))
        wait_for(lambda: postdrop.pending(self.data) == [], "the postdrop file removed")

    def test_with_a_running_server_minus_t_reads_recipients_and_removes_bcc(self):
        self.server()
        wait_for(lambda: os.path.exists(os.path.join(self.data, "mailsrv.pid")), "the pid file")
        msg = MSG.replace(b"To: bob@example.test\n", b"To: bob@example.test\nBcc: Carol <carol@example.test>\n")
        p = sendmail(self.data, "-t", "-oi", "-f", "cron@example.test", stdin=msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        for user in ("bob@example.test", "carol@example.test"):
            [stored] = self.stored(user)      # signalled: well before the 60-second round
            self.assertEqual(strip_trace(stored), crlf(MSG), user)

    def test_a_message_that_cannot_be_stored_stays_until_it_can(self):
        new_dir = os.path.join(self.data, "mail", "example.test", "bob", "new")
        os.rename(new_dir, new_dir + ".away")
        with open(new_dir, "w"):
            pass                                   # new/ is a file: delivery fails (ENOTDIR)
        srv = self.server()
        wait_for(lambda: os.path.exists(os.path.join(self.data, "mailsrv.pid")), "the pid file")
        self.assertEqual(sendmail(self.data, "-i", "-f", "cron@example.test", "bob@example.test").returncode, 0)
        StderrReader(srv.proc).wait_line("ERROR", "delivery failed")
        self.assertEqual(len(postdrop.pending(self.data)), 1)    # kept: nothing was stored
        os.unlink(new_dir)
        os.rename(new_dir + ".away", new_dir)
        srv.proc.send_signal(signal.SIGUSR2)       # what the next sendmail (or the 60 s round) does
        [stored] = self.stored("bob@example.test")
        self.assertEqual(strip_trace(stored), crlf(MSG))
        wait_for(lambda: postdrop.pending(self.data) == [], "the postdrop file removed after delivery")

    def test_an_unknown_local_recipient_found_at_pick_up_is_bounced_to_the_sender(self):
        # what happens when the command could not read the users file (a shared postdrop/)
        postdrop.write(self.data, "1.unknown", "bob@example.test", ["ghost@example.test"], crlf(MSG))
        self.server()
        [bounce] = self.stored("bob@example.test")
        self.assertIn(b"Return-Path: <>", bounce)
        self.assertIn(b"<ghost@example.test>: smtp; 550 5.1.1", bounce)

    def test_without_minus_i_a_lone_dot_ends_the_message_and_headers_are_completed(self):
        p = sendmail(self.data, "-F", "Backup Job", "-f", "cron@example.test", "bob@example.test",
                     stdin=b"Subject: short\n\nfirst\n.\nnever read\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.server()
        [stored] = self.stored("bob@example.test")
        body = strip_trace(stored)
        self.assertTrue(body.startswith(b"Subject: short\r\nFrom: Backup Job <cron@example.test>\r\nDate: "), body)
        self.assertIn(b"\r\nMessage-ID: <", body)
        self.assertTrue(body.endswith(b"\r\n\r\nfirst\r\n"), body)

    def test_exit_codes_are_sysexits(self):
        cases = [
            (["-q"], sm.EX_USAGE, "unknown option -q"),
            (["-bs", "bob@example.test"], sm.EX_USAGE, "-bs is not supported"),
            ([], sm.EX_USAGE, "no recipients"),
            (["nobody@example.test"], sm.EX_NOUSER, "nobody@example.test"),
            (["bad address@@example.test"], sm.EX_DATAERR, "bad address"),
        ]
        for args, code, text in cases:
            p = sendmail(self.data, *args)
            self.assertEqual(p.returncode, code, (args, p.stderr))
            err = p.stderr.decode().strip()
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn(text, err)
        p = subprocess.run([PY, "mailsrv.py", "sendmail", "--data", os.path.join(self.data, "missing"),
                            "bob@example.test"], cwd=ROOT, input=MSG, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        self.assertEqual(p.returncode, sm.EX_CONFIG, p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.data, "missing")))
        with open(os.path.join(self.data, "postdrop"), "w"):
            pass                                   # a file where the directory must be
        p = sendmail(self.data, "bob@example.test")
        self.assertEqual(p.returncode, sm.EX_CANTCREAT, p.stderr)
        self.assertIn(os.path.join(self.data, "postdrop"), p.stderr.decode())

    @unittest.skipIf(os.geteuid() == 0, "root ignores permissions")
    def test_a_postdrop_we_may_not_write_is_ex_noperm(self):
        os.mkdir(os.path.join(self.data, "postdrop"), 0o500)
        p = sendmail(self.data, "bob@example.test")
        self.assertEqual(p.returncode, sm.EX_NOPERM, p.stderr)

    def test_the_pickup_sets_aside_links_and_garbage_and_mails_nothing_out(self):
        secret = os.path.join(self.data, "secret")
        with open(secret, "wb") as f:
            f.write(b'{"v": 1, "sender": "", "recipients": ["bob@example.test"]}\nSubject: secret\n\nx\n')
        os.mkdir(postdrop.drop_dir(self.data), 0o700)
        os.symlink(secret, os.path.join(postdrop.drop_dir(self.data), "1.link"))
        os.link(secret, os.path.join(postdrop.drop_dir(self.data), "2.hardlink"))
        with open(os.path.join(postdrop.drop_dir(self.data), "3.garbage"), "wb") as f:
            f.write(b"not a drop file\n")
        self.assertEqual(sendmail(self.data, "-i", "bob@example.test").returncode, 0)
        self.server()
        [stored] = self.stored("bob@example.test")
        self.assertEqual(strip_trace(stored), crlf(MSG))
        wait_for(lambda: postdrop.pending(self.data) == [], "bad files set aside")
        aside = sorted(n for n in os.listdir(postdrop.drop_dir(self.data)) if n.startswith(".bad-"))
        self.assertEqual(aside, [".bad-1.link", ".bad-2.hardlink", ".bad-3.garbage"])


class SendmailGrammarTest(unittest.TestCase):
    def test_options(self):
        o = sm.parse_args(["-t", "-oi", "-fme@x.test", "-F", "Me", "-odi", "-oem", "-B", "8BITMIME",
                           "-o", "x", "value", "--", "a@x.test, b@x.test", "c@x.test"])
        self.assertEqual((o.extract, o.ignore_dots, o.sender, o.full_name), (True, True, "me@x.test", "Me"))
        self.assertEqual(o.recipients, ["a@x.test", "b@x.test", "c@x.test"])
        self.assertEqual(sm.parse_args(["-bm", "-i", "-r", "s@x.test", "u"]).sender, "s@x.test")

    def test_the_command_lines_of_cron_php_and_git(self):
        debian_cron = sm.parse_args("-FCronDaemon -i -B8BITMIME -oem alice".split())
        self.assertEqual((debian_cron.full_name, debian_cron.ignore_dots, debian_cron.recipients),
                         ("CronDaemon", True, ["alice"]))
        cronie = sm.parse_args("-FCronDaemon -i -odi -oem -oi -t -f root".split())
        self.assertEqual((cronie.extract, cronie.sender, cronie.recipients), (True, "root", []))
        php = sm.parse_args(["-t", "-i"])                      # PHP's default sendmail_path
        self.assertEqual((php.extract, php.ignore_dots), (True, True))
        git = sm.parse_args(["-i", "-f", "me@x.test", "a@x.test", "b@x.test"])   # git send-email
        self.assertEqual(git.recipients, ["a@x.test", "b@x.test"])

    def test_extract_reads_folded_fields_and_drops_every_bcc_line(self):
        msg = (b"To: A <a@x.test>,\r\n\tb@x.test\r\nCc: c@x.test\r\nBcc: d@x.test,\r\n e@x.test\r\n"
               b"Resent-Bcc: f@x.test\r\nSubject: s\r\n\r\nTo: not@header.test\r\n")
        addrs, out = sm.extract(msg)
        self.assertEqual(addrs, ["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"])
        self.assertEqual(out, b"To: A <a@x.test>,\r\n\tb@x.test\r\nCc: c@x.test\r\nSubject: s\r\n\r\n"
                              b"To: not@header.test\r\n")

    def test_addresses(self):
        self.assertEqual(sm.address("root", "host.test"), "root@host.test")
        self.assertEqual(sm.address("<>", "host.test", sender=True), "")
        with self.assertRaises(sm.SendmailError) as cm:
            sm.address("a b@@c", "host.test")
        self.assertEqual(cm.exception.code, sm.EX_DATAERR)


if __name__ == "__main__":
    unittest.main()
