"""The ACME client on the event loop: when to ask, asking, and installing the answer.

Once started (``acme_email`` set, not the test server) the service checks at
once and then daily whether the certificate in DATA/tls/acme/ (with
shared_data this host's, DATA/tls/<host>/acme/: store/acmefiles.py) is due:
missing, not for every configured name, damaged, or past two thirds of its
lifetime (Let's Encrypt's advice, RFC 8555 leaves renewal to the client; for
a 90-day certificate: 30 days before its end).  When due it runs
protocols/acme/flow.py: every request on one of the loop's worker threads
through protocols/loop_https.py (``acme_ca_file`` for a test CA such as
pebble), pauses as timers, so the loop never waits.  The http-01 answers are
files, DATA/tls/acme/http-01/<token> (store/acmefiles.py), written before the
CA is told to look and removed once it has: the HTTP listener of every
worker process answers from them (protocols/http/api.py serves
``/.well-known/acme-challenge/<token>``, reading on a worker thread), as
does every host with shared_data.  Answers left by a process that died are
swept at each check (with shared_data only old ones: another host may be
validating).

A new certificate is written durably (store/acmefiles.py), loaded once to
check it, and swapped into every TLS listener (``EventLoop.set_tls_context``,
the SIGHUP path): connections accepted from then on get it, open ones keep
theirs.  With ``workers = N`` ACME runs in worker 0 (the tls-alpn-01
listener too: it binds acme_tls_port alone); it then says ``tls`` on the
sibling channel (protocols/loop_siblings.py) and every other worker loads
the new pair the same way (:meth:`AcmeService.follow`); one that missed the
datagram finds cert.pem changed at its next look, every CERT_WATCH_S.

A failure is one WARNING line naming the directory URL and the error; the
next attempt comes after 10 minutes, doubling to a day (``BACKOFF_*``),
whatever restarts happen between (the state is on disk).
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Callable, Dict, List, Optional, Tuple

from protocols.acme import flow as acme_flow
from protocols.crypto import alpn_cert, der, keys, p256, rsa, x509
from store import acmefiles
from store.datadir import DataDirError

log = logging.getLogger("mailsrv.acme")

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
CHECK_INTERVAL = 86400.0            # daily, as certbot's timer and mox's autocert
RENEW_FRACTION = 2 / 3              # of the lifetime: Let's Encrypt's "Integration guide"
BACKOFF_FIRST = 600.0               # ours: Let's Encrypt allows 5 failed validations per name an hour
BACKOFF_MAX = 86400.0               # at least a try a day
# Seconds between a follower worker's looks at cert.pem, in case it missed worker 0's
# "tls" datagram (a hint, loop_siblings.py): ours; one stat a minute, and a renewal
# comes 30 days before the old certificate ends, so a minute late costs nothing.
CERT_WATCH_S = 60.0
# With shared_data, an http-01 answer older than this is one a dead process left: an
# authorization is polled at most MAX_POLLS times RETRY_AFTER_MAX apart (40 min,
# protocols/acme/flow.py); ours, with margin.  Without shared_data every answer is
# this process's, and none is pending when a check runs: all go.
TOKEN_STALE_S = 3600.0
# The tls-alpn-01 listener serves one CA's few validation connections (Let's Encrypt
# validates from several vantage points at once); ours, far above that.
ALPN_MAX_CONNECTIONS, ALPN_MAX_PER_IP = 100, 10
USER_AGENT = "mailsrv-acme"         # RFC 8555 §6.1: a client MUST send a User-Agent


def names_of(cfg) -> List[str]:
    """The host name first, then ``acme_names``, each once."""
    return list(dict.fromkeys(n.lower().rstrip(".") for n in [cfg.hostname, *cfg.acme_names] if n))


def backoff(failures: int, first: float = BACKOFF_FIRST, most: float = BACKOFF_MAX) -> float:
    """Seconds before attempt ``failures + 1``: first, doubling, at most ``most``."""
    return min(most, first * 2 ** max(0, min(failures - 1, 32)))


def host_of(cfg) -> str:
    """Whose ACME files (store/acmefiles.py's ``host``): with shared_data this
    host's, DATA/tls/<host>/acme/ (each host orders for its own name); else ""."""
    return cfg.hostname if getattr(cfg, "shared_data", False) else ""


def read_pair(data_dir: str, names: List[str], now: float,
              host: str = "") -> Tuple[Optional[x509.CertificateInfo], str]:
    """(info of the leaf, "") if DATA/tls/acme/ (``host``'s) holds a usable
    pair for ``names``, else (None or info, why not)."""
    chain, key_pem = acmefiles.read(data_dir, acmefiles.CERT, host), acmefiles.read(data_dir, acmefiles.KEY, host)
    if chain is None or key_pem is None:
        return None, "no certificate yet"
    try:
        info = x509.read_certificate(der.pem_block(chain, "CERTIFICATE")[1])
        key = keys.load_private_key(key_pem)
    except ValueError as e:
        return None, "%s: %s" % (acmefiles.path(data_dir, acmefiles.CERT, host), e)
    if info.spki != key.public.spki():
        return None, "the key does not belong to the certificate"
    missing = [n for n in names if n not in (d.lower() for d in info.dns_names)]
    if missing:
        return info, "the certificate lacks " + ", ".join(missing)
    if info.not_after.timestamp() <= now:
        return info, "the certificate ended %s" % info.not_after.strftime("%Y-%m-%d %H:%M")
    return info, ""


def renew_at(info: x509.CertificateInfo) -> float:
    start, end = info.not_before.timestamp(), info.not_after.timestamp()
    return start + (end - start) * RENEW_FRACTION


def installed_pair(cfg, now: float) -> Optional[Tuple[str, str]]:
    """(cert, key) paths of the ACME pair when ACME is on and the pair is good
    (protocols/selfsigned.py's server_pair prefers it to the self-signed one)."""
    if not getattr(cfg, "acme_email", "") or getattr(cfg, "catch_all", False):
        return None
    host = host_of(cfg)
    info, why = read_pair(cfg.data_dir, names_of(cfg), now, host)
    if info is None or why:
        return None
    return acmefiles.path(cfg.data_dir, acmefiles.CERT, host), acmefiles.path(cfg.data_dir, acmefiles.KEY, host)


class AcmeService:
    """See the module docstring.  Loop thread only, but for the Jobs it hands to workers."""

    def __init__(self, config, loop, https: Optional[Callable[..., object]] = None,
                 new_key: Callable[[], rsa.RsaPrivateKey] = rsa.generate,
                 install: Optional[Callable[[str, str], int]] = None):
        self.config = config
        self.loop = loop
        self.enabled = bool(config.acme_email) and not config.catch_all
        self.siblings = None            # worker 0 tells the others of a new certificate (share)
        self._following = False         # a worker but the first: loads what worker 0 obtains (follow)
        self._looking = False
        self._watch = None
        self._stamp: Optional[tuple] = None     # cert.pem as last loaded here (acmefiles.certificate_stamp)
        self.alpn_certs: Dict[str, Tuple[str, str]] = {}     # name -> tls-alpn-01 certificate files (RFC 8737)
        self.alpn_addresses: List[Tuple[str, int]] = []      # where the tls-alpn-01 listener listens
        self._https = https or self._request
        self._new_key = new_key
        self._install = install or self._install_context
        self._timer = None
        self._running = False
        self._started = False           # start() ran: this process orders certificates
        self._closed = False
        self.backoff_first, self.backoff_max = BACKOFF_FIRST, BACKOFF_MAX
        self.last_result = ""           # "obtained" or the last error (tests, logs)

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        """Open the tls-alpn-01 listener if that is the challenge, and check now."""
        if not self.enabled:
            return
        self._started = True
        if self.config.acme_challenge == "tls-alpn-01":
            self._listen_alpn()
        self._schedule(0)

    def _listen_alpn(self) -> None:
        """RFC 8737 §3: a TLS listener that only answers ALPN acme-tls/1 with a
        challenge certificate; its context is its own (never the server's)."""
        from protocols.config import ConfigError
        from protocols.loop_tls import alpn_challenge_context
        from protocols.startup import bind_error
        ctx = alpn_challenge_context(self.alpn_certs.get, alpn_cert.ALPN_PROTOCOL)
        for host in self.config.listen:
            try:
                self.alpn_addresses.append(self.loop.listen(
                    "acme-tls", host, self.config.acme_tls_port, lambda c: _Handshaken(), ssl_context=ctx,
                    max_connections=ALPN_MAX_CONNECTIONS, max_per_ip=ALPN_MAX_PER_IP, own_certificate=True))
            except OSError as e:
                raise ConfigError(bind_error("acme-tls", host, self.config.acme_tls_port, e)) from None

    def close(self) -> None:
        self._closed = True
        for timer in (self._timer, self._watch):
            if timer is not None:
                timer.cancel()

    def reload(self, config=None) -> None:
        """SIGHUP: ``mailsrv.py acme renew`` may have asked for an attempt now."""
        if config is not None:
            self.config = config
        if self._started and not self._running:       # worker 0's (a follower orders nothing)
            self._schedule(0)

    # -- http-01 answers: files every worker (and host) reads --------------------
    def challenge(self, token: str, done: Callable[[object], None]) -> None:
        """``done`` gets the key authorization published for ``token`` (RFC 8555
        §8.3), None, or the exception; read on a worker, in any worker process."""
        if not self.enabled:
            done(None)
            return
        data = self.config.data_dir
        self.loop.run_in_thread(lambda: acmefiles.read_token(data, token), done)

    def publish(self, token: str, key_authorization: str) -> None:
        """flow.Http01Answers, in a Job (a worker's): the file, durable before the CA looks."""
        acmefiles.write_token(self.config.data_dir, token, key_authorization)

    def withdraw(self, token: str) -> None:
        """flow.Http01Answers, on the loop thread: the file goes, on a worker."""
        data = self.config.data_dir
        try:
            self.loop.run_in_thread(lambda: acmefiles.remove_token(data, token), _withdrawn)
        except RuntimeError:        # the loop's workers are gone (shutting down): the next check sweeps it
            pass

    # -- the other workers (protocols/supervisor.py) ---------------------------------
    def share(self, siblings) -> None:
        """The sibling channel: worker 0 says ``tls`` there after a new certificate."""
        self.siblings = siblings
        siblings.on("tls", lambda _message: self._look())

    def follow(self) -> None:
        """In a worker but the first: no orders here; load the certificate worker 0
        obtains when it says ``tls``, or when cert.pem changed at a look every
        CERT_WATCH_S (a lost datagram).  The pair in use now is this one's start."""
        if not self.enabled or self._following:
            return
        self._following = True
        try:
            self._stamp = acmefiles.certificate_stamp(self.config.data_dir, host_of(self.config))
        except DataDirError as e:
            log.warning("ACME: %s", e)
        self._tick()

    def _tick(self) -> None:
        if self._closed:
            return
        self._look()
        self._watch = self.loop.call_later(CERT_WATCH_S, self._tick)

    def _look(self) -> None:
        if self._following and not self._looking and not self._closed:
            self._looking = True
            self.loop.run_in_thread(self._load_if_new, self._looked)

    def _load_if_new(self):
        """(a worker's) (cert.pem's stamp, listeners changed), or None when it is
        as last loaded or not a usable pair (a key without its certificate yet)."""
        stamp = acmefiles.certificate_stamp(self.config.data_dir, host_of(self.config))
        if stamp is None or stamp == self._stamp:
            return None
        pair = installed_pair(self.config, self.loop.time())
        if pair is None:
            return None
        return stamp, self._install(*pair)

    def _looked(self, result: object) -> None:
        self._looking = False
        if isinstance(result, BaseException):
            log.warning("ACME: the new certificate is not loaded, the running one stays in use: %s", result)
        elif result is not None:
            self._stamp, changed = result
            log.info("ACME: certificate %s loaded, in use on %d TLS listeners",
                     acmefiles.path(self.config.data_dir, acmefiles.CERT, host_of(self.config)), changed)

    # -- when ------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(max(0.0, delay), self.check)

    def check(self) -> None:
        """Decide on a worker (it reads the files) whether an attempt is due."""
        if self._running or self._closed:
            return
        self._running = True
        now = self.loop.time()
        self.loop.run_in_thread(lambda: self._due(now), self._decided)

    def _due(self, now: float) -> Tuple[str, float]:
        """(why an attempt is due, or "", seconds until the next check)."""
        data, host = self.config.data_dir, host_of(self.config)
        # no order of ours is running: an answer left is a dead process's (shared_data: or another host's)
        try:
            acmefiles.sweep_tokens(data, TOKEN_STALE_S if self.config.shared_data else 0.0, now)
        except DataDirError as e:       # a leftover answer harms nothing: no reason to stop ordering
            log.warning("ACME: %s", e)
        state = acmefiles.read_state(data, host)
        info, why = read_pair(data, names_of(self.config), now, host)
        if state.get("renew"):
            return "renewal asked for (mailsrv.py acme renew)", 0.0
        wait = float(state.get("next_attempt", 0) or 0) - now
        if state.get("failures") and wait > 0:
            return "", min(wait, CHECK_INTERVAL)
        if why:
            return why, 0.0
        until = renew_at(info) - now
        if until <= 0:
            return "two thirds of its lifetime have passed (it ends %s)" % info.not_after.strftime("%Y-%m-%d"), 0.0
        return "", min(until, CHECK_INTERVAL)

    def _decided(self, result: object) -> None:
        if isinstance(result, BaseException):
            self._running = False
            self._failed(result)
            return
        why, wait = result
        if not why:
            self._running = False
            self._schedule(wait)
            return
        names = names_of(self.config)
        log.info("ACME: asking %s for a certificate for %s: %s", self.config.acme_directory, ", ".join(names), why)
        flow = acme_flow.AcmeFlow(self.config.acme_directory, self.config.acme_email, names, self._https,
                                  self._account_key, self._new_key, self,
                                  self.config.acme_challenge, (self.alpn_certs, self._make_alpn_cert))
        self._step(flow.run(), None, None)

    # -- driving the flow --------------------------------------------------------
    def _step(self, gen, value: object, error: Optional[BaseException]) -> None:
        if self._closed:
            gen.close()
            return
        try:
            step = gen.throw(error) if error is not None else gen.send(value)
        except StopIteration as stop:
            chain, key = stop.value
            self.loop.run_in_thread(lambda: self._write(chain, key), self._written)
            return
        except Exception as exc:        # AcmeError, HttpsError, a bad answer: one line, then backoff
            self._running = False
            self._failed(exc)
            return
        if isinstance(step, acme_flow.Job):
            self.loop.run_in_thread(step.fn, lambda r: self._step(gen, *((None, r) if isinstance(r, BaseException) else (r, None))))
        else:
            self.loop.call_later(step.seconds, lambda: self._step(gen, None, None))

    def _request(self, url: str, method: str, body: Optional[bytes], headers: Dict[str, str]):
        """The blocking HTTPS request (a worker's), CA file from ``acme_ca_file``."""
        from protocols import loop_https
        headers = dict(headers, **{"User-Agent": USER_AGENT})
        return loop_https.request(url, method, body, headers, cafile=self.config.acme_ca_file or None)

    def _account_key(self):
        """DATA/tls/acme/account-key.pem (this host's), made the first time
        (``acme_key_type``: ECDSA P-256 or RSA-2048) and saved (a worker's)."""
        data, host = self.config.data_dir, host_of(self.config)
        pem = acmefiles.read(data, acmefiles.ACCOUNT_KEY, host)
        if pem is not None:
            return load_account_key(pem, acmefiles.path(data, acmefiles.ACCOUNT_KEY, host))
        key = p256.generate() if self.config.acme_key_type == "ec" else rsa.generate()
        acmefiles.write_account_key(data, key.pem(), host)
        return key

    def _make_alpn_cert(self, name: str, key_authorization: str) -> Tuple[str, str]:
        """The tls-alpn-01 certificate for ``name`` (RFC 8737 §3) and its key, in
        one file under DATA/tls/acme/alpn/ (a worker's): (cert, key) paths."""
        if not re.fullmatch(r"[a-z0-9.-]{1,253}", name):
            raise acme_flow.AcmeError("tls-alpn-01: %r is not a DNS name we make a file for" % name)
        key = p256.generate()
        now = datetime.datetime.fromtimestamp(self.loop.time(), datetime.timezone.utc)
        cert = alpn_cert.challenge_certificate(key, name, key_authorization, now)
        path = acmefiles.write_alpn_pair(self.config.data_dir, name, x509.pem(cert) + key.pem(), host_of(self.config))
        return path, path

    # -- the answer ------------------------------------------------------------------
    def _write(self, chain: bytes, key: rsa.RsaPrivateKey) -> Tuple[int, str]:
        """Write the pair and load it into a context (a worker's); (listeners changed, end date)."""
        data, host = self.config.data_dir, host_of(self.config)
        acmefiles.write_certificate(data, chain, key.pem(), host)
        info = x509.read_certificate(der.pem_block(chain, "CERTIFICATE")[1])
        changed = self._install(acmefiles.path(data, acmefiles.CERT, host), acmefiles.path(data, acmefiles.KEY, host))
        acmefiles.write_state(data, {"failures": 0, "next_attempt": renew_at(info), "last_error": "",
                                     "directory": self.config.acme_directory}, host)
        return changed, info.not_after.strftime("%Y-%m-%d %H:%M UTC")

    def _install_context(self, cert: str, key: str) -> int:
        """Load the pair (refused with one line naming the file) and swap it in."""
        from protocols.loop_tls import server_tls_context
        from store.tlsfiles import check_tls_files
        check_tls_files(cert, key)
        return self.loop.set_tls_context(server_tls_context(cert, key))     # an attribute swap: any thread

    def _written(self, result: object) -> None:
        self._running = False
        if isinstance(result, BaseException):
            self._failed(result)
            return
        changed, until = result
        self.last_result = "obtained"
        if self.siblings is not None:
            self.siblings.send("tls", {})       # the other workers load it now (follow)
        log.info("ACME: new certificate for %s from %s, valid until %s, in use on %d TLS listeners (%s)",
                 ", ".join(names_of(self.config)), self.config.acme_directory, until, changed,
                 acmefiles.path(self.config.data_dir, acmefiles.CERT, host_of(self.config)))
        self._schedule(0)       # the next check decides when to renew

    def _failed(self, exc: BaseException) -> None:
        """Count the failure in state.json (on a worker), then log it and wait (the backoff)."""
        error = (str(exc) or type(exc).__name__).replace("\n", " ")
        self.last_result = error
        self._running = True                # no check starts until the failure is on disk
        now = self.loop.time()
        self.loop.run_in_thread(lambda: self._record_failure(error, now), lambda r: self._recorded(error, r))

    def _record_failure(self, error: str, now: float) -> Tuple[int, float]:
        """(failures in a row, seconds to wait), written to state.json (a worker's)."""
        data, host = self.config.data_dir, host_of(self.config)
        state = acmefiles.read_state(data, host)
        failures = int(state.get("failures", 0) or 0) + 1
        delay = backoff(failures, self.backoff_first, self.backoff_max)
        state.update(failures=failures, next_attempt=now + delay, last_error=error,
                     directory=self.config.acme_directory, renew=False)
        try:
            acmefiles.write_state(data, state, host)
        except DataDirError as e:
            log.error("ACME: %s", e)
        return failures, delay

    def _recorded(self, error: str, result: object) -> None:
        self._running = False
        failures, delay = result if not isinstance(result, BaseException) else (1, self.backoff_first)
        log.warning("ACME: %s: no certificate for %s: %s; attempt %d failed, next in %s",
                    self.config.acme_directory, ", ".join(names_of(self.config)), error, failures,
                    _duration(delay))
        self._schedule(delay)


def _withdrawn(result: object) -> None:
    if isinstance(result, BaseException):
        log.warning("ACME: %s", result)


def load_account_key(pem: bytes, path: str):
    """An RSA or P-256 account key from its PEM; KeyFileError naming ``path``."""
    try:
        label, body = der.pem_block(pem, "PRIVATE KEY", "RSA PRIVATE KEY")
        if label == "PRIVATE KEY" and p256.is_p256_pkcs8(body):
            return p256.private_from_pkcs8(body)
        key = keys.load_private_key(pem)
    except ValueError as e:
        raise keys.KeyFileError("%s: %s" % (path, e)) from None
    if not isinstance(key, rsa.RsaPrivateKey):
        raise keys.KeyFileError("%s: the ACME account key must be RSA (RS256) or P-256 (ES256)" % path)
    return key


class _Handshaken:
    """The tls-alpn-01 listener's session: the handshake was the answer (RFC 8737 §3), so it ends."""
    closed = True
    want_tls = False
    idle_timeout = 10.0

    def receive_data(self, data: bytes) -> None:
        pass

    def data_to_send(self) -> bytes:
        return b""

    def timeout(self) -> None:
        pass


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return "%.1f h" % (seconds / 3600)
    if seconds >= 60:
        return "%d min" % (seconds // 60)
    return "%d s" % seconds


def describe(cfg, now: float) -> List[str]:
    """`mailsrv.py acme status`: names, the certificate's dates, the next attempt, the last error."""
    data, host = cfg.data_dir, host_of(cfg)
    names = names_of(cfg)
    out = ["directory %s" % cfg.acme_directory, "names %s" % ", ".join(names),
           "challenge %s" % (cfg.acme_challenge if cfg.acme_challenge == "http-01"
                             else "%s on port %d" % (cfg.acme_challenge, cfg.acme_tls_port))]
    info, why = read_pair(data, names, now, host)
    if info is not None:
        out.append("certificate %s" % acmefiles.path(data, acmefiles.CERT, host))
        out.append("certificate names %s" % ", ".join(info.dns_names))
        out.append("valid %s to %s UTC" % (info.not_before.strftime("%Y-%m-%d %H:%M"),
                                           info.not_after.strftime("%Y-%m-%d %H:%M")))
        out.append("renewal due %s UTC" % _utc(renew_at(info)))
    if why:
        out.append("problem %s" % why)
    state = acmefiles.read_state(data, host)
    if state.get("renew"):
        out.append("next attempt now (asked for by acme renew; a running server starts it on SIGHUP)")
    elif state.get("failures"):
        out.append("failed attempts %s in a row, last error: %s" % (state.get("failures"), state.get("last_error")))
        out.append("next attempt %s UTC" % _utc(float(state.get("next_attempt", 0) or 0)))
    elif info is None or why:
        out.append("next attempt at the server's next start or check")
    else:
        out.append("next attempt %s UTC" % _utc(max(renew_at(info), now)))
    return out


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def request_renewal(data_dir: str, host: str = "") -> None:
    """`mailsrv.py acme renew`: mark an attempt as wanted now (the server reads
    it on SIGHUP); ``host``: host_of(cfg)."""
    state = acmefiles.read_state(data_dir, host)
    state.update(renew=True)
    acmefiles.write_state(data_dir, state, host)


__all__ = ["AcmeService", "installed_pair", "describe", "request_renewal", "names_of", "host_of", "backoff",
           "LETS_ENCRYPT", "LETS_ENCRYPT_STAGING"]
