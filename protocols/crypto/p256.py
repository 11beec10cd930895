"""ECDSA on NIST P-256 with SHA-256 (FIPS 186-4 clause 6, SEC 1), for ACME's ES256 account key.

- The curve y^2 = x^3 - 3x + b over GF(p) (FIPS 186-4 Appendix D.1.2.3;
  RFC 5480 §2.1.1.1 names it secp256r1 / prime256v1), points in Jacobian
  coordinates (x = X/Z^2, y = Y/Z^3), the point at infinity as Z = 0.
- Signatures with the nonce of RFC 6979 §3.2 (deterministic, HMAC-SHA-256):
  no random number per signature, so a weak one cannot give the key away;
  the value returned is r || s, 32 octets each, as JWS's ES256 wants it
  (RFC 7518 §3.4).  Verification (SEC 1 clause 4.1.4) for the tests.
- Key files: PKCS#8 (RFC 5208 / RFC 5958) around an ECPrivateKey (RFC 5915
  §3) with the public key, SubjectPublicKeyInfo with id-ecPublicKey and the
  named curve (RFC 5480 §2); ``openssl pkey`` reads them.

Left out: other curves, compressed points, the DER signature form of X.509
(ecdsa-with-SHA256 in certificates and CSRs: the certificate's key is RSA).
Python's integers are not constant-time: see the package docstring.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional, Tuple

from protocols.crypto import der

# FIPS 186-4 Appendix D.1.2.3, curve P-256
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"          # RFC 5480 §2.1.1
ID_PRIME256V1 = "1.2.840.10045.3.1.7"           # RFC 5480 §2.1.1.1 secp256r1
SIZE = 32                                       # octets of a coordinate, a scalar, r and s

Jacobian = Tuple[int, int, int]
_INFINITY: Jacobian = (1, 1, 0)


class P256Error(ValueError):
    """Not a P-256 key or point this module reads."""


def _double(pt: Jacobian) -> Jacobian:
    """Point doubling for a = -3 (Bernstein-Lange, dbl-2001-b)."""
    x, y, z = pt
    if z == 0 or y == 0:
        return _INFINITY
    delta, gamma = z * z % P, y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) ** 2 - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add(p1: Jacobian, p2: Jacobian) -> Jacobian:
    """Point addition in Jacobian coordinates (add-1998-cmo-2)."""
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    h, r = (u2 - u1) % P, (s2 - s1) % P
    if h == 0:
        return _double(p1) if r == 0 else _INFINITY
    hh = h * h % P
    hhh, v = h * hh % P, u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    return x3, y3, z1 * z2 * h % P


def multiply(k: int, point: Tuple[int, int] = (GX, GY)) -> Optional[Tuple[int, int]]:
    """k * point in affine coordinates (None: the point at infinity)."""
    acc, base = _INFINITY, (point[0], point[1], 1)
    for bit in bin(k % N)[2:]:
        acc = _double(acc)
        if bit == "1":
            acc = _add(acc, base)
    return _affine(acc)


def _affine(pt: Jacobian) -> Optional[Tuple[int, int]]:
    if pt[2] == 0:
        return None
    zinv = pow(pt[2], -1, P)
    zz = zinv * zinv % P
    return pt[0] * zz % P, pt[1] * zz * zinv % P


def _jacobian(point: Optional[Tuple[int, int]]) -> Jacobian:
    return _INFINITY if point is None else (point[0], point[1], 1)


def on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def _bits2int(data: bytes) -> int:
    """RFC 6979 §2.3.2 for a 256-bit group order: the leftmost 256 bits."""
    return int.from_bytes(data[:SIZE], "big")


def rfc6979_nonces(d: int, digest: bytes):
    """RFC 6979 §3.2 steps b to h with HMAC-SHA-256: the candidate nonces k."""
    x = d.to_bytes(SIZE, "big")
    h = (_bits2int(digest) % N).to_bytes(SIZE, "big")          # bits2octets (§2.3.4)
    v, k = b"\x01" * SIZE, b"\x00" * SIZE

    def mac(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()
    k = mac(k, v + b"\x00" + x + h)
    v = mac(k, v)
    k = mac(k, v + b"\x01" + x + h)
    v = mac(k, v)
    while True:
        v = mac(k, v)
        candidate = _bits2int(v)
        if 1 <= candidate < N:
            yield candidate
        k = mac(k, v + b"\x00")
        v = mac(k, v)


@dataclass(frozen=True)
class P256PublicKey:
    x: int
    y: int

    def point(self) -> bytes:
        """The uncompressed point (SEC 1 clause 2.3.3): 04 || X || Y."""
        return b"\x04" + self.x.to_bytes(SIZE, "big") + self.y.to_bytes(SIZE, "big")

    def spki(self) -> bytes:
        """SubjectPublicKeyInfo (RFC 5480 §2): id-ecPublicKey, namedCurve prime256v1."""
        return der.sequence(der.sequence(der.oid(ID_EC_PUBLIC_KEY), der.oid(ID_PRIME256V1)),
                            der.bit_string(self.point()))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """SEC 1 clause 4.1.4 on r || s (RFC 7518 §3.4); False, never an exception."""
        if len(signature) != 2 * SIZE:
            return False
        r, s = int.from_bytes(signature[:SIZE], "big"), int.from_bytes(signature[SIZE:], "big")
        if not (1 <= r < N and 1 <= s < N):
            return False
        e = _bits2int(hashlib.sha256(message).digest())
        w = pow(s, -1, N)
        pt = _affine(_add(_jacobian(multiply(e * w % N)), _jacobian(multiply(r * w % N, (self.x, self.y)))))
        return pt is not None and pt[0] % N == r


@dataclass(frozen=True, repr=False)
class P256PrivateKey:
    d: int

    def __repr__(self) -> str:          # never the secret in a log
        return "P256PrivateKey()"

    @property
    def public(self) -> P256PublicKey:
        return P256PublicKey(*multiply(self.d))

    def sign(self, message: bytes) -> bytes:
        """ECDSA (SEC 1 clause 4.1.3) with SHA-256 and RFC 6979's k: r || s."""
        digest = hashlib.sha256(message).digest()
        e = _bits2int(digest)
        for k in rfc6979_nonces(self.d, digest):
            r = multiply(k)[0] % N
            s = pow(k, -1, N) * (e + r * self.d) % N
            if r and s:
                return r.to_bytes(SIZE, "big") + s.to_bytes(SIZE, "big")
        raise AssertionError("unreachable")

    def pkcs8(self) -> bytes:
        """PrivateKeyInfo (RFC 5208 §5) around ECPrivateKey (RFC 5915 §3), version 1, with the public key."""
        ec_key = der.sequence(der.integer(1), der.octet_string(self.d.to_bytes(SIZE, "big")),
                              der.context(1, der.bit_string(self.public.point())))
        algorithm = der.sequence(der.oid(ID_EC_PUBLIC_KEY), der.oid(ID_PRIME256V1))
        return der.sequence(der.integer(0), algorithm, der.octet_string(ec_key))

    def pem(self) -> bytes:
        return der.pem("PRIVATE KEY", self.pkcs8())


def generate() -> P256PrivateKey:
    """A new key: d uniform in [1, n-1] from ``secrets`` (FIPS 186-4 B.4.2)."""
    return P256PrivateKey(1 + secrets.randbelow(N - 1))


def is_p256_pkcs8(body: bytes) -> bool:
    """Whether a PKCS#8 body holds an id-ecPublicKey key (of any curve)."""
    try:
        fields = der.children(der.read_all(body))
        return der.to_oid(der.children(fields[1])[0]) == ID_EC_PUBLIC_KEY
    except (ValueError, IndexError):
        return False


def private_from_pkcs8(body: bytes) -> P256PrivateKey:
    """The key of a PKCS#8 PrivateKeyInfo holding a P-256 ECPrivateKey."""
    try:
        fields = der.children(der.read_all(body))
        algorithm = der.children(fields[1])
        if der.to_oid(algorithm[0]) != ID_EC_PUBLIC_KEY or der.to_oid(algorithm[1]) != ID_PRIME256V1:
            raise P256Error("PKCS#8: not a P-256 (prime256v1) key")
        ec_key = der.children(der.read_all(der.expect(fields[2], der.OCTET_STRING).value))
        d = int.from_bytes(der.expect(ec_key[1], der.OCTET_STRING).value, "big")
    except P256Error:
        raise
    except (ValueError, IndexError) as e:
        raise P256Error("not a readable P-256 private key: %s" % (e or "malformed")) from None
    if not 1 <= d < N:
        raise P256Error("P-256 private key out of range")
    return P256PrivateKey(d)
