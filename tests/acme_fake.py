"""A fake ACME CA in-process (RFC 8555), called as the flow's blocking ``https``.

It checks what a CA checks of each request: the flattened JWS (RFC 7515
§7.2.2) signed RS256 by the account key, a nonce it issued and that was not
used (RFC 8555 §6.5), the ``url`` header equal to the request's URL (§6.4),
``jwk`` on newAccount and ``kid`` after (§6.2); and it can misbehave on
demand: refuse the first ``bad_nonces`` nonces, keep authorizations pending
for ``pending_polls`` polls, fail the challenge, be unreachable.  The
certificate it issues is self-signed by ``issue_key`` (the key the test gave
the client for its certificate), after checking the CSR carries that key and
is signed by it.

:class:`AcmeLoopCase` is the fixture the ACME tests share (tests/test_acme.py,
tests/test_acme_workers.py): an AcmeService on a real event loop, a data
folder of its own, the fake CA as its HTTPS, its installs recorded.
"""

import contextlib
import datetime
import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
import threading
import unittest

from protocols.acme import service as acme_service
from protocols.config import Config
from protocols.crypto import csr as csr_mod, der, jws, p256, rsa, x509
from protocols.loop import EventLoop
from protocols.loop_https import HttpsError, HttpsReply
from store import acmefiles

BASE = "https://ca.test"
HOST = "mail.example.org"
ACCOUNT = rsa.generate(1024)        # the account key the tests write first: no 2048-bit key made per test
CERT_KEY = rsa.generate(1024)       # the certificate's "new" key the service is given, the CA issues for


def _decode(part):
    return json.loads(jws.b64url_decode(part).decode("utf-8")) if part else None


def _key(jwk):
    """The account's public key from its JWK (RFC 7518 §6.2.1, §6.3.1)."""
    def num(name):
        return int.from_bytes(jws.b64url_decode(jwk[name]), "big")
    if jwk["kty"] == "EC":
        assert jwk["crv"] == "P-256" and len(jws.b64url_decode(jwk["x"])) == 32
        assert p256.on_curve(num("x"), num("y"))
        return p256.P256PublicKey(num("x"), num("y"))
    return rsa.RsaPublicKey(num("n"), num("e"))


class FakeCA:
    def __init__(self, issue_key, fetch_challenge, days=90, now=None):
        self.issue_key = issue_key
        self.fetch_challenge = fetch_challenge   # (name, token) -> body served, or None
        self.days = days
        self.now = now or datetime.datetime.now(datetime.timezone.utc)
        self.bad_nonces = 0
        self.pending_polls = 0
        self.fail_challenge = False
        self.down = False
        self.nonces = set()
        self._ids = itertools.count(1)
        self.accounts = {}          # kid -> public key
        self.orders = {}
        self.authzs = {}
        self.requests = []          # (method, path) in order
        self.bad_nonce_sent = 0
        self.polls = 0

    # -- transport ---------------------------------------------------------
    def __call__(self, url, method, body, headers):
        if self.down:
            raise HttpsError("%s: [Errno 111] Connection refused" % url)
        path = url[len(BASE):]
        self.requests.append((method, path))
        if path == "/dir":
            return self._json(200, {"newNonce": BASE + "/nonce", "newAccount": BASE + "/acct",
                                    "newOrder": BASE + "/order", "meta": {"termsOfService": BASE + "/tos"}})
        if path == "/nonce":
            return self._reply(200 if method == "HEAD" else 204, b"")
        assert method == "POST", (method, path)
        assert headers.get("Content-Type") == "application/jose+json"
        doc = json.loads(body)
        protected = _decode(doc["protected"])
        payload = _decode(doc["payload"])
        if protected["nonce"] not in self.nonces:
            return self._problem(400, "badNonce", "unknown nonce")
        self.nonces.discard(protected["nonce"])
        if self.bad_nonce_sent < self.bad_nonces:
            self.bad_nonce_sent += 1
            return self._problem(400, "badNonce", "nonce refused on purpose")
        assert protected["url"] == url, (protected["url"], url)
        if path == "/acct":
            key = _key(protected["jwk"])
            assert "kid" not in protected
        else:
            key = self.accounts[protected["kid"]]
        assert protected["alg"] == ("ES256" if isinstance(key, p256.P256PublicKey) else "RS256"), protected["alg"]
        signing_input = (doc["protected"] + "." + doc["payload"]).encode("ascii")
        if not key.verify(signing_input, jws.b64url_decode(doc["signature"])):
            return self._problem(400, "malformed", "bad signature")
        return self._route(path, payload, key)

    def _route(self, path, payload, key):
        if path == "/acct":
            for kid, known in self.accounts.items():
                if known == key:
                    return self._json(200, {"status": "valid"}, location=kid)
            assert payload["termsOfServiceAgreed"] is True
            kid = BASE + "/acct/%d" % next(self._ids)
            self.accounts[kid] = key
            return self._json(201, {"status": "valid", "contact": payload.get("contact")}, location=kid)
        if path == "/order":
            n = next(self._ids)
            names = [i["value"] for i in payload["identifiers"]]
            authz = []
            for name in names:
                a = next(self._ids)
                self.authzs[a] = {"status": "pending", "identifier": {"type": "dns", "value": name},
                                  "challenges": [{"type": "dns-01", "url": BASE + "/chal/%d/dns" % a, "token": "x"},
                                                 {"type": "http-01", "url": BASE + "/chal/%d" % a, "token": "tok%d-_" % a,
                                                  "status": "pending"},
                                                 {"type": "tls-alpn-01", "url": BASE + "/chal/%d/alpn" % a,
                                                  "token": "alpn%d" % a, "status": "pending"}],
                                  "polls": 0, "key": key}
                authz.append(BASE + "/authz/%d" % a)
            self.orders[n] = {"status": "pending", "identifiers": payload["identifiers"], "authorizations": authz,
                              "finalize": BASE + "/finalize/%d" % n, "names": names}
            return self._json(201, self._order(n), location=BASE + "/orders/%d" % n)
        kind, _, num = path.strip("/").partition("/")
        num = int(num.split("/")[0])
        if kind == "chal":
            return self._challenge(num, key, 2 if path.endswith("/alpn") else 1)
        if kind == "authz":
            return self._authz(num)
        if kind == "orders":
            self._refresh(num)
            return self._json(200, self._order(num))
        if kind == "finalize":
            return self._finalize(num, payload)
        if kind == "cert":
            return self._reply(200, self.orders[num]["chain"], {"content-type": "application/pem-certificate-chain"})
        raise AssertionError(path)

    def _challenge(self, a, key, which):
        """http-01: ``fetch_challenge`` gives the body served (RFC 8555 §8.3); tls-alpn-01:
        the acmeIdentifier extension's value (RFC 8737 §3), SHA-256 of the key authorization."""
        authz = self.authzs[a]
        chal = authz["challenges"][which]
        served = self.fetch_challenge(authz["identifier"]["value"], chal["token"])
        expected = jws.key_authorization(chal["token"], key)
        if chal["type"] == "tls-alpn-01":
            expected = hashlib.sha256(expected.encode()).digest()
        if self.fail_challenge or served != expected:
            authz["status"] = chal["status"] = "invalid"
            chal["error"] = {"type": "urn:ietf:params:acme:error:unauthorized",
                             "detail": "got %r at /.well-known/acme-challenge/%s" % (served, chal["token"])}
        else:
            authz["verified"] = True
        return self._json(200, chal)

    def _authz(self, a):
        authz = self.authzs[a]
        self.polls += 1
        if authz.get("verified") and authz["status"] == "pending":
            authz["polls"] += 1
            if authz["polls"] > self.pending_polls:
                authz["status"] = "valid"
        doc = {k: v for k, v in authz.items() if k in ("status", "identifier", "challenges")}
        return self._json(200, doc, extra={"retry-after": "1"} if doc["status"] == "pending" else None)

    def _refresh(self, n):
        order = self.orders[n]
        if order["status"] == "pending":
            states = [self.authzs[int(u.rsplit("/", 1)[1])]["status"] for u in order["authorizations"]]
            if "invalid" in states:
                order["status"] = "invalid"
            elif all(s == "valid" for s in states):
                order["status"] = "ready"

    def _finalize(self, n, payload):
        self._refresh(n)
        order = self.orders[n]
        if order["status"] != "ready":
            return self._problem(403, "orderNotReady", "order is " + order["status"])
        request = jws.b64url_decode(payload["csr"])
        info, alg, sig = der.children(der.read_all(request))
        info_der = der.tlv(info.tag, info.value)
        spki = der.children(info)[2]
        assert der.tlv(spki.tag, spki.value) == self.issue_key.public.spki(), "CSR for another key"
        assert self.issue_key.public.verify(info_der, der.to_bits(sig)), "CSR signature"
        cert = x509.self_signed(self.issue_key, order["names"][0], self.now, days=self.days,
                                dns_names=order["names"][1:])
        order["chain"] = x509.pem(cert)
        order["status"] = "valid"
        order["certificate"] = BASE + "/cert/%d" % n
        return self._json(200, self._order(n))

    def _order(self, n):
        o = self.orders[n]
        return {k: v for k, v in o.items() if k in ("status", "identifiers", "authorizations", "finalize", "certificate")}

    # -- answers -------------------------------------------------------------
    def _reply(self, status, body, headers=None):
        nonce = "n%d" % next(self._ids)
        self.nonces.add(nonce)
        h = {"replay-nonce": nonce}
        h.update(headers or {})
        return HttpsReply(status, h, body, "")

    def _json(self, status, doc, location=None, extra=None):
        h = {"content-type": "application/json"}
        if location:
            h["location"] = location
        h.update(extra or {})
        return self._reply(status, json.dumps(doc).encode(), h)

    def _problem(self, status, kind, detail):
        return self._reply(status, json.dumps({"type": "urn:ietf:params:acme:error:" + kind, "detail": detail}).encode(),
                           {"content-type": "application/problem+json"})


def acme_settings(**extra) -> dict:
    """The ACME tests' configuration but the data folder: HOST, the fake CA's directory."""
    return dict({"hostname": HOST, "acme_email": "admin@example.org", "acme_directory": BASE + "/dir",
                 "http_port": "0"}, **extra)


class AcmeLoopCase(unittest.TestCase):
    """``self.service`` (an AcmeService for ``self.cfg``) on ``self.loop``, run in a
    thread; its data folder ``self.data`` (ACCOUNT's key in it unless
    ``account_key`` is False), the fake CA ``self.ca`` as its HTTPS, each install
    recorded in ``self.installed`` and saying ``listeners`` TLS listeners changed;
    what the CA fetched as http-01 answers in ``self.answered``."""
    settings = {}           # beside acme_settings()
    account_key = True
    listeners = 1

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mailsrv-acme-")
        self.addCleanup(shutil.rmtree, self.data, True)
        if self.account_key:
            acmefiles.write_account_key(self.data, ACCOUNT.pem())
        self.cfg = self.config(**self.settings)
        self.loop = EventLoop()
        self.services = []
        self.installed, self.answered = [], []
        self.service = self.new_service(self.cfg, self.installed)
        self.ca = self.service._https
        self.prepare()
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def config(self, **extra) -> Config:
        return Config(dict(acme_settings(**extra), data_dir=self.data))

    def new_service(self, cfg, installed: list):
        """An AcmeService on this loop (closed at the end), asking its own fake CA."""
        service = acme_service.AcmeService(cfg, self.loop, None, lambda: CERT_KEY,
                                           lambda c, k: installed.append((c, k)) or self.listeners)
        service._https = FakeCA(CERT_KEY, self.fetch)
        self.services.append(service)
        return service

    def fetch(self, name, token):
        """The CA's GET of an http-01 answer: the file any worker (and host) serves."""
        self.answered.append(acmefiles.read_token(self.data, token))
        return self.answered[-1]

    def prepare(self) -> None:
        """More set-up, before the loop runs."""

    def tearDown(self):
        for service in self.services:
            self.loop.call_soon_threadsafe(service.close)
        self.loop.stop()
        self.thread.join(10)
        self.loop.close(wait=True)

    def on_loop(self, fn) -> None:
        """Run ``fn`` on the loop's thread and wait for it."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        self.assertTrue(done.wait(10))

    def run_cli(self, settings: dict, *args):
        """`mailsrv.py ARGS` with a configuration file of ``settings`` and this data
        folder, in this process: (exit status, what it printed)."""
        import mailsrv
        ini = os.path.join(self.data, "mailsrv-%s.ini" % settings["hostname"])
        with open(ini, "w") as f:
            f.write("[mailsrv]\n" + "".join("%s = %s\n" % item for item in settings.items()))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = mailsrv.main([*args, "--config", ini, "--data", self.data])
        return status, out.getvalue()


__all__ = ["FakeCA", "BASE", "HOST", "ACCOUNT", "CERT_KEY", "acme_settings", "AcmeLoopCase", "csr_mod"]
