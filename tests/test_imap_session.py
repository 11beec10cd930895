"""ImapSession (protocols/imap/session.py): any-state commands, authentication,
limits, the session's end, and a state-walk fuzzer.  No sockets, no disk: the
backend is tests/imap_fake.py's in-memory ImapBackend; transcripts are fed
whole, one byte at a time and split at random points."""

import base64
import random
import unittest

from protocols import sasl
from protocols.imap.session import KEEPALIVE, PREAUTH_LITERAL, ImapState
from tests.imap_fake import (FEEDERS, FakeImapBackend, drain, feed, login, make_session,
                             parse_transcript)

REMOTE = ("192.0.2.7", 40000)


class TranscriptCase(unittest.TestCase):
    def run_transcript(self, text, make=None, seed=9051, prepare=None):
        """Replays ``text`` with every feeder; returns the last (session, backend)."""
        result = None
        for feeder in FEEDERS:
            rng = random.Random(seed)
            session, backend = make() if make else make_session()
            if prepare:
                prepare(session, backend)
            for client, expected in parse_transcript(text):
                got = feed(session, client, feeder, rng)
                self.assertEqual(got.decode("utf-8", "replace"), expected.decode("utf-8"),
                                 "feeder %s, after client %r" % (feeder.__name__, client))
            result = (session, backend)
        return result


PRE_CAPS = ("IMAP4rev2 IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR LOGIN-REFERRALS LITERAL+ "
            "ENABLE ID IDLE NAMESPACE UNSELECT UIDPLUS MOVE MULTIAPPEND CHILDREN LIST-EXTENDED "
            "LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES STATUS=SIZE "
            "APPENDLIMIT=52428800 UTF8=ACCEPT BINARY SAVEDATE WITHIN CONDSTORE QRESYNC UIDONLY")


class LoginReferralTest(unittest.TestCase):
    """RFC 2221: with imap_referral set, right credentials get NO [REFERRAL url]
    and the session stays logged out; wrong ones get the usual failure (a
    referral never tells a guesser that a password was right elsewhere)."""

    def test_right_password_is_referred_wrong_one_fails_as_always(self):
        s, _b = make_session(allow_plaintext_auth=True, referral="mail.example.net:1143")
        out = feed(s, b"a LOGIN fred secret\r\n")
        self.assertEqual(out, b"a NO [REFERRAL imap://fred@mail.example.net:1143/] Your mail is now on "
                              b"mail.example.net:1143; log in there\r\n")
        self.assertIs(s.state, ImapState.NOT_AUTHENTICATED)
        self.assertTrue(feed(s, b"b LOGIN fred wrong\r\n").startswith(b"b NO [AUTHENTICATIONFAILED]"))
        self.assertTrue(feed(s, b"c SELECT INBOX\r\n").startswith(b"c BAD"))

    def test_authenticate_plain_and_an_address_user_name(self):
        import base64
        b = FakeImapBackend()
        b.users["joe@example.org"] = "pw"
        s, _ = make_session(b, allow_plaintext_auth=True, referral="[2001:db8::1]")
        out = feed(s, b"a AUTHENTICATE PLAIN " + base64.b64encode(b"\0joe@example.org\0pw") + b"\r\n")
        self.assertTrue(out.startswith(b"a NO [REFERRAL imap://joe%40example.org@[2001:db8::1]/] "), out)


class AnyStateTest(TranscriptCase):
    def test_greeting_carries_capabilities(self):
        s, _ = make_session()
        self.assertEqual(s.greeting, b"* OK [CAPABILITY " + PRE_CAPS.encode() +
                         b"] imap.example.test IMAP4rev2 server ready\r\n")

    def test_rfc9051_6_1_capability_noop_logout(self):
        """RFC 9051 §6.1.1 - §6.1.3 examples (our capability list, our texts)."""
        s, _ = self.run_transcript("""
C: abcd CAPABILITY
S: * CAPABILITY %s
S: abcd OK CAPABILITY completed
C: a002 NOOP
S: a002 OK NOOP completed
C: A023 LOGOUT
S: * BYE imap.example.test logging out
S: A023 OK LOGOUT completed
""" % PRE_CAPS)
        self.assertTrue(s.closed)

    def test_id_and_pipelined_commands(self):
        self.run_transcript("""
C: a ID ("name" "sodr" "version" "19.34")
C: b ID NIL
C: c NOOP
S: * ID ("name" "mailsrv")
S: a OK ID completed
S: * ID ("name" "mailsrv")
S: b OK ID completed
S: c OK NOOP completed
""")

    def test_bad_commands_go_on_then_bye(self):
        s, _ = self.run_transcript("""
C: a FROB
S: a BAD Unknown command FROB
C: b NOOP extra
S: b BAD expected end of command at ' extra<CRLF>'
C: c SELECT INBOX
S: c BAD SELECT not allowed in the NOT-AUTHENTICATED state
C: d UID NOOP
S: d BAD Unknown command NOOP
""")
        self.assertFalse(s.closed)
        s, _ = make_session(max_bad_commands=2)
        out = feed(s, b"a FROB\r\nb FROB\r\nc NOOP\r\n")
        self.assertEqual(out, b"a BAD Unknown command FROB\r\nb BAD Unknown command FROB\r\n"
                              b"* BYE Too many bad commands\r\n")
        self.assertTrue(s.closed)

    def test_enable_only_when_authenticated(self):
        s, _ = self.run_transcript("""
C: a ENABLE IMAP4rev2
S: a BAD ENABLE not allowed in the NOT-AUTHENTICATED state
C: b LOGIN fred secret
S: b OK [CAPABILITY %s] Logged in
C: c ENABLE IMAP4rev2 CONDSTORE UTF8=ACCEPT
S: * ENABLED IMAP4rev2 CONDSTORE UTF8=ACCEPT
S: c OK ENABLE completed
C: d ENABLE IMAP4rev2
S: * ENABLED
S: d OK ENABLE completed
""" % POST_CAPS)
        self.assertTrue(s.rev2 and s.utf8)


POST_CAPS = ("IMAP4rev2 IMAP4rev1 COMPRESS=DEFLATE UNAUTHENTICATE LITERAL+ ENABLE ID IDLE NAMESPACE "
             "UNSELECT UIDPLUS MOVE MULTIAPPEND "
             "CHILDREN LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES "
             "STATUS=SIZE APPENDLIMIT=52428800 UTF8=ACCEPT BINARY SAVEDATE WITHIN CONDSTORE QRESYNC UIDONLY "
             "QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE"
             " CATENATE URL-PARTIAL REPLACE PARTIAL NOTIFY MULTISEARCH INPROGRESS"
             " OBJECTID PREVIEW METADATA METADATA-SERVER LIST-METADATA"
             " SORT SORT=DISPLAY ESORT CONTEXT=SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES THREAD=REFS I18NLEVEL=1"
             " CONTEXT=SEARCH")


class LoginTest(TranscriptCase):
    def test_login_with_quoted_and_literal_arguments(self):
        s, b = self.run_transcript("""
C: a1 LOGIN "fred" {6}
S: + Ready for literal data
C: secret
S: a1 OK [CAPABILITY %s] Logged in
""" % POST_CAPS)
        self.assertIs(s.state, ImapState.AUTHENTICATED)
        self.assertEqual(b.outcomes[-1].password, "secret")

    def test_wrong_password_then_bye_after_three(self):
        s, _ = self.run_transcript("""
C: a LOGIN fred wrong
S: a NO [AUTHENTICATIONFAILED] Authentication failed
C: b LOGIN fred wrong
S: b NO [AUTHENTICATIONFAILED] Authentication failed
C: c LOGIN nobody wrong
S: c NO [AUTHENTICATIONFAILED] Authentication failed
S: * BYE Too many failed logins
""")
        self.assertTrue(s.closed)

    def test_logindisabled_without_tls_from_outside(self):
        s, b = make_session(peer=REMOTE)
        self.assertIn(b"LOGINDISABLED", s.greeting)
        self.assertNotIn(b"AUTH=PLAIN", s.greeting)
        out = feed(s, b"a LOGIN fred secret\r\nb AUTHENTICATE PLAIN\r\n")
        self.assertEqual(out, b"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS\r\n"
                              b"b NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS\r\n")
        self.assertEqual(b.outcomes, [])   # the password never reached the backend

    def test_plaintext_allowed_by_the_operator(self):
        s, _ = make_session(peer=REMOTE, allow_plaintext_auth=True)
        self.assertNotIn(b"LOGINDISABLED", s.greeting)
        login(s)

    def test_starttls_discards_pipelined_plaintext(self):
        s, b = make_session(peer=REMOTE)
        out = feed(s, b"a STARTTLS\r\nb LOGIN fred secret\r\n")
        self.assertEqual(out, b"a OK Begin TLS negotiation now\r\n")
        self.assertTrue(s.want_tls)
        s.tls_started({"version": "TLSv1.3"})
        out = feed(s, b"c CAPABILITY\r\n")
        self.assertNotIn(b"STARTTLS", out)
        self.assertNotIn(b"LOGINDISABLED", out)
        self.assertIn(b"AUTH=PLAIN", out)
        self.assertEqual(b.outcomes, [])
        out = feed(s, b"d STARTTLS\r\n")
        self.assertEqual(out, b"d BAD TLS is already active\r\n")

    def test_starttls_unavailable(self):
        s, _ = make_session(tls_available=False)
        self.assertNotIn(b"STARTTLS", s.greeting)
        self.assertEqual(feed(s, b"a STARTTLS\r\n"), b"a NO TLS is not available\r\n")

    def test_authenticate_plain_with_sasl_ir_and_continuation(self):
        ir = base64.b64encode(b"\0fred\0secret")
        self.run_transcript("""
C: a AUTHENTICATE PLAIN %s
S: a OK [CAPABILITY %s] Logged in
""" % (ir.decode(), POST_CAPS))
        self.run_transcript("""
C: a AUTHENTICATE PLAIN
S: + 
C: %s
S: a OK [CAPABILITY %s] Logged in
""" % (ir.decode(), POST_CAPS))

    def test_authenticate_cancel_bad_base64_unknown_mechanism(self):
        self.run_transcript("""
C: a AUTHENTICATE PLAIN
S: + 
C: *
S: a BAD Authentication cancelled
C: b AUTHENTICATE LOGIN
S: + VXNlcm5hbWU6
C: !!!
S: b BAD Invalid base64 in SASL response
C: c AUTHENTICATE CRAM-MD5
S: c NO [CANNOT] Unsupported authentication mechanism
""")

    def test_authenticate_scram_sha_256(self):
        s, b = make_session(peer=REMOTE)
        client = sasl.ScramClient("fred", "secret")
        out = feed(s, b"a AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(client.first()) + b"\r\n")
        self.assertTrue(out.startswith(b"+ "), out)
        final = client.final(base64.b64decode(out[2:-2]))
        out = feed(s, base64.b64encode(final) + b"\r\n")
        self.assertTrue(out.startswith(b"+ "), out)
        client.verify(base64.b64decode(out[2:-2]))
        out = feed(s, b"\r\n")
        self.assertTrue(out.startswith(b"a OK [CAPABILITY"), out)
        self.assertEqual(s._user, "fred")

    def test_account_that_cannot_open(self):
        b = FakeImapBackend()
        b.open_error = OSError("disk gone")
        s, _ = make_session(b)
        with self.assertLogs("mailsrv.imap", "ERROR"):
            out = feed(s, b"a LOGIN fred secret\r\n")
        self.assertEqual(out, b"a NO [UNAVAILABLE] Cannot open the mailboxes, try again later\r\n")
        self.assertIs(s.state, ImapState.NOT_AUTHENTICATED)

    def test_never_logs_the_password(self):
        s, _ = make_session()
        with self.assertLogs("mailsrv.imap", "INFO") as logs:
            feed(s, b"a LOGIN fred s3cr3tpw\r\nb LOGIN fred secret\r\nc LOGOUT\r\n")
        text = "\n".join(logs.output)
        self.assertNotIn("s3cr3tpw", text)
        self.assertNotIn("secret", text)
        self.assertIn("imap login ok user=fred", text)
        self.assertIn("imap session ended (logout) user=fred", text)


class LimitsTest(unittest.TestCase):
    def test_literal_before_login_is_small(self):
        s, _ = make_session()
        out = feed(s, b"a LOGIN fred {%d}\r\n" % (PREAUTH_LITERAL + 1))
        self.assertTrue(out.startswith(b"a NO [TOOBIG]"), out)
        self.assertEqual(feed(s, b"b NOOP\r\n"), b"b OK NOOP completed\r\n")

    def test_append_literal_over_limit_refused_without_continuation(self):
        s, _ = make_session(max_append=1000)
        login(s)
        out = feed(s, b"a APPEND INBOX {1001}\r\n")
        self.assertTrue(out.startswith(b"a NO [TOOBIG]"), out)
        self.assertNotIn(b"+ ", out)

    def test_multiappend_over_the_total_is_refused_before_its_continuation(self):
        s, _ = make_session(max_append=100000)
        login(s)
        out = feed(s, b"a APPEND INBOX {100000}\r\n")
        out += feed(s, b"x" * 100000 + b" {100000}\r\n")
        out += feed(s, b"x" * 100000 + b" {100000}\r\n")
        self.assertEqual(out.count(b"+ "), 2)
        self.assertTrue(out.endswith(b"a NO [TOOBIG] Command with literals over 231072 octets\r\n"), out)
        self.assertEqual(feed(s, b"b NOOP\r\n"), b"b OK NOOP completed\r\n")

    def test_literal_sent_without_waiting_after_refusal_closes(self):
        s, _ = make_session(max_append=10)
        login(s)
        out = feed(s, b"a APPEND INBOX {20}\r\n01234567890123456789\r\n")
        self.assertIn(b"* BYE", out)
        self.assertTrue(s.closed)

    def test_pipelining_is_bounded_while_a_command_waits(self):
        b = FakeImapBackend()
        b.deferred = True
        s, _ = make_session(b)
        feed(s, b"a LOGIN fred secret\r\n")
        feed(s, b"b NOOP\r\n" * 20000)        # 160 KB: held until LOGIN answers
        self.assertFalse(s.closed)
        out = feed(s, b"c NOOP\r\n" * 20000)
        self.assertEqual(out, b"* BYE Too much input pipelined\r\n")
        self.assertTrue(s.closed)

    def test_too_many_commands_before_login(self):
        s, _ = make_session(max_commands_before_login=3)
        out = feed(s, b"a NOOP\r\n" * 5)
        self.assertEqual(out, b"a OK NOOP completed\r\n" * 3 + b"* BYE Too many commands without logging in\r\n")


class EndTest(unittest.TestCase):
    def test_eof_releases_the_account_and_folder(self):
        s, b = make_session()
        login(s)
        feed(s, b"s SELECT INBOX\r\n")
        folder, account = s._folder, s._account
        s.receive_data(b"")
        self.assertTrue(s.closed)
        self.assertTrue(folder.closed and account.closed)
        self.assertEqual(b.boxes["fred"]["INBOX"].watchers, [])

    def test_timeout_says_bye(self):
        s, _ = make_session()
        self.assertEqual(s.idle_timeout, 180.0)
        login(s)
        self.assertEqual(s.idle_timeout, 1800.0)
        s.timeout()
        self.assertEqual(drain(s), b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(s.closed)

    def test_shutdown_waits_for_the_command_in_flight(self):
        s, b = make_session()
        login(s)
        b.deferred = True
        feed(s, b"a APPEND INBOX {3}\r\n")
        feed(s, b"abc\r\n")
        self.assertTrue(s.busy)
        s.shutdown()
        self.assertFalse(s.closed)
        b.run_pending()
        out = drain(s)
        self.assertTrue(out.startswith(b"a OK [APPENDUID"), out)
        self.assertTrue(out.endswith(b"* BYE Server shutting down\r\n"))
        self.assertTrue(s.closed)

    def test_shutdown_does_not_wait_for_the_client(self):
        s, _ = make_session()
        feed(s, b"a AUTHENTICATE PLAIN\r\n")
        self.assertFalse(s.busy)
        s.shutdown()
        self.assertEqual(drain(s), b"* BYE Server shutting down\r\n")
        self.assertTrue(s.closed)

    def test_idle_keepalive_until_the_idle_timeout(self):
        s, _ = make_session()
        login(s)
        self.assertFalse(s.keepalive())    # not idling: the loop's timeout applies
        self.assertEqual(feed(s, b"i IDLE\r\n"), b"+ idling\r\n")
        self.assertEqual(s.idle_timeout, KEEPALIVE)
        s.clock[0] += KEEPALIVE
        self.assertTrue(s.keepalive())
        self.assertEqual(drain(s), b"* OK Still here\r\n")
        s.clock[0] += 1800
        self.assertFalse(s.keepalive())
        self.assertEqual(feed(s, b"DONE\r\n"), b"i OK IDLE terminated\r\n")


class DeferredBackendTest(unittest.TestCase):
    def test_pipelined_commands_wait_for_the_backend_in_order(self):
        b = FakeImapBackend()
        b.deferred = True
        s, _ = make_session(b)
        out = feed(s, b"a LOGIN fred secret\r\nb NOOP\r\nc LIST \"\" INBOX\r\n")
        self.assertEqual(out, b"")
        self.assertTrue(s.busy)
        while b.pending:
            b.run_pending()
        out = drain(s)
        self.assertRegex(out, rb"^a OK \[CAPABILITY [^\]]*\] Logged in\r\nb OK NOOP completed\r\n"
                              rb'\* LIST \(\\HasNoChildren\) "/" INBOX\r\nc OK LIST completed\r\n$')
        self.assertTrue(s.wakes)

    def test_answer_after_eof_is_released(self):
        b = FakeImapBackend()
        s, _ = make_session(b)
        login(s)
        b.deferred = True
        feed(s, b"a SELECT INBOX\r\n")
        s.receive_data(b"")
        b.run_pending()
        self.assertEqual(b.boxes["fred"]["INBOX"].watchers, [])
        self.assertEqual(drain(s), b"")


# Commands the fuzzer draws from (valid and broken), in every state.
FUZZ_LINES = [
    b"a CAPABILITY", b"a NOOP", b"a LOGIN fred secret", b"a LOGIN fred bad", b"a ENABLE IMAP4rev2",
    b"a ENABLE UTF8=ACCEPT", b"a SELECT INBOX", b"a EXAMINE Trash", b"a SELECT nope", b"a CREATE x/y",
    b"a DELETE x/y", b"a RENAME x/y z", b'a LIST "" *', b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" %',
    b'a LIST "" % RETURN (STATUS (MESSAGES SIZE))', b'a LSUB "" *', b"a STATUS INBOX (MESSAGES RECENT)",
    b"a APPEND INBOX {5}", b"hello", b"a APPEND INBOX (\\Seen) {3+}\r\nabc", b"a FETCH 1:* (FLAGS UID)",
    b"a FETCH 1 BODY[]", b"a UID FETCH 1:* RFC822.HEADER", b"a FETCH 99 FLAGS", b"a STORE 1 +FLAGS (\\Deleted)",
    b"a UID STORE * -FLAGS.SILENT (\\Seen kw)", b"a SEARCH ALL", b"a SEARCH RETURN (SAVE) DELETED",
    b"a FETCH $ FLAGS", b"a UID SEARCH RETURN (MIN MAX COUNT) ALL", b"a COPY 1:* Trash",
    b"a UID MOVE 1:* Archive", b"a EXPUNGE", b"a UID EXPUNGE 1:5", b"a CLOSE", b"a UNSELECT", b"a IDLE",
    b"DONE", b"a AUTHENTICATE PLAIN", b"AGZyZWQAc2VjcmV0", b"*", b"a NAMESPACE", b"a CHECK",
    b"a ID NIL", b"a STARTTLS", b"a LOGOUT", b"", b"((((((", b"a FETCH 1 (BODY[1.2.MIME]<0.5>)",
    b"a {5}", b"\x00\xff\x80", b"a SELECT {3}", b"a UID", b"* SEARCH", b"a SEARCH CHARSET X-NONE ALL",
    # NOTIFY (RFC 5465), MULTISEARCH (RFC 7377)
    b"a NOTIFY SET STATUS (selected (MessageNew (UID FLAGS BODY.PEEK[HEADER]) MessageExpunge FlagChange)) "
    b"(personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))", b"a NOTIFY NONE",
    b"a NOTIFY SET (subtree (Trash x) (MessageNew MessageExpunge)) (selected-delayed NONE)",
    b"a ESEARCH IN (personal) RETURN (MIN COUNT) SUBJECT a", b"a ESEARCH IN (selected subtree-one Trash) ALL",
    b"a ESEARCH RETURN (SAVE) ALL",
    # RFC 7162, RFC 9586 (condstore.py)
    b"a ENABLE QRESYNC", b"a ENABLE CONDSTORE", b"a ENABLE UIDONLY", b"a SELECT INBOX (CONDSTORE)",
    b"a SELECT INBOX (QRESYNC (1000 1 1:* (1:2 1:2)))", b"a EXAMINE INBOX (QRESYNC (1000 0))",
    b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", b"a FETCH 1:* (MODSEQ) (CHANGEDSINCE 2)",
    b"a STORE 1:* (UNCHANGEDSINCE 2) +FLAGS.SILENT (\\Seen)", b"a UID STORE 1 (UNCHANGEDSINCE 0) FLAGS ()",
    b"a SEARCH MODSEQ 2", b'a UID SEARCH RETURN (ALL) MODSEQ "/flags/\\\\seen" all 1', b"a STATUS INBOX (HIGHESTMODSEQ)",
]
FUZZ_LINES += [     # RFC 5256 SORT / THREAD, RFC 5267 ESORT and CONTEXT=SORT (sorting.py, sort_context.py)
    b"a SORT (REVERSE DATE SUBJECT) UTF-8 ALL", b"a UID SORT (DISPLAYFROM CC) US-ASCII UNSEEN",
    b"a SORT RETURN (UPDATE MIN COUNT) (ARRIVAL) UTF-8 UNDELETED",
    b"b UID SORT RETURN (UPDATE PARTIAL 1:5) (REVERSE SIZE) UTF-8 NOT DELETED", b'a CANCELUPDATE "a" "b"',
    b"a THREAD REFERENCES UTF-8 ALL", b"a UID THREAD REFS UTF-8 SUBJECT a", b"a THREAD ORDEREDSUBJECT UTF-8 1:*",
]
FUZZ_LINES += [     # RFC 5267 CONTEXT=SEARCH (sort_context.py)
    b"a SEARCH RETURN (UPDATE COUNT) UNSEEN", b"b UID SEARCH RETURN (CONTEXT UPDATE PARTIAL -1:-3) FLAGGED",
    b"c SEARCH RETURN (SAVE UPDATE) 1:2", b"d ESEARCH RETURN (UPDATE) ALL", b'a CANCELUPDATE "b"',
]


class FuzzTest(unittest.TestCase):
    def test_random_walks_never_raise(self):
        self.walk(random.Random(2177), deferred=False)

    def test_random_walks_with_a_backend_that_answers_later(self):
        self.walk(random.Random(5161), deferred=True)

    def walk(self, rng, deferred):
        for run in range(250):
            b = FakeImapBackend()
            b.deliver("fred", b"Subject: a\r\n\r\nbody\r\n")
            b.deliver("fred", b"Subject: b\r\n\r\nmore\r\n", flags=("\\Seen",))
            s, _ = make_session(b, max_bad_commands=1000, max_commands_before_login=1000)
            other, _ = make_session(b)
            login(other)
            feed(other, b"o SELECT INBOX\r\n")
            for _ in range(rng.randint(5, 40)):
                if rng.random() < 0.1:
                    data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
                else:
                    data = rng.choice(FUZZ_LINES) + b"\r\n"
                b.deferred = deferred and rng.random() < 0.7
                feed(s, data, rng.choice(FEEDERS), rng)
                if rng.random() < 0.5:
                    b.deferred = False
                    b.run_pending()
                    drain(s)
                if rng.random() < 0.2:
                    b.deliver("fred", b"Subject: new\r\n\r\nx\r\n")
                if rng.random() < 0.2:
                    feed(other, rng.choice([b"o STORE 1 +FLAGS (\\Deleted)\r\n", b"o EXPUNGE\r\n",
                                            b"o NOOP\r\n", b"o STORE 1:* -FLAGS (\\Seen)\r\n"]))
                if s.want_tls:
                    s.tls_started({})
                if rng.random() < 0.05:
                    (s.timeout if rng.random() < 0.5 else s.shutdown)()
                if s.closed:
                    break
            s.receive_data(b"")
            b.deferred = False
            b.run_pending()
            self.assertTrue(s.closed)
            self.assertEqual([w for box in b.boxes["fred"].values() for w in box.watchers
                              if getattr(w, "__self__", None) is s], [])
            self.assertEqual([w for w in b.mailbox_watchers if getattr(w[3], "__self__", None) is s], [])


if __name__ == "__main__":
    unittest.main()
