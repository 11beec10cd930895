"""The TLS-ALPN-01 challenge certificate (RFC 8737 §3).

A self-signed certificate for one DNS name whose critical acmeIdentifier
extension (id-pe-acmeIdentifier, RFC 8737 §6.1) holds the SHA-256 of the key
authorization (RFC 8555 §8.1) as an ``Authorization ::= OCTET STRING (SIZE
(32))``; the subjectAltName holds the name alone (§3: "exactly one"
dNSName).  The key is ECDSA P-256 (made in milliseconds), the signature
ecdsa-with-SHA256 (RFC 5758 §3.2), its value the DER SEQUENCE of r and s
(RFC 5480 §2.2's ECDSA-Sig-Value).  The CA checks the extension and
the name, never the signature chain.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets

from protocols.crypto import der, p256, x509

ID_PE_ACME_IDENTIFIER = "1.3.6.1.5.5.7.1.31"      # RFC 8737 §6.1
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"         # RFC 5758 §3.2: no parameters
ALPN_PROTOCOL = "acme-tls/1"                       # RFC 8737 §6.2
DAYS = 7                                           # ours: it lives for one validation


def challenge_certificate(key: p256.P256PrivateKey, name: str, key_authorization: str,
                          now: datetime.datetime) -> bytes:
    """The DER of the certificate RFC 8737 §3 asks for, for ``name``."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    algorithm = der.sequence(der.oid(ECDSA_WITH_SHA256))
    extensions = [
        x509._extension(x509.ID_SUBJECT_ALT_NAME, x509._alt_names([name], ())),
        x509._extension(ID_PE_ACME_IDENTIFIER, der.octet_string(digest), critical=True),   # RFC 8737 §3
    ]
    now = now.astimezone(datetime.timezone.utc).replace(microsecond=0)
    tbs = der.sequence(
        der.context(0, der.integer(2)),                                 # v3 (RFC 5280 §4.1.2.1)
        der.integer(secrets.randbits(x509.SERIAL_BITS) | 1 << (x509.SERIAL_BITS - 1)),
        algorithm,
        x509._name(name),
        der.sequence(der.validity_time(now - x509.BACKDATE), der.validity_time(now + datetime.timedelta(days=DAYS))),
        x509._name(name),
        key.public.spki(),
        der.context(3, der.sequence(*extensions)),
    )
    raw = key.sign(tbs)
    r, s = int.from_bytes(raw[:p256.SIZE], "big"), int.from_bytes(raw[p256.SIZE:], "big")
    return der.sequence(tbs, algorithm, der.bit_string(der.sequence(der.integer(r), der.integer(s))))
