"""Ed25519 (protocols/crypto/ed25519.py): RFC 8032 §7.1's test vectors, key
files of RFC 8410 read from and written for openssl."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from protocols.crypto import der, ed25519, keys

HERE = os.path.dirname(os.path.abspath(__file__))
RFC_8032 = [os.path.join(HERE, *up, "shared", "rfc", "rfc8032.txt")
            for up in ((os.pardir, os.pardir), (os.pardir, os.pardir, os.pardir))]   # beside a checkout or a worktree
OPENSSL = shutil.which("openssl")

# RFC 8032 §7.1: TEST 1, 2, 3 and SHA(abc), as (secret key, public key, message, signature).
VECTORS = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
     "4a7c15e9716ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
     "454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
     "3dca179c138ac17ad9bef1177331a704"),
]


def rfc_vectors():
    """Every §7.1 vector from the RFC's text (TEST 1024 included), if it is beside the repository."""
    path = next((p for p in RFC_8032 if os.path.isfile(p)), None)
    if path is None:
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("7.1.  Test Vectors for Ed25519\n"):text.index("7.2.  Test Vectors for Ed25519ctx\n")]
    section = re.sub(r"\n\S.*\n", "\n", section.replace("\f", ""))       # page headers and footers
    out = []
    for block in section.split("-----TEST")[1:]:
        fields = re.findall(r"(SECRET KEY|PUBLIC KEY|MESSAGE|SIGNATURE)[^:]*:\n((?:\s+[0-9a-f]+\n|\s*\n)*)", block)
        values = {k: re.sub(r"\s", "", v) for k, v in fields}
        out.append((values["SECRET KEY"], values["PUBLIC KEY"], values.get("MESSAGE", ""), values["SIGNATURE"]))
    return out


class Rfc8032VectorsTest(unittest.TestCase):
    def check(self, secret, public, message, signature):
        secret, public, message, signature = (bytes.fromhex(x) for x in (secret, public, message, signature))
        self.assertEqual(ed25519.public_key(secret), public)
        self.assertEqual(ed25519.sign(secret, message), signature)
        self.assertTrue(ed25519.verify(public, message, signature))
        self.assertFalse(ed25519.verify(public, message + b"x", signature))
        bad = bytearray(signature)
        bad[5] ^= 1
        self.assertFalse(ed25519.verify(public, message, bytes(bad)))

    def test_the_vectors_of_7_1(self):
        for v in VECTORS:
            with self.subTest(public=v[1][:8]):
                self.check(*v)

    def test_every_vector_in_the_rfc_text(self):
        vectors = rfc_vectors()
        if not vectors:
            self.skipTest("no ../shared/rfc/rfc8032.txt beside the repository")
        self.assertEqual(len(vectors), 5)                   # TEST 1, 2, 3, 1024, SHA(abc)
        self.assertEqual(len(vectors[3][2]), 2 * 1023)      # TEST 1024's message: 1023 octets
        for v in vectors:
            with self.subTest(public=v[1][:8]):
                self.check(*v)

    def test_malformed_input_is_false_not_an_exception(self):
        secret, public, message, signature = (bytes.fromhex(x) for x in VECTORS[1])
        self.assertFalse(ed25519.verify(public[:31], message, signature))
        self.assertFalse(ed25519.verify(public, message, signature[:63]))
        big_s = signature[:32] + (ed25519.L + int.from_bytes(signature[32:], "little")).to_bytes(32, "little")
        self.assertFalse(ed25519.verify(public, message, big_s))     # RFC 8032 §5.1.7 step 1: S < L
        self.assertFalse(ed25519.verify(b"\xff" * 32, message, signature))   # y >= p: no point
        with self.assertRaises(ed25519.Ed25519Error):
            ed25519.sign(secret[:31], message)


class KeyFilesTest(unittest.TestCase):
    def test_pkcs8_and_spki_of_rfc_8410_10(self):
        # RFC 8410 §10.3 and §10.1: the example private key and its public key
        pem = (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
               b"-----END PRIVATE KEY-----\n")
        key = keys.load_private_key(pem)
        self.assertIsInstance(key, ed25519.Ed25519PrivateKey)
        self.assertEqual(key.pem(), pem)
        spki = der.pem_block(b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
                             b"-----END PUBLIC KEY-----\n", "PUBLIC KEY")[1]
        self.assertEqual(key.public.spki(), spki)
        self.assertEqual(keys.load_public_key(spki), key.public)

    def test_generated_keys_sign_and_verify(self):
        key = ed25519.generate()
        again = keys.load_private_key(key.pem())
        self.assertEqual(again, key)
        self.assertTrue(again.public.verify(b"m", key.sign(b"m")))


@unittest.skipIf(OPENSSL is None, "no openssl binary")
class OpensslTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-ed25519-")
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def openssl(self, *args):
        return subprocess.run([OPENSSL, *args], capture_output=True, timeout=30)

    def test_we_read_openssl_genpkey_keys_and_openssl_verifies_our_signature(self):
        self.assertEqual(self.openssl("genpkey", "-algorithm", "ed25519", "-out", self.path("k.pem")).returncode, 0)
        with open(self.path("k.pem"), "rb") as f:
            key = keys.load_private_key(f.read())
        self.assertIsInstance(key, ed25519.Ed25519PrivateKey)
        with open(self.path("msg"), "wb") as f:
            f.write(b"signed by mailsrv\n")
        with open(self.path("sig"), "wb") as f:
            f.write(key.sign(b"signed by mailsrv\n"))
        with open(self.path("pub.pem"), "wb") as f:
            f.write(der.pem("PUBLIC KEY", key.public.spki()))
        r = self.openssl("pkeyutl", "-verify", "-pubin", "-inkey", self.path("pub.pem"), "-rawin",
                         "-in", self.path("msg"), "-sigfile", self.path("sig"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.openssl("pkeyutl", "-sign", "-inkey", self.path("k.pem"), "-rawin", "-in", self.path("msg"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(key.public.verify(b"signed by mailsrv\n", r.stdout))

    def test_openssl_reads_our_key(self):
        with open(self.path("ours.pem"), "wb") as f:
            f.write(ed25519.generate().pem())
        r = self.openssl("pkey", "-in", self.path("ours.pem"), "-check", "-noout")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
