"""IMAP ACL (RFC 4314) and the shared namespace (RFC 2342): the RFC's examples as
transcripts (whole, byte by byte, split) over the real mail access (imapaccess.py,
acl.py, a Maildir per user; the loop runs each worker step at once), every command
walked with every right it needs missing, private \\Seen, change notices from the
owner, an attacker's names, bad dovecot-acl lines, the command line, and two users
over loopback with the stdlib's imaplib."""

import imaplib
import os
import re
import shutil
import tempfile
import unittest

from protocols.backend.hub import ChangeHub
from protocols.backend.imapaccess import ImapAccessService
from store import acl as A
from store.folder import open_folder
from store.maildir import MailStore
from tests.helpers import ServerTestCase, mailsrv_cli
from tests.imap_fake import FakeImapBackend, drain, feed, login, make_session
from tests.test_imap_session import TranscriptCase

ALICE, BOB, EVE = "alice@example.org", "bob@example.org", "eve@example.org"
PROJ = "shared/alice@example.org/Projects"
MSG = b"From: a@example.org\r\nSubject: plans\r\n\r\nthe plans\r\n"


class AclBackend(FakeImapBackend):
    """The fake's authentication, the real mail access of three users; worker steps run at once."""

    def __init__(self):
        super().__init__({ALICE: "a", BOB: "b", EVE: "e"})
        self.dir = tempfile.mkdtemp(prefix="mailsrv-acl-")
        self.store = MailStore(self.dir, "mx.example.org")
        self.hub = ChangeHub(self, self.store.maildir_path)
        self.service = ImapAccessService(self, self.store, self.hub)

    def run_in_thread(self, fn, callback):
        try:
            result = fn()
        except Exception as exc:
            result = exc
        callback(result)

    def call_soon(self, fn):
        fn()

    def call_later(self, delay, fn):
        return None

    def open_account(self, ctx, user, done):
        self.service.open_account(ctx, user, done)

    def root(self, user):
        return self.store.maildir_path(user)

    def session(self, user):
        s, _ = make_session(self)
        login(s, user.encode(), {ALICE: b"a", BOB: b"b", EVE: b"e"}[user])
        return s


def run(session, line: str) -> str:
    return feed(session, line.encode("utf-8") + b"\r\n").decode("utf-8", "replace")


def with_projects(rights=None, messages=1):
    """A backend where alice has Projects (``messages`` in it) and, with ``rights``, grants bob them."""
    b = AclBackend()
    a = b.session(ALICE)
    assert "OK" in run(a, "p1 CREATE Projects")
    for _ in range(messages):
        assert "OK" in run(a, "p2 APPEND Projects {%d+}\r\n%s" % (len(MSG), MSG.decode()))
    if rights is not None:
        assert "OK" in run(a, "p3 SETACL Projects %s %s" % (BOB, rights or '""'))
    return b, a


def alice_session():
    b, a = with_projects()
    return a, b


class AclTranscriptTest(TranscriptCase):
    """RFC 4314's examples, with our identifiers (addresses, lower case: §3.3
    allows a canonical form) and the owner's own entry first."""

    def make(self):
        b = AclBackend()
        self.addCleanup(shutil.rmtree, b.dir, True)
        s = b.session(ALICE)
        run(s, "x CREATE INBOX/Drafts")
        return s, b

    def test_rfc4314_3_1_setacl(self):
        self.run_transcript("""
C: A000 SETACL INBOX/Drafts Fred rwipslxetad
S: A000 OK Setacl complete
C: A000 SETACL INBOX/Drafts Chris lrswi
S: A000 OK Setacl complete
C: A001 GETACL INBOX/Drafts
S: * ACL INBOX/Drafts alice@example.org lrswipkxtea fred lrswipxtea chris lrswi
S: A001 OK Getacl complete
C: A002 SETACL INBOX/Drafts Chris +cda
S: A002 OK Setacl complete
C: A003 GETACL INBOX/Drafts
S: * ACL INBOX/Drafts alice@example.org lrswipkxtea fred lrswipxtea chris lrswikxtea
S: A003 OK Getacl complete
C: A035 SETACL INBOX/Drafts John lrQswicda
S: A035 BAD Uppercase rights are not allowed
C: A036 SETACL INBOX/Drafts John lrqswicda
S: A036 BAD The q right is not supported
""", make=self.make)

    def test_rfc4314_3_2_deleteacl_keeps_negative_and_group_entries(self):
        self.run_transcript("""
C: B000 SETACL INBOX Fred rwipslxetad
S: B000 OK Setacl complete
C: B000 SETACL INBOX -Fred wetd
S: B000 OK Setacl complete
C: B000 SETACL INBOX $team w
S: B000 OK Setacl complete
C: B001 getacl INBOX
S: * ACL INBOX alice@example.org lrswipkxtea fred lrswipxtea -fred wxte $team w
S: B001 OK Getacl complete
C: B002 DeleteAcl INBOX Fred
S: B002 OK Deleteacl complete
C: B003 GETACL INBOX
S: * ACL INBOX alice@example.org lrswipkxtea -fred wxte $team w
S: B003 OK Getacl complete
""", make=self.make)

    def test_rfc4314_3_4_listrights_and_3_5_myrights(self):
        self.run_transcript("""
C: a001 LISTRIGHTS INBOX/Drafts smith
S: * LISTRIGHTS INBOX/Drafts smith "" l r s w i p k x t e a
S: a001 OK Listrights completed
C: a002 LISTRIGHTS INBOX/Drafts alice@example.org
S: * LISTRIGHTS INBOX/Drafts alice@example.org lrswipkxtea
S: a002 OK Listrights completed
C: A003 MYRIGHTS INBOX
S: * MYRIGHTS INBOX lrswipkxtea
S: A003 OK Myrights complete
C: A004 MYRIGHTS NoSuchFolder
S: A004 NO [NONEXISTENT] mailbox NoSuchFolder does not exist
C: A005 SETACL INBOX alice@example.org lr
S: A005 NO [CANNOT] the owner alice@example.org always has every right on their folders
C: A006 SETACL INBOX "" lr
S: A006 BAD Invalid identifier ''
""", make=self.make)

    def test_namespace_and_capability(self):
        s, _ = self.run_transcript("""
C: n1 NAMESPACE
S: * NAMESPACE (("" "/")) (("shared/" "/")) NIL
S: n1 OK NAMESPACE completed
""", make=self.make)
        self.assertIn(" ACL RIGHTS=texk", run(s, "c CAPABILITY"))


class SharedFolderTest(unittest.TestCase):
    def setUp(self):
        self.b, self.a = with_projects("lrswi")
        self.addCleanup(shutil.rmtree, self.b.dir, True)
        self.bob = self.b.session(BOB)

    def test_grantee_lists_selects_and_reads(self):
        out = run(self.bob, 'l LIST "" "shared/*"')
        self.assertIn('* LIST (\\Noselect \\HasChildren) "/" shared/alice@example.org\r\n', out)
        self.assertIn('* LIST (\\HasNoChildren) "/" %s\r\n' % PROJ, out)
        self.assertIn("OK [READ-WRITE]", run(self.bob, "s SELECT " + PROJ))
        self.assertIn("the plans", run(self.bob, "f FETCH 1 BODY.PEEK[]"))
        self.assertIn("MYRIGHTS %s lrswi" % PROJ, run(self.bob, "m MYRIGHTS " + PROJ))

    def test_rfc4314_5_1_1_pipelined_select_and_myrights_permanentflags_follow_rights(self):
        run(self.a, "x SETACL Projects %s lrwis" % BOB)
        out = feed(self.bob, b"A142 SELECT %s\r\nA143 MYRIGHTS %s\r\n" % (PROJ.encode(), PROJ.encode())).decode()
        self.assertIn("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Seen \\Draft \\*)] Flags permitted", out)
        self.assertIn("A142 OK [READ-WRITE] SELECT completed\r\n* MYRIGHTS %s lrswi\r\nA143 OK" % PROJ, out)
        run(self.a, "x SETACL Projects %s lrs" % BOB)
        self.assertIn("OK [READ-WRITE]", run(self.bob, "s SELECT " + PROJ))     # s: private \Seen changes
        run(self.a, "x SETACL Projects %s lr" % BOB)
        self.assertIn("OK [READ-ONLY]", run(self.bob, "s SELECT " + PROJ))      # §5.2: none of i e w s t

    def test_other_user_sees_nothing(self):
        eve = self.b.session(EVE)
        self.assertNotIn("shared", run(eve, 'l LIST "" "*"'))
        self.assertIn("NO [NONEXISTENT] mailbox %s does not exist" % PROJ, run(eve, "s SELECT " + PROJ))

    def test_seen_is_per_user(self):
        run(self.bob, "s SELECT " + PROJ)
        self.assertIn("FLAGS (\\Seen", run(self.bob, "f FETCH 1 BODY[]"))
        run(self.a, "s SELECT Projects")
        self.assertNotIn("\\Seen", run(self.a, "f FETCH 1 FLAGS"))
        self.assertIn("UNSEEN 0", run(self.bob, "t STATUS %s (UNSEEN)" % PROJ))
        run(self.a, "f STORE 1 +FLAGS.SILENT (\\Seen)")
        run(self.bob, "u STORE 1 -FLAGS.SILENT (\\Seen)")
        self.assertIn("FLAGS (\\Seen)", run(self.a, "f FETCH 1 FLAGS"))
        self.assertNotIn("\\Seen", run(self.bob, "f FETCH 1 FLAGS"))
        names = os.listdir(os.path.join(self.b.root(ALICE), ".Projects", "cur"))
        self.assertTrue(all(n.endswith(":2,S") for n in names), names)     # alice's \Seen in the name
        private = os.path.join(self.b.root(BOB), A.PRIVATE_DIR, ALICE, ".Projects.seen")
        self.assertTrue(os.path.exists(private))                            # bob's in his own Maildir

    def test_private_seen_reaches_the_users_other_session(self):
        other = self.b.session(BOB)
        run(other, "s SELECT " + PROJ)
        feed(other, b"i IDLE\r\n")
        run(self.bob, "s SELECT " + PROJ)
        run(self.bob, "f STORE 1 +FLAGS.SILENT (\\Seen)")
        self.assertIn("* 1 FETCH (FLAGS (\\Seen", drain(other).decode())

    def test_grantee_idle_hears_the_owners_append(self):
        run(self.bob, "s SELECT " + PROJ)
        feed(self.bob, b"i IDLE\r\n")
        run(self.a, "p APPEND Projects {%d+}\r\n%s" % (len(MSG), MSG.decode()))
        self.assertIn("* 2 EXISTS", drain(self.bob).decode())
        self.assertIn("i OK", feed(self.bob, b"DONE\r\n").decode())

    def test_grantee_idle_hears_a_delivery_to_the_owners_inbox(self):
        run(self.a, "x SETACL INBOX %s lr" % BOB)
        run(self.bob, "s SELECT shared/alice@example.org/INBOX")
        feed(self.bob, b"i IDLE\r\n")
        open_folder(self.b.root(ALICE)).append(MSG)
        self.b.hub.announce(ALICE, "INBOX")         # what local delivery announces (hub key per folder on disk)
        self.assertIn("* 1 EXISTS", drain(self.bob).decode())

    def test_copy_into_shared_keeps_only_flags_with_rights(self):
        """RFC 4314 §4's COPY example: with "rwis" the \\Deleted flag is lost."""
        run(self.bob, "c CREATE Mine")
        for flags in ("\\Draft \\Deleted", "\\Answered", "$Forwarded \\Seen"):
            run(self.bob, "a APPEND Mine (%s) {%d+}\r\n%s" % (flags, len(MSG), MSG.decode()))
        run(self.bob, "s SELECT Mine")
        self.assertIn("OK [COPYUID", run(self.bob, "c COPY 1:3 " + PROJ))
        run(self.bob, "s SELECT " + PROJ)
        out = run(self.bob, "f FETCH 2:4 FLAGS").replace(" \\Recent", "")
        self.assertIn("* 2 FETCH (FLAGS (\\Draft))", out)
        self.assertIn("* 3 FETCH (FLAGS (\\Answered))", out)
        self.assertIn("* 4 FETCH (FLAGS (\\Seen $Forwarded))", out)
        run(self.a, "s SELECT Projects")
        self.assertIn("* 4 FETCH (FLAGS ($Forwarded))", run(self.a, "f FETCH 4 FLAGS"))   # bob's \Seen is his

    def test_copy_with_rsti_keeps_deleted_and_seen_only(self):
        run(self.a, "x SETACL Projects %s lrsti" % BOB)
        run(self.bob, "c CREATE Mine")
        for flags in ("\\Draft \\Deleted", "\\Answered", "$Forwarded \\Seen"):
            run(self.bob, "a APPEND Mine (%s) {%d+}\r\n%s" % (flags, len(MSG), MSG.decode()))
        run(self.bob, "s SELECT Mine")
        run(self.bob, "c COPY 1:3 " + PROJ)
        run(self.bob, "s SELECT " + PROJ)
        out = run(self.bob, "f FETCH 2:4 FLAGS").replace(" \\Recent", "").replace("(\\Recent)", "()")
        self.assertIn("* 2 FETCH (FLAGS (\\Deleted))", out)
        self.assertIn("* 3 FETCH (FLAGS ())", out)
        self.assertIn("* 4 FETCH (FLAGS (\\Seen))", out)

    def test_move_out_create_inside_subscribe_and_lsub(self):
        run(self.a, "x SETACL Projects %s lrswikte" % BOB)
        run(self.bob, "s SELECT " + PROJ)
        self.assertIn("OK [COPYUID", run(self.bob, "m MOVE 1 INBOX"))
        self.assertEqual(os.listdir(os.path.join(self.b.root(ALICE), ".Projects", "cur")), [])
        self.assertIn("MESSAGES 1", run(self.bob, "t STATUS INBOX (MESSAGES)"))
        self.assertIn("c OK", run(self.bob, "c CREATE %s/Sub" % PROJ))
        self.assertEqual(A.read_acl(os.path.join(self.b.root(ALICE), ".Projects.Sub")),
                         [("user=" + BOB, "lrswikte")])         # RFC 4314 §4: inherited
        self.assertIn("u OK", run(self.bob, "u SUBSCRIBE %s/Sub" % PROJ))
        self.assertIn('* LSUB () "/" %s/Sub' % PROJ, run(self.bob, 'l LSUB "" "shared/*"'))
        run(self.bob, "u UNSUBSCRIBE %s/Sub" % PROJ)
        self.assertNotIn("Sub", run(self.bob, 'l LSUB "" "*"'))

    def test_revoked_rights_apply_to_a_session_already_in_the_folder(self):
        run(self.bob, "s SELECT " + PROJ)
        run(self.a, "x SETACL Projects %s -w" % BOB)
        self.assertIn("t NO [NOPERM]", run(self.bob, "t STORE 1 +FLAGS (\\Flagged)"))

    def test_bad_lines_in_the_owners_file_are_skipped_in_a_session(self):
        path = os.path.join(self.b.root(ALICE), ".Projects", A.ACL_FILE)
        with open(path, "ab") as f:
            f.write(b"user=bob@example.org\n\x00\xff garbage\nuser=eve@example.org lrX\n")
        with self.assertLogs("mailsrv.acl", "WARNING") as logs:
            self.assertIn("MYRIGHTS %s lrswi" % PROJ, run(self.bob, "m MYRIGHTS " + PROJ))
        self.assertIn("%s:2: no rights after" % path, "\n".join(logs.output))
        self.assertIn("%s:4: unknown right" % path, "\n".join(logs.output))
        self.assertIn("NO [NONEXISTENT]", run(self.b.session(EVE), "m MYRIGHTS " + PROJ))

    def test_delete_removes_the_acl_and_rename_keeps_it(self):
        run(self.a, "r RENAME Projects Work")
        self.assertEqual(A.read_acl(os.path.join(self.b.root(ALICE), ".Work")), [("user=" + BOB, "lrswi")])
        run(self.a, "d DELETE Work")
        self.assertNotIn("shared", run(self.bob, 'l LIST "" "*"'))


def disk(backend):
    """What a refused command must not change: every message file name, every
    dovecot-acl, every private \\Seen and subscriptions file, of every user."""
    out = {}
    for top, dirs, files in os.walk(os.path.join(backend.dir, "mail")):
        for f in files:
            path = os.path.join(top, f)
            rel = os.path.relpath(path, backend.dir)
            if os.path.basename(top) in ("cur", "new"):
                out[rel] = ""
            elif f in (A.ACL_FILE, "subscriptions", "mailsrv-shared-subscriptions") or f.endswith(".seen"):
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
        out.update((os.path.relpath(os.path.join(top, d), backend.dir), "dir") for d in dirs)
    return out


# command, the right it needs, whether it runs with Projects selected, the answer without it.
# RFC 4314 §4 (and RFC 6851 §4.2 for MOVE); "NOPERM" answers "NO [NOPERM]".
WALK = [
    ("SELECT " + PROJ, "r", False, "NOPERM"),
    ("EXAMINE " + PROJ, "r", False, "NOPERM"),
    ("STATUS %s (MESSAGES UNSEEN)" % PROJ, "r", False, "NOPERM"),
    ("APPEND %s (\\Flagged) {%d+}\r\n%s" % (PROJ, len(MSG), MSG.decode()), "i", False, "NOPERM"),
    ("CREATE %s/child" % PROJ, "k", False, "NOPERM"),
    ("DELETE " + PROJ, "x", False, "NOPERM"),
    ("RENAME %s shared/alice@example.org/Other" % PROJ, "x", False, "NOPERM"),
    ("SETACL %s eve@example.org lr" % PROJ, "a", False, "NOPERM"),
    ("DELETEACL %s bob@example.org" % PROJ, "a", False, "NOPERM"),
    ("GETACL " + PROJ, "a", False, "NOPERM"),
    ("LISTRIGHTS %s eve@example.org" % PROJ, "a", False, "NOPERM"),
    ("SUBSCRIBE " + PROJ, "l", False, "NOPERM"),
    ("STORE 1 +FLAGS (\\Seen)", "s", True, "NOPERM"),
    ("STORE 1 -FLAGS (\\Seen)", "s", True, "NOPERM"),
    ("STORE 1 +FLAGS (\\Flagged)", "w", True, "NOPERM"),
    ("STORE 1 +FLAGS ($Label)", "w", True, "NOPERM"),
    ("STORE 1 +FLAGS (\\Deleted)", "t", True, "NOPERM"),
    ("STORE 1 -FLAGS (\\Deleted)", "t", True, "NOPERM"),
    ("UID STORE 1:* +FLAGS.SILENT (\\Deleted)", "t", True, "NOPERM"),
    ("EXPUNGE", "e", True, "NOPERM"),
    ("UID EXPUNGE 1:*", "e", True, "NOPERM"),
    ("MOVE 1 INBOX", "e", True, "NOPERM"),
    ("MOVE 1 INBOX", "t", True, "NOPERM"),
    ("UID MOVE 1:* INBOX", "e", True, "NOPERM"),
    ("COPY 1 " + PROJ, "i", True, "NOPERM"),
    ("REPLACE 1 %s {%d+}\r\n%s" % (PROJ, len(MSG), MSG.decode()), "i", True, "NOPERM"),   # RFC 8508 §4.1
    ("REPLACE 1 %s {%d+}\r\n%s" % (PROJ, len(MSG), MSG.decode()), "t", True, "NOPERM"),
    ("UID REPLACE 1 %s {%d+}\r\n%s" % (PROJ, len(MSG), MSG.decode()), "e", True, "NOPERM"),
    ("FETCH 1 BODY[]", "s", True, "OK"),          # §4: FETCH must not set \Seen without s, nor fail
    ("CLOSE", "e", True, "OK"),                   # §4: CLOSE without e expunges nothing, answers OK
]


# Commands that need no right beyond these (RFC 4314 §4: "r" is implied once selected), OK with them.
MINIMAL = [
    ("FETCH 1 (FLAGS BODY.PEEK[])", "r", True), ("UID FETCH 1:* FLAGS", "r", True),
    ("SEARCH ALL", "r", True), ("UID SEARCH SUBJECT plans", "r", True), ("CHECK", "r", True),
    ("UNSELECT", "r", True), ("NOOP", "r", True), ("COPY 1 INBOX", "r", True),
    ("UNSUBSCRIBE " + PROJ, "", False), ("MYRIGHTS " + PROJ, "l", False),
    ("GETQUOTAROOT " + PROJ, "", False),        # the asker's own root, for any name (RFC 9208 §4.1.2)
    # RFC 7377 §2 / RFC 5465 §5: folders the user may not read are left out, no NO (tests below)
    ('ESEARCH IN (mailboxes "%s") ALL' % PROJ, "", False),
    ('NOTIFY SET STATUS (mailboxes "%s" (MessageNew MessageExpunge))' % PROJ, "", False),
    ("SORT (DATE) UTF-8 ALL", "r", True), ("UID THREAD REFERENCES UTF-8 ALL", "r", True),   # RFC 5256
]
# Commands about no folder of another user: rights do not apply.
NOT_A_FOLDER = {"CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "AUTHENTICATE", "LOGIN", "ENABLE",
                "COMPRESS", "UNAUTHENTICATE", "NAMESPACE", "GETQUOTA", "SETQUOTA", "IDLE",
                "LIST", "LSUB",                 # LIST / LSUB leave folders out: tests above
                "CANCELUPDATE"}                 # RFC 5267 §4.3.5: the session's own contexts


# DEVIATION(RFC 5464 §3.3): annotations only on one's own folders, whatever the rights
ONLY_OWN = ['GETMETADATA "%s" (/private/comment /shared/comment)' % PROJ,
            'SETMETADATA "%s" (/shared/comment "bob was here")' % PROJ]


class OtherFoldersCommandsTest(unittest.TestCase):
    """MULTISEARCH (RFC 7377) and NOTIFY (RFC 5465) name other folders: a shared
    one without ``r`` is searched and STATUSed for nobody; ``personal`` is
    the user's own namespace only (RFC 5465 §6.2); annotations (RFC 5464)
    only on one's own folders."""

    def test_annotations_of_another_users_folder_are_refused_and_untouched(self):
        b, a = with_projects("lrswipkxtea", messages=1)
        self.addCleanup(shutil.rmtree, b.dir, True)
        self.assertIn("s OK", run(a, 's SETMETADATA Projects (/private/comment "alice secret" /shared/comment "team")'))
        bob = b.session(BOB)
        before = disk(b)
        for line in ONLY_OWN:
            out = run(bob, "t " + line)
            self.assertRegex(out, r"(?m)^t NO \[CANNOT\] ", out)
            self.assertNotIn("secret", out)
            self.assertNotIn("team", out)
        self.assertEqual(before, disk(b))
        self.assertIn('/shared/comment "team"', run(a, "g GETMETADATA Projects (/shared/comment)"))

    def test_esearch_and_notify_status_need_r(self):
        for rights, shown in (("lr", True), ("lswite", False), ('""', False)):
            with self.subTest(rights=rights):
                b, _a = with_projects(rights, messages=2)
                self.addCleanup(shutil.rmtree, b.dir, True)
                bob = b.session(BOB)
                out = run(bob, 'e ESEARCH IN (mailboxes "%s") ALL' % PROJ)
                self.assertEqual("MAILBOX " + PROJ in out, shown, out)
                out = run(bob, 'n NOTIFY SET STATUS (mailboxes "%s" (MessageNew MessageExpunge))' % PROJ)
                self.assertEqual("* STATUS " + PROJ in out, shown, out)
                self.assertIn("n OK", out)

    def test_personal_is_not_the_shared_namespace(self):
        b, _a = with_projects("lr", messages=1)
        self.addCleanup(shutil.rmtree, b.dir, True)
        out = run(b.session(BOB), "e ESEARCH IN (personal) ALL")
        self.assertNotIn(PROJ, out)
        self.assertIn("e OK", out)


class EveryCommandEveryMissingRightTest(unittest.TestCase):
    """Bob holds every right but one (or but one and ``l``); the command is refused
    as RFC 4314 §4 / §6 say and nothing on disk changes."""

    def check(self, command, right, selected, answer, without_l):
        rights = "".join(r for r in A.RIGHTS if r != right and not (without_l and r == "l"))
        if selected:
            rights += "r" if "r" not in rights else ""
        b, a = with_projects(rights or '""', messages=2)
        self.addCleanup(shutil.rmtree, b.dir, True)
        run(a, "s SELECT Projects")
        run(a, "d STORE 2 +FLAGS.SILENT (\\Deleted)")     # something EXPUNGE could remove
        bob = b.session(BOB)
        if selected:
            self.assertIn("s OK", run(bob, "s SELECT " + PROJ))
        before = disk(b)
        out = run(bob, "t " + command)
        if answer == "OK":
            self.assertIn("t OK", out)
        else:
            code = "NONEXISTENT" if without_l and right == "r" else answer    # §6: neither l nor r
            self.assertRegex(out, r"(?m)^t NO \[%s\] " % code, out)
        self.assertEqual(before, disk(b), "%s without %s changed the disk" % (command, right))

    def test_walk(self):
        for command, right, selected, answer in WALK:
            for without_l in (False, True):
                if right == "l" and not without_l:
                    continue
                with self.subTest(command=command, missing=right, without_l=without_l):
                    self.check(command, right, selected, answer, without_l)

    def test_every_command_is_walked(self):
        """A command added to the session's table must be placed in WALK, MINIMAL or
        NOT_A_FOLDER (and so have its rights thought about)."""
        from protocols.imap.session import COMMANDS
        walked = {re.sub(r"^UID ", "", line).split()[0] for line, _r, _s, _a in WALK}
        walked |= {re.sub(r"^UID ", "", line).split()[0] for line, _r, _s in MINIMAL}
        walked |= {line.split()[0] for line in ONLY_OWN}
        self.assertEqual(sorted(set(COMMANDS) - walked - NOT_A_FOLDER), [])

    def test_commands_needing_nothing_more(self):
        for command, rights, selected in MINIMAL:
            with self.subTest(command=command, rights=rights):
                b, a = with_projects(rights or '""', messages=1)
                self.addCleanup(shutil.rmtree, b.dir, True)
                bob = b.session(BOB)
                if selected:
                    self.assertIn("s OK", run(bob, "s SELECT " + PROJ))
                before = {k: v for k, v in disk(b).items() if "/bob/" not in k}
                self.assertIn("t OK", run(bob, "t " + command))
                self.assertEqual(before, {k: v for k, v in disk(b).items() if "/bob/" not in k})

    def test_list_leaves_out_a_folder_without_l(self):
        b, _a = with_projects("rswi")
        self.addCleanup(shutil.rmtree, b.dir, True)
        bob = b.session(BOB)
        out = run(bob, 'l LIST "" "*"')
        self.assertNotIn("Projects", out)
        self.assertIn("l OK", out)                  # §4: LIST never answers NO for it
        self.assertIn("s OK", run(bob, "s SELECT " + PROJ))     # r without l: still readable

    def test_myrights_needs_one_of_lrikxa(self):
        b, _a = with_projects("sw")
        self.addCleanup(shutil.rmtree, b.dir, True)
        self.assertIn("NO [NONEXISTENT]", run(b.session(BOB), "m MYRIGHTS " + PROJ))


class AttackerTest(unittest.TestCase):
    """Eve, with no grant, and Bob, with one folder granted, try names that could reach
    alice's other mail; every answer is the plain NONEXISTENT (or CANNOT for a bad
    name), the same for a user that does not exist (RFC 4314 §6: nothing revealed)."""

    def setUp(self):
        self.b, self.a = with_projects("lr")
        self.addCleanup(shutil.rmtree, self.b.dir, True)
        run(self.a, "c CREATE Private")
        run(self.a, "p APPEND Private {%d+}\r\n%s" % (len(MSG), MSG.decode()))

    def test_names(self):
        bob = self.b.session(BOB)
        names = ["shared/alice@example.org/Private", "shared/alice@example.org/INBOX",
                 "shared/ALICE@EXAMPLE.ORG/Private", "shared/alice@example.org/inbox",
                 "shared/alice@example.org/Projects/../Private", "shared/alice@example.org/../alice/Private",
                 "shared/alice@example.org/.Private", "shared/alice@example.org", "shared",
                 "shared/nobody@example.org/INBOX", "shared//INBOX", "shared/alice/Private",
                 "shared/example.org/alice/Private", "Shared/alice@example.org/Projects",
                 "shared/../mail/example.org/alice", "shared/alice@example.org/Projects/",
                 "shared/alice@example.org/Private\x00", "shared/bob@example.org/INBOX"]
        for name in names:
            for cmd in ("SELECT", "EXAMINE", "STATUS", "GETACL", "MYRIGHTS", "DELETE", "APPEND"):
                line = {"STATUS": "t STATUS \"%s\" (MESSAGES)", "APPEND": "t APPEND \"%s\" {5+}\r\nhello"}.get(
                    cmd, "t " + cmd + ' "%s"') % name.replace("\x00", "")
                with self.subTest(name=name, cmd=cmd):
                    out = run(bob, line)
                    self.assertNotIn("the plans", out)
                    self.assertNotIn("* STATUS", out)
                    self.assertNotIn("* ACL", out)
                    self.assertRegex(out, r"(?m)^t (NO \[(NONEXISTENT|CANNOT|TRYCREATE)\]|BAD) ", out)
        self.assertEqual(os.listdir(os.path.join(self.b.root(ALICE), ".Private", "cur")).__len__(), 1)

    def test_unknown_owner_and_ungranted_folder_answer_alike(self):
        eve = self.b.session(EVE)
        one = run(eve, "t SELECT shared/alice@example.org/Private")
        two = run(eve, "t SELECT shared/zed@example.org/Private")
        self.assertEqual(one.replace("alice", "X"), two.replace("zed", "X"))

    def test_copy_from_own_folder_into_ungranted_folder(self):
        bob = self.b.session(BOB)
        run(bob, "s SELECT INBOX")
        run(bob, "a APPEND INBOX {5+}\r\nhello")
        run(bob, "n NOOP")
        self.assertIn("t NO [NONEXISTENT]", run(bob, "t COPY 1 shared/alice@example.org/Private"))
        self.assertIn("t NO [NOPERM]", run(bob, "t COPY 1 " + PROJ))    # l r, no i


FUZZ_ACL = [
    b"a SETACL Projects bob@example.org lrs", b"a SETACL Projects -bob@example.org +w",
    b"a DELETEACL Projects anyone", b"a GETACL Projects", b"a LISTRIGHTS Projects $team",
    b"a MYRIGHTS shared/alice@example.org/Projects", b"a GETACL shared/alice@example.org/Private",
    b"a SELECT shared/alice@example.org/Projects", b"a FETCH 1 BODY[]", b"a STORE 1 FLAGS (\\Seen)",
    b'a LIST "" "shared/*"', b"a STATUS shared/alice@example.org/Private (MESSAGES)",
    b"a COPY 1 shared/alice@example.org/Private", b"a SETACL {7+}\r\nProjects eve lr",
]


class AclFuzzTest(unittest.TestCase):
    """Mutated ACL commands and shared names (tests/test_imap_fuzz.py's mutations) from
    bob, granted lr on Projects: no exception escapes, every answer is a response, and
    alice's Private folder is never read."""

    def test_mutations(self):
        import random
        from tests.test_imap_fuzz import mutate, responses
        b, a = with_projects("lr")
        self.addCleanup(shutil.rmtree, b.dir, True)
        run(a, "c CREATE Private")
        run(a, "p APPEND Private {12+}\r\nsecret stuff")
        bob = b.session(BOB)
        rng = random.Random(4314)
        for _ in range(400):
            line = rng.choice(FUZZ_ACL)
            if rng.random() < 0.7:
                line = mutate(rng, line)
            out = feed(bob, line + b"\r\n")
            self.assertNotIn(b"secret stuff", out)
            for response in responses(out):
                self.assertRegex(response, rb"^(\* |\+ |[^ \r\n]+ (OK|NO|BAD) )", (line, out))
            if bob.closed:
                bob = b.session(BOB)


class DovecotAclFileTest(unittest.TestCase):
    def test_bad_lines_are_logged_with_file_and_line_and_skipped(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(d, A.ACL_FILE), "w") as f:
            f.write("# a comment\nuser=bob@example.org lrs\nbogus lr\nuser=eve@example.org lrZ\n"
                    "anyone l\n-user=bob@example.org s\nuser=carol@example.org\x00 l\ngroup=team w\n"
                    "user=dan@example.org lr :flags\n\n\xff\xfe\n")
        with self.assertLogs("mailsrv.acl", "WARNING") as logs:
            entries = A.read_acl(d)
        text = "\n".join(logs.output)
        self.assertIn("%s:3: unknown identifier 'bogus'" % os.path.join(d, A.ACL_FILE), text)
        self.assertIn(":4: unknown right 'Z'", text)
        self.assertEqual(A.rights_for(entries, BOB, ALICE), "lr")       # lrs + anyone l - s
        self.assertEqual(A.rights_for(entries, "dan@example.org", ALICE), "lr")
        self.assertEqual(A.rights_for(entries, EVE, ALICE), "l")
        self.assertEqual(A.rights_for(entries, ALICE, ALICE), A.RIGHTS)

    def test_written_file_is_dovecots_format(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        A.change_acl(d, "user=bob@example.org", "replace", "rl")
        A.change_acl(d, "anyone", "add", "l")
        with open(os.path.join(d, A.ACL_FILE)) as f:
            self.assertEqual(f.read(), "user=bob@example.org lr\nanyone l\n")
        self.assertEqual(os.listdir(d), [A.ACL_FILE])                  # no lock or tmp left
        A.change_acl(d, "user=bob@example.org", "delete")
        A.change_acl(d, "anyone", "remove", "l")
        self.assertEqual(os.listdir(d), [])                            # an empty ACL: no file

    def test_uid_sets(self):
        self.assertEqual(A.format_uid_set({1, 2, 3, 5, 7, 8}), "1:3,5,7:8")
        self.assertEqual(A.parse_uid_set("1:3,5,7:8"), {1, 2, 3, 5, 7, 8})


class AclCommandLineTest(unittest.TestCase):
    def test_set_get_delete(self):
        b, _a = with_projects()
        self.addCleanup(shutil.rmtree, b.dir, True)
        base = ("--data", b.dir)
        self.assertEqual(mailsrv_cli("acl", "set", *base, ALICE, "Projects", "Bob@Example.ORG", "lrs")[0], 0)
        self.assertEqual(mailsrv_cli("acl", "set", *base, ALICE, "Projects", BOB, "--", "-s")[0], 0)
        rc, out, _err = mailsrv_cli("acl", "get", *base, ALICE, "Projects")
        self.assertEqual((rc, out), (0, "alice@example.org lrswipkxtea\nbob@example.org lr\n"))
        self.assertIn("MYRIGHTS %s lr" % PROJ, run(b.session(BOB), "m MYRIGHTS " + PROJ))
        rc, _out, err = mailsrv_cli("acl", "set", *base, ALICE, "Projects", BOB, "lrQ")
        self.assertEqual((rc, err), (2, "mailsrv: acl set: alice@example.org Projects: unknown right 'Q'\n"))
        rc, _out, err = mailsrv_cli("acl", "get", *base, ALICE, "Nope")
        self.assertEqual((rc, err), (2, "mailsrv: acl get: folder Nope of alice@example.org does not exist\n"))
        rc, _out, err = mailsrv_cli("acl", "get", *base, ALICE, "../../x")
        self.assertEqual(rc, 2)
        self.assertEqual(mailsrv_cli("acl", "delete", *base, ALICE, "Projects", BOB)[0], 0)
        self.assertIn("NO [NONEXISTENT]", run(b.session(BOB), "m MYRIGHTS " + PROJ))


class AclServerTest(ServerTestCase):
    """Two users over loopback with imaplib: alice shares a folder, bob reads it."""

    users = {"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}
    extra_config = {"imap_port": "0"}
    tls = False

    def imap(self, user, password):
        c = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        c.login(user, password)
        self.addCleanup(c.logout)
        return c

    def test_share_read_and_refuse(self):
        alice = self.imap("alice@example.test", "alice-secret")
        bob = self.imap("bob@example.test", "bob-secret")
        self.assertIn(b"ACL", alice.capability()[1][0])
        alice.create("Team")
        alice.append("Team", None, None, MSG)
        self.assertEqual(alice.setacl("Team", "bob@example.test", "lrw")[0], "OK")
        self.assertEqual(alice.getacl("Team"), ("OK", [b"Team alice@example.test lrswipkxtea bob@example.test lrw"]))
        name = "shared/alice@example.test/Team"
        typ, listed = bob.list('""', "shared/*")
        self.assertTrue(any(name.encode() in line for line in listed), listed)
        typ, data = bob.select(name)
        self.assertEqual((typ, data), ("OK", [b"1"]))
        typ, data = bob.fetch("1", "(BODY.PEEK[])")
        self.assertIn(b"the plans", data[0][1])
        typ, data = bob.store("1", "+FLAGS", "(\\Deleted)")
        self.assertEqual(typ, "NO")
        self.assertIn(b"[NOPERM]", data[0])
        self.assertEqual(bob.myrights(name), ("OK", [name.encode() + b" lrw"]))
        typ, data = bob.select("shared/alice@example.test/INBOX")
        self.assertEqual(typ, "NO")
        self.assertTrue(re.search(rb"NONEXISTENT", data[0]), data)


if __name__ == "__main__":
    unittest.main()
