"""The ACME client's files (protocols/acme/): DATA/tls/acme/, with shared_data
one folder per host, DATA/tls/<host>/acme/ (``host``, below), but for the
http-01 answers, which every host serves from DATA/tls/acme/http-01/.

Per host with shared_data (README "Several hosts"): each host orders a
certificate for its own name, so its account key, certificate, key and state
are its own, in the folder that holds its self-signed pair
(store/tlsfiles.py's tls_folder, protocols/selfsigned.py); the functions take
``host`` ("" without shared_data: DATA/tls/acme/, as before).  The http-01
answers stay in one folder for all hosts: the CA may reach any host behind a
name (several A records), and the token names no host.

- ``account-key.pem``: the account's private key (PKCS#8 PEM, 0600), made once;
- ``key.pem`` (0600) and ``cert.pem`` (0644, the chain as the CA sent it,
  leaf first): the certificate in use, written key first, each one atomic and
  durable (store/fsutil.py's write_atomic: temporary file, fsync, rename,
  directory fsync);
- ``alpn/<name>.pem``: a tls-alpn-01 challenge certificate with its key
  (RFC 8737 §3), made for one validation and overwritten by the next;
- ``http-01/<token>`` (in DATA/tls/acme/ for every host): the key authorization of a pending http-01 challenge
  (RFC 8555 §8.3), written before the CA is told to look and removed once it
  has, so the HTTP listener of every worker process (and, with shared_data,
  of every host) answers the CA from the same file; 0644, as the key
  authorization is no secret (RFC 8555 §8.1: it is what anyone fetching the
  URL gets);
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
import re
import time
from typing import Dict, Optional

from store.datadir import DataDirError, os_reason
from store.fsutil import write_atomic
from store.tlsfiles import TLS_DIR, tls_folder

ACME_DIR = os.path.join(TLS_DIR, "acme")    # under the data folder (and under each host's, with shared_data)
ACCOUNT_KEY, KEY, CERT, STATE = "account-key.pem", "key.pem", "cert.pem", "state.json"
ALPN_DIR = "alpn"           # tls-alpn-01 certificates (RFC 8737), one per name, made per validation
MAX_FILE = 1 << 20          # a key, a chain or the state is a few KiB; more is not ours
HTTP01_DIR = "http-01"      # http-01 key authorizations (RFC 8555 §8.3), one file per token
# RFC 8555 §8.1: a token is base64url (no padding, so no "." or "/": it is a safe
# file name); 256 characters, far above the CAs' 43 (32 random octets, §11.3).
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
MAX_KEY_AUTHORIZATION = 1024    # token "." thumbprint (§8.1): at most 256 + 1 + 43 characters


def directory(data_dir: str, host: str = "") -> str:
    """DATA/tls/acme/, or ``host``'s DATA/tls/<host>/acme/ (shared_data)."""
    return os.path.join(tls_folder(data_dir, bool(host), host), "acme")


def path(data_dir: str, name: str, host: str = "") -> str:
    return os.path.join(directory(data_dir, host), name)


def read(data_dir: str, name: str, host: str = "") -> Optional[bytes]:
    """A file's content, None if it is not there; DataDirError naming it otherwise."""
    p = path(data_dir, name, host)
    try:
        with open(p, "rb") as f:
            return f.read(MAX_FILE)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"ACME file {p}: cannot read: {os_reason(e)}") from None


def _write(data_dir: str, name: str, data: bytes, mode: int, host: str = "") -> None:
    _write_file(path(data_dir, name, host), data, mode)


def _write_file(target: str, data: bytes, mode: int) -> None:
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        write_atomic(target, data, mode=mode)
    except OSError as e:
        raise DataDirError(f"cannot write {e.filename or target}: {os_reason(e)}") from None


def write_account_key(data_dir: str, key_pem: bytes, host: str = "") -> None:
    _write(data_dir, ACCOUNT_KEY, key_pem, 0o600, host)


def write_certificate(data_dir: str, chain_pem: bytes, key_pem: bytes, host: str = "") -> None:
    """The new pair: key first (0600), then the chain (0644, it is public)."""
    _write(data_dir, KEY, key_pem, 0o600, host)
    _write(data_dir, CERT, chain_pem, 0o644, host)


def write_alpn_pair(data_dir: str, name: str, pem: bytes, host: str = "") -> str:
    """A tls-alpn-01 certificate and its key in one file (0600), alpn/<name>.pem; its path."""
    _write(data_dir, os.path.join(ALPN_DIR, name + ".pem"), pem, 0o600, host)
    return path(data_dir, os.path.join(ALPN_DIR, name + ".pem"), host)


def read_state(data_dir: str, host: str = "") -> Dict[str, object]:
    """state.json as a dict ({} when missing or unreadable: a fresh start)."""
    try:
        raw = read(data_dir, STATE, host)
        state = json.loads(raw.decode("utf-8")) if raw else {}
    except (ValueError, DataDirError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(data_dir: str, state: Dict[str, object], host: str = "") -> None:
    _write(data_dir, STATE, json.dumps(state, sort_keys=True, indent=1).encode("utf-8") + b"\n", 0o600, host)


# -- http-01 answers (RFC 8555 §8.3): DATA/tls/acme/http-01/, every host's -------------
def answers_folder(data_dir: str) -> str:
    """Where every process of every host publishes and serves the answers (no ``host``)."""
    return os.path.join(data_dir, ACME_DIR, HTTP01_DIR)


def _token_path(data_dir: str, token: str) -> str:
    if not TOKEN.fullmatch(token):
        raise ValueError("ACME token %r is not base64url (RFC 8555 §8.1)" % token[:80])
    return os.path.join(answers_folder(data_dir), token)


def write_token(data_dir: str, token: str, key_authorization: str) -> None:
    """Publish the key authorization for ``token`` (atomic, 0644, durable:
    written before the CA is asked to look); ValueError for a token that is
    not base64url, DataDirError naming the file when it cannot be written."""
    data = key_authorization.encode("ascii")
    if len(data) > MAX_KEY_AUTHORIZATION:
        raise ValueError("ACME key authorization of %d octets" % len(data))
    _write_file(_token_path(data_dir, token), data, 0o644)


def read_token(data_dir: str, token: str) -> Optional[str]:
    """The key authorization published for ``token``; None when there is none
    (or the token is not base64url); DataDirError when it cannot be read."""
    try:
        p = _token_path(data_dir, token)
    except ValueError:
        return None
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_KEY_AUTHORIZATION + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"ACME file {p}: cannot read: {os_reason(e)}") from None
    if len(data) > MAX_KEY_AUTHORIZATION:
        return None
    return data.decode("ascii", "replace")


def remove_token(data_dir: str, token: str) -> None:
    """Withdraw the answer for ``token`` (gone already: nothing to do)."""
    try:
        os.unlink(_token_path(data_dir, token))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DataDirError(f"cannot remove {e.filename}: {os_reason(e)}") from None


def sweep_tokens(data_dir: str, older_than: float, now: Optional[float] = None) -> int:
    """Remove the answers (and temporary files) last changed more than
    ``older_than`` seconds ago, left by a process that died during a
    validation; how many went."""
    folder = answers_folder(data_dir)
    limit = (time.time() if now is None else now) - older_than
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise DataDirError(f"cannot list {folder}: {os_reason(e)}") from None
    removed = 0
    for name in names:
        p = os.path.join(folder, name)
        try:
            if os.lstat(p).st_mtime <= limit:
                os.unlink(p)
                removed += 1
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DataDirError(f"cannot remove {p}: {os_reason(e)}") from None
    return removed


def certificate_stamp(data_dir: str, host: str = "") -> Optional[tuple]:
    """(mtime_ns, inode, size) of cert.pem, None when there is none: it changes
    when a new certificate is written (atomic rename: a new inode)."""
    try:
        st = os.stat(path(data_dir, CERT, host))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"cannot stat {path(data_dir, CERT, host)}: {os_reason(e)}") from None
    return st.st_mtime_ns, st.st_ino, st.st_size
