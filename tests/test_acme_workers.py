"""ACME with workers = N (issue 14): the http-01 answers as files every worker
process serves (store/acmefiles.py), stale ones swept, and a new certificate
reaching every worker: worker 0 says ``tls`` on the sibling channel, and a
worker that missed it finds cert.pem changed at its next look.  The whole
thing with two real processes and pebble: tests/test_interop_acme.py.
"""

import datetime
import os
import shutil
import tempfile
import threading
import time
import unittest
from unittest import mock

from protocols import selfsigned
from protocols.acme import service as acme_service
from protocols.config import Config
from protocols.crypto import x509
from protocols.loop import EventLoop
from store import acmefiles
from tests.acme_fake import BASE, FakeCA
from tests.helpers import wait_for
from tests.test_acme import ACCOUNT, CERT_KEY

HOST = "mail.example.org"


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


class LoopCase(unittest.TestCase):
    """An AcmeService on a real event loop, its installs recorded, its sibling channel fake."""
    extra = {}

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-acme-")
        self.addCleanup(shutil.rmtree, self.data, True)
        acmefiles.write_account_key(self.data, ACCOUNT.pem())
        self.cfg = Config(dict({"data_dir": self.data, "hostname": HOST, "acme_email": "admin@example.org",
                                "acme_directory": BASE + "/dir", "http_port": "0"}, **self.extra))
        self.loop = EventLoop()
        self.installed = []
        self.service = acme_service.AcmeService(self.cfg, self.loop, None, lambda: CERT_KEY,
                                                lambda c, k: self.installed.append((c, k)) or 2)
        self.siblings = FakeSiblings()
        self.service.share(self.siblings)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def tearDown(self):
        self.loop.call_soon_threadsafe(self.service.close)
        self.loop.stop()
        self.thread.join(10)
        self.loop.close(wait=True)

    def on_loop(self, fn):
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        self.assertTrue(done.wait(10))

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
        answered = []

        def fetch(name, token):                 # the CA fetches from the file, as any worker serves it
            answered.append(acmefiles.read_token(self.data, token))
            return answered[-1]
        self.service._https = FakeCA(CERT_KEY, fetch)
        self.on_loop(self.service.start)
        wait_for(lambda: self.service.last_result, "the certificate")
        self.assertEqual(self.service.last_result, "obtained")
        self.assertTrue(answered and all(answered), answered)
        self.assertEqual(self.siblings.sent, [("tls", {})])
        wait_for(lambda: not os.listdir(acmefiles.path(self.data, "http-01")), "the answer withdrawn")

    def test_answers_left_by_a_dead_process_are_swept_at_start(self):
        acmefiles.write_token(self.data, "left", "left.t")
        acmefiles.write_state(self.data, {"failures": 3, "next_attempt": time.time() + 3600})     # no order now
        self.on_loop(self.service.start)
        wait_for(lambda: acmefiles.read_token(self.data, "left") is None, "the sweep of the first check")


class SharedDataSweepTest(LoopCase):
    extra = {"shared_data": "yes"}

    def test_only_old_answers_go_another_host_may_be_validating(self):
        acmefiles.write_token(self.data, "mine", "mine.t")
        acmefiles.write_token(self.data, "theirs", "theirs.t")
        old = time.time() - acme_service.TOKEN_STALE_S - 60
        os.utime(acmefiles.path(self.data, os.path.join("http-01", "mine")), (old, old))
        acmefiles.write_state(self.data, {"failures": 3, "next_attempt": time.time() + 3600})
        self.on_loop(self.service.start)
        wait_for(lambda: acmefiles.read_token(self.data, "mine") is None, "the sweep of the first check")
        self.assertEqual(acmefiles.read_token(self.data, "theirs"), "theirs.t")


if __name__ == "__main__":
    unittest.main()
