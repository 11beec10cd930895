"""OBJECTID (RFC 8474) with Debian's Dovecot 2.3 on the same Maildir (tests/dovecot_imap.py).

Dovecot copies a message by hard link, under the same base name or a new one
with the source's GUID in the target record's ``G`` field (what its MOVE
wrote in a trial: ``2 G<source base name> :<new name>``); mailsrv reads that
GUID, so its EMAILID of Dovecot's copies is the source's.  mailsrv's own COPY
and MOVE write the same ``G`` field, and Dovecot must still serve those
folders with mailsrv's UIDs.  MAILBOXID is ``F`` + the GUID of the folder's
uidlist header, the one Dovecot wrote.  Skipped as the other Dovecot tests."""

import imaplib
import os
import re
import unittest

from store import dovecot_files as dv
from tests import dovecot_imap
from tests.test_interop_dovecot_imap import BOB, BOB_PW, check, skip_reason

TIMEOUT = 30
MSG = b"From: carol@elsewhere.test\r\nSubject: objectid %d\r\n\r\nbody %d\r\n"


@unittest.skipIf(skip_reason(), skip_reason())
class DovecotCopiesKeepTheirEmailId(dovecot_imap.shared_maildir_case()):
    def client(self, port):
        c = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
        self.addCleanup(c.logout)
        check(c.login(BOB, BOB_PW), "LOGIN")
        return c

    def emailids(self, c, box):
        check(c.select(box), "SELECT %s" % box)
        data = check(c.uid("FETCH", "1:*", "(UID EMAILID)"), "FETCH EMAILID")
        return dict((int(u), e) for u, e in (re.search(rb"UID (\d+) EMAILID \((M[0-9a-f]+)\)", d).groups()
                                               for d in data if d))

    def test_copies_made_by_either_server_share_the_source_emailid(self):
        ours = self.client(self.ports["imap"])
        check(ours.create("ByDovecot"), "CREATE")
        check(ours.create("ByMailsrv"), "CREATE")
        for n in (1, 2):
            check(ours.append("INBOX", None, None, MSG % (n, n)), "APPEND")
        source = self.emailids(ours, "INBOX")
        self.assertEqual(len(set(source.values())), 2)
        dovecot_imap.own_tree(self.bob)
        theirs = self.client(self.dovecot.port)
        check(theirs.select("INBOX"), "Dovecot SELECT")
        check(theirs.uid("COPY", "1", "ByDovecot"), "Dovecot COPY")
        check(theirs._simple_command("UID", "MOVE", "2", "ByDovecot"), "Dovecot MOVE")
        theirs.close()
        got = self.emailids(ours, "ByDovecot")
        self.assertEqual(sorted(got.values()), sorted(source.values()))      # RFC 8474 §5.1
        check(ours.select("ByDovecot"), "SELECT")
        check(ours.uid("COPY", "1:*", "ByMailsrv"), "mailsrv COPY")
        check(ours.uid("MOVE", "1", "INBOX"), "mailsrv MOVE")
        mine = self.emailids(ours, "ByMailsrv")
        self.assertEqual(sorted(mine.values()), sorted(source.values()))
        back = self.emailids(ours, "INBOX")
        self.assertIn(source[1], back.values())
        with open(os.path.join(self.bob, ".ByMailsrv", dv.UIDLIST)) as f:
            uidlist = f.read()
        self.assertRegex(uidlist, r"\n\d+ G\S+ :")                           # the G field Dovecot also writes
        guid = uidlist.split(" G", 1)[1].split()[0]
        typ, data = ours.status("ByMailsrv", "(MAILBOXID)")
        self.assertEqual(data[0], b"ByMailsrv (MAILBOXID (F" + guid.encode() + b"))")
        dovecot_imap.own_tree(self.bob)                                       # Dovecot reads our G records
        check(theirs.select("ByMailsrv"), "Dovecot SELECT")
        data = check(theirs.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "Dovecot FETCH")
        uids = sorted(int(m) for d in data if isinstance(d, tuple) for m in re.findall(rb"UID (\d+)", d[0]))
        self.assertEqual(uids, sorted(mine))


if __name__ == "__main__":
    unittest.main()
