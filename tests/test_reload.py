"""SIGHUP on the real server process: a renewed certificate without a restart,
a bad one refused, and a WARNING for changed keys that need a restart."""

import os
import select
import shutil
import signal
import smtplib
import ssl
import tempfile
import unittest

from tests.helpers import HERE, add_user_cli, client_tls, wait_for
from tests.test_server_cli import ServerProcess

CERTS = os.path.join(HERE, "certs")


def peer_cert(port):
    """The certificate (DER) a new STARTTLS session on ``port`` is shown."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.starttls(context=client_tls())
        der = s.sock.getpeercert(binary_form=True)
        s.quit()
    return der


def der_of(name):
    with open(os.path.join(CERTS, name)) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class StderrReader:
    """The server's stderr, read without blocking, kept for the assertions."""

    def __init__(self, proc):
        self.proc, self.text = proc, ""
        os.set_blocking(proc.stderr.fileno(), False)

    def read(self):
        while select.select([self.proc.stderr], [], [], 0)[0]:
            chunk = self.proc.stderr.read()
            if not chunk:
                break
            self.text += chunk.decode("utf-8", "replace")
        return self.text

    def wait_line(self, *words):
        return wait_for(lambda: [l for l in self.read().splitlines() if all(w in l for w in words)],
                        "a log line with %r" % (words,), self.read)


class SighupTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-hup-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = os.path.join(self.dir, "data")
        add_user_cli(self.data, "bob@example.test")
        self.cert, self.key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        self.install("cert.pem", "key.pem")
        self.conf = os.path.join(self.dir, "mailsrv.ini")
        self.write_conf("max_connections = 1000\n")
        self.srv = ServerProcess(self.data, "--config", self.conf, "--tls-cert", self.cert, "--tls-key", self.key)
        self.addCleanup(self.srv.kill)
        self.port = self.srv.ports["smtp"]
        self.log = StderrReader(self.srv.proc)
        # ServerProcess has read the first start-up line, printed once the signal handlers are in place
        wait_for(lambda: os.path.exists(os.path.join(self.data, "mailsrv.pid")), "the pid file", self.log.read)

    def install(self, cert, key):
        """Renew the way certbot does: new files under the configured names."""
        for src, dst in ((cert, self.cert), (key, self.key)):
            shutil.copyfile(os.path.join(CERTS, src), dst + ".new")
            os.replace(dst + ".new", dst)

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\n" + text)

    def hup(self):
        self.srv.proc.send_signal(signal.SIGHUP)

    def test_renewed_certificate_is_used_by_new_sessions_and_open_ones_keep_working(self):
        old, new = der_of("cert.pem"), der_of("renewed-cert.pem")
        self.assertEqual(peer_cert(self.port), old)
        session = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        self.addCleanup(session.close)
        session.starttls(context=client_tls())
        self.assertEqual(session.sock.getpeercert(binary_form=True), old)
        self.install("renewed-cert.pem", "renewed-key.pem")
        self.hup()
        wait_for(lambda: peer_cert(self.port) == new, "a new session to see the renewed certificate",
                 self.log.read)
        # the session opened before SIGHUP is still served, on its old TLS context
        self.assertEqual(session.noop()[0], 250)
        self.assertEqual(session.sendmail("a@elsewhere.test", ["bob@example.test"], b"Subject: x\r\n\r\ny\r\n"), {})
        session.quit()

    def test_a_bad_certificate_is_refused_in_one_error_line_and_the_old_one_stays(self):
        old = der_of("cert.pem")
        with open(self.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        self.hup()
        self.log.wait_line("ERROR", "TLS certificate not reloaded", self.cert)     # one line per worker
        self.assertEqual(peer_cert(self.port), old)
        self.install("cert.pem", "renewed-key.pem")          # a key that does not match
        self.hup()
        self.log.wait_line("ERROR", "TLS certificate not reloaded", self.key)
        self.assertEqual(peer_cert(self.port), old)
        self.assertEqual(self.srv.proc.poll(), None)

    def test_changed_keys_that_need_a_restart_are_named(self):
        self.write_conf("max_connections = 5\nsmtp_idle_timeout = 100\n")
        self.hup()
        line = self.log.wait_line("WARNING", "need a restart")[0]         # one line per worker
        self.assertIn("max_connections (running 1000, configured 5)", line)
        self.assertNotIn("smtp_idle_timeout", line)        # live: applied, not warned about
        self.assertNotIn("tls_", line)                     # reloaded, not a restart


if __name__ == "__main__":
    unittest.main()
