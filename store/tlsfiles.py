"""The TLS certificate and key files, checked before ``ssl`` sees them.

``ssl.SSLContext.load_cert_chain`` reports a missing file as
``[Errno 2] No such file or directory`` without the name, and a swapped pair
as ``[SSL] PEM lib``.  :func:`check_tls_files` says which file and what is
wrong, in one line (:class:`store.datadir.DataDirError`), and then loads the
pair once so a key that does not match the certificate is named too.
"""

from __future__ import annotations

import os
import ssl

from store.datadir import DataDirError, host_part, os_reason
from store.fsutil import write_atomic

TLS_DIR = "tls"                             # under the data folder

# RFC 7468 §2: the pre-encapsulation boundary names the type of the content.
CERT_MARK = b"-----BEGIN CERTIFICATE-----"
KEY_MARKS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN RSA PRIVATE KEY-----",
             b"-----BEGIN EC PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

# A PEM chain or key is a few kilobytes; more than this is not one.
MAX_PEM_SIZE = 1 << 20


def _read(kind: str, path: str) -> bytes:
    if not os.path.exists(path):
        raise DataDirError(f"TLS {kind} {path}: no such file")
    if not os.path.isfile(path):
        raise DataDirError(f"TLS {kind} {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_PEM_SIZE)
    except OSError as e:
        raise DataDirError(f"TLS {kind} {path}: cannot read: {os_reason(e)}") from None


def _has_key(text: bytes) -> bool:
    return any(m in text for m in KEY_MARKS)


def check_tls_files(cert: str, key: str) -> None:
    """Raise DataDirError (one line naming the file) unless ``cert`` holds a
    PEM certificate and ``key`` the PEM private key that matches it."""
    cert_text, key_text = _read("certificate", cert), _read("key", key)
    if CERT_MARK not in cert_text:
        hint = " (it holds a private key: tls_cert and tls_key swapped?)" if _has_key(cert_text) else ""
        raise DataDirError(f"TLS certificate {cert}: no PEM certificate in it{hint}")
    if not _has_key(key_text):
        hint = " (it holds a certificate: tls_cert and tls_key swapped?)" if CERT_MARK in key_text else ""
        raise DataDirError(f"TLS key {key}: no PEM private key in it{hint}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        reason = str(getattr(e, "reason", None) or e)
        # OpenSSL: KEY_VALUES_MISMATCH (same type), NO_CERTIFICATE_ASSIGNED (another key type)
        if "MISMATCH" in reason.upper() or "NO_CERTIFICATE_ASSIGNED" in reason.upper():
            raise DataDirError(f"TLS key {key} does not belong to the certificate {cert}") from None
        raise DataDirError(f"TLS certificate {cert} / key {key}: {reason}") from None
    except OSError as e:
        raise DataDirError(f"TLS certificate {cert} / key {key}: {os_reason(e)}") from None


def tls_folder(data_dir: str, shared: bool, host: str) -> str:
    """One host's TLS files (the self-signed pair, ACME's folder): ``DATA/tls/``,
    or with shared_data (several hosts on one folder, README "Several hosts")
    ``DATA/tls/<host>/``, named as datadir.pid_name names the host's pid file:
    each host has its own certificate, for its own name."""
    return os.path.join(data_dir, TLS_DIR, *([host_part(host)] if shared else []))


# -- the self-signed certificate's files (protocols/selfsigned.py makes their content) --

def read_pem(kind: str, path: str) -> bytes:
    """A PEM file's content; DataDirError naming the file when it cannot be read."""
    return _read(kind, path)


def write_pem_pair(cert_path: str, cert_pem: bytes, key_path: str, key_pem: bytes) -> None:
    """Write a key and its certificate durably (store/fsutil.py's write_atomic):
    the key first, mode 0600, in a directory only we may enter (0700), then the
    certificate (0644: it is public), so a crash between the two leaves a key
    without a certificate, which is made again from the key."""
    for directory in {os.path.dirname(cert_path), os.path.dirname(key_path)}:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot create {directory}: {os_reason(e)}") from None
    try:
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, cert_pem, mode=0o644)
    except OSError as e:
        raise DataDirError(f"cannot write {e.filename or key_path}: {os_reason(e)}") from None
