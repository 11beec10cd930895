"""The SASL exchange every protocol shares (protocols/auth_exchange.py), and
the one ProtocolError every session turns into its reply at the command
boundary (protocols/base.py).  Issue 9, section 1: one SASL exchange instead of the
two copies SMTP and POP3 had, ready for IMAP's AUTHENTICATE with SASL-IR."""

import ast
import base64
import os
import unittest
from unittest import mock

from protocols import auth_exchange as ax
from protocols import sasl
from protocols.auth_exchange import AuthExchange
from protocols.base import ProtocolError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CREDS = sasl.make_scram_credentials("pencil", salt=b"s" * 16)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class ExchangeTest(unittest.TestCase):
    def test_plain_with_initial_response_asks_the_backend_then_succeeds(self):
        ex = AuthExchange.sasl("PLAIN", lambda u: CREDS)
        step = ex.start(b64(b"\0user\0pencil"))
        self.assertEqual(step.kind, ax.CHECK)
        self.assertEqual((step.outcome.authcid, step.outcome.password), ("user", "pencil"))
        done = ex.verdict("user@example.org")
        self.assertEqual((done.kind, done.user), (ax.SUCCESS, "user@example.org"))

    def test_the_three_answers_of_the_backend(self):
        for answer, kind in ((None, ax.REJECTED), (sasl.AUTH_LOCKOUT, ax.TEMPORARY), ("u", ax.SUCCESS)):
            ex = AuthExchange.sasl("PLAIN", lambda u: CREDS)
            ex.start(b64(b"\0u\0p"))
            step = ex.verdict(answer)
            self.assertEqual(step.kind, kind)
            self.assertEqual(step.outcome.authcid, "u")
        self.assertIs(step.temporary, None)

    def test_login_is_server_first(self):
        ex = AuthExchange.sasl("LOGIN", lambda u: CREDS)
        self.assertEqual(ex.start(None).data, b"Username:")
        self.assertEqual(ex.respond(b64(b"user")).data, b"Password:")
        step = ex.respond(b64(b"pencil"))
        self.assertEqual((step.kind, step.outcome.mechanism), (ax.CHECK, "LOGIN"))

    def test_scram_server_final_only_after_the_backend_accepts(self):
        client = sasl.ScramClient("user", "pencil")
        ex = AuthExchange.sasl("SCRAM-SHA-256", lambda u: CREDS)
        self.assertEqual(ex.start(None), ax.Step(ax.CHALLENGE, data=b""))   # RFC 4422 §5 item 2a
        first = ex.respond(b64(client.first()))
        self.assertEqual(first.kind, ax.CHALLENGE)
        check = ex.respond(b64(client.final(first.data)))
        self.assertEqual(check.kind, ax.CHECK)
        self.assertTrue(check.outcome.scram_verified)
        final = ex.verdict("user")
        self.assertEqual(final.kind, ax.CHALLENGE)
        self.assertTrue(client.verify(final.data))
        self.assertEqual(final.encoded, b64(final.data))
        done = ex.respond(b"")      # RFC 4422 §5 item 2b: the empty answer
        self.assertEqual((done.kind, done.user), (ax.SUCCESS, "user"))

    def test_scram_refused_by_the_backend_never_sends_the_signature(self):
        client = sasl.ScramClient("user", "pencil")
        ex = AuthExchange.sasl("SCRAM-SHA-256", lambda u: CREDS)
        ex.start(None)
        first = ex.respond(b64(client.first()))
        ex.respond(b64(client.final(first.data)))
        step = ex.verdict(sasl.AUTH_LOCKOUT)
        self.assertEqual((step.kind, step.temporary), (ax.TEMPORARY, sasl.AUTH_LOCKOUT))
        self.assertEqual(step.data, b"")

    def test_cancel_bad_base64_and_malformed_data(self):
        self.assertEqual(AuthExchange.sasl("PLAIN", lambda u: CREDS).start(b"*").kind, ax.CANCELLED)
        self.assertEqual(AuthExchange.sasl("PLAIN", lambda u: CREDS).start(b"a!b=").kind, ax.BAD_BASE64)
        step = AuthExchange.sasl("PLAIN", lambda u: CREDS).start(b64(b"only-a-name\0secretpw"))
        self.assertEqual(step.kind, ax.MALFORMED)
        self.assertNotIn("secretpw", step.error)

    def test_sasl_ir_equals_sign_is_the_empty_response(self):
        """RFC 4959 §3 / RFC 5034 §4: "=" is an initial response of zero octets."""
        self.assertEqual(AuthExchange.sasl("PLAIN", lambda u: CREDS).start(b"=").kind, ax.MALFORMED)
        self.assertEqual(AuthExchange.sasl("PLAIN", lambda u: CREDS).start(None).kind, ax.CHALLENGE)

    def test_password_commands_go_straight_to_the_backend(self):
        """POP3 USER/PASS and (next) IMAP LOGIN: the same verdicts."""
        ex = AuthExchange.password("USER", "mrose", "tanstaaf")
        step = ex.start()
        self.assertEqual((step.kind, step.outcome.password), (ax.CHECK, "tanstaaf"))
        self.assertEqual(ex.verdict(None).kind, ax.REJECTED)
        self.assertEqual(ex.verdict("mrose").user, "mrose")


class OneExchangeTest(unittest.TestCase):
    def test_only_the_shared_exchange_builds_a_sasl_server(self):
        bad = []
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "protocols")):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                if rel in ("protocols/auth_exchange.py", "protocols/sasl.py"):
                    continue
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
                bad += ["%s:%d" % (rel, n.lineno) for n in ast.walk(tree)
                        if isinstance(n, ast.Attribute) and n.attr in ("SaslServer", "decode_response")]
        self.assertEqual(bad, [])

    def test_smtp_and_pop3_both_step_the_shared_exchange(self):
        from tests import test_pop3_session as p, test_smtp_session as s
        seen = []
        real = AuthExchange.verdict

        def verdict(self, answer):
            seen.append(self.mechanism)
            return real(self, answer)
        with mock.patch.object(AuthExchange, "verdict", verdict):
            smtp, _ = s.ready_session(peer="127.0.0.1")
            user, password = next(iter(s.USERS.items()))
            out = s.send(smtp, "AUTH PLAIN " + b64(sasl.plain_response(user, password)).decode())
            self.assertEqual(s.codes(out), [235])
            pop, _ = p.make_session(peer=p.LOCAL)
            pop.receive_data(b"AUTH PLAIN " + b64(sasl.plain_response("mrose", "tanstaaf")) + b"\r\n")
            self.assertIn(b"+OK maildrop", p.drain(pop))
        self.assertEqual(seen, ["PLAIN", "PLAIN"])


class ProtocolErrorTest(unittest.TestCase):
    """A handler raising protocols.base.ProtocolError gets its reply sent, and
    the connection closed when it says so, by SMTP and POP3 alike."""

    def test_pop3_boundary(self):
        from protocols.pop3 import server as pop3
        from tests import test_pop3_session as p

        def handler(session, rest):
            raise ProtocolError(b"-ERR refused here\r\n", close=rest == b"close")
        with mock.patch.dict(pop3.COMMANDS, {b"NOOP": (handler, pop3.BOTH)}):
            s, _ = p.make_session(peer=p.LOCAL)
            p.drain(s)
            s.receive_data(b"NOOP\r\n")
            self.assertEqual(p.drain(s), b"-ERR refused here\r\n")
            self.assertFalse(s.closed)
            s.receive_data(b"NOOP close\r\n")
            self.assertEqual(p.drain(s), b"-ERR refused here\r\n")
            self.assertTrue(s.closed)

    def test_pop3_argument_errors_go_through_it(self):
        from tests import test_pop3_session as p
        s, _ = p.make_session(maildrop=p.FakeMaildrop([b"a\r\n"]), peer=p.LOCAL)
        p.login(s)
        for line, reply in ((b"RETR 9", b"-ERR no such message\r\n"), (b"RETR x", b"-ERR invalid message number\r\n"),
                            (b"STAT 1", b"-ERR wrong number of arguments\r\n")):
            s.receive_data(line + b"\r\n")
            self.assertEqual(p.drain(s), reply)

    def test_smtp_boundary(self):
        from protocols.smtp import server as smtp
        from tests import test_smtp_session as t

        def handler(session, arg):
            raise ProtocolError(b"554 5.7.0 refused here\r\n", close=arg == "close")
        with mock.patch.dict(smtp.COMMANDS, {"NOOP": (handler, smtp.COMMANDS["NOOP"][1])}):
            s, _ = t.ready_session()
            self.assertEqual(t.send(s, "NOOP"), ["554 5.7.0 refused here"])
            self.assertFalse(s.closed)
            self.assertEqual(t.send(s, "NOOP close"), ["554 5.7.0 refused here"])
            self.assertTrue(s.closed)


if __name__ == "__main__":
    unittest.main()
