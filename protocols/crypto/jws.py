"""JSON Web Signature (RFC 7515) as ACME uses it (RFC 8555 §6.2), with RS256 or ES256.

- base64url without padding (RFC 7515 §2, Appendix C);
- the JWK of an RSA public key (RFC 7518 §6.3.1) or a P-256 one (§6.2.1)
  and its thumbprint (RFC 7638 §3: the required members in lexicographic
  order, no white space, SHA-256);
- RS256 (RFC 7518 §3.3: RSASSA-PKCS1-v1_5 with SHA-256, protocols/crypto/rsa.py)
  or ES256 (RFC 7518 §3.4: ECDSA P-256 with SHA-256, r || s,
  protocols/crypto/p256.py) over
  ``ASCII(BASE64URL(protected) || '.' || BASE64URL(payload))`` (RFC 7515 §5.1 step 5);
- the flattened JSON serialization (RFC 7515 §7.2.2), the only one RFC 8555
  §6.2 allows.

Left out: every other algorithm, unprotected headers, the general serialization, verification of other people's JWS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Dict, Optional, Union

from protocols.crypto import p256, rsa

ALG_RS256 = "RS256"             # RFC 7518 §3.1
ALG_ES256 = "ES256"             # RFC 7518 §3.1
PublicKey = Union[rsa.RsaPublicKey, p256.P256PublicKey]
PrivateKey = Union[rsa.RsaPrivateKey, p256.P256PrivateKey]


def b64url(data: bytes) -> str:
    """RFC 7515 §2: base64url (RFC 4648 §5) with the trailing '=' removed."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The inverse (RFC 7515 Appendix C); ValueError on bad input."""
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint(n: int) -> str:
    """RFC 7518 §2 Base64urlUInt: big-endian, the fewest octets (one for zero)."""
    return b64url(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def jwk(key: PublicKey) -> Dict[str, str]:
    """The public JWK: kty, n, e (RFC 7518 §6.3.1) or kty, crv, x, y (§6.2.1,
    coordinates in full 32 octets, §6.2.1.2)."""
    if isinstance(key, p256.P256PublicKey):
        return {"crv": "P-256", "kty": "EC", "x": b64url(key.x.to_bytes(p256.SIZE, "big")),
                "y": b64url(key.y.to_bytes(p256.SIZE, "big"))}
    return {"e": _uint(key.e), "kty": "RSA", "n": _uint(key.n)}


def algorithm(key: PrivateKey) -> str:
    return ALG_ES256 if isinstance(key, p256.P256PrivateKey) else ALG_RS256


def canonical(obj: object) -> bytes:
    """JSON with sorted members and no white space (RFC 7638 §3.3)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 §3: base64url(SHA-256(the required members, in order))."""
    return b64url(hashlib.sha256(canonical(jwk(key))).digest())


def key_authorization(token: str, key: PublicKey) -> str:
    """RFC 8555 §8.1: token || '.' || base64url(Thumbprint(accountKey))."""
    return token + "." + thumbprint(key)


def sign_rs256(key: rsa.RsaPrivateKey, signing_input: bytes) -> str:
    """RFC 7518 §3.3, the signature base64url-encoded."""
    return b64url(key.sign(signing_input))


def flattened(key: PrivateKey, protected: Dict[str, object], payload: Optional[object]) -> bytes:
    """The flattened JWS JSON serialization (RFC 7515 §7.2.2) of ``payload``
    (a JSON value; None is RFC 8555 §6.3's POST-as-GET, an empty payload)
    under the ``protected`` header, signed RS256 or ES256 as the key is."""
    header = dict(protected, alg=algorithm(key))
    p64 = b64url(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    b64 = "" if payload is None else b64url(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    signature = b64url(key.sign((p64 + "." + b64).encode("ascii")))     # ES256: r || s (RFC 7518 §3.4)
    return json.dumps({"protected": p64, "payload": b64, "signature": signature}).encode("ascii")
