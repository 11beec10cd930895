"""Pop3Session (protocols/pop3/server.py) driven by transcripts: no sockets, no disk.

Transcripts are "C:" / "S:" lines; each client block is fed whole, one byte at
a time and split at random points, and the server's answer must be exactly the
"S:" lines that follow it.  The maildrop and the backend are in-memory fakes
with the interfaces of store/maildrop.py and the wiring.
"""

import base64
import hashlib
import io
import random
import re
import tracemalloc
import unittest

from protocols import sasl
from protocols.base import SessionContext
from protocols.pop3.server import (MAX_COMMAND_LINE, MAX_PENDING_INPUT, READ_CHUNK, Pop3Config, Pop3Session,
                                   Pop3State)
from protocols.backend.contracts import MailboxInUse

HOST = "pop.example.test"
REMOTE = ("192.0.2.7", 40000)
LOCAL = ("127.0.0.1", 40000)


def crlf_form(raw: bytes) -> bytes:
    """Every LF not preceded by CR becomes CRLF (store/maildrop.py's size rule)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def wire_form(raw: bytes) -> bytes:
    """Reference RFC 1939 §3 multi-line body: CRLF form, dot-stuffed, terminated."""
    data = re.sub(rb"(^|\n)\.", rb"\1..", crlf_form(raw))
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def unstuff(wire: bytes) -> bytes:
    """What a client (poplib) reassembles from a multi-line body."""
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


class FakeMessage:
    def __init__(self, uid, size, key):
        self.uid, self.size, self.key = uid, size, key


class FakeReader:
    """The MessageReader contract over a file object (protocols/backend/contracts.py)."""

    def __init__(self, maildrop, fileobj):
        self.maildrop, self.file = maildrop, fileobj

    def read(self, size, done):
        def step():
            try:
                return self.file.read(size)
            except OSError as e:
                return e
        self.maildrop.later("read", lambda: done(step()))

    def close(self):
        self.file.close()


class FakeMaildrop:
    """The Maildrop contract (protocols/backend/contracts.py) over byte strings (or
    file factories): each method records its call; ``done`` runs at once, or,
    with ``deferred`` set, only when the test calls ``run_pending``."""

    def __init__(self, bodies, sizes=None):
        self.bodies = list(bodies)
        self.messages = []
        for i, body in enumerate(self.bodies):
            size = sizes[i] if sizes else len(crlf_form(body))
            self.messages.append(FakeMessage("uid-%d" % (i + 1), size, "key%d" % (i + 1)))
        self.seen = []
        self.committed = []
        self.closes = 0
        self.commit_error = None        # an OSError: commit_deletes fails (the Maildrop contract)
        self.open_error = None          # an OSError: open_message fails
        self.deferred = False
        self.pending = []               # (name, completion) while deferred
        self.calls = []                 # every method asked, in order

    def later(self, name, completion):
        self.calls.append(name)
        if self.deferred:
            self.pending.append((name, completion))
        else:
            completion()

    def run_pending(self):
        """Complete the steps asked so far (not the ones they lead to)."""
        batch, self.pending = self.pending, []
        for _, completion in batch:
            completion()

    def _open(self, i):
        if self.open_error is not None:
            return self.open_error
        body = self.bodies[i]
        return FakeReader(self, body() if callable(body) else io.BytesIO(body))

    def open_message(self, i, done):
        self.later("open_message", lambda: done(self._open(i)))

    def mark_seen(self, i, done):
        self.later("mark_seen", lambda: (self.seen.append(i), done(None)))

    def commit_deletes(self, indices, done):
        """None, or OSError (the Maildrop contract)."""
        wanted = list(indices)

        def commit():
            self.committed.append(wanted)
            done(self.commit_error)
        self.later("commit_deletes", commit)

    def close(self, done=None):
        def close():
            self.closes += 1
            if done is not None:
                done(None)
        self.later("close", close)


class FakeBackend:
    """backend.scram_lookup / authenticate / open_maildrop, synchronous by default."""

    def __init__(self, maildrop=None, users=None):
        self.users = users or {"mrose": "tanstaaf"}
        self.maildrop = maildrop if maildrop is not None else FakeMaildrop([])
        self.open_error = None
        self.outcomes = []
        self.deferred = False
        self.pending = []
        self._creds = {}

    def scram_lookup(self, username):
        password = self.users.get(username, "no such user, stable fake")
        if username not in self._creds:
            self._creds[username] = sasl.make_scram_credentials(password, salt=b"s" * 16)
        return self._creds[username]

    def authenticate(self, ctx, outcome, done):
        self.outcomes.append(outcome)
        if outcome.password is not None:
            ok = self.users.get(outcome.authcid) == outcome.password
        else:
            ok = bool(outcome.scram_verified)
        self._call(done, outcome.authcid if ok else None)

    def open_maildrop(self, ctx, user, done):
        self._call(done, self.open_error if self.open_error else self.maildrop)

    def _call(self, done, value):
        if self.deferred:
            self.pending.append(lambda: done(value))
        else:
            done(value)

    def run_pending(self):
        while self.pending:
            self.pending.pop(0)()


def drain(session):
    out = b""
    while True:
        data = session.data_to_send()
        if not data:
            return out
        out += data


def make_session(maildrop=None, peer=REMOTE, tls_active=False, tls_available=True, backend=None,
                 **config):
    backend = backend or FakeBackend(maildrop)
    wakes = []
    ctx = SessionContext(peer=peer, listener="pop3", tls_active=tls_active,
                         tls_available=tls_available, wake=lambda: wakes.append(1))
    cfg = Pop3Config(hostname=HOST, **config)
    session = Pop3Session(ctx, cfg, backend)
    session.wakes = wakes
    return session, backend


def whole(data, rng):
    return [data]


def bytewise(data, rng):
    return [data[i:i + 1] for i in range(len(data))]


def random_split(data, rng):
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


FEEDERS = (whole, bytewise, random_split)


def parse_transcript(text):
    """[(client_bytes, expected_server_bytes)]; the first entry has client b"" (greeting)."""
    steps = [[b"", b""]]
    for raw in text.strip("\n").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        who, line = raw[:2], raw[3:].encode("utf-8") + b"\r\n"
        if who == "C:":
            if steps[-1][1] or len(steps) == 1:
                steps.append([b"", b""])
            steps[-1][0] += line
        else:
            steps[-1][1] += line
    return steps


class TranscriptCase(unittest.TestCase):
    def run_transcript(self, text, make=None, seed=1939):
        """Replays ``text`` with every feeder; returns the last (session, backend)."""
        result = None
        for feeder in FEEDERS:
            rng = random.Random(seed)
            session, backend = make() if make else make_session(peer=LOCAL)
            for client, expected in parse_transcript(text):
                got = b""
                for piece in (feeder(client, rng) if client else []):
                    session.receive_data(piece)
                    got += drain(session)
                got += drain(session)
                self.assertEqual(got.decode("utf-8", "replace"), expected.decode("utf-8"),
                                 "feeder %s, after client %r" % (feeder.__name__, client))
            result = (session, backend)
        return result


MSG1 = b"From: a@example.test\r\nSubject: one\r\n\r\nbody one\r\n"
MSG2 = b"From: b@example.test\r\nSubject: two\r\n\r\n.leading dot\r\nline 2\nlf only\n"


class Rfc1939ExampleTest(TranscriptCase):
    def test_rfc1939_section10_session_with_user_pass(self):
        """RFC 1939 §10, with USER/PASS instead of APOP (no APOP: see the module docstring)."""
        sizes = (len(MSG1), len(crlf_form(MSG2)))

        def make():
            return make_session(FakeMaildrop([MSG1, MSG2]), peer=LOCAL)
        s, b = self.run_transcript("""
S: +OK pop.example.test POP3 server ready
C: USER mrose
S: +OK send PASS
C: PASS tanstaaf
S: +OK maildrop has 2 messages (%(t)d octets)
C: STAT
S: +OK 2 %(t)d
C: LIST
S: +OK 2 messages (%(t)d octets)
S: 1 %(a)d
S: 2 %(b)d
S: .
C: RETR 1
S: +OK %(a)d octets
S: From: a@example.test
S: Subject: one
S:
S: body one
S: .
C: DELE 1
S: +OK message 1 deleted
C: RETR 2
S: +OK %(b)d octets
S: From: b@example.test
S: Subject: two
S:
S: ..leading dot
S: line 2
S: lf only
S: .
C: DELE 2
S: +OK message 2 deleted
C: QUIT
S: +OK pop.example.test POP3 server signing off (maildrop empty)
""" % {"a": sizes[0], "b": sizes[1], "t": sum(sizes)}, make)
        self.assertTrue(s.closed)
        self.assertEqual(b.maildrop.committed, [[0, 1]])
        self.assertEqual(b.maildrop.seen, [0, 1])
        self.assertEqual(b.maildrop.closes, 1)
        self.assertIs(s.state, Pop3State.UPDATE)

    def test_pipelined_commands_are_answered_in_order(self):
        s, b = make_session(FakeMaildrop([MSG1]), peer=LOCAL)
        drain(s)
        s.receive_data(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nQUIT\r\n")
        out = drain(s)
        self.assertEqual(out, b"+OK send PASS\r\n+OK maildrop has 1 messages (%d octets)\r\n"
                              b"+OK 1 %d\r\n+OK %d octets\r\n" % ((len(MSG1),) * 3)
                         + MSG1 + b".\r\n+OK message 1 deleted\r\n+OK\r\n"
                         b"+OK pop.example.test POP3 server signing off (maildrop empty)\r\n")
        self.assertTrue(s.closed)
        self.assertEqual(b.maildrop.committed, [[0]])


def login(session, user=b"mrose", password=b"tanstaaf"):
    drain(session)
    session.receive_data(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
    return drain(session)


class CapaTest(unittest.TestCase):
    def capa(self, session):
        drain(session)
        session.receive_data(b"CAPA\r\n")
        lines = drain(session).split(b"\r\n")
        self.assertEqual(lines[0], b"+OK Capability list follows")
        self.assertEqual(lines[-2:], [b".", b""])
        return [l.decode() for l in lines[1:-2]]

    def test_capa_without_tls_offers_stls_and_scram_only(self):
        s, _ = make_session()
        self.assertEqual(self.capa(s), [
            "TOP", "UIDL", "SASL SCRAM-SHA-256", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
            "STLS", "EXPIRE NEVER", "IMPLEMENTATION mailsrv", "UTF8"])

    def test_capa_with_tls_offers_user_and_plain_no_stls(self):
        s, _ = make_session(tls_active=True)
        self.assertEqual(self.capa(s), [
            "TOP", "UIDL", "USER", "SASL PLAIN LOGIN SCRAM-SHA-256", "RESP-CODES",
            "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION mailsrv", "UTF8"])

    def test_capa_without_certificate_has_no_stls(self):
        s, _ = make_session(tls_available=False)
        self.assertNotIn("STLS", self.capa(s))

    def test_capa_on_loopback_offers_user_when_configured(self):
        s, _ = make_session(peer=LOCAL)
        self.assertIn("USER", self.capa(s))
        s, _ = make_session(peer=LOCAL, plaintext_auth_loopback=False)
        self.assertNotIn("USER", self.capa(s))
        s, _ = make_session(allow_plaintext_auth=True)
        self.assertIn("USER", self.capa(s))

    def test_capa_in_transaction_has_no_stls(self):
        s, _ = make_session(peer=LOCAL)
        login(s)
        caps = self.capa(s)
        self.assertNotIn("STLS", caps)
        self.assertIn("TOP", caps)


class AuthorizationTest(TranscriptCase):
    def test_user_refused_without_tls(self):
        self.run_transcript("""
S: +OK pop.example.test POP3 server ready
C: USER mrose
S: -ERR [AUTH] Plaintext authentication disallowed, use STLS
C: PASS tanstaaf
S: -ERR USER first
C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
S: -ERR Unsupported authentication mechanism
C: QUIT
S: +OK pop.example.test POP3 server signing off
""", make=lambda: make_session())

    def test_bad_password_gives_auth_code_and_stays_in_authorization(self):
        s, b = self.run_transcript("""
S: +OK pop.example.test POP3 server ready
C: USER mrose
S: +OK send PASS
C: PASS wrong
S: -ERR [AUTH] Authentication failed
C: STAT
S: -ERR command not valid in this state
C: USER mrose
S: +OK send PASS
C: PASS tanstaaf
S: +OK maildrop has 0 messages (0 octets)
""")
        self.assertIs(s.state, Pop3State.TRANSACTION)

    def test_password_may_contain_spaces(self):
        s, b = make_session(peer=LOCAL)
        b.users["mrose"] = "with two  spaces "
        self.assertIn(b"+OK maildrop", login(s, password=b"with two  spaces "))

    def test_pass_must_follow_user_immediately(self):
        self.run_transcript("""
S: +OK pop.example.test POP3 server ready
C: USER mrose
S: +OK send PASS
C: NOOP
S: -ERR command not valid in this state
C: PASS tanstaaf
S: -ERR USER first
""")

    def test_too_many_auth_failures_close(self):
        s, b = make_session(peer=LOCAL, max_auth_failures=2)
        login(s, password=b"x")
        out = login(s, password=b"y")
        self.assertTrue(out.endswith(b"-ERR [AUTH] Authentication failed, closing\r\n"))
        self.assertTrue(s.closed)

    def test_in_use_when_maildrop_locked(self):
        s, b = make_session(peer=LOCAL)
        b.open_error = MailboxInUse("locked")
        self.assertEqual(login(s), b"+OK send PASS\r\n-ERR [IN-USE] Maildrop is locked by another session\r\n")
        self.assertIs(s.state, Pop3State.AUTHORIZATION)
        b.open_error = None
        self.assertIn(b"+OK maildrop", login(s))

    def test_other_open_error_is_sys_temp(self):
        s, b = make_session(peer=LOCAL)
        b.open_error = OSError("disk on fire")
        with self.assertLogs("mailsrv.pop3", "ERROR"):
            self.assertTrue(login(s).endswith(b"-ERR [SYS/TEMP] Cannot open the maildrop\r\n"))
        self.assertIs(s.state, Pop3State.AUTHORIZATION)

    def test_permanent_open_error_is_sys_perm(self):
        # RFC 3206 §4: SYS/PERM when retrying cannot help (the Maildir is not a directory,
        # permissions are wrong); the operator has to act.
        for error in (PermissionError(13, "Permission denied"), NotADirectoryError(20, "Not a directory")):
            s, b = make_session(peer=LOCAL)
            b.open_error = error
            with self.assertLogs("mailsrv.pop3", "ERROR"):
                self.assertIn(b"-ERR [SYS/PERM] ", login(s))
            self.assertIs(s.state, Pop3State.AUTHORIZATION)

    def test_quit_in_authorization(self):
        s, b = make_session()
        drain(s)
        s.receive_data(b"quit\r\n")
        self.assertEqual(drain(s), b"+OK pop.example.test POP3 server signing off\r\n")
        self.assertTrue(s.closed)
        self.assertEqual(b.maildrop.closes, 0)

    def test_utf8_command_and_stls_refused_after_it(self):
        self.run_transcript("""
S: +OK pop.example.test POP3 server ready
C: UTF8
S: +OK UTF8 enabled
C: STLS
S: -ERR STLS not permitted after UTF8
""", make=lambda: make_session())

    def test_commands_outside_their_state(self):
        s, b = make_session(peer=LOCAL)
        login(s)
        for cmd in (b"USER mrose", b"PASS x", b"AUTH PLAIN", b"STLS", b"UTF8"):
            s.receive_data(cmd + b"\r\n")
            self.assertEqual(drain(s), b"-ERR command not valid in this state\r\n", cmd)

    def test_login_is_logged_without_password(self):
        s, b = make_session(peer=LOCAL)
        with self.assertLogs("mailsrv.pop3", "INFO") as logs:
            login(s, password=b"wrong-secret")
            login(s)
            s.receive_data(b"QUIT\r\n")
            drain(s)
        text = "\n".join(logs.output)
        self.assertIn("login failed", text)
        self.assertIn("login ok user=mrose", text)
        self.assertIn("retrieved=0 deleted=0", text)
        self.assertNotIn("wrong-secret", text)
        self.assertNotIn("tanstaaf", text)


class StlsTest(unittest.TestCase):
    def test_stls_discards_pipelined_plaintext_and_requires_fresh_auth(self):
        s, b = make_session(peer=LOCAL)
        drain(s)
        s.receive_data(b"USER mrose\r\n")
        self.assertEqual(drain(s), b"+OK send PASS\r\n")
        s.receive_data(b"STLS\r\nPASS tanstaaf\r\nSTAT\r\n")
        self.assertEqual(drain(s), b"+OK Begin TLS negotiation\r\n")
        self.assertTrue(s.want_tls)
        s.receive_data(b"PASS injected\r\n")   # still plaintext: discarded
        self.assertEqual(drain(s), b"")
        self.assertEqual(b.outcomes, [])
        s.tls_started({"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"})
        self.assertTrue(s.ctx.tls_active)
        self.assertFalse(s.want_tls)
        self.assertEqual(drain(s), b"")         # RFC 2595 §4: no new greeting
        s.receive_data(b"PASS tanstaaf\r\nSTLS\r\nSTAT\r\n")
        self.assertEqual(drain(s), b"-ERR USER first\r\n-ERR Command not permitted when TLS active\r\n"
                                   b"-ERR command not valid in this state\r\n")
        self.assertIn(b"+OK maildrop", login(s))

    def test_capabilities_change_after_stls_for_a_remote_client(self):
        """RFC 2595 §4: the client must re-issue CAPA; USER and PLAIN appear, STLS goes."""
        s, b = make_session()
        drain(s)
        s.receive_data(b"USER mrose\r\nSTLS\r\n")
        self.assertEqual(drain(s), b"-ERR [AUTH] Plaintext authentication disallowed, use STLS\r\n"
                                   b"+OK Begin TLS negotiation\r\n")
        s.tls_started({"version": "TLSv1.3", "cipher": "x"})
        s.receive_data(b"CAPA\r\n")
        caps = drain(s).split(b"\r\n")
        self.assertIn(b"USER", caps)
        self.assertIn(b"SASL PLAIN LOGIN SCRAM-SHA-256", caps)
        self.assertNotIn(b"STLS", caps)
        self.assertIn(b"+OK maildrop", login(s))

    def test_stls_without_certificate(self):
        s, _ = make_session(tls_available=False)
        drain(s)
        s.receive_data(b"STLS\r\n")
        self.assertEqual(drain(s), b"-ERR TLS not available\r\n")
        self.assertFalse(s.want_tls)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class SaslAuthTest(unittest.TestCase):
    def start(self, **kw):
        s, b = make_session(**kw)
        drain(s)
        return s, b

    def send(self, s, line):
        s.receive_data(line + b"\r\n")
        return drain(s)

    def test_auth_plain_with_initial_response(self):
        s, b = self.start(tls_active=True)
        out = self.send(s, b"AUTH PLAIN " + b64(sasl.plain_response("mrose", "tanstaaf")))
        self.assertEqual(out, b"+OK maildrop has 0 messages (0 octets)\r\n")
        self.assertEqual(b.outcomes[0].mechanism, "PLAIN")
        self.assertIs(s.state, Pop3State.TRANSACTION)

    def test_auth_plain_empty_challenge_then_response(self):
        s, b = self.start(tls_active=True)
        self.assertEqual(self.send(s, b"AUTH plain"), b"+ \r\n")
        out = self.send(s, b64(sasl.plain_response("mrose", "tanstaaf")))
        self.assertEqual(out, b"+OK maildrop has 0 messages (0 octets)\r\n")

    def test_auth_login(self):
        s, b = self.start(tls_active=True)
        self.assertEqual(self.send(s, b"AUTH LOGIN"), b"+ " + b64(b"Username:") + b"\r\n")
        self.assertEqual(self.send(s, b64(b"mrose")), b"+ " + b64(b"Password:") + b"\r\n")
        self.assertTrue(self.send(s, b64(b"tanstaaf")).startswith(b"+OK maildrop"))

    def test_auth_scram_sha_256_over_plaintext(self):
        s, b = self.start()
        client = sasl.ScramClient("mrose", "tanstaaf")
        out = self.send(s, b"AUTH SCRAM-SHA-256 " + b64(client.first()))
        self.assertTrue(out.startswith(b"+ ") and out.endswith(b"\r\n"))
        server_first = base64.b64decode(out[2:-2])
        out = self.send(s, b64(client.final(server_first)))
        self.assertTrue(client.verify(base64.b64decode(out[2:-2])))
        self.assertEqual(self.send(s, b""), b"+OK maildrop has 0 messages (0 octets)\r\n")
        self.assertTrue(b.outcomes[0].scram_verified)

    def test_auth_scram_wrong_password(self):
        s, b = self.start()
        client = sasl.ScramClient("mrose", "wrong")
        out = self.send(s, b"AUTH SCRAM-SHA-256")
        self.assertEqual(out, b"+ \r\n")
        out = self.send(s, b64(client.first()))
        out = self.send(s, b64(client.final(base64.b64decode(out[2:-2]))))
        self.assertEqual(out, b"-ERR [AUTH] Authentication failed\r\n")
        self.assertIs(s.state, Pop3State.AUTHORIZATION)

    def test_auth_cancel_and_bad_base64(self):
        s, b = self.start(tls_active=True)
        self.send(s, b"AUTH PLAIN")
        self.assertEqual(self.send(s, b"*"), b"-ERR [AUTH] Authentication cancelled\r\n")
        self.send(s, b"AUTH PLAIN")
        self.assertEqual(self.send(s, b"not base64!"), b"-ERR [AUTH] Invalid base64 in SASL response\r\n")
        self.assertEqual(self.send(s, b"AUTH PLAIN " + b64(b"no-nuls")), b"-ERR [AUTH] malformed PLAIN message\r\n")
        self.assertEqual(b.outcomes, [])
        self.assertEqual(self.send(s, b"NOOP"), b"-ERR command not valid in this state\r\n")

    def test_auth_unknown_mechanism_and_listing(self):
        s, b = self.start(tls_active=True)
        self.assertEqual(self.send(s, b"AUTH CRAM-MD5"), b"-ERR Unsupported authentication mechanism\r\n")
        self.assertEqual(self.send(s, b"AUTH"), b"+OK\r\nPLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\n.\r\n")
        self.assertEqual(self.send(s, b"AUTH PLAIN a b"), b"-ERR syntax: AUTH mechanism [initial-response]\r\n")

    def test_sasl_response_may_exceed_command_limit(self):
        s, b = self.start(tls_active=True)
        b.users["mrose"] = "p" * 1000
        self.send(s, b"AUTH PLAIN")
        response = b64(sasl.plain_response("mrose", "p" * 1000))
        self.assertGreater(len(response), MAX_COMMAND_LINE)
        self.assertTrue(self.send(s, response).startswith(b"+OK maildrop"))


class TransactionTest(TranscriptCase):
    def session(self, bodies=(MSG1, MSG2, b"three\r\n")):
        s, b = make_session(FakeMaildrop(list(bodies)), peer=LOCAL)
        login(s)
        return s, b

    def send(self, s, line):
        s.receive_data(line + b"\r\n")
        return drain(s)

    def test_deleted_messages_are_invisible_and_rset_restores(self):
        s, b = self.session()
        a, c = len(MSG1), len(b"three\r\n")
        self.assertEqual(self.send(s, b"DELE 2"), b"+OK message 2 deleted\r\n")
        self.assertEqual(self.send(s, b"DELE 2"), b"-ERR message 2 already deleted\r\n")
        for cmd in (b"RETR 2", b"LIST 2", b"TOP 2 0", b"UIDL 2"):
            self.assertEqual(self.send(s, cmd), b"-ERR message 2 already deleted\r\n", cmd)
        self.assertEqual(self.send(s, b"STAT"), b"+OK 2 %d\r\n" % (a + c))
        self.assertEqual(self.send(s, b"LIST"), b"+OK 2 messages (%d octets)\r\n1 %d\r\n3 %d\r\n.\r\n" % (a + c, a, c))
        self.assertEqual(self.send(s, b"UIDL"), b"+OK unique-id listing follows\r\n1 uid-1\r\n3 uid-3\r\n.\r\n")
        total = sum(m.size for m in b.maildrop.messages)
        self.assertEqual(self.send(s, b"RSET"), b"+OK maildrop has 3 messages (%d octets)\r\n" % total)
        self.assertEqual(self.send(s, b"LIST 2"), b"+OK 2 %d\r\n" % len(crlf_form(MSG2)))
        self.send(s, b"QUIT")
        self.assertEqual(b.maildrop.committed, [])
        self.assertEqual(b.maildrop.closes, 1)

    def test_dele_then_quit_commits_exactly_those(self):
        s, b = self.session()
        self.send(s, b"DELE 3")
        self.send(s, b"DELE 1")
        self.assertEqual(self.send(s, b"QUIT"), b"+OK pop.example.test POP3 server signing off (1 messages left)\r\n")
        self.assertEqual(b.maildrop.committed, [[0, 2]])
        self.assertEqual(b.maildrop.closes, 1)
        self.assertTrue(s.closed)

    def test_commit_failure_reports_sys_temp(self):
        for failure in (OSError("EIO"), OSError(5, "1 deleted messages not removed")):
            s, b = self.session()
            b.maildrop.commit_error = failure
            self.send(s, b"DELE 1")
            with self.assertLogs("mailsrv.pop3", "ERROR"):
                out = self.send(s, b"QUIT")
            self.assertEqual(out, b"-ERR [SYS/TEMP] some deleted messages not removed\r\n")
            self.assertEqual(b.maildrop.closes, 1)
            self.assertTrue(s.closed)

    def test_eof_in_transaction_commits_nothing_and_releases_the_lock(self):
        s, b = self.session()
        self.send(s, b"DELE 1")
        s.receive_data(b"")
        self.assertTrue(s.closed)
        self.assertEqual(b.maildrop.committed, [])
        self.assertEqual(b.maildrop.closes, 1)
        s.receive_data(b"QUIT\r\n")  # nothing after the end
        self.assertEqual(drain(s), b"")
        self.assertEqual(b.maildrop.committed, [])

    def test_timeout_closes_silently_without_deleting(self):
        s, b = self.session()
        self.send(s, b"DELE 1")
        s.timeout()
        self.assertEqual(drain(s), b"")  # RFC 1939 §3: no response
        self.assertTrue(s.closed)
        self.assertEqual((b.maildrop.committed, b.maildrop.closes), ([], 1))

    def test_shutdown_answers_sys_temp_and_deletes_nothing(self):
        s, b = self.session()
        self.send(s, b"DELE 1")
        self.assertFalse(s.busy)
        s.shutdown()
        self.assertEqual(drain(s), b"-ERR [SYS/TEMP] server shutting down\r\n")
        self.assertTrue(s.closed)
        self.assertEqual((b.maildrop.committed, b.maildrop.closes), ([], 1))

    def test_shutdown_during_retr_finishes_the_message_first(self):
        s, b = self.session()
        s.receive_data(b"RETR 1\r\n")
        first = s.data_to_send()
        s.shutdown()
        self.assertEqual(b.maildrop.closes, 1)
        rest = drain(s)
        self.assertEqual(first + rest, b"+OK %d octets\r\n" % len(MSG1) + MSG1
                         + b".\r\n-ERR [SYS/TEMP] server shutting down\r\n")
        self.assertTrue(s.closed)

    def test_message_number_syntax(self):
        s, b = self.session()
        self.assertEqual(self.send(s, b"RETR 0"), b"-ERR no such message\r\n")
        self.assertEqual(self.send(s, b"RETR 4"), b"-ERR no such message\r\n")
        self.assertEqual(self.send(s, b"RETR -1"), b"-ERR invalid message number\r\n")
        self.assertEqual(self.send(s, b"RETR"), b"-ERR wrong number of arguments\r\n")
        self.assertEqual(self.send(s, b"LIST 1 2"), b"-ERR wrong number of arguments\r\n")
        self.assertEqual(self.send(s, b"TOP 1 x"), b"-ERR invalid line count\r\n")
        self.assertEqual(self.send(s, b"STAT now"), b"-ERR wrong number of arguments\r\n")
        self.assertEqual(self.send(s, b"retr 3"), b"+OK 7 octets\r\nthree\r\n.\r\n")

    def test_uidl_single_and_list_single(self):
        s, b = self.session()
        self.assertEqual(self.send(s, b"UIDL 2"), b"+OK 2 uid-2\r\n")
        self.assertEqual(self.send(s, b"LIST 3"), b"+OK 3 7\r\n")

    def test_retr_marks_seen(self):
        s, b = self.session()
        self.send(s, b"RETR 2")
        self.send(s, b"TOP 3 1")
        self.assertEqual(b.maildrop.seen, [1])  # TOP does not mark \Seen

    def test_top(self):
        body = b"Subject: t\r\nX: y\r\n\r\n.dot\r\nl2\r\nl3\r\n"
        s, b = self.session([body, b"Subject: nobody\r\n", b"H: lf\n\nb1\nb2\n"])
        self.assertEqual(self.send(s, b"TOP 1 0"), b"+OK top of message follows\r\nSubject: t\r\nX: y\r\n\r\n.\r\n")
        self.assertEqual(self.send(s, b"TOP 1 2"),
                         b"+OK top of message follows\r\nSubject: t\r\nX: y\r\n\r\n..dot\r\nl2\r\n.\r\n")
        self.assertEqual(self.send(s, b"TOP 1 99"),
                         b"+OK top of message follows\r\n" + wire_form(body))
        self.assertEqual(self.send(s, b"TOP 2 5"), b"+OK top of message follows\r\nSubject: nobody\r\n.\r\n")
        self.assertEqual(self.send(s, b"TOP 3 1"), b"+OK top of message follows\r\nH: lf\r\n\r\nb1\r\n.\r\n")

    def test_message_without_final_newline_and_empty_message(self):
        s, b = self.session([b"Subject: x\r\n\r\nno newline", b""])
        self.assertEqual(self.send(s, b"RETR 1"), b"+OK 24 octets\r\nSubject: x\r\n\r\nno newline\r\n.\r\n")
        self.assertEqual(self.send(s, b"RETR 2"), b"+OK 0 octets\r\n.\r\n")

    def test_unreadable_message(self):
        s, b = self.session()

        b.maildrop.open_error = FileNotFoundError("gone")
        with self.assertLogs("mailsrv.pop3", "ERROR"):
            self.assertEqual(self.send(s, b"RETR 1"), b"-ERR [SYS/TEMP] cannot read message 1\r\n")
        self.assertEqual(b.maildrop.seen, [])


class StreamingTest(unittest.TestCase):
    """RETR/TOP output across 64 KB read boundaries (RFC 1939 §3 byte-stuffing)."""

    def retr(self, raw):
        s, b = make_session(FakeMaildrop([raw]), peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\nQUIT\r\n")
        chunks = []
        while True:
            data = s.data_to_send()
            if not data:
                break
            chunks.append(data)
        out = b"".join(chunks)
        head = b"+OK %d octets\r\n" % b.maildrop.messages[0].size
        self.assertTrue(out.startswith(head))
        self.assertTrue(out.endswith(b"+OK pop.example.test POP3 server signing off (1 messages left)\r\n"))
        body = out[len(head):out.rindex(b"+OK pop.example.test")]
        return body, b.maildrop.messages[0].size, chunks

    def check(self, raw):
        body, size, _ = self.retr(raw)
        self.assertEqual(body, wire_form(raw))
        self.assertEqual(len(unstuff(body)), size if raw.endswith(b"\n") or not raw else size + 2)

    def test_dots_and_line_ends_at_chunk_boundaries(self):
        n = READ_CHUNK
        cases = {
            "dot at chunk start after CRLF": b"a" * (n - 2) + b"\r\n.x\r\n",
            "dot at chunk start after LF": b"a" * (n - 1) + b"\n.x\n",
            "CR ends chunk, LF starts next": b"a" * (n - 1) + b"\r\n.y\r\n",
            "CR LF dot straddles": b"a" * (n - 1) + b"\r\n..\r\n.\r\n",
            "lone CR at boundary": b"a" * (n - 1) + b"\rb\r\n",
            "lone CR at end": b"a" * (n - 1) + b"\r",
            "LF-only two chunks": (b"x" * 99 + b"\n." + b"\n") * (3 * n // 100),
            "CR at end of second chunk": b"b" * (2 * n - 1) + b"\r\n.\r\n",
            "dot exactly at 2nd boundary": b"c" * (2 * n - 2) + b"\r\n." + b"\r\n",
        }
        for name, raw in cases.items():
            with self.subTest(name):
                self.check(raw)

    def test_random_messages_match_the_reference(self):
        rng = random.Random(2449)
        for _ in range(30):
            parts = [rng.choice([b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\n.", b"x" * 1000])
                     for _ in range(rng.randint(0, 400))]
            raw = b"".join(parts)
            pad = rng.choice([0, READ_CHUNK - len(raw) % READ_CHUNK - 1, READ_CHUNK - 1])
            raw = b"y" * pad + raw
            with self.subTest(len=len(raw)):
                self.check(raw)

    def test_top_across_chunk_boundary(self):
        raw = b"H: " + b"h" * (READ_CHUNK - 5) + b"\r\n\r\n.b1\r\nb2\r\nb3\r\n"
        s, b = make_session(FakeMaildrop([raw]), peer=LOCAL)
        login(s)
        s.receive_data(b"TOP 1 2\r\n")
        self.assertEqual(drain(s), b"+OK top of message follows\r\n" + raw[:READ_CHUNK + 2]
                         + b"..b1\r\nb2\r\n.\r\n")

    def test_20_mb_message_streams_in_bounded_memory(self):
        line = b".stuffed line padded " + b"z" * 978 + b"\n"   # 1000 octets, LF only
        count = 20 * 1024
        size = count * (len(line) + 1)

        class Generated(io.RawIOBase):
            def __init__(self):
                self.left = count * len(line)
                self.pos = 0

            def readable(self):
                return True

            def read(self, n=-1):
                n = min(n, self.left)
                start = self.pos % len(line)
                data = (line * (n // len(line) + 2))[start:start + n]
                self.pos += n
                self.left -= n
                return data

        s, b = make_session(FakeMaildrop([Generated], sizes=[size]), peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\n")
        expect = hashlib.sha256()
        expect.update(b"+OK %d octets\r\n" % size)
        got = hashlib.sha256()
        total = 0
        biggest = 0
        tracemalloc.start()
        try:
            while True:
                data = s.data_to_send()
                if not data:
                    break
                biggest = max(biggest, len(data))
                total += len(data)
                got.update(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        wire_line = b"." + line[:-1] + b"\r\n"
        for _ in range(count):
            expect.update(wire_line)
        expect.update(b".\r\n")
        self.assertEqual(got.hexdigest(), expect.hexdigest())
        self.assertEqual(total, len(b"+OK %d octets\r\n" % size) + count * len(wire_line) + 3)
        self.assertLessEqual(biggest, 2 * READ_CHUNK + 5)
        self.assertLess(peak, 2 * 1024 * 1024, "RETR must not hold the message in memory")
        self.assertGreater(size, 20 * 1000 * 1000)


class LimitsTest(unittest.TestCase):
    def test_command_line_limit_is_255_octets_with_crlf(self):
        s, b = make_session(peer=LOCAL)
        drain(s)
        s.receive_data(b"USER " + b"u" * (MAX_COMMAND_LINE - 7) + b"\r\n")
        self.assertEqual(drain(s), b"+OK send PASS\r\n")
        s.receive_data(b"USER " + b"u" * (MAX_COMMAND_LINE - 6) + b"\r\nNOOP\r\n")
        self.assertEqual(drain(s), b"-ERR line too long\r\n-ERR command not valid in this state\r\n")

    def test_sasl_lines_may_reach_12288_octets_but_not_more(self):
        """RFC 5034 §4 arbitrary-length responses, bounded by RFC 4954 §4's 12288."""
        s, b = make_session(tls_active=True)
        drain(s)
        s.receive_data(b"AUTH PLAIN\r\n")
        self.assertEqual(drain(s), b"+ \r\n")
        s.receive_data(b"A" * 12288 + b"\r\n")     # valid base64, decodes to garbage
        self.assertTrue(drain(s).startswith(b"-ERR [AUTH] "))
        s.receive_data(b"AUTH PLAIN\r\n")
        drain(s)
        s.receive_data(b"A" * 12292 + b"\r\nNOOP\r\n")
        self.assertEqual(drain(s), b"-ERR line too long\r\n-ERR command not valid in this state\r\n")

    def test_too_many_bad_commands_close(self):
        s, b = make_session(max_bad_commands=3)
        drain(s)
        s.receive_data(b"FOO\r\nBAR\r\nBAZ\r\nCAPA\r\n")
        self.assertEqual(drain(s), b"-ERR unknown command\r\n-ERR unknown command\r\n"
                                   b"-ERR unknown command (too many errors, closing)\r\n")
        self.assertTrue(s.closed)

    def test_too_many_commands_before_login_close(self):
        s, b = make_session(max_commands_before_login=4)
        drain(s)
        s.receive_data(b"UTF8\r\n" * 5)
        self.assertEqual(drain(s), b"+OK UTF8 enabled\r\n" * 4 + b"-ERR too many commands without logging in\r\n")
        self.assertTrue(s.closed)

    def test_unbounded_pipelined_input_while_waiting_closes(self):
        s, b = make_session(FakeMaildrop([MSG1]), peer=LOCAL)
        b.deferred = True
        login(s)
        for _ in range(MAX_PENDING_INPUT // 4096 + 1):
            s.receive_data(b"NOOP\r\n" * 683)
            if s.closed:
                break
        self.assertEqual(drain(s), b"-ERR too much pipelined input\r\n")
        self.assertTrue(s.closed)
        b.run_pending()              # the login completes after the close: nothing is opened
        self.assertEqual((b.pending, b.maildrop.closes), ([], 0))

    def test_idle_timeout_default_is_ten_minutes(self):
        s, _ = make_session()
        self.assertEqual(s.idle_timeout, 600)


class DeferredBackendTest(unittest.TestCase):
    def test_input_waits_for_the_backend_and_wakes_the_loop(self):
        s, b = make_session(FakeMaildrop([MSG1]), peer=LOCAL)
        b.deferred = True
        drain(s)
        s.receive_data(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\n")
        self.assertEqual(drain(s), b"+OK send PASS\r\n")
        s.receive_data(b"LIST 1\r\n")
        self.assertEqual(drain(s), b"")
        b.run_pending()
        self.assertTrue(s.wakes)
        self.assertEqual(drain(s), b"+OK maildrop has 1 messages (%d octets)\r\n+OK 1 %d\r\n+OK 1 %d\r\n"
                         % ((len(MSG1),) * 3))

    def test_eof_while_opening_the_maildrop_closes_it_when_it_arrives(self):
        s, b = make_session(FakeMaildrop([MSG1]), peer=LOCAL)
        b.deferred = True
        drain(s)
        s.receive_data(b"USER mrose\r\nPASS tanstaaf\r\n")
        b.pending.pop(0)()          # authenticate succeeds, open_maildrop is in flight
        s.receive_data(b"")
        self.assertTrue(s.closed)
        b.run_pending()
        self.assertEqual(b.maildrop.closes, 1)
        self.assertEqual(drain(s), b"")

    def test_shutdown_while_authenticating_opens_nothing(self):
        s, b = make_session(FakeMaildrop([MSG1]), peer=LOCAL)
        b.deferred = True
        drain(s)
        s.receive_data(b"USER mrose\r\nPASS tanstaaf\r\n")
        s.shutdown()
        self.assertEqual(drain(s), b"+OK send PASS\r\n-ERR [SYS/TEMP] server shutting down\r\n")
        b.run_pending()             # authenticate succeeds after the shutdown
        self.assertEqual(b.pending, [])
        self.assertEqual(b.maildrop.closes, 0)  # open_maildrop was never asked
        self.assertTrue(s.closed)


class StreamAbortTest(unittest.TestCase):
    def test_eof_during_retr_closes_the_message_file(self):
        files = []

        def opener():
            f = io.BytesIO(b"x" * (3 * READ_CHUNK))
            files.append(f)
            return f
        s, b = make_session(FakeMaildrop([opener], sizes=[3 * READ_CHUNK]), peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
        self.assertTrue(s.data_to_send().startswith(b"+OK"))
        self.assertEqual(len(s.data_to_send()), READ_CHUNK)
        s.receive_data(b"")
        self.assertTrue(files[0].closed)
        self.assertEqual(s.data_to_send(), b"")
        self.assertEqual((b.maildrop.committed, b.maildrop.closes), ([], 1))

    def test_read_error_mid_message_closes_without_terminator(self):
        class Broken(io.RawIOBase):
            calls = 0

            def readable(self):
                return True

            def read(self, n=-1):
                Broken.calls += 1
                if Broken.calls > 1:
                    raise OSError("EIO")
                return b"y" * n
        s, b = make_session(FakeMaildrop([Broken], sizes=[10 ** 6]), peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\n")
        with self.assertLogs("mailsrv.pop3", "ERROR"):
            out = drain(s)
        self.assertFalse(out.endswith(b".\r\n"))
        self.assertTrue(s.closed)
        self.assertEqual((b.maildrop.committed, b.maildrop.closes), ([], 1))


class DiskOffTheLoopTest(unittest.TestCase):
    """Issue 9 §2: the session never waits on the disk.  Every maildrop method
    only records the call here; its completion runs when the test says so, and
    until then the session answers nothing more (input waits)."""

    def test_no_maildrop_step_completes_inside_receive_data(self):
        raw = b"Subject: x\r\n\r\n" + b"z" * (3 * READ_CHUNK)
        drop = FakeMaildrop([raw, MSG1])
        drop.deferred = True
        s, b = make_session(drop, peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\nDELE 2\r\nQUIT\r\n")
        self.assertEqual(drop.calls, ["open_message"])          # asked, not done
        self.assertEqual(drain(s), b"")                           # waiting: nothing answered
        drop.run_pending()                                        # the file is open
        self.assertEqual(drop.calls, ["open_message", "mark_seen"])
        head = s.data_to_send()
        self.assertEqual(head, b"+OK %d octets\r\n" % drop.messages[0].size)
        self.assertEqual(s.data_to_send(), b"")                   # the first read is in a worker
        self.assertEqual(drop.calls.count("read"), 1)
        body = b""
        wakes = len(s.wakes)
        while b"+OK" not in body:
            self.assertLessEqual(len([p for p in drop.pending if p[0] == "read"]), 1)
            drop.run_pending()
            data = drain(s)
            self.assertTrue(data or drop.pending, "the stream stalled")
            body += data
        self.assertGreater(len(s.wakes), wakes)                   # each chunk woke the loop
        self.assertTrue(body.endswith(b".\r\n+OK message 2 deleted\r\n"))
        self.assertEqual(drop.committed, [])                      # QUIT waits in the pipeline
        # the stream's end let QUIT through: the expunge, then the unlock, asked in order
        self.assertEqual(drop.calls[-2:], ["commit_deletes", "close"])
        self.assertEqual((drop.committed, drain(s), s.closed), ([], b"", False))
        drop.run_pending()                                        # the expunge, then the unlock
        self.assertEqual((drop.committed, drop.closes), ([[1]], 1))
        self.assertEqual(drain(s), b"+OK pop.example.test POP3 server signing off (1 messages left)\r\n")
        self.assertTrue(s.closed)

    def test_stream_reads_at_most_two_chunks_ahead(self):
        raw = b"y" * (10 * READ_CHUNK)
        drop = FakeMaildrop([raw])
        s, b = make_session(drop, peer=LOCAL)
        login(s)
        s.receive_data(b"RETR 1\r\n")
        s.data_to_send()                      # the +OK line
        s.data_to_send()                      # one chunk taken
        self.assertLessEqual(drop.calls.count("read"), 3)


if __name__ == "__main__":
    unittest.main()
