"""dmarc_check = enforce on the real server over loopback, DNS from
tests/dnsfake.py: a message whose From domain publishes p=reject and that
fails SPF and DKIM gets 550 5.7.1 (dmarc_reject_action = reject), lands in
Junk (junk) or only gets the header (mark); a message DKIM-signed by its
From domain (our own signer, the key published) passes."""

import glob
import os
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

from protocols import dkim
from protocols.dns import codec as dns
from tests.dnsfake import FakeDnsServer
from tests.helpers import ROOT, ServerTestCase, read_stored, wait_for
from tests.test_dkim import ED_KEY, key_record

FORGED = b"From: Joe <joe@forged.example>\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nPay now.\r\n"
SIGNED = b"From: Ann <ann@signed.example>\r\nTo: alice@example.test\r\nSubject: signed\r\n\r\nHello.\r\n"


class DmarcEnforced(ServerTestCase):
    tls = False

    @classmethod
    def setUpClass(cls):
        cls.dns = FakeDnsServer().start()
        for name, text in (("_dmarc.forged.example", "v=DMARC1; p=reject"),
                           ("forged.example", "v=spf1 -all"),
                           ("_dmarc.signed.example", "v=DMARC1; p=reject; adkim=s"),
                           ("signed.example", "v=spf1 -all"),
                           ("sel._domainkey.signed.example", key_record(ED_KEY))):
            cls.dns.add(name, dns.TYPE_TXT, (text.encode(),))
        cls.extra_config = {"dmarc_check": "enforce", "dns_servers": "%s:%d" % cls.dns.address}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.dns.stop()

    def setUp(self):
        self.clear_mailbox("alice@example.test")
        for p in glob.glob(os.path.join(self.maildir("alice@example.test", ".Junk"), "new", "*")):
            os.unlink(p)

    def action(self, value):
        config = self.server.backend.delivery.config
        old = config.dmarc_reject_action
        config.dmarc_reject_action = value
        self.addCleanup(setattr, config, "dmarc_reject_action", old)

    def send(self, sender, data):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as c:
            c.ehlo("client.example")
            c.sendmail(sender, ["alice@example.test"], data)

    def junk(self):
        return [read_stored(p) for p in glob.glob(os.path.join(self.maildir("alice@example.test", ".Junk"), "new", "*"))]

    def test_reject_gives_550_5_7_1_and_stores_nothing(self):
        self.action("reject")
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send("joe@forged.example", FORGED % b"reject")
        self.assertEqual(cm.exception.smtp_code, 550)
        self.assertTrue(cm.exception.smtp_error.startswith(b"5.7.1 "), cm.exception.smtp_error)
        self.assertIn(b"forged.example", cm.exception.smtp_error)
        self.assertEqual(self.new_messages("alice@example.test"), [])
        self.assertEqual(self.junk(), [])

    def test_junk_delivers_into_the_junk_folder(self):
        self.action("junk")
        self.send("joe@forged.example", FORGED % b"junk")
        wait_for(lambda: len(self.junk()) == 1, "delivery into Junk")
        [stored] = self.junk()
        self.assertEqual(self.new_messages("alice@example.test"), [])
        self.assertIn(b"dmarc=fail (p=reject dis=reject) header.from=forged.example", stored)

    def test_mark_only_adds_the_header(self):
        self.action("mark")
        self.send("joe@forged.example", FORGED % b"mark")
        wait_for(lambda: len(self.new_messages("alice@example.test")) == 1, "delivery into INBOX")
        [stored] = self.new_messages("alice@example.test")
        head = stored.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
        self.assertEqual(head.count(b"Authentication-Results:"), 1)
        self.assertIn(b"Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=joe@forged.example;"
                      b" dkim=none; dmarc=fail (p=reject dis=reject) header.from=forged.example", head)
        self.assertEqual(self.junk(), [])

    def test_aligned_dkim_signature_passes(self):
        self.action("reject")
        signed = dkim.sign_message(SIGNED, [("signed.example", "sel", ED_KEY)], int(time.time()))
        self.send("ann@signed.example", signed)
        wait_for(lambda: len(self.new_messages("alice@example.test")) == 1, "delivery into INBOX")
        [stored] = self.new_messages("alice@example.test")
        head = stored.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
        self.assertIn(b"; dkim=pass header.d=signed.example header.s=sel", head)
        self.assertIn(b"; dmarc=pass (p=reject dis=none) header.from=signed.example", head)


class DmarcCommand(unittest.TestCase):
    """`python3 mailsrv.py dns DMARC DOMAIN` against tests/dnsfake.py."""

    @classmethod
    def setUpClass(cls):
        cls.srv = FakeDnsServer().start()
        cls.srv.add("_dmarc.example.org", dns.TYPE_TXT, (b"v=DMARC1; p=reject; sp=quarantine; pct=50",))
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def run_cli(self, *args):
        p = subprocess.run([sys.executable, "mailsrv.py", "dns", *args, "--dns-server", "%s:%d" % self.srv.address,
                            "--data", self.tmp.name], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_record_where_and_org_domain(self):
        rc, out, err = self.run_cli("dmarc", "news.example.org")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[:3], ["_dmarc.news.example.org: no DMARC record",
                                     "_dmarc.example.org: v=DMARC1; p=reject; sp=quarantine; pct=50",
                                     "_dmarc.org: no DMARC record"])
        self.assertEqual(lines[3], "policy for news.example.org: quarantine (record at _dmarc.example.org, sp=; "
                                   "pct=50 adkim=r aspf=r)")
        self.assertTrue(lines[4].startswith("organizational domain: example.org (DNS tree walk"), out)

    def test_no_record(self):
        rc, out, _ = self.run_cli("DMARC", "nothing.test")
        self.assertEqual(rc, 1)
        self.assertIn("policy for nothing.test: none found", out)
