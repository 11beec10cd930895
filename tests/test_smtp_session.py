"""SmtpSession driven directly (no sockets) with an in-memory fake backend.

The fake backend (also used by test_smtp_transcripts and test_smtp_fuzz)
holds users in memory, records deliveries, can fail deliveries with 452 and
can call ``done`` at once or later, on demand.
"""

import base64
import logging
import re
import time
import unittest

from protocols import sasl
from protocols.base import SessionContext
from protocols.smtp import data as smtp_data
from protocols.smtp.server import RcptDecision, SmtpConfig, SmtpSession, State

HOST = "mx.example.org"
CLOCK = 1700000000.0        # Tue, 14 Nov 2023 22:13:20 +0000
USERS = {"alice@example.org": "alice-secret", "bob@example.org": "bob-secret"}
REPLY_RE = re.compile(rb"^[2-5]\d\d[ -]")
# Auth-failure warnings are asserted with assertLogs; keep them off stderr.
logging.getLogger("mailsrv.smtp").addHandler(logging.NullHandler())


_CREDS = {}


def _scram_creds(password):
    """SCRAM keys per password, computed once (PBKDF2 is slow on purpose)."""
    if password not in _CREDS:
        _CREDS[password] = sasl.make_scram_credentials(password, salt=b"s" * 16)
    return _CREDS[password]


class FakeBackend:
    """In-memory users and delivery; ``sync=False`` defers every ``done``."""

    def __init__(self, sync=True, local_domains=("example.org", HOST), users=None):
        self.sync = sync
        self.local_domains = local_domains
        self.users = dict(users or USERS)
        self.creds = {u: _scram_creds(p) for u, p in self.users.items()}
        self.fake_creds = _scram_creds("x" * 20)
        self.deliveries = []            # (envelope, data)
        self.pending = []               # deferred done calls
        self.fail_delivery = False      # answer 452 4.3.1
        self.refuse_open = None         # a reply: open_message refuses (budget spent)
        self.sinks = []
        self.refused_senders = {"spammer@bad.example"}
        self.auth_outcomes = []

    def _call(self, done, value):
        if self.sync:
            done(value)
        else:
            self.pending.append(lambda: done(value))

    def release(self):
        """Run every deferred ``done`` (what the loop does later)."""
        pending, self.pending = self.pending, []
        for fn in pending:
            fn()

    def scram_lookup(self, name):
        return self.creds.get(name, self.fake_creds)

    def authenticate(self, ctx, outcome, done):
        self.auth_outcomes.append(outcome)
        if outcome.mechanism == "SCRAM-SHA-256":
            ok = bool(outcome.scram_verified) and outcome.authcid in self.users
        else:
            ok = self.users.get(outcome.authcid) == outcome.password
        self._call(done, outcome.authcid if ok else None)

    def check_sender(self, ctx, auth_user, address):
        if address in self.refused_senders:
            return (550, "5.7.1", "Sender refused")
        return None

    def may_relay(self, ctx, auth_user):
        return auth_user is not None

    def check_spf(self, ctx, helo, mail_from, done):      # spf_check = header (test_spf_smtp overrides)
        from protocols.spf import SpfResult
        self._call(done, SpfResult("none", mail_from.rpartition("@")[2], identity="mailfrom", sender=mail_from))

    def check_spf_helo(self, ctx, helo, done):
        from protocols.spf import SpfResult
        self._call(done, SpfResult("none", helo, identity="helo", helo=helo))

    def check_recipient(self, ctx, auth_user, address):
        if address.domain.lower() in self.local_domains:
            if address.text.lower() in self.users or address.local.lower() == "postmaster" \
                    or address.local.startswith("any"):
                return RcptDecision(True, target=address.text.lower())
            return RcptDecision(False, (550, "5.1.1", "No such user"))
        if self.may_relay(ctx, auth_user):
            return RcptDecision(True, target=("remote", address.text))
        return RcptDecision(False, (550, "5.7.1", "Relaying denied"))

    def open_message(self, envelope):
        if self.refuse_open is not None:
            return self.refuse_open
        sink = FakeSink(self)
        self.sinks.append(sink)
        return sink


class FakeSink:
    """The MessageSink contract (protocols/smtp/state.py) in memory; it
    records how the session used it so tests can hold it to the contract."""

    def __init__(self, backend):
        self.backend = backend
        self.data = bytearray()
        self.largest_write = 0
        self.state = "open"             # open -> finished | aborted

    def write(self, data):
        assert self.state == "open", "write after %s" % self.state
        self.largest_write = max(self.largest_write, len(data))
        self.data += data

    def abort(self):
        assert self.state == "open", "abort after %s" % self.state
        self.state = "aborted"

    def finish(self, envelope, done):
        assert self.state == "open", "finish after %s" % self.state
        self.state = "finished"
        b = self.backend
        if b.fail_delivery:
            b._call(done, (452, "4.3.1", "Insufficient system storage"))
            return
        b.deliveries.append((envelope, bytes(self.data)))
        b._call(done, (250, "2.0.0", "Ok: queued as " + envelope.queue_id))


def new_session(backend=None, peer="192.0.2.10", tls_available=True, **config):
    backend = backend or FakeBackend()
    ctx = SessionContext(peer=(peer, 40000), local=("192.0.2.1", 25), tls_available=tls_available,
                         clock=lambda: CLOCK)
    ctx.wakes = 0

    def wake():
        ctx.wakes += 1
    ctx.wake = wake
    config.setdefault("hostname", HOST)
    session = SmtpSession(ctx, SmtpConfig(**config), backend)
    return session, backend


def replies(session):
    """The output so far, as a list of reply lines (each checked for shape)."""
    out = session.data_to_send()
    assert out == b"" or out.endswith(b"\r\n"), out
    lines = out.split(b"\r\n")[:-1]
    for line in lines:
        assert REPLY_RE.match(line), line
    return [line.decode("utf-8") for line in lines]


def send(session, *lines):
    session.receive_data(b"".join(l if isinstance(l, bytes) else l.encode() + b"\r\n" for l in lines))
    return replies(session)


def codes(lines):
    return [int(l[:3]) for l in lines if l[3:4] == " "]


def ready_session(**kw):
    """A session after EHLO (greeting and EHLO replies consumed)."""
    s, b = new_session(**kw)
    send(s, "EHLO client.example")
    return s, b


def in_rcpt(**kw):
    s, b = ready_session(**kw)
    assert codes(send(s, "MAIL FROM:<sender@remote.example>", "RCPT TO:<alice@example.org>")) == [250, 250]
    return s, b


class GreetingAndEhloTest(unittest.TestCase):
    def test_greeting_has_no_enhanced_code(self):
        s, _ = new_session()
        self.assertEqual(replies(s), ["220 %s ESMTP mailsrv" % HOST])

    def test_ehlo_keywords(self):
        s, _ = new_session()
        replies(s)
        lines = send(s, "EHLO client.example")
        keywords = [l[4:] for l in lines[1:]]
        for kw in ("PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                   "CHUNKING", "STARTTLS", "AUTH SCRAM-SHA-256", "HELP"):
            self.assertIn(kw, keywords)
        self.assertTrue(all(l.startswith("250-") for l in lines[:-1]))
        self.assertTrue(lines[-1].startswith("250 "))

    def test_plaintext_mechanisms_only_where_allowed(self):
        s, _ = ready_session(peer="127.0.0.1")
        self.assertIn("250-AUTH PLAIN LOGIN SCRAM-SHA-256", send(s, "EHLO c"))
        s, _ = ready_session(allow_plaintext_auth=True)
        self.assertIn("250-AUTH PLAIN LOGIN SCRAM-SHA-256", send(s, "EHLO c"))
        s, _ = ready_session(peer="127.0.0.1", plaintext_auth_loopback=False)
        self.assertIn("250-AUTH SCRAM-SHA-256", send(s, "EHLO c"))

    def test_no_starttls_without_certificate_or_inside_tls(self):
        s, _ = ready_session(tls_available=False)
        self.assertNotIn("250-STARTTLS", send(s, "EHLO c"))
        self.assertEqual(send(s, "STARTTLS"), ["454 4.7.0 TLS not available due to temporary reason"])

    def test_ehlo_without_argument(self):
        s, _ = new_session()
        replies(s)
        self.assertEqual(codes(send(s, "EHLO", "HELO")), [501, 501])

    def test_helo_is_plain_smtp_without_parameters(self):
        s, b = new_session()
        replies(s)
        self.assertEqual(send(s, "HELO client.example"), ["250 " + HOST])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@remote.example> SIZE=10")), [555])
        send(s, "MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org>", "DATA", "x", ".")
        self.assertIn(b"with SMTP id", b.deliveries[0][1])


class EnhancedStatusCodeTest(unittest.TestCase):
    def test_every_2xx_4xx_5xx_reply_carries_a_matching_enhanced_code(self):
        # RFC 2034 §4: all 2xx/4xx/5xx lines except the greeting and the
        # HELO/EHLO answers; the class digit agrees with the reply code.
        s, b = new_session(peer="127.0.0.1", max_recipients=1)
        replies(s)
        send(s, "EHLO client.example")
        out = send(s, "NOOP", "HELP", "VRFY x", "FOO", "RCPT TO:<a@b.example>",
                   "MAIL FROM:<a@client.example> SIZE=999999999999", "MAIL FROM:<bad", "MAIL FROM:<a@r.example>",
                   "RCPT TO:<nobody@example.org>", "RCPT TO:<alice@example.org>", "RCPT TO:<bob@example.org>",
                   "DATA", "x", ".", "AUTH PLAIN =", "AUTH LOGIN", "*", "STARTTLS x", "EXPN x", "RSET",
                   "MAIL FROM:<a@r.example>", "RCPT TO:<bob@example.org>", b"BDAT 1 LAST\r\n\n", "QUIT")
        for line in out:
            if line[:3] in ("354", "334"):
                continue
            self.assertRegex(line, r"^([245])\d\d [245]\.\d{1,3}\.\d{1,3} ", line)
            self.assertEqual(line[0], line[4], line)


class SequenceTest(unittest.TestCase):
    def test_commands_before_ehlo(self):
        s, _ = new_session()
        replies(s)
        self.assertEqual(send(s, "MAIL FROM:<a@b.example>"), ["503 5.5.1 Send EHLO/HELO first"])
        self.assertEqual(codes(send(s, "RCPT TO:<a@b.example>", "DATA", "AUTH PLAIN", "STARTTLS")),
                         [503] * 4)
        self.assertEqual(codes(send(s, "NOOP", "RSET", "VRFY x", "HELP")), [250, 250, 252, 214])

    def test_rcpt_before_mail_and_nested_mail(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "RCPT TO:<alice@example.org>"), ["503 5.5.1 Need MAIL command"])
        send(s, "MAIL FROM:<a@remote.example>")
        self.assertEqual(send(s, "MAIL FROM:<a@remote.example>"), ["503 5.5.1 Nested MAIL command"])

    def test_data_without_valid_recipients_is_554(self):
        s, _ = ready_session()
        send(s, "MAIL FROM:<a@remote.example>")
        self.assertEqual(codes(send(s, "RCPT TO:<nobody@example.org>")), [550])
        self.assertEqual(send(s, "DATA"), ["554 5.5.1 No valid recipients"])
        self.assertEqual(s.state, State.MAIL)

    def test_unknown_and_unimplemented(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "FOO bar"), ["500 5.5.2 Command unrecognized"])
        self.assertEqual(codes(send(s, "EXPN list")), [502])
        self.assertEqual(codes(send(s, "QUIT now", "RSET x", "VRFY")), [501] * 3)
        send(s, "MAIL FROM:<a@r.example>", "RCPT TO:<bob@example.org>")
        self.assertEqual(send(s, "DATA x"), ["501 5.5.4 Syntax: DATA"])

    def test_vrfy_never_enumerates(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "VRFY alice@example.org"), send(s, "VRFY nobody@example.org"))

    def test_quit_closes(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "QUIT", "NOOP"), ["221 2.0.0 Bye"])
        self.assertTrue(s.closed)

    def test_refused_sender(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "MAIL FROM:<spammer@bad.example>"), ["550 5.7.1 Sender refused"])
        self.assertEqual(s.state, State.READY)

    def test_mail_parameters(self):
        s, _ = ready_session()
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> SIZE=abc")), [501])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> SIZE=\u00b2 SMTPUTF8")), [501])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> SIZE=%s" % ("1" * 21))), [501])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> BODY=BINARYMIME")), [501])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> SMTPUTF8=yes")), [501])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> RET=FULL")), [555])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> AUTH=<>")), [250])
        self.assertEqual(codes(send(s, "RCPT TO:<alice@example.org> NOTIFY=NEVER")), [555])

    def test_size_parameter(self):
        s, _ = ready_session(max_message_size=1000)
        self.assertEqual(send(s, "MAIL FROM:<a@r.example> SIZE=1001"),
                         ["552 5.3.4 Message size exceeds fixed maximum message size"])
        self.assertEqual(codes(send(s, "MAIL FROM:<a@r.example> SIZE=1000")), [250])

    def test_bare_postmaster(self):
        s, b = ready_session()
        send(s, "MAIL FROM:<>")
        self.assertEqual(codes(send(s, "RCPT TO:<Postmaster>")), [250])

    def test_relaying_denied_without_auth(self):
        s, _ = ready_session()
        send(s, "MAIL FROM:<a@r.example>")
        self.assertEqual(send(s, "RCPT TO:<x@elsewhere.example>"), ["550 5.7.1 Relaying denied"])


class LimitTest(unittest.TestCase):
    def test_too_many_recipients(self):
        s, b = ready_session(max_recipients=3)
        send(s, "MAIL FROM:<a@r.example>")
        out = send(s, *["RCPT TO:<any%d@example.org>" % i for i in range(5)])
        self.assertEqual(out[3:], ["452 4.5.3 Too many recipients"] * 2)
        send(s, "DATA", "Subject: x", "", "hi", ".")
        self.assertEqual(len(b.deliveries[0][0].rcpt_to), 3)

    def test_command_line_too_long(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "NOOP " + "x" * 3000), ["500 5.5.2 Line too long"])
        self.assertEqual(send(s, "NOOP"), ["250 2.0.0 Ok"])
        # a line of 2048 octets with CRLF is still accepted
        self.assertEqual(send(s, "NOOP " + "x" * (2048 - 7)), ["250 2.0.0 Ok"])

    def test_bad_command_counter_closes_with_421(self):
        s, _ = ready_session(max_bad_commands=3)
        out = send(s, "BAD1", "BAD2", "BAD3", "BAD4", "NOOP")
        self.assertEqual(codes(out), [500, 500, 500, 421])
        self.assertTrue(out[-1].startswith("421 4.7.0"))
        self.assertTrue(s.closed)

    def test_too_long_text_line_in_data(self):
        s, b = in_rcpt()
        out = send(s, "DATA", "Subject: x", "", "y" * 999, "after", ".", "NOOP")
        self.assertEqual(codes(out), [354, 500, 250])
        self.assertEqual(b.deliveries, [])
        s, b = in_rcpt()
        send(s, "DATA", "Subject: x", "", "y" * 998, ".")      # exactly 1000 with CRLF
        self.assertEqual(len(b.deliveries), 1)
        s, b = in_rcpt(max_text_line=0)                        # the operator's choice
        send(s, "DATA", "Subject: x", "", "y" * 5000, ".")
        self.assertEqual(len(b.deliveries), 1)

    def test_message_size_limit_after_reading_to_end(self):
        s, b = in_rcpt(max_message_size=2000)
        out = send(s, "DATA", *(["z" * 100] * 100), ".", "NOOP")
        self.assertEqual(out[1:], ["552 5.3.4 Message size exceeds fixed maximum message size",
                                   "250 2.0.0 Ok"])
        self.assertEqual(b.deliveries, [])

    def test_loop_detection(self):
        s, b = in_rcpt(max_received=3)
        hdrs = ["Received: from a by b; date"] * 3 + ["rEcEiVeD : from x", "\tby y; folded"]
        out = send(s, "DATA", *hdrs, "Subject: loop", "", "Received: in the body does not count", ".")
        self.assertEqual(out[1], "554 5.4.6 Too many Received headers: mail loop detected")
        s, b = in_rcpt(max_received=3)
        send(s, "DATA", *(["Received: from a by b; date"] * 3), "", "Received: body", ".")
        self.assertEqual(len(b.deliveries), 1)


class DataTest(unittest.TestCase):
    def test_delivered_bytes_are_input_unstuffed_with_one_received(self):
        body = (b"From: sender@remote.example\r\nSubject: t\r\n\r\n..leading dot\r\n"
                b"...two\r\n.\tdot-tab\r\nend\r\n")
        stuffed = b"From: sender@remote.example\r\nSubject: t\r\n\r\n...leading dot\r\n" \
                  b"....two\r\n..\tdot-tab\r\nend\r\n"
        s, b = in_rcpt()
        self.assertEqual(codes(send(s, "DATA", stuffed + b".\r\n")), [354, 250])
        env, data = b.deliveries[0]
        trace, rest = data.split(b"\r\n", 3)[:3], data.split(b"\r\n", 3)[3]
        self.assertEqual(rest, body)
        self.assertEqual(b"\r\n".join(trace) + b"\r\n",
                         ("Received: from client.example (unknown [192.0.2.10])\r\n"
                          "\tby %s with ESMTP id %s\r\n"
                          "\tfor <alice@example.org>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                          % (HOST, env.queue_id)).encode())
        self.assertEqual(data.count(b"Received:"), 1)
        self.assertEqual((env.mail_from, env.rcpt_to, env.targets, env.body, env.helo, env.peer_ip),
                         ("sender@remote.example", ["alice@example.org"], ["alice@example.org"],
                          "7BIT", "client.example", "192.0.2.10"))

    def test_empty_message_is_refused(self):
        # README "Choices": no message at all (RFC 5322 §3.6 requires Date and From).
        s, b = in_rcpt()
        self.assertEqual(send(s, "DATA", ".")[1:], ["554 5.6.0 Message refused: empty message"])
        self.assertEqual((b.deliveries, b.sinks[0].state, s.state), ([], "aborted", State.READY))

    def test_nul_in_body_is_refused_and_nothing_stored(self):
        # README "Choices": NUL is refused (RFC 5322 §4.1, RFC 2045 §2.8), as bare CR/LF.
        for body in (b"a\x00b", b"\x00", b"Subject: x\x00y"):
            s, b = in_rcpt()
            out = send(s, b"DATA\r\n" + body + b"\r\n.\r\n", "NOOP")
            self.assertEqual(out[1:], ["550 5.6.0 Message refused: NUL in message data (RFC 5322 §4.1)",
                                       "250 2.0.0 Ok"], body)
            self.assertEqual((b.deliveries, b.sinks[0].state), ([], "aborted"))

    def test_no_for_clause_with_several_recipients(self):
        s, b = in_rcpt()
        send(s, "RCPT TO:<bob@example.org>", "DATA", "x", ".")
        trace = b.deliveries[0][1].split(b"\r\n\t")
        self.assertNotIn(b"for <", b.deliveries[0][1])
        self.assertEqual(b.deliveries[0][0].rcpt_to, ["alice@example.org", "bob@example.org"])

    def test_smuggling_probes_never_end_the_data(self):
        # CVE-2023-51764: only CRLF "." CRLF ends the data.
        for probe in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"):
            with self.subTest(probe=probe):
                s, b = in_rcpt()
                smuggled = b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n" \
                           b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
                out = send(s, "DATA", b"Subject: one\r\n\r\nhello" + probe + smuggled)
                self.assertEqual(out, ["354 End data with <CR><LF>.<CR><LF>",
                                       "550 5.6.0 Message refused: bare CR or LF in message data "
                                       "(RFC 5321 §2.3.8)"])
                self.assertEqual(b.deliveries, [])
                self.assertEqual(s.state, State.READY)

    def test_bare_lf_refused_even_without_dot(self):
        s, b = in_rcpt()
        self.assertEqual(codes(send(s, "DATA", b"a\nb\r\n.\r\n")), [354, 550])
        self.assertEqual(b.deliveries, [])

    def test_eight_bit_without_body_parameter_is_accepted_and_recorded(self):
        s, b = in_rcpt()
        send(s, "DATA", "Subject: caf\u00e9", "", "gr\u00fc\u00dfe", ".")
        self.assertEqual(b.deliveries[0][0].body, "8BITMIME")

    def test_delivery_failure_452(self):
        s, b = in_rcpt()
        b.fail_delivery = True
        self.assertEqual(send(s, "DATA", "x", ".")[1:], ["452 4.3.1 Insufficient system storage"])
        self.assertEqual(s.state, State.READY)

    def test_input_held_during_delivery_is_bounded(self):
        s, b = in_rcpt(backend=FakeBackend(sync=False), max_message_size=1000)
        send(s, "DATA", "x", ".")
        s.receive_data(b"NOOP\r\n" * 200000)
        self.assertTrue(s.closed)
        self.assertEqual(replies(s), ["421 4.7.0 %s Error: too much pipelined input" % HOST])

    def test_async_delivery_holds_pipelined_input(self):
        s, b = in_rcpt(backend=FakeBackend(sync=False))
        out = send(s, "DATA", "x", ".", "MAIL FROM:<a@r.example>", "NOOP")
        self.assertEqual(codes(out), [354])
        self.assertTrue(s.busy)
        b.release()
        self.assertEqual(codes(replies(s)), [250, 250, 250])
        self.assertEqual(s.ctx.wakes, 1)
        self.assertFalse(s.busy)

    def test_large_message_is_fast(self):
        line = b"x" * 76 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (25 * 1024 * 1024 // len(line) - 1)
        s, b = in_rcpt()
        send(s, "DATA")
        start = time.perf_counter()
        for i in range(0, len(body), 65536):
            s.receive_data(body[i:i + 65536])
        s.receive_data(b".\r\n")
        elapsed = time.perf_counter() - start
        self.assertEqual(codes(replies(s)), [250])
        self.assertEqual(len(b.deliveries[0][1]) - b.deliveries[0][1].index(b"Subject"), len(body))
        self.assertLess(elapsed, 5.0)   # a per-octet Python loop would take minutes


class BdatTest(unittest.TestCase):
    def test_chunks_are_not_unstuffed(self):
        s, b = in_rcpt()
        msg = b"Subject: b\r\n\r\n.dot\r\n"
        out = send(s, b"BDAT 10\r\n" + msg[:10] + b"BDAT %d LAST\r\n" % (len(msg) - 10) + msg[10:])
        self.assertEqual(codes(out), [250, 250])
        self.assertTrue(b.deliveries[0][1].endswith(msg))

    def test_bdat_zero_last_alone_is_refused(self):
        # README "Choices": RFC 3030 §2 "zero ... no additional data": nothing came.
        s, b = in_rcpt()
        out = send(s, "BDAT 0 LAST", "NOOP")
        self.assertEqual(out, ["554 5.6.0 Message refused: empty message", "250 2.0.0 Ok"])
        self.assertEqual((b.deliveries, b.sinks[0].state, s.state), ([], "aborted", State.READY))

    def test_bdat_nul_is_refused(self):
        s, b = in_rcpt()
        out = send(s, b"BDAT 3\r\na\x00b", b"BDAT 2 LAST\r\n\r\n")
        self.assertEqual(out[1], "550 5.6.0 Message refused: NUL in message data (RFC 5322 §4.1)")
        self.assertEqual(b.deliveries, [])

    def test_bdat_zero_last(self):
        s, b = in_rcpt()
        out = send(s, b"BDAT 5\r\nab\r\nc", "BDAT 0 LAST")
        self.assertEqual(out[0], "250 2.0.0 5 octets received")
        self.assertEqual(codes(out), [250, 250])
        self.assertTrue(b.deliveries[0][1].endswith(b"\r\nab\r\nc"))

    def test_bdat_without_transaction_still_consumes_the_chunk(self):
        s, _ = ready_session()
        self.assertEqual(codes(send(s, b"BDAT 6\r\nNOOP\r\n", "NOOP")), [503, 250])
        send(s, "MAIL FROM:<a@r.example>")
        self.assertEqual(send(s, b"BDAT 4 LAST\r\nQUIT"), ["554 5.5.1 No valid recipients"])
        self.assertFalse(s.closed)

    def test_bdat_size_limit_and_discard_of_pipelined_chunks(self):
        s, b = in_rcpt(max_message_size=10)
        out = send(s, b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 2 LAST\r\nab", "NOOP")
        self.assertEqual(codes(out), [250, 552, 503, 250])
        self.assertEqual(b.deliveries, [])

    def test_mixing_data_and_bdat(self):
        s, _ = in_rcpt()
        send(s, b"BDAT 2\r\nab")
        self.assertEqual(send(s, "DATA"), ["503 5.5.1 DATA and BDAT cannot be mixed (RFC 3030 §2)"])

    def test_bare_lf_refused_in_bdat(self):
        s, b = in_rcpt()
        self.assertEqual(codes(send(s, b"BDAT 3 LAST\r\na\nb")), [550])
        self.assertEqual(b.deliveries, [])

    def test_crlf_split_across_chunks_is_fine(self):
        s, b = in_rcpt()
        self.assertEqual(codes(send(s, b"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb")), [250, 250])

    def test_bad_bdat_syntax(self):
        s, _ = in_rcpt()
        self.assertEqual(codes(send(s, "BDAT", "BDAT x", "BDAT 1 FIRST", "BDAT " + "9" * 30)), [501] * 4)


class AuthTest(unittest.TestCase):
    def b64(self, data):
        return base64.b64encode(data).decode()

    def test_plain_with_initial_response(self):
        s, b = ready_session(peer="127.0.0.1")
        out = send(s, "AUTH PLAIN " + self.b64(sasl.plain_response("alice@example.org", "alice-secret")))
        self.assertEqual(out, ["235 2.7.0 Authentication successful"])
        self.assertEqual(send(s, "AUTH PLAIN"), ["503 5.5.1 Already authenticated"])
        send(s, "MAIL FROM:<alice@example.org>", "RCPT TO:<x@elsewhere.example>", "DATA", "x", ".")
        env, data = b.deliveries[0]
        self.assertEqual(env.auth_user, "alice@example.org")
        self.assertIn(b"with ESMTPA id", data)

    def test_plain_without_initial_response_and_empty_equals(self):
        s, _ = ready_session(peer="127.0.0.1")
        self.assertEqual(send(s, "AUTH PLAIN"), ["334 "])
        self.assertEqual(send(s, self.b64(sasl.plain_response("alice@example.org", "wrong"))),
                         ["535 5.7.8 Authentication credentials invalid"])
        self.assertEqual(codes(send(s, "AUTH PLAIN =")), [501])     # empty PLAIN message is malformed

    def test_login(self):
        s, _ = ready_session(peer="127.0.0.1")
        self.assertEqual(send(s, "AUTH LOGIN"), ["334 " + self.b64(b"Username:")])
        self.assertEqual(send(s, self.b64(b"bob@example.org")), ["334 " + self.b64(b"Password:")])
        self.assertEqual(send(s, self.b64(b"bob-secret")), ["235 2.7.0 Authentication successful"])

    def test_scram_sha_256(self):
        s, b = ready_session()
        client = sasl.ScramClient("alice@example.org", "alice-secret")
        [challenge] = send(s, "AUTH SCRAM-SHA-256 " + self.b64(client.first()))
        self.assertTrue(challenge.startswith("334 "))
        [final] = send(s, self.b64(client.final(base64.b64decode(challenge[4:]))))
        self.assertTrue(client.verify(base64.b64decode(final[4:])))
        self.assertEqual(send(s, ""), ["235 2.7.0 Authentication successful"])

    def test_scram_one_byte_at_a_time(self):
        s, b = ready_session()
        client = sasl.ScramClient("bob@example.org", "bob-secret")

        def bytewise(line):
            for ch in (line + "\r\n").encode():
                s.receive_data(bytes([ch]))
            return replies(s)
        [challenge] = bytewise("AUTH SCRAM-SHA-256")
        self.assertEqual(challenge, "334 ")
        [first] = bytewise(self.b64(client.first()))
        [final] = bytewise(self.b64(client.final(base64.b64decode(first[4:]))))
        self.assertTrue(client.verify(base64.b64decode(final[4:])))
        self.assertEqual(bytewise(""), ["235 2.7.0 Authentication successful"])

    def test_scram_wrong_password(self):
        s, _ = ready_session()
        client = sasl.ScramClient("alice@example.org", "nope")
        [challenge] = send(s, "AUTH SCRAM-SHA-256 " + self.b64(client.first()))
        out = send(s, self.b64(client.final(base64.b64decode(challenge[4:]))))
        self.assertEqual(out, ["535 5.7.8 Authentication credentials invalid"])

    def test_cancel_and_bad_base64(self):
        s, _ = ready_session(peer="127.0.0.1")
        send(s, "AUTH LOGIN")
        self.assertEqual(send(s, "*"), ["501 5.0.0 Authentication cancelled"])
        self.assertEqual(s.state, State.READY)
        self.assertEqual(codes(send(s, "AUTH PLAIN !!!!")), [501])
        send(s, "AUTH LOGIN")
        self.assertEqual(codes(send(s, "%%%")), [501])
        self.assertEqual(send(s, "NOOP"), ["250 2.0.0 Ok"])

    def test_plaintext_mechanism_over_plaintext_is_538(self):
        s, _ = ready_session()
        self.assertEqual(send(s, "AUTH PLAIN"),
                         ["538 5.7.11 Encryption required for requested authentication mechanism"])
        self.assertEqual(codes(send(s, "AUTH CRAM-MD5")), [504])

    def test_plaintext_mechanism_inside_tls(self):
        s, _ = ready_session()
        send(s, "STARTTLS")
        s.tls_started({"version": "TLSv1.3", "cipher": "x"})
        send(s, "EHLO c")
        out = send(s, "AUTH PLAIN " + self.b64(sasl.plain_response("alice@example.org", "alice-secret")))
        self.assertEqual(codes(out), [235])

    def test_auth_during_transaction_is_503(self):
        s, _ = in_rcpt(peer="127.0.0.1")
        self.assertEqual(codes(send(s, "AUTH PLAIN")), [503])

    def test_submission_requires_auth(self):
        s, _ = ready_session(require_auth=True, peer="127.0.0.1")
        self.assertEqual(send(s, "MAIL FROM:<alice@example.org>"), ["530 5.7.0 Authentication required"])
        send(s, "AUTH PLAIN " + self.b64(sasl.plain_response("alice@example.org", "alice-secret")))
        self.assertEqual(codes(send(s, "MAIL FROM:<alice@example.org>")), [250])

    def test_auth_response_line_limit_is_12288(self):
        s, _ = ready_session(peer="127.0.0.1")
        send(s, "AUTH PLAIN")
        self.assertEqual(codes(send(s, "A" * 12289)), [500])
        self.assertEqual(s.state, State.READY)

    def test_auth_failure_logged_without_password(self):
        s, _ = ready_session(peer="127.0.0.1")
        with self.assertLogs("mailsrv.smtp", level="WARNING") as cm:
            send(s, "AUTH PLAIN " + self.b64(sasl.plain_response("alice@example.org", "hunter2-pw")))
        self.assertIn("alice@example.org", cm.output[0])
        self.assertIn("127.0.0.1", cm.output[0])
        self.assertNotIn("hunter2-pw", "".join(cm.output))

    def test_async_authenticate(self):
        s, b = ready_session(peer="127.0.0.1", backend=FakeBackend(sync=False))
        out = send(s, "AUTH PLAIN " + self.b64(sasl.plain_response("alice@example.org", "alice-secret")),
                   "NOOP")
        self.assertEqual(out, [])
        b.release()
        self.assertEqual(codes(replies(s)), [235, 250])


class TlsTest(unittest.TestCase):
    def test_starttls_discards_pipelined_input_and_resets(self):
        s, b = ready_session(peer="127.0.0.1")
        send(s, "AUTH PLAIN " + base64.b64encode(sasl.plain_response("alice@example.org",
                                                                   "alice-secret")).decode())
        # (a real client cannot AUTH before STARTTLS here; this proves AUTH is forgotten)
        out = send(s, "STARTTLS", "MAIL FROM:<evil@r.example>", "RCPT TO:<bob@example.org>")
        self.assertEqual(out, ["220 2.0.0 Ready to start TLS"])
        self.assertTrue(s.want_tls)
        s.receive_data(b"DATA\r\n")           # before the handshake: ignored
        s.tls_started({"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"})
        self.assertTrue(s.ctx.tls_active)
        self.assertEqual(replies(s), [])
        self.assertEqual(send(s, "MAIL FROM:<a@r.example>"), ["503 5.5.1 Send EHLO/HELO first"])
        ehlo = send(s, "EHLO c")
        self.assertNotIn("250-STARTTLS", ehlo)
        self.assertEqual(codes(send(s, "STARTTLS")), [503])
        send(s, "MAIL FROM:<a@r.example>", "RCPT TO:<bob@example.org>", "DATA", "x", ".")
        env, data = b.deliveries[0]
        self.assertIsNone(env.auth_user)
        self.assertTrue(env.tls)
        self.assertIn(b"with ESMTPS id", data)

    def test_starttls_with_argument(self):
        s, _ = ready_session()
        self.assertEqual(codes(send(s, "STARTTLS now")), [501])


class ShutdownTimeoutTest(unittest.TestCase):
    def test_idle_shutdown(self):
        s, _ = ready_session()
        s.shutdown()
        self.assertEqual(replies(s), ["421 4.3.2 Service shutting down"])
        self.assertTrue(s.closed)

    def test_shutdown_in_data_finishes_the_transaction(self):
        s, b = in_rcpt()
        send(s, "DATA", "Subject: x")
        self.assertTrue(s.busy)
        self.assertEqual(s.idle_timeout, 300.0)
        s.shutdown()
        self.assertFalse(s.closed)
        out = send(s, "", "body", ".", "NOOP")
        self.assertEqual(codes(out), [250, 421])
        self.assertEqual(len(b.deliveries), 1)
        self.assertTrue(s.closed)

    def test_shutdown_while_awaiting_delivery(self):
        s, b = in_rcpt(backend=FakeBackend(sync=False))
        send(s, "DATA", "x", ".")
        self.assertTrue(s.busy)
        s.shutdown()
        b.release()
        self.assertEqual(codes(replies(s)), [250, 421])
        self.assertTrue(s.closed)

    def test_timeout(self):
        s, _ = ready_session()
        s.timeout()
        self.assertEqual(replies(s), ["421 4.4.2 %s Error: timeout exceeded" % HOST])
        self.assertTrue(s.closed)

    def test_eof_mid_data_delivers_nothing(self):
        s, b = in_rcpt()
        send(s, "DATA", "x")
        s.receive_data(b"")
        self.assertTrue(s.closed)
        self.assertEqual(b.deliveries, [])


class DataFunctionsTest(unittest.TestCase):
    """protocols/smtp/data.py on its own."""

    def feed_all(self, data, step):
        """((content, leftover) or None when no end, reader), content unstuffed."""
        r = smtp_data.DataReader()
        content = b""
        for i in range(0, len(data), step):
            part, leftover = r.feed(data[i:i + step])
            content += part
            if leftover is not None:
                return (content, leftover), r
        return None, r

    def test_end_of_data_found_at_any_split(self):
        data = b"a\r\n..b\r\n.\r\nNEXT"
        for step in (1, 2, 3, 5, 100):
            (content, leftover), _ = self.feed_all(data, step)
            self.assertEqual((content, leftover[:4]), (b"a\r\n.b\r\n", b"NEXT"[:len(leftover)]))

    def test_unstuffing_at_every_split(self):
        data = b"..a\r\n...\r\nb..\r\n.\r\n"
        for step in range(1, len(data) + 1):
            (content, _), _ = self.feed_all(data, step)
            self.assertEqual(content, b".a\r\n..\r\nb..\r\n", step)

    def test_immediate_terminator_is_an_empty_message(self):
        (raw, leftover), _ = self.feed_all(b".\r\nQUIT\r\n", 1)
        self.assertEqual(raw, b"")

    def test_only_crlf_dot_crlf_ends(self):
        for probe in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r\n. \r\n"):
            end, _ = self.feed_all(b"x" + probe + b"y", 1)
            self.assertIsNone(end, probe)

    def test_reader_holds_six_octets_between_reads(self):
        r = smtp_data.DataReader()
        for _ in range(1000):
            content, leftover = r.feed(b"z" * 997 + b"\r\n.")
            self.assertIsNone(leftover)
            self.assertLessEqual(len(r.buf), 6)
        self.assertEqual(r.feed(b"\r\n"), (b"z\r\n", b""))

    def test_content_check_matches_whole_message_rules_at_any_split(self):
        cases = [(b"a\r\nb\r\n", None), (b"a\nb", 550), (b"a\r", 550), (b"\r\r\n", 550),
                 (b"x" * 999 + b"\r\n", 500), (b"x" * 998 + b"\r\n" + b"y" * 998, None),
                 (b"a\x00", 550), (b"", 554), (b"Received: a\r\nReceived: b\r\n\r\n", 554),
                 (b"z" * 3000, 552)]
        for data, code in cases:
            for step in (1, 2, 7, 1000, 5000):
                c = smtp_data.ContentCheck(2000, 1000)
                for i in range(0, len(data), step):
                    c.feed(data[i:i + step])
                refusal = c.refusal(max_received=1)
                self.assertEqual(refusal and refusal[0], code, (data[:20], step))

    def test_bare_cr_lf_detection(self):
        self.assertFalse(smtp_data.has_bare_cr_or_lf(b"a\r\nb\r\n"))
        for bad in (b"a\nb", b"a\rb", b"a\n\r", b"\r\r\n"):
            self.assertTrue(smtp_data.has_bare_cr_or_lf(bad), bad)

    def test_count_received_header_block_only(self):
        msg = (b"Received: a\r\n\tfolded received: x\r\nRECEIVED:b\r\nX-Received: c\r\n"
               b"Subject: s\r\n\r\nReceived: body\r\n")
        self.assertEqual(smtp_data.count_received(msg), 2)
        self.assertEqual(smtp_data.count_received(b"\r\nReceived: x\r\n"), 0)

    def test_protocol_words(self):
        # RFC 3848 §1 and RFC 6531 §3.7.3
        p = smtp_data.protocol_word
        self.assertEqual([p(False, False, False, False), p(True, False, False, False),
                          p(True, True, False, False), p(True, False, True, False),
                          p(True, True, True, False), p(True, True, True, True),
                          p(True, False, False, True)],
                         ["SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTPSA", "UTF8SMTP"])

    def test_received_header_ipv6_and_hostile_helo(self):
        h = smtp_data.received_header("evil (x)\r\nInjected: 1", "::1", HOST, "ESMTP", "QID",
                                      None, CLOCK)
        self.assertEqual(h, ("Received: from evilxInjected:1 (unknown [IPv6:::1])\r\n"
                             "\tby %s with ESMTP id QID;\r\n"
                             "\tTue, 14 Nov 2023 22:13:20 +0000\r\n" % HOST).encode())


class LoggingTest(unittest.TestCase):
    def test_one_line_per_message_without_body(self):
        s, _ = in_rcpt()
        with self.assertLogs("mailsrv.smtp", level="INFO") as cm:
            send(s, "DATA", "Subject: secret-subject", "", "secret-body", ".")
        self.assertEqual(len(cm.output), 1)
        self.assertIn("from=<sender@remote.example>", cm.output[0])
        self.assertIn("rcpts=<alice@example.org>", cm.output[0])
        self.assertIn("result=250", cm.output[0])
        self.assertNotIn("secret", cm.output[0])


if __name__ == "__main__":
    unittest.main()
