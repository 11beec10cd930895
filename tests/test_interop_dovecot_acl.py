"""Interop: Debian's Dovecot 2.3 with its acl plugin (``acl = vfile``) and mailsrv
read and write one ``dovecot-acl`` per folder (store/acl.py).

Dovecot answers GETACL from the file mailsrv wrote (a negative entry and
``anyone`` included), and mailsrv reads the file Dovecot writes for a SETACL."""

import imaplib
import os
import re
import shutil
import tempfile
import unittest

from store import acl as A
from store import mailboxes as mb
from store.maildir import MailStore
from tests import dovecot_imap

BOB, BOB_PW = "bob@example.test", "bob-secret"
EXTRA = """mail_plugins = $mail_plugins acl imap_acl
plugin {
  acl = vfile
}
"""


def skip_reason():
    if os.environ.get("MAILSRV_SKIP_INTEROP"):
        return "MAILSRV_SKIP_INTEROP is set"
    return dovecot_imap.skip_reason()


def rights_of(acl_line: bytes):
    """{identifier: set of rights} of an ``* ACL`` answer's data."""
    words = re.findall(rb'"[^"]*"|\S+', acl_line)[1:]
    return {w.strip(b'"').decode(): set(r.strip(b'"').decode()) for w, r in zip(words[::2], words[1::2])}


@unittest.skipIf(skip_reason(), skip_reason())
class DovecotSharesOurAclFilesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-dovecot-acl-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        store = MailStore(self.dir, "mx.example.test")
        self.root = store.maildir_path(BOB)
        boxes = mb.user_mailboxes(store, BOB)
        boxes.create("Team")
        self.team = boxes.path_of("Team")
        A.change_acl(self.team, "user=alice@example.test", "replace", "lrs")
        A.change_acl(self.team, "-user=eve@example.test", "replace", "w")
        A.change_acl(self.team, "anyone", "replace", "l")
        dovecot_imap.open_path_to(self.root, self.dir)

    def test_dovecot_reads_ours_and_we_read_dovecots(self):
        with dovecot_imap.DovecotImap(self.root, BOB, BOB_PW, extra=EXTRA) as dovecot:
            m = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=30)
            try:
                m.login(BOB, BOB_PW)
                typ, data = m.getacl("Team")
                self.assertEqual(typ, "OK", (data, dovecot.log_tail()))
                got = rights_of(data[0])
                self.assertEqual(got.get("alice@example.test"), set("lrs"), data)
                self.assertEqual(got.get("-eve@example.test"), set("w"), data)
                self.assertEqual(got.get("anyone"), set("l"), data)
                typ, data = m.setacl("Team", "carol@example.test", "lrwi")
                self.assertEqual(typ, "OK", (data, dovecot.log_tail()))
            finally:
                m.logout()
        entries = dict(A.read_acl(self.team))
        self.assertEqual(entries["user=carol@example.test"], "lrwi")
        self.assertEqual(entries["user=alice@example.test"], "lrs")
        self.assertEqual(A.rights_for(A.read_acl(self.team), "eve@example.test", BOB), "l")


if __name__ == "__main__":
    unittest.main()
