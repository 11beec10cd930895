"""The self-signed certificate the server makes when none is configured.

With no ``tls_cert`` and ``tls_self_signed = yes`` (the default), the server
calls :func:`ensure` at start: a certificate for its host name in
``<data>/tls/selfsigned-cert.pem`` with its key in ``selfsigned-key.pem``
(protocols/crypto builds both, store/tlsfiles.py writes them), made once and
reused after; so STARTTLS, SMTPS, POP3S and IMAPS work from the first start,
as Debian's snakeoil certificate makes them work for Postfix and Dovecot.

The first start pays for an RSA-2048 key (pure Python: about a second, a few
on a slow machine; README "The self-signed certificate" has the timing).
Later starts read the files.  A certificate near its end, or for another
host name, is made again from the same key (one signature, milliseconds).

The key is also kept in this process (a cache keyed by host name), so a
second server in the same process (tests, the in-process test server) needs
no second key: :func:`self_signed` with ``data_dir=None`` writes the pair
into a temporary directory of this process, removed at exit.

A file that is there but unreadable or damaged is an error naming the file
(delete it, and a new one is made); it is never silently replaced.

Call it from one thread at a time (the server does, at start): two threads
making the same pair at once would race on its temporary files.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from protocols.config import ConfigError
from protocols.crypto import der, ed25519, keys, rsa, x509
from store.datadir import DataDirError
from store.tlsfiles import TLS_DIR, read_pem, tls_folder, write_pem_pair

log = logging.getLogger("mailsrv")

CERT_FILE = "selfsigned-cert.pem"
KEY_FILE = "selfsigned-key.pem"
# A certificate with less than this left is made again at start (30 days,
# as ACME clients renew: certbot's default renew_before_expiry).
RENEW_BEFORE = datetime.timedelta(days=30)
# Names beside the host name that local clients use: RFC 6761 §6.3 localhost.
EXTRA_NAMES = ("localhost",)

_KEYS: Dict[str, keys.PrivateKey] = {}         # "host/type" -> key made by this process
KEY_TYPES = ("rsa", "ed25519")
_TEMP: Dict[str, str] = {}                      # "dir" -> this process's temporary directory


class SelfSignedError(DataDirError):
    """A self-signed certificate or key file that is there but cannot be used."""


@dataclass(frozen=True)
class SelfSigned:
    cert: str                   # path of the PEM certificate
    key: str                    # path of the PEM private key
    fingerprint: str            # SHA-256 of the certificate, AA:BB:...
    made: str                   # "" (reused), "new key", or why the certificate was made again
    not_after: datetime.datetime


def key_for(hostname: str, key_type: str = "rsa") -> keys.PrivateKey:
    """This process's key for ``hostname``, made on first use: RSA-2048
    (about a second), or Ed25519 (milliseconds; TLS 1.3 only, and not every
    client takes it: Python's ssl does)."""
    cache_key = f"{hostname.lower()}/{key_type}"
    if cache_key not in _KEYS:
        _KEYS[cache_key] = ed25519.generate() if key_type == "ed25519" else rsa.generate()
    return _KEYS[cache_key]


def _now(clock: Callable[[], float]) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)


def _load(cert_path: str, key_path: str) -> Tuple[Optional[bytes], Optional[keys.PrivateKey]]:
    """What is on disk: the certificate's DER (None if missing) and the key (None if missing)."""
    key = cert = None
    if os.path.exists(key_path):
        try:
            key = keys.load_private_key(read_pem("key", key_path))
        except keys.KeyFileError as e:
            raise SelfSignedError(f"TLS key {key_path}: {e} (delete it to make a new one)") from None
    if key is not None and os.path.exists(cert_path):
        try:
            cert = der.pem_block(read_pem("certificate", cert_path), "CERTIFICATE")[1]
            info = x509.read_certificate(cert)
        except ValueError as e:
            raise SelfSignedError(f"TLS certificate {cert_path}: {e} (delete it to make a new one)") from None
        if info.spki != key.public.spki():
            raise SelfSignedError(f"TLS key {key_path} does not belong to the certificate {cert_path} "
                                  f"(delete both to make a new pair)")
    return cert, key


def _why_new(cert: Optional[bytes], hostname: str, now: datetime.datetime) -> str:
    """Why the certificate on disk will not do ("" if it does)."""
    if cert is None:
        return "no certificate"
    info = x509.read_certificate(cert)
    if info.not_after - now < RENEW_BEFORE:
        return f"the certificate ends {info.not_after:%Y-%m-%d}"
    if hostname.lower() not in (n.lower() for n in info.dns_names):
        return f"the certificate is for {', '.join(info.dns_names)}, not {hostname}"
    return ""


def ensure(hostname: str, directory: str, clock: Callable[[], float], days: int = x509.DEFAULT_DAYS,
           ips: Sequence[str] = (), force: bool = False, names: Sequence[str] = (),
           key_type: str = "rsa") -> SelfSigned:
    """The self-signed pair in ``directory``: reused when it is good for
    ``hostname``, else made (from the key on disk if there is one, else from
    this process's key for ``hostname``).  ``names``: more DNS names in it;
    ``force``: a new certificate (and a new key) whatever is there;
    ``key_type``: "rsa" or "ed25519" for a new key.  Raises
    SelfSignedError/DataDirError."""
    cert_path, key_path = os.path.join(directory, CERT_FILE), os.path.join(directory, KEY_FILE)
    now = _now(clock)
    cert, key = (None, None) if force else _load(cert_path, key_path)
    made = "new key" if key is None else _why_new(cert, hostname, now)
    if made:
        if key is None:
            if force:
                _KEYS.pop(f"{hostname.lower()}/{key_type}", None)     # a new key, not this process's
            key = key_for(hostname, key_type)
        cert = x509.self_signed(key, hostname, now, days=days, ips=ips,
                                dns_names=[n for n in (*names, *EXTRA_NAMES) if n.lower() != hostname.lower()])
        write_pem_pair(cert_path, x509.pem(cert), key_path, key.pem())
    return SelfSigned(cert_path, key_path, x509.fingerprint(cert), made, x509.read_certificate(cert).not_after)


def self_signed(hostname: str, data_dir: Optional[str], clock: Callable[[], float],
                ips: Sequence[str] = (), key_type: str = "rsa") -> Tuple[str, str]:
    """(cert_path, key_path) of a self-signed pair for ``hostname``, for
    ``ssl.SSLContext.load_cert_chain``: in ``<data_dir>/tls/``, or, with
    ``data_dir=None``, in a temporary directory of this process (removed at
    exit) from this process's key: after the first call, milliseconds.
    ``key_type="ed25519"`` makes even the first call take milliseconds, for
    clients that take an Ed25519 certificate (TLS 1.3; Python's ssl does)."""
    if data_dir is None:
        if "dir" not in _TEMP:
            _TEMP["dir"] = tempfile.mkdtemp(prefix="mailsrv-selfsigned-")
            atexit.register(shutil.rmtree, _TEMP["dir"], True)
        directory = os.path.join(_TEMP["dir"], f"{hostname.lower()}-{key_type}" + ("-ip" if ips else ""))
    else:
        directory = os.path.join(data_dir, TLS_DIR)
    made = ensure(hostname, directory, clock, ips=ips, key_type=key_type)
    return made.cert, made.key


def server_pair(cfg, clock: Callable[[], float]) -> Tuple[str, str]:
    """The server's certificate and key files: ``tls_cert``/``tls_key``; with
    none configured and ``tls_self_signed``, the pair in ``<data_dir>/tls/``
    (:func:`ensure`), logged with its fingerprint; else ("", ""): no TLS.
    ConfigError, one line naming the file, if the pair cannot be used."""
    from protocols.acme.service import installed_pair
    acme = installed_pair(cfg, clock())         # ACME's certificate once it has one (README "ACME certificates")
    if acme:
        return acme
    if cfg.tls_cert or not cfg.tls_self_signed:
        return cfg.tls_cert, cfg.tls_key
    try:
        # shared_data: each host its own certificate (its own name), DATA/tls/<host>/
        made = ensure(cfg.hostname, tls_folder(cfg.data_dir, cfg.shared_data, cfg.hostname), clock,
                      key_type=cfg.tls_self_signed_type)
    except DataDirError as e:
        raise ConfigError(str(e)) from None
    log.info("%s", log_line(made))
    return made.cert, made.key


def server_context(cfg, clock: Callable[[], float]):
    """The server's TLS context from :func:`server_pair`, or None (no TLS);
    ConfigError, one line naming the file, if it does not load (not ssl's "PEM lib")."""
    from protocols.loop_tls import server_tls_context
    from store.tlsfiles import check_tls_files
    cert, key = server_pair(cfg, clock)
    if not cert:
        return None
    try:
        check_tls_files(cert, key)
    except DataDirError as e:
        raise ConfigError(str(e)) from None
    try:
        return server_tls_context(cert, key)
    except FileNotFoundError as e:
        raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: {e.strerror}") from None
    except PermissionError as e:
        raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: permission denied") from None
    except OSError as e:        # ssl.SSLError is one
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {e}") from None


def log_line(made: SelfSigned) -> str:
    """What the server logs at start about its self-signed certificate."""
    what = f"made ({made.made})" if made.made else "reused"
    return (f"TLS: self-signed certificate {made.cert} {what}, valid until {made.not_after:%Y-%m-%d}, "
            f"SHA-256 fingerprint {made.fingerprint} (clients must pin it or skip verification; "
            f"set tls_cert/tls_key for a real one)")
