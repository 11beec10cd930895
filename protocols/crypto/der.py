"""DER (ITU-T X.690) for the ASN.1 that keys and certificates use, and PEM (RFC 7468).

Encoding: each function returns one complete TLV (tag, length, value) as
bytes; constructed values take the encodings of their members.  Decoding:
:func:`read` takes one TLV off the front of the input and returns a
:class:`Tlv` and the rest; :func:`children` splits a constructed value into
its members.  Only DER is accepted (X.690 clause 10: definite, minimal lengths;
clause 8.3.2: minimal INTEGERs); anything else raises :class:`DerError`, one line
saying what is wrong.

Left out: REAL, tags above 30 (the high-tag-number form of X.690 clause 8.1.2.4),
BER's indefinite lengths, and every string type but the three X.509 names use.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass
from typing import List, Tuple

# Universal tags (X.690 clause 8, X.680 clause 8.4 Table 1).
INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 0x02, 0x03, 0x04, 0x05, 0x06
UTF8_STRING, PRINTABLE_STRING, IA5_STRING = 0x0C, 0x13, 0x16
UTC_TIME, GENERALIZED_TIME, BOOLEAN = 0x17, 0x18, 0x01
SEQUENCE, SET = 0x30, 0x31          # with the constructed bit (X.690 clause 8.1.2.5)
CONTEXT, CONSTRUCTED = 0x80, 0x20   # class bits of a context-specific tag (X.690 clause 8.1.2.2)

# Nothing here is larger than a 16384-bit RSA key or a certificate chain of a
# few kilobytes; a length field of more than 4 octets is never one of ours.
MAX_LENGTH_OCTETS = 4


class DerError(ValueError):
    """The input is not the DER this module reads; the message says where."""


# -- encoding ----------------------------------------------------------------

def _length(n: int) -> bytes:
    """X.690 clause 8.1.3: short form below 128, else the long form's minimal octets (X.690 clause 10.1)."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def integer(n: int) -> bytes:
    """X.690 clause 8.3: two's complement, big-endian, in the fewest octets."""
    size = (n if n >= 0 else ~n).bit_length() // 8 + 1      # room for the sign bit
    return tlv(INTEGER, n.to_bytes(size, "big", signed=True))


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")     # X.690 clause 11.1: TRUE is all ones


def bit_string(data: bytes, unused: int = 0) -> bytes:
    """X.690 clause 8.6: the first octet counts the unused bits of the last."""
    return tlv(BIT_STRING, bytes([unused]) + data)


def named_bits(*bits: int) -> bytes:
    """A BIT STRING of named bits (X.680 clause 22.7, bit 0 the leftmost), without
    its trailing zero bits (X.690 clause 11.2.2), as keyUsage wants it."""
    size = max(bits) // 8 + 1
    value = 0
    for b in bits:
        value |= 1 << (size * 8 - 1 - b)
    unused = (value & -value).bit_length() - 1
    return bit_string(value.to_bytes(size, "big"), unused)


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, data)


def null() -> bytes:
    return b"\x05\x00"


def oid(dotted: str) -> bytes:
    """X.690 clause 8.19: the first two arcs in one subidentifier, base-128 digits."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for sub in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [sub & 0x7F]
        sub >>= 7
        while sub:
            chunk.append(0x80 | (sub & 0x7F))
            sub >>= 7
        out += bytes(reversed(chunk))
    return tlv(OID, bytes(out))


def sequence(*members: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(members))


def set_of(*members: bytes) -> bytes:
    """X.690 clause 11.6: the members of a SET OF in the order of their encodings."""
    return tlv(SET, b"".join(sorted(members)))


def utf8(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def printable(text: str) -> bytes:
    return tlv(PRINTABLE_STRING, text.encode("ascii"))


def ia5(text: str) -> bytes:
    return tlv(IA5_STRING, text.encode("ascii"))


def context(number: int, value: bytes, constructed: bool = True) -> bytes:
    """A context-specific tag [number] around ``value`` (X.690 clause 8.14: an
    EXPLICIT tag is constructed and holds a whole TLV; an IMPLICIT one
    replaces the tag of a primitive value, and gets its content)."""
    return tlv(CONTEXT | (CONSTRUCTED if constructed else 0) | number, value)


def validity_time(when: datetime.datetime) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050,
    in UTC with seconds and a Z (X.690 clauses 11.7 and 11.8)."""
    when = when.astimezone(datetime.timezone.utc)
    if when.year < 2050:
        return tlv(UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(GENERALIZED_TIME, when.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


# -- decoding ----------------------------------------------------------------

@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & CONSTRUCTED)


def read(data: bytes) -> Tuple[Tlv, bytes]:
    """One TLV off the front of ``data``, and what follows it."""
    if len(data) < 2:
        raise DerError("truncated: no tag and length")
    tag, first = data[0], data[1]
    if tag & 0x1F == 0x1F:
        raise DerError(f"tag 0x{tag:02x}: high tag numbers are not used here")
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length is BER, not DER (X.690 clause 10.1)")
        if count > MAX_LENGTH_OCTETS or len(data) < 2 + count:
            raise DerError("length field too long or truncated")
        length, start = int.from_bytes(data[2:2 + count], "big"), 2 + count
        if length < 0x80 or data[2] == 0:
            raise DerError("length not in its shortest form (X.690 clause 10.1)")
    if len(data) < start + length:
        raise DerError(f"truncated: tag 0x{tag:02x} wants {length} octets, {len(data) - start} left")
    return Tlv(tag, bytes(data[start:start + length])), bytes(data[start + length:])


def read_all(data: bytes) -> Tlv:
    """Exactly one TLV, nothing after it."""
    item, rest = read(data)
    if rest:
        raise DerError(f"{len(rest)} octets after the end")
    return item


def children(item: Tlv, tag: int = SEQUENCE) -> List[Tlv]:
    """The members of a constructed value whose tag must be ``tag``."""
    expect(item, tag)
    out, rest = [], item.value
    while rest:
        member, rest = read(rest)
        out.append(member)
    return out


def expect(item: Tlv, tag: int) -> Tlv:
    if item.tag != tag:
        raise DerError(f"expected tag 0x{tag:02x}, found 0x{item.tag:02x}")
    return item


def to_int(item: Tlv) -> int:
    v = expect(item, INTEGER).value
    if not v:
        raise DerError("empty INTEGER")
    if len(v) > 1 and (v[0] == 0 and v[1] < 0x80 or v[0] == 0xFF and v[1] >= 0x80):
        raise DerError("INTEGER not in its shortest form (X.690 clause 8.3.2)")
    return int.from_bytes(v, "big", signed=True)


def to_bits(item: Tlv) -> bytes:
    """The content of a BIT STRING with no unused bits (keys and signatures)."""
    v = expect(item, BIT_STRING).value
    if not v or v[0] != 0:
        raise DerError("BIT STRING with unused bits where whole octets are expected")
    return v[1:]


def to_oid(item: Tlv) -> str:
    v = expect(item, OID).value
    if not v or v[-1] & 0x80:
        raise DerError("malformed OBJECT IDENTIFIER")
    arcs, sub = [], 0
    for i, octet in enumerate(v):
        if sub == 0 and octet == 0x80:
            raise DerError("OBJECT IDENTIFIER subidentifier with a leading 0x80 (X.690 clause 8.19.2)")
        sub = (sub << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(sub)
            sub = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first] + arcs[1:])


def to_time(item: Tlv) -> datetime.datetime:
    """A UTCTime or GeneralizedTime of RFC 5280 §4.1.2.5's form, as aware UTC."""
    text = item.value.decode("ascii", "replace")
    if item.tag == UTC_TIME and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]     # RFC 5280 §4.1.2.5.1
    elif not (item.tag == GENERALIZED_TIME and re.fullmatch(r"\d{14}Z", text)):
        raise DerError(f"not an RFC 5280 time: {text!r}")
    return datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


# -- PEM (RFC 7468) -------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def pem(label: str, der_bytes: bytes) -> bytes:
    """RFC 7468 §2: the strict form, base64 in lines of 64 characters."""
    b64 = base64.b64encode(der_bytes)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    head, tail = f"-----BEGIN {label}-----\n", f"-----END {label}-----\n"
    return head.encode("ascii") + b"\n".join(lines) + b"\n" + tail.encode("ascii")


def pem_blocks(text: bytes) -> List[Tuple[str, bytes]]:
    """Every (label, DER) in ``text``; explanatory text around them is
    ignored (RFC 7468 §5.2), whitespace inside the base64 too (§3's lax form)."""
    out = []
    for m in _PEM.finditer(text):
        body = re.sub(rb"\s+", b"", m.group(2))
        try:
            out.append((m.group(1).decode("ascii"), base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError):
            raise DerError(f"bad base64 in the PEM block {m.group(1).decode('ascii')}") from None
    return out


def pem_block(text: bytes, *labels: str) -> Tuple[str, bytes]:
    """The first block with one of ``labels`` (RFC 7468 §4 names them)."""
    for label, body in pem_blocks(text):
        if label in labels:
            return label, body
    raise DerError("no PEM block " + " or ".join(labels))
