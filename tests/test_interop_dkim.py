"""DKIM interop with Debian's tools: python3-dkim (dkimpy: `dkimsign`, and
`dkim.verify` run by the system Python as a separate process, its DNS
lookup answered by the key record we give it) verifies what we sign, for
rsa-sha256 and ed25519-sha256; we verify what `dkimsign` signs.  OpenDKIM's `opendkim-testmsg` verifies
only against live DNS (no key-file option), so that direction is dkimpy's
alone; what it signs is rsa-sha1 (no option for sha256), which we refuse
as RFC 8301 §3.1 says.
Skips say which tool is missing (apt-get install python3-dkim opendkim-tools)."""

import base64
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from protocols import dkim
from protocols.crypto import rsa
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


if __name__ == "__main__":
    unittest.main()
