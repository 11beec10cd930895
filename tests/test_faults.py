"""The fault engine (protocols/faults.py) and the sessions' hooks, without sockets.

The engine: rules in and out (the FaultControl contract), validation naming
the key, the protocol inferred from the command, the replies per protocol,
``times``, ``when``, greylisting with an injected clock, tls_required, the
log line, and rules added from another thread while decisions are made.
The hooks: each session (SMTP, POP3, IMAP) driven by bytes over the fakes of
its own tests, with a Faults and a timer list standing in for the loop:
a delayed command holds the pipelined ones behind it, a dropped DATA stores
nothing, a refused BDAT still reads its chunk.
"""

import random
import threading
import unittest

from protocols.backend.contracts import FaultControl
from protocols.base import FaultView
from protocols.faults import Faults
from tests import imap_fake
from tests import test_pop3_session as pop3t
from tests import test_smtp_session as smtpt


def view(protocol="smtp", command="RCPT", ip="192.0.2.9", mail_from="", rcpt_to=(), user=None, tls=False,
         arguments=""):
    return FaultView(protocol, command, arguments, ip, mail_from, tuple(rcpt_to), user, tls)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RulesTest(unittest.TestCase):
    def setUp(self):
        self.faults = Faults()

    def decide(self, protocol="smtp", command="RCPT", **kw):
        return self.faults.decide(protocol, command, view(protocol, command, **kw))

    def test_satisfies_the_fault_control_contract(self):
        for name in ("rules", "add_rule", "remove_rule", "reset"):
            self.assertTrue(callable(getattr(self.faults, name)), name)
        self.assertTrue(hasattr(FaultControl, "add_rule"))

    def test_fail_twice_then_the_rule_is_gone(self):
        rule = self.faults.fail("RCPT", code=451, times=2)
        self.assertEqual((rule["protocol"], rule["command"], rule["action"], rule["times"], rule["hits"]),
                         ("smtp", "RCPT", "fail", 2, 0))
        self.assertEqual(self.decide().reply, b"451 4.3.0 Requested action aborted: local error in processing\r\n")
        self.assertEqual(self.faults.rules()[0]["hits"], 1)
        self.assertEqual(self.faults.rules()[0]["times"], 1)
        self.assertEqual(self.decide().kind, "fail")
        self.assertIsNone(self.decide())
        self.assertEqual(self.faults.rules(), [])

    def test_other_protocols_and_commands_are_untouched(self):
        self.faults.fail("RCPT")
        self.assertIsNone(self.decide(command="MAIL"))
        self.assertIsNone(self.decide("pop3", "RETR"))

    def test_rules_oldest_first_remove_and_reset(self):
        a = self.faults.fail("RCPT")
        b = self.faults.delay("DATA", seconds=2)
        c = self.faults.disconnect("RETR")
        self.assertEqual([r["id"] for r in self.faults.rules()], [a["id"], b["id"], c["id"]])
        self.assertTrue(self.faults.remove_rule(b["id"]))
        self.assertFalse(self.faults.remove_rule(b["id"]))
        self.assertFalse(self.faults.remove_rule("no-such-id"))
        self.assertEqual([r["id"] for r in self.faults.rules()], [a["id"], c["id"]])
        self.faults.reset()
        self.assertEqual(self.faults.rules(), [])
        self.assertFalse(self.faults.active)
        self.assertIsNone(self.decide())

    def test_the_first_matching_rule_wins(self):
        self.faults.fail("RCPT", code=550, times=1)
        self.faults.fail("RCPT", code=452)
        self.assertTrue(self.decide().reply.startswith(b"550 "))
        self.assertTrue(self.decide().reply.startswith(b"452 "))

    def test_add_rule_takes_the_dict_form_and_returns_it_with_an_id(self):
        rule = self.faults.add_rule({"action": "fail", "command": "fetch", "code": "BAD", "text": "nope"})
        self.assertEqual((rule["protocol"], rule["command"], rule["code"]), ("imap", "FETCH", "BAD"))
        self.assertTrue(rule["id"])
        self.assertEqual(self.decide("imap", "FETCH").reply, b"BAD nope\r\n")
        again = self.faults.add_rule(dict(self.faults.rules()[0], id="ignored", hits=7))
        self.assertNotEqual(again["id"], rule["id"])
        self.assertEqual(again["hits"], 0)


class ValidationTest(unittest.TestCase):
    def assertRefused(self, rule, *words):
        with self.assertRaises(ValueError) as cm:
            Faults().add_rule(rule)
        for word in words:
            self.assertIn(word, str(cm.exception))

    def test_each_bad_key_is_named(self):
        self.assertRefused({"action": "fail", "command": "RCPT", "colour": "red"}, "colour")
        self.assertRefused({"action": "explode", "command": "RCPT"}, "action", "explode")
        self.assertRefused({"action": "fail"}, "command")
        self.assertRefused({"action": "fail", "command": "FROB"}, "FROB")
        self.assertRefused({"action": "fail", "command": "RCPT", "protocol": "http"}, "protocol")
        self.assertRefused({"action": "fail", "command": "RCPT", "code": 250}, "code", "250")
        self.assertRefused({"action": "fail", "command": "RCPT", "code": "SYS/TEMP"}, "code")
        self.assertRefused({"action": "fail", "command": "RCPT", "times": 0}, "times")
        self.assertRefused({"action": "fail", "command": "RCPT", "times": "2"}, "times")
        self.assertRefused({"action": "fail", "command": "RCPT", "text": "a\r\n250 ok"}, "text")
        self.assertRefused({"action": "fail", "command": "RCPT", "when": "yes"}, "when")
        self.assertRefused({"action": "delay", "command": "DATA"}, "seconds")
        self.assertRefused({"action": "delay", "command": "DATA", "seconds": -1}, "seconds")
        self.assertRefused({"action": "delay", "command": "DATA", "seconds": 1, "code": 451}, "code")
        self.assertRefused({"action": "greylist", "protocol": "imap"}, "greylist")
        self.assertRefused("fail RCPT", "dict")

    def test_protocol_inferred_when_only_one_has_the_command(self):
        f = Faults()
        self.assertEqual(f.fail("rcpt")["protocol"], "smtp")
        self.assertEqual(f.fail("RETR")["protocol"], "pop3")
        self.assertEqual(f.fail("FETCH")["protocol"], "imap")
        self.assertEqual(f.fail("LOGIN")["protocol"], "imap")
        self.assertEqual(f.fail("AUTH", protocol="pop3")["protocol"], "pop3")
        self.assertEqual(f.fail("AUTHENTICATE")["protocol"], "imap")
        for ambiguous in ("AUTH", "NOOP", "QUIT", "LIST", "STARTTLS"):
            with self.assertRaises(ValueError) as cm:
                f.fail(ambiguous)
            self.assertIn("protocol=", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            f.fail("RETR", protocol="imap")
        self.assertIn("pop3", str(cm.exception))

    def test_login_means_every_way_to_log_in(self):
        f = Faults()
        f.fail("LOGIN", protocol="pop3")
        f.fail("LOGIN", protocol="smtp")
        f.fail("LOGIN")
        for protocol, command in (("pop3", "PASS"), ("pop3", "AUTH"), ("smtp", "AUTH"),
                                  ("imap", "LOGIN"), ("imap", "AUTHENTICATE")):
            self.assertIsNotNone(f.decide(protocol, command, view(protocol, command)), (protocol, command))
        self.assertIsNone(f.decide("pop3", "USER", view("pop3", "USER")))


class RepliesTest(unittest.TestCase):
    def reply(self, protocol, command, **kw):
        f = Faults()
        f.fail(command, protocol=protocol, **kw)
        return f.decide(protocol, command, view(protocol, command))

    def test_smtp(self):
        self.assertEqual(self.reply("smtp", "MAIL", code=550).reply,
                         b"550 5.3.0 Requested action not taken: mailbox unavailable\r\n")
        self.assertEqual(self.reply("smtp", "RCPT", code=550, text="5.1.1 no such user").reply,
                         b"550 5.1.1 no such user\r\n")
        self.assertEqual(self.reply("smtp", "RCPT", code=452, text="busy").reply, b"452 4.3.0 busy\r\n")
        self.assertEqual(self.reply("smtp", "AUTH").reply, b"454 4.7.0 Temporary authentication failure\r\n")
        self.assertEqual(self.reply("smtp", "AUTH", code=535).reply,
                         b"535 5.7.8 Authentication credentials invalid\r\n")
        closing = self.reply("smtp", "MAIL", code=421)
        self.assertTrue(closing.close)
        self.assertFalse(self.reply("smtp", "MAIL").close)

    def test_pop3(self):
        self.assertEqual(self.reply("pop3", "RETR").reply, b"-ERR [SYS/TEMP] Temporary failure, try again later\r\n")
        self.assertEqual(self.reply("pop3", "RETR", code=550).reply, b"-ERR [SYS/PERM] Permanent failure\r\n")
        self.assertEqual(self.reply("pop3", "PASS", code=535).reply, b"-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(self.reply("pop3", "RETR", code="in-use", text="locked").reply, b"-ERR [IN-USE] locked\r\n")

    def test_imap_replies_lack_only_the_tag(self):
        self.assertEqual(self.reply("imap", "FETCH").reply,
                         b"NO [UNAVAILABLE] Temporarily unavailable, try again later\r\n")
        self.assertEqual(self.reply("imap", "FETCH", code=550).reply, b"NO [CANNOT] Operation failed\r\n")
        self.assertEqual(self.reply("imap", "LOGIN", code=535).reply,
                         b"NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
        self.assertEqual(self.reply("imap", "SELECT", code="BAD").reply, b"BAD Command refused\r\n")
        self.assertEqual(self.reply("imap", "SELECT", code="alert", text="read this").reply,
                         b"NO [ALERT] read this\r\n")

    def test_delay_and_disconnect(self):
        f = Faults()
        f.delay("DATA", seconds=2.5, times=1)
        f.disconnect("DATA")
        first = f.decide("smtp", "DATA", view(command="DATA"))
        self.assertEqual((first.kind, first.seconds), ("delay", 2.5))
        self.assertEqual(f.decide("smtp", "DATA", view(command="DATA")).kind, "disconnect")


class WhenTest(unittest.TestCase):
    def test_when_sees_the_view(self):
        f = Faults()
        seen = []
        f.fail("MAIL", code=550, when=lambda env: seen.append(env) or env.mail_from.endswith("@spam.test"))
        self.assertIsNone(f.decide("smtp", "MAIL", view(command="MAIL", mail_from="a@ok.test")))
        self.assertIsNotNone(f.decide("smtp", "MAIL", view(command="MAIL", mail_from="b@spam.test")))
        self.assertEqual([v.mail_from for v in seen], ["a@ok.test", "b@spam.test"])
        self.assertEqual(seen[0].client_ip, "192.0.2.9")
        with self.assertRaises(Exception):
            seen[0].mail_from = "x"          # read-only
        self.assertEqual(f.rules()[0]["when"], "WhenTest.test_when_sees_the_view.<locals>.<lambda>")

    def test_a_when_that_raises_is_logged_and_does_not_fire(self):
        f = Faults()
        f.fail("RCPT", when=lambda env: 1 / 0)
        with self.assertLogs("mailsrv.faults", "WARNING") as logs:
            self.assertIsNone(f.decide("smtp", "RCPT", view()))
        self.assertIn("ZeroDivisionError", logs.output[0])

    def test_times_counts_only_the_firings(self):
        f = Faults()
        f.fail("RCPT", times=1, when=lambda env: env.rcpt_to[-1] == "b@x.test")
        self.assertIsNone(f.decide("smtp", "RCPT", view(rcpt_to=["a@x.test"])))
        self.assertIsNotNone(f.decide("smtp", "RCPT", view(rcpt_to=["b@x.test"])))
        self.assertIsNone(f.decide("smtp", "RCPT", view(rcpt_to=["b@x.test"])))


class GreylistTest(unittest.TestCase):
    def test_first_attempt_of_a_triple_is_refused_the_retry_accepted(self):
        clock = Clock()
        f = Faults(clock=clock)
        f.greylist()
        first = view(mail_from="a@x.test", rcpt_to=["b@y.test"])
        self.assertEqual(f.decide("smtp", "RCPT", first).reply, b"451 4.7.1 Greylisted, try again later\r\n")
        self.assertIsNone(f.decide("smtp", "RCPT", first))
        self.assertIsNone(f.decide("smtp", "RCPT", view(mail_from="A@X.test", rcpt_to=["B@y.test"])))
        # another recipient, sender or client address is a new triple
        self.assertIsNotNone(f.decide("smtp", "RCPT", view(mail_from="a@x.test", rcpt_to=["c@y.test"])))
        self.assertIsNotNone(f.decide("smtp", "RCPT", view(mail_from="z@x.test", rcpt_to=["b@y.test"])))
        self.assertIsNotNone(f.decide("smtp", "RCPT", view(ip="192.0.2.99", mail_from="a@x.test",
                                                            rcpt_to=["b@y.test"])))
        self.assertEqual(f.rules()[0]["hits"], 4)

    def test_a_retry_sooner_than_the_delay_is_refused_again(self):
        clock = Clock()
        f = Faults(clock=clock)
        f.greylist(seconds=300)
        v = view(mail_from="a@x.test", rcpt_to=["b@y.test"])
        self.assertIsNotNone(f.decide("smtp", "RCPT", v))
        clock.now += 299
        self.assertIsNotNone(f.decide("smtp", "RCPT", v))
        clock.now += 1
        self.assertIsNone(f.decide("smtp", "RCPT", v))


class TlsRequiredTest(unittest.TestCase):
    def test_each_protocol_until_tls(self):
        f = Faults()
        f.tls_required()
        smtp = f.decide("smtp", "MAIL", view(command="MAIL"))
        self.assertEqual(smtp.reply, b"530 5.7.0 Must issue a STARTTLS command first\r\n")
        for free in ("EHLO", "NOOP", "STARTTLS", "QUIT"):       # RFC 3207 §4
            self.assertIsNone(f.decide("smtp", free, view(command=free)), free)
        self.assertEqual(f.decide("pop3", "USER", view("pop3", "USER")).reply,
                         b"-ERR Must issue a STLS command first\r\n")
        self.assertIsNone(f.decide("pop3", "CAPA", view("pop3", "CAPA")))
        self.assertEqual(f.decide("imap", "LOGIN", view("imap", "LOGIN")).reply,
                         b"NO [PRIVACYREQUIRED] Must issue a STARTTLS command first\r\n")
        for protocol, command in (("smtp", "MAIL"), ("pop3", "USER"), ("imap", "AUTHENTICATE")):
            self.assertIsNone(f.decide(protocol, command, view(protocol, command, tls=True)))

    def test_one_protocol(self):
        f = Faults()
        f.tls_required(protocol="imap")
        self.assertIsNone(f.decide("smtp", "MAIL", view(command="MAIL")))
        self.assertIsNotNone(f.decide("imap", "LOGIN", view("imap", "LOGIN")))


class LogTest(unittest.TestCase):
    def test_one_line_per_fault_naming_protocol_command_action_client_and_never_arguments(self):
        f = Faults()
        f.fail("PASS", code=535)
        f.delay("RETR", seconds=1)
        with self.assertLogs("mailsrv.faults", "INFO") as logs:
            f.decide("pop3", "PASS", view("pop3", "PASS", arguments="hunter2"))
            f.decide("pop3", "RETR", view("pop3", "RETR", arguments="1"))
            f.decide("pop3", "STAT", view("pop3", "STAT"))
        self.assertEqual(len(logs.output), 2)
        self.assertIn("fault pop3 PASS fail -ERR [AUTH] Authentication failed client=192.0.2.9", logs.output[0])
        self.assertIn("fault pop3 RETR delay 1s client=192.0.2.9", logs.output[1])
        self.assertNotIn("hunter2", "".join(logs.output))


class ThreadsTest(unittest.TestCase):
    def test_rules_added_from_another_thread_while_the_loop_decides_are_never_lost(self):
        """The loop thread decides (and counts down ``times``) while a test
        thread adds rules: each rule fires exactly once, none is lost."""
        f = Faults()
        count = 300
        adder = threading.Thread(target=lambda: [f.fail("RETR", times=1) for _ in range(count)])
        fired = 0
        v = view("pop3", "RETR")
        adder.start()
        while adder.is_alive() or f.rules():
            if f.decide("pop3", "RETR", v) is not None:
                fired += 1
        adder.join()
        self.assertEqual(fired, count)
        self.assertEqual(f.rules(), [])


# -- the sessions' hooks, sans-I/O -------------------------------------------------------

def with_faults(backend):
    """A fake backend with the Backend's fault methods; delays wait in ``timers``."""
    backend.faults = Faults()
    backend.fault = backend.faults.decide
    backend.timers = []
    backend.fault_delay = lambda seconds, done: backend.timers.append((seconds, done))
    return backend


def fire(backend):
    timers, backend.timers = backend.timers, []
    for _seconds, done in timers:
        done(None)


class NoRulesTest(unittest.TestCase):
    def test_without_rules_the_backend_is_never_asked(self):
        backend = with_faults(smtpt.FakeBackend())

        def asked(*args):
            raise AssertionError("fault() called without rules")
        backend.fault = asked
        s, _ = smtpt.new_session(backend=backend)
        lines = smtpt.send(s, "EHLO c", "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           "DATA", "Subject: x", "", "hi", ".", "QUIT")
        self.assertEqual(smtpt.codes(lines)[1:], [250, 250, 250, 354, 250, 221])

    def test_a_backend_without_faults_works_as_before(self):
        s, b = smtpt.new_session()
        self.assertFalse(hasattr(b, "faults"))
        self.assertEqual(smtpt.codes(smtpt.send(s, "EHLO c", "MAIL FROM:<a@remote.example>"))[1:], [250, 250])


class SmtpHookTest(unittest.TestCase):
    def session(self):
        backend = with_faults(smtpt.FakeBackend())
        s, _ = smtpt.new_session(backend=backend)
        smtpt.send(s, "EHLO client.example")
        return s, backend

    def test_delay_holds_pipelined_commands_and_answers_them_in_order(self):
        s, b = self.session()
        b.faults.delay("RCPT", seconds=3, times=1)
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           "RCPT TO:<bob@example.org>", "DATA")
        self.assertEqual(smtpt.codes(lines), [250])
        self.assertEqual([t[0] for t in b.timers], [3.0])
        fire(b)
        self.assertEqual(smtpt.codes(smtpt.replies(s)), [250, 250, 354])
        self.assertEqual(s.ctx.wakes, 1)

    def test_fail_rcpt_then_success(self):
        s, b = self.session()
        b.faults.fail("RCPT", code=451, times=1)
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           "RCPT TO:<alice@example.org>")
        self.assertEqual(lines[1], "451 4.3.0 Requested action aborted: local error in processing")
        self.assertEqual(smtpt.codes(lines), [250, 451, 250])

    def test_greylisted_rcpt_sees_the_address_it_names(self):
        s, b = self.session()
        b.faults.greylist()
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           "RCPT TO:<bob@example.org>", "RCPT TO:<alice@example.org>")
        self.assertEqual(smtpt.codes(lines), [250, 451, 451, 250])

    def test_disconnect_data_reads_the_message_then_drops_without_reply_or_storing(self):
        s, b = self.session()
        b.faults.disconnect("DATA")
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>", "DATA")
        self.assertEqual(smtpt.codes(lines), [250, 250, 354])
        self.assertFalse(s.closed)
        self.assertEqual(smtpt.send(s, "Subject: x", "", "body"), [])
        self.assertFalse(s.closed)
        self.assertEqual(smtpt.send(s, "."), [])
        self.assertTrue(s.closed)
        self.assertEqual(b.deliveries, [])
        self.assertEqual(b.sinks[0].state, "aborted")

    def test_disconnect_bdat_drops_at_last(self):
        s, b = self.session()
        b.faults.disconnect("BDAT", times=1)
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           b"BDAT 4\r\nab\r\nBDAT 4 LAST\r\nhi\r\n")
        self.assertEqual(smtpt.codes(lines), [250, 250, 250])
        self.assertTrue(s.closed)
        self.assertEqual(b.deliveries, [])

    def test_fail_bdat_still_reads_the_chunk(self):
        s, b = self.session()
        b.faults.fail("BDAT", code=452, times=1)
        lines = smtpt.send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.org>",
                           b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
        # the chunk (two NOOP lines) is read, not run; the third NOOP is a command
        self.assertEqual(smtpt.codes(lines), [250, 250, 452, 250])
        self.assertTrue(lines[2].startswith("452 4.3.0 "), lines[2])
        self.assertEqual(smtpt.codes(smtpt.send(s, "RCPT TO:<alice@example.org>")), [503])

    def test_421_closes(self):
        s, b = self.session()
        b.faults.fail("MAIL", code=421)
        self.assertEqual(smtpt.codes(smtpt.send(s, "MAIL FROM:<a@remote.example>", "NOOP")), [421])
        self.assertTrue(s.closed)

    def test_disconnect_other_command_closes_at_once(self):
        s, b = self.session()
        b.faults.disconnect("MAIL")
        self.assertEqual(smtpt.send(s, "MAIL FROM:<a@remote.example>"), [])
        self.assertTrue(s.closed)

    def test_mail_view_has_the_sender_it_names(self):
        s, b = self.session()
        b.faults.fail("MAIL", code=550, when=lambda env: env.mail_from == "spam@bad.test" and not env.tls)
        self.assertEqual(smtpt.codes(smtpt.send(s, "MAIL FROM:<spam@bad.test>", "MAIL FROM:<ok@good.test>")),
                         [550, 250])


class Pop3HookTest(unittest.TestCase):
    def test_delay_retr_holds_stat_behind_it(self):
        maildrop = pop3t.FakeMaildrop([b"Subject: one\r\n\r\nbody\r\n"])
        backend = with_faults(pop3t.FakeBackend(maildrop))
        s, _ = pop3t.make_session(backend=backend, peer=pop3t.LOCAL)
        pop3t.drain(s)
        pop3t.login(s)
        backend.faults.delay("RETR", seconds=1)
        s.receive_data(b"RETR 1\r\nSTAT\r\n")
        self.assertEqual(pop3t.drain(s), b"")
        fire(backend)
        out = pop3t.drain(s)
        self.assertTrue(out.startswith(b"+OK"), out)
        self.assertIn(b"Subject: one", out)
        self.assertTrue(out.endswith(b".\r\n+OK 1 %d\r\n" % len(b"Subject: one\r\n\r\nbody\r\n")), out)

    def test_fail_and_disconnect(self):
        backend = with_faults(pop3t.FakeBackend(pop3t.FakeMaildrop([b"a\r\n"])))
        s, _ = pop3t.make_session(backend=backend, peer=pop3t.LOCAL)
        pop3t.drain(s)
        pop3t.login(s)
        backend.faults.fail("RETR", times=1)
        backend.faults.disconnect("DELE")
        s.receive_data(b"RETR 1\r\n")
        self.assertEqual(pop3t.drain(s), b"-ERR [SYS/TEMP] Temporary failure, try again later\r\n")
        s.receive_data(b"DELE 1\r\n")
        self.assertEqual(pop3t.drain(s), b"")
        self.assertTrue(s.closed)


class ImapHookTest(unittest.TestCase):
    def session(self):
        backend = with_faults(imap_fake.FakeImapBackend())
        backend.deliver("fred", b"Subject: hello\r\n\r\nbody\r\n")
        s, _ = imap_fake.make_session(backend)
        imap_fake.login(s)
        imap_fake.feed(s, b"S SELECT INBOX\r\n")
        return s, backend

    def test_fail_fetch_is_a_tagged_no(self):
        s, b = self.session()
        b.faults.fail("FETCH", times=1)
        out = imap_fake.feed(s, b"F1 FETCH 1 FLAGS\r\nF2 UID FETCH 1 FLAGS\r\n")
        self.assertIn(b"F1 NO [UNAVAILABLE] Temporarily unavailable, try again later\r\n", out)
        self.assertIn(b"F2 OK", out)

    def test_delay_holds_the_next_command(self):
        s, b = self.session()
        b.faults.delay("FETCH", seconds=2)
        out = imap_fake.feed(s, b"F1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\nN1 NOOP\r\n")
        self.assertEqual(out, b"")
        fire(b)
        out = imap_fake.drain(s)
        self.assertLess(out.index(b"F1 OK"), out.index(b"N1 OK"), out)
        self.assertIn(b"Subject: hello", out)

    def test_disconnect(self):
        s, b = self.session()
        b.faults.disconnect("FETCH")
        self.assertEqual(imap_fake.feed(s, b"F1 FETCH 1 FLAGS\r\n"), b"")
        self.assertTrue(s.closed)

    def test_login_refused_until_tls(self):
        backend = with_faults(imap_fake.FakeImapBackend())
        backend.faults.tls_required()
        s, _ = imap_fake.make_session(backend)
        out = imap_fake.feed(s, b"L1 LOGIN fred secret\r\n")
        self.assertEqual(out, b"L1 NO [PRIVACYREQUIRED] Must issue a STARTTLS command first\r\n")
        s, _ = imap_fake.make_session(backend, tls_active=True)
        imap_fake.login(s)


class FuzzWithFaultsTest(unittest.TestCase):
    """test_smtp_fuzz's corpus and mutations with a rule of every kind in force
    (delays fired at once): no exception escapes, every line is a reply."""

    def test_smtp_commands_under_every_kind_of_fault(self):
        from tests.test_smtp_fuzz import CORPUS, LINE_RE, mutate
        rng = random.Random(3030)
        for _ in range(300):
            backend = with_faults(smtpt.FakeBackend())
            f = backend.faults
            rules = [lambda: f.greylist(), lambda: f.fail("RCPT", times=1), lambda: f.delay("DATA", seconds=1),
                     lambda: f.disconnect("BDAT", times=1), lambda: f.fail("BDAT", code=452, times=1),
                     lambda: f.fail("MAIL", code=421, when=lambda env: "a" in env.mail_from),
                     lambda: f.delay("RCPT", seconds=1, times=2), lambda: f.disconnect("DATA"),
                     lambda: f.tls_required(protocol="smtp", when=lambda env: env.command == "VRFY")]
            for add in rng.sample(rules, rng.randint(1, len(rules))):
                add()
            s, _ = smtpt.new_session(backend=backend)
            for _ in range(10):
                line = rng.choice(CORPUS)
                if rng.random() < 0.3:
                    line = mutate(rng, line)
                s.receive_data(line + b"\r\n")
                fire(backend)
                out = s.data_to_send()
                for reply in out.split(b"\r\n")[:-1]:
                    self.assertRegex(reply, LINE_RE)
                if s.closed:
                    break


if __name__ == "__main__":
    unittest.main()
