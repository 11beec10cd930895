"""DKIM in the server and on the command line: mail that leaves from our
domain is signed (rsa-sha256 and ed25519-sha256 both, the newest selector of
each type) before it is queued; mail received for relay from elsewhere and
mail of other domains is not; `mailsrv.py dkim keygen` writes a key openssl
and we read, and prints the record to publish; `mailsrv.py dkim verify`."""

import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from mailsrv import Config, MailServer
from protocols import dkim
from protocols.base import new_id
from protocols.crypto import ed25519, keys
from protocols.smtp.address import Address
from protocols.smtp.state import Envelope
from store.datadir import DataDirError
from store.dkimkeys import write_key
from tests.helpers import ROOT, ServerTestCase, client_tls, wait_for
from tests.spffake import FakeResolver
from tests.test_backend_contracts import RealHarness, ctx
from protocols.dns import codec as dns_codec
from tests.dnsfake import FakeDnsServer
from tests.test_dkim import ED_KEY, RECORDS, RFC8463_MESSAGE, RSA_KEY, key_record

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.example\r\nSubject: signed?\r\n"
           b"\r\nHello.\r\n")


def verify_queued(data):
    """Our verdicts on ``data`` with the keys ed/rs of example.test published."""
    res = FakeResolver()
    res.add("ed._domainkey.example.test", "TXT", key_record(ED_KEY))
    res.add("rs._domainkey.example.test", "TXT", key_record(RSA_KEY))
    out = []
    dkim.verify(data, res, out.extend, int(time.time()))
    return out


class ServerSigning(unittest.TestCase):
    def start(self, with_keys=True, **values):
        tmp = tempfile.mkdtemp(prefix="mailsrv-dkim-")
        self.addCleanup(shutil.rmtree, tmp, True)
        if with_keys:
            write_key(tmp, "example.test", "old", "ed25519", ed25519.generate().pem())
            os.utime(os.path.join(tmp, "dkim/example.test/old.ed25519.pem"), (1, 1))     # older: not chosen
            write_key(tmp, "example.test", "ed", "ed25519", ED_KEY.pem())
            write_key(tmp, "example.test", "rs", "rsa", RSA_KEY.pem())
        h = RealHarness.__new__(RealHarness)
        h.tmp = tmp
        conf = {k: "off" for k in ("smtp_port", "submission_port", "smtps_port", "pop3_port",
                                    "pop3s_port", "imap_port", "imaps_port")}
        conf.update(data_dir=tmp, hostname="mx.example.test", domains="example.test", log_level="CRITICAL",
                    auth_failure_delay="0.01", trusted_networks="none", dns_servers="127.0.0.1:9")
        conf.update(values)
        h.server = MailServer(Config(conf))
        h.server.add_user(h.user, h.password)
        h.server.start()
        h.backend, h.held = h.server.backend, None
        self.addCleanup(lambda: h.server.stop(grace=1))
        return h

    def send(self, h, data, auth_user="alice@example.test", listener="submission", peer="192.0.2.1"):
        # the target as for a user who may relay; the envelope then says who really sent it
        decision = h.call(lambda: h.backend.check_recipient(ctx(), "alice@example.test", Address("bob", "remote.example")))
        self.assertTrue(decision.ok, decision)
        env = Envelope(mail_from="alice@example.test", rcpt_to=["bob@remote.example"], targets=[decision.target],
                       body="7BIT", smtputf8=False, helo="client.example", peer_ip=peer,
                       auth_user=auth_user, tls=True, listener=listener, queue_id=new_id())
        sink = h.call(lambda: h.backend.open_message(env))
        h.call(lambda: sink.write(data))
        reply = h.run(lambda done: sink.finish(env, done))[0]
        self.assertEqual(reply[0], 250, reply)
        with open(os.path.join(h.tmp, "queue", env.queue_id + ".msg"), "rb") as f:
            return f.read()

    def verify(self, data):
        return verify_queued(data)

    def test_submitted_mail_is_signed_with_both_keys(self):
        queued = self.send(self.start(), MESSAGE)
        out = self.verify(queued)
        self.assertEqual([(r.result, r.selector, r.algorithm) for r in out],
                         [("pass", "rs", "rsa-sha256"), ("pass", "ed", "ed25519-sha256")])
        self.assertTrue(queued.endswith(b"Subject: signed?\r\n" + queued.split(b"Subject: signed?\r\n")[1]))

    def test_sendmail_and_trusted_clients_are_signed_other_relayed_mail_is_not(self):
        h = self.start(trusted_networks="127.0.0.0/8")
        self.assertEqual([r.result for r in self.verify(self.send(h, MESSAGE, None, "sendmail"))], ["pass", "pass"])
        trusted = self.send(h, MESSAGE, None, "smtp", peer="127.0.0.1")
        self.assertEqual([r.result for r in self.verify(trusted)], ["pass", "pass"])
        # from elsewhere (say, an alias forwarding to a remote address): as it came
        self.assertNotIn(b"DKIM-Signature", self.send(h, MESSAGE, None, "smtp"))

    def test_rotation_new_selector_signs_after_reload_and_a_bad_key_keeps_the_old(self):
        h = self.start()
        newer = ed25519.generate()
        write_key(h.tmp, "example.test", "new", "ed25519", newer.pem())
        self.assertIn(b"s=ed;", self.send(h, MESSAGE))            # not before the reload
        h.call(lambda: h.backend.reload(h.backend.config))         # what SIGHUP does
        queued = self.send(h, MESSAGE)
        self.assertIn(b"s=new;", queued)
        self.assertIn(b"s=rs;", queued)
        write_key(h.tmp, "example.test", "broken", "rsa", b"not a key")
        with self.assertLogs("mailsrv.smtp", "ERROR") as logged:
            h.call(lambda: h.backend.reload(h.backend.config))
        self.assertIn("broken.rsa.pem", logged.output[0])
        self.assertIn(b"s=new;", self.send(h, MESSAGE))

    def test_large_submission_is_signed_whole(self):
        body = b"".join(b"line %06d of a long message\r\n" % i for i in range(4000))      # > 64 KiB
        out = self.verify(self.send(self.start(), MESSAGE + body))
        self.assertEqual([r.result for r in out], ["pass", "pass"])

    def test_other_domain_and_switched_off_are_not_signed(self):
        h = self.start()
        other = MESSAGE.replace(b"alice@example.test", b"alice@elsewhere.example")
        self.assertNotIn(b"DKIM-Signature", self.send(h, other))
        h2 = self.start(dkim_sign="no")
        self.assertNotIn(b"DKIM-Signature", self.send(h2, MESSAGE))

    def test_unreadable_key_stops_the_start_naming_the_file(self):
        tmp = tempfile.mkdtemp(prefix="mailsrv-dkim-")
        self.addCleanup(shutil.rmtree, tmp, True)
        write_key(tmp, "example.test", "bad", "rsa", ED_KEY.pem())        # an Ed25519 key named .rsa
        conf = {k: "off" for k in ("smtp_port", "submission_port", "smtps_port", "pop3_port",
                                    "pop3s_port", "imap_port", "imaps_port")}
        conf.update(data_dir=tmp, hostname="mx.example.test", log_level="CRITICAL", dns_servers="127.0.0.1:9")
        server = MailServer(Config(conf))
        self.addCleanup(lambda: server.stop(grace=1))
        with self.assertRaises(DataDirError) as cm:
            server.start()
        self.assertIn("bad.rsa.pem", str(cm.exception))

    def test_no_keys_no_signature(self):
        self.assertNotIn(b"DKIM-Signature", self.send(self.start(with_keys=False), MESSAGE))


class SubmissionOverSockets(ServerTestCase):
    """The whole path: smtplib, STARTTLS and AUTH on the submission port, the
    message queued for a remote recipient carries both signatures."""

    def test_submitted_over_smtp_is_queued_signed(self):
        write_key(self.tmp, "example.test", "ed", "ed25519", ED_KEY.pem())
        write_key(self.tmp, "example.test", "rs", "rsa", RSA_KEY.pem())
        done = threading.Event()
        backend = self.server.backend
        self.server.loop.call_soon_threadsafe(lambda: (backend.reload(backend.config), done.set()))
        self.assertTrue(done.wait(20))
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=10) as s:
            s.starttls(context=client_tls())
            s.login("alice@example.test", "alice-secret")
            self.assertEqual(s.sendmail("alice@example.test", ["bob@remote.example"], MESSAGE), {})
        queue = os.path.join(self.tmp, "queue")
        wait_for(lambda: any(n.endswith(".msg") for n in os.listdir(queue)), "a queued message")
        [name] = [n for n in os.listdir(queue) if n.endswith(".msg")]
        with open(os.path.join(queue, name), "rb") as f:
            queued = f.read()
        out = verify_queued(queued)
        self.assertEqual([(r.result, r.selector) for r in out], [("pass", "rs"), ("pass", "ed")])


class InboundVerification(unittest.TestCase):
    """dkim_verify = header: mail from other servers gets our Authentication-Results."""

    def deliver(self, data, **values):
        h = ServerSigning.start(self, with_keys=False, **values)
        res = FakeResolver()
        res.add("sel._domainkey.example.org", "TXT", key_record(ED_KEY))
        h.backend.delivery.dkim_resolver = lambda: res
        decision = h.call(lambda: h.backend.check_recipient(ctx("smtp"), None, Address("alice", "example.test")))
        env = Envelope(mail_from="x@example.org", rcpt_to=["alice@example.test"], targets=[decision.target],
                       body="7BIT", smtputf8=False, helo="mx.example.org", peer_ip="192.0.2.1",
                       auth_user=None, tls=False, listener="smtp", queue_id=new_id())
        sink = h.call(lambda: h.backend.open_message(env))
        h.call(lambda: sink.write(data))
        reply = h.run(lambda done: sink.finish(env, done))[0]
        self.assertEqual(reply[0], 250, reply)
        [name] = os.listdir(os.path.join(h.tmp, "mail", "example.test", "alice", "new"))
        with open(os.path.join(h.tmp, "mail", "example.test", "alice", "new", name), "rb") as f:
            return f.read()

    def signed(self):
        msg = MESSAGE.replace(b"alice@example.test", b"joe@example.org")
        return dkim.sign_message(msg, [("example.org", "sel", ED_KEY)], int(time.time()))

    def test_signed_mail_gets_dkim_pass_computed_off_the_loop(self):
        threads = []
        real = dkim.check_signature

        def spy(*a):
            threads.append(threading.current_thread().name)
            return real(*a)
        with mock.patch.object(dkim, "check_signature", spy):
            stored = self.deliver(self.signed(), dkim_verify="header")
        head = stored.split(b"\n\n", 1)[0]
        self.assertRegex(head, rb"\nAuthentication-Results: mx\.example\.test;\n\tdkim=pass "
                               rb"header\.d=example\.org header\.s=sel header\.b=[A-Za-z0-9+/]{8}\n")
        self.assertEqual(len(threads), 1)
        self.assertTrue(threads[0].startswith("mailsrv-worker"), threads)

    def test_forged_results_claiming_our_host_are_removed(self):
        forged = (b"Authentication-Results: MX.example.test; dkim=pass header.d=bank.example\r\n"
                  b"Authentication-Results: other.example; spf=pass\r\n" + MESSAGE)
        stored = self.deliver(forged, dkim_verify="header")
        self.assertEqual(stored.count(b"Authentication-Results: mx.example.test;\n\tdkim=none\n"), 1)
        self.assertNotIn(b"bank.example", stored)
        self.assertIn(b"Authentication-Results: other.example; spf=pass", stored)

    def test_off_adds_nothing(self):
        self.assertNotIn(b"Authentication-Results", self.deliver(self.signed()))


class KeygenCommand(unittest.TestCase):
    def run_cli(self, *args, stdin=b""):
        return subprocess.run([sys.executable, os.path.join(ROOT, "mailsrv.py"), "--data", self.tmp] + list(args),
                              input=stdin, capture_output=True, timeout=120)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-dkim-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_keygen_writes_a_key_and_prints_the_record(self):
        for key_type, sel in (("ed25519", "e1"), ("rsa", "r1")):
            p = self.run_cli("dkim", "keygen", "Example.ORG", "--type", key_type, "--selector", sel)
            self.assertEqual(p.returncode, 0, p.stderr)
            path = os.path.join(self.tmp, "dkim", "example.org", "%s.%s.pem" % (sel, key_type))
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            with open(path, "rb") as f:
                key = keys.load_private_key(f.read())
            record = re.search(r'^%s\._domainkey\.example\.org\. IN TXT \( (.*) \)$' % sel, p.stdout.decode(), re.M)
            strings = re.findall(r'"([^"]*)"', record.group(1))
            self.assertTrue(all(len(s) <= 255 for s in strings))
            text = "".join(strings)
            self.assertEqual(text, key_record(key))
            if key_type == "rsa":
                self.assertEqual(key.public.bits, 2048)
                self.assertEqual(len(strings), 2)
            if shutil.which("openssl"):
                o = subprocess.run(["openssl", "pkey", "-in", path, "-noout"], capture_output=True)
                self.assertEqual(o.returncode, 0, o.stderr)

    def test_keygen_refuses_to_overwrite_and_bad_names(self):
        self.assertEqual(self.run_cli("dkim", "keygen", "example.org", "--type", "ed25519", "--selector", "s").returncode, 0)
        p = self.run_cli("dkim", "keygen", "example.org", "--type", "ed25519", "--selector", "s")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"exists already", p.stderr)
        p = self.run_cli("dkim", "keygen", "example.org", "--selector", "../x")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)

    def test_verify_through_our_resolver(self):
        """`dkim verify` asks a DNS server (tests/dnsfake.py) for the RFC 8463 example's keys."""
        srv = FakeDnsServer().start()
        self.addCleanup(srv.stop)
        for sel, rec in RECORDS.items():
            strings = tuple(rec[i:i + 200].encode() for i in range(0, len(rec), 200))   # several strings
            srv.add("%s._domainkey.football.example.com" % sel, dns_codec.TYPE_TXT, strings)
        server = "%s:%d" % srv.address
        p = self.run_cli("--dns-server", server, "dkim", "verify", stdin=RFC8463_MESSAGE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(),
                         ["dkim=pass header.d=football.example.com header.s=brisbane header.b=/gCrinpc",
                          "dkim=pass header.d=football.example.com header.s=test header.b=F45dVWDf"])
        p = self.run_cli("--dns-server", server, "dkim", "verify",
                         stdin=RFC8463_MESSAGE.replace(b"hungry", b"thirsty"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("dkim=fail (body hash did not verify", p.stdout.decode())

    def test_verify_without_signature_says_none(self):
        p = self.run_cli("--dns-server", "127.0.0.1:9", "dkim", "verify", stdin=MESSAGE)
        self.assertEqual(p.stdout.strip(), b"dkim=none")
        self.assertEqual(p.returncode, 1)


if __name__ == "__main__":
    unittest.main()
