"""OpenFolder.replace (contracts.py, RFC 8508 §3.4) held to the same answers by
the fake (tests/imap_fake.py) and the real service (protocols/backend/imapaccess.py
over store/), with the harnesses of tests/test_imap_contract.py."""

import unittest

from protocols.backend import contracts as c
from tests.test_imap_contract import HARNESSES, MSG, ContractChecks


class ReplaceChecks:
    harness_class = None
    setUp = ContractChecks.setUp
    ok, code, append, select = ContractChecks.ok, ContractChecks.code, ContractChecks.append, ContractChecks.select

    def test_replace_appends_then_removes_whatever_the_flags(self):
        uids = self.append("Drafts", (MSG,), (MSG,)).uids
        folder = self.select("Drafts")
        out = self.ok(lambda done: folder.replace(uids[0], "Drafts", c.AppendItem(b"new", ("\\Draft",)), done))
        self.assertIsInstance(out, c.ReplaceOutcome)
        self.assertEqual((out.expunged, out.failed), ((uids[0],), ""))
        self.assertEqual(out.appended.uids, (uids[1] + 1,))
        self.ok(folder.refresh)
        self.assertEqual([(m.uid, m.flags) for m in folder.state().messages],
                         [(uids[1], frozenset()), (uids[1] + 1, frozenset({"\\Draft"}))])
        self.assertEqual(self.ok(lambda done: folder.read(uids[1] + 1, done)), b"new")
        out = self.ok(lambda done: folder.replace(uids[1], "Sent", c.AppendItem(b"sent"), done))
        self.assertEqual(out.expunged, (uids[1],))
        self.assertEqual(self.ok(lambda done: self.account.status("Sent", done)).messages, 1)

    def test_refusals_change_nothing(self):
        uids = self.append("Drafts", (MSG,)).uids
        folder = self.select("Drafts")
        self.assertEqual(self.code(lambda done: folder.replace(uids[0], "Nope", c.AppendItem(b"x"), done)), "TRYCREATE")
        self.assertEqual(self.code(lambda done: folder.replace(uids[0] + 5, "Drafts", c.AppendItem(b"x"), done)),
                         "EXPUNGEISSUED")
        self.h.set_quota(len(MSG) + 2, 0)
        self.assertEqual(self.code(lambda done: folder.replace(uids[0], "Drafts", c.AppendItem(MSG + b"xyz"), done)),
                         "OVERQUOTA")
        out = self.ok(lambda done: folder.replace(uids[0], "Drafts", c.AppendItem(MSG + b"xy"), done))  # net (§3.4)
        self.assertEqual(out.expunged, (uids[0],))
        readonly = self.select("Drafts", readonly=True)
        self.assertIsInstance(self.h.run(lambda done: readonly.replace(out.appended.uids[0], "Drafts",
                                                                       c.AppendItem(b"x"), done)), c.MailboxError)
        st = self.ok(lambda done: self.account.status("Drafts", done))
        self.assertEqual(st.messages, 1)


for _h in HARNESSES:
    _name = "Replace%sTest" % _h.name.capitalize()
    globals()[_name] = type(_name, (ReplaceChecks, unittest.TestCase), {"harness_class": _h})
del _h, _name

if __name__ == "__main__":
    unittest.main()
