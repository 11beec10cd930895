"""Dovecot and mailsrv serving one Maildir at the same time over IMAP (issue 10 "Tests").

mailsrv runs in-process (tests/helpers.py ServerTestCase, IMAP on a free
port); Debian's Dovecot 2.3 (tests/dovecot_imap.py) serves bob's Maildir of
that very server, not a copy.  Both keep UIDs in Dovecot's own
``dovecot-uidlist`` and keywords in ``dovecot-keywords`` (store/folder.py),
so an IMAP client must see the same folder from either: the same UIDVALIDITY
and UIDs (RFC 3501 §2.3.1.1), flags and keywords set on one shown by the
other (§2.3.2; after a NOOP, §6.1.2, which lets the server report changes),
APPENDs on both numbered in one sequence (RFC 4315 APPENDUID), and a message
EXPUNGEd on one gone from the other.

Ownership: Dovecot refuses uid 0 for mail, so as root its mail process runs
as ``nobody`` while this in-process mailsrv runs as root.  As
tests/test_interop_dovecot.py does, the tree is handed to ``nobody``
(``own_tree``) before every step Dovecot takes, so it can read the files
mailsrv wrote (mailsrv, as root, reads and renames Dovecot's files anyway).

Two tests need only mailsrv's SMTP and its store (store/folder.py), among
them the keyword that the store adds within the second a Dovecot session read
``dovecot-keywords`` (Dovecot notices a rewrite by its mtime in seconds); the
others need mailsrv's IMAP listener and fail, saying so, where it is missing.  Skipped when Dovecot (dovecot-core, dovecot-imapd) is
missing or not 2.3, or MAILSRV_SKIP_INTEROP is set; every wait is bounded.
"""

import imaplib
import os
import re
import smtplib
import time
import unittest

from store.folder import Folder
from tests import dovecot_imap
from tests.helpers import wait_for

BOB, BOB_PW = "bob@example.test", "bob-secret"
TIMEOUT = 30
COUNT = 20


def skip_reason():
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    return dovecot_imap.skip_reason()


def message(tag, n):
    return ("From: carol@elsewhere.test\r\nTo: %s\r\nSubject: %s %d\r\n"
            "Message-ID: <%s.%d@elsewhere.test>\r\n\r\nmessage %d of %s\r\n" % (BOB, tag, n, tag, n, n, tag)).encode()


def check(result, what):
    typ, data = result
    if typ != "OK":
        raise AssertionError("%s: %s %r" % (what, typ, data))
    return data


def fetch_rows(data):
    """imaplib's FETCH data as [{uid, flags, literal}], one per message (literals come as tuples)."""
    rows, current = [], None
    for item in data:
        text, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        if not isinstance(text, bytes):
            continue
        if re.match(rb"\d+ \(", text):
            current = {"text": b"", "literal": None}
            rows.append(current)
        if current is not None:
            current["text"] += text
            if literal is not None:
                current["literal"] = literal
    out = []
    for row in rows:
        uid = re.search(rb"UID (\d+)", row["text"])
        flags = re.search(rb"FLAGS \(([^)]*)\)", row["text"])
        if uid:
            out.append({"uid": int(uid.group(1)), "literal": row["literal"],
                        "flags": set(flags.group(1).decode().split()) - {"\\Recent"} if flags else None})
    return out


def subjects(c, tag):
    """{subject: uid} of the messages whose Subject starts with ``tag``, after a NOOP (RFC 3501
    §6.1.2).  Filtered here rather than with SEARCH: this test is about sharing, not searching."""
    check(c.noop(), "NOOP")
    c.untagged_responses.clear()         # the changes the NOOP reported: not wanted here
    rows = fetch_rows(check(c.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "UID FETCH"))
    out = {}
    for row in rows:
        subject = (row["literal"] or b"").decode().partition(":")[2].strip()
        if subject.startswith(tag + " "):
            out[subject] = row["uid"]
    return out


def flags(c, uids):
    """{uid: flags} after a NOOP."""
    check(c.noop(), "NOOP")
    c.untagged_responses.clear()
    rows = fetch_rows(check(c.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS)"), "UID FETCH"))
    return {row["uid"]: row["flags"] for row in rows}


def uidvalidity(c):
    return int(check(c.status("INBOX", "(UIDVALIDITY)"), "STATUS")[0].split(b"UIDVALIDITY ")[1].split(b")")[0])


@unittest.skipIf(skip_reason(), skip_reason())
class DovecotAndMailsrvShareTheMaildir(dovecot_imap.shared_maildir_case()):
    def setUp(self):
        self.tag = "share-%s" % self._testMethodName
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=TIMEOUT) as s:
            for n in range(1, COUNT + 1):
                self.assertEqual(s.sendmail("carol@elsewhere.test", [BOB], message(self.tag, n)), {})
        self.expected = ["%s %d" % (self.tag, n) for n in range(1, COUNT + 1)]
        self.sessions = {}

    def tearDown(self):
        for c in self.sessions.values():
            try:
                c.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def session(self, name):
        """A logged-in session with INBOX selected on "dovecot" or "mailsrv"."""
        if name not in self.sessions:
            if name == "dovecot":
                port = self.dovecot.port
            else:
                if "imap" not in self.ports:
                    self.fail("mailsrv has no IMAP listener: imap_port = 0 gave only %s"
                              % ", ".join(sorted(self.ports)))
                port = self.ports["imap"]
            c = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
            check(c.login(BOB, BOB_PW), "%s LOGIN" % name)
            check(c.select("INBOX"), "%s SELECT" % name)
            self.sessions[name] = c
        return self.sessions[name]

    def on(self, name):
        """The session, with the tree handed to Dovecot's user first when Dovecot acts next."""
        if name == "dovecot":
            dovecot_imap.own_tree(self.bob)
        return self.session(name)

    def both_see(self, tag, what):
        """Wait (bounded) until both list the same {subject: uid} for ``tag``; return it."""
        views = {}

        def same():
            for name in ("mailsrv", "dovecot"):
                views[name] = subjects(self.on(name), tag)
            return views["mailsrv"] == views["dovecot"] and views["mailsrv"]
        wait_for(same, what, lambda: "mailsrv: %s\ndovecot: %s\n%s" % (views.get("mailsrv"), views.get("dovecot"),
                                                                        self.dovecot.log_tail()), timeout=TIMEOUT)
        return views["mailsrv"]

    # -- runs on any checkout: Dovecot over what mailsrv delivered ------------
    def test_dovecot_serves_mailsrv_deliveries_with_the_stores_uids(self):
        d = self.on("dovecot")
        seen = subjects(d, self.tag)
        self.assertEqual(sorted(seen), sorted(self.expected), self.dovecot.log_tail())
        snap = Folder(self.bob).snapshot()       # mailsrv's store, as its IMAP will number them
        ours = {}
        for m in snap.messages:
            with open(m.path, "rb") as f:
                subject = re.search(rb"^Subject: (.*?)\r?$", f.read(), re.M).group(1).decode()
            if subject.startswith(self.tag + " "):
                ours[subject] = m.uid
        self.assertEqual(ours, seen)
        self.assertEqual(uidvalidity(self.on("dovecot")), snap.uidvalidity)

    def test_keywords_mailsrv_adds_in_the_second_dovecot_read_the_file(self):
        """Dovecot reads dovecot-keywords again only when its mtime, in whole seconds, differs from
        the one it read last; its own writers make the mtime grow for that reason (maildir-keywords.c,
        "mtime must grow every time").  A keyword mailsrv's store adds within the second a Dovecot
        session read the file must still reach that session by name, not as "unknown-N"."""
        uids = sorted(subjects(self.on("dovecot"), self.tag).values())
        for n in range(3):      # three tries: on a slow machine one may cross a second and prove nothing
            while time.time() % 1 > 0.2:           # start early in a second (the clock, not an event)
                time.sleep(0.01)
            check(self.on("dovecot").uid("STORE", str(uids[0]), "+FLAGS", "($OnDovecot%d)" % n), "STORE")
            reader = imaplib.IMAP4("127.0.0.1", self.dovecot.port, timeout=TIMEOUT)
            self.sessions["reader%d" % n] = reader
            check(reader.login(BOB, BOB_PW), "LOGIN")
            check(reader.select("INBOX"), "SELECT")            # this session reads the file now
            Folder(self.bob).set_keywords([uids[1]], ["$OnMailsrv%d" % n])
            dovecot_imap.own_tree(self.bob)
            wait_for(lambda: "$OnMailsrv%d" % n in flags(reader, [uids[1]])[uids[1]],
                     "Dovecot to name the keyword mailsrv added in the same second",
                     lambda: "Dovecot shows %s" % flags(reader, [uids[1]]), timeout=5)

    # -- need mailsrv's IMAP ---------------------------------------------------
    def test_same_uidvalidity_and_uids(self):
        view = self.both_see(self.tag, "the same UIDs for the delivered messages")
        self.assertEqual(sorted(view), sorted(self.expected))
        self.assertEqual(uidvalidity(self.on("mailsrv")), uidvalidity(self.on("dovecot")))

    def test_flags_and_keywords_stored_on_mailsrv_shown_by_dovecot(self):
        view = self.both_see(self.tag, "the delivered messages on both")
        uids = sorted(view.values())
        marked, other = uids[:5], uids[5:]
        check(self.on("mailsrv").uid("STORE", ",".join(map(str, marked)), "+FLAGS", "(\\Flagged $Label1)"),
              "mailsrv STORE")
        wait_for(lambda: all({"\\Flagged", "$Label1"} <= f for f in flags(self.on("dovecot"), marked).values()),
                 "Dovecot to show mailsrv's \\Flagged $Label1",
                 lambda: "Dovecot shows %s\n%s" % (flags(self.on("dovecot"), marked), self.dovecot.log_tail()),
                 timeout=TIMEOUT)
        for uid, f in flags(self.on("dovecot"), other).items():
            self.assertFalse({"\\Flagged", "$Label1"} & f, uid)

    def test_flags_and_keywords_stored_on_dovecot_shown_by_mailsrv(self):
        view = self.both_see(self.tag, "the delivered messages on both")
        uids = sorted(view.values())
        marked, other = uids[5:10], uids[:5] + uids[10:]
        check(self.on("dovecot").uid("STORE", ",".join(map(str, marked)), "+FLAGS", "(\\Answered $Label2)"),
              "Dovecot STORE")
        wait_for(lambda: all({"\\Answered", "$Label2"} <= f for f in flags(self.on("mailsrv"), marked).values()),
                 "mailsrv to show Dovecot's \\Answered $Label2 (after NOOP)", timeout=TIMEOUT)
        for uid, f in flags(self.on("mailsrv"), other).items():
            self.assertFalse({"\\Answered", "$Label2"} & f, uid)

    def test_appends_on_both_get_one_sequence_of_uids(self):
        self.both_see(self.tag, "the delivered messages on both")
        appended = {}
        for name in ("mailsrv", "dovecot", "mailsrv"):
            subject = "%s appended %d" % (self.tag, len(appended) + 1)
            body = message(self.tag, 0).replace(("Subject: %s 0" % self.tag).encode(), ("Subject: " + subject).encode())
            result = check(self.on(name).append("INBOX", None, None, body), "%s APPEND" % name)
            m = re.search(rb"APPENDUID (\d+) (\d+)", result[0])
            self.assertTrue(m, "%s: no APPENDUID (RFC 4315 §3) in %r" % (name, result))
            appended[subject] = int(m.group(2))
        view = self.both_see(self.tag + " appended", "the appended messages on both")
        self.assertEqual(view, appended)
        self.assertEqual(sorted(appended.values()), list(appended.values()), "UIDs grow in APPEND order")

    def test_expunge_on_one_is_gone_on_the_other(self):
        view = self.both_see(self.tag, "the delivered messages on both")
        uids = sorted(view.values())
        for name, uid in (("mailsrv", uids[0]), ("dovecot", uids[1])):
            c = self.on(name)
            check(c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"), "%s STORE \\Deleted" % name)
            check(c.expunge(), "%s EXPUNGE" % name)
            view = self.both_see(self.tag, "UID %d expunged on %s gone from both" % (uid, name))
            self.assertNotIn(uid, view.values())
        self.assertEqual(sorted(view.values()), uids[2:])

    def qresync_session(self):
        c = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=TIMEOUT)
        self.sessions["qresync%d" % len(self.sessions)] = c
        check(c.login(BOB, BOB_PW), "mailsrv LOGIN")
        check(c.enable("QRESYNC"), "ENABLE")
        self.assertEqual(c.untagged_responses.pop("ENABLED", None), [b"QRESYNC"])
        return c

    def test_qresync_on_mailsrv_hears_what_dovecot_changed(self):
        """RFC 7162 §3.2.5: a client that synced with mailsrv, then Dovecot flags
        two messages and expunges one: mailsrv's QRESYNC SELECT answers exactly
        that (the store saw the renames and the missing file), and both agree on
        the flags."""
        uids = sorted(self.both_see(self.tag, "the delivered messages on both").values())
        c = self.qresync_session()
        check(c.select("INBOX"), "SELECT")
        modseq = int(c.response("HIGHESTMODSEQ")[1][0])
        validity = uidvalidity(c)
        d = self.on("dovecot")
        check(d.uid("STORE", "%d,%d" % (uids[2], uids[3]), "+FLAGS", "(\\Answered)"), "Dovecot STORE")
        check(d.uid("STORE", str(uids[0]), "+FLAGS.SILENT", "(\\Deleted)"), "Dovecot STORE \\Deleted")
        check(d.expunge(), "Dovecot EXPUNGE")
        self.both_see(self.tag, "UID %d expunged on Dovecot gone from both" % uids[0])
        again = self.qresync_session()
        typ, _ = again._simple_command("SELECT", "INBOX (QRESYNC (%d %d %d:%d))" % (validity, modseq, uids[0], uids[-1]))
        self.assertEqual(typ, "OK")
        self.assertEqual(again.untagged_responses.get("VANISHED"), [b"(EARLIER) %d" % uids[0]])
        rows = fetch_rows(again.untagged_responses.get("FETCH", []))
        self.assertEqual({r["uid"]: r["flags"] for r in rows}, {uids[2]: {"\\Answered"}, uids[3]: {"\\Answered"}})
        self.assertEqual(flags(self.on("dovecot"), uids[2:4]), {uids[2]: {"\\Answered"}, uids[3]: {"\\Answered"}})


if __name__ == "__main__":
    unittest.main()
