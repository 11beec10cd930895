"""Interop: Postfix receives our DKIM-signed mail over a TLS that MTA-STS enforced;
Debian's postfix-mta-sts-resolver fetches and accepts the policy we serve.

On loopback only:
  * a throwaway Postfix (tests/test_interop_postfix.py's instance) is the MX of
    ``sts.test``, with STARTTLS and a certificate for mx.sts.test from the test
    CA of tests/certs/sts/;
  * tests/dnsfake.py answers ``sts.test MX 10 mx.sts.test``, ``mx.sts.test A
    127.0.0.1`` and ``_mta-sts.sts.test TXT "v=STSv1; id=..."``;
  * mailsrv serves the policy ``mode: enforce, mx: mx.sts.test`` on its https
    listener (same certificate, valid for mta-sts.sts.test) and its relay
    fetches it there (``connect_to``), trusting the test CA
    (``mta_sts_cafile``): the message must arrive, signed, over TLS; a policy
    that names another MX keeps the next message queued, never sent;
  * ``mta-sts-query``'s library (STSResolver of postfix-mta-sts-resolver, run
    with Debian's python3) fetches the same policy: its DNS question answered
    in-process and its HTTPS connection pointed at our port, nothing else
    changed, so its own checks (status 200, text/plain, the policy grammar)
    judge what we serve.

Skipped like the Postfix interop tests (no Postfix, not root,
MAILSRV_SKIP_INTEROP); the resolver part also when postfix-mta-sts-resolver is
not installed.
"""

import glob
import json
import os
import pwd
import smtplib
import subprocess
import unittest

from protocols.crypto import ed25519
from protocols.dns import codec as dns
from store.dkimkeys import write_key
from tests.dnsfake import FakeDnsServer
from tests.helpers import ServerTestCase
from tests.test_interop_postfix import MAIN_CF, SKIP, WAIT, PostfixInstance, free_port, read, wait_for

STS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs", "sts")
CA = os.path.join(STS, "ca.pem")
GOOD, GOOD_KEY = os.path.join(STS, "good.pem"), os.path.join(STS, "good-key.pem")
RESOLVER_PY = "/usr/bin/python3"
HAVE_RESOLVER = os.path.exists("/usr/bin/mta-sts-query") and subprocess.run(
    [RESOLVER_PY, "-c", "import postfix_mta_sts_resolver.resolver"], stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL).returncode == 0 if os.path.exists(RESOLVER_PY) else False

# STSResolver as mta-sts-query runs it; its DNS answered here, its HTTPS pointed at our port.
QUERY = r"""
import asyncio, json, socket, ssl, sys
import aiohttp
from aiohttp.abc import AbstractResolver
from postfix_mta_sts_resolver import resolver as R
port, cafile, txt = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Loopback(AbstractResolver):
    async def resolve(self, host, port_=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]
    async def close(self):
        pass

Session = aiohttp.ClientSession
def session(*a, **kw):
    kw.pop("loop", None)
    kw["connector"] = aiohttp.TCPConnector(resolver=Loopback(), ssl=ssl.create_default_context(cafile=cafile))
    return Session(*a, **kw)
R.aiohttp.ClientSession = session

class Txt:
    def __init__(self, text):
        self.text = text

async def main():
    res = R.STSResolver(loop=asyncio.get_running_loop(), timeout=20)
    async def query(name, qtype):
        assert name == "_mta-sts.sts.test" and qtype == "TXT", (name, qtype)
        return [Txt(txt)]
    res._resolver.query = query
    status, body = await res.resolve("sts.test")
    print(json.dumps([status.name, body]))
asyncio.run(main())
"""


class StsPostfix(PostfixInstance):
    """The Postfix instance of the Postfix interop tests, as the MX of sts.test."""

    def __init__(self, port: int, our_smtp_port: int):
        super().__init__(port, our_smtp_port)
        vuser = pwd.getpwnam("nobody")
        self._write("main.cf", MAIN_CF.replace("pf.test", "sts.test").format(
            dir=self.dir, uid=vuser.pw_uid, gid=vuser.pw_gid, cert=GOOD, key=GOOD_KEY))
        self._write("vmailbox", "user@sts.test sts.test/user/\n")

    def maildir_files(self, local: str):
        base = os.path.join(self.vmail, "sts.test", local)
        return sorted(glob.glob(os.path.join(base, "new", "*")) + glob.glob(os.path.join(base, "cur", "*")))


@unittest.skipIf(SKIP, SKIP or "")
class MtaStsPostfixInterop(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.postfix = None
        cls.dns = FakeDnsServer().start()
        cls.dns.add("sts.test", dns.TYPE_MX, dns.MX(10, "mx.sts.test"))
        cls.dns.add("mx.sts.test", dns.TYPE_A, "127.0.0.1")
        cls.dns.add("_mta-sts.sts.test", dns.TYPE_TXT, (b"v=STSv1; id=one",))
        port = free_port()
        cls.extra_config = {
            "relay_port": str(port), "dns_servers": "%s:%d" % cls.dns.address, "relay_tls": "may",
            "https_port": "0", "mta_sts_mode": "enforce", "mta_sts_mx": "mx.sts.test", "mta_sts_cafile": CA,
            "tls_cert": GOOD, "tls_key": GOOD_KEY, "queue_interval": "3600"}
        try:
            super().setUpClass()
            cls.server.backend.outbound.sts.connect_to = ("127.0.0.1", cls.ports["https"])
            write_key(cls.tmp, "example.test", "s1", "ed25519", ed25519.generate().pem())
            cls.server.backend.delivery.load_dkim_keys()
            cls.postfix = StsPostfix(port, cls.ports["smtp"])
            cls.postfix.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.postfix is not None:
                cls.postfix.stop()
            if getattr(cls, "server", None) is not None:
                super().tearDownClass()
        finally:
            cls.dns.stop()

    def submit(self, subject: str) -> None:
        body = ("From: alice@example.test\r\nTo: user@sts.test\r\nSubject: %s\r\n"
                "Message-ID: <%s@example.test>\r\n\r\nHello over MTA-STS.\r\n" % (subject, subject)).encode()
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=WAIT) as s:
            s.starttls()
            s.login("alice@example.test", "alice-secret")
            s.sendmail("alice@example.test", ["user@sts.test"], body)

    def test_1_postfix_receives_signed_mail_over_enforced_tls(self):
        with self.assertLogs("mailsrv", "INFO") as logs:
            self.submit("sts-enforced")
            files = wait_for(lambda: [p for p in self.postfix.maildir_files("user")
                                      if b"Subject: sts-enforced" in read(p)],
                             "the message in Postfix's Maildir", self.postfix.log)
        log = "\n".join(logs.output)
        stored = read(files[0])
        self.assertIn(b"DKIM-Signature: v=1; a=ed25519-sha256;", stored)
        self.assertIn(b"d=example.test", stored)
        self.assertIn("mta-sts domain=sts.test policy id=one fetched: mode=enforce", log)
        self.assertRegex(log, r"domain=sts\.test mx=mx\.sts\.test ip=127\.0\.0\.1 result=delivered=1 .*tls=yes")
        self.assertIn("TLS connection established from localhost[127.0.0.1]", self.postfix.log())

    def test_2_a_policy_naming_another_mx_keeps_the_mail_queued(self):
        self.server.config.mta_sts_mx = ["mx.elsewhere.test"]      # what we serve, live
        self.dns.zone[("_mta-sts.sts.test", dns.TYPE_TXT)] = [(60, (b"v=STSv1; id=two",))]
        self.server.backend.outbound.resolver.cache.clear()
        try:
            before = len(self.postfix.maildir_files("user"))
            with self.assertLogs("mailsrv", "INFO") as logs:
                self.submit("sts-refused")
                wait_for(lambda: "allows none of its MX hosts" in "\n".join(logs.output), "the refusal in our log")
            queue = self.server.backend.outbound.queue
            entries = [e for e in queue.list() if e.recipients[0].address == "user@sts.test"]
            self.assertEqual(len(entries), 1)
            self.assertIn("4.7.5", entries[0].recipients[0].last_error)
            self.assertEqual(len(self.postfix.maildir_files("user")), before)
        finally:
            self.server.config.mta_sts_mx = ["mx.sts.test"]

    @unittest.skipUnless(HAVE_RESOLVER, "postfix-mta-sts-resolver not installed (apt-get install postfix-mta-sts-resolver)")
    def test_3_postfix_mta_sts_resolver_accepts_our_policy(self):
        p = subprocess.run([RESOLVER_PY, "-c", QUERY, str(self.ports["https"]), CA, "v=STSv1; id=one"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        status, (sts_id, policy) = json.loads(p.stdout)
        self.assertEqual((status, sts_id), ("VALID", "one"))
        self.assertEqual(policy, {"version": "STSv1", "mode": "enforce", "mx": ["mx.sts.test"],
                                  "max_age": 604800})


if __name__ == "__main__":
    unittest.main()
