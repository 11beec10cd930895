"""Whole SMTP dialogues (C:/S: transcripts) replayed against SmtpSession.

Each transcript runs whole, one byte at a time, and split at seeded random
points; the server output must match in every mode and the delivered
messages must be the same.

Transcript lines:
  ``S: text``   one reply line; ``*`` matches any run of characters
  ``S: ...``    any number of ``250-`` lines (EHLO keyword lists)
  ``C: text``   a client line, CRLF added
  ``C! text``   raw client octets with Python escapes (no CRLF added)
  ``== TLS`` / ``== TIMEOUT`` / ``== SHUTDOWN`` / ``== RELEASE`` / ``== EOF``
                simulate the loop: handshake done, idle timer, server stop,
                deferred backend answers, peer closed.
  ``== CLOSED`` assert the session has closed.
"""

import base64
import random
import re
import unittest

from protocols import sasl
from tests.test_smtp_session import HOST, FakeBackend, new_session

SEEDS = (1, 2, 3, 4, 5)
EHLO = "S: 250-%s greets *\nS: ...\nS: 250 HELP" % HOST
GREETING = "S: 220 %s ESMTP mailsrv" % HOST
D_USERS = {"jones@example.org": "x", "brown@example.org": "y"}


def parse(text):
    """→ (segments [(client bytes, directive or None)], expected regex)."""
    segments, client, pattern = [], bytearray(), []
    for line in text.strip("\n").split("\n"):
        line = line.strip()
        if not line:
            continue
        kind, rest = line[:2], line[3:]
        if kind == "S:":
            if rest == "...":
                pattern.append(r"(?:250-[^\r\n]*\r\n)*")
            else:
                pattern.append(".*".join(re.escape(p) for p in rest.split("*")) + r"\r\n")
        elif kind == "C:":
            client += rest.encode("utf-8") + b"\r\n"
        elif kind == "C!":
            client += rest.encode("ascii").decode("unicode_escape").encode("latin-1")
        elif kind == "==":
            segments.append((bytes(client), rest))
            client = bytearray()
        else:
            raise ValueError("bad transcript line %r" % line)
    segments.append((bytes(client), None))
    return segments, "".join(pattern)


def pieces(data, mode, rng):
    if not data:
        return []   # b"" would mean end of file
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


class TranscriptCase(unittest.TestCase):
    def run_transcript(self, text, backend_args=None, sasl_nonce=None, **config):
        """Replay in every mode; return the backend of the whole run."""
        segments, pattern = parse(text)
        modes = [("whole", None), ("bytes", None)] + [("random", s) for s in SEEDS]
        results = []
        for mode, seed in modes:
            rng = random.Random(seed)
            backend = FakeBackend(**(backend_args or {}))
            session, _ = new_session(backend=backend, **config)
            if sasl_nonce is not None:
                session.sasl_nonce = lambda: sasl_nonce
            out = bytearray(session.data_to_send())
            for data, directive in segments:
                for piece in pieces(data, mode, rng):
                    session.receive_data(piece)
                    out += session.data_to_send()
                self.apply(session, backend, directive)
                out += session.data_to_send()
            text_out = out.decode("utf-8")
            if not re.fullmatch(pattern, text_out, re.S):
                self.fail("mode %s seed %s: output does not match transcript:\n%s\n--- pattern:\n%s"
                          % (mode, seed, text_out, pattern))
            results.append([(e.mail_from, e.rcpt_to, d.replace(e.queue_id.encode(), b"ID"))
                            for e, d in backend.deliveries])
            if mode == "whole":
                first = backend
        for r in results[1:]:
            self.assertEqual(r, results[0])
        return first

    def apply(self, session, backend, directive):
        if directive is None:
            return
        if directive == "TLS":
            self.assertTrue(session.want_tls)
            session.tls_started({"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"})
        elif directive == "TIMEOUT":
            session.timeout()
        elif directive == "SHUTDOWN":
            session.shutdown()
        elif directive == "RELEASE":
            backend.release()
        elif directive == "EOF":
            session.receive_data(b"")
        elif directive == "CLOSED":
            self.assertTrue(session.closed)
        else:
            raise ValueError(directive)


class Rfc5321AppendixDTest(TranscriptCase):
    def test_d1_typical_transaction(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<Smith@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<Jones@example.org>
            S: 250 2.1.5 Ok
            C: RCPT TO:<Green@example.org>
            S: 550 5.1.1 No such user
            C: RCPT TO:<Brown@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 End data with <CR><LF>.<CR><LF>
            C: Blah blah blah...
            C: ...etc. etc. etc.
            C: .
            S: 250 2.0.0 Ok: queued as *
            C: QUIT
            S: 221 2.0.0 Bye
            == CLOSED
        """ % (GREETING, EHLO), backend_args={"users": D_USERS})
        [(env, data)] = b.deliveries
        self.assertEqual(env.rcpt_to, ["Jones@example.org", "Brown@example.org"])
        self.assertTrue(data.endswith(b"\r\nBlah blah blah...\r\n..etc. etc. etc.\r\n"))

    def test_d2_aborted_transaction(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<Smith@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<Jones@example.org>
            S: 250 2.1.5 Ok
            C: RCPT TO:<Green@example.org>
            S: 550 5.1.1 No such user
            C: RSET
            S: 250 2.0.0 Ok
            C: QUIT
            S: 221 2.0.0 Bye
        """ % (GREETING, EHLO), backend_args={"users": D_USERS})
        self.assertEqual(b.deliveries, [])


class PipeliningTest(TranscriptCase):
    def test_rfc2920_section_4_examples(self):
        # RFC 2920 §4 (the first example, then the "all recipients rejected" one).
        b = self.run_transcript("""
            %s
            C: EHLO dbc.example
            %s
            C: MAIL FROM:<mrose@dbc.example>
            C: RCPT TO:<anyned@example.org>
            C: RCPT TO:<anydan@example.org>
            C: RCPT TO:<anykvc@example.org>
            C: DATA
            C: Subject: pipelined
            C:
            C: body
            C: .
            C: MAIL FROM:<mrose@dbc.example>
            C: RCPT TO:<nsb@thumper.example>
            C: RCPT TO:<galvin@tis.example>
            C: DATA
            C: QUIT
            S: 250 2.1.0 Ok
            S: 250 2.1.5 Ok
            S: 250 2.1.5 Ok
            S: 250 2.1.5 Ok
            S: 354 End data with <CR><LF>.<CR><LF>
            S: 250 2.0.0 Ok: queued as *
            S: 250 2.1.0 Ok
            S: 550 5.7.1 Relaying denied
            S: 550 5.7.1 Relaying denied
            S: 554 5.5.1 No valid recipients
            S: 221 2.0.0 Bye
        """ % (GREETING, EHLO))
        self.assertEqual(len(b.deliveries), 1)

    def test_pipelined_replies_wait_for_a_slow_delivery(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            C: RCPT TO:<alice@example.org>
            C: DATA
            C: x
            C: .
            C: NOOP
            S: 250 2.1.0 Ok
            S: 250 2.1.5 Ok
            S: 354 End data with <CR><LF>.<CR><LF>
            == RELEASE
            S: 250 2.0.0 Ok: queued as *
            S: 250 2.0.0 Ok
        """ % (GREETING, EHLO), backend_args={"sync": False})
        self.assertEqual(len(b.deliveries), 1)


class ChunkingTest(TranscriptCase):
    def test_rfc3030_simple_chunking(self):
        # RFC 3030 §4.1, adapted: the 86 octets are three header lines.
        msg = (r"To: Susan@random.example\r\nFrom: Sam@random.example\r\n"
               r"Subject: This is a bodyless test message\r\n")
        size = len(msg.encode().decode("unicode_escape"))
        b = self.run_transcript("""
            %s
            C: EHLO ymir.example
            %s
            C: MAIL FROM:<Sam@random.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: BDAT %d LAST
            C! %s
            S: 250 2.0.0 Ok: queued as *
            C: QUIT
            S: 221 2.0.0 Bye
        """ % (GREETING, EHLO, size, msg))
        self.assertTrue(b.deliveries[0][1].endswith(b"Subject: This is a bodyless test message\r\n"))

    def test_rfc3030_pipelined_chunks(self):
        # RFC 3030 §4.2 without BINARYMIME (not offered): BDAT n, BDAT m, BDAT 0 LAST.
        b = self.run_transcript(r"""
            %s
            C: EHLO ymir.example
            %s
            C: MAIL FROM:<ned@ymir.example> BODY=8BITMIME
            C: RCPT TO:<alice@example.org>
            C: RCPT TO:<bob@example.org>
            C: BDAT 21
            C! Subject: chunks\r\n\r\nab
            C: BDAT 4
            C! cd\r\n
            C: BDAT 0 LAST
            S: 250 2.1.0 Ok
            S: 250 2.1.5 Ok
            S: 250 2.1.5 Ok
            S: 250 2.0.0 21 octets received
            S: 250 2.0.0 25 octets received
            S: 250 2.0.0 Ok: queued as *
        """ % (GREETING, EHLO))
        env, data = b.deliveries[0]
        self.assertEqual(env.body, "8BITMIME")
        self.assertTrue(data.endswith(b"\r\nSubject: chunks\r\n\r\nabcd\r\n"))


class ExtensionTranscriptTest(TranscriptCase):
    def test_size_refusal(self):
        self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example> SIZE=26214401
            S: 552 5.3.4 Message size exceeds fixed maximum message size
            C: MAIL FROM:<a@client.example> SIZE=26214400
            S: 250 2.1.0 Ok
        """ % (GREETING, EHLO))

    def test_8bitmime(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example> BODY=8BITMIME
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            C: Subject: Grüße
            C:
            C: çà et là
            C: .
            S: 250 2.0.0 *
        """ % (GREETING, EHLO))
        self.assertTrue(b.deliveries[0][1].endswith("Subject: Grüße\r\n\r\nçà et là\r\n".encode()))
        self.assertEqual(b.deliveries[0][0].body, "8BITMIME")

    def test_smtputf8(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<zoë@client.example>
            S: 553 5.6.7 Non-ASCII address requires SMTPUTF8
            C: MAIL FROM:<zoë@client.example> SMTPUTF8 BODY=8BITMIME
            S: 250 2.1.0 Ok
            C: RCPT TO:<anyjörg@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            C: Subject: ok
            C: .
            S: 250 2.0.0 *
        """ % (GREETING, EHLO))
        env, data = b.deliveries[0]
        self.assertEqual((env.mail_from, env.rcpt_to, env.smtputf8),
                         ("zoë@client.example", ["anyjörg@example.org"], True))
        self.assertIn(b"with UTF8SMTP id", data)
        self.assertIn("for <anyjörg@example.org>".encode(), data)

    def test_auth_plain_login_and_second_auth(self):
        plain = base64.b64encode(sasl.plain_response("alice@example.org", "alice-secret")).decode()
        self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: AUTH PLAIN %s
            S: 235 2.7.0 Authentication successful
            C: AUTH LOGIN
            S: 503 5.5.1 Already authenticated
        """ % (GREETING, EHLO, plain), peer="127.0.0.1")
        self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: AUTH LOGIN
            S: 334 VXNlcm5hbWU6
            C: %s
            S: 334 UGFzc3dvcmQ6
            C: %s
            S: 235 2.7.0 Authentication successful
        """ % (GREETING, EHLO, base64.b64encode(b"bob@example.org").decode(),
               base64.b64encode(b"bob-secret").decode()), peer="127.0.0.1")

    def test_auth_scram_sha_256(self):
        # RFC 7677 §3 flow (RFC 5802 §5) with fixed nonces so the exchange
        # is the same in every replay; the expected lines come from
        # sasl.ScramClient against a reference SaslServer with those nonces.
        backend = FakeBackend()
        server = sasl.SaslServer("SCRAM-SHA-256", backend.scram_lookup, nonce=lambda: b"SERVERNONCE")
        client = sasl.ScramClient("alice@example.org", "alice-secret", nonce=b"CLIENTNONCE")
        first = client.first()
        server_first, _ = server.step(first)
        final = client.final(server_first)
        server_final, _ = server.step(final)
        self.assertTrue(client.verify(server_final))
        e = lambda data: base64.b64encode(data).decode()
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: AUTH SCRAM-SHA-256 %s
            S: 334 %s
            C: %s
            S: 334 %s
            C:
            S: 235 2.7.0 Authentication successful
            C: MAIL FROM:<alice@example.org>
            S: 250 2.1.0 Ok
            C: RCPT TO:<friend@elsewhere.example>
            S: 250 2.1.5 Ok
            C: BDAT 3 LAST
            C! hi\\n
            S: 550 5.6.0 *
        """ % (GREETING, EHLO, e(first), e(server_first), e(final), e(server_final)),
            sasl_nonce=b"SERVERNONCE")
        self.assertEqual([o.authcid for o in b.auth_outcomes], ["alice@example.org"])

    def test_starttls_discards_pipelined_commands_and_requires_ehlo(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: STARTTLS
            C: MAIL FROM:<injected@evil.example>
            C: RCPT TO:<alice@example.org>
            S: 220 2.0.0 Ready to start TLS
            == TLS
            C: MAIL FROM:<a@client.example>
            S: 503 5.5.1 Send EHLO/HELO first
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            C: x
            C: .
            S: 250 2.0.0 *
        """ % (GREETING, EHLO, EHLO))
        [(env, data)] = b.deliveries
        self.assertEqual(env.mail_from, "a@client.example")
        self.assertIn(b"with ESMTPS id", data)

    def test_loop_detection(self):
        received = "\n".join("C: Received: from hop%d by hop%d; date" % (i, i + 1) for i in range(31))
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            %s
            C: Subject: loop
            C:
            C: x
            C: .
            S: 554 5.4.6 Too many Received headers: mail loop detected
        """ % (GREETING, EHLO, received))
        self.assertEqual(b.deliveries, [])

    def test_too_many_recipients(self):
        rcpts = "\n".join("C: RCPT TO:<any%d@example.org>\nS: 250 2.1.5 Ok" % i for i in range(100))
        self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            S: 250 2.1.0 Ok
            %s
            C: RCPT TO:<one-too-many@example.org>
            S: 452 4.5.3 Too many recipients
        """ % (GREETING, EHLO, rcpts))

    def test_vrfy_252(self):
        self.run_transcript("""
            %s
            C: VRFY alice@example.org
            S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
            C: VRFY nobody
            S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
        """ % GREETING)

    def test_bad_command_counter(self):
        bad = "\n".join("C: XYZZY%d\nS: 500 5.5.2 Command unrecognized" % i for i in range(10))
        self.run_transcript("""
            %s
            %s
            C: XYZZY
            S: 421 4.7.0 %s Error: too many errors
            C: NOOP
            == CLOSED
        """ % (GREETING, bad, HOST))

    def test_line_too_long(self):
        self.run_transcript("""
            %s
            C: HELO %s
            S: 500 5.5.2 Line too long
            C: HELO client.example
            S: 250 %s
        """ % (GREETING, "x" * 3000, HOST))

    def test_shutdown_and_timeout(self):
        self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            == SHUTDOWN
            S: 421 4.3.2 Service shutting down
            == CLOSED
        """ % (GREETING, EHLO))
        self.run_transcript("""
            %s
            == TIMEOUT
            S: 421 4.4.2 %s Error: timeout exceeded
            == CLOSED
        """ % (GREETING, HOST))

    def test_shutdown_during_data_completes_the_message(self):
        b = self.run_transcript("""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            C: Subject: x
            == SHUTDOWN
            C:
            C: body
            C: .
            S: 250 2.0.0 Ok: queued as *
            S: 421 4.3.2 Service shutting down
            == CLOSED
        """ % (GREETING, EHLO))
        self.assertEqual(len(b.deliveries), 1)

    def test_smuggling_attempt(self):
        b = self.run_transcript(r"""
            %s
            C: EHLO client.example
            %s
            C: MAIL FROM:<a@client.example>
            S: 250 2.1.0 Ok
            C: RCPT TO:<alice@example.org>
            S: 250 2.1.5 Ok
            C: DATA
            S: 354 *
            C! Subject: first\r\n\r\nhello\n.\r\nMAIL FROM:<admin@example.org>\r\n
            C: RCPT TO:<bob@example.org>
            C: DATA
            C: Subject: smuggled
            C: .
            S: 550 5.6.0 Message refused: bare CR or LF in message data *
            C: QUIT
            S: 221 2.0.0 Bye
        """ % (GREETING, EHLO))
        self.assertEqual(b.deliveries, [])


if __name__ == "__main__":
    unittest.main()
