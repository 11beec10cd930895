"""One contract, two implementations: the backend services the sessions talk to
(protocols/backend/contracts.py) checked the same way against the fakes the
session tests use (tests/test_smtp_session.py, tests/test_pop3_session.py)
and against the real services of a running server (protocols/backend/).

So a session tested against a fake is tested against what the real store
does (issue 9, section 2: "the fakes in the tests and the real objects honour one
contract, checked by one contract test run against both").  Each check runs
on every implementation that offers the service; what an implementation
must prepare (a user, a message, a locked mailbox) is its harness's job.
"""

from __future__ import annotations

import inspect
import re
import shutil
import tempfile
import threading
import unittest
from typing import Callable, List

from mailsrv import Config, MailServer
from protocols import sasl
from protocols.backend import contracts
from protocols.backend.contracts import MailboxInUse
from protocols.base import SessionContext, new_id
from protocols.smtp.address import Address
from protocols.smtp.state import Envelope, RcptDecision
from tests import test_pop3_session, test_smtp_session

TIMEOUT = 20.0
SERVICES = {
    "auth": contracts.AuthService,
    "policy": contracts.PolicyService,
    "delivery": contracts.DeliveryService,
    "mail": contracts.MailAccess,
}


def crlf_size(raw: bytes) -> int:
    """RFC 1939 §11: the octets of a message in CRLF form."""
    return len(re.sub(rb"(?<!\r)\n", b"\r\n", raw))


class Harness:
    """What a contract check needs from one implementation."""

    services: set = set()
    user = password = ""
    local_domain = ""
    own_sender = foreign_sender = ""

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` where the implementation runs its callbacks; its result."""
        return fn()

    def run(self, start: Callable[[Callable], None]) -> List[object]:
        """``start(done)``; every value ``done`` got, once the first has come."""
        got: List[object] = []
        start(got.append)
        return got

    def lock_mailbox(self, user: str) -> None: ...

    def unlock_mailbox(self) -> None: ...


class FakeSmtpHarness(Harness):
    services = {"auth", "policy", "delivery"}
    local_domain = "example.org"
    own_sender = "alice@example.org"
    foreign_sender = "spammer@bad.example"

    def __init__(self):
        self.backend = test_smtp_session.FakeBackend()
        self.user, self.password = next(iter(test_smtp_session.USERS.items()))


class FakePop3Harness(Harness):
    services = {"auth", "mail"}

    def __init__(self):
        self.maildrop = test_pop3_session.FakeMaildrop([b"Subject: x\n\nhello\n"])
        self.backend = test_pop3_session.FakeBackend(self.maildrop)
        self.user, self.password = "mrose", "tanstaaf"

    def lock_mailbox(self, user):
        self.backend.open_error = MailboxInUse("held by another session")

    def unlock_mailbox(self):
        self.backend.open_error = None


class RealHarness(Harness):
    """A MailServer with no listeners: its Backend, called on its loop thread."""

    services = {"auth", "policy", "delivery", "mail"}
    local_domain = "example.test"
    user, password = "alice@example.test", "alice-secret"
    own_sender, foreign_sender = "alice@example.test", "bob@example.test"

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-contract-")
        values = {k: "off" for k in ("smtp_port", "submission_port", "smtps_port", "pop3_port",
                                      "pop3s_port", "imap_port", "imaps_port")}
        values.update(data_dir=self.tmp, hostname="mx.example.test", domains="example.test",
                      log_level="CRITICAL", auth_failure_delay="0.01", trusted_networks="none",
                      dns_servers="127.0.0.1:9")
        self.server = MailServer(Config(values))
        self.server.add_user(self.user, self.password)
        self.server.add_user("bob@example.test", "bob-secret")
        self.server.start()
        self.backend = self.server.backend
        self.held = None

    def close(self):
        self.unlock_mailbox()
        self.server.stop(grace=1)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def call(self, fn):
        box, ready = [], threading.Event()
        self.server.loop.call_soon_threadsafe(lambda: (box.append(fn()), ready.set()))
        assert ready.wait(TIMEOUT), "the loop did not run the call"
        return box[0]

    def run(self, start):
        got: List[object] = []
        first = threading.Event()

        def done(value):
            got.append(value)
            first.set()
        self.server.loop.call_soon_threadsafe(lambda: start(done))
        assert first.wait(TIMEOUT), "done was never called"
        self.call(lambda: None)     # one more loop round: a second done would be here by now
        return got

    def lock_mailbox(self, user):
        self.held = self.run(lambda done: self.backend.open_maildrop(ctx(), user, done))[0]
        assert not isinstance(self.held, BaseException), self.held

    def unlock_mailbox(self):
        if self.held is not None:
            held, self.held = self.held, None
            self.run(lambda done: held.close(done))


_peers = iter(range(1, 250))


def ctx(listener: str = "smtp") -> SessionContext:
    """A fresh peer address per call: failure counters never carry over."""
    return SessionContext(peer=("192.0.2.%d" % next(_peers), 40000), listener=listener)


class ContractChecks:
    """The checks; subclasses say which harness."""

    harness: Harness

    def need(self, service):
        if service not in self.harness.services:
            self.skipTest("%s offers no %s service" % (type(self.harness).__name__, service))

    def test_methods_match_the_contracts(self):
        for service in self.harness.services:
            proto = SERVICES[service]
            for name, fn in inspect.getmembers(proto, inspect.isfunction):
                if name.startswith("_"):
                    continue
                impl = getattr(self.harness.backend, name, None)
                self.assertTrue(callable(impl), "%s lacks %s.%s" % (type(self.harness.backend).__name__, service, name))
                want = len(inspect.signature(fn).parameters) - 1      # without self
                self.assertEqual(len(inspect.signature(impl).parameters), want, name)

    # -- auth -------------------------------------------------------------
    def test_scram_lookup_answers_for_every_name_and_stably_for_unknown_ones(self):
        self.need("auth")
        h = self.harness
        for name in (h.user, "nobody-%s" % new_id(3)):
            creds = h.call(lambda: h.backend.scram_lookup(name))
            self.assertIsInstance(creds.salt, bytes)
            self.assertIsInstance(creds.iterations, int)
            self.assertGreaterEqual(creds.iterations, 4096)     # RFC 7677 §4
            self.assertEqual((len(creds.stored_key), len(creds.server_key)), (32, 32))
        again = h.call(lambda: h.backend.scram_lookup(name))
        self.assertEqual((again.salt, again.iterations), (creds.salt, creds.iterations))  # RFC 5802 §9

    def authenticate(self, outcome):
        h = self.harness
        return h.run(lambda done: h.backend.authenticate(ctx(), outcome, done))

    def test_authenticate_calls_done_once_with_the_user_or_none(self):
        self.need("auth")
        h = self.harness
        good = self.authenticate(sasl.SaslOutcome("PLAIN", h.user, "", password=h.password))
        self.assertEqual(good, [h.user])
        bad = self.authenticate(sasl.SaslOutcome("PLAIN", h.user, "", password="wrong"))
        self.assertEqual(bad, [None])
        scram = self.authenticate(sasl.SaslOutcome("SCRAM-SHA-256", h.user, "", scram_verified=True))
        self.assertEqual(scram, [h.user])

    # -- policy -----------------------------------------------------------
    def test_sender_policy_answers_none_or_a_reply(self):
        self.need("policy")
        h = self.harness
        self.assertIsNone(h.call(lambda: h.backend.check_sender(ctx(), h.user, h.own_sender)))
        refusal = h.call(lambda: h.backend.check_sender(ctx(), h.user, h.foreign_sender))
        self.assert_reply(refusal, 5)

    def assert_reply(self, reply, klass):
        self.assertIsInstance(reply, tuple)
        code, enhanced, text = reply
        self.assertEqual((code // 100, type(enhanced), type(text)), (klass, str, str))
        self.assertTrue(enhanced.startswith("%d." % klass), enhanced)

    def test_recipient_policy_answers_a_decision(self):
        self.need("policy")
        h = self.harness
        local, _, domain = h.user.partition("@")
        cases = ((Address(local, domain), None, True),
                 (Address("nobody-" + new_id(3).lower(), h.local_domain), None, False),
                 (Address("someone", "remote.example"), None, False),
                 (Address("someone", "remote.example"), h.user, True))
        for address, auth_user, ok in cases:
            decision = h.call(lambda: h.backend.check_recipient(ctx(), auth_user, address))
            self.assertIsInstance(decision, RcptDecision)
            self.assertIs(decision.ok, ok, address)
            if not ok:
                self.assert_reply(decision.reply, 5)

    def test_may_relay_is_a_bool(self):
        self.need("policy")
        h = self.harness
        self.assertIs(h.call(lambda: h.backend.may_relay(ctx(), h.user)), True)
        self.assertIs(h.call(lambda: h.backend.may_relay(ctx(), None)), False)

    # -- delivery ---------------------------------------------------------
    def envelope(self):
        h = self.harness
        local, _, domain = h.user.partition("@")
        decision = h.call(lambda: h.backend.check_recipient(ctx(), None, Address(local, domain)))
        return Envelope(mail_from="sender@remote.example", rcpt_to=[h.user], targets=[decision.target],
                        body="7BIT", smtputf8=False, helo="client.example", peer_ip="192.0.2.1",
                        auth_user=None, tls=False, listener="smtp", queue_id=new_id())

    def test_message_sink_finish_answers_250_once(self):
        self.need("delivery")
        h, env = self.harness, self.envelope()
        sink = h.call(lambda: h.backend.open_message(env))
        self.assertFalse(isinstance(sink, tuple), sink)
        h.call(lambda: sink.write(b"Subject: contract\r\n\r\nbody\r\n"))
        replies = h.run(lambda done: sink.finish(env, done))
        self.assertEqual(len(replies), 1)
        self.assert_reply(replies[0], 2)

    def test_message_sink_abort_delivers_nothing(self):
        self.need("delivery")
        h, env = self.harness, self.envelope()
        sink = h.call(lambda: h.backend.open_message(env))
        h.call(lambda: sink.write(b"Subject: dropped\r\n\r\n"))
        self.assertIsNone(h.call(sink.abort))

    # -- mail access ------------------------------------------------------
    def open_maildrop(self):
        h = self.harness
        got = h.run(lambda done: h.backend.open_maildrop(ctx("pop3"), h.user, done))
        self.assertEqual(len(got), 1)
        return got[0]

    def test_maildrop_follows_the_contract(self):
        self.need("mail")
        h = self.harness
        if "delivery" in h.services:       # a message to read, through the delivery contract
            self.test_message_sink_finish_answers_250_once()
        maildrop = self.open_maildrop()
        self.assertNotIsInstance(maildrop, BaseException)
        try:
            self.assertGreaterEqual(len(maildrop.messages), 1)
            for m in maildrop.messages:
                self.assertIsInstance(m.uid, str)
                self.assertIsInstance(m.size, int)
            [reader] = h.run(lambda done: maildrop.open_message(0, done))
            self.assertNotIsInstance(reader, BaseException)
            raw = b""
            while True:             # one read at a time, b"" at the end
                [chunk] = h.run(lambda done: reader.read(7, done))
                self.assertIsInstance(chunk, bytes)
                self.assertLessEqual(len(chunk), 7)
                if not chunk:
                    break
                raw += chunk
            h.call(reader.close)
            self.assertEqual(crlf_size(raw), maildrop.messages[0].size)   # RFC 1939 §11
            self.assertEqual(h.run(lambda done: maildrop.mark_seen(0, done)), [None])
            # None, not a list
            self.assertEqual(h.run(lambda done: maildrop.commit_deletes([0], done)), [None])
        finally:
            self.assertEqual(h.run(lambda done: maildrop.close(done)), [None])
            self.assertEqual(h.run(lambda done: maildrop.close(done)), [None])    # twice is safe

    def test_a_held_mailbox_is_mailbox_in_use(self):
        """RFC 1939 §4: the contract's MailboxInUse, never a store class."""
        self.need("mail")
        h = self.harness
        h.lock_mailbox(h.user)
        try:
            got = self.open_maildrop()
        finally:
            h.unlock_mailbox()
        self.assertIsInstance(got, MailboxInUse)
        again = self.open_maildrop()
        self.assertNotIsInstance(again, BaseException)
        h.run(lambda done: again.close(done))


class FakeSmtpBackendContract(ContractChecks, unittest.TestCase):
    def setUp(self):
        self.harness = FakeSmtpHarness()


class FakePop3BackendContract(ContractChecks, unittest.TestCase):
    def setUp(self):
        self.harness = FakePop3Harness()


class RealBackendContract(ContractChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.real = RealHarness()

    @classmethod
    def tearDownClass(cls):
        cls.real.close()

    def setUp(self):
        self.harness = self.real


if __name__ == "__main__":
    unittest.main()
