"""IMAP authenticated-state commands (protocols/imap/mailboxes.py, listing.py):
CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (patterns, LIST-EXTENDED,
LIST-STATUS, SPECIAL-USE), LSUB, NAMESPACE, STATUS, APPEND, against the
in-memory backend of tests/imap_fake.py."""

import unittest

from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_session import TranscriptCase


def logged_in(backend=None, **kw):
    def make():
        s, b = make_session(backend or FakeImapBackend(), **kw)
        login(s)
        return s, b
    return make


class CreateDeleteRenameTest(TranscriptCase):
    def test_rfc9051_6_3_4_create_and_list(self):
        """RFC 9051 §6.3.4 example: a trailing separator is dropped."""
        s, b = self.run_transcript("""
C: A003 CREATE owatagusiam/
S: A003 OK CREATE completed
C: A004 CREATE owatagusiam/blurdybloop
S: A004 OK CREATE completed
C: A005 LIST "" owatagusiam*
S: * LIST (\\HasChildren) "/" owatagusiam
S: * LIST (\\HasNoChildren) "/" owatagusiam/blurdybloop
S: A005 OK LIST completed
C: A006 CREATE owatagusiam
S: A006 NO [ALREADYEXISTS] Mailbox 'owatagusiam' exists
C: A007 CREATE inbox
S: A007 NO [ALREADYEXISTS] INBOX exists
""", make=logged_in())
        self.assertIn("owatagusiam", b.boxes["fred"])

    def test_create_special_use(self):
        s, b = self.run_transcript("""
C: a CREATE MySpam (USE (\\Junk))
S: a OK CREATE completed
C: b LIST (SPECIAL-USE) "" *
S: * LIST (\\HasNoChildren \\Archive) "/" Archive
S: * LIST (\\HasNoChildren \\Drafts) "/" Drafts
S: * LIST (\\HasNoChildren \\Junk) "/" Junk
S: * LIST (\\HasNoChildren \\Junk) "/" MySpam
S: * LIST (\\HasNoChildren \\Sent) "/" Sent
S: * LIST (\\HasNoChildren \\Trash) "/" Trash
S: b OK LIST completed
C: c CREATE X (USE (\\Bogus))
S: c BAD unknown special use '\\\\Bogus' (RFC 6154 §2)
""", make=logged_in())

    def test_names_that_could_leave_the_maildir_are_refused(self):
        s, b = logged_in()()
        for name in (b'"a/../b"', b'".hidden"', b'"a/.b"', b'"a//b"', b'"/a"', b'"a*"', b'"b%"',
                     b'"..."'):
            out = feed(s, b"c CREATE " + name + b"\r\n")
            self.assertTrue(out.startswith(b"c NO [CANNOT] Invalid mailbox name"), (name, out))
        out = feed(s, b'c CREATE {3}\r\n')
        out += feed(s, b'a\x01b\r\n')
        self.assertIn(b"c BAD mailbox name", out)
        for name in (b"a&AAA-b", b"a&AIU-b", b"a&ICg-b"):   # NUL, U+0085, U+2028 in modified UTF-7
            out = feed(s, b"c CREATE " + name + b"\r\n")
            self.assertTrue(out.startswith(b"c NO [CANNOT] Invalid mailbox name"), (name, out))
        for cmd in (b"d SELECT ../x", b"d RENAME INBOX ../x", b"d DELETE .x", b"d STATUS ../x (MESSAGES)",
                    b"d APPEND ../x {1+}\r\nx", b"d SUBSCRIBE .x"):
            out = feed(s, cmd + b"\r\n")
            self.assertTrue(out.startswith(b"d NO [CANNOT]"), (cmd, out))
        self.assertEqual(sorted(b.boxes["fred"]),
                         ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"])

    def test_delete_and_rename(self):
        s, b = self.run_transcript("""
C: a CREATE foo/bar
S: a OK CREATE completed
C: b RENAME foo/bar baz
S: b OK RENAME completed
C: c DELETE foo/bar
S: c NO [NONEXISTENT] Mailbox 'foo/bar' does not exist
C: d DELETE baz
S: d OK DELETE completed
C: e DELETE INBOX
S: e NO [CANNOT] INBOX cannot be deleted
C: f RENAME Sent INBOX
S: f NO [ALREADYEXISTS] INBOX exists
""", make=logged_in())

    def test_rename_inbox_moves_its_messages(self):
        b = FakeImapBackend()
        b.deliver("fred", b"Subject: x\r\n\r\ny\r\n")
        s, _ = logged_in(b)()
        self.assertEqual(feed(s, b"r RENAME INBOX Old\r\n"), b"r OK RENAME completed\r\n")
        out = feed(s, b"s STATUS INBOX (MESSAGES)\r\nt STATUS Old (MESSAGES)\r\n")
        self.assertEqual(out, b"* STATUS INBOX (MESSAGES 0)\r\ns OK STATUS completed\r\n"
                              b"* STATUS Old (MESSAGES 1)\r\nt OK STATUS completed\r\n")


class ListTest(TranscriptCase):
    def prepare(self, s, b):
        # CREATE makes a and a/b too (RFC 9051 §6.3.4); deleting them leaves names with
        # children only, which LIST shows as \Noselect / \NonExistent (RFC 5258 §3)
        feed(s, b"p CREATE a/b/c\r\np CREATE a/x\r\np DELETE a/b\r\np DELETE a\r\np CREATE other\r\n"
                b"p SUBSCRIBE a/b/c\r\np UNSUBSCRIBE Junk\r\np SUBSCRIBE gone\r\n")

    def test_rfc9051_6_3_9_empty_pattern_and_percent(self):
        self.run_transcript("""
C: A101 LIST "" ""
S: * LIST (\\Noselect) "/" ""
S: A101 OK LIST completed
C: A102 LIST "" %
S: * LIST (\\HasNoChildren) "/" INBOX
S: * LIST (\\HasNoChildren \\Archive) "/" Archive
S: * LIST (\\HasNoChildren \\Drafts) "/" Drafts
S: * LIST (\\HasNoChildren \\Junk) "/" Junk
S: * LIST (\\HasNoChildren \\Sent) "/" Sent
S: * LIST (\\HasNoChildren \\Trash) "/" Trash
S: * LIST (\\HasNoChildren) "/" other
S: * LIST (\\Noselect \\HasChildren) "/" a
S: A102 OK LIST completed
C: A103 LIST a %
S: * LIST (\\HasNoChildren) "/" a/x
S: * LIST (\\Noselect \\HasChildren) "/" a/b
S: A103 OK LIST completed
C: A104 LIST "" inBoX
S: * LIST (\\HasNoChildren) "/" INBOX
S: A104 OK LIST completed
""", make=logged_in(), prepare=self.prepare)

    def test_rfc5258_subscribed_recursivematch(self):
        self.run_transcript("""
C: a LIST (SUBSCRIBED) "" *
S: * LIST (\\HasNoChildren \\Subscribed) "/" INBOX
S: * LIST (\\HasNoChildren \\Subscribed \\Archive) "/" Archive
S: * LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" Drafts
S: * LIST (\\HasNoChildren \\Subscribed \\Sent) "/" Sent
S: * LIST (\\HasNoChildren \\Subscribed \\Trash) "/" Trash
S: * LIST (\\HasNoChildren \\Subscribed) "/" a/b/c
S: * LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" gone
S: a OK LIST completed
C: b LIST (SUBSCRIBED RECURSIVEMATCH) "" %
S: * LIST (\\HasNoChildren \\Subscribed) "/" INBOX
S: * LIST (\\HasNoChildren \\Subscribed \\Archive) "/" Archive
S: * LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" Drafts
S: * LIST (\\HasNoChildren \\Subscribed \\Sent) "/" Sent
S: * LIST (\\HasNoChildren \\Subscribed \\Trash) "/" Trash
S: * LIST (\\NonExistent \\HasChildren) "/" a ("CHILDINFO" ("SUBSCRIBED"))
S: * LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" gone
S: b OK LIST completed
C: c LIST "" (a/x other) RETURN (SUBSCRIBED CHILDREN)
S: * LIST (\\HasNoChildren) "/" a/x
S: * LIST (\\HasNoChildren) "/" other
S: c OK LIST completed
""", make=logged_in(), prepare=self.prepare)

    def test_rfc5819_list_status(self):
        b = FakeImapBackend()
        b.deliver("fred", b"Subject: x\r\n\r\ny\r\n")
        self.run_transcript("""
C: a LIST "" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN SIZE))
S: * LIST (\\HasNoChildren) "/" INBOX
S: * STATUS INBOX (MESSAGES 1 UNSEEN 1 SIZE 17)
S: * LIST (\\HasNoChildren \\Sent) "/" Sent
S: * STATUS Sent (MESSAGES 0 UNSEEN 0 SIZE 0)
S: a OK LIST completed
""", make=logged_in(b))

    def test_lsub_and_namespace(self):
        self.run_transcript("""
C: a LSUB "" a/*
S: * LSUB () "/" a/b/c
S: a OK LSUB completed
C: b LSUB "" g*
S: * LSUB (\\Noselect) "/" gone
S: b OK LSUB completed
C: b2 LSUB "" %
S: * LSUB () "/" INBOX
S: * LSUB () "/" Archive
S: * LSUB () "/" Drafts
S: * LSUB () "/" Sent
S: * LSUB () "/" Trash
S: * LSUB (\\Noselect) "/" gone
S: * LSUB (\\Noselect) "/" a
S: b2 OK LSUB completed
C: c NAMESPACE
S: * NAMESPACE (("" "/")) NIL NIL
S: c OK NAMESPACE completed
""", make=logged_in(), prepare=self.prepare)

    def test_modified_utf7_names_and_utf8_accept(self):
        s, b = logged_in()()
        self.assertEqual(feed(s, b"a CREATE &ZeVnLIqe-\r\n"), b"a OK CREATE completed\r\n")
        self.assertIn("\u65e5\u672c\u8a9e", b.boxes["fred"])
        out = feed(s, b'b LIST "" &ZeVnLIqe-\r\n')
        self.assertEqual(out, b'* LIST (\\HasNoChildren) "/" &ZeVnLIqe-\r\nb OK LIST completed\r\n')
        feed(s, b"c ENABLE UTF8=ACCEPT\r\n")
        out = feed(s, b'd LIST "" "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"\r\n')
        self.assertEqual(out, b'* LIST (\\HasNoChildren) "/" "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"\r\n'
                              b"d OK LIST completed\r\n")


class StatusAppendTest(TranscriptCase):
    def test_rfc9051_6_3_11_status(self):
        b = FakeImapBackend()
        b.deliver("fred", b"Subject: x\r\n\r\ny\r\n")
        b.deliver("fred", b"Subject: z\r\n\r\nw\r\n", flags=("\\Seen", "\\Deleted"))
        self.run_transcript("""
C: A042 STATUS INBOX (UIDNEXT MESSAGES UNSEEN DELETED SIZE RECENT UIDVALIDITY)
S: * STATUS INBOX (UIDNEXT 3 MESSAGES 2 UNSEEN 1 DELETED 1 SIZE 34 RECENT 2 UIDVALIDITY 1000)
S: A042 OK STATUS completed
C: A043 STATUS nope (MESSAGES)
S: A043 NO [NONEXISTENT] Mailbox 'nope' does not exist
C: A044 STATUS INBOX (FROB)
S: A044 BAD unknown STATUS item 'FROB'
""", make=logged_in(b))

    def test_rfc9051_6_3_12_append_with_flags_and_date(self):
        msg = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>\r\n"
               b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
        s, b = logged_in()()
        out = feed(s, b'A002 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(msg))
        out += feed(s, msg + b"\r\n")
        self.assertEqual(out, b"+ Ready for literal data\r\n"
                              b"A002 NO [TRYCREATE] Mailbox 'saved-messages' does not exist\r\n")
        out = feed(s, b'A003 APPEND INBOX (\\Seen $Work) "07-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(msg))
        self.assertEqual(out, b"+ Ready for literal data\r\n")
        out = feed(s, msg + b"\r\n")
        self.assertEqual(out, b"A003 OK [APPENDUID 1000 1] APPEND completed\r\n")
        m = b.boxes["fred"]["INBOX"].messages[1]
        self.assertEqual((m.data, m.flags, m.date), (msg, {"\\Seen", "$Work"}, 760686745.0))

    def test_multiappend_and_literal_plus(self):
        s, b = logged_in()()
        out = feed(s, b"a APPEND Drafts {3+}\r\none (\\Draft) {3+}\r\ntwo ~{5+}\r\nth\x00ee\r\n")
        self.assertEqual(out, b"a OK [APPENDUID 1002 1:3] APPEND completed\r\n")
        self.assertEqual([m.data for m in b.boxes["fred"]["Drafts"].messages.values()],
                         [b"one", b"two", b"th\x00ee"])

    def test_append_refusals(self):
        self.run_transcript("""
C: a APPEND INBOX {0+}
C: 
S: a NO [CANNOT] Empty message refused
C: b APPEND INBOX (\\Bogus) {1+}
C: x
S: b BAD Unknown system flag \\Bogus
C: c APPEND INBOX (\\Recent) {1+}
C: x
S: c BAD \\Recent cannot be set by a client (RFC 9051 §2.3.2)
""", make=logged_in())

    def test_append_to_selected_mailbox_announces_exists(self):
        s, b = logged_in()()
        feed(s, b"s SELECT INBOX\r\n")
        out = feed(s, b"a APPEND INBOX {1+}\r\nx\r\n")
        self.assertEqual(out, b"* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID 1000 1] APPEND completed\r\n")


if __name__ == "__main__":
    unittest.main()


# Each command's error paths in the authenticated state: (command, the reply's start).
AUTH_ERRORS = [
    (b"a CREATE", b"a BAD "), (b'a CREATE ""', b"a NO [CANNOT]"), (b"a CREATE x (USE)", b"a BAD "),
    (b"a DELETE", b"a BAD "), (b"a DELETE nope", b"a NO [NONEXISTENT]"), (b"a RENAME x", b"a BAD "),
    (b"a RENAME nope other", b"a NO [NONEXISTENT]"), (b"a RENAME Sent Trash", b"a NO [ALREADYEXISTS]"),
    (b"a SUBSCRIBE", b"a BAD "), (b"a UNSUBSCRIBE a b", b"a BAD "), (b"a LIST", b"a BAD "),
    (b'a LIST ""', b"a BAD "), (b'a LIST (FROB) "" *', b"a BAD "), (b'a LIST "" * RETURN (FROB)', b"a BAD "),
    (b'a LIST (RECURSIVEMATCH) "" *', b"a BAD "), (b"a LSUB", b"a BAD "), (b"a NAMESPACE x", b"a BAD "),
    (b"a STATUS INBOX", b"a BAD "), (b"a STATUS INBOX ()", b"a BAD "), (b"a STATUS", b"a BAD "),
    (b"a APPEND INBOX", b"a BAD "), (b"a APPEND INBOX (\\Seen)", b"a BAD "),
    (b'a APPEND INBOX "bad date" {1+}\r\nx', b"a BAD "), (b"a SELECT", b"a BAD "),
    (b"a SELECT INBOX (QRESYNC (1 2))", b"a BAD "), (b"a EXAMINE nope", b"a NO [NONEXISTENT]"),
    (b"a FETCH 1 FLAGS", b"a BAD FETCH not allowed in the AUTHENTICATED state"),
    (b"a CLOSE", b"a BAD CLOSE not allowed"), (b"a ENABLE", b"a BAD "), (b"a ID (", b"a BAD "),
    (b"a AUTHENTICATE PLAIN", b"a BAD AUTHENTICATE not allowed"),
]


class AuthenticatedErrorPathsTest(unittest.TestCase):
    def test_each_error_answers_and_the_session_goes_on(self):
        s, b = logged_in(max_bad_commands=100)()
        for command, start in AUTH_ERRORS:
            out = feed(s, command + b"\r\n")
            self.assertTrue(out.startswith(start) and out.count(b"\r\n") == 1, (command, out))
            self.assertEqual(feed(s, b"n NOOP\r\n"), b"n OK NOOP completed\r\n", command)
        self.assertEqual(len(b.boxes["fred"]), 6)
