"""POP3 over real loopback sockets with the stdlib poplib, against the whole server.

RFC 1939 (USER/PASS, STAT/LIST/UIDL/RETR/DELE/QUIT, the UPDATE state only
after QUIT), RFC 2595 §4 (STLS), implicit TLS on the POP3S port (RFC 8314
§3.3), RFC 5034 (AUTH PLAIN, SCRAM-SHA-256), RFC 2449 (CAPA, the [IN-USE]
response code §8.1.2) and RFC 3206 ([AUTH]).  Messages go in through smtplib
and come out through poplib; what comes out is compared byte for byte with
what went in (after the trace headers the server adds).  The memory test runs
the server as a subprocess and reads its RSS from /proc.
"""

import base64
import glob
import os
import poplib
import shutil
import smtplib
import socket
import struct
import tempfile
import unittest

from protocols.sasl import ScramClient
from store.deliver import DeliveryJob, deliver_batch
from store.maildir import MailStore
from tests.helpers import add_user_cli, client_tls, ServerTestCase, strip_trace
from tests.test_server_cli import ServerProcess

ALICE, BOB = "alice@example.test", "bob@example.test"
MSG = (b"From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
       b"Message-ID: <p1@example.test>\r\n\r\nHello Bob.\r\n.leading dot\r\n..two dots\r\n.\r\nBye.\r\n")



def joined(lines):
    """poplib's RETR lines (CRLF removed, dot-unstuffed) back into message octets."""
    return b"".join(line + b"\r\n" for line in lines)


def numbered(n):
    return b"From: carol@elsewhere.test\r\nSubject: msg %d\r\n\r\nbody %d\r\n" % (n, n)


class Pop3LoopbackTest(ServerTestCase):
    def setUp(self):
        for u in self.users:
            self.clear_mailbox(u)

    def pop(self, port_name="pop3"):
        p = poplib.POP3("127.0.0.1", self.ports[port_name], timeout=10)
        self.addCleanup(p.close)
        return p

    def login(self, user=BOB):
        p = self.pop()
        p.user(user)
        p.pass_(self.users[user])
        return p

    def send(self, *bodies, to=BOB):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            for body in bodies:
                self.assertEqual(s.sendmail("carol@elsewhere.test", [to], body), {})

    def files(self, user=BOB):
        base = self.maildir(user)
        return sorted(os.path.relpath(p, base) for p in glob.glob(os.path.join(base, "new", "*"))
                      + glob.glob(os.path.join(base, "cur", "*")))

    def subject_of(self, p, n):
        """Message n's Subject via TOP n 0 (RFC 1939 §7), which marks nothing."""
        _, lines, _ = p.top(n, 0)
        [subject] = [line for line in lines if line.startswith(b"Subject: ")]
        return subject[len(b"Subject: "):]

    # -- authentication ----------------------------------------------------

    def test_user_pass_on_plain_loopback(self):
        self.send(MSG)
        p = self.pop()
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        p.user(BOB)
        resp = p.pass_("bob-secret")
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(p.stat()[0], 1)
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_stls_then_login(self):
        p = self.pop()
        self.assertIn("STLS", p.capa())
        p.stls(context=client_tls())
        self.assertNotIn("STLS", p.capa())     # RFC 2595 §4: not offered once TLS is active
        p.user(ALICE)
        self.assertTrue(p.pass_("alice-secret").startswith(b"+OK"))
        self.assertEqual(p.stat(), (0, 0))
        p.quit()

    def test_pop3s_implicit_tls(self):
        self.send(MSG)
        p = poplib.POP3_SSL("127.0.0.1", self.ports["pop3s"], timeout=10, context=client_tls())
        self.addCleanup(p.close)
        self.assertNotIn("STLS", p.capa())
        p.user(BOB)
        p.pass_("bob-secret")
        _, lines, octets = p.retr(1)
        self.assertEqual(strip_trace(joined(lines)), MSG)
        p.quit()

    def test_auth_plain(self):
        p = self.pop()
        token = base64.b64encode(b"\0" + BOB.encode() + b"\0bob-secret").decode()
        resp = p._shortcmd("AUTH PLAIN " + token)
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(p.stat(), (0, 0))
        p.quit()

    def test_auth_scram_sha_256(self):
        p = self.pop()
        client = ScramClient(ALICE, "alice-secret")
        first = base64.b64encode(client.first()).decode()
        challenge = p._shortcmd("AUTH SCRAM-SHA-256 " + first)      # RFC 5034 §4 initial response
        self.assertTrue(challenge.startswith(b"+ "), challenge)
        final = client.final(base64.b64decode(challenge[2:]))
        server_final = p._shortcmd(base64.b64encode(final).decode())
        self.assertTrue(server_final.startswith(b"+ "), server_final)
        self.assertTrue(client.verify(base64.b64decode(server_final[2:])))
        resp = p._shortcmd("")                                       # RFC 5034 §4: empty response ends it
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(p.stat(), (0, 0))
        p.quit()

    def test_auth_scram_wrong_password(self):
        p = self.pop()
        client = ScramClient(ALICE, "not-the-password")
        challenge = p._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
        final = client.final(base64.b64decode(challenge[2:]))
        with self.assertRaises(poplib.error_proto) as cm:
            p._shortcmd(base64.b64encode(final).decode())
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"), cm.exception.args)

    def test_capa(self):
        caps = self.pop().capa()
        for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "UTF8"):
            self.assertIn(cap, caps)
        self.assertEqual(set(caps["SASL"]), {"PLAIN", "LOGIN", "SCRAM-SHA-256"})
        self.assertEqual(caps["EXPIRE"], ["NEVER"])

    def test_wrong_password_is_err_auth(self):
        p = self.pop()
        p.user(BOB)
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("wrong")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"), cm.exception.args)
        p.user(BOB)                            # still in AUTHORIZATION: a retry works
        self.assertTrue(p.pass_("bob-secret").startswith(b"+OK"))

    def test_auth_login_over_stls(self):
        p = self.pop()
        p.stls(context=client_tls())
        self.assertTrue(p._shortcmd("AUTH LOGIN").startswith(b"+ "))          # RFC 5034 §4 challenge
        self.assertTrue(p._shortcmd(base64.b64encode(BOB.encode()).decode()).startswith(b"+ "))
        resp = p._shortcmd(base64.b64encode(b"bob-secret").decode())
        self.assertTrue(resp.startswith(b"+OK"), resp)
        p.quit()

    def test_auth_cancelled_by_star(self):
        p = self.pop()
        p._shortcmd("AUTH SCRAM-SHA-256")
        with self.assertRaises(poplib.error_proto) as cm:
            p._shortcmd("*")                                                  # RFC 5034 §4: cancel
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), cm.exception.args)
        p.user(ALICE)                                                         # still in AUTHORIZATION
        self.assertTrue(p.pass_("alice-secret").startswith(b"+OK"))
        p.quit()

    def test_repeated_failures_close_the_connection(self):
        """RFC 1939 §4: the server may close after failed authentications."""
        p = self.pop()
        answers = []
        for _ in range(3):
            p.user("nobody@example.test")
            with self.assertRaises(poplib.error_proto) as cm:
                p.pass_("wrong")
            answers.append(cm.exception.args[0])
        self.assertTrue(all(a.startswith(b"-ERR [AUTH]") for a in answers), answers)
        with self.assertRaises((poplib.error_proto, OSError)):
            p.noop()                           # the server has closed: EOF (poplib: error_proto) or reset
        self.login().quit()                    # and a success clears this address's failure count

    def test_unknown_user_looks_like_wrong_password(self):
        p = self.pop()
        self.assertTrue(p.user("nobody@example.test").startswith(b"+OK"))
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("whatever")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"), cm.exception.args)

    # -- locking (RFC 1939 §4, RFC 2449 §8.1.2) -----------------------------

    def test_second_session_gets_in_use_until_first_quits(self):
        first = self.login()
        second = self.pop()
        second.user(BOB)
        with self.assertRaises(poplib.error_proto) as cm:
            second.pass_("bob-secret")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [IN-USE]"), cm.exception.args)
        first.quit()
        second.user(BOB)
        self.assertTrue(second.pass_("bob-secret").startswith(b"+OK"))
        second.quit()
        self.login().quit()

    def test_killed_session_deletes_nothing_and_releases_the_lock(self):
        self.send(numbered(1), numbered(2))
        before = self.files()
        p = self.login()
        self.assertTrue(p.dele(1).startswith(b"+OK"))
        # RST instead of QUIT: SO_LINGER with a zero timeout (socket(7)).
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        p.close()
        again = self.login()                   # the lock is gone: no [IN-USE]
        self.assertEqual(again.stat()[0], 2)
        again.quit()
        self.assertEqual(self.files(), before)

    def test_dele_then_quit_deletes_exactly_those(self):
        self.send(*[numbered(n) for n in range(1, 6)])
        p = self.login()
        subjects = {n: self.subject_of(p, n) for n in range(1, 6)}
        doomed = {subjects[2], subjects[4]}
        p.dele(2)
        p.dele(4)
        with self.assertRaises(poplib.error_proto):
            p.retr(2)                          # RFC 1939 §7: a deleted message is off limits
        self.assertEqual(p.stat()[0], 3)
        p.quit()
        self.assertEqual(len(self.files()), 3)
        left = set()
        for stored in self.new_messages(BOB):
            left.add(strip_trace(stored).split(b"\r\n")[1][len(b"Subject: "):])
        self.assertEqual(left, set(subjects.values()) - doomed)

    def test_rset_undeletes(self):
        self.send(numbered(1))
        p = self.login()
        p.dele(1)
        p.rset()
        p.quit()
        self.assertEqual(len(self.files()), 1)

    # -- content -----------------------------------------------------------

    def test_smtp_to_pop3_is_byte_identical(self):
        eight_bit = "From: a@elsewhere.test\r\nSubject: 8bit\r\n\r\nGrüße\r\n".encode("utf-8")
        self.send(MSG)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("a@elsewhere.test", [BOB], eight_bit, mail_options=["BODY=8BITMIME"])
        p = self.login()
        listing = dict(p.list()[1][i].split() for i in range(2))
        for n, sent in ((1, MSG), (2, eight_bit)):
            _, lines, octets = p.retr(n)
            got = joined(lines)
            self.assertEqual(strip_trace(got), sent)
            self.assertEqual(int(listing[str(n).encode()]), len(got))   # RFC 1939 §11: exact sizes
        p.quit()

    def test_lf_only_file_from_another_program_is_served_as_crlf(self):
        """A file with bare LF (written by mutt, procmail...) goes out in CRLF form,
        and LIST announces exactly the octets RETR sends (RFC 1939 §11)."""
        lf = b"From: mutt@example.test\nSubject: lf only\n\nline\n.dot\nno newline at the end"
        for name, data in (("1700000000.M1P1Q1.outside", lf), ("1700000001.M1P1Q2.outside", lf + b"\n")):
            with open(os.path.join(self.maildir(BOB), "tmp", name), "wb") as f:
                f.write(data)
            os.rename(os.path.join(self.maildir(BOB), "tmp", name), os.path.join(self.maildir(BOB), "new", name))
        p = self.login()
        sizes = [int(line.split()[1]) for line in p.list()[1]]
        crlf = lf.replace(b"\n", b"\r\n")
        for n, size in ((1, len(crlf)), (2, len(crlf) + 2)):
            _, lines, _ = p.retr(n)
            self.assertEqual(joined(lines), crlf + b"\r\n")   # a final CRLF is added before "." (RFC 1939 §3)
            self.assertEqual(sizes[n - 1], size)
        p.quit()

    def test_uidl_stable_across_sessions_and_after_retr(self):
        self.send(numbered(1), numbered(2), numbered(3))
        p = self.login()
        uidls = p.uidl()[1]
        self.assertEqual(len(uidls), 3)
        self.assertEqual(p.uidl(2).split()[1:], uidls[1].split())
        p.retr(2)
        self.assertEqual(p.uidl()[1], uidls)
        p.quit()
        seen = [f for f in self.files() if f.startswith("cur" + os.sep)]
        self.assertEqual(len(seen), 1)
        self.assertTrue(seen[0].endswith(":2,S"), seen)
        p = self.login()
        self.assertEqual(p.uidl()[1], uidls)
        self.assertEqual(self.subject_of(p, 2), b"msg 2")
        p.quit()

    def test_top_marks_nothing_seen(self):
        self.send(numbered(1))
        p = self.login()
        self.assertEqual(self.subject_of(p, 1), b"msg 1")
        p.quit()
        [name] = self.files()
        self.assertTrue(name.startswith("new" + os.sep), name)

    def test_pipelined_commands_in_one_segment(self):
        """RFC 2449 §6.6 PIPELINING: every command sent at once, answered in order."""
        self.send(numbered(1))
        with socket.create_connection(("127.0.0.1", self.ports["pop3"]), timeout=10) as s:
            s.sendall(b"USER bob@example.test\r\nPASS bob-secret\r\nSTAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n")
            data = b""
            while True:                        # the server closes after QUIT
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = data.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        statuses = [line.split()[0] for line in lines[:-1] if line[:1] in (b"+", b"-")]
        self.assertEqual(statuses, [b"+OK"] * 8, data)  # greeting + 7 commands
        self.assertRegex(lines[3], rb"^\+OK 1 \d+$")        # STAT
        self.assertEqual(lines[5][:2], b"1 ")               # LIST's only entry
        self.assertEqual(lines[6], b".")

    def test_pipelined_dele_of_every_message(self):
        count = 50
        self.send(*[numbered(n) for n in range(1, count + 1)])
        script = b"USER bob@example.test\r\nPASS bob-secret\r\n"
        script += b"".join(b"DELE %d\r\n" % n for n in range(1, count + 1)) + b"QUIT\r\n"
        with socket.create_connection(("127.0.0.1", self.ports["pop3"]), timeout=10) as s:
            s.sendall(script)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        replies = data.split(b"\r\n")[:-1]
        self.assertEqual(len(replies), count + 4, data)     # greeting, USER, PASS, DELEs, QUIT
        self.assertTrue(all(r.startswith(b"+OK") for r in replies), data)
        self.assertEqual(self.files(), [])

    def test_mail_arriving_during_a_session_waits_for_the_next_login(self):
        self.send(numbered(1))
        p = self.login()
        self.assertEqual(p.stat()[0], 1)
        self.send(numbered(2))
        self.assertEqual(p.stat()[0], 1)        # RFC 1939 §4: numbered at open
        self.assertEqual(len(p.list()[1]), 1)
        with self.assertRaises(poplib.error_proto):
            p.retr(2)
        p.quit()
        p = self.login()
        self.assertEqual(p.stat()[0], 2)
        self.assertEqual(self.subject_of(p, 2), b"msg 2")
        p.quit()


def proc_memory(pid):
    """VmHWM and VmRSS of ``pid`` in kB (proc(5))."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def reset_peak(pid):
    """Reset VmHWM to the current RSS (proc(5) clear_refs "5", Linux 4.0+);
    False where the kernel refuses, and the startup peak then stays in VmHWM."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@unittest.skipUnless(os.path.exists("/proc/self/status"), "needs /proc/<pid>/status (Linux)")
class Pop3MemoryTest(unittest.TestCase):
    """RETR streams a 20 MB message without holding it in memory."""

    SIZE = 20 * 1024 * 1024
    LIMIT_KB = 10 * 1024

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-pop3mem-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def test_retr_20mb_keeps_rss_flat(self):
        add_user_cli(self.data, BOB)
        line = b"y" * 998 + b"\r\n"
        body = b"From: a@elsewhere.test\r\nSubject: big\r\n\r\n" + line * (self.SIZE // len(line))
        [result] = deliver_batch(MailStore(self.data, "mx.example.test"),
                                 [DeliveryJob(body, "a@elsewhere.test", [BOB], "BIG1")])
        self.assertTrue(result.ok, result.error)
        # POP3 the only listener, so it is the line ServerProcess parses.
        srv = ServerProcess(self.data, "--pop3-port", "0", "--smtp-port", "off")
        self.addCleanup(srv.kill)
        p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=30)
        self.addCleanup(p.close)
        p.user(BOB)
        p.pass_("pw")
        self.assertEqual(p.stat()[0], 1)
        reset_peak(srv.proc.pid)
        before = proc_memory(srv.proc.pid)
        _, lines, octets = p.retr(1)
        after = proc_memory(srv.proc.pid)
        p.quit()
        got = joined(lines)
        self.assertEqual(len(got), octets)
        # delivered straight into the Maildir: Return-Path and Delivered-To only
        self.assertTrue(got.startswith(b"Return-Path: <a@elsewhere.test>\r\nDelivered-To: bob@example.test\r\n"))
        self.assertTrue(got.endswith(b"\r\n" + body), "the 20 MB message came back altered")
        del lines, got
        growth = after["VmHWM"] - before["VmHWM"]
        self.assertLess(growth, self.LIMIT_KB, "peak RSS grew %d kB during a %d MB RETR (before %r, after %r)"
                        % (growth, self.SIZE >> 20, before, after))


if __name__ == "__main__":
    unittest.main()
