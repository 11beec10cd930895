"""SASLprep-lite (RFC 4013) and the SCRAM-SHA-256 server keys (RFC 5802 §3).

One definition for the two layers that must agree on them: the users file
(store/passwords.py hashes and derives keys at ``user add``) and the SASL
exchange (protocols/sasl.py checks proofs and builds test clients).  Pure
functions of their arguments (randomness only for a salt not given).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections import namedtuple
from typing import Optional

# RFC 7677 §4: SCRAM-SHA-256 iteration count should be at least 4096.
SCRAM_ITERATIONS = 4096
# RFC 5802 §5.1 leaves the salt length open; 16 octets as Dovecot uses.
SCRAM_SALT_LEN = 16

ScramKeys = namedtuple("ScramKeys", "salt iterations stored_key server_key")
ScramKeys.__doc__ = "SCRAM server secrets (RFC 5802 §3): salt, i, StoredKey, ServerKey."


def saslprep(text: str) -> str:
    """SASLprep-lite: RFC 4013 §2.1 mapping (B.1 characters map to nothing,
    C.1.2 spaces to " ") plus §2.2 NFKC normalisation.  protocols/sasl.py and store/passwords.py
    both use this function, so stored SCRAM keys and logins always agree.

    DEVIATION(RFC 4013 §2.3, §2.4, §2.5): the prohibited-output, bidi and
    unassigned-code-point checks are not done, and NFKC uses the running
    Python's Unicode version instead of Unicode 3.2.  A string a full
    SASLprep would reject is hashed as mapped here; strings it accepts map
    to the same result, so clients with a full SASLprep still interoperate.
    """
    mapped = []
    for ch in text:
        if stringprep.in_table_b1(ch):
            continue
        if stringprep.in_table_c12(ch):
            ch = " "
        mapped.append(ch)
    return unicodedata.normalize("NFKC", "".join(mapped))


def scram_keys(password: str, salt: Optional[bytes] = None,
               iterations: int = SCRAM_ITERATIONS) -> ScramKeys:
    """RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i) (PBKDF2, §2.2);
    ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
    ServerKey = HMAC(SaltedPassword, "Server Key"); H = SHA-256 (RFC 7677 §3)."""
    salt = os.urandom(SCRAM_SALT_LEN) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt,
                                 iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return ScramKeys(salt, iterations, stored_key, server_key)
