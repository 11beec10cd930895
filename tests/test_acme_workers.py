"""ACME with workers = N (issue 14): the http-01 answers as files every worker
process serves (store/acmefiles.py), stale ones swept, and a new certificate
reaching every worker: worker 0 says ``tls`` on the sibling channel, and a
worker that missed it finds cert.pem changed at its next look.  The whole
thing with two real processes and pebble: tests/test_interop_acme.py.
"""

import contextlib
import datetime
import io
import os
import shutil
import signal
import tempfile
import time
import unittest
from unittest import mock

from protocols import selfsigned
from protocols.acme import command as acme_command
from protocols.acme import service as acme_service
from protocols.crypto import der, x509
from store import acmefiles
from store.datadir import ServerLock, pid_name
from tests.acme_fake import HOST, AcmeLoopCase, acme_settings
from tests.dnsfake import FakeDnsServer
from tests.helpers import wait_for


def write_pair(data):
    """A usable ACME pair for HOST in DATA/tls/acme/ (as worker 0 writes one)."""
    key = selfsigned.key_for(HOST, "ed25519")
    cert = x509.self_signed(key, HOST, datetime.datetime.now(datetime.timezone.utc), days=30)
    acmefiles.write_certificate(data, x509.pem(cert), key.pem())


class FakeSiblings:
    """loop_siblings.SiblingChannel's on/send, recorded."""

    def __init__(self):
        self.handlers, self.sent = {}, []

    def on(self, kind, handler):
        self.handlers[kind] = handler

    def send(self, kind, fields):
        self.sent.append((kind, fields))


class TokenFilesTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-acme-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def test_written_read_and_removed(self):
        acmefiles.write_token(self.data, "tok-1_A", "tok-1_A.thumb")
        self.assertEqual(acmefiles.read_token(self.data, "tok-1_A"), "tok-1_A.thumb")
        path = acmefiles.path(self.data, os.path.join("http-01", "tok-1_A"))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)     # RFC 8555 §8.1: no secret
        self.assertEqual(os.listdir(os.path.dirname(path)), ["tok-1_A"])   # no temporary file left
        acmefiles.remove_token(self.data, "tok-1_A")
        self.assertIsNone(acmefiles.read_token(self.data, "tok-1_A"))
        acmefiles.remove_token(self.data, "tok-1_A")               # gone already: no error

    def test_a_token_that_is_not_base64url_names_no_file(self):
        acmefiles.write_state(self.data, {"failures": 1})
        for bad in ("../state.json", "a/b", "", ".", "a" * 257, "tok=", "t\x00k"):
            with self.assertRaises(ValueError):
                acmefiles.write_token(self.data, bad, "x")
            self.assertIsNone(acmefiles.read_token(self.data, bad), bad)
        self.assertFalse(os.path.exists(acmefiles.path(self.data, "http-01")))

    def test_sweep_takes_what_is_older_than_asked(self):
        self.assertEqual(acmefiles.sweep_tokens(self.data, 0.0), 0)        # no folder yet
        acmefiles.write_token(self.data, "old", "old.t")
        acmefiles.write_token(self.data, "new", "new.t")
        now = time.time()
        old = acmefiles.path(self.data, os.path.join("http-01", "old"))
        os.utime(old, (now - 7200, now - 7200))
        self.assertEqual(acmefiles.sweep_tokens(self.data, 3600.0, now), 1)
        self.assertEqual((acmefiles.read_token(self.data, "old"), acmefiles.read_token(self.data, "new")),
                         (None, "new.t"))
        self.assertEqual(acmefiles.sweep_tokens(self.data, 0.0, now + 1), 1)
        self.assertIsNone(acmefiles.read_token(self.data, "new"))


class LoopCase(AcmeLoopCase):
    """An AcmeService on a real event loop, its installs recorded, its sibling channel fake."""
    listeners = 2

    def prepare(self):
        self.siblings = FakeSiblings()
        self.service.share(self.siblings)

    def looked(self):
        return self.service._watch is not None and not self.service._looking


class FollowerTest(LoopCase):
    """A worker but the first (wiring.py start_pickup: acme.follow())."""

    def test_the_tls_message_loads_the_new_pair(self):
        write_pair(self.data)                   # the pair this worker started with
        self.on_loop(self.service.follow)
        wait_for(self.looked, "the first look")
        self.assertEqual(self.installed, [])    # in use already
        write_pair(self.data)                   # worker 0 obtained a new one ...
        self.on_loop(lambda: self.siblings.handlers["tls"]({"t": "tls"}))      # ... and says so
        wait_for(lambda: self.installed, "the new pair loaded")
        pair = (acmefiles.path(self.data, "cert.pem"), acmefiles.path(self.data, "key.pem"))
        self.assertEqual(self.installed, [pair])
        self.on_loop(lambda: self.siblings.handlers["tls"]({"t": "tls"}))      # the same pair again: no reload
        wait_for(lambda: not self.service._looking, "the look")
        self.assertEqual(len(self.installed), 1)

    def test_a_lost_message_is_made_up_for_by_the_look_at_cert_pem(self):
        with mock.patch.object(acme_service, "CERT_WATCH_S", 0.1):
            self.on_loop(self.service.follow)   # no pair yet: the self-signed one is in use
            wait_for(self.looked, "the first look")
            write_pair(self.data)               # no "tls" datagram arrives
            wait_for(lambda: self.installed, "the pair loaded at a look")
        self.assertEqual(len(self.installed), 1)

    def test_a_pair_for_other_names_is_not_loaded(self):
        self.on_loop(self.service.follow)
        wait_for(self.looked, "the first look")
        key = selfsigned.key_for("other.example.org", "ed25519")
        cert = x509.self_signed(key, "other.example.org", datetime.datetime.now(datetime.timezone.utc))
        acmefiles.write_certificate(self.data, x509.pem(cert), key.pem())
        self.on_loop(lambda: self.siblings.handlers["tls"]({"t": "tls"}))
        wait_for(lambda: not self.service._looking, "the look")
        self.assertEqual(self.installed, [])

    def test_a_follower_orders_nothing_even_on_sighup(self):
        self.on_loop(self.service.follow)
        self.on_loop(self.service.reload)       # SIGHUP (`mailsrv.py acme renew`): worker 0's business
        self.assertIsNone(self.service._timer)
        self.assertEqual(self.siblings.sent, [])


class WorkerZeroTest(LoopCase):
    def test_says_tls_after_a_new_certificate_and_leaves_no_answer(self):
        self.on_loop(self.service.start)       # the CA fetches from the file, as any worker serves it
        wait_for(lambda: self.service.last_result, "the certificate")
        self.assertEqual(self.service.last_result, "obtained")
        self.assertTrue(self.answered and all(self.answered), self.answered)
        self.assertEqual(self.siblings.sent, [("tls", {})])
        wait_for(lambda: not os.listdir(acmefiles.path(self.data, "http-01")), "the answer withdrawn")

    def test_answers_left_by_a_dead_process_are_swept_at_start(self):
        acmefiles.write_token(self.data, "left", "left.t")
        acmefiles.write_state(self.data, {"failures": 3, "next_attempt": time.time() + 3600})     # no order now
        self.on_loop(self.service.start)
        wait_for(lambda: acmefiles.read_token(self.data, "left") is None, "the sweep of the first check")


class SharedDataSweepTest(LoopCase):
    settings = {"shared_data": "yes"}

    def test_only_old_answers_go_another_host_may_be_validating(self):
        acmefiles.write_token(self.data, "mine", "mine.t")
        acmefiles.write_token(self.data, "theirs", "theirs.t")
        old = time.time() - acme_service.TOKEN_STALE_S - 60
        os.utime(acmefiles.path(self.data, os.path.join("http-01", "mine")), (old, old))
        acmefiles.write_state(self.data, {"failures": 3, "next_attempt": time.time() + 3600})
        self.on_loop(self.service.start)
        wait_for(lambda: acmefiles.read_token(self.data, "mine") is None, "the sweep of the first check")
        self.assertEqual(acmefiles.read_token(self.data, "theirs"), "theirs.t")


class TwoHostsTest(AcmeLoopCase):
    """shared_data (README "Several hosts"): two hosts with their own names on one data
    folder each order, keep and load their own certificate; the http-01 answers stay
    where every host serves them."""
    HOSTS = ("mx1.example.org", "mx2.example.org")
    settings = {"shared_data": "yes", "hostname": HOSTS[0]}
    account_key = False         # each host makes its own (P-256, milliseconds)

    def prepare(self):
        one, two = self.HOSTS
        self.cfg_of, self.service_of, self.installed_of = {one: self.cfg}, {one: self.service}, {one: self.installed}
        self.cfg_of[two] = self.config(**dict(self.settings, hostname=two))
        self.installed_of[two] = []
        self.service_of[two] = self.new_service(self.cfg_of[two], self.installed_of[two])

    def obtain(self, host):
        service = self.service_of[host]
        self.loop.call_soon_threadsafe(service.start)
        wait_for(lambda: service.last_result, "%s's certificate" % host)
        self.assertEqual(service.last_result, "obtained")
        return self.installed_of[host][-1]

    def names_in(self, cert_path):
        with open(cert_path, "rb") as f:
            return x509.read_certificate(der.pem_block(f.read(), "CERTIFICATE")[1]).dns_names

    def test_each_host_orders_keeps_and_loads_its_own_certificate(self):
        one, two = self.HOSTS
        pair_one = self.obtain(one)
        pair_two = self.obtain(two)             # the second host's order leaves the first one's files alone
        self.assertTrue(self.answered and all(self.answered), self.answered)
        self.assertNotEqual(os.path.dirname(pair_one[0]), os.path.dirname(pair_two[0]))
        self.assertEqual(self.names_in(pair_one[0]), (one,))
        self.assertEqual(self.names_in(pair_two[0]), (two,))
        now = self.loop.time()
        clock = lambda: now                     # noqa: E731
        for host, pair in ((one, pair_one), (two, pair_two)):
            self.assertEqual(acme_service.installed_pair(self.cfg_of[host], now), pair)     # a start, a SIGHUP
            self.assertEqual(selfsigned.server_pair(self.cfg_of[host], clock), pair)
            self.assertIn("certificate %s" % pair[0], acme_service.describe(self.cfg_of[host], now))   # acme status
        self.assertEqual(os.listdir(os.path.join(self.data, "tls", "acme")), ["http-01"])   # the answers, all withdrawn
        self.assertEqual(os.listdir(os.path.join(self.data, "tls", "acme", "http-01")), [])
        loaded = []                             # another worker of host two loads host two's pair
        worker = self.new_service(self.cfg_of[two], loaded)
        self.assertIsNotNone(worker._load_if_new())
        self.assertEqual(loaded, [pair_two])

    def cli(self, host, *args):
        """`mailsrv.py ARGS` as host ``host`` runs it, its output."""
        dns = FakeDnsServer().start()       # check asks it (an answer: no timeout to wait for)
        self.addCleanup(dns.stop)
        return self.run_cli(acme_settings(**dict(self.settings, hostname=host)), *args,
                            "--dns-server", "%s:%d" % dns.address)[1]

    def test_check_and_acme_status_name_this_hosts_files(self):
        one, two = self.HOSTS
        cert = self.obtain(one)[0]
        self.assertIn("certificate %s\n" % cert, self.cli(one, "acme", "status"))
        self.assertIn("ok: TLS with the ACME certificate %s" % cert, self.cli(one, "check"))
        theirs = acmefiles.path(self.data, acmefiles.CERT, acme_service.host_of(self.cfg_of[two]))
        self.assertNotIn("certificate %s" % cert, self.cli(two, "acme", "status"))
        self.assertIn("ok: ACME certificate %s: no certificate yet" % theirs, self.cli(two, "check"))
        self.assertIn("made at first start in %s" % os.path.join(self.data, "tls", two), self.cli(two, "check"))

    def test_acme_renew_marks_and_signals_this_hosts_server_only(self):
        one, two = self.HOSTS
        lock = ServerLock(self.data, pid_name(True, two)).acquire()     # host two's server is "running" (us)
        self.addCleanup(lock.release)
        with mock.patch("os.kill") as kill, contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(acme_command.renew_main(self.cfg_of[two]), 0)
            self.assertEqual(acme_command.renew_main(self.cfg_of[one]), 0)    # no server of host one runs
        kill.assert_called_once_with(os.getpid(), signal.SIGHUP)
        self.assertTrue(acmefiles.read_state(self.data, acme_service.host_of(self.cfg_of[two]))["renew"])
        self.assertNotIn("renew", acmefiles.read_state(self.data))     # DATA/tls/acme/: no host's state


if __name__ == "__main__":
    unittest.main()
