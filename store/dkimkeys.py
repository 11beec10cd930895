"""DKIM private key files: ``DATA/dkim/<domain>/<selector>.<type>.pem``.

<type> is ``rsa`` or ``ed25519``; the file is a PEM private key (PKCS#8 as
``mailsrv.py dkim keygen`` writes it, or whatever ``openssl genpkey`` made),
mode 0600 in a 0700 directory.  This module only finds, reads and writes the
files; protocols/dkim_signer.py parses them and chooses which sign.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List

from store.datadir import DataDirError, os_reason
from store.fsutil import write_atomic

KEY_TYPES = ("rsa", "ed25519")
MAX_KEY_FILE = 64 * 1024            # an RSA-4096 PEM is about 3.3 KB; more is not a key
# RFC 6376 §3.1: a selector is dot-separated sub-domain labels (RFC 5321 §4.1.2).
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


@dataclass
class KeyFile:
    domain: str
    selector: str
    key_type: str
    path: str
    mtime: float
    pem: bytes


def valid_name(name: str) -> bool:
    """A domain or selector: dot-separated labels of letters, digits, hyphens."""
    return bool(name) and len(name) <= 253 and all(_LABEL.match(p) for p in name.split("."))


def key_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "dkim")


def key_path(data_dir: str, domain: str, selector: str, key_type: str) -> str:
    return os.path.join(key_dir(data_dir), domain.lower(), "%s.%s.pem" % (selector, key_type))


def list_keys(data_dir: str) -> Dict[str, List[KeyFile]]:
    """Every readable key file by domain; a file that cannot be read raises
    DataDirError naming it (a key the operator meant to use must not be
    silently skipped)."""
    top = key_dir(data_dir)
    out: Dict[str, List[KeyFile]] = {}
    if not os.path.isdir(top):
        return out
    for domain in sorted(os.listdir(top)):
        folder = os.path.join(top, domain)
        if not os.path.isdir(folder) or not valid_name(domain):
            continue
        for name in sorted(os.listdir(folder)):
            parts = name.split(".")
            if len(parts) < 3 or parts[-1] != "pem" or parts[-2] not in KEY_TYPES:
                continue
            selector, path = ".".join(parts[:-2]), os.path.join(folder, name)
            if not valid_name(selector):
                continue
            try:
                with open(path, "rb") as f:
                    pem = f.read(MAX_KEY_FILE)
                mtime = os.stat(path).st_mtime
            except OSError as e:
                raise DataDirError(f"DKIM key {path}: cannot read: {os_reason(e)}") from None
            out.setdefault(domain.lower(), []).append(KeyFile(domain.lower(), selector, parts[-2], path, mtime, pem))
    return out


def write_key(data_dir: str, domain: str, selector: str, key_type: str, pem: bytes) -> str:
    """Write a new key durably (tmp, fsync, rename, directory fsync), 0600;
    an existing file is never replaced (DataDirError)."""
    path = key_path(data_dir, domain, selector, key_type)
    if os.path.exists(path):
        raise DataDirError(f"DKIM key {path} exists already: choose another selector (--selector)")
    for directory in (key_dir(data_dir), os.path.dirname(path)):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot create {directory}: {os_reason(e)}") from None
    try:
        write_atomic(path, pem, mode=0o600)
    except OSError as e:
        raise DataDirError(f"cannot write {path}: {os_reason(e)}") from None
    return path
