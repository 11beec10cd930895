"""The self-signed certificate of protocols/crypto/x509.py: what openssl and
Python's ssl make of it."""

import datetime
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

from protocols.crypto import der, ed25519, rsa, x509

OPENSSL = shutil.which("openssl")
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
KEY = None


def setUpModule():
    global KEY
    KEY = rsa.generate()        # the served certificate's size: once for the module


class Files:
    """A temporary folder for a certificate and its key."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-x509-")
        self.addCleanup(shutil.rmtree, self.dir)

    def write_pair(self, cert, key):
        paths = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        for path, data in zip(paths, (x509.pem(cert), key.pem())):
            with open(path, "wb") as f:
                f.write(data)
        return paths


class CertificateTest(Files, unittest.TestCase):
    def test_what_we_read_back(self):
        cert = x509.self_signed(KEY, "mx.example.org", NOW, days=10, dns_names=["localhost"])
        info = x509.read_certificate(cert)
        self.assertEqual(info.not_before, NOW - datetime.timedelta(hours=1))
        self.assertEqual(info.not_after, NOW + datetime.timedelta(days=10))
        self.assertEqual(info.dns_names, ("mx.example.org", "localhost"))
        self.assertEqual(info.spki, KEY.public.spki())
        self.assertEqual(x509.fingerprint(cert), ":".join("%02X" % b for b in hashlib.sha256(cert).digest()))
        with self.assertRaises(x509.CertificateError):
            x509.read_certificate(cert[:100])

    def test_the_signature_is_over_the_tbs_certificate(self):
        tbs, algorithm, signature = der.children(der.read_all(x509.self_signed(KEY, "h.example", NOW)))
        self.assertEqual(der.to_oid(der.children(algorithm)[0]), rsa.SHA256_WITH_RSA)
        self.assertTrue(KEY.public.verify(der.tlv(tbs.tag, tbs.value), der.to_bits(signature)))
        serial = der.to_int(der.children(tbs)[1])
        self.assertTrue(0 < serial < 1 << 159 and serial.bit_length() == 159)     # RFC 5280 §4.1.2.2

    def test_ssl_loads_the_pair_rsa_and_ed25519(self):
        for key in (KEY, ed25519.generate()):
            with self.subTest(key=repr(key)):
                cert = x509.self_signed(key, "mx.example.org", datetime.datetime.now(UTC))
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*self.write_pair(cert, key))

    def test_a_tls_connection_verifies_with_the_certificate_pinned(self):
        cert = x509.self_signed(KEY, "mx.example.org", datetime.datetime.now(UTC), ips=["127.0.0.1"])
        cert_path, key_path = self.write_pair(cert, KEY)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_path, key_path)
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello\n")
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=cert_path)      # the pin: this certificate alone
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="mx.example.org") as tls:
                self.assertEqual(tls.recv(6), b"hello\n")
                self.assertEqual(tls.getpeercert(binary_form=True), cert)
        thread.join(10)


@unittest.skipIf(OPENSSL is None, "no openssl binary")
class OpensslTest(Files, unittest.TestCase):
    def openssl(self, *args):
        r = subprocess.run([OPENSSL, *args], capture_output=True, timeout=60, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_openssl_reads_and_verifies_it(self):
        cert = x509.self_signed(KEY, "mx.example.org", datetime.datetime.now(UTC), days=30,
                                dns_names=["localhost"], ips=["127.0.0.1", "::1"])
        cert_path, key_path = self.write_pair(cert, KEY)
        text = self.openssl("x509", "-in", cert_path, "-noout", "-text")
        for want in ("Version: 3 (0x2)", "Signature Algorithm: sha256WithRSAEncryption", "Subject: CN = mx.example.org",
                     "Issuer: CN = mx.example.org", "Public-Key: (2048 bit)", "CA:FALSE",
                     "Digital Signature, Key Encipherment", "TLS Web Server Authentication",
                     "DNS:mx.example.org, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"):
            self.assertIn(want, text)
        self.assertIn(": OK", self.openssl("verify", "-CAfile", cert_path, cert_path))
        self.assertIn(x509.fingerprint(cert), self.openssl("x509", "-in", cert_path, "-noout", "-fingerprint", "-sha256"))
        self.openssl("pkey", "-in", key_path, "-check", "-noout")

    def test_openssl_verifies_an_ed25519_certificate(self):
        key = ed25519.generate()
        cert_path, _ = self.write_pair(x509.self_signed(key, "mx.example.org", datetime.datetime.now(UTC)), key)
        self.assertIn("ED25519", self.openssl("x509", "-in", cert_path, "-noout", "-text"))
        self.assertIn(": OK", self.openssl("verify", "-CAfile", cert_path, cert_path))


if __name__ == "__main__":
    unittest.main()
