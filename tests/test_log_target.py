"""log_target: stderr (the default), a file reopened on SIGHUP (logrotate's
rename + HUP, with the real server process), syslog; and embedding leaves the
host's logging alone."""

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from protocols import logtarget
from tests.helpers import ROOT, wait_for
from tests.test_server_cli import OFF, PY, ServerProcess


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class LogFileTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-log-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "mailsrv.log")
        self.conf = os.path.join(self.dir, "mailsrv.ini")
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\nlog_target = file:%s\n" % self.log)

    def test_file_target_is_reopened_after_logrotate_renames_it(self):
        srv = ServerProcess(self.data, "--config", self.conf, "--log-level", "INFO")
        self.addCleanup(srv.kill)
        wait_for(lambda: os.path.exists(os.path.join(self.data, "mailsrv.pid")), "the pid file")
        wait_for(lambda: re.search(r"INFO mailsrv(\[\d+\])?: listening smtp", read(self.log)), "the start-up lines in the log file")
        os.rename(self.log, self.log + ".1")               # logrotate's default: rename, then HUP
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded users" in read(self.log), "the reload line in a new log file",
                 lambda: read(self.log + ".1"))
        self.assertNotIn("reloaded users", read(self.log + ".1"))
        srv.proc.send_signal(signal.SIGTERM)
        self.assertEqual(srv.proc.wait(30), 0)
        self.assertIn("stopped", read(self.log))
        self.assertNotIn(" INFO ", srv.proc.stderr.read().decode())     # nothing logged to stderr

    def test_a_log_file_that_cannot_be_opened_is_one_line_naming_it(self):
        bad = os.path.join(self.dir, "no-such-dir", "mailsrv.log")
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\nlog_target = file:%s\n" % bad)
        p = subprocess.run([PY, "mailsrv.py", "--data", self.data, "--config", self.conf, "--smtp-port", "0", *OFF],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 2)
        err = p.stderr.decode().strip()
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(bad, err)

    def test_bad_target_is_a_config_error(self):
        import mailsrv
        with self.assertRaises(mailsrv.ConfigError) as cm:
            mailsrv.Config({"log_target": "sys"})
        self.assertIn("log_target", str(cm.exception))


class SyslogTest(unittest.TestCase):
    def test_syslog_target_sends_mail_facility_records_tagged_mailsrv(self):
        d = tempfile.mkdtemp(prefix="mailsrv-syslog-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "log.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(10)
            handler = logtarget.make_handler("syslog", syslog_address=path)
            self.addCleanup(handler.close)
            handler.handle(logging.LogRecord("mailsrv.smtp", logging.WARNING, __file__, 1, "hello %s", ("syslog",), None))
            datagram = sock.recv(4096)
        # <PRI> = facility mail (2) * 8 + severity warning (4) = 20 (RFC 5424 §6.2.1)
        self.assertTrue(datagram.startswith(b"<20>mailsrv[%d]: WARNING mailsrv.smtp: hello syslog" % os.getpid()),
                        datagram)


class EmbeddingLeavesLoggingAloneTest(unittest.TestCase):
    def test_reload_does_not_touch_the_root_logger(self):
        import mailsrv
        d = tempfile.mkdtemp(prefix="mailsrv-embed-")
        self.addCleanup(shutil.rmtree, d, True)
        root = logging.getLogger()
        before = (root.level, list(root.handlers))
        srv = mailsrv.MailServer(data_dir=d, log_level="DEBUG", smtp_port="off", submission_port="off",
                                 pop3_port="off")
        srv.reload(mailsrv.Config({"data_dir": d, "log_level": "ERROR"}))
        self.addCleanup(logging.getLogger("mailsrv").setLevel, logging.NOTSET)
        srv.backend.close()
        srv.loop.close()          # never started: nothing else releases its sockets
        self.assertEqual((root.level, list(root.handlers)), before)


if __name__ == "__main__":
    unittest.main()
