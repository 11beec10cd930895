"""The command line as a user meets it: `python3 mailsrv.py` in a subprocess.

Startup lines, user and alias commands picked up by a running server, clear
one-line errors, SIGTERM, and crash safety under SIGKILL.
"""

import glob
import os
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import shutil
import unittest

from tests.helpers import ROOT, add_user_cli, read_stored, strip_trace, wait_for

PY = sys.executable
BODY = (b"x" * 74 + b"\r\n") * 40    # 3 KB in lines well under the 1000-octet limit
OFF = ["--submission-port", "off", "--smtps-port", "off", "--pop3-port", "off", "--pop3s-port", "off",
       "--imap-port", "off", "--imaps-port", "off",
       "--tls-self-signed", "no"]      # no RSA key made at each start: these servers test no TLS


def run_cli(*args, data, stdin=b"", check=True):
    p = subprocess.run([PY, "mailsrv.py", *args, "--data", data], cwd=ROOT, input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"mailsrv {' '.join(args)} failed: {p.stderr.decode()}")
    return p


class ServerProcess:
    """`python3 mailsrv.py ...` with its listening lines parsed."""

    def __init__(self, data, *extra):
        self.proc = subprocess.Popen([PY, "mailsrv.py", "--data", data, "--hostname", "mx.example.test",
                                      "--domain", "example.test", "--smtp-port", "0", "--log-level", "WARNING",
                                      *OFF, *extra],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.ports = {}
        line = self._readline(30)
        m = re.match(rb"listening (\w+) (\S+):(\d+)$", line.strip())
        if not m:
            self.kill()
            raise AssertionError(f"unexpected first line {line!r}: {self.proc.stderr.read().decode()}")
        self.first_line = line.decode().strip()
        self.ports[m.group(1).decode()] = int(m.group(3))

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("server printed nothing")
        return self.proc.stdout.readline()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.proc.stdout.close()
        self.proc.stderr.close()


class CliTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-cli-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def test_user_commands(self):
        run_cli("user", "add", "Alice@Example.test", data=self.data, stdin=b"s3cret\n")
        users_file = os.path.join(self.data, "users")
        self.assertEqual(os.stat(users_file).st_mode & 0o777, 0o600)
        with open(users_file, "rb") as f:
            self.assertNotIn(b"s3cret", f.read())
        self.assertEqual(run_cli("user", "list", data=self.data).stdout.split(), [b"alice@example.test"])
        for folder in (".Sent", ".Drafts", ".Trash", ".Junk", ".Archive", "new", "cur", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(self.data, "mail", "example.test", "alice", folder)), folder)
        p = run_cli("user", "add", "alice@example.test", data=self.data, stdin=b"x\n", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)
        run_cli("user", "passwd", "alice@example.test", data=self.data, stdin=b"n3w\n")
        run_cli("user", "del", "alice@example.test", data=self.data)
        self.assertEqual(run_cli("user", "list", data=self.data).stdout, b"no users\n")

    def test_alias_commands(self):
        run_cli("alias", "add", "team@example.test", "a@example.test", "b@example.test", data=self.data)
        out = run_cli("alias", "list", data=self.data).stdout.decode()
        self.assertIn("team@example.test: a@example.test, b@example.test", out)
        run_cli("alias", "del", "team@example.test", data=self.data)
        self.assertNotIn("team@", run_cli("alias", "list", data=self.data).stdout.decode())

    def test_config_errors_are_one_line_and_nonzero(self):
        conf = os.path.join(self.data, "bad.ini")
        with open(conf, "w") as f:
            f.write("[mailsrv]\nno_such_key = 1\n")
        cases = [
            (["--config", conf], "unknown configuration key"),
            (["--listen", "not-an-address"], "bad listen address"),
            (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
             "TLS certificate /nonexistent/cert.pem: no such file"),
        ]
        for args, text in cases:
            p = subprocess.run([PY, "mailsrv.py", "--data", self.data, "--smtp-port", "0", *OFF, *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(p.returncode, 2, args)
            err = p.stderr.decode().strip()
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn(text, err)

    def test_port_in_use_is_a_clear_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            p = subprocess.run([PY, "mailsrv.py", "--data", self.data, *OFF, "--smtp-port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("address already in use", p.stderr.decode())

    def test_privileged_port_error_says_how_to_fix_it(self):
        import errno as errno_mod
        import mailsrv
        text = mailsrv._bind_error("smtp", "0.0.0.0", 25, OSError(errno_mod.EACCES, "Permission denied"))
        self.assertIn("permission denied", text)
        self.assertIn("setcap cap_net_bind_service=+ep", text)
        self.assertIn("AmbientCapabilities=CAP_NET_BIND_SERVICE", text)

    def test_entry_point_is_thin_and_keeps_its_names(self):
        # issue 9 §1: mailsrv.py holds the listener table, MailServer, the parser and the
        # dispatch; the subcommands live in protocols/ and keep their old names here.
        import mailsrv
        with open(os.path.join(ROOT, "mailsrv.py"), encoding="utf-8") as f:
            self.assertLess(len(f.read().splitlines()), 400)
        for name in ("user_alias_main", "queue_main", "dns_main", "rfc_main", "serve", "source_citations"):
            self.assertEqual(getattr(mailsrv, name).__module__, "protocols.commands", name)
        from protocols.backend import sendmail
        self.assertTrue(callable(sendmail.main))

    def test_listen_on_ipv4_and_ipv6_at_once(self):
        import mailsrv
        if not socket.has_ipv6:
            self.skipTest("no IPv6 on this machine")
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("::1 is not configured")
        srv = mailsrv.MailServer(mailsrv.Config({"data_dir": self.data, "listen": "127.0.0.1,::1", "smtp_port": "0",
                                                 "submission_port": "off", "pop3_port": "off", "smtps_port": "off",
                                                 "pop3s_port": "off", "imap_port": "off", "imaps_port": "off",
                                                 "log_level": "ERROR"}))
        srv.start()
        try:
            lines = srv.listening_lines()
            self.assertTrue(any(re.match(r"listening smtp 127\.0\.0\.1:\d+$", l) for l in lines), lines)
            self.assertTrue(any(re.match(r"listening smtp \[::1\]:\d+$", l) for l in lines), lines)
            for host, port in srv.addresses["smtp"]:
                with smtplib.SMTP(host, port, timeout=10) as s:
                    self.assertEqual(s.noop()[0], 250)
        finally:
            srv.stop()

    def test_config_example_lists_every_key_and_loads(self):
        import mailsrv
        p = subprocess.run([PY, "mailsrv.py", "config-example"], cwd=ROOT, stdout=subprocess.PIPE, timeout=60)
        text = p.stdout.decode()
        for key in mailsrv.KEYS:
            self.assertIn(f"\n{key} = ", text)
        conf = os.path.join(self.data, "example.ini")
        with open(conf, "w") as f:
            f.write(text)
        self.assertEqual(mailsrv.Config(mailsrv.read_config_file(conf)).smtp_port, 2525)

    def test_readme_documents_every_configuration_key(self):
        import mailsrv
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        missing = [k for k in mailsrv.KEYS if f"| `{k}` |" not in readme]
        self.assertEqual(missing, [])
        self.assertIn("```ini\n" + mailsrv.config_example() + "```", readme)   # the shipped example is current

    def test_start_prints_listening_lines_and_sigterm_exits_zero(self):
        add_user_cli(self.data, "bob@example.test")
        srv = ServerProcess(self.data)
        try:
            self.assertRegex(srv.first_line, r"^listening smtp 127\.0\.0\.1:\d+$")
            # a user added while the server runs is served without a restart (the
            # files are checked at most once a second, on a worker: wiring.py)
            run_cli("user", "add", "late@example.test", data=self.data, stdin=b"pw\n")
            def deliver_late():
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                    try:
                        return s.sendmail("a@elsewhere.test", ["late@example.test"], b"Subject: x\r\n\r\nhi\r\n") == {}
                    except smtplib.SMTPRecipientsRefused:
                        return False
            wait_for(deliver_late, "the new user to be picked up", timeout=10)
            idle = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
            idle_f = idle.makefile("rb")
            self.assertTrue(idle_f.readline().startswith(b"220"))
            srv.proc.send_signal(signal.SIGTERM)
            self.assertTrue(idle_f.readline().startswith(b"421"))
            idle.close()
            self.assertEqual(srv.proc.wait(30), 0)
        finally:
            srv.kill()
        self.assertEqual(len(glob.glob(os.path.join(self.data, "mail", "example.test", "late", "new", "*"))), 1)

    @unittest.skipUnless(os.path.exists("/proc/self/limits"), "reads /proc/PID/limits (Linux)")
    def test_the_command_line_server_raises_its_file_descriptor_limit(self):
        """The serve path, and only it (see test_embedding), raises RLIMIT_NOFILE to the hard limit."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowered = len(os.listdir("/proc/self/fd")) + 128       # room for this process, below the hard limit
        if hard != resource.RLIM_INFINITY and lowered >= hard:
            self.skipTest("the hard limit leaves no room to lower the soft one")
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))    # inherited by the server
        try:
            srv = ServerProcess(self.data)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            with open(f"/proc/{srv.proc.pid}/limits", encoding="ascii") as f:
                fields = next(line for line in f if line.startswith("Max open files")).split()
            self.assertTrue(fields[3] == "unlimited" or int(fields[3]) > lowered, fields)
        finally:
            srv.kill()

    def test_sigterm_lets_data_in_flight_finish(self):
        add_user_cli(self.data, "bob@example.test")
        srv = ServerProcess(self.data)
        try:
            c = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
            f = c.makefile("rb")
            f.readline()
            c.sendall(b"HELO c.test\r\nMAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
            self.assertEqual([f.readline()[:3] for _ in range(4)], [b"250", b"250", b"250", b"354"])
            c.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
            srv.proc.send_signal(signal.SIGTERM)
            # the server is stopping, but the message being received still completes
            c.sendall(b"second half\r\n.\r\n")
            self.assertEqual(f.readline()[:3], b"250")
            c.sendall(b"NOOP\r\n")
            self.assertEqual(f.readline()[:3], b"421")
            c.close()
            self.assertEqual(srv.proc.wait(30), 0)
        finally:
            srv.kill()
        [path] = glob.glob(os.path.join(self.data, "mail", "example.test", "bob", "new", "*"))
        self.assertTrue(read_stored(path).endswith(b"first half\r\nsecond half\r\n"))

    def test_password_change_applies_at_once_despite_the_auth_cache(self):
        add_user_cli(self.data, "bob@example.test", "old-pw")
        conf = os.path.join(self.data, "fast.ini")
        with open(conf, "w") as f:           # the refusal of the old password comes without the 2 s delay
            f.write("[mailsrv]\nauth_failure_delay = 0.05\n")
        srv = ServerProcess(self.data, "--config", conf)
        try:
            def login(pw):
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                    try:
                        return s.login("bob@example.test", pw)[0]
                    except smtplib.SMTPAuthenticationError as e:
                        return e.smtp_code
            self.assertEqual(login("old-pw"), 235)
            self.assertEqual(login("old-pw"), 235)      # now answered from the cache
            run_cli("user", "passwd", "bob@example.test", data=self.data, stdin=b"new-pw\n")
            # picked up within a second or so (wiring.py TABLE_CHECK_INTERVAL_S), the cache dropped
            wait_for(lambda: login("old-pw") == 535, "the old password to be refused", timeout=10)
            self.assertEqual(login("new-pw"), 235)
        finally:
            srv.kill()

    def test_sighup_reloads_live_configuration(self):
        conf = os.path.join(self.data, "live.ini")
        with open(conf, "w") as f:
            f.write("[mailsrv]\nmax_message_size = 10000\n")
        srv = ServerProcess(self.data, "--config", conf)
        try:
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                s.ehlo("c.test")
                self.assertEqual(s.esmtp_features["size"], "10000")
            with open(conf, "w") as f:
                f.write("[mailsrv]\nmax_message_size = 20000\n")
            srv.proc.send_signal(signal.SIGHUP)
            # the reload happens in the loop; poll (bounded) until a new session sees it
            for _ in range(100):
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                    s.ehlo("c.test")
                    if s.esmtp_features["size"] == "20000":
                        break
            self.assertEqual(s.esmtp_features["size"], "20000")
        finally:
            srv.kill()

    def test_sigkill_loses_no_acknowledged_message(self):
        add_user_cli(self.data, "bob@example.test")
        srv = ServerProcess(self.data)
        acked = []
        lock = threading.Lock()
        enough = threading.Event()
        stop = threading.Event()

        def sender(n):
            i = 0
            while not stop.is_set():
                body = b"Subject: %d-%d\r\n\r\n" % (n, i) + BODY
                try:
                    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                        s.sendmail("a@elsewhere.test", ["bob@example.test"], body)
                except (OSError, smtplib.SMTPException):
                    return      # the server died under us: this one was never acknowledged
                with lock:
                    acked.append(body)
                    if len(acked) >= 60:
                        enough.set()
                i += 1
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        try:
            self.assertTrue(enough.wait(60), "no deliveries")
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(30)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            srv.kill()
        stored = []
        for path in glob.glob(os.path.join(self.data, "mail", "example.test", "bob", "new", "*")):
            stored.append(strip_trace(read_stored(path)))
        sent_ok = set(acked)
        self.assertTrue(sent_ok <= set(stored), "an acknowledged message is missing")
        for m in stored:
            self.assertTrue(m.endswith(BODY), "a partial message is visible in new/")


if __name__ == "__main__":
    unittest.main()
