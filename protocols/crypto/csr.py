"""A PKCS#10 certification request (RFC 2986) for a TLS server certificate.

What ACME's finalize takes (RFC 8555 §7.4): subject CN = the first name,
every name as a dNSName in a subjectAltName extension requested through
the extensionRequest attribute (PKCS#9, RFC 2985 §5.4.2), signed with the
key being certified (sha256WithRSAEncryption, RFC 8017 §A.2.4; or Ed25519,
RFC 8410 §6).  ``openssl req -verify`` reads it.

Left out: challengePassword and every other attribute, subject fields but CN.
"""

from __future__ import annotations

from typing import Sequence

from protocols.crypto import der, x509
from protocols.crypto.keys import PrivateKey

ID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"      # RFC 2985 §5.4.2 pkcs-9-at-extensionRequest


def certification_request(key: PrivateKey, names: Sequence[str]) -> bytes:
    """The DER of a CertificationRequest (RFC 2986 §4) for ``names``."""
    if not names:
        raise ValueError("a certificate request needs at least one name")
    extensions = der.sequence(x509._extension(x509.ID_SUBJECT_ALT_NAME, x509._alt_names(names, ())))
    attribute = der.sequence(der.oid(ID_EXTENSION_REQUEST), der.set_of(extensions))   # RFC 2986 §4.1 Attribute
    info = der.sequence(
        der.integer(0),                         # version v1 (RFC 2986 §4.1)
        x509._name(names[0]),                   # subject
        key.public.spki(),                      # subjectPKInfo
        der.context(0, attribute),              # attributes [0] IMPLICIT SET OF Attribute
    )
    # RFC 2986 §4.2: the signature over the DER of certificationRequestInfo
    return der.sequence(info, x509._signature_algorithm(key), der.bit_string(key.sign(info)))


def pem(request: bytes) -> bytes:
    return der.pem("CERTIFICATE REQUEST", request)        # RFC 7468 §7
