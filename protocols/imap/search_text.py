"""Text for SEARCH's text keys (RFC 9051 §6.4.4), pure functions used by
search_eval.py: RFC 2047 encoded words decoded (§6.1, §6.2), RFC 2045 §6
transfer encodings undone, MIME charsets mapped to Python codecs, and the
raw-octet test that spares decoding where the octets alone give the answer.
"""

from __future__ import annotations

import binascii
import codecs
import re
from typing import List, Optional

from protocols.imap.collation import casemap
from protocols.message import field_value

# Python codecs that decode bytes to text but are no charset of the IANA
# registry (RFC 9051 §6.4.4 [CHARSET-REG]): refused like unknown names.
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "undefined", "idna",
                           "punycode", "charmap"})
# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=";
# RFC 2231 §5 lets the charset carry "*language".
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _codec(charset: Optional[str]) -> str:
    """A codec for a MIME charset; UTF-8 (a superset of US-ASCII) when the
    charset is missing, US-ASCII, or one Python does not know."""
    try:
        name = codecs.lookup((charset or "utf-8").strip()).name
        b"a".decode(name)
    except (LookupError, UnicodeError, ValueError):
        return "utf-8"
    return "utf-8" if name == "ascii" or name in _NOT_CHARSETS else name


def _b64(raw: bytes) -> bytes:
    """Lenient base64 (RFC 2045 §6.8: characters outside the alphabet are
    ignored); a truncated last quantum is padded or dropped."""
    clean = _B64_JUNK.sub(b"", raw)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def _word(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if encoding in "Bb":
        return _b64(raw)
    return binascii.a2b_qp(raw, header=True)          # RFC 2047 §4.2: "_" is a space


def decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded words decoded (§6.1); white space
    between two encoded words dropped (§6.2).  Adjacent words in one charset
    are joined before decoding, so a character split across two words (which
    §5 forbids, but senders do) comes out whole."""
    out: List[str] = []
    pending: List[bytes] = []
    pending_cs = [""]
    pos, prev_word = 0, False

    def flush():
        if pending:
            out.append(b"".join(pending).decode(_codec(pending_cs[0]), "replace"))
            pending.clear()

    for m in _ENCODED_WORD.finditer(text):
        gap = text[pos:m.start()]
        charset = m.group(1).split("*", 1)[0]
        if not (prev_word and not gap.strip(" \t\r\n")):
            flush()
            out.append(gap)
        elif charset.lower() != pending_cs[0].lower():
            flush()
        pending.append(_word(m.group(2), m.group(3)))
        pending_cs[0], pos, prev_word = charset, m.end(), True
    flush()
    out.append(text[pos:])
    return "".join(out)


def _field_text(value: bytes) -> str:
    """An unfolded field value as text: 8-bit octets read as UTF-8 (RFC 6532
    §3.2), encoded words decoded."""
    return decode_words(value.decode("utf-8", "replace"))


def value_text(raw: bytes) -> str:
    """The text of one raw field (RFC 5322 §2.2: unfolded, without the name):
    ``_field_text`` of its value, decode_words only where an encoded word may
    be (it finds none without "=?", RFC 2047 §2)."""
    text = field_value(raw).decode("utf-8", "replace")
    return decode_words(text) if "=?" in text else text


def _transfer_decode(raw: bytes, encoding: str) -> bytes:
    """The content of a body under its Content-Transfer-Encoding (RFC 2045 §6)."""
    if encoding == "base64":
        return _b64(raw)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    return raw


# Codecs that read every octet below 0x80 as that ASCII character, and never
# as part of a multi-octet sequence: in them an ASCII needle found in the
# lowercased octets is in the decoded text (RFC 2046 §4.1.2 charsets that
# extend US-ASCII; ISO-2022-*, UTF-7, UTF-16 and the CJK double-byte sets do not).
_ASCII_SAFE = frozenset(codecs.lookup(name).name for name in (
    "utf-8", "latin-1", "iso8859-2", "iso8859-3", "iso8859-4", "iso8859-5", "iso8859-6",
    "iso8859-7", "iso8859-8", "iso8859-9", "iso8859-10", "iso8859-13", "iso8859-14",
    "iso8859-15", "iso8859-16", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255",
    "cp1256", "cp1257", "cp1258", "koi8-r", "koi8-u"))


# Fields with their folds, each line ended by LF, then the empty line
# (RFC 5322 §2.1): the usual header block, one match ending where parse_header
# ends it (fetch_cache.header_end reads it too).
HEADER_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*\r?\n")
# Each "charset" of a message as a MIME parameter is read as written: a plain
# value (RFC 2045 §5.1 token or quoted-string without escapes) then its end.
_CHARSET = re.compile(rb'charset[ \t]*=[ \t]*("?)([a-z0-9_.:+-]*)\1(?=[;\s)]|$)')
_SAFE_NAME: dict = {}


def surely_absent(data: bytes, raw_needle: bytes, text: bool) -> bool:
    """True when ``raw_needle`` (lowercase ASCII, without white space or
    colon) is surely in no piece of BODY's (TEXT's when ``text``) decoded
    text of the message ``data`` (under search_eval.MAX_SEARCH_TEXT), told
    from its octets alone: it is not in them, and nothing could make it
    appear: no base64 or quoted-printable part (RFC 2045 §6), no RFC 2047
    encoded word (§2: "=?") and no non-ASCII octet where the search reads,
    and every charset one whose decoding leaves ASCII octets as they are.
    Then each piece is the octets as written (unfolding removes only a line
    end before white space, which the needle lacks, RFC 5322 §2.2.3).
    False: the caller decodes (search_eval._Mail.body_has)."""
    lowered = data.lower()
    if raw_needle in lowered or b"base64" in lowered or b"quoted-printable" in lowered:
        return False
    start = 0
    if not text:            # the root's header is not BODY's (RFC 9051 §6.4.4)
        usual = HEADER_BLOCK.match(data)
        start = usual.end() if usual is not None else 0
    if b"=?" in data[start:] or not data[start:].isascii():
        return False
    pos = lowered.find(b"charset")
    while pos >= 0:
        value = _CHARSET.match(lowered, pos)
        if value is None or not _safe_charset(value.group(2)):
            return False
        pos = lowered.find(b"charset", pos + 7)
    return True


def _safe_charset(name: bytes) -> bool:
    """Whether the codec of a charset reads ASCII octets as themselves."""
    safe = _SAFE_NAME.get(name)
    if safe is None:
        codec = _codec(name.decode("ascii"))
        safe = codec in _ASCII_SAFE
        if len(_SAFE_NAME) < 256:          # ours: a few names in practice, a bound for the rest
            _SAFE_NAME[name] = safe
    return safe


def _raw_has(octets: bytes, raw_needle: bytes, needle: str, codec: Optional[str]) -> bool:
    """``needle`` (casemapped ASCII; ``raw_needle`` its lowercase octets) in the
    casemapped text (collation.casemap) of ``octets``: a
    header block (``codec`` None: as _field_text decodes it) or a text part
    in ``codec``.  Decoded only when the octets alone cannot tell: non-ASCII
    text may map to ASCII (U+212A KELVIN SIGN is "K"), and RFC 2047
    encoded words hide their text."""
    if codec is None:
        if b"=?" not in octets:
            if raw_needle in octets.lower():
                return True
            if octets.isascii():
                return False
        return needle in casemap(_field_text(octets))
    if codec in _ASCII_SAFE:
        if raw_needle in octets.lower():
            return True
        if octets.isascii():
            return False
    return needle in casemap(octets.decode(codec, "replace"))
