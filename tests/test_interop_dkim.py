"""DKIM interop with Debian's tools, both ways:

- python3-dkim (dkimpy) verifies what we sign, rsa-sha256 and ed25519-sha256
  (`dkim.verify` run by the system Python as a separate process, its DNS
  lookup answered by the key record we give it); we verify what its
  `dkimsign` signs;
- OpenDKIM's `opendkim-testmsg` verifies what we sign, both algorithms,
  through DNS: in a mount namespace whose /etc/resolv.conf names a dnsmasq
  serving our records (it has no key-file option); what it signs is
  rsa-sha1 (no option for sha256), which we refuse as RFC 8301 §3.1 says.

Skips say which tool is missing (apt-get install python3-dkim python3-nacl
opendkim-tools dnsmasq-base) or that unshare -m is not allowed."""

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from protocols import dkim
from protocols.crypto import rsa
from protocols.dns import codec as dns
from tests.spffake import FakeResolver
from tests.test_dkim import ED_KEY, MESSAGE, NOW, RSA_KEY, key_record

SYSTEM_PY = "/usr/bin/python3"
SKIP = os.environ.get("MAILSRV_SKIP_INTEROP")

# dkim.verify with dnsfunc answering every TXT question with the record in argv[1].
VERIFY = """
import sys, dkim
record = sys.argv[1].encode()
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
def one(i):
    try:
        return d.verify(idx=i, dnsfunc=lambda name, timeout=5: record)
    except dkim.ValidationError:       # body hash mismatch is raised, not returned
        return False
ok = [one(i) for i in range(sum(1 for h in d.headers if h[0].lower() == b"dkim-signature"))]
print(" ".join("pass" if x else "fail" for x in ok))
"""


def have_dkimpy() -> bool:
    if SKIP or not os.path.exists(SYSTEM_PY):
        return False
    return subprocess.run([SYSTEM_PY, "-c", "import dkim, nacl"], capture_output=True).returncode == 0


def ours(data, records, now=NOW):
    res = FakeResolver()
    for name, rec in records.items():
        res.add(name, "TXT", rec)
    out = []
    dkim.verify(data, res, out.extend, now)
    return [r.result for r in out]


@unittest.skipUnless(have_dkimpy(), "python3-dkim with python3-nacl is not installed (or MAILSRV_SKIP_INTEROP)")
class DkimpyInterop(unittest.TestCase):
    def dkimpy_verify(self, data, record):
        p = subprocess.run([SYSTEM_PY, "-c", VERIFY, record], input=data, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode()[-500:])
        return p.stdout.decode().split()

    def test_dkimpy_verifies_what_we_sign(self):
        big = rsa.generate(2048)
        for key in (RSA_KEY, big, ED_KEY):
            with self.subTest(key=type(key).__name__):
                data = dkim.sign_message(MESSAGE, [("example.org", "sel", key)], NOW)
                self.assertEqual(self.dkimpy_verify(data, key_record(key)), ["pass"])
                tampered = data.replace(b"Hello", b"Jello")
                self.assertEqual(self.dkimpy_verify(tampered, key_record(key)), ["fail"])

    def test_we_verify_what_dkimsign_signs(self):
        tmp = tempfile.mkdtemp(prefix="dkim-interop-")
        self.addCleanup(shutil.rmtree, tmp, True)
        rsa_path, ed_path = os.path.join(tmp, "r.pem"), os.path.join(tmp, "e.key")
        with open(rsa_path, "wb") as f:
            f.write(RSA_KEY.pem())                     # PKCS#8, as our keygen writes it
        with open(ed_path, "wb") as f:
            f.write(base64.b64encode(ED_KEY.seed))     # dkimpy's Ed25519 key file: the seed in base64
        cases = [(["--signalg", "rsa-sha256"], rsa_path, RSA_KEY),
                 (["--signalg", "rsa-sha256", "--hcanon", "simple", "--bcanon", "simple"], rsa_path, RSA_KEY),
                 (["--signalg", "ed25519-sha256", "--bcanon", "relaxed"], ed_path, ED_KEY)]
        for opts, path, key in cases:
            with self.subTest(opts=opts):
                p = subprocess.run(["dkimsign"] + opts + ["sel", "example.org", path], input=MESSAGE,
                                   capture_output=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr.decode()[-500:])
                records = {"sel._domainkey.example.org": key_record(key)}
                now = int(time.time())
                self.assertEqual(ours(p.stdout, records, now), ["pass"])
                self.assertEqual(ours(p.stdout.replace(b"Hello", b"Jello"), records, now), ["fail"])


@unittest.skipUnless(not SKIP and shutil.which("opendkim-testmsg"), "opendkim-testmsg is not installed "
                     "(apt-get install opendkim-tools) or MAILSRV_SKIP_INTEROP")
class OpendkimInterop(unittest.TestCase):
    def test_opendkim_testmsg_signs_rsa_sha1_which_we_refuse(self):
        """opendkim-testmsg (OpenDKIM 2.11) signs with rsa-sha1 and has no option
        for another algorithm: RFC 8301 §3.1 says such a signature is never valid,
        so the result is permerror naming RFC 8301, whatever the key."""
        tmp = tempfile.mkdtemp(prefix="dkim-interop-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "r.pem")
        key = rsa.generate(1024)
        with open(path, "wb") as f:
            f.write(key.pem())                         # PKCS#8, as our keygen writes it
        p = subprocess.run(["opendkim-testmsg", "-C", "-d", "example.org", "-s", "sel", "-k", path, "-t", tmp],
                           input=MESSAGE, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode()[-500:])
        self.assertIn(b"a=rsa-sha1", p.stdout)
        res = FakeResolver()
        res.add("sel._domainkey.example.org", "TXT", key_record(key))
        out = []
        dkim.verify(p.stdout, res, out.extend, int(time.time()))
        self.assertEqual(out[0].result, "permerror")
        self.assertIn("RFC 8301", out[0].problem)


def namespace_reason() -> str:
    """Why opendkim-testmsg cannot be pointed at our DNS server, or ''."""
    if SKIP or not shutil.which("opendkim-testmsg") or not shutil.which("dnsmasq", path="/usr/sbin:/usr/bin"):
        return "opendkim-testmsg or dnsmasq is not installed (or MAILSRV_SKIP_INTEROP)"
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare(1) to give opendkim-testmsg its own /etc/resolv.conf"
    p = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return "" if p.returncode == 0 else "unshare -m is not allowed here: " + p.stderr.decode().strip()[:100]


DNS_IP = "127.0.0.77"           # dnsmasq on port 53 there: resolv.conf has no port


@unittest.skipIf(namespace_reason(), namespace_reason())
class OpendkimVerifiesOurs(unittest.TestCase):
    """opendkim-testmsg verifies only through DNS (the system resolver): it
    runs in a mount namespace (unshare -m) whose /etc/resolv.conf names a
    dnsmasq on 127.0.0.77:53 serving our key records; the host's file is untouched."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dkim-opendkim-")
        cls.resolv = os.path.join(cls.tmp, "resolv.conf")
        with open(cls.resolv, "w") as f:
            f.write("nameserver %s\n" % DNS_IP)
        rec = key_record(RSA_KEY)
        strings = ",".join(rec[i:i + 250] for i in range(0, len(rec), 250))      # RFC 1035: <= 255 a string
        cls.dnsmasq = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--listen-address=" + DNS_IP, "--bind-interfaces", "--port=53", "--local=/example.test/",
             "--pid-file=", "--txt-record=r._domainkey.example.test," + strings,
             "--txt-record=e._domainkey.example.test," + key_record(ED_KEY)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10                 # ready when it answers a real query
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline and cls.dnsmasq.poll() is None:
                try:
                    s.sendto(dns.encode_query("e._domainkey.example.test", dns.TYPE_TXT, 7), (DNS_IP, 53))
                    s.recvfrom(4096)
                    break
                except OSError:
                    pass

    @classmethod
    def tearDownClass(cls):
        cls.dnsmasq.terminate()
        cls.dnsmasq.wait(10)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def opendkim(self, data):
        p = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && exec opendkim-testmsg',
                            "sh", self.resolv], input=data, capture_output=True, timeout=60)
        return p.returncode, p.stderr.decode().strip()

    def test_opendkim_verifies_our_signatures(self):
        self.assertIsNone(self.dnsmasq.poll(), "dnsmasq could not start on %s:53" % DNS_IP)
        msg = MESSAGE.replace(b"example.org", b"example.test")
        for selector, key in (("r", RSA_KEY), ("e", ED_KEY)):
            with self.subTest(selector=selector):
                data = dkim.sign_message(msg, [("example.test", selector, key)], int(time.time()))
                self.assertEqual(self.opendkim(data), (0, ""))
                code, err = self.opendkim(data.replace(b"Hello", b"Jello"))
                self.assertNotEqual(code, 0)
                self.assertIn("Bad signature", err)


if __name__ == "__main__":
    unittest.main()
