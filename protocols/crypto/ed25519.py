"""Ed25519 (RFC 8032 §5.1): keys, signatures, and their key files (RFC 8410).

Points are kept in extended homogeneous coordinates (X, Y, Z, T) with
x = X/Z, y = Y/Z, x*y = T/Z (RFC 8032 §5.1.4), so an addition needs no
inversion; scalar multiplication is double-and-add.  In CPython about 7 ms
to sign and 10 ms to verify (tests/bench_crypto.py): enough for DKIM's
ed25519-sha256 (RFC 8463), not for bulk.  Not constant-time (see the
package docstring).

Key files: the public key as SubjectPublicKeyInfo (RFC 8410 §4) and the
private key, its 32-octet seed, as PKCS#8 (RFC 8410 §7), as
``openssl genpkey -algorithm ed25519`` writes them.

Left out: Ed25519ph and Ed25519ctx (RFC 8032 §5.1 with a context or
prehash), Ed448.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Optional, Tuple

from protocols.crypto import der

ID_ED25519 = "1.3.101.112"          # RFC 8410 §3

P = 2 ** 255 - 19                                           # RFC 8032 §5.1: the field
D = -121665 * pow(121666, P - 2, P) % P                     # the curve constant d
L = 2 ** 252 + 27742317777372353535851937790883648493       # the group order
SQRT_M1 = pow(2, (P - 1) // 4, P)                           # a square root of -1 (§5.1.3 step 3)

Point = Tuple[int, int, int, int]
NEUTRAL: Point = (0, 1, 1, 0)


class Ed25519Error(ValueError):
    """A key of the wrong size or a point not on the curve."""


def _add(a: Point, b: Point) -> Point:
    """RFC 8032 §5.1.4: the addition formulas of Hisil et al. (a = -1)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(a: Point) -> Point:
    """RFC 8032 §5.1.4: doubling, cheaper than adding a point to itself."""
    x1, y1, z1, _t = a
    aa, bb = x1 * x1 % P, y1 * y1 % P
    cc = 2 * z1 * z1 % P
    h = aa + bb
    e = h - (x1 + y1) * (x1 + y1)
    g = aa - bb
    f = cc + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s: int, point: Point) -> Point:
    out = NEUTRAL
    for bit in bin(s)[2:]:
        out = _double(out)
        if bit == "1":
            out = _add(out, point)
    return out


def _equal(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y: int, sign: int) -> Optional[int]:
    """RFC 8032 §5.1.3 steps 2-4: x from y and the sign bit, or None."""
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 == (-u) % P:
        x = x * SQRT_M1 % P
    elif vx2 != u:
        return None
    if x == 0 and sign:
        return None
    return P - x if x & 1 != sign else x


def encode_point(point: Point) -> bytes:
    """RFC 8032 §5.1.2: y little-endian, the low bit of x in the top bit."""
    zinv = pow(point[2], P - 2, P)
    x, y = point[0] * zinv % P, point[1] * zinv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decode_point(data: bytes) -> Optional[Point]:
    """RFC 8032 §5.1.3; None when ``data`` is no point of the curve."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
BASE: Point = (_GX, _GY, 1, _GX * _GY % P)                   # RFC 8032 §5.1: B


def _hash_int(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def _expand(seed: bytes) -> Tuple[int, bytes]:
    """RFC 8032 §5.1.5 steps 1-3: the secret scalar s and the prefix."""
    if len(seed) != 32:
        raise Ed25519Error(f"an Ed25519 private key is 32 octets, not {len(seed)}")
    h = hashlib.sha512(seed).digest()
    s = int.from_bytes(h[:32], "little")
    s = (s & ((1 << 254) - 8)) | (1 << 254)          # clear the 3 low bits and the top one, set bit 254
    return s, h[32:]


@dataclass(frozen=True)
class Ed25519PublicKey:
    raw: bytes          # the 32-octet encoded point A

    def spki(self) -> bytes:
        """SubjectPublicKeyInfo (RFC 8410 §4): the algorithm without parameters (§3)."""
        return der.sequence(der.sequence(der.oid(ID_ED25519)), der.bit_string(self.raw))

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(self.raw, message, signature)


@dataclass(frozen=True, repr=False)
class Ed25519PrivateKey:
    seed: bytes         # the 32 random octets of RFC 8032 §5.1.5

    def __repr__(self) -> str:
        return "Ed25519PrivateKey()"

    @property
    def public(self) -> Ed25519PublicKey:
        return Ed25519PublicKey(public_key(self.seed))

    def pkcs8(self) -> bytes:
        """OneAsymmetricKey version 0 (RFC 8410 §7): CurvePrivateKey, an OCTET
        STRING of the seed, inside the privateKey OCTET STRING."""
        return der.sequence(der.integer(0), der.sequence(der.oid(ID_ED25519)),
                            der.octet_string(der.octet_string(self.seed)))

    def pem(self) -> bytes:
        return der.pem("PRIVATE KEY", self.pkcs8())

    def sign(self, message: bytes) -> bytes:
        return sign(self.seed, message)


def generate() -> Ed25519PrivateKey:
    """RFC 8032 §5.1.5: 32 octets of cryptographically secure random data."""
    return Ed25519PrivateKey(secrets.token_bytes(32))


def public_key(seed: bytes) -> bytes:
    """RFC 8032 §5.1.5 step 4: A = [s]B, encoded."""
    return encode_point(_mul(_expand(seed)[0], BASE))


def sign(seed: bytes, message: bytes) -> bytes:
    """RFC 8032 §5.1.6: R || S, 64 octets."""
    s, prefix = _expand(seed)
    a = encode_point(_mul(s, BASE))
    r = _hash_int(prefix, message) % L                       # step 2
    r_enc = encode_point(_mul(r, BASE))                      # step 3
    k = _hash_int(r_enc, a, message) % L                     # step 4
    return r_enc + ((r + k * s) % L).to_bytes(32, "little")  # steps 5-6


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 §5.1.7, with the cofactorless equation [S]B = R + [k]A that
    step 3 allows; False for anything malformed, never an exception."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = decode_point(public), decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:                     # step 1: S must be below L
        return False
    k = _hash_int(signature[:32], public, message) % L       # step 2
    return _equal(_mul(s, BASE), _add(r, _mul(k, a)))        # step 3


def private_from_pkcs8_value(private_key: bytes) -> Ed25519PrivateKey:
    """The privateKey field of RFC 8410 §7: CurvePrivateKey ::= OCTET STRING."""
    seed = der.read_all(private_key)
    der.expect(seed, der.OCTET_STRING)
    if len(seed.value) != 32:
        raise Ed25519Error(f"an Ed25519 private key is 32 octets, not {len(seed.value)}")
    return Ed25519PrivateKey(seed.value)
