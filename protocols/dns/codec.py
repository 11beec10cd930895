"""DNS message codec: the wire format of RFC 1035 §4.1, sans-I/O.

Implements
  * the header, question and resource-record sections (RFC 1035 §4.1.1-§4.1.3);
  * name compression (RFC 1035 §4.1.4), decoded with bounds and loop
    protection, and used by the encoder;
  * RDATA for A (RFC 1035 §3.4.1), AAAA (RFC 3596 §2.2), MX (RFC 1035
    §3.3.9), CNAME/NS/PTR (RFC 1035 §3.3.1, §3.3.11, §3.3.12) and SOA
    (RFC 1035 §3.3.13); every other type is kept as raw bytes;
  * an optional EDNS(0) OPT pseudo-RR in queries (RFC 6891 §6.1.2);
  * internationalised names, encoded with the stdlib ``idna`` codec
    (IDNA 2003, RFC 3490 ToASCII).

The decoder is a cursor whose error sticks (OpenSMTPD's unpack_dns): once an
overrun, bad label or bad pointer is seen every further read returns a
harmless default, and ``decode_message`` raises ``DnsFormatError``.  No other
exception escapes it, whatever the input.

Names are returned lowercase (RFC 1035 §2.3.3: comparisons are
case-insensitive), without the trailing dot; the root is ``""``.  Label octets
outside printable ASCII, and ``.`` or ``\\`` inside a label, are shown in the
master-file escape form ``\\DDD`` (RFC 1035 §5.1), which ``encode_name``
reads back.

Left out: DNSSEC records, EDNS options, name
decompression for unknown types (RFC 3597 §4: kept raw, never decompressed).
"""

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

# RR TYPE values, RFC 1035 §3.2.2, RFC 3596 §2.1, RFC 6891 §6.1.1.
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1  # RFC 1035 §3.2.4

# RCODE values, RFC 1035 §4.1.1.
RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

HEADER_LEN = 12          # RFC 1035 §4.1.1: six 16-bit fields
MAX_LABEL = 63           # RFC 1035 §2.3.4: labels are 63 octets or less
MAX_NAME = 255           # RFC 1035 §2.3.4: names are 255 octets or less (wire form)
MAX_POINTER_HOPS = 127   # RFC 1035 §4.1.4 sets no bound; 255 octets hold at most 127 labels
MAX_CHARACTER_STRING = 255  # RFC 1035 §3.3: a character-string is a length octet and up to 255 octets
MAX_UDP = 512            # RFC 1035 §2.3.4 / §4.2.1: UDP messages are 512 octets or less
# DEVIATION(RFC 6891 §6.2.5 suggests starting at 4096): 1232 octets, the
# DNS Flag Day 2020 value, fits an IPv6 minimum-MTU packet and so avoids
# IP fragmentation, which lets an off-path attacker forge the second fragment
# of a reply without guessing the ID or port of RFC 5452 §9.2.
EDNS_PAYLOAD = 1232
_POINTER = 0xC0          # RFC 1035 §4.1.4: the two top bits mark a pointer


class DnsFormatError(ValueError):
    """The octets are not a well-formed DNS message (RFC 1035 §4.1)."""


class DnsNameError(ValueError):
    """A name cannot be put on the wire (label or name too long, bad IDN)."""


class Question(NamedTuple):
    """RFC 1035 §4.1.2."""
    name: str
    qtype: int
    qclass: int = CLASS_IN


class MX(NamedTuple):
    """RFC 1035 §3.3.9; ``exchange == ""`` is the null MX of RFC 7505 §3."""
    preference: int
    exchange: str


class SOA(NamedTuple):
    """RFC 1035 §3.3.13."""
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = Union[str, MX, SOA, bytes, Tuple[bytes, ...]]


class Record(NamedTuple):
    """A resource record, RFC 1035 §4.1.3.  ``data`` is text for A/AAAA
    (addresses) and CNAME/NS/PTR (names), MX or SOA, a tuple of bytes for
    TXT (its character-strings), else the raw octets."""
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: RData


@dataclass
class Message:
    """A DNS message: header flags (RFC 1035 §4.1.1) and the four sections."""
    id: int = 0
    qr: bool = False
    opcode: int = 0
    aa: bool = False
    tc: bool = False
    rd: bool = True
    ra: bool = False
    rcode: int = RCODE_NOERROR
    questions: List[Question] = field(default_factory=list)
    answers: List[Record] = field(default_factory=list)
    authority: List[Record] = field(default_factory=list)
    additional: List[Record] = field(default_factory=list)


# ---------------------------------------------------------------- names, text

def name_to_labels(name: str) -> List[bytes]:
    """Split a text name into wire labels, applying IDNA ToASCII to
    non-ASCII names and the ``\\DDD`` / ``\\X`` escapes of RFC 1035 §5.1.

    Raises DnsNameError for an empty label, a label over 63 octets or a
    name over 255 octets (RFC 1035 §2.3.4)."""
    if name in ("", "."):
        return []
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DnsNameError("cannot IDNA-encode %r: %s" % (name, exc)) from None
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    labels = _split_escaped(name)
    total = 1
    for label in labels:
        if not 0 < len(label) <= MAX_LABEL:
            raise DnsNameError("label length %d not in 1..%d (RFC 1035 §2.3.4)" % (len(label), MAX_LABEL))
        total += 1 + len(label)
    if total > MAX_NAME:
        raise DnsNameError("name is %d octets, over %d (RFC 1035 §2.3.4)" % (total, MAX_NAME))
    return labels


def _split_escaped(name: str) -> List[bytes]:
    """Split on unescaped dots, undoing ``\\DDD`` and ``\\X`` (RFC 1035 §5.1)."""
    labels, cur, i = [], bytearray(), 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            if name[i + 1:i + 4].isdigit() and len(name[i + 1:i + 4]) == 3:
                value = int(name[i + 1:i + 4])
                if value > 255:
                    raise DnsNameError("bad escape in %r" % name)
                cur.append(value)
                i += 4
                continue
            if i + 1 >= len(name):
                raise DnsNameError("dangling backslash in %r" % name)
            cur += name[i + 1].encode("ascii")
            i += 2
            continue
        if c == ".":
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur += c.encode("ascii")
        i += 1
    labels.append(bytes(cur))
    return labels


def _label_text(label: bytes) -> str:
    """One wire label as lowercase text (RFC 1035 §2.3.3), escaped per §5.1."""
    out = []
    for octet in label:
        if 0x41 <= octet <= 0x5A:
            out.append(chr(octet + 32))
        elif 0x21 <= octet <= 0x7E and octet not in (0x2E, 0x5C):
            out.append(chr(octet))
        else:
            out.append("\\%03d" % octet)
    return "".join(out)


def normalize_name(name: str) -> str:
    """The canonical text form used for comparison and cache keys:
    lowercase ASCII (IDNA applied), no trailing dot (RFC 1035 §2.3.3)."""
    return ".".join(_label_text(label) for label in name_to_labels(name))


def names_equal(a: str, b: str) -> bool:
    """Case-insensitive comparison of two names (RFC 1035 §2.3.3)."""
    try:
        return normalize_name(a) == normalize_name(b)
    except DnsNameError:
        return False


# ---------------------------------------------------------------- decoding

class _Unpacker:
    """A read cursor over a message whose first error sticks (like
    OpenSMTPD's unpack_dns): after it, reads return zeros and empty names."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0
        self.err: Optional[str] = None

    def fail(self, why: str) -> None:
        if self.err is None:
            self.err = "%s at offset %d" % (why, self.pos)

    def take(self, n: int) -> bytes:
        if self.err is not None:
            return b"\0" * n
        if self.pos + n > len(self.buf):
            self.fail("overrun reading %d octets" % n)
            return b"\0" * n
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def name(self) -> str:
        """A possibly compressed name (RFC 1035 §4.1.4).

        A pointer must point strictly before the start of the label run that
        contains it, so every hop goes backwards and the walk ends; hops are
        also capped, and the expanded name must stay within 255 octets and
        its labels within 63 (RFC 1035 §2.3.4)."""
        if self.err is not None:
            return ""
        buf, pos, limit = self.buf, self.pos, self.pos
        labels: List[str] = []
        total, hops, end = 1, 0, None
        while True:
            if pos >= len(buf):
                self.fail("name runs past the end")
                return ""
            length = buf[pos]
            if length & _POINTER == _POINTER:
                if pos + 1 >= len(buf):
                    self.fail("truncated compression pointer")
                    return ""
                target = ((length & ~_POINTER) << 8) | buf[pos + 1]
                hops += 1
                if target >= limit or hops > MAX_POINTER_HOPS:
                    self.fail("compression pointer to %d not backwards" % target)
                    return ""
                if end is None:
                    end = pos + 2
                pos = limit = target
                continue
            if length & _POINTER:
                self.fail("reserved label type 0x%02x (RFC 1035 §4.1.4)" % length)
                return ""
            if length == 0:
                break
            total += 1 + length
            if total > MAX_NAME or pos + 1 + length > len(buf):
                self.fail("name too long or past the end")
                return ""
            labels.append(_label_text(buf[pos + 1:pos + 1 + length]))
            pos += 1 + length
        self.pos = end if end is not None else pos + 1
        return ".".join(labels)


def decode_message(data: bytes) -> Message:
    """Decode one DNS message (RFC 1035 §4.1); raises DnsFormatError only."""
    cur = _Unpacker(bytes(data))
    msg = Message()
    msg.id = cur.u16()
    flags = cur.u16()
    msg.qr = bool(flags & 0x8000)
    msg.opcode = (flags >> 11) & 0xF
    msg.aa = bool(flags & 0x0400)
    msg.tc = bool(flags & 0x0200)
    msg.rd = bool(flags & 0x0100)
    msg.ra = bool(flags & 0x0080)
    msg.rcode = flags & 0xF
    qdcount, ancount, nscount, arcount = cur.u16(), cur.u16(), cur.u16(), cur.u16()
    for _ in range(qdcount):
        if cur.err:
            break
        msg.questions.append(Question(cur.name(), cur.u16(), cur.u16()))
    for count, section in ((ancount, msg.answers), (nscount, msg.authority), (arcount, msg.additional)):
        for _ in range(count):
            if cur.err:
                break
            section.append(_record(cur))
    if cur.err is None and cur.pos != len(cur.buf):
        cur.fail("%d trailing octets" % (len(cur.buf) - cur.pos))
    if cur.err is not None:
        raise DnsFormatError(cur.err)
    return msg


def _record(cur: _Unpacker) -> Record:
    """One resource record (RFC 1035 §4.1.3); RDATA must fill RDLENGTH exactly."""
    name = cur.name()
    rtype, rclass, ttl, rdlength = cur.u16(), cur.u16(), cur.u32(), cur.u16()
    start = cur.pos
    if cur.err is None and start + rdlength > len(cur.buf):
        cur.fail("rdlength %d past the end" % rdlength)
    if cur.err is not None:
        return Record(name, rtype, rclass, ttl, b"")
    data = _rdata(cur, rtype, rdlength)
    if cur.err is None and cur.pos != start + rdlength:
        cur.fail("rdata of type %d does not fill rdlength %d" % (rtype, rdlength))
    return Record(name, rtype, rclass, ttl, data)


def _rdata(cur: _Unpacker, rtype: int, rdlength: int) -> RData:
    if rtype == TYPE_A:
        if rdlength != 4:
            cur.fail("A rdlength %d != 4 (RFC 1035 §3.4.1)" % rdlength)
        return "%d.%d.%d.%d" % tuple(cur.take(4))
    if rtype == TYPE_AAAA:
        if rdlength != 16:
            cur.fail("AAAA rdlength %d != 16 (RFC 3596 §2.2)" % rdlength)
        return str(ipaddress.IPv6Address(cur.take(16)))
    if rtype in (TYPE_CNAME, TYPE_NS, TYPE_PTR):
        return cur.name()
    if rtype == TYPE_MX:
        preference = cur.u16()
        return MX(preference, cur.name())
    if rtype == TYPE_SOA:
        mname, rname = cur.name(), cur.name()
        return SOA(mname, rname, cur.u32(), cur.u32(), cur.u32(), cur.u32(), cur.u32())
    if rtype == TYPE_TXT:
        return _txt(cur, rdlength)
    return cur.take(rdlength)


def _txt(cur: _Unpacker, rdlength: int) -> Tuple[bytes, ...]:
    """TXT-DATA: one or more <character-string>s (RFC 1035 §3.3.14), each a
    length octet and that many octets (§3.3); one running past RDLENGTH is
    a format error.  An empty RDATA (no strings, against §3.3.14) is read as
    an empty tuple: a lenient reading, nothing is lost."""
    end, strings = cur.pos + rdlength, []
    while cur.err is None and cur.pos < end:
        length = cur.take(1)[0]
        if cur.pos + length > end:
            cur.fail("TXT character-string of %d octets runs past rdlength (RFC 1035 §3.3)" % length)
            break
        strings.append(cur.take(length))
    return tuple(strings)


# ---------------------------------------------------------------- encoding

class _Packer:
    """Builds a message, compressing names against earlier ones (RFC 1035 §4.1.4)."""

    def __init__(self, compress: bool = True):
        self.buf = bytearray()
        self.compress = compress
        self.offsets: Dict[Tuple[bytes, ...], int] = {}

    def name(self, name: str) -> None:
        labels = name_to_labels(name)
        for i in range(len(labels)):
            key = tuple(label.lower() for label in labels[i:])
            if self.compress and key in self.offsets:
                self.buf += struct.pack("!H", 0xC000 | self.offsets[key])
                return
            if len(self.buf) < 0x4000:  # a pointer has 14 bits of offset
                self.offsets.setdefault(key, len(self.buf))
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf.append(0)

    def record(self, rec: Record) -> None:
        self.name(rec.name)
        self.buf += struct.pack("!HHI", rec.rtype, rec.rclass, rec.ttl & 0xFFFFFFFF)
        at = len(self.buf)
        self.buf += b"\0\0"
        self._rdata(rec.rtype, rec.data)
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)

    def _rdata(self, rtype: int, data: RData) -> None:
        if isinstance(data, bytes):
            self.buf += data
        elif rtype == TYPE_A:
            self.buf += ipaddress.IPv4Address(data).packed
        elif rtype == TYPE_AAAA:
            self.buf += ipaddress.IPv6Address(data).packed
        elif rtype == TYPE_MX:
            self.buf += struct.pack("!H", data.preference)
            self.name(data.exchange)
        elif rtype == TYPE_SOA:
            self.name(data.mname)
            self.name(data.rname)
            self.buf += struct.pack("!IIIII", *data[2:])
        elif rtype == TYPE_TXT:
            self.buf += encode_txt(data)
        else:
            self.name(data)


def encode_txt(strings) -> bytes:
    """TXT RDATA from a sequence of character-strings (bytes, or str as
    UTF-8), RFC 1035 §3.3.14; a string over 255 octets raises DnsNameError
    (RFC 1035 §3.3: one length octet).  Split long text with ``split_txt``."""
    if isinstance(strings, (str, bytes)):
        strings = (strings,)
    out = bytearray()
    for s in strings:
        s = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        if len(s) > MAX_CHARACTER_STRING:
            raise DnsNameError("TXT string of %d octets, over %d (RFC 1035 §3.3)" % (len(s), MAX_CHARACTER_STRING))
        out += bytes([len(s)]) + s
    return bytes(out)


def split_txt(text: bytes) -> Tuple[bytes, ...]:
    """Cut a long value into 255-octet character-strings (RFC 7208 §3.3,
    RFC 6376 §3.6.2.2: readers concatenate them without separators)."""
    if not text:
        return (b"",)
    return tuple(text[i:i + MAX_CHARACTER_STRING] for i in range(0, len(text), MAX_CHARACTER_STRING))


def txt_text(strings: Tuple[bytes, ...]) -> bytes:
    """The strings of one TXT record joined without separators, as SPF
    (RFC 7208 §3.3) and DKIM (RFC 6376 §3.6.2.2) read them."""
    return b"".join(strings)


def encode_message(msg: Message, compress: bool = True) -> bytes:
    """Encode a whole message (RFC 1035 §4.1); used by the test server and
    by ``encode_query``.  Raises DnsNameError for unencodable names."""
    pk = _Packer(compress)
    flags = ((msg.qr << 15) | ((msg.opcode & 0xF) << 11) | (msg.aa << 10) | (msg.tc << 9)
             | (msg.rd << 8) | (msg.ra << 7) | (msg.rcode & 0xF))
    pk.buf += struct.pack("!6H", msg.id & 0xFFFF, flags, len(msg.questions), len(msg.answers),
                          len(msg.authority), len(msg.additional))
    for q in msg.questions:
        pk.name(q.name)
        pk.buf += struct.pack("!HH", q.qtype, q.qclass)
    for rec in msg.answers + msg.authority + msg.additional:
        pk.record(rec)
    return bytes(pk.buf)


def encode_query(name: str, qtype: int, qid: int, rd: bool = True,
                 edns_payload: Optional[int] = None) -> bytes:
    """A standard query (OPCODE 0) for one question, RFC 1035 §4.1.1-§4.1.2.

    ``edns_payload`` adds an OPT pseudo-RR advertising that UDP payload
    size (RFC 6891 §6.1.2: owner root, CLASS = payload, TTL = 0 for
    extended RCODE 0, version 0, no flags; RDLENGTH 0)."""
    msg = Message(id=qid, rd=rd, questions=[Question(name, qtype, CLASS_IN)])
    if edns_payload is not None:
        msg.additional.append(Record("", TYPE_OPT, max(edns_payload, MAX_UDP), 0, b""))
    return encode_message(msg)
