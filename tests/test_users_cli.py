"""Users and aliases through the real command (`python3 mailsrv.py ...` in a subprocess).

Issue 7 item 4: a bad line in the users or aliases file is skipped with one
warning naming the file and line, by the server (which keeps serving) and by
the command line (which still lists the good entries).  Issue 8: alias
checks, `user del` warnings, `user disable/enable/show`, "no users".
"""

import os
import poplib
import re
import shutil
import signal
import smtplib
import tempfile
import unittest

from tests.test_server_cli import ServerProcess, run_cli
from tests.helpers import add_user_cli, mailsrv_cli, wait_for

BAD_USERS = [b'{"address": "b\xffob@example.test", "scrypt": "x"}', b'{"address": "bob"}', b'{"address": 5}']
BAD_ALIAS = b'{"alias": "team", "targets": ["alice@example.test"]}'


class UsersCliTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-users-cli-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.conf = os.path.join(self.data, "fast.ini")
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\nauth_failure_delay = 0.05\n")

    def _bad_files(self):
        add_user_cli(self.data, "alice@example.test", "alice-pw")
        rc, _out, err = mailsrv_cli("alias", "add", "team@example.test", "alice@example.test", "--data", self.data)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(self.data, "users"), "ab") as f:
            f.write(b"".join(line + b"\n" for line in BAD_USERS))
        with open(os.path.join(self.data, "aliases"), "ab") as f:
            f.write(BAD_ALIAS + b"\n")

    def _server(self):
        srv = ServerProcess(self.data, "--pop3-port", "0", "--config", self.conf)
        # printed right after the smtp line (maybe already in the pipe's buffer: no select)
        m = re.match(r"listening pop3 \S+:(\d+)$", srv.proc.stdout.readline().decode().strip())
        if not m:
            srv.kill()
            self.fail("no pop3 listener")
        srv.ports["pop3"] = int(m.group(1))
        return srv

    @staticmethod
    def _stop(srv) -> str:
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        err = srv.proc.stderr.read().decode("utf-8", "replace")
        srv.kill()
        return err

    def _pop3_login(self, port, user, password):
        c = poplib.POP3("127.0.0.1", port, timeout=10)
        try:
            c.user(user)
            return c.pass_(password).decode()
        except poplib.error_proto as e:
            return str(e)
        finally:
            c.close()

    def test_server_started_with_bad_lines_serves_the_good_entries(self):
        self._bad_files()
        srv = self._server()
        try:
            for _ in range(3):      # every lookup works, and the warning is not repeated
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                    s.ehlo("c.test")
                    s.mail("a@elsewhere.test")
                    self.assertEqual(s.rcpt("alice@example.test")[0], 250)
                    self.assertEqual(s.rcpt("team@example.test")[0], 250)
                    self.assertEqual(s.rcpt("bob@example.test")[0], 550)
                self.assertTrue(self._pop3_login(srv.ports["pop3"], "alice@example.test", "alice-pw")
                                .startswith("+OK"))
        finally:
            err = self._stop(srv)
        self.assertNotIn("Traceback", err)
        users, aliases = os.path.join(self.data, "users"), os.path.join(self.data, "aliases")
        for where in ["%s:%d: " % (users, n) for n in (2, 3, 4)] + ["%s:2: " % aliases]:
            self.assertEqual(err.count(where), 1, err)

    def test_list_commands_show_good_entries_and_warn_on_stderr(self):
        self._bad_files()
        p = run_cli("user", "list", data=self.data)
        self.assertEqual(p.stdout.split(), [b"alice@example.test"])
        err = p.stderr.decode()
        self.assertEqual(len(err.splitlines()), 4, err)      # three users lines, one aliases line
        self.assertIn("users:2: not UTF-8; line skipped", err)
        p = run_cli("alias", "list", data=self.data)
        self.assertEqual(p.stdout.decode(), "team@example.test: alice@example.test\n")
        self.assertIn("aliases:2: ", p.stderr.decode())

    def test_alias_checks_and_messages(self):
        self.assertEqual(run_cli("user", "list", data=self.data).stdout, b"no users\n")
        self.assertEqual(run_cli("alias", "list", data=self.data).stdout, b"no aliases\n")
        for u in ("alice", "bob"):
            run_cli("user", "add", f"{u}@example.test", data=self.data, stdin=b"pw\n")
        p = run_cli("alias", "add", "Team@example.test", "alice@example.test", "BOB@example.test", data=self.data)
        self.assertEqual(p.stdout, b"alias team@example.test -> alice@example.test, bob@example.test\n")
        for args, text in [(["bob@example.test", "alice@example.test"], "bob@example.test is a user"),
                           (["staff@example.test", "team@example.test", "staff+x@example.test"],
                            "alias loop: staff@example.test -> staff+x@example.test -> staff@example.test")]:
            p = run_cli("alias", "add", *args, data=self.data, check=False)
            self.assertEqual(p.returncode, 2)
            self.assertEqual(len(p.stderr.decode().strip().splitlines()), 1)
            self.assertIn(text, p.stderr.decode())
        p = run_cli("user", "del", "bob@example.test", data=self.data)
        self.assertIn("team@example.test still list bob@example.test", p.stderr.decode())

    def test_disabled_user_login_refused_like_a_wrong_password_mail_accepted(self):
        add_user_cli(self.data, "alice@example.test", "alice-pw")
        srv = self._server()
        try:
            port = srv.ports["pop3"]
            self.assertTrue(self._pop3_login(port, "alice@example.test", "alice-pw").startswith("+OK"))
            wrong = self._pop3_login(port, "alice@example.test", "nope")
            p = run_cli("user", "disable", "alice@example.test", data=self.data)
            self.assertIn("disabled", p.stdout.decode())
            # the users file is checked at most once a second (protocols/backend/wiring.py)
            wait_for(lambda: self._pop3_login(port, "alice@example.test", "alice-pw") == wrong,
                     "the disabled user to be refused", timeout=10)
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
                self.assertEqual(s.sendmail("a@elsewhere.test", ["alice@example.test"], b"Subject: x\r\n\r\nhi\r\n"), {})
            show = run_cli("user", "show", "alice@example.test", data=self.data).stdout.decode()
            self.assertIn("DISABLED", show)
            self.assertRegex(show, r"INBOX +1 message\(s\)")
            run_cli("user", "enable", "alice@example.test", data=self.data)
            wait_for(lambda: self._pop3_login(port, "alice@example.test", "alice-pw").startswith("+OK"),
                     "the enabled user to log in", timeout=10)
        finally:
            err = self._stop(srv)
        self.assertIn("login refused for alice@example.test: user is disabled", err)


if __name__ == "__main__":
    unittest.main()
