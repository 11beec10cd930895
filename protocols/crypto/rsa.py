"""RSA (RFC 8017): keys, RSASSA-PKCS1-v1_5 with SHA-256, and their DER forms.

- Key generation: two primes of half the modulus size each, from
  ``secrets``, sieved by the small primes and then Miller-Rabin tested
  (FIPS 186-4 Appendix B.3.1 and C.3); e = 65537; the CRT parameters of
  RFC 8017 §3.2.
- RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) with EMSA-PKCS1-v1_5 and SHA-256 (§9.2):
  what DKIM's rsa-sha256 (RFC 6376) and X.509's sha256WithRSAEncryption use.
  Verification builds the expected encoded message and compares it whole
  (RFC 8017 §8.2.2 step 4), never parsing the padding (the way Bleichenbacher's
  2006 forgery gets in).
- Key syntax: RSAPublicKey / RSAPrivateKey (RFC 8017 §A.1), wrapped in
  PKCS#8 (RFC 5958 §2) and SubjectPublicKeyInfo (RFC 5280 §4.1.2.7).

Left out: encryption (RSAES), PSS, multi-prime keys (read as an error).
Python's integers are not constant-time: see the package docstring.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Callable

from protocols.crypto import der

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"         # RFC 8017 §A.1 rsaEncryption
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"       # RFC 8017 §A.2.4 sha256WithRSAEncryption
# RFC 8017 §9.2 Note 1: the DER of DigestInfo for SHA-256, before the hash.
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
PUBLIC_EXPONENT = 65537      # FIPS 186-4 B.3.1: 2**16 < e < 2**256; the usual choice
DEFAULT_BITS = 2048          # NIST SP 800-57 Part 1 Table 2: 112-bit security through 2030
MIN_BITS = 512               # below this the DER of a SHA-256 DigestInfo does not fit (§9.2 step 3)
# Odd primes below this divide a candidate before Miller-Rabin is tried: a
# 1024-bit candidate survives the sieve about 1 time in 8 (Mertens), and each
# survivor costs a modular exponentiation.
SIEVE_LIMIT = 2000
_SMALL_PRIMES = [p for p in range(3, SIEVE_LIMIT) if all(p % d for d in range(3, math.isqrt(p) + 1, 2))]
_HALF = {p: (p + 1) // 2 for p in _SMALL_PRIMES}       # the inverse of 2 modulo p
# How far a sieved window reaches from its random start before a new start
# (the gap between 1024-bit primes is about 710 on average, so this is rarely hit).
SIEVE_WINDOW = 4096


class RsaError(ValueError):
    """A key that is not a usable RSA key, or a message too long for it."""


@dataclass(frozen=True)
class RsaPublicKey:
    n: int
    e: int

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    def der(self) -> bytes:
        """RSAPublicKey (RFC 8017 §A.1.1)."""
        return der.sequence(der.integer(self.n), der.integer(self.e))

    def spki(self) -> bytes:
        """SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), rsaEncryption with NULL parameters (RFC 8017 §A.1)."""
        return der.sequence(der.sequence(der.oid(RSA_ENCRYPTION), der.null()), der.bit_string(self.der()))

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify_sha256(self, message, signature)


@dataclass(frozen=True, repr=False)
class RsaPrivateKey:
    n: int
    e: int
    d: int
    p: int
    q: int
    dp: int
    dq: int
    qinv: int

    def __repr__(self) -> str:          # never the secret numbers in a log
        return f"RsaPrivateKey({self.n.bit_length()} bits)"

    @property
    def public(self) -> RsaPublicKey:
        return RsaPublicKey(self.n, self.e)

    def der(self) -> bytes:
        """RSAPrivateKey (RFC 8017 §A.1.2), version 0 (two primes)."""
        return der.sequence(*(der.integer(v) for v in (0, self.n, self.e, self.d, self.p, self.q,
                                                        self.dp, self.dq, self.qinv)))

    def pkcs8(self) -> bytes:
        """OneAsymmetricKey version 0 (RFC 5958 §2), i.e. PKCS#8's PrivateKeyInfo."""
        algorithm = der.sequence(der.oid(RSA_ENCRYPTION), der.null())
        return der.sequence(der.integer(0), algorithm, der.octet_string(self.der()))

    def pem(self) -> bytes:
        return der.pem("PRIVATE KEY", self.pkcs8())

    def sign(self, message: bytes) -> bytes:
        return sign_sha256(self, message)


# -- key generation ------------------------------------------------------------

def miller_rabin_rounds(bits: int) -> int:
    """FIPS 186-4 Table C.3 (error probability at most 2**-100 for a prime of
    this size): 1024-bit primes 5 rounds, 1536-bit 4; 7 below 1024 bits."""
    if bits >= 1536:
        return 4
    if bits >= 1024:
        return 5
    return 7 if bits >= 512 else 40


def is_probable_prime(n: int, rounds: int, randbelow: Callable[[int], int] = secrets.randbelow) -> bool:
    """Miller-Rabin (FIPS 186-4 C.3.1) with ``rounds`` random bases."""
    if n < 4:
        return n in (2, 3)
    if n % 2 == 0:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(2 + randbelow(n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def random_prime(bits: int, e: int = PUBLIC_EXPONENT, randbits: Callable[[int], int] = secrets.randbits) -> int:
    """A prime of exactly ``bits`` bits with its top two bits set, so the
    product of two is exactly twice as long (FIPS 186-4 B.3.1 step 4.4 asks
    p >= sqrt(2) * 2**(bits-1)), and with gcd(e, p - 1) = 1.

    A random odd start, then the odd numbers after it that the sieve of
    small primes leaves: a candidate a small prime divides costs no
    exponentiation."""
    rounds = miller_rabin_rounds(bits)
    while True:
        start = randbits(bits) | (3 << (bits - 2)) | 1
        for i in _sieve(start):
            n = start + 2 * i
            if n.bit_length() != bits:
                break
            if math.gcd(e, n - 1) == 1 and is_probable_prime(n, rounds):
                return n


def _sieve(start: int):
    """The indexes i below SIEVE_WINDOW // 2 for which start + 2*i has no
    odd prime factor below SIEVE_LIMIT (start odd): each small prime p
    crosses out every p-th index from the first it divides."""
    size = SIEVE_WINDOW // 2
    alive = bytearray([1]) * size
    for p in _SMALL_PRIMES:
        first = (-start) * _HALF[p] % p           # start + 2*i == 0 (mod p)
        alive[first::p] = bytes(len(range(first, size, p)))
    return (i for i in range(size) if alive[i])


def generate(bits: int = DEFAULT_BITS, e: int = PUBLIC_EXPONENT,
             randbits: Callable[[int], int] = secrets.randbits) -> RsaPrivateKey:
    """A new key of ``bits`` bits (RFC 8017 §3.2's first representation plus CRT)."""
    if bits < MIN_BITS or bits % 2:
        raise RsaError(f"RSA key size {bits}: give an even number of bits, at least {MIN_BITS}")
    half = bits // 2
    while True:
        p, q = random_prime(half, e, randbits), random_prime(half, e, randbits)
        # FIPS 186-4 B.3.1 step 5.4: |p - q| > 2**(bits/2 - 100)
        if abs(p - q) > 1 << (half - 100):
            break
    return from_primes(p, q, e)


def from_primes(p: int, q: int, e: int = PUBLIC_EXPONENT) -> RsaPrivateKey:
    if p < q:
        p, q = q, p                 # qInv = q^-1 mod p with p > q, as OpenSSL writes it
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    d = pow(e, -1, lam)             # RFC 8017 §3.2: e * d == 1 (mod lambda(n))
    return RsaPrivateKey(p * q, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))


# -- signatures ---------------------------------------------------------------

def emsa_pkcs1_v15_sha256(message: bytes, em_len: int) -> bytes:
    """RFC 8017 §9.2: 0x00 0x01 PS 0x00 T, T the DigestInfo of SHA-256(M)."""
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    if em_len < len(t) + 11:
        raise RsaError("intended encoded message length too short (RFC 8017 §9.2 step 3)")
    return b"\x00\x01" + b"\xff" * (em_len - len(t) - 3) + b"\x00" + t


def _rsasp1(key: RsaPrivateKey, m: int) -> int:
    """RFC 8017 §5.2.1, the CRT form (2.b), checked against the public
    operation so a fault in the arithmetic never leaks a factor."""
    s1, s2 = pow(m, key.dp, key.p), pow(m, key.dq, key.q)
    h = (s1 - s2) * key.qinv % key.p
    s = s2 + key.q * h
    if pow(s, key.e, key.n) != m:
        raise RsaError("RSA signature self-check failed (a faulty key or arithmetic)")
    return s


def sign_sha256(key: RsaPrivateKey, message: bytes) -> bytes:
    """RSASSA-PKCS1-V1_5-SIGN (RFC 8017 §8.2.1) with SHA-256."""
    k = (key.n.bit_length() + 7) // 8
    m = int.from_bytes(emsa_pkcs1_v15_sha256(message, k), "big")      # OS2IP, §4.2
    return _rsasp1(key, m).to_bytes(k, "big")                          # I2OSP, §4.1


def verify_sha256(key: RsaPublicKey, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-V1_5-VERIFY (RFC 8017 §8.2.2) with SHA-256: False for a
    wrong signature or one of the wrong length, never an exception."""
    k = (key.n.bit_length() + 7) // 8
    if len(signature) != k:
        return False                                # step 1
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False                                # §5.2.2 step 1
    em = pow(s, key.e, key.n).to_bytes(k, "big")    # RSAVP1 and I2OSP, step 2
    try:
        expected = emsa_pkcs1_v15_sha256(message, k)    # step 3
    except RsaError:
        return False
    return hmac.compare_digest(em, expected)            # step 4, the whole octet string


# -- reading keys --------------------------------------------------------------

def public_from_der(rsa_public_key: bytes) -> RsaPublicKey:
    """RSAPublicKey (RFC 8017 §A.1.1)."""
    fields = der.children(der.read_all(rsa_public_key))
    if len(fields) != 2:
        raise RsaError("RSAPublicKey: expected modulus and exponent")
    n, e = (der.to_int(f) for f in fields)
    if n < 3 or n % 2 == 0 or e < 3 or e % 2 == 0 or e >= n:
        raise RsaError("RSAPublicKey: not a usable modulus and exponent")
    return RsaPublicKey(n, e)


def private_from_der(rsa_private_key: bytes) -> RsaPrivateKey:
    """RSAPrivateKey (RFC 8017 §A.1.2), checked for consistency: a damaged
    key file is refused here rather than signing garbage."""
    fields = der.children(der.read_all(rsa_private_key))
    if len(fields) != 9 or der.to_int(fields[0]) != 0:
        raise RsaError("RSAPrivateKey: not a two-prime key of version 0")
    n, e, d, p, q, dp, dq, qinv = (der.to_int(f) for f in fields[1:])
    if (p * q != n or p < 3 or q < 3 or dp != d % (p - 1) or dq != d % (q - 1)
            or qinv * q % p != 1 or pow(pow(2, e, p), dp, p) != 2 or pow(pow(2, e, q), dq, q) != 2):
        # (the last two: e and d undo each other, checked modulo each prime, a quarter of the cost mod n)
        raise RsaError("RSAPrivateKey: its numbers do not belong together (damaged key)")
    return RsaPrivateKey(n, e, d, p, q, dp, dq, qinv)
