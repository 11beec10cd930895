"""IMAP METADATA / METADATA-SERVER (RFC 5464): the RFC's examples as
transcripts (whole, byte by byte, split) against the real mail access over a
temporary Maildir, the entry grammar, RENAME / DELETE, the limits, a damaged
annotations file, concurrent writers, and the whole server on loopback."""

import base64
import imaplib
import os
import shutil
import socket
import tempfile
import threading
import unittest

from protocols.imap import metadata as M
from protocols.imap.grammar import ImapParseError
from store import metadata as md
from tests.helpers import ServerTestCase
from tests.imap_fake import FakeImapBackend, feed, login, make_session
from tests.test_imap_derived import RealBackend
from tests.test_imap_session import TranscriptCase


def real(test):
    """A session factory over a fresh RealBackend (removed after the test)."""
    def make():
        b = RealBackend()
        test.addCleanup(shutil.rmtree, b.dir, True)
        s, _ = make_session(b)
        login(s)
        return s, b
    return make


def metadata_path(b):
    return os.path.join(b.store.maildir_path(b.USER), md.FILE)


class RfcExamples(TranscriptCase):
    def test_4_3_setmetadata_examples_then_4_2_getmetadata_examples(self):
        """§4.3 (a literal across two lines, NIL removes, several at once) and §4.2 / §4.4.1."""
        self.run_transcript("""
C: a SETMETADATA INBOX (/private/comment {33}
S: + Ready for literal data
C: My new comment across
C: two lines.)
S: a OK SETMETADATA completed
C: a GETMETADATA "INBOX" /private/comment
S: * METADATA INBOX (/private/comment {33}
S: My new comment across
S: two lines.)
S: a OK GETMETADATA completed
C: a SETMETADATA INBOX (/private/comment NIL)
S: a OK SETMETADATA completed
C: a SETMETADATA INBOX (/private/comment "My own comment" /shared/comment "Shared comment")
S: a OK SETMETADATA completed
C: a GETMETADATA "INBOX" (/shared/comment /private/comment)
S: * METADATA INBOX (/shared/comment "Shared comment" /private/comment "My own comment")
S: a OK GETMETADATA completed
C: a GETMETADATA "INBOX" /private/comment /shared/comment
S: * METADATA INBOX (/private/comment "My own comment" /shared/comment "Shared comment")
S: a OK GETMETADATA completed
C: a SETMETADATA "" (/shared/comment "Shared comment")
S: a OK SETMETADATA completed
C: a GETMETADATA "" /shared/comment
S: * METADATA "" (/shared/comment "Shared comment")
S: a OK GETMETADATA completed
""", make=real(self))

    def test_4_2_1_maxsize_and_4_2_2_depth(self):
        long = "x" * 2199
        self.run_transcript("""
C: a SETMETADATA INBOX (/shared/comment "%s" /private/comment "My own comment")
S: a OK SETMETADATA completed
C: a GETMETADATA "INBOX" (MAXSIZE 1024) (/shared/comment /private/comment)
S: * METADATA INBOX (/private/comment "My own comment")
S: a OK [METADATA LONGENTRIES 2199] GETMETADATA completed
C: b GETMETADATA (MAXSIZE 10) "INBOX" (/shared/comment /private/comment)
S: b OK [METADATA LONGENTRIES 2199] GETMETADATA completed
C: c SETMETADATA INBOX (/private/filters/values/small "SMALLER 5000" /private/filters/values/boss "FROM \\"boss@example.com\\"" /private/filters/values/boss/deeper "x")
S: c OK SETMETADATA completed
C: d GETMETADATA "INBOX" (DEPTH 1) (/private/filters/values)
S: * METADATA INBOX (/private/filters/values/boss "FROM \\"boss@example.com\\"" /private/filters/values/small "SMALLER 5000")
S: d OK GETMETADATA completed
C: e GETMETADATA "INBOX" (DEPTH infinity MAXSIZE 1000) (/PRIVATE/Filters)
S: * METADATA INBOX (/private/filters/values/boss "FROM \\"boss@example.com\\"" /private/filters/values/boss/deeper "x" /private/filters/values/small "SMALLER 5000")
S: e OK GETMETADATA completed
C: f GETMETADATA "INBOX" (DEPTH 0) (/private/filters/values)
S: * METADATA INBOX (/private/filters/values NIL)
S: f OK GETMETADATA completed
""" % long, make=real(self))

    def test_4_3_too_many_and_maxsize_refuse_the_whole_command(self):
        """§4.3: "[METADATA MAXSIZE NNN]", "[METADATA TOOMANY]", and nothing set when one fails."""
        many = " ".join("/private/n%d \"v\"" % i for i in range(md.MAX_ENTRIES))
        self.run_transcript("""
C: a SETMETADATA INBOX (%s)
S: a OK SETMETADATA completed
C: b SETMETADATA INBOX (/private/comment "My new comment")
S: b NO [METADATA TOOMANY] more than 100 entries on one mailbox
C: c SETMETADATA INBOX (/private/n1 NIL /private/comment "My new comment")
S: c OK SETMETADATA completed
C: d SETMETADATA INBOX (/private/n2 NIL /shared/big {65537+}
C: %s)
S: d NO [METADATA MAXSIZE 65536] value of /shared/big is 65537 octets, over the limit of 65536
C: e GETMETADATA INBOX (/private/n2 /private/n1 /private/comment)
S: * METADATA INBOX (/private/n2 "v" /private/n1 NIL /private/comment "My new comment")
S: e OK GETMETADATA completed
""" % (many, "y" * 65537), make=real(self))


class ListMetadata(unittest.TestCase):
    """LIST-METADATA (RFC 9590): LIST ... RETURN (METADATA (entries)) answers a
    METADATA line after each matching LIST line, NIL for an entry without a
    value, none for a name listed only for its children."""

    def session(self):
        s, b = real(self)()
        color = "/shared/vendor/cmu/cyrus-imapd/color"
        out = feed(s, b'a SETMETADATA INBOX (%s "#b71c1c")\r\nb CREATE foo\r\nc CREATE bar/baz\r\n'
                      b"d SUBSCRIBE INBOX\r\ne SUBSCRIBE bar/baz\r\nf DELETE bar\r\n" % color.encode())
        self.assertEqual(out.count(b" OK "), 6, out)            # bar deleted: \\Noselect, its child stays
        return s, color

    def test_rfc9590_4_first_example(self):
        s, color = self.session()
        out = feed(s, b"g LIST \"\" %% RETURN (METADATA (%s))\r\n" % color.encode()).decode()
        lines = out.split("\r\n")
        inbox = next(i for i, l in enumerate(lines) if l.startswith("* LIST") and l.endswith(" INBOX"))
        self.assertEqual(lines[inbox + 1], '* METADATA INBOX (%s "#b71c1c")' % color)
        foo = next(i for i, l in enumerate(lines) if l.startswith("* LIST") and l.endswith(" foo"))
        self.assertEqual(lines[foo + 1], "* METADATA foo (%s NIL)" % color)
        self.assertIn("g OK", out)
        self.assertIn("LIST-METADATA", feed(s, b"h CAPABILITY\r\n").decode())

    def test_rfc9590_4_second_example_no_metadata_for_a_name_listed_for_its_children(self):
        s, color = self.session()
        out = feed(s, b'g LIST (SUBSCRIBED RECURSIVEMATCH) "" %% RETURN (METADATA (%s))\r\n' % color.encode())
        out = out.decode()
        self.assertIn('* METADATA INBOX (%s "#b71c1c")' % color, out)
        self.assertIn('"/" bar ("CHILDINFO" ("SUBSCRIBED"))\r\n', out)      # RFC 5258 §4 CHILDINFO, then RFC 5464 again
        self.assertNotIn("METADATA bar", out)
        self.assertNotIn("METADATA foo", out)

    def test_bad_return_options(self):
        s, _color = self.session()
        for line in (b'g LIST "" % RETURN (METADATA ())', b'g LIST "" % RETURN (METADATA (nope))',
                     b'g LIST "" % RETURN (METADATA)'):
            with self.subTest(line=line):
                self.assertTrue(feed(s, line + b"\r\n").startswith(b"g BAD "))


class Behaviour(unittest.TestCase):
    def session(self):
        return real(self)()

    def test_rename_keeps_and_delete_drops_and_inbox_rename_copies(self):
        """§4.1: entries follow a renamed mailbox, stay on INBOX after RENAME INBOX (and
        are copied to the new one), and a mailbox made again does not inherit them."""
        s, b = self.session()
        out = feed(s, b'a CREATE foo\r\nb SETMETADATA foo (/shared/comment "on foo")\r\nc RENAME foo bar\r\n'
                      b'd GETMETADATA bar /shared/comment\r\n')
        self.assertIn(b'* METADATA bar (/shared/comment "on foo")\r\nd OK', out)
        out = feed(s, b'e DELETE bar\r\nf CREATE bar\r\ng GETMETADATA bar /shared/comment\r\n')
        self.assertIn(b"* METADATA bar (/shared/comment NIL)\r\ng OK", out)
        with open(metadata_path(b), "rb") as f:
            self.assertNotIn(base64.b64encode(b"on foo"), f.read())       # DELETE removed the entry
        out = feed(s, b'h SETMETADATA INBOX (/private/comment "inbox")\r\ni RENAME INBOX old\r\n'
                      b'j GETMETADATA old /private/comment\r\nk GETMETADATA INBOX /private/comment\r\n')
        self.assertIn(b'* METADATA old (/private/comment "inbox")\r\nj OK', out)
        self.assertIn(b'* METADATA INBOX (/private/comment "inbox")\r\nk OK', out)

    def test_selected_state_utf8_names_and_binary_values(self):
        s, b = self.session()
        out = feed(s, b"e ENABLE UTF8=ACCEPT\r\nc CREATE \"Entw\xc3\xbcrfe\"\r\n"
                      b"a SETMETADATA \"Entw\xc3\xbcrfe\" (/private/vendor/vendor.example/blob ~{5}\r\nx\x00y\xffz)\r\n"
                      b"s SELECT INBOX\r\n"
                      b"g GETMETADATA \"Entw\xc3\xbcrfe\" /private/vendor/vendor.example/blob\r\n")
        self.assertIn(b"a OK SETMETADATA", out)
        self.assertIn(b'* METADATA "Entw\xc3\xbcrfe" (/private/vendor/vendor.example/blob ~{5}\r\nx\x00y\xffz)\r\n'
                      b"g OK GETMETADATA completed\r\n", out)

    def test_bad_entry_names_are_bad(self):
        """§3.2: invalid entry names get BAD; /shared/admin is the server's (§3.2.1.1)."""
        s, b = self.session()
        for entry in (b"/private/*", b"/shared/a%", b"/private//x", b"/private/x/", b"private/x",
                      b"/other/x", b'"/private/\xc3\xa9"', b'"/private/a\tb"', b"/shared/vendor/x",
                      b"/private", b"/" + b"a" * 1100):
            with self.subTest(entry=entry):
                out = feed(s, b"a SETMETADATA INBOX (" + entry + b" \"v\")\r\n")
                self.assertTrue(out.startswith(b"a BAD "), out)
        for cmd in (b"GETMETADATA (DEPTH 2) INBOX /private/x", b"GETMETADATA (FOO 1) INBOX /private/x",
                    b"GETMETADATA INBOX", b"SETMETADATA INBOX ()", b"SETMETADATA INBOX (/private/x)"):
            with self.subTest(cmd=cmd):
                self.assertTrue(feed(s, b"b " + cmd + b"\r\n").startswith(b"b BAD "))
        self.assertEqual(feed(s, b'c SETMETADATA "" (/shared/admin "mailto:me@example.org")\r\n'),
                         b"c NO [NOPERM] /shared/admin is set by the server only (RFC 5464 \xc2\xa73.2.1.1)\r\n")
        self.assertEqual(feed(s, b"d GETMETADATA nosuch /private/comment\r\n"),
                         b"d NO [NONEXISTENT] mailbox nosuch does not exist\r\n")
        self.assertFalse(os.path.exists(metadata_path(b)))

    def test_a_damaged_file_is_logged_and_skipped_never_fatal(self):
        s, b = self.session()
        feed(s, b'a SETMETADATA "" (/shared/comment "kept" /private/x "also kept")\r\n')
        path = metadata_path(b)
        with open(path, "ab") as f:
            f.write(b"\xff\xfe garbage\n\t/private/bad\t!!!not base64\n\t/private/x\n"
                    b"F00\t/other/x\tdg==\nF-bad!\t/private/x\tdg==\n" + b"\x00" * 50 + b"\n")
        with self.assertLogs("mailsrv.store.metadata", "WARNING") as logs:
            out = feed(s, b'b GETMETADATA "" (/shared/comment /private/x /private/bad)\r\n')
        self.assertEqual(out, b'* METADATA "" (/shared/comment "kept" /private/x "also kept" /private/bad NIL)\r\n'
                              b"b OK GETMETADATA completed\r\n")
        self.assertEqual(len(logs.output), 6)
        self.assertTrue(all(path in line and "skipped" in line for line in logs.output), logs.output)
        with self.assertLogs("mailsrv.store.metadata", "WARNING"):
            self.assertEqual(feed(s, b'c SETMETADATA "" (/private/y "new")\r\n'), b"c OK SETMETADATA completed\r\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read().count(b"\n"), 4)          # magic + 3 good entries: the bad ones are gone
        with open(path, "wb") as f:
            f.write(os.urandom(4096))                             # nothing readable at all
        out = feed(s, b'd GETMETADATA "" /shared/comment\r\n')
        self.assertEqual(out, b'* METADATA "" (/shared/comment NIL)\r\nd OK GETMETADATA completed\r\n')

    def test_total_size_limit(self):
        root = tempfile.mkdtemp(prefix="mailsrv-metadata-")
        self.addCleanup(shutil.rmtree, root, True)
        f = md.MetadataFile(root)
        value = b"v" * md.MAX_VALUE
        for i in range(md.MAX_TOTAL // md.MAX_VALUE):
            f.change("F%d" % i, [("/private/big", value)])
        with self.assertRaises(md.TooMany):
            f.change("Fx", [("/private/big", b"1")])
        f.change("F0", [("/private/big", None)])                 # shrinking is always allowed
        f.change("Fx", [("/private/big", b"1")])

    def test_concurrent_writers_lose_nothing(self):
        root = tempfile.mkdtemp(prefix="mailsrv-metadata-")
        self.addCleanup(shutil.rmtree, root, True)

        def writer(n):
            f = md.MetadataFile(root)
            for i in range(15):
                f.change("F%d" % n, [("/private/e%d" % i, b"%d" % i)])
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(md.MetadataFile(root).load()), 60)

    def test_a_value_too_big_is_refused_before_its_octets_come(self):
        """§4.3 MAXSIZE answered instead of "+" (the session's limit is the store's)."""
        self.assertEqual(M.MAX_VALUE, md.MAX_VALUE)
        s, b = self.session()
        self.assertEqual(feed(s, b"a SETMETADATA INBOX (/private/x {65537}\r\n"),
                         b"a NO [METADATA MAXSIZE 65536] Value of 65537 octets over the limit of 65536\r\n")
        self.assertEqual(feed(s, b"b SETMETADATA INBOX (/private/x {65536}\r\n"), b"+ Ready for literal data\r\n")
        self.assertEqual(feed(s, b"v" * 65536 + b")\r\n"), b"b OK SETMETADATA completed\r\n")
        self.assertEqual(feed(s, b"c SETMETADATA INBOX (/private/x {60000000}\r\n"),    # over any literal
                         b"c NO [TOOBIG] literal of 60000000 octets is over the limit\r\n")
        self.assertEqual(feed(s, b"d NOOP\r\n"), b"d OK NOOP completed\r\n")

    def test_a_backend_without_metadata_says_no(self):
        s, _ = make_session(FakeImapBackend())
        login(s)
        self.assertEqual(feed(s, b"a GETMETADATA INBOX /private/comment\r\n"),
                         b"a NO [CANNOT] METADATA is not available for this account\r\n")

    def test_select_values(self):
        found = {"/private/a": b"1", "/private/a/b": b"22", "/private/a/b/c": b"333"}
        self.assertEqual(M.select_values(["/private/a"], found, 1, None),
                         ([("/private/a", b"1"), ("/private/a/b", b"22")], 0))
        self.assertEqual(M.select_values(["/private/a"], found, None, 2),
                         ([("/private/a", b"1"), ("/private/a/b", b"22")], 3))
        with self.assertRaises(ImapParseError):
            M.entry_name(b"/private/a\x19", True)


class MetadataServerTest(ServerTestCase):
    extra_config = {"imap_port": "0"}
    tls = False
    BOB, BOB_PW = "bob@example.test", "bob-secret"

    def setUp(self):
        self.clear_mailbox(self.BOB)
        path = os.path.join(self.maildir(self.BOB), md.FILE)
        if os.path.exists(path):
            os.unlink(path)

    def test_set_and_get_over_loopback_and_the_file_on_disk(self):
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        self.addCleanup(m.logout)
        self.assertEqual(m.login(self.BOB, self.BOB_PW)[0], "OK")
        caps = m.capability()[1][0].split()
        self.assertIn(b"METADATA", caps)
        self.assertIn(b"METADATA-SERVER", caps)
        typ, data = m.xatom("SETMETADATA", 'INBOX (/private/comment "from imaplib" /shared/comment "s")')
        self.assertEqual(typ, "OK", data)
        typ, data = m.xatom("GETMETADATA", "INBOX (/private/comment /shared/comment)")
        self.assertEqual(typ, "OK")
        self.assertEqual(m.untagged_responses.pop("METADATA"),
                         [b'INBOX (/private/comment "from imaplib" /shared/comment "s")'])
        path = os.path.join(self.maildir(self.BOB), md.FILE)
        with open(path, "rb") as f:
            self.assertIn(base64.b64encode(b"from imaplib"), f.read())
        typ, data = m.xatom("SETMETADATA", 'INBOX (/private/comment "%s")' % ("x" * 70000))
        self.assertEqual(typ, "NO")
        self.assertIn(b"[METADATA MAXSIZE 65536]", data[0])

    def test_many_clients_from_many_addresses_at_once(self):
        """Abuse: 12 sessions from 12 loopback addresses set entries concurrently on the
        same mailbox; every write is kept (the lock), the 100-entry limit holds for all of
        them together, and the file stays readable."""
        class FromAddress(imaplib.IMAP4):
            def __init__(self, port, source):
                self.source = source
                super().__init__("127.0.0.1", port, timeout=30)

            def _create_socket(self, timeout):
                return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
        results, errors = [], []
        # Logged in one after another: 10 password checks in flight at once for one
        # account are refused by design (auth_account_max_failures counts them).
        sessions = []
        for i in range(12):
            m = FromAddress(self.ports["imap"], "127.0.2.%d" % (10 + i))
            m.login(self.BOB, self.BOB_PW)
            sessions.append(m)

        def client(i):
            try:
                m = sessions[i]
                for j in range(10):
                    typ, data = m.xatom("SETMETADATA", 'INBOX (/private/c%d/e%d "%s")' % (i, j, "v" * 500))
                    results.append(typ)
                m.logout()
            except Exception as exc:       # reported below, with the address
                errors.append((i, exc))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual((results.count("OK"), results.count("NO")), (md.MAX_ENTRIES, 120 - md.MAX_ENTRIES))
        entries = md.MetadataFile(self.maildir(self.BOB)).load()
        self.assertEqual(len(entries), md.MAX_ENTRIES)


if __name__ == "__main__":
    unittest.main()
