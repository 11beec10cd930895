"""A certificate from Debian's pebble (Let's Encrypt's ACME test CA), with the http-01
challenge answered by mailsrv's own HTTP listener (or tls-alpn-01, RFC 8737, by its
own TLS listener), swapped into IMAPS and SMTPS without a restart and without
dropping the connection that was already open.

pebble-challtestsrv (same package) is pebble's DNS: every name resolves to
127.0.0.1, so pebble's validation fetches http://NAME:PORT/.well-known/... from
our listener.  pebble's own HTTPS certificate is one we make (the package ships
none), given to mailsrv as ``acme_ca_file``; its roots come from its
management API.  PEBBLE_VA_ALWAYS_VALID=0: the challenge is really checked;
PEBBLE_WFE_NONCEREJECT=20: one nonce in five is refused, so the badNonce retry
(RFC 8555 §6.5) runs for real.  Skips, naming the package, when pebble is missing.

With ``workers = 2`` (issue 14) ``python3 mailsrv.py`` runs for real: worker 0
orders, the http-01 answer is a file any worker serves (or worker 0's own
tls-alpn-01 listener answers), and then every worker serves the new
certificate: TLS connections from many 127.0.0.x addresses, each one's
serving worker found in /proc, all get pebble's certificate.
"""

import datetime
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from mailsrv import MailServer
from protocols import loop_https, selfsigned
from protocols.acme import service as acme_service
from protocols.config import Config
from protocols.crypto import der, p256, rsa, x509
from store import acmefiles
from tests.helpers import wait_for
from tests.test_workers import HAS_PROC, Server

SKIP = os.environ.get("MAILSRV_SKIP_INTEROP")
HOST = "mail.example.test"
EXTRA = "mta-sts.example.test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipUnless(shutil.which("pebble") and shutil.which("pebble-challtestsrv") and not SKIP,
                     "pebble is not installed (apt-get install pebble) or MAILSRV_SKIP_INTEROP")
class PebbleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailsrv-pebble-")
        self.procs = []
        self.server = None
        key = selfsigned.key_for("localhost", "ed25519")
        cert = x509.self_signed(key, "localhost", datetime.datetime.now(datetime.timezone.utc), days=2,
                                ips=["127.0.0.1"])
        self.ca_file = os.path.join(self.tmp, "pebble-cert.pem")
        with open(self.ca_file, "wb") as f:
            f.write(x509.pem(cert))
        with open(os.path.join(self.tmp, "pebble-key.pem"), "wb") as f:
            f.write(key.pem())
        self.acme_port, self.mgmt_port, self.http_port = free_port(), free_port(), free_port()
        self.dns_port, self.tls_port = free_port(), free_port()

    def tearDown(self):
        if self.server is not None:
            self.server.stop(grace=1)
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_pebble(self):
        self.procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", "127.0.0.1:%d" % free_port(), "-defaultIPv4", "127.0.0.1",
             "-defaultIPv6", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        config = {"pebble": {"listenAddress": "127.0.0.1:%d" % self.acme_port,
                             "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
                             "certificate": os.path.join(self.tmp, "pebble-cert.pem"),
                             "privateKey": os.path.join(self.tmp, "pebble-key.pem"),
                             "httpPort": self.http_port, "tlsPort": self.tls_port, "ocspResponderURL": "",
                             "externalAccountBindingRequired": False}}
        path = os.path.join(self.tmp, "pebble.json")
        with open(path, "w") as f:
            json.dump(config, f)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="0", PEBBLE_WFE_NONCEREJECT="20")
        self.pebble_log = open(os.path.join(self.tmp, "pebble.log"), "wb")
        self.addCleanup(self.pebble_log.close)
        self.procs.append(subprocess.Popen(["pebble", "-config", path, "-dnsserver", "127.0.0.1:%d" % self.dns_port],
                                           env=env, stdout=self.pebble_log, stderr=subprocess.STDOUT))
        wait_for(self.pebble_answers, "pebble's directory", self.log)

    def pebble_answers(self):
        try:
            return loop_https.request(self.directory, cafile=self.ca_file, timeout=5).status == 200
        except loop_https.HttpsError:
            return False

    def log(self):
        with open(os.path.join(self.tmp, "pebble.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    @property
    def directory(self):
        return "https://localhost:%d/dir" % self.acme_port

    def tls_peer(self, port, cafile=None):
        """The certificate the server shows on ``port`` (verified against ``cafile`` when given)."""
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                return tls.getpeercert(binary_form=True)

    def test_certificate_from_pebble_swapped_in_without_restart(self):
        self.obtain("ec")           # the default: ES256 account key

    def test_rsa_account_key(self):
        self.obtain("rsa")          # RS256

    def test_tls_alpn_01(self):
        self.obtain("ec", "tls-alpn-01")    # RFC 8737: answered by our own TLS listener on tlsPort

    def obtain(self, key_type, challenge="http-01"):
        data = os.path.join(self.tmp, "data")
        alpn = challenge == "tls-alpn-01"
        cfg = Config({"acme_key_type": key_type, "acme_challenge": challenge, "acme_tls_port": str(self.tls_port),
                      "http_port": "off" if alpn else str(self.http_port), "data_dir": data, "hostname": HOST, "acme_names": EXTRA, "acme_email": "postmaster@example.test",
                      "acme_directory": self.directory, "acme_ca_file": self.ca_file,
                      "tls_self_signed_type": "ed25519",
                      "smtp_port": "off", "submission_port": "off", "pop3_port": "off", "pop3s_port": "off",
                      "imap_port": "off", "imaps_port": "0", "smtps_port": "0", "log_level": "WARNING",
                      "dns_servers": "127.0.0.1:9", "trusted_networks": "none"})
        with self.assertLogs("mailsrv.acme", logging.WARNING) as logs:
            self.server = MailServer(cfg).start()
            # pebble is not up yet: the first attempt fails, is logged and backs off
            wait_for(lambda: acmefiles.read_state(data).get("failures") == 1, "the first, failed, attempt")
            wait_for(lambda: logs.output, "the WARNING line")
        self.assertIn("ACME: %s: no certificate for %s, %s: " % (self.directory, HOST, EXTRA), logs.output[0])
        ports = self.server.ports
        self.assertEqual("http" in ports, not alpn)
        self.assertIn(self.directory, acmefiles.read_state(data)["last_error"])
        before = x509.read_certificate(self.tls_peer(ports["imaps"]))
        self.assertIn("localhost", before.dns_names)                 # the self-signed one
        old = socket.create_connection(("127.0.0.1", ports["imaps"]), timeout=10)
        old = ssl._create_unverified_context().wrap_socket(old, server_hostname=HOST)
        self.addCleanup(old.close)
        self.assertTrue(old.recv(1000).startswith(b"* OK"))

        self.start_pebble()
        acme_service.request_renewal(data)                           # `mailsrv.py acme renew` + SIGHUP
        self.server.loop.call_soon_threadsafe(lambda: self.server.reload(self.server.config))
        wait_for(lambda: acmefiles.read_state(data).get("failures") == 0, "the certificate from pebble",
                 lambda: "%s\n%s" % (acmefiles.read_state(data), self.log()), timeout=120)

        root = os.path.join(self.tmp, "pebble-root.pem")
        with open(root, "wb") as f:
            f.write(loop_https.request("https://localhost:%d/roots/0" % self.mgmt_port, cafile=self.ca_file).body)
        for name in ("imaps", "smtps"):
            info = x509.read_certificate(self.tls_peer(ports[name], cafile=root))     # verified by pebble's root
            self.assertEqual(sorted(info.dns_names), sorted([HOST, EXTRA]), name)
        old.sendall(b"a1 NOOP\r\n")                                    # the connection from before still works
        self.assertIn(b"a1 OK", old.recv(1000))
        with open(acmefiles.path(data, acmefiles.CERT), "rb") as f:
            self.assertGreaterEqual(len(der.pem_blocks(f.read())), 2)  # leaf and pebble's intermediate
        account = acme_service.load_account_key(acmefiles.read(data, acmefiles.ACCOUNT_KEY), "account-key.pem")
        self.assertIsInstance(account, p256.P256PrivateKey if key_type == "ec" else rsa.RsaPrivateKey)
        lines = acme_service.describe(self.server.config, time.time())
        self.assertIn("names %s, %s" % (HOST, EXTRA), lines)

    # -- workers = 2: python3 mailsrv.py for real ------------------------------------
    @unittest.skipUnless(HAS_PROC, "finds each connection's worker in /proc")
    def test_two_workers_http_01_every_worker_serves_the_new_certificate(self):
        self.obtain_with_workers("http-01")

    @unittest.skipUnless(HAS_PROC, "finds each connection's worker in /proc")
    def test_two_workers_tls_alpn_01(self):
        self.obtain_with_workers("tls-alpn-01")     # worker 0's own listener on tlsPort answers

    def obtain_with_workers(self, challenge):
        self.start_pebble()
        server = AcmeServer(self.tmp, 2, "".join("%s = %s\n" % kv for kv in (
            ("acme_email", "postmaster@example.test"), ("acme_directory", self.directory),
            ("acme_ca_file", self.ca_file), ("acme_names", EXTRA), ("acme_challenge", challenge),
            ("acme_tls_port", self.tls_port), ("tls_self_signed_type", "ed25519"),
            ("http_port", "off" if challenge == "tls-alpn-01" else self.http_port), ("imaps_port", "0"),
            ("dns_servers", "127.0.0.1:9"), ("trusted_networks", "none"))))
        self.addCleanup(server.stop, signal.SIGKILL)
        imaps = int(re.search(rb"^listening imaps 127\.0\.0\.1:(\d+)$", server.out, re.M).group(1))
        workers = wait_for(lambda: len(server.workers()) == 2 and server.workers(), "two workers", server.log_text)
        data = server.data
        wait_for(lambda: acmefiles.read_state(data).get("failures") == 0, "the certificate from pebble",
                 lambda: "%s\n%s\n%s" % (acmefiles.read_state(data), server.log_text(), self.log()), timeout=120)
        # worker 0 said "tls"; the other loaded it then (its own look at cert.pem is a minute away)
        loaded = wait_for(lambda: re.findall(r"\[(\d+)\]: ACME: certificate \S+ loaded", server.log_text()),
                          "the other worker loading the certificate", server.log_text)
        self.assertEqual(len(loaded), 1, server.log_text())
        obtained = re.findall(r"\[(\d+)\]: ACME: new certificate for", server.log_text())
        self.assertEqual({int(loaded[0]), int(obtained[0])}, workers)
        self.assertEqual(os.listdir(acmefiles.path(data, "http-01")) if challenge == "http-01" else [], [])
        with open(acmefiles.path(data, acmefiles.CERT), "rb") as f:
            leaf = der.pem_blocks(f.read())[0][1]
        root = os.path.join(self.tmp, "pebble-root.pem")
        with open(root, "wb") as f:
            f.write(loop_https.request("https://localhost:%d/roots/0" % self.mgmt_port, cafile=self.ca_file).body)
        served = {}             # worker pid -> connections that got the new certificate
        for batch in range(10):     # until both workers served some (almost always the first batch)
            for pid, cert in self.tls_batch(imaps, root, workers, 16 * batch):
                self.assertEqual(cert, leaf, "worker %d served another certificate" % pid)
                served[pid] = served.get(pid, 0) + 1
            if len(served) == 2:
                break
        self.assertEqual(set(served), workers, served)
        self.assertEqual(sorted(x509.read_certificate(leaf).dns_names), sorted([HOST, EXTRA]))
        self.assertEqual(server.stop(), 0)

    def tls_batch(self, port, root, workers, first):
        """16 TLS connections at once to ``port``, each from its own 127.0.0.x address and
        verified by pebble's root: (the worker holding its server end, the certificate)."""
        out, errors = [], []

        def one(i):
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                               source_address=("127.0.0.%d" % (2 + (first + i) % 200), 0))
                with ssl.create_default_context(cafile=root).wrap_socket(raw, server_hostname=HOST) as tls:
                    out.append((server_end_owner(tls, workers), tls.getpeercert(binary_form=True)))
            except Exception as exc:        # reported below
                errors.append(repr(exc))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        return out


class AcmeServer(Server):
    """tests/test_workers.py's `python3 mailsrv.py` with the ACME keys and IMAPS."""

    def write_config(self, workers, extra=""):
        with open(self.conf, "w") as f:
            f.write("[mailsrv]\ndata_dir = %s\nworkers = %s\nhostname = %s\ndomains = example.test\n"
                    "smtp_port = 0\nsubmission_port = off\nsmtps_port = off\npop3_port = off\npop3s_port = off\n"
                    "imap_port = off\nlog_level = INFO\nlog_target = file:%s\n%s"
                    % (self.data, workers, HOST, self.log, extra))


def server_end_owner(client: socket.socket, pids):
    """Which of ``pids`` holds the server end of ``client``'s TCP connection:
    the socket whose remote address is the client's (/proc/net/tcp), by inode."""
    ip, port = client.getsockname()[:2]
    packed = socket.inet_aton(ip)
    want = "%s:%04X" % ((packed[::-1] if sys.byteorder == "little" else packed).hex().upper(), port)
    with open("/proc/net/tcp") as f:
        inodes = {"socket:[%s]" % fields[9] for fields in (line.split() for line in f.readlines()[1:])
                  if fields[2] == want}
    for pid in pids:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                    return pid
            except OSError:
                continue
    return None


if __name__ == "__main__":
    unittest.main()
