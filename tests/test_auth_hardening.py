"""Issue 7 items 1-2 and issue 8's lockout reply: what a hostile client gets from AUTH.

* Password hashing has its own bounded lane, fair between client addresses: a
  flood of AUTH from many 127.0.0.x addresses fills it and then gets a fast
  ``454 4.7.0`` (RFC 4954 §6), while a cached POP3 login and a message
  submission complete with the lane's hashes still pending.
* The lockout cannot be bypassed: another account's success does not reset an
  address's failures; attempts count when they start (41 concurrent guesses are
  not all checked against a limit of 10); an account attacked from 20 addresses
  is throttled for a 21st, but not for an address its owner logged in from.
* A refused attempt is told so: ``454 4.7.0`` / ``-ERR [SYS/TEMP]``, logged as a
  lockout, never with the password.

The policy itself (protocols/backend/auth_limits.py) and the lane (protocols/loop.py
Lane) are tested directly with injected times and a fake loop; the server tests
go over real loopback sockets from many source addresses.  No test asserts a
duration: the flood test holds the hashes with an event and asserts in terms of
the lane (the other work finished while N checks were still pending).
"""

import base64
import inspect
import queue
import smtplib
import socket
import threading
import unittest

from protocols.backend import auth_limits as auth_limits
from protocols.backend.auth_limits import AuthLimiter, Limits, address_group
from protocols.loop import Lane
from protocols.sasl import AUTH_BUSY, AUTH_LOCKOUT, AUTH_THROTTLED, ScramClient
from tests.helpers import ServerTestCase, wait_for

ALICE, BOB = "alice@example.test", "bob@example.test"


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def smtp_auth(port, source, user, password, listener_port=None):
    """One AUTH PLAIN (no mechanism fallback, unlike smtplib's login) from ``source``."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as s:
        s.ehlo("client.test")
        code, text = s.docmd("AUTH", "PLAIN " + plain(user, password))
        return code, text.decode()


class LineClient:
    """A raw POP3 client bound to a chosen source address (poplib cannot bind)."""

    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self):
        return self.file.readline().decode().rstrip("\r\n")

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def close(self):
        self.file.close()
        self.sock.close()


# ---------------------------------------------------------------- the policy

class AddressGroupTest(unittest.TestCase):
    def test_ipv4_alone_ipv6_by_64_mapped_as_ipv4(self):
        self.assertEqual(address_group("192.0.2.7"), "192.0.2.7")
        self.assertEqual(address_group("2001:db8:1:2:aaaa::1"), address_group("2001:db8:1:2:bbbb::9"))
        self.assertEqual(address_group("2001:db8:1:2::1"), "2001:db8:1:2::/64")
        self.assertNotEqual(address_group("2001:db8:1:2::1"), address_group("2001:db8:1:3::1"))
        self.assertEqual(address_group("::ffff:192.0.2.7"), "192.0.2.7")


class LimiterTest(unittest.TestCase):
    def limiter(self, **kw):
        return AuthLimiter(Limits(**kw))

    def guess(self, lim, group, account, now):
        attempt, refusal = lim.begin(group, account, now)
        if refusal is not None:
            return refusal
        lim.end(attempt, False, now)
        return None

    def test_another_accounts_success_does_not_reset_failures(self):
        lim = self.limiter(max_failures=10)
        for rnd in range(4):
            for i in range(9 if rnd == 0 else 1):
                self.guess(lim, "a", "bob", 1.0)
            attempt, refusal = lim.begin("a", "alice", 1.0)
            if refusal is None:
                lim.end(attempt, True, 1.0)           # alice's right password
        # 9 + 3 = 12 guesses for bob were made or refused; bob's right password is not checked
        self.assertEqual(lim.begin("a", "bob", 2.0), (None, AUTH_LOCKOUT))
        self.assertEqual(lim.failures_from("a"), 10)

    def test_own_success_forgives_own_typos_only(self):
        lim = self.limiter(max_failures=10)
        for _ in range(5):
            self.guess(lim, "a", "bob", 1.0)
        for _ in range(3):
            self.guess(lim, "a", "alice", 1.0)
        attempt, _ = lim.begin("a", "alice", 1.0)
        lim.end(attempt, True, 1.0)
        self.assertEqual(lim.failures_from("a"), 5)

    def test_attempts_count_when_they_start(self):
        lim = self.limiter(max_failures=10, account_max_failures=1000)
        results = [lim.begin("a", "user%d" % i, 1.0) for i in range(41)]
        started = [a for a, r in results if r is None]
        self.assertEqual(len(started), 10)
        self.assertTrue(all(r is AUTH_LOCKOUT for a, r in results[10:]))
        for a in started:
            lim.end(a, False, 1.0)
        self.assertEqual(lim.begin("a", "new", 2.0), (None, AUTH_LOCKOUT))
        self.assertIsNone(lim.begin("a", "new", 1.0 + 300 + 1)[1])     # lockout_seconds after the last failure

    def test_account_penalty_spaces_attempts_and_grows(self):
        lim = self.limiter(max_failures=10, account_max_failures=10, account_delay=2, account_delay_max=60)
        now, refused = 100.0, 0
        for n in range(9):                            # 180 guesses from 20 addresses
            for g in range(20):
                now += 0.01
                if self.guess(lim, "10.0.0.%d" % g, "bob", now) is AUTH_THROTTLED:
                    refused += 1
        self.assertEqual(lim.account_failures("bob"), 10)
        self.assertEqual(refused, 170)
        self.assertEqual(lim.begin("10.0.0.21", "bob", now)[1], AUTH_THROTTLED)
        # after the spacing one attempt goes through; it holds the account while in flight
        delays, last_failure = [], 100.0 + 10 * 0.01     # the 10th guess was the last one checked
        for _ in range(7):
            allowed = lim.next_allowed("bob")
            delays.append(round(allowed - last_failure, 3))
            now = last_failure = allowed
            attempt, refusal = lim.begin("10.0.0.21", "bob", now)
            self.assertIsNone(refusal)
            self.assertEqual(lim.begin("10.0.0.22", "bob", now)[1], AUTH_THROTTLED)
            lim.end(attempt, False, now)
        self.assertEqual(delays, [2, 4, 8, 16, 32, 60, 60], delays)
        # forgotten ACCOUNT_WINDOW after the last failure
        self.assertIsNone(lim.begin("10.0.0.23", "bob", now + auth_limits.ACCOUNT_WINDOW + 1)[1])

    def test_owner_address_is_exempt_from_the_account_penalty(self):
        lim = self.limiter(max_failures=10, account_max_failures=3, account_delay=300)
        attempt, _ = lim.begin("192.0.2.1", "bob", 1.0)
        lim.end(attempt, True, 1.0)                  # the owner's phone
        for g in range(6):
            self.guess(lim, "10.0.0.%d" % g, "bob", 2.0)
        self.assertEqual(lim.begin("10.0.0.99", "bob", 3.0)[1], AUTH_THROTTLED)
        self.assertIsNone(lim.begin("192.0.2.1", "bob", 3.0)[1])

    def test_tables_are_bounded(self):
        lim = self.limiter(max_failures=10)
        old = auth_limits.MAX_RECORDS
        auth_limits.MAX_RECORDS = 50
        try:
            for i in range(500):
                self.guess(lim, "10.0.%d.%d" % (i // 250, i % 250), "user%d" % i, 1.0)
        finally:
            auth_limits.MAX_RECORDS = old
        self.assertLessEqual(len(lim._addresses), 51)
        self.assertLessEqual(len(lim._accounts), 51)


# ---------------------------------------------------------------- the sessions' contract

class TemporaryAnswerTest(unittest.TestCase):
    """backend.authenticate's done(AuthTemporary): SMTP 454 4.7.0 (RFC 4954 §6),
    POP3 -ERR [SYS/TEMP] (RFC 3206 §4); the session stays usable."""

    def test_smtp_says_454_and_allows_another_try(self):
        from tests.test_smtp_session import FakeBackend, codes, ready_session, send

        class Busy(FakeBackend):
            def authenticate(self, ctx, outcome, done):
                done(AUTH_BUSY)
        s, _ = ready_session(peer="127.0.0.1", backend=Busy())
        out = send(s, "AUTH PLAIN " + plain("alice@example.org", "alice-secret"), "NOOP")
        self.assertEqual(out[0], "454 4.7.0 Temporary authentication failure: " + AUTH_BUSY.text)
        self.assertEqual(codes(out), [454, 250])
        self.assertIsNone(s._auth_user)

    def test_pop3_says_sys_temp_and_closes_after_max_auth_failures(self):
        from tests.test_pop3_session import LOCAL, FakeBackend, login, make_session

        class Locked(FakeBackend):
            def authenticate(self, ctx, outcome, done):
                done(AUTH_LOCKOUT)
        s, _ = make_session(peer=LOCAL, backend=Locked(), max_auth_failures=2)
        self.assertTrue(login(s).endswith(b"-ERR [SYS/TEMP] " + AUTH_LOCKOUT.text.encode() + b"\r\n"))
        self.assertFalse(s.closed)
        login(s)
        self.assertTrue(s.closed)


    def test_the_real_backend_and_the_session_fakes_follow_the_contract(self):
        from protocols.sasl import Authenticator
        from protocols.backend.wiring import Backend
        from tests import test_pop3_session, test_smtp_session
        for cls in (Backend, test_smtp_session.FakeBackend, test_pop3_session.FakeBackend):
            for name in ("scram_lookup", "authenticate"):
                self.assertEqual(len(inspect.signature(getattr(cls, name)).parameters),
                                 len(inspect.signature(getattr(Authenticator, name)).parameters), (cls, name))


# ---------------------------------------------------------------- the lane

class FakeLoop:
    """call_soon_threadsafe into a queue the test drains: the lane's bookkeeping
    runs in the test thread, as it would in the loop thread."""

    def __init__(self):
        self.calls = queue.Queue()

    def call_soon_threadsafe(self, fn):
        self.calls.put(fn)

    def run_one(self):
        self.calls.get(timeout=10)()


class LaneTest(unittest.TestCase):
    def setUp(self):
        self.loop = FakeLoop()
        self.gate = threading.Event()
        self.addCleanup(self.gate.set)
        self.order = []

    def job(self, name):
        def fn():
            self.gate.wait(10)
            return name
        return fn

    def test_bounded_per_key_and_in_total(self):
        lane = Lane(self.loop, "t", threads=1, max_waiting=3, max_per_key=2)
        self.addCleanup(lane.close)
        ok = [lane.submit(k, self.job(k), self.order.append) for k in ("a", "a", "a", "b", "c", "d", "e")]
        # a: 2 (then its share is full); b, c: the 3 waiting places; d, e: lane full
        self.assertEqual(ok, [True, True, False, True, True, False, False])
        self.assertEqual((lane.running, lane.waiting), (1, 3))
        self.gate.set()
        for _ in range(4):
            self.loop.run_one()
        self.assertEqual((lane.running, lane.waiting), (0, 0))
        self.assertTrue(lane.submit("a", self.job("a"), self.order.append))
        self.loop.run_one()

    def test_round_robin_between_keys(self):
        lane = Lane(self.loop, "t", threads=1, max_waiting=10, max_per_key=10)
        self.addCleanup(lane.close)
        for name in ("a1", "a2", "a3", "a4", "b1", "c1"):
            lane.submit(name[0], self.job(name), self.order.append)
        self.gate.set()
        for _ in range(6):
            self.loop.run_one()
        # a1 started at once; then one per key in turn: a4 waits behind b1 and c1
        self.assertEqual(self.order, ["a1", "a2", "b1", "c1", "a3", "a4"])

    def test_exception_goes_to_the_callback(self):
        lane = Lane(self.loop, "t", threads=1, max_waiting=1, max_per_key=1)
        self.addCleanup(lane.close)
        lane.submit("a", lambda: 1 / 0, self.order.append)
        self.loop.run_one()
        self.assertIsInstance(self.order[0], ZeroDivisionError)


# ---------------------------------------------------------------- over sockets

class FloodTest(ServerTestCase):
    """Issue 7.1: 60 AUTH PLAIN for unknown users from 20 addresses while the
    hashing is held: the lane takes 2 running + 8 waiting, every other attempt
    gets 454 4.7.0 at once, and a cached POP3 login and a submission (local and
    queued remote recipient) complete while those 10 checks are still pending."""

    extra_config = {"auth_hash_threads": "2", "auth_hash_queue": "8", "auth_hash_per_address": "2"}

    def test_flood_gets_454_and_other_work_is_not_delayed(self):
        backend = self.server.backend
        # A first POP3 login and submission login put alice's password in the auth cache.
        pop = LineClient(self.ports["pop3"])
        self.assertTrue(pop.cmd("USER " + ALICE).startswith("+OK"))
        self.assertTrue(pop.cmd("PASS alice-secret").startswith("+OK"), "first login")
        pop.cmd("QUIT")
        pop.close()

        gate = threading.Event()
        self.addCleanup(gate.set)
        real = backend.users.verify_password
        backend.users.verify_password = lambda u, p: gate.wait(60) and real(u, p)
        self.addCleanup(lambda: setattr(backend.users, "verify_password", real))

        replies, lock = [], threading.Lock()

        def attacker(i):
            try:
                reply = smtp_auth(self.ports["submission"], "127.0.0.%d" % (10 + i % 20),
                                  "nobody%d@example.test" % i, "guess")
            except Exception as exc:       # collected and asserted below
                reply = (0, repr(exc))
            with lock:
                replies.append(reply)
        threads = [threading.Thread(target=attacker, args=(i,)) for i in range(60)]
        for t in threads:
            t.start()
        wait_for(lambda: len(replies) >= 50, "50 fast refusals", lambda: repr(replies), timeout=60)
        lane = backend.auth.lane
        wait_for(lambda: (lane.running, lane.waiting) == (2, 8), "a full lane",
                 lambda: repr((lane.running, lane.waiting)))
        self.assertEqual(sorted({c for c, _ in replies}), [454], replies)
        self.assertIn("4.7.0", replies[0][1])

        # Work that needs no hashing: a cached POP3 login ...
        pop = LineClient(self.ports["pop3"])
        self.assertTrue(pop.cmd("USER " + ALICE).startswith("+OK"))
        self.assertTrue(pop.cmd("PASS alice-secret").startswith("+OK maildrop"))
        self.assertTrue(pop.cmd("STAT").startswith("+OK"))
        pop.cmd("QUIT")
        pop.close()
        # ... and a submission: cached AUTH, one local and one queued remote recipient.
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as s:
            s.ehlo("client.test")
            self.assertEqual(s.docmd("AUTH", "PLAIN " + plain(ALICE, "alice-secret"))[0], 235)
            refused = s.sendmail(ALICE, [BOB, "carol@elsewhere.test"],
                                 b"From: alice@example.test\r\nSubject: during the flood\r\n\r\nhi\r\n")
            self.assertEqual(refused, {})
        self.assertEqual((lane.running, lane.waiting), (2, 8), "the 10 checks were still pending")

        gate.set()
        for t in threads:
            t.join(60)
        codes = sorted(c for c, _ in replies)
        self.assertEqual(codes, [454] * 50 + [535] * 10)


class ConcurrentGuessesTest(ServerTestCase):
    """Issue 7.2(b): 41 concurrent guesses from one address, limit 10: exactly 10
    are checked (535); 31 are refused as a lockout (454) without a hash."""

    extra_config = {"auth_max_failures": "10", "auth_hash_queue": "64", "auth_hash_per_address": "64"}

    def test_attempts_in_flight_count(self):
        backend = self.server.backend
        checks = []
        real = backend.users.verify_password
        backend.users.verify_password = lambda u, p: checks.append(u) or real(u, p)
        self.addCleanup(lambda: setattr(backend.users, "verify_password", real))
        barrier = threading.Barrier(41)
        codes, lock = [], threading.Lock()

        def guess(i):
            with smtplib.SMTP("127.0.0.1", self.ports["submission"], source_address=("127.0.0.77", 0),
                              timeout=30) as s:
                s.ehlo("client.test")
                barrier.wait(30)
                code = s.docmd("AUTH", "PLAIN " + plain("user%d@example.test" % i, "guess"))[0]
            with lock:
                codes.append(code)
        threads = [threading.Thread(target=guess, args=(i,)) for i in range(41)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(codes), [454] * 31 + [535] * 10)
        self.assertEqual(len(checks), 10)


class OtherAccountSuccessTest(ServerTestCase):
    """Issue 7.2(a): 4 rounds of 9 wrong passwords for bob, each followed by
    alice's correct login from the same address: bob's password is refused."""

    extra_config = {"auth_max_failures": "10"}

    def test_other_accounts_success_does_not_clear_the_address(self):
        port, src = self.ports["submission"], "127.0.0.50"
        alice = []
        for _ in range(4):
            for n in range(9):
                smtp_auth(port, src, BOB, "wrong-%d" % n)
            alice.append(smtp_auth(port, src, ALICE, "alice-secret")[0])
        self.assertEqual(alice, [235, 454, 454, 454])     # locked out from the 10th failure on
        code, text = smtp_auth(port, src, BOB, "bob-secret")
        self.assertEqual(code, 454)
        self.assertIn("your address", text)


class AccountPenaltyTest(ServerTestCase):
    """Issue 7.2(c) and issue 8: an account guessed at from 20 addresses."""

    extra_config = {"auth_max_failures": "10", "auth_account_max_failures": "10",
                    "auth_account_delay": "300"}

    def test_account_attacked_from_20_addresses_is_throttled_for_a_21st(self):
        port = self.ports["submission"]
        self.assertEqual(smtp_auth(port, "127.0.0.200", BOB, "bob-secret")[0], 235)   # bob's own machine
        codes = []
        for a in range(20):
            with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.%d" % (100 + a), 0), timeout=30) as s:
                s.ehlo("client.test")
                for n in range(9):
                    codes.append(s.docmd("AUTH", "PLAIN " + plain(BOB, "guess-%d-%d" % (a, n)))[0])
        self.assertEqual(codes.count(535), 10)
        self.assertEqual(codes.count(454), 170)
        with self.assertLogs("mailsrv.auth", "INFO") as logs:
            code, text = smtp_auth(port, "127.0.0.121", BOB, "bob-secret")
        self.assertEqual(code, 454)
        self.assertIn("this account", text)
        self.assertIn("auth throttled user='bob@example.test'", "".join(logs.output))
        self.assertNotIn("bob-secret", "".join(logs.output))
        pop = LineClient(self.ports["pop3"], "127.0.0.122")
        self.assertTrue(pop.cmd("USER " + BOB).startswith("+OK"))
        self.assertTrue(pop.cmd("PASS bob-secret").startswith("-ERR [SYS/TEMP]"))
        pop.close()
        # the owner, from the address he logged in from, is not locked out by the attack
        self.assertEqual(smtp_auth(port, "127.0.0.200", BOB, "bob-secret")[0], 235)


class LockoutReplyTest(ServerTestCase):
    """Issue 8: a locked-out attempt is told so (454 4.7.0, -ERR [SYS/TEMP]) and
    logged as a lockout, in one line, without the password."""

    extra_config = {"auth_max_failures": "3"}

    def test_locked_out_smtp_and_pop3_get_a_temporary_refusal(self):
        src = "127.0.0.60"
        for _ in range(3):
            self.assertEqual(smtp_auth(self.ports["submission"], src, ALICE, "wrong-pw")[0], 535)
        with self.assertLogs("mailsrv.auth", "INFO") as logs:
            code, text = smtp_auth(self.ports["submission"], src, ALICE, "alice-secret")
            pop = LineClient(self.ports["pop3"], src)
            pop.cmd("USER " + ALICE)
            reply = pop.cmd("PASS alice-secret")
            pop.close()
        self.assertEqual(code, 454)
        self.assertTrue(text.startswith("4.7.0 Temporary authentication failure"), text)
        self.assertTrue(reply.startswith("-ERR [SYS/TEMP] Too many failed logins"), reply)
        lines = [r.getMessage() for r in logs.records]
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(all(line.startswith("auth lockout user=") for line in lines), lines)
        self.assertFalse(any("secret" in line or "wrong-pw" in line for line in lines), lines)
        # another address is not affected
        self.assertEqual(smtp_auth(self.ports["submission"], "127.0.0.61", ALICE, "alice-secret")[0], 235)

    def scram(self, source, password):
        """SMTP AUTH SCRAM-SHA-256: the replies to client-first and client-final."""
        client = ScramClient(ALICE, password)
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], source_address=(source, 0), timeout=30) as s:
            s.ehlo("client.test")
            code, first = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
            self.assertEqual(code, 334)
            code, final = s.docmd(base64.b64encode(client.final(base64.b64decode(first))).decode())
            if code == 334:
                self.assertTrue(client.verify(base64.b64decode(final)))
                return code, s.docmd("")[0]
            return code, None

    def test_scram_proof_is_not_confirmed_to_a_locked_out_address(self):
        """The SCRAM server signature (v=) would tell a guesser its proof was right:
        it goes out only after the lockout had its say."""
        self.assertEqual(self.scram("127.0.0.62", "alice-secret"), (334, 235))
        for _ in range(3):
            self.assertEqual(self.scram("127.0.0.63", "wrong"), (535, None))
        self.assertEqual(self.scram("127.0.0.63", "alice-secret"), (454, None))


if __name__ == "__main__":
    unittest.main()
