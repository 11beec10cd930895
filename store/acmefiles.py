"""The ACME client's files (protocols/acme/): DATA/tls/acme/.

- ``account-key.pem``: the account's private key (PKCS#8 PEM, 0600), made once;
- ``key.pem`` (0600) and ``cert.pem`` (0644, the chain as the CA sent it,
  leaf first): the certificate in use, written key first, each one atomic and
  durable (store/fsutil.py's write_atomic: temporary file, fsync, rename,
  directory fsync);
- ``alpn/<name>.pem``: a tls-alpn-01 challenge certificate with its key
  (RFC 8737 §3), made for one validation and overwritten by the next;
- ``state.json``: when the next attempt is due, how many attempts failed in a
  row, the last error, and whether ``mailsrv.py acme renew`` asked for one
  now.  The server is its only writer but for that request.

A crash between the key and the certificate leaves a key that does not belong
to the certificate: the server then sees no usable ACME pair
(protocols/acme/service.py checks them) and asks the CA again.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from store.datadir import DataDirError, os_reason
from store.fsutil import write_atomic

ACME_DIR = os.path.join("tls", "acme")      # under the data folder
ACCOUNT_KEY, KEY, CERT, STATE = "account-key.pem", "key.pem", "cert.pem", "state.json"
ALPN_DIR = "alpn"           # tls-alpn-01 certificates (RFC 8737), one per name, made per validation
MAX_FILE = 1 << 20          # a key, a chain or the state is a few KiB; more is not ours


def directory(data_dir: str) -> str:
    return os.path.join(data_dir, ACME_DIR)


def path(data_dir: str, name: str) -> str:
    return os.path.join(directory(data_dir), name)


def read(data_dir: str, name: str) -> Optional[bytes]:
    """A file's content, None if it is not there; DataDirError naming it otherwise."""
    p = path(data_dir, name)
    try:
        with open(p, "rb") as f:
            return f.read(MAX_FILE)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"ACME file {p}: cannot read: {os_reason(e)}") from None


def _write(data_dir: str, name: str, data: bytes, mode: int) -> None:
    target = os.path.join(directory(data_dir), name)
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        write_atomic(target, data, mode=mode)
    except OSError as e:
        raise DataDirError(f"cannot write {e.filename or target}: {os_reason(e)}") from None


def write_account_key(data_dir: str, key_pem: bytes) -> None:
    _write(data_dir, ACCOUNT_KEY, key_pem, 0o600)


def write_certificate(data_dir: str, chain_pem: bytes, key_pem: bytes) -> None:
    """The new pair: key first (0600), then the chain (0644, it is public)."""
    _write(data_dir, KEY, key_pem, 0o600)
    _write(data_dir, CERT, chain_pem, 0o644)


def write_alpn_pair(data_dir: str, name: str, pem: bytes) -> str:
    """A tls-alpn-01 certificate and its key in one file (0600), alpn/<name>.pem; its path."""
    _write(data_dir, os.path.join(ALPN_DIR, name + ".pem"), pem, 0o600)
    return path(data_dir, os.path.join(ALPN_DIR, name + ".pem"))


def read_state(data_dir: str) -> Dict[str, object]:
    """state.json as a dict ({} when missing or unreadable: a fresh start)."""
    try:
        raw = read(data_dir, STATE)
        state = json.loads(raw.decode("utf-8")) if raw else {}
    except (ValueError, DataDirError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(data_dir: str, state: Dict[str, object]) -> None:
    _write(data_dir, STATE, json.dumps(state, sort_keys=True, indent=1).encode("utf-8") + b"\n", 0o600)
