"""A self-signed X.509 v3 server certificate (RFC 5280), and what we read back.

:func:`self_signed` builds what Debian's snakeoil certificate is: subject
and issuer CN = the host name, the host's DNS names (and IP addresses when
asked) in subjectAltName, not a CA, for TLS server authentication, signed
with the key it certifies (sha256WithRSAEncryption, or Ed25519 per RFC 8410
§6).  The clock is the caller's: ``now`` is passed in.

:func:`read_certificate` takes back the few fields the server checks before
it reuses a certificate it made (validity and names); it is no validator.

Left out: every extension but the five below, name constraints, policies,
paths; verification of other people's certificates is ``ssl``'s job.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Iterable, List, Tuple

from protocols.crypto import der, ed25519, rsa
from protocols.crypto.keys import PrivateKey

ID_CN = "2.5.4.3"                       # RFC 5280 §4.1.2.4, X.520 commonName
ID_SUBJECT_ALT_NAME = "2.5.29.17"       # RFC 5280 §4.2.1.6
ID_BASIC_CONSTRAINTS = "2.5.29.19"      # RFC 5280 §4.2.1.9
ID_KEY_USAGE = "2.5.29.15"              # RFC 5280 §4.2.1.3
ID_EXT_KEY_USAGE = "2.5.29.37"          # RFC 5280 §4.2.1.12
ID_SUBJECT_KEY_ID = "2.5.29.14"         # RFC 5280 §4.2.1.2
ID_KP_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
DIGITAL_SIGNATURE, KEY_ENCIPHERMENT = 0, 2      # KeyUsage bits, RFC 5280 §4.2.1.3
# RFC 5280 §4.1.2.2: a positive serial of at most 20 octets; 159 random bits stay positive and below that.
SERIAL_BITS = 159
# Clocks of clients run behind; the certificate is valid from an hour before it was made.
BACKDATE = datetime.timedelta(hours=1)
DEFAULT_DAYS = 3650         # Debian's make-ssl-cert: ten years for a snakeoil certificate
MAX_CN_LENGTH = 64          # RFC 5280 Appendix A.1: ub-common-name


class CertificateError(ValueError):
    """Not a certificate this module reads back; the message says why."""


def _name(common_name: str) -> bytes:
    """Name (RFC 5280 §4.1.2.4): one RDN with the CN, UTF8String (§4.1.2.6)."""
    cn = common_name[:MAX_CN_LENGTH]
    return der.sequence(der.set_of(der.sequence(der.oid(ID_CN), der.utf8(cn))))


def _extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    """Extension (RFC 5280 §4.1.2.9): extnID, critical (DEFAULT FALSE, left
    out when false: X.690 clause 11.5), extnValue as an OCTET STRING."""
    parts = [der.oid(oid)] + ([der.boolean(True)] if critical else []) + [der.octet_string(value)]
    return der.sequence(*parts)


def _alt_names(dns_names: Iterable[str], ips: Iterable[str]) -> bytes:
    """GeneralNames (RFC 5280 §4.2.1.6): dNSName [2] IA5String, iPAddress [7]
    the 4 or 16 octets, both IMPLICIT so primitive."""
    names = [der.context(2, name.encode("ascii"), constructed=False) for name in dns_names
             if name.isascii()]        # §4.2.1.6: IA5String; a U-label belongs there as its A-label
    names += [der.context(7, ipaddress.ip_address(ip).packed, constructed=False) for ip in ips]
    return der.sequence(*names)


def _signature_algorithm(key: PrivateKey) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return der.sequence(der.oid(ed25519.ID_ED25519))               # RFC 8410 §6: no parameters
    return der.sequence(der.oid(rsa.SHA256_WITH_RSA), der.null())      # RFC 8017 §A.2.4: NULL parameters


def self_signed(key: PrivateKey, host: str, now: datetime.datetime, days: int = DEFAULT_DAYS,
                dns_names: Iterable[str] = (), ips: Iterable[str] = (), serial: int = 0) -> bytes:
    """The DER of a certificate for ``host`` (and ``dns_names``, ``ips``)
    whose subject and issuer are CN=host, signed by ``key`` itself."""
    names = list(dict.fromkeys([host, *dns_names]))
    serial = serial or secrets.randbits(SERIAL_BITS) | 1 << (SERIAL_BITS - 1)
    spki = key.public.spki()
    key_id = hashlib.sha1(der.to_bits(der.children(der.read_all(spki))[1])).digest()  # RFC 5280 §4.2.1.2 method (1)
    extensions = [
        _extension(ID_BASIC_CONSTRAINTS, der.sequence(), critical=True),        # cA FALSE (DEFAULT)
        _extension(ID_KEY_USAGE, der.named_bits(*(
            [DIGITAL_SIGNATURE] if isinstance(key, ed25519.Ed25519PrivateKey)   # RFC 8410 §5
            else [DIGITAL_SIGNATURE, KEY_ENCIPHERMENT])), critical=True),
        _extension(ID_EXT_KEY_USAGE, der.sequence(der.oid(ID_KP_SERVER_AUTH))),
        _extension(ID_SUBJECT_ALT_NAME, _alt_names(names, ips)),
        _extension(ID_SUBJECT_KEY_ID, der.octet_string(key_id)),
    ]
    now = now.astimezone(datetime.timezone.utc).replace(microsecond=0)
    tbs = der.sequence(
        der.context(0, der.integer(2)),                 # version v3 (RFC 5280 §4.1.2.1)
        der.integer(serial),                            # RFC 5280 §4.1.2.2
        _signature_algorithm(key),                      # RFC 5280 §4.1.2.3: the same as signatureAlgorithm
        _name(host),                                    # issuer (RFC 5280 §4.1.2.4)
        der.sequence(der.validity_time(now - BACKDATE),
                     der.validity_time(now + datetime.timedelta(days=days))),     # RFC 5280 §4.1.2.5
        _name(host),                                    # subject (RFC 5280 §4.1.2.6): self-issued
        spki,                                           # RFC 5280 §4.1.2.7
        der.context(3, der.sequence(*extensions)),      # RFC 5280 §4.1.2.9
    )
    # RFC 5280 §4.1.1.3: the signature over the DER of tbsCertificate
    return der.sequence(tbs, _signature_algorithm(key), der.bit_string(key.sign(tbs)))


def pem(certificate: bytes) -> bytes:
    return der.pem("CERTIFICATE", certificate)


def fingerprint(certificate: bytes) -> str:
    """SHA-256 of the DER, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(certificate).digest())


@dataclass(frozen=True)
class CertificateInfo:
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: Tuple[str, ...]
    spki: bytes                 # the DER of subjectPublicKeyInfo, to match a key


def read_certificate(certificate: bytes) -> CertificateInfo:
    """Validity, DNS names and public key of a certificate (RFC 5280 §4.1)."""
    try:
        tbs = der.children(der.children(der.read_all(certificate))[0])
        if tbs and tbs[0].tag == der.CONTEXT | der.CONSTRUCTED:
            tbs = tbs[1:]                               # version [0]
        validity = der.children(tbs[3])
        info = CertificateInfo(der.to_time(validity[0]), der.to_time(validity[1]),
                               tuple(_read_dns_names(tbs[6:])),
                               der.tlv(tbs[5].tag, tbs[5].value))
    except (ValueError, IndexError) as e:
        raise CertificateError(f"not a readable certificate: {e or 'malformed'}") from None
    return info


def _read_dns_names(rest: List[der.Tlv]) -> List[str]:
    """The dNSNames of subjectAltName in the extensions [3] (RFC 5280 §4.2.1.6)."""
    for item in rest:
        if item.tag != der.CONTEXT | der.CONSTRUCTED | 3:
            continue
        for ext in der.children(der.read_all(item.value)):
            fields = der.children(ext)
            if der.to_oid(fields[0]) == ID_SUBJECT_ALT_NAME:
                names = der.children(der.read_all(der.expect(fields[-1], der.OCTET_STRING).value))
                return [n.value.decode("ascii", "replace") for n in names if n.tag == der.CONTEXT | 2]
    return []
