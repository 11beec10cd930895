"""RSA (protocols/crypto/rsa.py): key generation, RSASSA-PKCS1-v1_5 with
SHA-256 (RFC 8017 §8.2), key files; against openssl where it is installed."""

import hashlib
import os
import shutil
import subprocess
import tempfile
import unittest

from protocols.crypto import der, keys, rsa

OPENSSL = shutil.which("openssl")
KEY = None          # one key per module: generation costs about a second


def setUpModule():
    global KEY
    KEY = rsa.generate(1024)      # the size is not what these tests test (but see test_2048_bits)


class GenerationTest(unittest.TestCase):
    def test_the_key_holds_together(self):
        k = KEY
        self.assertEqual(k.n.bit_length(), 1024)
        self.assertEqual(k.e, 65537)
        self.assertEqual(k.p * k.q, k.n)
        self.assertGreater(k.p, k.q)
        self.assertEqual(k.p.bit_length(), 512)
        self.assertEqual(k.q.bit_length(), 512)
        self.assertEqual(pow(pow(12345, k.e, k.n), k.d, k.n), 12345)
        self.assertEqual((k.dp, k.dq, k.qinv * k.q % k.p), (k.d % (k.p - 1), k.d % (k.q - 1), 1))
        self.assertNotIn(str(k.d), repr(k))

    def test_miller_rabin_knows_primes_and_carmichael_numbers(self):
        for p in (2, 3, 5, 7919, 2 ** 127 - 1, 2 ** 521 - 1):
            self.assertTrue(rsa.is_probable_prime(p, 10), p)
        for c in (1, 4, 561, 1105, 41041, 3215031751, (2 ** 61 - 1) * (2 ** 89 - 1)):
            self.assertFalse(rsa.is_probable_prime(c, 10), c)

    def test_fips_186_4_table_c3_rounds(self):
        self.assertEqual([rsa.miller_rabin_rounds(b) for b in (256, 512, 1024, 1536, 2048)], [40, 7, 5, 4, 4])

    def test_sizes_refused(self):
        with self.assertRaises(rsa.RsaError):
            rsa.generate(511)

    def test_2048_bits(self):
        k = rsa.generate()
        self.assertEqual(k.n.bit_length(), 2048)
        self.assertGreater(abs(k.p - k.q), 1 << (1024 - 100))


class SignatureTest(unittest.TestCase):
    def test_emsa_pkcs1_v15_layout(self):
        em = rsa.emsa_pkcs1_v15_sha256(b"abc", 128)
        t = rsa.SHA256_DIGEST_INFO + hashlib.sha256(b"abc").digest()
        self.assertEqual(em, b"\x00\x01" + b"\xff" * (128 - len(t) - 3) + b"\x00" + t)
        # the DigestInfo prefix is the DER of RFC 8017 §9.2 Note 1's structure
        digest_info = der.sequence(der.sequence(der.oid("2.16.840.1.101.3.4.2.1"), der.null()),   # id-sha256
                                   der.octet_string(bytes(32)))
        self.assertEqual(rsa.SHA256_DIGEST_INFO, digest_info[:-32])

    def test_sign_verify_and_what_fails(self):
        sig = KEY.sign(b"message")
        self.assertEqual(len(sig), 128)
        self.assertTrue(KEY.public.verify(b"message", sig))
        self.assertFalse(KEY.public.verify(b"messagE", sig))
        self.assertFalse(KEY.public.verify(b"message", sig[:-1]))
        self.assertFalse(KEY.public.verify(b"message", (KEY.n + 1).to_bytes(128, "big")))
        flipped = bytes([sig[0] ^ 1]) + sig[1:]
        self.assertFalse(KEY.public.verify(b"message", flipped))

    def test_a_signature_with_other_padding_is_refused(self):
        # Bleichenbacher 2006: garbage after the hash, with the padding shortened, must not verify
        k = 128
        t = rsa.SHA256_DIGEST_INFO + hashlib.sha256(b"m").digest()
        em = b"\x00\x01" + b"\xff" * 8 + b"\x00" + t
        em += b"\x00" * (k - len(em))
        forged = pow(int.from_bytes(em, "big"), KEY.d, KEY.n).to_bytes(k, "big")
        self.assertFalse(KEY.public.verify(b"m", forged))


class KeyFilesTest(unittest.TestCase):
    def test_pkcs8_spki_and_traditional_round_trip(self):
        self.assertEqual(keys.load_private_key(KEY.pem()), KEY)
        traditional = der.pem("RSA PRIVATE KEY", KEY.der())
        self.assertEqual(keys.load_private_key(traditional), KEY)
        self.assertEqual(keys.load_public_key(der.pem("PUBLIC KEY", KEY.public.spki())), KEY.public)
        self.assertEqual(keys.load_public_key(KEY.public.spki()), KEY.public)
        self.assertEqual(keys.load_public_key(der.pem("RSA PUBLIC KEY", KEY.public.der())), KEY.public)

    def test_damaged_keys_are_refused_in_one_line(self):
        damaged = rsa.RsaPrivateKey(KEY.n, KEY.e, KEY.d + 2, KEY.p, KEY.q, KEY.dp, KEY.dq, KEY.qinv)
        cases = [damaged.pem(), b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
                 b"no key here", der.pem("ENCRYPTED PRIVATE KEY", b"\x30\x00"), KEY.pem()[:300]]
        for text in cases:
            with self.subTest(text=text[:40]):
                with self.assertRaises(keys.KeyFileError) as cm:
                    keys.load_private_key(text)
                self.assertNotIn("\n", str(cm.exception))


@unittest.skipIf(OPENSSL is None, "no openssl binary")
class OpensslTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-rsa-")
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def openssl(self, *args, ok=True):
        r = subprocess.run([OPENSSL, *args], capture_output=True, timeout=60)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return r

    def test_openssl_reads_our_key_and_signs_as_we_do(self):
        key = self.write("ours.pem", KEY.pem())
        self.openssl("pkey", "-in", key, "-check", "-noout")
        msg = self.write("msg", b"signed by mailsrv\r\n")
        theirs = self.openssl("dgst", "-sha256", "-sign", key, msg).stdout
        self.assertEqual(theirs, KEY.sign(b"signed by mailsrv\r\n"))     # PKCS#1 v1.5 is deterministic
        pub = self.write("pub.pem", der.pem("PUBLIC KEY", KEY.public.spki()))
        sig = self.write("sig", KEY.sign(b"signed by mailsrv\r\n"))
        self.openssl("dgst", "-sha256", "-verify", pub, "-signature", sig, msg)

    def test_we_read_openssl_keys_both_forms_and_verify_their_signatures(self):
        pkcs8 = self.path("genpkey.pem")
        self.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pkcs8)
        traditional = self.path("rsa.pem")
        self.openssl("pkey", "-in", pkcs8, "-traditional", "-out", traditional)
        with open(traditional, "rb") as f:
            self.assertIn(b"BEGIN RSA PRIVATE KEY", f.read())
        msg = self.write("msg", b"signed by openssl\n")
        sig = self.openssl("dgst", "-sha256", "-sign", pkcs8, msg).stdout
        for path in (pkcs8, traditional):
            with open(path, "rb") as f:
                key = keys.load_private_key(f.read())
            self.assertEqual(key.n.bit_length(), 2048)
            self.assertTrue(key.public.verify(b"signed by openssl\n", sig))
            self.assertEqual(key.sign(b"signed by openssl\n"), sig)
        pub = self.openssl("pkey", "-in", pkcs8, "-pubout").stdout
        self.assertEqual(keys.load_public_key(pub), key.public)


if __name__ == "__main__":
    unittest.main()
