"""protocols/smtp/client.py: transcripts against scripted server replies (no sockets).

Each test plays the server: it feeds reply bytes to the session and checks
the exact commands the client wrote back.
"""

import base64
import re
import unittest

from protocols.base import SessionContext
from protocols.smtp.client import (ClientConfig, ClientJob, DotStuffer, SmtpClientSession, Stage,
                                   parse_enhanced, plain_response)
from store.queue import MemoryMessage

EHLO_PIPE = (b"250-mx.example.com hello\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
             b"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n")
EHLO_PLAIN = b"250-mx.example.com\r\n250 HELP\r\n"
MSG = b"Subject: t\r\n\r\nhello\r\n"


class Harness:
    def __init__(self, job=None, config=None, **jobkw):
        self.results = []
        self.ctx = SessionContext()
        kw = dict(helo_name="client.example.org", mail_from="a@example.org",
                  rcpts=["x@example.com", "y@example.com"], data=MSG)
        kw.update(jobkw)
        self.s = SmtpClientSession(self.ctx, config or ClientConfig(), job or ClientJob(**kw),
                                   self.results.append)

    def server(self, data: bytes, bytewise=False):
        if bytewise:
            for i in range(len(data)):
                self.s.receive_data(data[i:i + 1])
        else:
            self.s.receive_data(data)

    def sent(self) -> bytes:
        out = b""
        while True:
            chunk = self.s.data_to_send()
            if not chunk:
                return out
            out += chunk

    @property
    def result(self):
        assert len(self.results) == 1, self.results
        return self.results[0]


class HappyPathTest(unittest.TestCase):
    def run_pipelined(self, bytewise):
        h = Harness()
        self.assertEqual(h.sent(), b"")                 # the server speaks first
        h.server(b"220 mx.example.com ESMTP\r\n", bytewise)
        self.assertEqual(h.sent(), b"EHLO client.example.org\r\n")
        h.server(EHLO_PIPE, bytewise)
        # RFC 2920 §3.1: MAIL, RCPTs and DATA in one group, DATA last.
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org> SIZE=%d\r\nRCPT TO:<x@example.com>\r\n"
                                   b"RCPT TO:<y@example.com>\r\nDATA\r\n" % len(MSG))
        h.server(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n", bytewise)
        self.assertEqual(h.sent(), MSG + b".\r\n")
        self.assertEqual(h.s.stage, Stage.DATA_TERM)
        self.assertEqual(h.s.idle_timeout, 600.0)      # RFC 5321 §4.5.3.2.6
        self.assertEqual(h.results, [])
        h.server(b"250 2.0.0 queued as X\r\n", bytewise)
        r = h.result
        self.assertIsNone(r.error_kind)
        self.assertEqual(r.per_rcpt, {"x@example.com": (250, "2.0.0", "queued as X"),
                                      "y@example.com": (550, "5.1.1", "no such user")})
        self.assertEqual(r.message_result, (250, "2.0.0", "queued as X"))
        self.assertFalse(r.tls_used)
        self.assertEqual(h.sent(), b"QUIT\r\n")
        self.assertFalse(h.s.closed)
        h.server(b"221 bye\r\n")
        self.assertTrue(h.s.closed)

    def test_pipelined_transaction(self):
        self.run_pipelined(False)

    def test_pipelined_transaction_fed_one_byte_at_a_time(self):
        self.run_pipelined(True)

    def test_without_pipelining_one_command_at_a_time(self):
        h = Harness()
        h.server(b"220 hi\r\n")
        h.sent()
        h.server(EHLO_PLAIN)
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        h.server(b"250 ok\r\n")
        self.assertEqual(h.sent(), b"RCPT TO:<x@example.com>\r\n")
        h.server(b"250 ok\r\n")
        self.assertEqual(h.sent(), b"RCPT TO:<y@example.com>\r\n")
        h.server(b"250 ok\r\n")
        self.assertEqual(h.sent(), b"DATA\r\n")
        self.assertEqual(h.s.idle_timeout, 120.0)      # RFC 5321 §4.5.3.2.4
        h.server(b"354 go\r\n")
        self.assertEqual(h.sent(), MSG + b".\r\n")
        h.server(b"250 ok\r\n")
        self.assertEqual(set(h.result.per_rcpt.values()), {(250, "", "ok")})
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_multiline_replies_are_one_reply_each(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220-first\r\n220-second\r\n220 third\r\n")
        self.assertEqual(h.sent(), b"EHLO client.example.org\r\n")
        h.server(EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
        h.sent()
        h.server(b"250-2.0.0 line one\r\n250 2.0.0 line two\r\n")
        self.assertEqual(h.result.per_rcpt["x@example.com"], (250, "2.0.0", "line one line two"))


def run_transcript(test, text, **jobkw):
    """Feed the S: lines one by one; the C: lines, in order, must be exactly what
    the client wrote ("C: ..." stands for the message body)."""
    h = Harness(**jobkw)
    expected, written = b"", b""
    for line in text.strip().splitlines():
        who, _, rest = line.strip().partition(": ")
        if who == "C":
            expected += h.s.job.data if rest == "..." else rest.encode() + b"\r\n"
        else:
            h.server(rest.encode() + b"\r\n")
        written += h.sent()
    test.assertEqual(written.decode(), expected.decode())
    test.assertTrue(h.s.closed)
    return h.result


class RfcTranscriptTest(unittest.TestCase):
    """The RFC 2920 §4 examples (the client waits for the reply to "." before QUIT)."""

    def test_rfc2920_pipelined_example(self):
        r = run_transcript(self, """
            S: 220 innosoft.com SMTP service ready
            C: EHLO dbc.mtview.ca.us
            S: 250-innosoft.com
            S: 250 PIPELINING
            C: MAIL FROM:<mrose@dbc.mtview.ca.us>
            C: RCPT TO:<ned@innosoft.com>
            C: RCPT TO:<dan@innosoft.com>
            C: RCPT TO:<kvc@innosoft.com>
            C: DATA
            S: 250 sender <mrose@dbc.mtview.ca.us> OK
            S: 250 recipient <ned@innosoft.com> OK
            S: 250 recipient <dan@innosoft.com> OK
            S: 250 recipient <kvc@innosoft.com> OK
            S: 354 enter mail, end with line containing only "."
            C: ...
            C: .
            S: 250 message sent
            C: QUIT
            S: 221 goodbye
            """, helo_name="dbc.mtview.ca.us", mail_from="mrose@dbc.mtview.ca.us",
            rcpts=["ned@innosoft.com", "dan@innosoft.com", "kvc@innosoft.com"])
        self.assertEqual(set(r.per_rcpt.values()), {(250, "", "message sent")})

    def test_rfc2920_all_recipients_rejected(self):
        r = run_transcript(self, """
            S: 220 innosoft.com SMTP service ready
            C: EHLO dbc.mtview.ca.us
            S: 250-innosoft.com
            S: 250 PIPELINING
            C: MAIL FROM:<mrose@dbc.mtview.ca.us>
            C: RCPT TO:<nsb@thumper.bellcore.com>
            C: RCPT TO:<galvin@tis.com>
            C: DATA
            S: 250 sender <mrose@dbc.mtview.ca.us> OK
            S: 550 remote mail to <nsb@thumper.bellore.com> not allowed
            S: 550 remote mail to <galvin@tis.com> not allowed
            S: 554 no valid recipients given
            C: QUIT
            S: 221 goodbye
            """, helo_name="dbc.mtview.ca.us", mail_from="mrose@dbc.mtview.ca.us",
            rcpts=["nsb@thumper.bellcore.com", "galvin@tis.com"])
        self.assertEqual(r.per_rcpt["galvin@tis.com"], (550, "", "remote mail to <galvin@tis.com> not allowed"))

    def test_rfc2920_data_accepted_without_recipients(self):
        r = run_transcript(self, """
            S: 220 innosoft.com SMTP service ready
            C: EHLO dbc.mtview.ca.us
            S: 250-innosoft.com
            S: 250 PIPELINING
            C: MAIL FROM:<mrose@dbc.mtview.ca.us>
            C: RCPT TO:<nsb@thumper.bellcore.com>
            C: RCPT TO:<galvin@tis.com>
            C: DATA
            S: 250 sender <mrose@dbc.mtview.ca.us> OK
            S: 550 remote mail to <nsb@thumper.bellore.com> not allowed
            S: 550 remote mail to <galvin@tis.com> not allowed
            S: 354 enter mail, end with line containing only "."
            C: .
            S: 554 no valid recipients
            C: QUIT
            S: 221 goodbye
            """, helo_name="dbc.mtview.ca.us", mail_from="mrose@dbc.mtview.ca.us",
            rcpts=["nsb@thumper.bellcore.com", "galvin@tis.com"])
        self.assertEqual({c for c, _, _ in r.per_rcpt.values()}, {550})

    def test_rfc2920_unpipelined_example_after_ehlo_refused(self):
        run_transcript(self, """
            S: 220 Innosoft.com SMTP service ready
            C: EHLO dbc.mtview.ca.us
            S: 500 5.5.1 command unrecognized
            C: HELO dbc.mtview.ca.us
            S: 250 Innosoft.com
            C: MAIL FROM:<mrose@dbc.mtview.ca.us>
            S: 250 sender <mrose@dbc.mtview.ca.us> OK
            C: RCPT TO:<ned@innosoft.com>
            S: 250 recipient <ned@innosoft.com> OK
            C: RCPT TO:<dan@innosoft.com>
            S: 250 recipient <dan@innosoft.com> OK
            C: DATA
            S: 354 enter mail, end with line containing only "."
            C: ...
            C: .
            S: 250 message sent
            C: QUIT
            S: 221 goodbye
            """, helo_name="dbc.mtview.ca.us", mail_from="mrose@dbc.mtview.ca.us",
            rcpts=["ned@innosoft.com", "dan@innosoft.com"])


class ExtensionTest(unittest.TestCase):
    def start(self, ehlo=EHLO_PIPE, **kw):
        h = Harness(**kw)
        h.server(b"220 hi\r\n")
        h.sent()
        h.server(ehlo)
        return h

    def test_helo_fallback_when_ehlo_is_refused(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220 old server\r\n")
        h.sent()
        h.server(b"502 5.5.1 command not recognized\r\n")
        self.assertEqual(h.sent(), b"HELO client.example.org\r\n")
        h.server(b"250 hello\r\n")
        # No extensions: plain MAIL, no SIZE, no BODY, no pipelining.
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")

    def test_size_refusal_sends_nothing(self):
        h = self.start(ehlo=b"250-mx\r\n250 SIZE 10\r\n")
        r = h.result
        self.assertEqual(r.error_kind, "permanent")
        self.assertEqual(r.per_rcpt["x@example.com"][:2], (552, "5.3.4"))
        self.assertIn("10", r.per_rcpt["x@example.com"][2])
        self.assertEqual(h.sent(), b"QUIT\r\n")      # RFC 1870 §6.2: then QUIT

    def test_smtputf8_needed_but_not_offered(self):
        h = self.start(ehlo=b"250-mx\r\n250 PIPELINING\r\n", rcpts=["jos\u00e9@example.com"])
        r = h.result
        self.assertEqual(r.error_kind, "permanent")
        self.assertEqual(r.per_rcpt["jos\u00e9@example.com"][:2], (550, "5.6.7"))
        self.assertIn("SMTPUTF8", r.remote_reply)
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_smtputf8_and_8bitmime_declared_when_offered(self):
        h = self.start(rcpts=["jos\u00e9@example.com"], body_8bit=True)
        self.assertEqual(h.sent().split(b"\r\n")[:2],
                         [b"MAIL FROM:<a@example.org> SIZE=%d BODY=8BITMIME SMTPUTF8" % len(MSG),
                          "RCPT TO:<jos\u00e9@example.com>".encode()])

    def test_idn_domain_goes_as_a_label_without_smtputf8(self):
        h = self.start(ehlo=b"250-mx\r\n250 PIPELINING\r\n", rcpts=["bob@b\u00fccher.example"])
        self.assertEqual(h.sent().split(b"\r\n")[:2],
                         [b"MAIL FROM:<a@example.org>", b"RCPT TO:<bob@xn--bcher-kva.example>"])

    def test_need_smtputf8_flag_alone_requires_the_extension(self):
        h = self.start(ehlo=b"250-mx\r\n250 8BITMIME\r\n", need_smtputf8=True)
        self.assertEqual(h.result.error_kind, "permanent")

    def test_starttls_then_ehlo_again(self):
        h = self.start(ehlo=b"250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n", rcpts=["x@example.com"])
        self.assertEqual(h.sent(), b"STARTTLS\r\n")
        h.server(b"220 2.0.0 ready\r\n250 smuggled\r\n")
        self.assertTrue(h.s.want_tls)
        self.assertEqual(h.sent(), b"")
        h.s.tls_started({"version": "TLSv1.3", "cipher": "X"})
        self.assertTrue(h.ctx.tls_active)
        self.assertFalse(h.s.want_tls)
        # RFC 3207 §4.2: extensions forgotten, EHLO again; the smuggled line is gone.
        self.assertEqual(h.sent(), b"EHLO client.example.org\r\n")
        h.server(b"250-mx\r\n250 PIPELINING\r\n")
        self.assertTrue(h.sent().startswith(b"MAIL FROM:"))
        h.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
        h.sent()
        h.server(b"250 ok\r\n")
        self.assertTrue(h.result.tls_used)

    def test_starttls_refused_continues_in_clear_under_may(self):
        h = self.start(ehlo=b"250-mx\r\n250 STARTTLS\r\n")
        h.sent()
        h.server(b"454 4.7.0 TLS not available\r\n")
        self.assertTrue(h.sent().startswith(b"MAIL FROM:"))

    def test_starttls_required_but_not_offered_is_temporary(self):
        h = self.start(ehlo=b"250 mx\r\n", starttls="require")
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertEqual(h.result.per_rcpt["x@example.com"][0] // 100, 4)

    def test_starttls_never_does_not_use_it(self):
        h = self.start(ehlo=b"250-mx\r\n250 STARTTLS\r\n", starttls="never")
        self.assertTrue(h.sent().startswith(b"MAIL FROM:"))

    def test_auth_plain(self):
        h = self.start(ehlo=b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n", auth=("u@x", "s3cret"),
                       config=ClientConfig(allow_plaintext_auth=True))
        line = h.sent()
        self.assertTrue(line.startswith(b"AUTH PLAIN "))
        self.assertEqual(base64.b64decode(line[11:-2]), b"\0u@x\0s3cret")   # RFC 4616 §2
        h.server(b"235 2.7.0 ok\r\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")

    def test_auth_login(self):
        h = self.start(ehlo=b"250-mx\r\n250 AUTH LOGIN\r\n", auth=("u", "p"),
                       config=ClientConfig(allow_plaintext_auth=True))
        self.assertEqual(h.sent(), b"AUTH LOGIN\r\n")
        h.server(b"334 VXNlcm5hbWU6\r\n")
        self.assertEqual(h.sent(), base64.b64encode(b"u") + b"\r\n")
        h.server(b"334 UGFzc3dvcmQ6\r\n")
        self.assertEqual(h.sent(), base64.b64encode(b"p") + b"\r\n")
        h.server(b"235 ok\r\n")
        self.assertTrue(h.sent().startswith(b"MAIL FROM"))

    def test_auth_failure_is_temporary(self):
        h = self.start(ehlo=b"250-mx\r\n250 AUTH PLAIN\r\n", auth=("u", "p"),
                       config=ClientConfig(allow_plaintext_auth=True))
        h.sent()
        h.server(b"535 5.7.8 bad credentials\r\n")
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_no_credentials_in_clear_by_default(self):
        h = self.start(ehlo=b"250-mx\r\n250 AUTH PLAIN\r\n", auth=("u", "p"))
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertNotIn(b"AUTH", h.sent())


class FailureTest(unittest.TestCase):
    def test_4xx_greeting_is_temporary(self):
        h = Harness()
        h.server(b"450 4.3.2 busy\r\n")
        r = h.result
        self.assertEqual(r.error_kind, "temporary")
        self.assertEqual(r.per_rcpt["x@example.com"][:2], (450, "4.3.2"))
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_554_greeting_is_temporary_for_this_host(self):
        h = Harness()
        h.server(b"554 5.7.1 no service\r\n")
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertEqual(h.result.per_rcpt["x@example.com"][0], 451)
        self.assertIn("554 5.7.1 no service", h.result.remote_reply)

    def test_421_mid_transaction_closes_at_once(self):
        h = Harness()
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n421 4.3.0 shutting down\r\n")
        r = h.result
        self.assertEqual(r.error_kind, "temporary")
        self.assertEqual(r.per_rcpt["x@example.com"][:2], (421, "4.3.0"))
        self.assertTrue(h.s.closed)
        self.assertEqual(h.sent(), b"")

    def test_mail_refused_pipelined_consumes_every_reply(self):
        h = Harness()
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"550 5.7.1 sender rejected\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n354 go ahead anyway\r\n")
        # RFC 2920 §3.1: DATA accepted with nothing to send: a single dot.
        self.assertEqual(h.sent(), b".\r\n")
        h.server(b"554 no valid recipients\r\n")
        self.assertEqual(set(h.result.per_rcpt.values()), {(550, "5.7.1", "sender rejected")})
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_all_recipients_refused_without_pipelining_skips_data(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220 hi\r\n250 mx\r\n")
        h.sent()
        h.server(b"250 ok\r\n")
        h.sent()
        h.server(b"450 4.2.0 greylisted\r\n")
        self.assertEqual(h.result.per_rcpt, {"x@example.com": (450, "4.2.0", "greylisted")})
        self.assertIsNone(h.result.error_kind)
        self.assertEqual(h.sent(), b"QUIT\r\n")

    def test_data_refused_applies_to_accepted_recipients(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n")
        self.assertEqual(h.result.per_rcpt, {"x@example.com": (451, "4.3.0", "try later")})

    def test_2xx_to_data_is_not_a_delivery(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n250 sure\r\n")
        self.assertEqual(h.result.per_rcpt["x@example.com"][:2], (451, "4.5.0"))

    def test_final_dot_refused(self):
        h = Harness(rcpts=["x@example.com"])
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
        h.sent()
        h.server(b"554 5.7.1 spam\r\n")
        self.assertEqual(h.result.per_rcpt, {"x@example.com": (554, "5.7.1", "spam")})
        self.assertEqual(h.result.message_result, (554, "5.7.1", "spam"))

    def test_connection_lost_after_data_is_temporary(self):
        h = Harness(rcpts=["x@example.com", "y@example.com"])
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n")
        h.sent()
        h.server(b"")
        r = h.result
        self.assertEqual(r.error_kind, "temporary")
        self.assertEqual(r.per_rcpt["x@example.com"][:2], (451, "4.4.2"))
        self.assertEqual(r.per_rcpt["y@example.com"][:2], (550, "5.1.1"))   # already final
        self.assertTrue(h.s.closed)

    def test_timeout(self):
        h = Harness()
        self.assertEqual(h.s.idle_timeout, 300.0)        # RFC 5321 §4.5.3.2.1
        h.s.timeout()
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertIn("timeout", h.result.remote_reply)
        self.assertTrue(h.s.closed)

    def test_malformed_reply(self):
        h = Harness()
        h.server(b"hello there\r\n")
        self.assertEqual(h.result.error_kind, "temporary")
        self.assertTrue(h.s.closed)

    def test_done_called_once_even_after_more_events(self):
        h = Harness()
        h.server(b"450 busy\r\n")
        h.s.timeout()
        h.server(b"")
        self.assertEqual(len(h.results), 1)


class FuzzTest(unittest.TestCase):
    """Random server behaviour in every stage: no exception escapes, done is called at most once."""

    REPLIES = [b"220 hi\r\n", b"250 ok\r\n", b"250-x\r\n250 PIPELINING\r\n", b"354 go\r\n",
               b"421 bye\r\n", b"450 later\r\n", b"550 5.1.1 no\r\n", b"334 \r\n", b"235 ok\r\n",
               b"250-STARTTLS\r\n250 AUTH PLAIN\r\n", b"garbage\r\n", b"25", b"0 split\r\n",
               b"\r\n", b"999 odd\r\n", b"250-a\r\n251 mismatch\r\n", b"\xff\xfe\r\n", b""]

    def test_random_replies(self):
        import random
        rng = random.Random(5321)
        for _ in range(400):
            h = Harness(auth=("u", "p") if rng.random() < 0.3 else None,
                        starttls=rng.choice(["may", "require", "never"]),
                        config=ClientConfig(allow_plaintext_auth=rng.random() < 0.5))
            for _ in range(rng.randint(1, 12)):
                if h.s.closed:
                    break
                if h.s.want_tls and rng.random() < 0.7:
                    h.s.tls_started({"version": "TLSv1.3", "cipher": "X"})
                roll = rng.random()
                if roll < 0.05:
                    h.s.timeout()
                elif roll < 0.08:
                    h.s.shutdown()
                else:
                    h.server(rng.choice(self.REPLIES))
                h.sent()
            self.assertLessEqual(len(h.results), 1)
            if h.s.closed:
                self.assertEqual(len(h.results), 1)
                for reply in h.results[0].per_rcpt.values():
                    self.assertIn(reply[0] // 100, (2, 4, 5))


def dot_stuff(data: bytes) -> bytes:
    """The whole-message form DotStuffer must equal at any split (the test's oracle):
    CRLF line ends (RFC 5321 §2.3.8), a leading "." doubled (RFC 5321 §4.5.2),
    then CRLF "." CRLF."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


class HelpersTest(unittest.TestCase):
    def test_dot_stuffing(self):
        self.assertEqual(dot_stuff(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n")
        self.assertEqual(dot_stuff(b"no newline"), b"no newline\r\n.\r\n")
        self.assertEqual(dot_stuff(b"lf\n.only\n"), b"lf\r\n..only\r\n.\r\n")
        self.assertEqual(dot_stuff(b""), b".\r\n")

    def test_dot_stuffing_in_transcript(self):
        h = Harness(rcpts=["x@example.com"], data=b"Subject: s\r\n\r\n.\r\n.hidden\r\n")
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertEqual(h.sent(), b"Subject: s\r\n\r\n..\r\n..hidden\r\n.\r\n")

    def test_dot_stuffer_equals_dot_stuff_at_any_split(self):
        for data in (b".a\r\nb\r\n..c\r\n", b"no newline", b"lf\n.only\n", b"", b"x\r",
                     b"a\r\n.\r\n.", b"\r\n.\r\n"):
            for step in range(1, len(data) + 2):
                st = DotStuffer()
                out = b"".join(st.feed(data[i:i + step]) for i in range(0, len(data), step))
                self.assertEqual(out + st.end(), dot_stuff(data), (data, step))

    def test_large_queued_message_is_sent_piece_by_piece(self):
        # issue 7: the relay never holds a queued message whole
        body = (b"Subject: big\r\n\r\n" + b".line\r\n" * 120000)   # under SIZE 1000000
        h = Harness(rcpts=["x@example.com"], data=MemoryMessage(body, piece=4096))
        h.server(b"220 hi\r\n" + EHLO_PIPE)
        h.sent()
        h.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertLessEqual(len(h.s._out), 2 * 4096)
        sent, largest = b"", 0
        while True:
            chunk = h.s.data_to_send()
            if not chunk:
                break
            largest = max(largest, len(h.s._out))
            sent += chunk
        self.assertEqual(sent, dot_stuff(body))
        self.assertLessEqual(largest, 2 * 4096)
        h.server(b"250 ok\r\n")
        self.assertEqual(h.result.per_rcpt["x@example.com"][0], 250)

    def test_parse_enhanced(self):
        self.assertEqual(parse_enhanced(550, "5.1.1 no"), "5.1.1")
        self.assertEqual(parse_enhanced(550, "4.1.1 class mismatch"), "")
        self.assertEqual(parse_enhanced(250, "ok"), "")

    def test_plain_response(self):
        self.assertEqual(base64.b64decode(plain_response("tim", "tanstaaftanstaaf")), b"\0tim\0tanstaaftanstaaf")


if __name__ == "__main__":
    unittest.main()
