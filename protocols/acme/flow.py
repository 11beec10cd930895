"""The ACME protocol (RFC 8555) as a generator: account, order, http-01, finalize, download.

:meth:`AcmeFlow.run` yields what it needs and is sent the answer:

- :class:`Job` ``(fn, what)``: call the blocking ``fn()`` (an HTTPS request,
  with the JWS signature made inside it; a key generation; the files of a
  tls-alpn-01 certificate; publishing an http-01 answer) on a worker thread
  and send back its result, or throw its exception in;
- :class:`Wait` ``(seconds)``: resume after a pause (polling, RFC 8555 §7.5.1).

It returns the certificate chain (PEM) and the new certificate's key, or
raises :class:`AcmeError`, one line naming the URL and the problem (RFC 8555
§6.7, RFC 7807).  The http-01 answers (token -> key authorization, RFC 8555
§8.3) are published through ``answers`` (:class:`Http01Answers`) in a Job
before the CA is told to look, and withdrawn once it has; the service keeps
them as files every worker's HTTP listener reads (store/acmefiles.py).

tls-alpn-01 (RFC 8737) answers are certificate files made in a Job and put
in ``alpn_certs`` (name -> files), which the TLS-ALPN listener serves.

Left out: dns-01, External Account Binding (§7.3.4),
pre-authorization (§7.4.1), revocation (§7.6), key roll-over (§7.3.5),
alternate chains (§7.4.2's Link rel="alternate").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, Generator, List, Optional, Protocol, Sequence, Tuple

from protocols.crypto import csr, der, jws, rsa

ERR = "urn:ietf:params:acme:error:"             # RFC 8555 §6.7
BAD_NONCE = ERR + "badNonce"
# RFC 8555 §6.5: a client SHOULD retry a badNonce with the new nonce; a CA
# that keeps refusing is not going to accept the next one either.
MAX_BAD_NONCE_RETRIES = 5
# Polling (RFC 8555 §7.5.1): Retry-After when the CA sends one (bounded),
# else 1 s doubling to 8 s; at most this many polls per object (a few
# minutes: Let's Encrypt validates in seconds).
POLL_FIRST, POLL_MAX, MAX_POLLS = 1.0, 8.0, 40
RETRY_AFTER_MAX = 60.0                          # ours: never sleep longer between polls
JOSE = "application/jose+json"                  # RFC 8555 §6.2
PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555 §9.1
MAX_CHAIN = 64 * 1024                            # a chain is a few KiB


class AcmeError(Exception):
    """One line: the URL and what the CA (or the network) said."""


@dataclass
class Job:
    fn: Callable[[], object]
    what: str = ""


@dataclass
class Wait:
    seconds: float


Step = Generator[object, object, object]


def _problem(reply) -> Tuple[str, str]:
    """(type, detail) of an error document (RFC 7807 §3.1); the status when none."""
    try:
        doc = json.loads(reply.body.decode("utf-8"))
        return str(doc.get("type", "")), str(doc.get("detail", "")).replace("\n", " ")
    except (ValueError, AttributeError):
        return "", "HTTP %d" % reply.status


def _json(reply, url: str) -> dict:
    try:
        doc = json.loads(reply.body.decode("utf-8"))
    except ValueError:
        raise AcmeError("%s: the answer is not JSON" % url) from None
    if not isinstance(doc, dict):
        raise AcmeError("%s: the answer is not a JSON object" % url)
    return doc


def retry_after(reply, default: float) -> float:
    """RFC 8555 §8.2 / RFC 9110 §10.2.3: delay-seconds honoured within bounds;
    an HTTP-date or nonsense gives ``default``."""
    value = (reply.headers.get("retry-after") or "").strip()
    if value.isdigit():
        return min(max(1.0, float(value)), RETRY_AFTER_MAX)
    return default


class Http01Answers(Protocol):
    """Where the http-01 key authorizations are served from (RFC 8555 §8.3)."""

    def publish(self, token: str, key_authorization: str) -> None:
        """Blocking (it runs in a Job): served at the token's URL once this returns."""

    def withdraw(self, token: str) -> None:
        """On the loop thread, never blocking: no longer served soon after."""


class AcmeFlow:
    """One certificate for ``names`` from the CA at ``directory_url``.

    ``https(url, method, body, headers)`` is the blocking request (it runs
    inside Jobs); ``account_key()`` returns the account key (loading or making
    and saving it: it runs inside a Job); ``new_key()`` makes the
    certificate's key (also in a Job)."""

    def __init__(self, directory_url: str, email: str, names: Sequence[str],
                 https: Callable[..., object], account_key: Callable[[], jws.PrivateKey],
                 new_key: Callable[[], rsa.RsaPrivateKey], answers: Http01Answers,
                 challenge_type: str = "http-01",
                 alpn: Optional[Tuple[Dict[str, Tuple[str, str]], Callable[[str, str], Tuple[str, str]]]] = None):
        self.directory_url = directory_url
        self.email = email
        self.names = list(dict.fromkeys(n.lower() for n in names))
        self.https = https
        self._account_key = account_key
        self._new_key = new_key
        self.answers = answers
        self.challenge_type = challenge_type
        # tls-alpn-01 (RFC 8737): (name -> certificate files, the maker of those files, a Job)
        self.alpn_certs, self.make_alpn_cert = alpn if alpn else ({}, None)
        self.key: Optional[jws.PrivateKey] = None
        self.kid: Optional[str] = None
        self.nonce: Optional[str] = None
        self.directory: dict = {}
        self.terms = ""

    # -- transport --------------------------------------------------------
    def _request(self, method: str, url: str, body: Optional[bytes] = None,
                 headers: Optional[Dict[str, str]] = None, prepare: Optional[Callable[[], bytes]] = None) -> Step:
        """One request in a Job; ``prepare()`` (signing) runs in it too."""
        def fn():
            return self.https(url, method, prepare() if prepare else body, dict(headers or {}))
        reply = yield Job(fn, "%s %s" % (method, url))
        nonce = reply.headers.get("replay-nonce")
        if nonce:
            self.nonce = nonce              # RFC 8555 §6.5: every answer may carry the next one
        return reply

    def _new_nonce(self) -> Step:
        """RFC 8555 §7.2: HEAD newNonce."""
        url = self.directory.get("newNonce")
        if not url:
            raise AcmeError("%s: the directory has no newNonce" % self.directory_url)
        self.nonce = None
        reply = yield from self._request("HEAD", url)
        if not self.nonce:
            raise AcmeError("%s: no Replay-Nonce in the answer (HTTP %d)" % (url, reply.status))

    def post(self, url: str, payload: Optional[object], use_jwk: bool = False,
             accept: Optional[str] = None) -> Step:
        """A JWS-signed POST (RFC 8555 §6.2); ``payload`` None is POST-as-GET
        (§6.3).  badNonce is retried with the nonce of the refusal (§6.5)."""
        for attempt in range(MAX_BAD_NONCE_RETRIES + 1):
            if not self.nonce:
                yield from self._new_nonce()
            protected: Dict[str, object] = {"nonce": self.nonce, "url": url}
            self.nonce = None               # a nonce is good for one request (§6.5)
            if use_jwk:
                protected["jwk"] = jws.jwk(self.key.public)       # §6.2: newAccount carries the key
            else:
                protected["kid"] = self.kid
            key = self.key
            headers = {"Content-Type": JOSE}
            if accept:
                headers["Accept"] = accept
            reply = yield from self._request("POST", url, headers=headers,
                                             prepare=lambda p=protected: jws.flattened(key, p, payload))
            if reply.status < 400:
                return reply
            kind, detail = _problem(reply)
            if kind == BAD_NONCE and attempt < MAX_BAD_NONCE_RETRIES:
                continue
            raise AcmeError("%s: %s%s" % (url, kind.replace(ERR, "") or "HTTP %d" % reply.status,
                                          ": " + detail if detail else ""))
        raise AssertionError("unreachable")

    # -- the steps ---------------------------------------------------------
    def run(self) -> Step:
        """The whole exchange; returns (chain PEM, certificate key)."""
        reply = yield from self._request("GET", self.directory_url)
        if reply.status != 200:
            raise AcmeError("%s: HTTP %d for the directory" % (self.directory_url, reply.status))
        self.directory = _json(reply, self.directory_url)
        self.terms = str((self.directory.get("meta") or {}).get("termsOfService", ""))
        self.key = yield Job(self._account_key, "account key")
        yield from self.account()
        order_url, order = yield from self.new_order()
        for authz_url in order.get("authorizations") or []:
            yield from self.authorize(authz_url)
        order = yield from self.poll(order_url, ("pending",), "order")
        if order.get("status") != "ready":
            raise AcmeError("%s: order is %s, not ready" % (order_url, order.get("status")))
        cert_key = yield Job(self._new_key, "certificate key")
        chain = yield from self.finalize(order_url, order, cert_key)
        return chain, cert_key

    def account(self) -> Step:
        """RFC 8555 §7.3: newAccount with the key; an existing account answers
        200 with its URL (§7.3.1), so this also finds ours again."""
        payload: Dict[str, object] = {"termsOfServiceAgreed": True}      # §7.3: the operator agreed by configuring
        if self.email:
            payload["contact"] = ["mailto:" + self.email]
        url = self._endpoint("newAccount")
        reply = yield from self.post(url, payload, use_jwk=True)
        self.kid = reply.headers.get("location")
        if not self.kid:
            raise AcmeError("%s: no Location for the account" % url)

    def new_order(self) -> Step:
        """RFC 8555 §7.4: newOrder for the DNS names."""
        url = self._endpoint("newOrder")
        reply = yield from self.post(url, {"identifiers": [{"type": "dns", "value": n} for n in self.names]})
        order_url = reply.headers.get("location")
        if not order_url:
            raise AcmeError("%s: no Location for the order" % url)
        return order_url, _json(reply, url)

    def authorize(self, authz_url: str) -> Step:
        """RFC 8555 §7.5: one authorization, by http-01 (§8.3) or tls-alpn-01
        (RFC 8737 §3), unless already valid."""
        authz = _json((yield from self.post(authz_url, None)), authz_url)
        if authz.get("status") == "valid":
            return
        name = str((authz.get("identifier") or {}).get("value", "?")).lower()
        kind = self.challenge_type
        chal = next((c for c in authz.get("challenges") or [] if c.get("type") == kind), None)
        if chal is None or not chal.get("url") or not chal.get("token"):
            raise AcmeError("%s: no %s challenge offered for %s" % (authz_url, kind, name))
        token = str(chal["token"])
        key_authz = jws.key_authorization(token, self.key.public)         # §8.1
        if kind == "http-01":                                              # served at §8.3's path
            yield Job(lambda: self.answers.publish(token, key_authz), "http-01 answer")
        else:
            self.alpn_certs[name] = yield Job(lambda: self.make_alpn_cert(name, key_authz), "tls-alpn-01 certificate")
        try:
            yield from self.post(chal["url"], {})          # §7.5.1: "{}" says we are ready
            authz = yield from self.poll(authz_url, ("pending",), "authorization")
        finally:
            if kind == "http-01":
                self.answers.withdraw(token)
            self.alpn_certs.pop(name, None)
        if authz.get("status") != "valid":
            raise AcmeError("%s: authorization of %s is %s%s" % (authz_url, name, authz.get("status"),
                                                                  _challenge_error(authz)))

    def poll(self, url: str, waiting: Tuple[str, ...], what: str) -> Step:
        """POST-as-GET ``url`` until its status leaves ``waiting`` (RFC 8555 §7.5.1)."""
        delay = POLL_FIRST
        for _ in range(MAX_POLLS):
            reply = yield from self.post(url, None)
            doc = _json(reply, url)
            if doc.get("status") not in waiting:
                return doc
            yield Wait(retry_after(reply, delay))
            delay = min(delay * 2, POLL_MAX)
        raise AcmeError("%s: %s still %s after %d polls" % (url, what, "/".join(waiting), MAX_POLLS))

    def finalize(self, order_url: str, order: dict, cert_key: rsa.RsaPrivateKey) -> Step:
        """RFC 8555 §7.4: finalize with a CSR (RFC 2986), wait for valid, download (§7.4.2)."""
        url = order.get("finalize") or ""
        request = csr.certification_request(cert_key, self.names)
        yield from self.post(url, {"csr": jws.b64url(request)})
        order = yield from self.poll(order_url, ("pending", "ready", "processing"), "order")
        if order.get("status") != "valid" or not order.get("certificate"):
            raise AcmeError("%s: order is %s after finalize%s" % (order_url, order.get("status"),
                                                                   _order_error(order)))
        reply = yield from self.post(order["certificate"], None, accept=PEM_CHAIN)
        chain = reply.body
        if len(chain) > MAX_CHAIN or not der.pem_blocks(chain):
            raise AcmeError("%s: no PEM certificate chain in the answer" % order["certificate"])
        return chain

    def _endpoint(self, name: str) -> str:
        url = self.directory.get(name)
        if not isinstance(url, str) or not url:
            raise AcmeError("%s: the directory has no %s" % (self.directory_url, name))
        return url


def _challenge_error(authz: dict) -> str:
    for c in authz.get("challenges") or []:
        err = c.get("error")
        if isinstance(err, dict):
            return ": %s: %s" % (str(err.get("type", "")).replace(ERR, ""), str(err.get("detail", "")).replace("\n", " "))
    return ""


def _order_error(order: dict) -> str:
    err = order.get("error")
    if isinstance(err, dict):
        return ": " + str(err.get("detail", "")).replace("\n", " ")
    return ""


def run_sync(gen: Step, sleep: Callable[[float], None] = lambda s: None) -> object:
    """Drive a flow in the calling thread (tests, and nothing on the loop)."""
    value: object = None
    error: Optional[BaseException] = None
    while True:
        try:
            step = gen.throw(error) if error is not None else gen.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        if isinstance(step, Job):
            try:
                value = step.fn()
            except Exception as exc:            # noqa: BLE001 - handed to the flow
                error = exc
        elif isinstance(step, Wait):
            sleep(step.seconds)


__all__: List[str] = ["AcmeFlow", "AcmeError", "Job", "Wait", "run_sync", "retry_after"]
