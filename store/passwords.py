"""Password math for the users file: scrypt hashes and SCRAM-SHA-256 secrets.

Split out of store/users.py (which re-exports every name here).  Passwords are
prepared with the same "SASLprep-lite" as protocols/sasl.py (RFC 4013 §2.1
mapping + §2.2 NFKC) before both scrypt and the SCRAM Hi() of RFC 5802 §2.2,
as RFC 4616 §2 (PLAIN) and RFC 5802 §2.2 ask.
DEVIATION(RFC 4013 §2.3-§2.5): prohibited-output, bidi and unassigned checks
are not done.  ``saslprep`` and ``scram_keys`` are defined in store/scram.py,
which both this module and protocols/sasl.py import (neither layer may import
the other's modules).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Optional

from store.scram import SCRAM_ITERATIONS, SCRAM_SALT_LEN, ScramKeys, saslprep, scram_keys  # noqa: F401 (re-exported)

# Password hashing: scrypt (RFC 7914 §2 parameters): N=2**14, r=8, p=1;
# 16-byte salt, 64-byte derived key.
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_LEN = 16
SCRYPT_DKLEN = 64
# 128 * r * N octets are needed; leave headroom for larger parameters.
SCRYPT_MAXMEM = 256 * 1024 * 1024


def scrypt_hash(password: str, salt: Optional[bytes] = None, n: Optional[int] = None) -> str:
    """The stored scrypt string for ``password`` (parameters kept inside)."""
    salt = os.urandom(SCRYPT_SALT_LEN) if salt is None else salt
    n = SCRYPT_N if n is None else n
    key = hashlib.scrypt(saslprep(password).encode("utf-8"), salt=salt, n=n, r=SCRYPT_R,
                         p=SCRYPT_P, dklen=SCRYPT_DKLEN, maxmem=SCRYPT_MAXMEM)
    return "scrypt$%d$%d$%d$%s$%s" % (n, SCRYPT_R, SCRYPT_P,
                                      _b64(salt), _b64(key))


def scrypt_check(password: str, stored: str) -> bool:
    """Recompute with the stored parameters; compare in constant time."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(saslprep(password).encode("utf-8"), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=len(want),
                             maxmem=SCRYPT_MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _scram_from(s: dict) -> ScramKeys:
    """The stored ``scram`` object as ScramKeys; raises on a malformed one."""
    keys = ScramKeys(base64.b64decode(s["salt"], validate=True), int(s["iterations"]),
                     base64.b64decode(s["stored_key"], validate=True),
                     base64.b64decode(s["server_key"], validate=True))
    if keys.iterations < 1 or not keys.salt:
        raise ValueError("bad SCRAM parameters")
    return keys


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_dummy: list = []
_DUMMY_N = SCRYPT_N      # the product's cost, whatever a test sets SCRYPT_N to later


def dummy_hash() -> str:
    """A fixed hash to burn the same scrypt time for unknown users; made on first use,
    not at import (every `mailsrv.py` command would pay ~65 ms of scrypt for it)."""
    if not _dummy:
        _dummy.append(scrypt_hash("\x00mailsrv-no-such-user", salt=b"\x00" * SCRYPT_SALT_LEN, n=_DUMMY_N))
    return _dummy[0]
