"""Formatting IMAP server data and responses (RFC 9051 §7, §9), sans-I/O.

The mirror of grammar.py: strings (quoted or literal), nstring, astring,
mailbox names (modified UTF-7 or UTF-8), parenthesized lists, sequence sets
compressed to ranges, date-time, response codes, and the three kinds of
response line: untagged ``* ...``, tagged ``tag OK/NO/BAD ...`` and the
continuation ``+ text`` (never a bare ``+``, RFC 9051 §7.5).  Everything is
bytes; each response line ends with CRLF.
"""

from __future__ import annotations

import datetime
import re
from typing import Iterable, Optional, Sequence, Union

from protocols.imap.grammar import MONTHS, mutf7_encode

# RFC 9051 §4.3 leaves the quoted/literal choice to the sender; long values
# go as literals so a response line stays short and copies nothing twice.
# 1024 octets is the longest quoted string we send (Dovecot uses a similar
# cut-off).
MAX_QUOTED = 1024

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')
_TEXT_UNSAFE = re.compile(rb"[\r\n\x00]")
Item = Union[bytes, int, None, Sequence]

STATUSES = (b"OK", b"NO", b"BAD", b"PREAUTH", b"BYE")


def quoted(value: bytes) -> bytes:
    """quoted = DQUOTE *QUOTED-CHAR DQUOTE (RFC 9051 §9)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes, binary: bool = False) -> bytes:
    """literal = "{" number64 "}" CRLF *CHAR8; literal8 "~{" (RFC 3516 §4.2)."""
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(value), value)


def string(value: bytes, utf8: bool = False, max_quoted: int = MAX_QUOTED) -> bytes:
    """string = quoted / literal (RFC 9051 §9): a literal when the value has
    8-bit octets (unless UTF-8 is allowed in quoted, RFC 9051 §9 / RFC 6855
    §3), CR, LF or NUL, or is longer than ``max_quoted``."""
    if len(value) <= max_quoted:
        if _QUOTABLE.fullmatch(value):
            return quoted(value)
        if utf8 and not _TEXT_UNSAFE.search(value):
            try:
                value.decode("utf-8")
                return quoted(value)
            except UnicodeDecodeError:
                pass
    return literal(value)


def nstring(value: Optional[bytes], utf8: bool = False) -> bytes:
    """nstring = string / nil (RFC 9051 §9)."""
    return b"NIL" if value is None else string(value, utf8)


def astring(value: bytes, utf8: bool = False) -> bytes:
    """astring = 1*ASTRING-CHAR / string (RFC 9051 §9); NIL is quoted so it
    is never read as nil where an nstring could stand."""
    if _ASTRING_ATOM.fullmatch(value) and value.upper() != b"NIL":
        return value
    return string(value, utf8)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as an astring: modified UTF-7 (RFC 3501 §5.1.3) or
    UTF-8 once UTF8=ACCEPT is enabled (RFC 6855 §3)."""
    if name.upper() == "INBOX":
        return b"INBOX"
    raw = name.encode("utf-8") if utf8 else mutf7_encode(name)
    return astring(raw, utf8)


def item(value: Item) -> bytes:
    """One element of a list: bytes as given, int as number, None as NIL,
    a list or tuple as a parenthesized list."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("no IMAP form for a bool")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return paren(value)


def paren(items: Iterable[Item]) -> bytes:
    """ "(" item *(SP item) ")" (the list shape of RFC 9051 §9)."""
    return b"(" + b" ".join(item(v) for v in items) + b")"


def sequence_set(numbers: Iterable[int]) -> bytes:
    """sequence-set (RFC 9051 §9) compressed to ranges: 1,2,3,4,5,7 is
    ``1:5,7``.  The input need not be sorted; duplicates fold."""
    values = sorted(set(numbers))
    if not values:
        raise ValueError("an empty sequence set has no IMAP form")
    parts = []
    start = prev = values[0]
    for n in values[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        if n is not None:
            start = prev = n
    return b",".join(parts)


def date_time(when: datetime.datetime) -> bytes:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time
    SP zone DQUOTE (RFC 9051 §9); a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = b"-" if minutes < 0 else b"+"
    minutes = abs(minutes)
    month = MONTHS[when.month - 1].capitalize()
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day, month, when.year, when.hour, when.minute, when.second,
        sign, minutes // 60, minutes % 60)


def _text(text: Union[str, bytes]) -> bytes:
    """resp-text's text (RFC 9051 §9 text = 1*TEXT-CHAR): one line, so CR,
    LF and NUL become spaces; never empty."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return _TEXT_UNSAFE.sub(b" ", raw) or b"done"


def response_code(name: str, args: Optional[Item] = None) -> bytes:
    """resp-text-code = "[" atom [SP ...] "]" (RFC 9051 §7.1, §9)."""
    if args is None:
        return b"[" + name.encode("ascii") + b"]"
    return b"[" + name.encode("ascii") + b" " + item(args) + b"]"


def untagged(data: bytes) -> bytes:
    """An untagged response line: ``* data`` (RFC 9051 §2.2.2)."""
    return b"* " + data + b"\r\n"


def status_line(tag: Optional[bytes], status: bytes, text: Union[str, bytes],
                code: Optional[bytes] = None) -> bytes:
    """resp-cond-state / resp-cond-bye (RFC 9051 §7.1): tagged when ``tag``
    is given, else untagged; ``code`` from ``response_code``."""
    if status not in STATUSES:
        raise ValueError("not a status: %r" % status)
    head = tag if tag is not None else b"*"
    middle = b" " + code if code else b""
    return head + b" " + status + middle + b" " + _text(text) + b"\r\n"


def tagged(tag: bytes, status: bytes, text: Union[str, bytes],
           code: Optional[bytes] = None) -> bytes:
    """response-tagged = tag SP resp-cond-state CRLF (RFC 9051 §7.1)."""
    return status_line(tag, status, text, code)


def continuation(text: Union[str, bytes] = b"Ready") -> bytes:
    """continue-req = "+" SP (resp-text / base64) CRLF (RFC 9051 §7.5).

    An empty text becomes ``Ready``: some clients (and RFC 9051's grammar)
    want text after ``+ ``, never a bare ``+``.  For SASL the caller passes
    the base64 challenge, which for an empty challenge is sent as ``+ ``
    followed by nothing: use ``sasl_continuation``.
    """
    return b"+ " + _text(text or b"Ready") + b"\r\n"


def sasl_continuation(challenge_b64: bytes) -> bytes:
    """continue-req with a base64 challenge (RFC 9051 §6.2.2); an empty
    challenge is ``+ `` and CRLF (the space is kept, RFC 9051 §7.5)."""
    return b"+ " + challenge_b64 + b"\r\n"
