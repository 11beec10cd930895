"""Sibling processes on one host (issue 14): the local channel
(protocols/loop_siblings.py) and its three uses, the shared failed-login
counters, the change hub's news reaching IDLE in another process at once, and
the auth cache dropped when another process finds the users file changed.

The channel is tested with two or three channels on one loop; the uses with
two MailServer instances in this process on one data folder (each its own
loop and backend, as two `workers` or two mailsrv started by hand)."""

import json
import os
import poplib
import queue
import shutil
import smtplib
import socket
import stat
import tempfile
import threading
import unittest
from unittest import mock

from mailsrv import Config, MailServer
from protocols.loop import EventLoop
from protocols.loop_connlimits import SharedTable
from protocols.loop_siblings import MAX_DATAGRAM, SiblingChannel, tell_siblings
from protocols.loop_sync import call_and_wait
from protocols.supervisor import AUTH_KEY
from store.datadir import run_folder
from store.users import UserDB
from tests.helpers import cheap_scrypt, free_ports, wait_for

ALICE = "alice@example.test"
MSG = b"From: carol@elsewhere.test\r\nSubject: news\r\n\r\nHello.\r\n"


class LoopCase(unittest.TestCase):
    """One running EventLoop, a temporary run folder, channels on it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-sib-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.folder = os.path.join(self.tmp, "run", "h")
        self.loop = EventLoop()
        thread = threading.Thread(target=self.loop.run, daemon=True)
        thread.start()

        def stop():
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(10)
            self.loop.close(wait=True)
        self.addCleanup(stop)

    def on_loop(self, fn):
        return call_and_wait(self.loop, lambda done: done(fn()), 10)

    def channel(self, kinds=("x",)):
        """A started channel; what it hears of ``kinds`` goes to its ``.heard`` queue."""
        ch = SiblingChannel(self.loop, self.folder)
        ch.heard = queue.Queue()
        for kind in kinds:
            ch.on(kind, ch.heard.put)
        self.assertTrue(self.on_loop(ch.start))
        self.addCleanup(lambda: self.on_loop(ch.close))
        return ch

    def knows(self, ch, *others):
        """Wait until ``ch`` has heard the hello of each of ``others`` (sent as they start)."""
        wait_for(lambda: self.on_loop(lambda: all(o.path in ch._peers for o in others)),
                 "the siblings' hello", timeout=5)

    def raw(self, folder=None, name="raw.sock"):
        """A plain Unix datagram socket bound in ``folder`` (the run folder by default)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        if folder is not False:
            folder = folder or self.folder
            os.makedirs(folder, exist_ok=True)
            sock.bind(os.path.join(folder, name))
        return sock


class ChannelTest(LoopCase):
    def test_a_message_reaches_every_other_sibling_once_and_not_its_sender(self):
        a, b, c = self.channel(), self.channel(), self.channel()
        self.knows(a, b, c)
        self.on_loop(lambda: a.send("x", {"n": 1}))
        for ch in (b, c):
            self.assertEqual(ch.heard.get(timeout=5), {"t": "x", "n": 1})
        self.on_loop(lambda: c.send("x", {"n": 2}))     # c learnt of the others from their listing
        self.assertEqual(a.heard.get(timeout=5), {"t": "x", "n": 2})
        self.assertEqual(b.heard.get(timeout=5), {"t": "x", "n": 2})
        self.assertTrue(a.heard.empty() and b.heard.empty() and c.heard.empty())

    def test_a_newcomer_is_known_at_once_by_its_hello_and_forgotten_by_its_bye(self):
        a = self.channel()
        b = self.channel()        # after a: a learns of b only from b's hello
        self.knows(a, b)
        self.on_loop(lambda: a.send("x", {"n": 3}))
        self.assertEqual(b.heard.get(timeout=5), {"t": "x", "n": 3})
        self.on_loop(b.close)
        self.assertFalse(os.path.exists(b.path))
        wait_for(lambda: b.path not in a._peers, "a to hear b's bye", timeout=5)

    def test_folder_is_private_and_closing_unlinks_the_socket(self):
        a = self.channel()
        self.assertEqual(stat.S_IMODE(os.stat(self.folder).st_mode), 0o700)
        self.assertTrue(stat.S_ISSOCK(os.stat(a.path).st_mode))
        self.assertEqual(os.path.dirname(a.path), os.path.realpath(self.folder))
        self.on_loop(a.close)
        self.assertFalse(os.path.exists(a.path))

    def test_a_dead_processes_socket_is_unlinked(self):
        stale = self.raw(name="4242-dead.sock")
        path = stale.getsockname()
        stale.close()                       # bound, never unlinked: a process killed with SIGKILL
        self.assertTrue(os.path.exists(path))
        a = self.channel()                  # its listing finds the socket, its hello is refused
        wait_for(lambda: not os.path.exists(path), "the stale socket to be removed", timeout=5)
        self.assertNotIn(path, self.on_loop(lambda: set(a._peers)))
        b = self.channel()
        self.knows(a, b)
        self.on_loop(lambda: a.send("x", {"n": 4}))
        self.assertEqual(b.heard.get(timeout=5), {"t": "x", "n": 4})

    def test_garbage_is_ignored_and_the_channel_still_works(self):
        a = self.channel()
        sender = self.raw(name="1-garbage.sock")
        garbage = [b"\xff\xfe\x00", b"", b"{}", b"[1, 2]", b'[{"t": 5}]', b'{"t": "x"}',
                   b"[" * 100000 + b"]" * 100000, b'[{"t": "x"', os.urandom(MAX_DATAGRAM)]
        for data in garbage:
            sender.sendto(data, a.path)
        sender.sendto(b'[{"t": "x", "ok": true}, {"t": "unknown"}]', a.path)
        self.assertEqual(a.heard.get(timeout=5), {"t": "x", "ok": True})
        self.assertEqual(self.on_loop(lambda: a.stats["malformed"]), len(garbage))

    def test_a_handler_that_raises_does_not_stop_the_channel(self):
        a = self.channel()
        a.on("boom", lambda m: 1 / 0)
        sender = self.raw(name="2-boom.sock")
        with self.assertLogs("mailsrv.siblings", "ERROR"):
            sender.sendto(b'[{"t": "boom"}, {"t": "x", "n": 5}]', a.path)
            self.assertEqual(a.heard.get(timeout=5), {"t": "x", "n": 5})

    def test_a_sender_outside_the_run_folder_is_refused(self):
        a = self.channel()
        valid = b'[{"t": "x", "n": 6}]'
        self.raw(os.path.join(self.tmp, "elsewhere")).sendto(valid, a.path)   # another folder
        self.raw(False).sendto(valid, a.path)                                   # an unbound socket
        self.raw(name="3-sibling.sock").sendto(b'[{"t": "x", "n": 7}]', a.path)
        self.assertEqual(a.heard.get(timeout=5), {"t": "x", "n": 7})
        self.assertEqual(self.on_loop(lambda: a.stats["refused"]), 2)
        self.assertTrue(a.heard.empty())

    def test_a_sibling_that_does_not_read_costs_dropped_datagrams_not_a_blocked_loop(self):
        a = self.channel()
        deaf = self.raw(name="5-deaf.sock")         # bound in the folder, never reads
        self.on_loop(lambda: a._peers.add(deaf.getsockname()))
        for n in range(40):                         # one datagram per loop iteration
            self.on_loop(lambda n=n: a.send("x", {"n": n}))
        wait_for(lambda: self.on_loop(lambda: a.stats["dropped"]) > 0, "a full queue to drop", timeout=5)
        b = self.channel()                          # the loop still runs and the others still hear
        self.knows(a, b)
        self.on_loop(lambda: a.send("x", {"n": "after"}))
        self.assertEqual(b.heard.get(timeout=5), {"t": "x", "n": "after"})

    def test_one_loop_iterations_messages_go_in_one_datagram_once_each(self):
        a = self.channel()
        peer = self.raw(name="6-peer.sock")
        self.on_loop(lambda: a._peers.add(peer.getsockname()))
        self.on_loop(lambda: [a.send("x", {"n": n % 3}) for n in range(30)])
        peer.settimeout(5)
        data, _ = peer.recvfrom(MAX_DATAGRAM * 2)
        self.assertEqual(json.loads(data), [{"t": "x", "n": 0}, {"t": "x", "n": 1}, {"t": "x", "n": 2}])

    def test_a_message_too_long_for_a_datagram_is_dropped(self):
        a, b = self.channel(), self.channel()
        self.knows(a, b)
        self.on_loop(lambda: a.send("x", {"n": "y" * MAX_DATAGRAM}))
        self.on_loop(lambda: a.send("x", {"n": 8}))
        self.assertEqual(b.heard.get(timeout=5), {"t": "x", "n": 8})

    def test_a_process_without_a_channel_can_tell_the_siblings(self):
        a, b = self.channel(), self.channel()
        self.assertEqual(tell_siblings(self.folder, "x", {"n": 9}), 2)
        for ch in (a, b):
            self.assertEqual(ch.heard.get(timeout=5), {"t": "x", "n": 9})
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(os.path.basename(c.path) for c in (a, b)))
        self.assertEqual(tell_siblings(os.path.join(self.tmp, "none"), "x"), 0)

    def test_run_folder_is_per_host_with_shared_data(self):
        self.assertEqual(run_folder("/d", True, "mx1.example.test"), "/d/run/mx1.example.test")
        self.assertNotEqual(run_folder("/d", True, "mx1"), run_folder("/d", True, "mx2"))
        self.assertEqual(run_folder("/d", False, "mx1"), run_folder("/d", False, "mx2"))   # one machine


class TwoServersTest(unittest.TestCase):
    """Two MailServer instances on one data folder, as two sibling processes."""

    extra = {"auth_max_failures": "4", "allow_plaintext_auth": "yes", "auth_hash_threads": "4"}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-sib-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.a = self.server()
        with cheap_scrypt():
            self.a.add_user(ALICE, "old-secret")
        self.b = self.server()
        for s in (self.a, self.b):
            s.start()
            self.addCleanup(s.stop, 2)
        peers = lambda s: call_and_wait(s.loop, lambda done: done(set(s.backend.siblings._peers)), 10)   # noqa: E731
        wait_for(lambda: peers(self.a) == {self.b.backend.siblings.path}, "a to hear b's hello", timeout=5)
        self.assertEqual(peers(self.b), {self.a.backend.siblings.path})

    def server(self):
        values = free_ports(data_dir=self.tmp, hostname="mx.example.test", domains="example.test",
                            log_level="WARNING", auth_failure_delay="0.05", imap_port="0",
                            trusted_networks="none", dns_servers="127.0.0.1:9", tls_self_signed="no")
        values.update(self.extra)
        return MailServer(Config(values))

    def pop3_login(self, server, password):
        """True when POP3 USER/PASS succeeds, else the -ERR line."""
        p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
        try:
            p.user(ALICE)
            p.pass_(password)
            p.quit()
            return True
        except poplib.error_proto as e:
            return e.args[0].decode()
        finally:
            p.close()

    def heard(self, server, kind):
        """A list that gets each ``kind`` message the server's channel hears."""
        got = []
        channel = server.backend.siblings
        handler = channel._handlers[kind]
        channel.on(kind, lambda m: (handler(m), got.append(m)))
        return got

    def test_failures_spread_over_two_processes_lock_the_address_out_in_both(self):
        heard_b = self.heard(self.b, "auth")
        for server in (self.a, self.b):
            for _ in range(2):
                self.assertIn("-ERR", self.pop3_login(server, "wrong"))
        wait_for(lambda: len(heard_b) >= 2, "b to hear a's two failures", timeout=5)
        for server in (self.a, self.b):           # 2 + 2 = auth_max_failures: locked out in both
            reply = self.pop3_login(server, "old-secret")
            self.assertIsNot(reply, True, "the right password got in after 4 failures")
            self.assertIn("Too many failed logins from your address", reply)

    def test_attempts_in_flight_in_one_worker_count_in_the_other(self):
        # workers = N share a table in memory (MailServer.bind does this for a worker):
        # four wrong passwords still being checked in a fill auth_max_failures in b too
        table = SharedTable(2, [AUTH_KEY], 1024)
        for index, server in enumerate((self.a, self.b)):
            server.backend.auth.share_inflight(table.counts(index, AUTH_KEY, 1 << 31, 4))
        auth, release, replies = self.a.backend.auth, threading.Event(), queue.Queue()
        check = auth.check_password
        in_flight = lambda: auth.limiter._addresses.get("127.0.0.1") and auth.limiter._addresses["127.0.0.1"].inflight   # noqa: E731

        def slow(user, password):
            release.wait(10)
            return check(user, password)
        with mock.patch.object(auth, "check_password", slow):
            threads = [threading.Thread(target=lambda: replies.put(self.pop3_login(self.a, "wrong"))) for _ in range(4)]
            for t in threads:
                t.start()
            self.addCleanup(release.set)
            wait_for(lambda: in_flight() == 4, "four attempts in flight in a", timeout=10)
            reply = self.pop3_login(self.b, "old-secret")
            release.set()
            for t in threads:
                t.join(10)
        self.assertIsNot(reply, True, "b checked a fifth password while a had four in flight")
        self.assertIn("Too many failed logins from your address", reply)
        self.assertEqual([replies.get(timeout=1)[:4] for _ in threads], ["-ERR"] * 4)

    def test_a_success_in_one_process_clears_that_accounts_failures_in_the_other(self):
        heard_b = self.heard(self.b, "auth")
        for _ in range(3):
            self.pop3_login(self.b, "wrong")
        self.assertIs(self.pop3_login(self.a, "old-secret"), True)
        wait_for(lambda: len(heard_b) >= 1, "b to hear a's success", timeout=5)
        self.assertEqual(self.b.backend.auth.limiter.failures_from("127.0.0.1"), 0)

    def test_garbage_auth_messages_are_ignored(self):
        auth = self.b.backend.auth
        for message in ({"t": "auth"}, {"t": "auth", "g": 5, "a": "x", "ok": False},
                        {"t": "auth", "g": "1.2.3.4", "a": "x" * 10000, "ok": False},
                        {"t": "auth", "g": "1.2.3.4", "a": "x", "ok": "no"}):
            auth._sibling_outcome(message)
        self.assertEqual(auth.limiter.failures_from("1.2.3.4"), 0)

    def test_a_delivery_in_one_process_reaches_idle_in_the_other_at_once(self):
        import imaplib
        self.b.backend.mail.hub.poll_interval = 60.0     # only the channel can tell within the wait
        imap = imaplib.IMAP4("127.0.0.1", self.b.ports["imap"], timeout=10)
        self.addCleanup(imap.shutdown)
        imap.login(ALICE, "old-secret")
        imap.select("INBOX")
        imap.send(b"i1 IDLE\r\n")
        self.assertTrue(imap.readline().startswith(b"+ "))
        with smtplib.SMTP("127.0.0.1", self.a.ports["smtp"], timeout=10) as s:
            self.assertEqual(s.sendmail("carol@elsewhere.test", [ALICE], MSG), {})
        imap.sock.settimeout(2.0)                       # far below the poll's 60 s
        try:
            line = imap.readline()
        except socket.timeout:
            self.fail("no untagged EXISTS within 2 s of a delivery in the sibling process")
        self.assertEqual(line, b"* 1 EXISTS\r\n")
        imap.send(b"DONE\r\n")
        imap.sock.settimeout(10)
        lines = [imap.readline()]
        while lines[-1].startswith(b"* "):
            lines.append(imap.readline())
        self.assertTrue(lines[-1].startswith(b"i1 OK"), lines)

    def test_a_sibling_change_wakes_name_watchers_as_a_poll_would(self):
        hub_b, calls = self.b.backend.mail.hub, []
        call_and_wait(self.b.loop, lambda done: done(hub_b.watch_names(ALICE, lambda *a: calls.append(a))), 10)
        hub_a = self.a.backend.mail.hub
        call_and_wait(self.a.loop, lambda done: done(hub_a.announce_names(ALICE, object(), object())), 10)
        wait_for(lambda: calls, "b's name watcher to hear a's change", timeout=5)
        self.assertEqual(calls, [(ALICE, None, None)])

    def test_a_password_changed_and_reloaded_in_one_process_is_honoured_by_the_other(self):
        heard_b = self.heard(self.b, "users")
        self.assertIs(self.pop3_login(self.b, "old-secret"), True)     # now in b's auth cache
        with cheap_scrypt():
            UserDB(self.tmp).set_password(ALICE, "new-secret")         # `mailsrv.py user passwd`
        self.a.loop.call_soon_threadsafe(self.a.reload)                 # SIGHUP to a alone
        wait_for(lambda: heard_b, "b to hear that the users file changed", timeout=5)
        self.assertIsNot(self.pop3_login(self.b, "old-secret"), True, "the old password still got in")
        self.assertIs(self.pop3_login(self.b, "new-secret"), True)

    def test_a_cached_password_is_not_taken_before_a_due_check_of_the_users_file(self):
        # nobody tells b: its own check finds the change, and the login waits for that check
        from protocols.backend import wiring
        self.assertIs(self.pop3_login(self.b, "old-secret"), True)     # now in b's auth cache
        with cheap_scrypt():
            UserDB(self.tmp).set_password(ALICE, "new-secret")         # `mailsrv.py user passwd`
        with mock.patch.object(wiring, "TABLE_CHECK_INTERVAL_S", 0.0):  # a check is due at every login
            self.assertIsNot(self.pop3_login(self.b, "old-secret"), True, "the cache let the old password in")
            self.assertIs(self.pop3_login(self.b, "new-secret"), True)

    def test_a_password_changed_by_a_command_that_tells_the_siblings_is_honoured_at_once(self):
        heard_b = self.heard(self.b, "users")
        self.assertIs(self.pop3_login(self.b, "old-secret"), True)     # now in b's auth cache
        with cheap_scrypt():
            UserDB(self.tmp).set_password(ALICE, "new-secret")
        folder = run_folder(self.tmp, False, "mx.example.test")
        self.assertEqual(tell_siblings(folder, "users"), 2)            # a and b
        wait_for(lambda: heard_b, "b to hear that the users file changed", timeout=5)
        self.assertIsNot(self.pop3_login(self.b, "old-secret"), True, "the old password still got in")
        self.assertIs(self.pop3_login(self.b, "new-secret"), True)


    def test_the_user_passwd_command_tells_the_running_processes(self):
        import io
        import mailsrv
        heard = [self.heard(s, "users") for s in (self.a, self.b)]
        self.assertIs(self.pop3_login(self.b, "old-secret"), True)     # now in b's auth cache
        with cheap_scrypt(), mock.patch("sys.stdin", io.StringIO("new-secret\n")), \
                mock.patch("sys.stdout", io.StringIO()):
            self.assertEqual(mailsrv.main(["user", "passwd", ALICE, "--data", self.tmp]), 0)
        wait_for(lambda: all(heard), "both processes to hear the command", timeout=5)
        self.assertIsNot(self.pop3_login(self.b, "old-secret"), True, "the old password still got in")
        self.assertIs(self.pop3_login(self.b, "new-secret"), True)


if __name__ == "__main__":
    unittest.main()
