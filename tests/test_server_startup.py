"""Start-up and the command line around it, run as the real command.

Host name and local domains, who reads postmaster mail, global options on
either side of the subcommand, commands that must not create a data folder,
the start-up lines (once), unusable data folders and TLS files, the data
folder's lock, `mailsrv.py check`, and .gitignore (issue 8).
"""

import os
import select
import signal
import smtplib
import socket
import subprocess
import tempfile
import shutil
import unittest

from tests.helpers import CERT, KEY, ROOT, mailsrv_cli, wait_for
from tests.test_server_cli import OFF, PY

UNREACHABLE_DNS = "127.0.0.1:9"     # discard port: nothing answers DNS there


def mailsrv(*args, stdin=b"", cwd=ROOT):
    return subprocess.run([PY, os.path.join(ROOT, "mailsrv.py"), *args], cwd=cwd, input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


class Server:
    """`python3 mailsrv.py` in a subprocess; ``lines`` are its start-up lines."""

    def __init__(self, data, *extra, cwd=ROOT):
        self.proc = subprocess.Popen([PY, os.path.join(ROOT, "mailsrv.py"), "--data", data, "--smtp-port", "0",
                                      "--dns-server", UNREACHABLE_DNS, *OFF, *extra],
                                     cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)   # unbuffered: select() then sees every line
        self.lines, self.stderr = [], ""
        while not (self.lines and self.lines[-1].startswith("running as pid")):
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            line = self.proc.stdout.readline() if ready else b""
            if not line:
                self.kill()
                raise AssertionError(f"start-up stopped after {self.lines}: {self.stderr}")
            self.lines.append(line.decode().rstrip("\n"))
        self.port = int(next(l for l in self.lines if l.startswith("listening smtp")).rsplit(":", 1)[1])

    def line(self, prefix):
        return next((l for l in self.lines if l.startswith(prefix)), None)

    def stop(self):
        """SIGTERM, wait, and return what it wrote on stderr."""
        if self.proc.stdout.closed:
            return self.stderr
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.stderr = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.stderr

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.stop()


class StartupTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-startup-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")

    def add_user(self, address, *extra):
        rc, _out, err = mailsrv_cli("--data", self.data, "user", "add", address, *extra, stdin="pw\n")
        self.assertEqual(rc, 0, err)

    def server(self, *extra, cwd=ROOT, data=None):
        srv = Server(data or self.data, *extra, cwd=cwd)
        self.addCleanup(srv.kill)
        return srv

    def assertOneLineError(self, p, text):
        err = p.stderr.decode().strip()
        self.assertEqual(p.returncode, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertNotIn("Traceback", err)
        self.assertIn(text, err)


class HostNameTest(StartupTestCase):
    def test_fqdn_localhost_falls_back_to_the_host_name_and_it_is_local(self):
        import mailsrv
        names = (lambda: "localhost", lambda: "vm")      # what the machine said
        cfg = mailsrv.Config({"data_dir": self.data, "smtp_port": "0", "submission_port": "off",
                              "pop3_port": "off", "smtps_port": "off", "pop3s_port": "off", "imap_port": "off",
                              "imaps_port": "off", "dns_servers": UNREACHABLE_DNS, "log_level": "ERROR"},
                             names=names)
        self.assertEqual((cfg.hostname, cfg.local_domains()), ("vm", ["localhost", "vm"]))
        server = mailsrv.MailServer(cfg)
        server.add_user("me@localhost", "pw")
        server.start()
        try:
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as s:
                self.assertTrue(s.ehlo("c.test")[1].startswith(b"vm"))
                # the machine's own name is local: delivered here, never queued for a "remote" vm
                self.assertEqual(s.sendmail("a@elsewhere.test", ["postmaster@vm"], b"Subject: x\r\n\r\nhi\r\n"), {})
        finally:
            server.stop()
        self.assertEqual(len(os.listdir(os.path.join(self.data, "mail", "localhost", "me", "new"))), 1)
        self.assertEqual([f for f in os.listdir(os.path.join(self.data, "queue")) if not f.startswith(".")], [])

    def test_name_choice(self):
        from protocols.hostnames import choose_hostname, machine_names
        fqdn = lambda name: (lambda: name)          # noqa: E731
        self.assertEqual(choose_hostname("", fqdn("mx.example.org"), fqdn("mx"))[0], "mx.example.org")
        self.assertEqual(choose_hostname("", fqdn("localhost.localdomain"), fqdn("box"))[0], "box")
        self.assertEqual(choose_hostname("", fqdn("box"), fqdn("box"))[0], "box")
        self.assertEqual(choose_hostname("", fqdn("localhost"), fqdn("localhost"))[0], "localhost")
        self.assertEqual(choose_hostname("mail.example.org", fqdn("localhost"), fqdn("vm"))[0], "mail.example.org")
        self.assertEqual(machine_names(fqdn("vm.lan"), fqdn("VM")), ["vm", "vm.lan"])
        self.assertEqual(machine_names(fqdn("localhost"), fqdn("bad..name")), [])

    def test_server_prints_its_host_name_and_domains(self):
        from protocols.hostnames import choose_hostname, machine_names
        host = choose_hostname("", socket.getfqdn, socket.gethostname)[0]
        srv = self.server("--domain", "example.test")
        self.assertTrue(srv.line(f"host name {host} "), srv.lines)
        domains = srv.line("local domains ")
        for name in ["localhost", "example.test", host] + machine_names(socket.getfqdn, socket.gethostname):
            self.assertIn(name, domains)


class PostmasterTest(StartupTestCase):
    def send(self, srv, rcpt):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            self.assertEqual(s.sendmail("a@elsewhere.test", [rcpt], b"Subject: pm\r\n\r\nhi\r\n"), {})

    def messages(self, address):
        local, domain = address.split("@")
        path = os.path.join(self.data, "mail", domain, local, "new")
        return len(os.listdir(path)) if os.path.isdir(path) else 0

    def test_postmaster_mail_reaches_an_existing_user_named_at_start(self):
        self.add_user("bob@example.test")
        self.add_user("carl@example.test")
        srv = self.server("--hostname", "mx.example.test", "--domain", "example.test")
        self.assertIn("postmaster mail goes to bob@example.test", srv.line("postmaster "))
        self.assertIn("set postmaster = ADDRESS", srv.line("postmaster "))
        self.send(srv, "postmaster@mx.example.test")
        self.send(srv, "postmaster@example.test")
        wait_for(lambda: self.messages("bob@example.test") == 2, "two messages for bob")
        self.assertEqual(self.messages("postmaster@mx.example.test"), 0)

    def test_configured_postmaster_wins_and_no_users_is_said(self):
        conf = os.path.join(self.tmp, "pm.ini")
        with open(conf, "w") as f:
            f.write("[mailsrv]\npostmaster = carl@example.test\n")
        srv = self.server("--hostname", "mx.example.test", "--domain", "example.test")
        self.assertIn("no users yet", srv.line("postmaster "))
        srv.stop()
        self.add_user("bob@example.test")
        self.add_user("carl@example.test")
        srv = self.server("--hostname", "mx.example.test", "--config", conf)
        self.assertIn("goes to carl@example.test (the postmaster setting)", srv.line("postmaster "))
        self.send(srv, "postmaster@mx.example.test")
        wait_for(lambda: self.messages("carl@example.test") == 1, "a message for carl")


class CommandLineTest(StartupTestCase):
    def test_global_options_before_or_after_the_subcommand(self):
        p = mailsrv("--data", self.data, "user", "add", "alice@localhost", stdin=b"pw\n")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, b"added alice@localhost"), p.stderr)
        self.add_user("bob@localhost")                      # `user add ADDR --data DIR`, as before
        self.assertEqual(mailsrv("--data", self.data, "user", "list").stdout.split(),
                         [b"alice@localhost", b"bob@localhost"])
        self.assertEqual(mailsrv("user", "list", "--data", self.data).stdout.split(),
                         [b"alice@localhost", b"bob@localhost"])
        p = mailsrv("--data", self.data, "--hostname", "mx.test", "alias", "add", "team@localhost", "alice@localhost")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"team@localhost: alice@localhost", mailsrv("alias", "list", "--data", self.data).stdout)
        # an option given on both sides: the one after the subcommand wins
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        self.assertEqual(mailsrv("--data", other, "user", "list", "--data", self.data).stdout.split()[0],
                         b"alice@localhost")

    def test_reading_commands_do_not_create_a_data_folder(self):
        missing = os.path.join(self.tmp, "typo")
        for args in (["user", "list"], ["alias", "list"], ["queue"], ["queue", "flush"],
                     ["user", "del", "a@localhost"], ["user", "passwd", "a@localhost"],
                     ["alias", "add", "x@localhost", "a@localhost"], ["alias", "del", "x@localhost"]):
            p = mailsrv("--data", missing, *args, stdin=b"pw\n")
            self.assertOneLineError(p, f"data folder {missing} does not exist")
            self.assertFalse(os.path.lexists(missing), args)
        # `dns` and `check` need no data folder, and make none
        from tests.dnsfake import FakeDnsServer
        dns = FakeDnsServer()
        dns.start()
        self.addCleanup(dns.stop)
        for args in (["dns", "A", "nosuch.test"], ["check"]):
            p = mailsrv("--data", missing, *args, "--dns-server", "%s:%d" % dns.address)
            self.assertNotIn(b"does not exist\n", p.stderr)
            self.assertTrue(p.stdout, args)
            self.assertFalse(os.path.lexists(missing), args)
        p = mailsrv("user", "add", "a@localhost", "--data", missing, stdin=b"pw\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.isdir(missing))

    def test_start_up_lines_once_with_the_absolute_data_folder(self):
        self.add_user("bob@example.test")
        srv = self.server("--log-level", "INFO", "--hostname", "mx.example.test", "--domain", "example.test",
                          cwd=self.tmp, data="data")              # relative --data: printed absolute
        self.assertEqual(srv.lines[0], f"listening smtp 127.0.0.1:{srv.port}")
        self.assertEqual(srv.line("data folder "), f"data folder {os.path.realpath(self.data)}")
        self.assertTrue(srv.line("host name mx.example.test "), srv.lines)
        self.assertIn("example.test", srv.line("local domains "))
        self.assertEqual(srv.lines[-1], f"running as pid {srv.proc.pid}: stop with Ctrl-C or `kill {srv.proc.pid}` "
                                        f"(SIGTERM); reload with `kill -HUP {srv.proc.pid}`")
        err = srv.stop()
        self.assertEqual(srv.proc.returncode, 0)
        self.assertNotIn("listening", err)                        # said once, on stdout
        self.assertIn("stopped", err)


class UnusableFilesTest(StartupTestCase):
    def test_unusable_data_folder_is_one_line(self):
        regular = os.path.join(self.tmp, "file")
        with open(regular, "w"):
            pass
        cases = [("/proc/mailsrv-test/data", "cannot create data folder /proc/mailsrv-test/data"),
                 (regular, f"data folder {regular} is not a directory"),
                 (os.path.join(regular, "sub"), f"cannot create data folder {regular}/sub")]
        if os.geteuid() != 0:       # root writes through a read-only mode
            ro = os.path.join(self.tmp, "ro")
            os.mkdir(ro, 0o555)
            cases.append((os.path.join(ro, "data"), "permission denied"))
        for data, text in cases:
            for args in ([], ["user", "add", "a@localhost"]):
                p = mailsrv("--data", data, "--smtp-port", "0", *OFF, *args, stdin=b"pw\n")
                self.assertOneLineError(p, text)
        # a folder that exists but is no data folder: the file that fails is named
        self.assertOneLineError(mailsrv("--data", "/proc", "queue"), "/proc/queue: ")

    def test_tls_files_missing_unreadable_or_swapped_are_named(self):
        os.mkdir(self.data)
        missing = os.path.join(self.tmp, "nope.pem")
        cases = [([missing, KEY], f"TLS certificate {missing}: no such file"),
                 ([CERT, missing], f"TLS key {missing}: no such file"),
                 ([self.tmp, KEY], f"TLS certificate {self.tmp}: not a regular file"),
                 ([KEY, CERT], f"TLS certificate {KEY}: no PEM certificate in it (it holds a private key: "
                               f"tls_cert and tls_key swapped?)"),
                 ([CERT, CERT], f"TLS key {CERT}: no PEM private key in it (it holds a certificate")]
        other_key = os.path.join(self.tmp, "other-key.pem")
        if shutil.which("openssl") and subprocess.run(
                ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other_key],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
            cases.append(([CERT, other_key], f"TLS key {other_key} does not belong to the certificate {CERT}"))
        if os.geteuid() != 0:
            locked = os.path.join(self.tmp, "locked.pem")
            shutil.copy(KEY, locked)
            os.chmod(locked, 0)
            cases.append(([CERT, locked], f"TLS key {locked}: cannot read: permission denied"))
        from tests.dnsfake import FakeDnsServer
        dns = FakeDnsServer().start()      # answers at once: `check` then waits for no DNS timeout
        self.addCleanup(dns.stop)
        for (cert, key), text in cases:
            for cmd in ([], ["check", "--dns-server", "%s:%d" % dns.address]):
                p = mailsrv("--data", self.data, "--smtp-port", "0", *OFF, "--tls-cert", cert, "--tls-key", key, *cmd)
                if cmd:
                    self.assertEqual(p.returncode, 2)
                    self.assertIn(f"error: {text}", p.stdout.decode())
                else:
                    self.assertOneLineError(p, text)


class LockTest(StartupTestCase):
    def test_a_stale_pid_file_never_gets_a_signal(self):
        os.mkdir(self.data)
        bystander = subprocess.Popen(["sleep", "60"])
        self.addCleanup(bystander.wait)
        self.addCleanup(bystander.kill)
        with open(os.path.join(self.data, "mailsrv.pid"), "w") as f:
            f.write(f"{bystander.pid}\n")
        p = mailsrv("--data", self.data, "--dns-server", UNREACHABLE_DNS, "queue", "flush")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(b"handed to the running server", p.stdout)
        self.assertIsNone(bystander.poll(), "queue flush signalled a process that holds no lock")

    def test_second_server_refuses_and_leaves_the_first_ones_pid_file(self):
        first = self.server()
        pid_file = os.path.join(self.data, "mailsrv.pid")
        p = mailsrv("--data", self.data, "--smtp-port", "0", *OFF)
        self.assertOneLineError(p, f"is in use by another mailsrv (pid {first.proc.pid}")
        with open(pid_file) as f:
            self.assertEqual(f.read().strip(), str(first.proc.pid))
        p = mailsrv("--data", self.data, "queue", "flush")
        self.assertEqual(p.stdout.decode().strip(), f"queue flush: handed to the running server (pid {first.proc.pid})")
        first.stop()
        self.assertEqual(first.proc.returncode, 0)
        self.assertFalse(os.path.exists(pid_file))
        # the folder is free again
        self.server()


class CheckTest(StartupTestCase):
    def setUp(self):
        super().setUp()
        from tests.dnsfake import FakeDnsServer
        self.dns = FakeDnsServer()
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.dns_spec = "%s:%d" % self.dns.address

    def check(self, *args):
        p = mailsrv("check", "--data", self.data, "--hostname", "mx.example.test", "--domain", "example.test",
                    "--smtp-port", "25", *args)
        return p.returncode, p.stdout.decode()

    def test_good_setup_exits_zero_and_says_what_the_server_would_do(self):
        self.add_user("bob@example.test")
        rc, out = self.check("--dns-server", self.dns_spec, "--tls-cert", CERT, "--tls-key", KEY)
        self.assertEqual(rc, 0, out)
        for text in (f"ok: data folder {self.data} is usable", f"ok: TLS certificate {CERT} and key {KEY} load",
                     "ok: 1 user(s), 0 alias(es)", f"ok: DNS: {self.dns_spec} answers",
                     "  host name mx.example.test (from the hostname setting",
                     "  local domains example.test, localhost, mx.example.test",
                     "  postmaster mail goes to bob@example.test",
                     f"  outbound mail goes to each domain's MX on port 25 (relay_tls may), looked up through {self.dns_spec}",
                     "  listen smtp 127.0.0.1:25", "  listen smtps 127.0.0.1:2465", "configuration OK"):
            self.assertIn(text, out)
        self.assertTrue(self.dns.queries, "DNS was not asked")

    def test_problems_exit_two_and_are_named(self):
        self.add_user("bob@example.test")
        with open(os.path.join(self.data, "users"), "a") as f:
            f.write("{not json\n")
        rc, out = self.check("--dns-server", UNREACHABLE_DNS, "--tls-cert", KEY, "--tls-key", CERT)
        self.assertEqual(rc, 2, out)
        self.assertIn(f"error: {self.data}/users:2: malformed line", out)
        self.assertIn(f"error: TLS certificate {KEY}: no PEM certificate in it", out)
        self.assertIn(f"error: DNS: {UNREACHABLE_DNS} failed", out)
        self.assertIn("3 problem(s)", out)

    def test_check_creates_nothing_and_bad_configuration_is_one_line(self):
        rc, out = self.check("--dns-server", self.dns_spec)
        self.assertEqual(rc, 0, out)
        self.assertIn("does not exist yet; the server (or `user add`) creates it", out)
        self.assertFalse(os.path.lexists(self.data))
        conf = os.path.join(self.tmp, "bad.ini")
        with open(conf, "w") as f:
            f.write("[mailsrv]\nno_such_key = 1\n")
        self.assertOneLineError(mailsrv("check", "--config", conf), "unknown configuration key: no_such_key")


class GitignoreTest(unittest.TestCase):
    def test_readme_commands_leave_nothing_untracked(self):
        with open(os.path.join(ROOT, ".gitignore")) as f:
            patterns = f.read().split()
        for wanted in ("/maildata/", "/cert.pem", "/key.pem"):
            self.assertIn(wanted, patterns)
        if shutil.which("git") and os.path.exists(os.path.join(ROOT, ".git")):
            p = subprocess.run(["git", "check-ignore", "--no-index", "cert.pem", "key.pem", "maildata/users"],
                               cwd=ROOT, stdout=subprocess.PIPE, timeout=30)
            self.assertEqual(p.stdout.split(), [b"cert.pem", b"key.pem", b"maildata/users"])
