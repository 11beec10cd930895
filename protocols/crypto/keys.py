"""Reading key files: PKCS#8 (RFC 5958), traditional RSA, and public keys.

One entry point per direction, whatever made the file (mailsrv, ``openssl
genpkey -algorithm RSA|ed25519``, ``openssl genrsa`` of OpenSSL 1.x):

- :func:`load_private_key`: a PEM ``PRIVATE KEY`` (OneAsymmetricKey,
  RFC 5958 §2; RFC 7468 §10) holding rsaEncryption or id-Ed25519, or a
  ``RSA PRIVATE KEY`` (RSAPrivateKey, RFC 8017 §A.1.2);
- :func:`load_public_key`: a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo,
  RFC 7468 §13) or ``RSA PUBLIC KEY``, or the DER of a SubjectPublicKeyInfo
  (what a DKIM key record's p= holds, RFC 6376 §3.6.1).

Encrypted keys (RFC 5958 §3) are refused with a one-line reason.  Errors are
:class:`KeyFileError`, a ValueError, with a message fit for a log line.
"""

from __future__ import annotations

from typing import Union

from protocols.crypto import der, ed25519, rsa

PrivateKey = Union[rsa.RsaPrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[rsa.RsaPublicKey, ed25519.Ed25519PublicKey]


class KeyFileError(ValueError):
    """Not a key this module reads; the message says why in one line."""


def load_private_key(pem_text: bytes) -> PrivateKey:
    try:
        label, body = der.pem_block(pem_text, "PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
        if label == "ENCRYPTED PRIVATE KEY":
            raise KeyFileError("the private key is encrypted (RFC 5958 §3); store it without a passphrase")
        if label == "RSA PRIVATE KEY":
            return rsa.private_from_der(body)
        return private_from_pkcs8(body)
    except KeyFileError:
        raise
    except (ValueError, IndexError) as e:       # DerError, RsaError, Ed25519Error, a short SEQUENCE
        raise KeyFileError(f"not a readable private key: {e or 'malformed'}") from None


def private_from_pkcs8(body: bytes) -> PrivateKey:
    """OneAsymmetricKey (RFC 5958 §2): version 0 or 1, the algorithm, the key."""
    fields = der.children(der.read_all(body))
    if len(fields) < 3 or der.to_int(fields[0]) not in (0, 1):
        raise KeyFileError("PKCS#8: expected version, algorithm and key")
    algorithm = der.to_oid(der.children(fields[1])[0])
    private = der.expect(fields[2], der.OCTET_STRING).value
    if algorithm == rsa.RSA_ENCRYPTION:
        return rsa.private_from_der(private)
    if algorithm == ed25519.ID_ED25519:
        return ed25519.private_from_pkcs8_value(private)
    raise KeyFileError(f"PKCS#8: key algorithm {algorithm} is neither RSA nor Ed25519")


def load_public_key(data: bytes) -> PublicKey:
    try:
        if b"-----BEGIN" in data:
            label, body = der.pem_block(data, "PUBLIC KEY", "RSA PUBLIC KEY")
            if label == "RSA PUBLIC KEY":
                return rsa.public_from_der(body)
            data = body
        return public_from_spki(data)
    except KeyFileError:
        raise
    except (ValueError, IndexError) as e:
        raise KeyFileError(f"not a readable public key: {e or 'malformed'}") from None


def public_from_spki(body: bytes) -> PublicKey:
    """SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an RSA or Ed25519 key."""
    fields = der.children(der.read_all(body))
    if len(fields) != 2:
        raise KeyFileError("SubjectPublicKeyInfo: expected algorithm and key")
    algorithm, key = fields
    oid = der.to_oid(der.children(algorithm)[0])
    bits = der.to_bits(key)
    if oid == rsa.RSA_ENCRYPTION:
        return rsa.public_from_der(bits)
    if oid == ed25519.ID_ED25519:
        if ed25519.decode_point(bits) is None:
            raise KeyFileError("Ed25519 public key: not a point of the curve")
        return ed25519.Ed25519PublicKey(bits)
    raise KeyFileError(f"public key algorithm {oid} is neither RSA nor Ed25519")
