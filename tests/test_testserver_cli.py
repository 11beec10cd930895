"""`python3 mailsrv.py test-server` in a subprocess: its listening lines, mail
caught over them, a clean stop on SIGTERM and SIGINT, the temporary folder gone."""

import os
import re
import select
import signal
import smtplib
import subprocess
import sys
import unittest

from tests.helpers import ROOT, mailsrv_cli

PY = sys.executable


class TestServerCommand(unittest.TestCase):
    def start(self, *args):
        proc = subprocess.Popen([PY, "mailsrv.py", "test-server", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)   # select sees every line
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        lines = []
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            if not ready:
                self.fail("test-server printed nothing for 30 s: %r" % lines)
            line = proc.stdout.readline().decode().rstrip("\n")
            if not line:
                self.fail("test-server exited: %r %s" % (lines, proc.stderr.read().decode()))
            lines.append(line)
            if line.startswith("running as pid"):
                return proc, lines

    def stop(self, proc, signum):
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        return proc.returncode, err.decode()

    def test_free_ports_printed_mail_caught_clean_stop(self):
        proc, lines = self.start("--ports-base", "0", "--log-level", "WARNING")
        ports = {m.group(1): int(m.group(2)) for m in
                 (re.match(r"listening (\w+) 127\.0\.0\.1:(\d+)$", l) for l in lines) if m}
        self.assertLessEqual({"imap", "pop3", "smtp", "submission"}, set(ports))
        self.assertTrue({"smtps", "pop3s", "imaps"} <= set(ports))     # TLS out of the box (self-signed)
        self.assertTrue(all(p > 0 for p in ports.values()))
        data = [l for l in lines if l.startswith("data folder ")][0][len("data folder "):]
        self.assertTrue(os.path.isdir(data))
        self.assertTrue(any(l.startswith("catch-all: ") for l in lines), lines)
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as s:
            self.assertEqual(s.sendmail("app@shop.test", ["bob@example.org", "x@elsewhere.test"],
                                        b"Subject: hi\r\n\r\nx\r\n"), {})
        self.assertTrue(os.path.isdir(os.path.join(data, "mail", "elsewhere.test", "x", "new")))
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as s:     # the catalog lists them as we stop
            s.sendmail("app@shop.test", ["n%d@example.org" % i for i in range(5)], b"Subject: hi\r\n\r\nx\r\n")
        rc, err = self.stop(proc, signal.SIGTERM)
        self.assertEqual(rc, 0, err)
        self.assertFalse(os.path.exists(data), "the temporary data folder is removed at exit")

    def test_sigint_stops_it_too(self):
        proc, _lines = self.start("--ports-base", "0", "--log-level", "WARNING", "--any-password")
        rc, err = self.stop(proc, signal.SIGINT)
        self.assertEqual(rc, 0, err)

    def test_a_port_base_beyond_the_range_is_one_line(self):
        rc, _out, err = mailsrv_cli("test-server", "--ports-base", "65000")
        self.assertEqual(rc, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("--ports-base 65000", err)

    def test_help_names_the_options(self):
        p = subprocess.run([PY, "mailsrv.py", "test-server", "--help"], cwd=ROOT, capture_output=True, timeout=60)
        for option in (b"--password", b"--any-password", b"--ports-base", b"--data", b"--tls-cert"):
            self.assertIn(option, p.stdout)


if __name__ == "__main__":
    unittest.main()
