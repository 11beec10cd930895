"""The self-signed certificate a server makes with no tls_cert configured
(protocols/selfsigned.py): STARTTLS and the implicit-TLS ports work at the
first start, the same certificate after a restart, a damaged file is one
error line naming it; and `mailsrv.py tls selfsigned`."""

import logging
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
import unittest

from mailsrv import Config, ConfigError, MailServer
from protocols import selfsigned
from protocols.crypto import der, x509
from tests.helpers import CERT, KEY, client_tls, free_ports, mailsrv_cli

HOST = "mx.example.test"
DAY = 86400.0


def config(data, **extra):
    values = free_ports(data_dir=data, hostname=HOST, log_level="WARNING", dns_servers="127.0.0.1:9")
    values.update(extra)
    return Config(values)


def files(data):
    tls = os.path.join(data, selfsigned.TLS_DIR)
    return os.path.join(tls, selfsigned.CERT_FILE), os.path.join(tls, selfsigned.KEY_FILE)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ServerTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-selfsigned-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def start(self, **extra):
        server = MailServer(config(self.data, **extra)).start()
        self.addCleanup(server.stop, 2)
        return server

    def test_starttls_and_implicit_tls_work_with_no_certificate_configured(self):
        with self.assertLogs("mailsrv", "INFO") as logs:
            server = self.start()
        cert_path, key_path = files(self.data)
        fingerprint = x509.fingerprint(der.pem_block(read(cert_path), "CERTIFICATE")[1])
        self.assertTrue(any("self-signed" in line and fingerprint in line for line in logs.output), logs.output)
        self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
            smtp.ehlo()
            self.assertTrue(smtp.has_extn("starttls"))
            self.assertEqual(smtp.starttls(context=client_tls())[0], 220)
            self.assertEqual(smtp.ehlo()[0], 250)
            peer = smtp.sock.getpeercert(binary_form=True)
        self.assertEqual(x509.fingerprint(peer), fingerprint)
        pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], timeout=10, context=client_tls())
        self.assertTrue(pop.getwelcome().startswith(b"+OK"))
        pop.quit()

    def test_an_ssl_connection_verifies_with_the_certificate_pinned(self):
        server = self.start()
        ctx = ssl.create_default_context(cafile=files(self.data)[0])     # this certificate, and no other
        with socket.create_connection(("127.0.0.1", server.ports["smtps"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                self.assertTrue(tls.recv(100).startswith(b"220 "))

    def test_a_restart_keeps_the_same_certificate(self):
        self.start().stop(2)
        first = read(files(self.data)[0])
        self.start()
        self.assertEqual(read(files(self.data)[0]), first)

    def test_sighup_replaces_it_with_a_configured_certificate(self):
        server = self.start()
        mailsrv_log = logging.getLogger("mailsrv")
        self.addCleanup(mailsrv_log.setLevel, mailsrv_log.level)     # the reload sets log_level
        with self.assertLogs("mailsrv", "INFO"):
            server.reload(config(self.data, tls_cert=CERT, tls_key=KEY, log_level="INFO"))
        with open(CERT, "rb") as f:
            configured = der.pem_block(f.read(), "CERTIFICATE")[1]
        with socket.create_connection(("127.0.0.1", server.ports["smtps"]), timeout=10) as raw:
            with client_tls().wrap_socket(raw) as tls:
                self.assertEqual(tls.getpeercert(binary_form=True), configured)

    def test_sighup_takes_a_new_self_signed_pair(self):
        server = self.start()
        made = selfsigned.ensure(HOST, os.path.join(self.data, selfsigned.TLS_DIR), time.time, force=True)
        server.reload()
        with socket.create_connection(("127.0.0.1", server.ports["smtps"]), timeout=10) as raw:
            with client_tls().wrap_socket(raw) as tls:
                self.assertEqual(x509.fingerprint(tls.getpeercert(binary_form=True)), made.fingerprint)

    def test_tls_self_signed_no_keeps_tls_off(self):
        server = self.start(tls_self_signed="no")
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
            smtp.ehlo()
            self.assertFalse(smtp.has_extn("starttls"))
        self.assertNotIn("smtps", server.ports)
        self.assertFalse(os.path.exists(os.path.join(self.data, selfsigned.TLS_DIR)))

    def test_a_damaged_key_file_is_one_line_naming_it(self):
        self.start().stop(2)
        key_path = files(self.data)[1]
        with open(key_path, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n")
        server = MailServer(config(self.data))
        self.addCleanup(server.stop, 1)
        with self.assertRaises(ConfigError) as cm:
            server.start()
        message = str(cm.exception)
        self.assertIn(key_path, message)
        self.assertNotIn("\n", message)


class CheckTest(unittest.TestCase):
    def test_check_says_where_the_certificate_is_or_will_be(self):
        data = tempfile.mkdtemp(prefix="mailsrv-tlscheck-")
        self.addCleanup(shutil.rmtree, data, True)
        args = ("--data", data, "--hostname", HOST, "--dns-server", "127.0.0.1:9", "check")
        _rc, out, _err = mailsrv_cli(*args)
        self.assertIn("ok: TLS with a self-signed certificate, made at first start in "
                      + os.path.join(data, selfsigned.TLS_DIR), out)
        selfsigned.ensure(HOST, os.path.join(data, selfsigned.TLS_DIR), time.time)
        _rc, out, _err = mailsrv_cli(*args)
        self.assertIn(f"ok: TLS with the self-signed certificate {files(data)[0]}", out)
        with open(files(data)[1], "wb") as f:
            f.write(b"garbage")
        _rc, out, _err = mailsrv_cli(*args)
        self.assertIn(f"error: TLS key {files(data)[1]}", out)


class EnsureTest(unittest.TestCase):
    """protocols.selfsigned.ensure with the clock in the test's hand."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-ensure-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.now = 1_800_000_000.0

    def ensure(self, host=HOST, **kw):
        return selfsigned.ensure(host, self.dir, lambda: self.now, **kw)

    def test_made_once_then_reused(self):
        first = self.ensure()
        self.assertEqual(first.made, "new key")
        again = self.ensure()
        self.assertEqual((again.made, again.fingerprint), ("", first.fingerprint))

    def test_near_its_end_or_for_another_name_it_is_made_again_from_the_same_key(self):
        first = self.ensure(days=40)
        key = read(first.key)
        self.now += 11 * DAY                      # 29 days left: below RENEW_BEFORE
        renewed = self.ensure(days=40)
        self.assertIn("ends", renewed.made)
        self.assertNotEqual(renewed.fingerprint, first.fingerprint)
        self.assertEqual(read(renewed.key), key)
        renamed = self.ensure("mail.example.test")
        self.assertIn("not mail.example.test", renamed.made)
        self.assertEqual(read(renamed.key), key)

    def test_a_key_without_its_certificate_gets_one(self):
        first = self.ensure()
        os.unlink(first.cert)
        again = self.ensure()
        self.assertEqual(again.made, "no certificate")
        self.assertEqual(x509.read_certificate(der.pem_block(read(again.cert), "CERTIFICATE")[1]).spki,
                         x509.read_certificate(der.pem_block(read(first.cert), "CERTIFICATE")[1]).spki)

    def test_a_certificate_of_another_key_is_refused(self):
        self.ensure()
        other = tempfile.mkdtemp(dir=self.dir)
        made = selfsigned.ensure(HOST, other, lambda: self.now, force=True)
        shutil.copy(made.cert, os.path.join(self.dir, selfsigned.CERT_FILE))
        with self.assertRaises(selfsigned.SelfSignedError) as cm:
            self.ensure()
        self.assertIn("does not belong", str(cm.exception))

    def test_without_a_data_folder_the_process_key_is_reused(self):
        cert1, key1 = selfsigned.self_signed("a.example.test", None, time.time)
        started = time.monotonic()
        cert2, key2 = selfsigned.self_signed("a.example.test", None, time.time)
        self.assertLess(time.monotonic() - started, 5.0)     # no key generation: milliseconds, bounded loosely
        self.assertEqual((cert1, key1), (cert2, key2))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert2, key2)

    def test_an_ed25519_certificate_for_the_impatient(self):
        started = time.monotonic()
        cert, key = selfsigned.self_signed("b.example.test", None, time.time, key_type="ed25519")
        self.assertLess(time.monotonic() - started, 5.0)     # milliseconds, bounded loosely
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.assertIn(b"BEGIN PRIVATE KEY", read(key))


class CommandTest(unittest.TestCase):
    def test_tls_selfsigned_prints_paths_and_fingerprint(self):
        data = tempfile.mkdtemp(prefix="mailsrv-tlscmd-")
        self.addCleanup(shutil.rmtree, data, True)
        rc, out, err = mailsrv_cli("--data", data, "--hostname", HOST, "tls", "selfsigned", "--days", "20",
                                   "--host", "mail.example.test", "--ip", "127.0.0.1")
        self.assertEqual(rc, 0, err)
        cert_path, key_path = files(data)
        cert = der.pem_block(read(cert_path), "CERTIFICATE")[1]
        self.assertIn(f"certificate {cert_path}\n", out)
        self.assertIn(f"key {key_path}\n", out)
        self.assertIn(f"SHA-256 fingerprint {x509.fingerprint(cert)}", out)
        info = x509.read_certificate(cert)
        self.assertEqual(info.dns_names, ("mail.example.test", HOST, "localhost"))
        self.assertEqual((info.not_after - info.not_before).days, 20)
        rc, out, err = mailsrv_cli("--data", data, "tls", "selfsigned", "--days", "0")
        self.assertEqual((rc, err.count("\n")), (2, 1), err)


if __name__ == "__main__":
    unittest.main()
