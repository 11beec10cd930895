"""SORT and THREAD answered alike by Dovecot and mailsrv over one Maildir (issue 12).

mailsrv runs in-process (tests/helpers.py ServerTestCase, IMAP on a free
port) and Debian's Dovecot 2.3 (tests/dovecot_imap.py) serves the same
Maildir, as tests/test_interop_dovecot_imap.py arranges.  A corpus written
to stress RFC 5256 (base subjects with every artifact §2.1 removes, RFC 2047
words, dates in other zones, missing and unreadable dates, groups and
display names, quoted Message-IDs, reference loops, missing parents,
duplicate Message-IDs, In-Reply-To with junk) is APPENDed through mailsrv
with INTERNALDATEs, and every SORT key (each also REVERSEd), SORT=DISPLAY's
keys and the three threading algorithms must answer the same on both, and
so must SEARCH's text keys with non-ASCII needles (I18NLEVEL=1).
Skipped when Dovecot is missing or not 2.3, or MAILSRV_SKIP_INTEROP is set.
"""

import imaplib
import unittest

from tests import dovecot_imap
from tests.test_interop_dovecot_imap import BOB, BOB_PW, TIMEOUT, check, skip_reason


def mail(subject=None, date=None, frm="Carol <carol@elsewhere.test>", to="bob@example.test", cc=None,
         mid=None, refs=None, irt=None):
    head = []
    for name, value in (("From", frm), ("To", to), ("Cc", cc), ("Subject", subject), ("Date", date),
                        ("Message-ID", mid), ("References", refs), ("In-Reply-To", irt)):
        if value is not None:
            head.append("%s: %s" % (name, value))
    return ("\r\n".join(head) + "\r\n\r\nbody\r\n").encode("utf-8")


CORPUS = [
    mail("Re: [list] Fwd: hello", "Mon, 1 Jan 2024 10:00:00 +0100", mid="<h1@x>"),
    mail("hello", "Mon, 1 Jan 2024 08:30:00 -0130", frm="=?utf-8?q?=C3=89ve?= <eve@x.test>", mid="<h0@x>"),
    mail("[fwd: hello]", "1 Jan 2024 11:00 +0000", mid='<"h2"@x>', refs="<h0@x> <h1@x>"),
    mail("hello (fwd)", None, frm="zed@x.test", mid="<h3@x>", irt="<h2@x> (was: junk <q@x>)"),
    mail("RE: re: Hello", "not a date at all", frm="undisclosed: ;, Ann <ann@x.test>", mid="<h4@x>",
         refs="<gone@x> <h0@x>"),
    mail("=?utf-8?q?Re=3A_gr=C3=BC=C3=9Fe?=", "Tue, 2 Jan 2024 09:00:00 +0000", cc="Dan <dan@x.test>",
         mid="<g1@x>"),
    mail("Grüße", "Tue, 2 Jan 2024 08:00:00 +0000", cc="abe@x.test", mid="<g0@x>", refs="<g1@x>"),
    mail("  spaced   out\t subject  ", "Wed, 3 Jan 2024 00:00:00 +0000", mid="<s@x>"),
    mail("[a][b]", "Wed, 3 Jan 2024 00:00:00 +0000", mid="<b@x>"),
    mail(None, "Thu, 4 Jan 2024 00:00:00 +0000", frm=None, mid="<nosubj@x>"),
    mail("loop a", "Fri, 5 Jan 2024 00:00:00 +0000", mid="<la@x>", refs="<lb@x>"),
    mail("loop b", "Fri, 5 Jan 2024 00:00:01 +0000", mid="<lb@x>", refs="<la@x>"),
    mail("dup", "Sat, 6 Jan 2024 00:00:00 +0000", mid="<dup@x>"),
    mail("dup", "Sat, 6 Jan 2024 00:00:00 +0000", mid="<dup@x>"),
    mail("Re: dup", "Sat, 6 Jan 2024 00:00:02 +0000", mid="<dupr@x>", refs="<dup@x>"),
    mail("orphan one", "Sun, 7 Jan 2024 00:00:00 +0000", mid="<o1@x>", refs="<missing@x>"),
    mail("orphan two", "Sun, 7 Jan 2024 00:00:01 +0000", mid="<o2@x>", refs="<missing@x>"),
    mail("Fw: Sale", "Mon, 8 Jan 2024 00:00:00 -0800", frm='"Bob, Jr." <bj@x.test>', to="Zoe <zoe@x.test>"),
]
DATES = ['"01-Feb-2024 10:00:00 +0000"', '"01-Feb-2024 09:00:00 +0000"']
SORTS = ["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO",
         "SUBJECT DATE", "FROM REVERSE DATE"]


@unittest.skipIf(skip_reason(), skip_reason() or "")
class DovecotAndMailsrvSortAlike(dovecot_imap.shared_maildir_case()):
    def session(self, port):
        c = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
        self.addCleanup(c.logout)
        check(c.login(BOB, BOB_PW), "LOGIN")
        check(c.select("INBOX"), "SELECT")
        return c

    def test_every_sort_key_and_thread_algorithm_answers_alike(self):
        self.clear_mailbox(BOB)
        ours = self.session(self.ports["imap"])
        for n, data in enumerate(CORPUS):
            check(ours.append("INBOX", None, DATES[n % 2], data), "APPEND")
        check(ours.noop(), "NOOP")
        dovecot_imap.own_tree(self.bob)
        theirs = self.session(self.dovecot.port)
        self.assertEqual(int(check(theirs.select("INBOX"), "SELECT")[0]), len(CORPUS))
        for keys in SORTS:
            for reverse in ("", "REVERSE "):
                program = "(%s%s)" % (reverse, keys)
                mine, dove = (check(c.sort(program, "UTF-8", "ALL"), "SORT") for c in (ours, theirs))
                self.assertEqual(mine, dove, "SORT %s" % program)
        for algorithm in ("ORDEREDSUBJECT", "REFERENCES", "REFS"):
            mine, dove = (check(c.thread(algorithm, "UTF-8", "ALL"), "THREAD") for c in (ours, theirs))
            self.assertEqual(mine, dove, "THREAD %s" % algorithm)
        # I18NLEVEL=1 (RFC 5255): SEARCH compares by i;unicode-casemap on both
        for key, needle in (("SUBJECT", "GRÜßE"), ("SUBJECT", "grüsse"), ("FROM", "ÉVE"), ("SUBJECT", "HELLO"),
                            ("FROM", "e\u0301ve")):
            answers = []
            for c in (ours, theirs):
                c.literal = needle.encode("utf-8")
                answers.append(check(c.search("UTF-8", key), "SEARCH %s" % key))
            self.assertEqual(answers[0], answers[1], "SEARCH %s %s" % (key, needle))


if __name__ == "__main__":
    unittest.main()
