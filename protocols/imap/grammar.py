"""IMAP grammar primitives (RFC 9051 §9, RFC 3501 §9), sans-I/O.

Each parse function is named after its ABNF rule, takes the command's bytes
(``bytes`` or ``memoryview``) and returns ``(value, rest)`` where ``rest`` is
a ``memoryview`` of what follows (slicing a memoryview copies nothing, so a
128 KiB line of many tokens costs linear time).  Any syntax error raises
``ImapParseError``.  The command bytes come from ``reader.CommandReader``:
one complete command, literals inline after their ``{n}\\r\\n`` marker, so
``literal`` here never waits for data; the reader is what says "need n
octets".

Implemented: tag, atom, number / nz-number / number64, quoted (with the
RFC 9051 UTF-8 QUOTED-CHARs), literal ``{n}``, ``{n+}`` (RFC 7888),
literal8 ``~{n}`` (RFC 3516 §4.1), string / astring / nstring, list-mailbox,
mailbox with modified UTF-7 (RFC 3501 §5.1.3, RFC 9051 Appendix A.1) or UTF-8
after ENABLE UTF8=ACCEPT (RFC 6855 §3), sequence-set with ``*``, ``$``
(RFC 5182 §2) and reversed ranges, date, date-time, flag / flag-list,
parenthesized lists with a depth limit, and the command head (tag, name,
UID prefix).  Command arguments live in args.py, fetch_args.py, search.py.
"""

from __future__ import annotations

import base64
import datetime
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, TypeVar, Union

T = TypeVar("T")
Buf = Union[bytes, memoryview]

# RFC 9051 §4 and RFC 7162 §4: a server should accept lines of at least 8192
# octets; clients (mbsync, Thunderbird) send UID sets of 100,000 UIDs, which
# run to several tens of KB, so the issue asks for at least 64 KB.  128 KiB
# of command text (literal octets excluded) per command.
MAX_LINE = 128 * 1024
# No RFC sets a nesting depth; the deepest legitimate nesting is a SEARCH with
# nested OR/NOT/parentheses, which real clients keep under ten levels.  32
# bounds the parser's recursion far below Python's limit.
MAX_DEPTH = 32
# RFC 7888 §5: under LITERAL- a non-synchronizing literal "MUST NOT be larger
# than 4096 bytes".
LITERAL_MINUS_MAX = 4096
# RFC 9051 §9 number64: "Unsigned 63-bit integer".
MAX_NUMBER64 = 2 ** 63 - 1
# RFC 9051 §9 number / nz-number: "Unsigned 32-bit integer".
MAX_NUMBER = 2 ** 32 - 1


class ImapParseError(Exception):
    """A syntax error in a client command (RFC 9051 §7.1.5: answered BAD).

    ``at_boundary`` True: the rest of the command has been skipped and the
    session answers ``BAD`` (tagged when ``tag`` is known) and goes on.
    False: the input stream cannot be resynchronised (for example literal
    octets already sent after a refusal); the session sends ``BYE`` and
    closes.  ``code`` is a response code such as ``TOOBIG`` (RFC 4469 §4).
    """

    def __init__(self, message: str, tag: Optional[bytes] = None,
                 at_boundary: bool = True, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.at_boundary = at_boundary
        self.code = code


def _mv(buf: Buf) -> memoryview:
    return buf if isinstance(buf, memoryview) else memoryview(buf)


def _show(buf: Buf, n: int = 20) -> str:
    return bytes(buf[:n]).decode("ascii", "replace").replace("\r\n", "<CRLF>")


def fail(what: str, buf: Buf) -> ImapParseError:
    """The error for "expected WHAT at BUF" (one line, naming the value)."""
    return ImapParseError("expected %s at %r" % (what, _show(buf)))


def expect(token: bytes, buf: Buf) -> memoryview:
    """Consume the exact bytes ``token`` (case-insensitive for letters)."""
    buf = _mv(buf)
    if bytes(buf[:len(token)]).upper() != token.upper():
        raise fail(repr(token.decode()), buf)
    return buf[len(token):]


def sp(buf: Buf) -> memoryview:
    """SP (RFC 9051 §9 core rule): exactly one space."""
    return expect(b" ", buf)


def peek(buf: Buf, token: bytes) -> bool:
    """True when ``buf`` starts with ``token`` (case-insensitive)."""
    return bytes(buf[:len(token)]).upper() == token.upper()


def end(buf: Buf) -> None:
    """CRLF ending the command (RFC 9051 §9 command), nothing after it."""
    if bytes(buf) != b"\r\n":
        raise fail("end of command", buf)


_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_ASTRING_CHARS = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')
_TAG = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
_LIST_CHARS = re.compile(rb'[^(){ \x00-\x1f\x7f"\\\x80-\xff]+')
_DIGITS = re.compile(rb"[0-9]+")


def atom(buf: Buf) -> Tuple[bytes, memoryview]:
    """atom = 1*ATOM-CHAR (RFC 9051 §9)."""
    buf = _mv(buf)
    m = _ATOM.match(buf)
    if not m:
        raise fail("atom", buf)
    return m.group(), buf[m.end():]


def tag(buf: Buf) -> Tuple[bytes, memoryview]:
    """tag = 1*<any ASTRING-CHAR except "+"> (RFC 9051 §9)."""
    buf = _mv(buf)
    m = _TAG.match(buf)
    if not m:
        raise fail("tag", buf)
    return m.group(), buf[m.end():]


def number64(buf: Buf, limit: int = MAX_NUMBER64) -> Tuple[int, memoryview]:
    """number64 = 1*DIGIT, unsigned 63-bit (RFC 9051 §9)."""
    buf = _mv(buf)
    m = _DIGITS.match(buf)
    if not m or len(m.group()) > 20 or int(m.group()) > limit:
        raise fail("number", buf)
    return int(m.group()), buf[m.end():]


def number(buf: Buf) -> Tuple[int, memoryview]:
    """number = 1*DIGIT, unsigned 32-bit (RFC 9051 §9)."""
    return number64(buf, MAX_NUMBER)


def nz_number(buf: Buf, limit: int = MAX_NUMBER) -> Tuple[int, memoryview]:
    """nz-number = digit-nz *DIGIT (RFC 9051 §9)."""
    value, rest = number64(buf, limit)
    if value == 0 or bytes(buf[:1]) == b"0":
        raise fail("non-zero number", buf)
    return value, rest


def quoted(buf: Buf) -> Tuple[bytes, memoryview]:
    """quoted = DQUOTE *QUOTED-CHAR DQUOTE (RFC 9051 §9).

    QUOTED-CHAR: any TEXT-CHAR except ``"`` and ``\\``, or ``\\"`` / ``\\\\``,
    or UTF-8 (RFC 9051 §9 utf8-quoted).  Any other escape, CR, LF, NUL or
    invalid UTF-8 is an error.  DEVIATION(RFC 3501 §9): rev1 quoted strings
    are 7-bit, but UTF-8 is accepted from rev1 clients too (mutt and
    imaplib send 8-bit SEARCH strings quoted), as Dovecot does.
    """
    buf = _mv(buf)
    if bytes(buf[:1]) != b'"':
        raise fail("quoted string", buf)
    out = bytearray()
    i, n = 1, len(buf)
    while i < n:
        c = buf[i]
        if c == 0x22:
            value = bytes(out)
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise ImapParseError("quoted string is not UTF-8: %r" % value[:40])
            return value, buf[i + 1:]
        if c == 0x5C:
            if i + 1 < n and buf[i + 1] in (0x22, 0x5C):
                out.append(buf[i + 1])
                i += 2
                continue
            raise fail("\\\" or \\\\ escape", buf[i:])
        if c in (0x00, 0x0A, 0x0D):
            raise fail("closing quote", buf[i:])
        out.append(c)
        i += 1
    raise fail("closing quote", buf)


_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r\n")


def literal(buf: Buf, binary: bool = False) -> Tuple[bytes, memoryview]:
    """literal = "{" number64 ["+"] "}" CRLF *CHAR8 (RFC 9051 §9, RFC 7888 §3).

    With ``binary`` also literal8 = "~{" number64 "}" CRLF *OCTET (RFC 3516
    §4.1); a plain literal must not contain NUL (CHAR8 excludes it).  The
    octets are already in ``buf`` (the reader collected them).
    """
    buf = _mv(buf)
    m = _LITERAL.match(buf)
    if not m or (m.group(1) and not binary):
        raise fail("literal", buf)
    size = int(m.group(2))
    start = m.end()
    if size > MAX_NUMBER64 or len(buf) - start < size:
        raise fail("literal octets", buf)
    value = bytes(buf[start:start + size])
    if not m.group(1) and b"\x00" in value:
        # RFC 3516 §4.3: NUL outside literal8 draws BAD (the session adds
        # UNKNOWN-CTE where it applies).
        raise ImapParseError("NUL in a literal (only literal8 may hold one)")
    return value, buf[start + size:]


def string(buf: Buf) -> Tuple[bytes, memoryview]:
    """string = quoted / literal (RFC 9051 §9)."""
    buf = _mv(buf)
    return quoted(buf) if bytes(buf[:1]) == b'"' else literal(buf)


def astring(buf: Buf) -> Tuple[bytes, memoryview]:
    """astring = 1*ASTRING-CHAR / string (RFC 9051 §9)."""
    buf = _mv(buf)
    if bytes(buf[:1]) in (b'"', b"{"):
        return string(buf)
    m = _ASTRING_CHARS.match(buf)
    if not m:
        raise fail("astring", buf)
    return m.group(), buf[m.end():]


def nstring(buf: Buf) -> Tuple[Optional[bytes], memoryview]:
    """nstring = string / nil (RFC 9051 §9)."""
    buf = _mv(buf)
    if peek(buf, b"NIL") and not _ATOM.match(buf[3:]):
        return None, buf[3:]
    return string(buf)


def list_mailbox(buf: Buf) -> Tuple[bytes, memoryview]:
    """list-mailbox = 1*list-char / string (RFC 9051 §9): LIST patterns."""
    buf = _mv(buf)
    if bytes(buf[:1]) in (b'"', b"{"):
        return string(buf)
    m = _LIST_CHARS.match(buf)
    if not m:
        raise fail("mailbox pattern", buf)
    return m.group(), buf[m.end():]


# --- modified UTF-7 (RFC 3501 §5.1.3, RFC 9051 Appendix A.1) -----------------------

_B64_CHARS = re.compile(rb"[A-Za-z0-9+,]*")


def mutf7_decode(raw: bytes) -> str:
    """Decode a modified UTF-7 mailbox name; malformed input raises.

    Rejected (RFC 3501 §5.1.3): 8-bit octets, ``&`` without ``-``, base64
    that encodes printable US-ASCII, nonzero padding bits, broken UTF-16.
    """
    out: List[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c >= 0x80 or c < 0x20 or c == 0x7F:
            raise ImapParseError("mailbox name %r is not modified UTF-7" % raw[:60])
        if c != 0x26:
            out.append(chr(c))
            i += 1
            continue
        j = raw.find(b"-", i + 1)
        if j < 0:
            raise ImapParseError("mailbox name %r: '&' without '-'" % raw[:60])
        out.append(_mutf7_run(raw, raw[i + 1:j]))
        i = j + 1
    return "".join(out)


def _mutf7_run(raw: bytes, run: bytes) -> str:
    if not run:
        return "&"
    bad = ImapParseError("mailbox name %r: malformed modified UTF-7" % raw[:60])
    if not _B64_CHARS.fullmatch(run):
        raise bad
    std = run.replace(b",", b"/")
    pad = (-len(std)) % 4
    if pad == 3:
        raise bad
    try:
        data = base64.b64decode(std + b"=" * pad, validate=True)
        text = data.decode("utf-16-be")
    except (ValueError, UnicodeDecodeError):
        raise bad
    # Re-encode: nonzero padding bits or a non-canonical form show up here.
    if _mutf7_b64(text) != run or any(0x20 <= ord(ch) <= 0x7E for ch in text):
        raise bad
    return text


def _mutf7_b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")


def mutf7_encode(name: str) -> bytes:
    """Encode a mailbox name to modified UTF-7 (RFC 3501 §5.1.3)."""
    out = bytearray()
    run: List[str] = []
    for ch in name + "\x00":  # the sentinel flushes the last run
        if ch != "\x00" and not 0x20 <= ord(ch) <= 0x7E:
            run.append(ch)
            continue
        if run:
            out += b"&" + _mutf7_b64("".join(run)) + b"-"
            run = []
        if ch == "&":
            out += b"&-"
        elif ch != "\x00":
            out.append(ord(ch))
    return bytes(out)


def mailbox(buf: Buf, utf8: bool = False) -> Tuple[str, memoryview]:
    """mailbox = "INBOX" / astring (RFC 9051 §9), decoded to ``str``.

    INBOX is case-insensitive (RFC 9051 §5.1).  Names are modified UTF-7,
    or UTF-8 once the client enabled UTF8=ACCEPT (RFC 6855 §3); NUL and
    control characters are refused here, the rest of the name policy is the
    store's.
    """
    raw, rest = astring(buf)
    if raw.upper() == b"INBOX":
        return "INBOX", rest
    if utf8:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImapParseError("mailbox name %r is not UTF-8" % raw[:60])
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
            raise ImapParseError("mailbox name %r has control characters" % raw[:60])
        return name, rest
    return mutf7_decode(raw), rest


# --- sequence sets (RFC 9051 §9 sequence-set, RFC 5182 §2) -------------------

@dataclass(frozen=True)
class SequenceSet:
    """A sequence-set: ``ranges`` of (low, high), ``None`` standing for ``*``.

    Each range is stored as written with its ends ordered when both are
    numbers (``5:3`` is ``3:5``, RFC 9051 §9 seq-range); ``saved`` is the
    ``$`` of SEARCHRES (RFC 5182 §2), which has no ranges.
    """
    ranges: Tuple[Tuple[Optional[int], Optional[int]], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> List[Tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, each low <= high."""
        out = []
        for lo, hi in self.ranges:
            lo = largest if lo is None else lo
            hi = largest if hi is None else hi
            out.append((min(lo, hi), max(lo, hi)))
        return out

    def contains(self, n: int, largest: int) -> bool:
        return any(lo <= n <= hi for lo, hi in self.resolve(largest))


_SEQ_SET = re.compile(rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*")


def _seq_number(text: bytes) -> Optional[int]:
    if text == b"*":
        return None
    if text.startswith(b"0") or len(text) > 10 or int(text) > MAX_NUMBER:
        raise ImapParseError("bad sequence number %r" % text[:20])
    return int(text)


def sequence_set(buf: Buf) -> Tuple[SequenceSet, memoryview]:
    """sequence-set (RFC 9051 §9) or ``$`` (RFC 5182 §2 seq-last-command)."""
    buf = _mv(buf)
    if bytes(buf[:1]) == b"$":
        return SequenceSet(saved=True), buf[1:]
    m = _SEQ_SET.match(buf)
    if not m:
        raise fail("sequence set", buf)
    ranges = []
    for item in m.group().split(b","):
        lo_s, _, hi_s = item.partition(b":")
        lo = _seq_number(lo_s)
        hi = _seq_number(hi_s) if hi_s else lo
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges)), buf[m.end():]


# --- dates (RFC 9051 §9 date, date-time) --------------------------------------

MONTHS = (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN",
          b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
                        rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"')


def _month(text: bytes) -> int:
    try:
        return MONTHS.index(text.upper()) + 1
    except ValueError:
        raise ImapParseError("bad month %r" % text)


def date(buf: Buf) -> Tuple[datetime.date, memoryview]:
    """date = date-text / DQUOTE date-text DQUOTE (RFC 9051 §9)."""
    buf = _mv(buf)
    q = bytes(buf[:1]) == b'"'
    m = _DATE.match(buf[1:] if q else buf)
    if not m:
        raise fail("date (d-Mon-yyyy)", buf)
    rest = buf[m.end() + (1 if q else 0):]
    if q:
        rest = expect(b'"', rest)
    try:
        value = datetime.date(int(m.group(3)), _month(m.group(2)), int(m.group(1)))
    except ValueError:
        raise ImapParseError("no such date %r" % m.group().decode())
    return value, rest


def date_time(buf: Buf) -> Tuple[datetime.datetime, memoryview]:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP
    time SP zone DQUOTE (RFC 9051 §9); an aware datetime."""
    buf = _mv(buf)
    m = _DATE_TIME.match(buf)
    if not m:
        raise fail('date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")', buf)
    g = m.groups()
    offset = datetime.timedelta(hours=int(g[7]), minutes=int(g[8]))
    try:
        zone = datetime.timezone(-offset if g[6] == b"-" else offset)
        value = datetime.datetime(int(g[2]), _month(g[1]), int(g[0].strip()),
                                  int(g[3]), int(g[4]), int(g[5]), tzinfo=zone)
    except ValueError:
        raise ImapParseError("no such date-time %r" % m.group().decode())
    return value, buf[m.end():]


# --- flags and lists -----------------------------------------------------------

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_BY_UPPER = {f.upper(): f for f in SYSTEM_FLAGS + ("\\Recent",)}


def flag(buf: Buf) -> Tuple[str, memoryview]:
    """flag = system flag / flag-keyword / flag-extension (RFC 9051 §9).

    System flags come back spelled as the RFC spells them; ``\\Recent``
    cannot be stored by a client (RFC 9051 §2.3.2) and is refused here.
    """
    buf = _mv(buf)
    backslash = bytes(buf[:1]) == b"\\"
    name, rest = atom(buf[1:] if backslash else buf)
    text = name.decode("ascii")
    if not backslash:
        return text, rest
    spelled = _SYSTEM_BY_UPPER.get("\\" + text.upper(), "\\" + text)
    if spelled == "\\Recent":
        raise ImapParseError("\\Recent cannot be set by a client (RFC 9051 §2.3.2)")
    return spelled, rest


def paren_list(buf: Buf, item: Callable[[memoryview], Tuple[T, memoryview]],
               allow_empty: bool = True) -> Tuple[List[T], memoryview]:
    """ "(" [item *(SP item)] ")" (the list shape of RFC 9051 §9)."""
    buf = expect(b"(", buf)
    items: List[T] = []
    if bytes(buf[:1]) == b")":
        if not allow_empty:
            raise fail("at least one item", buf)
        return items, buf[1:]
    while True:
        value, buf = item(buf)
        items.append(value)
        if bytes(buf[:1]) == b")":
            return items, buf[1:]
        buf = sp(buf)


def flag_list(buf: Buf) -> Tuple[Tuple[str, ...], memoryview]:
    """flag-list = "(" [flag *(SP flag)] ")" (RFC 9051 §9)."""
    flags, rest = paren_list(buf, flag)
    return tuple(flags), rest


def check_depth(depth: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH (see the constant)."""
    if depth > MAX_DEPTH:
        raise ImapParseError("nesting deeper than %d levels" % MAX_DEPTH)


# --- command head (RFC 9051 §9 command) ---------------------------------------

@dataclass(frozen=True)
class CommandHead:
    """tag SP [UID SP] name, and what follows (``rest``, CRLF included)."""
    tag: bytes
    name: str
    uid: bool
    rest: memoryview


def command_head(buf: Buf) -> CommandHead:
    """tag SP command-name (RFC 9051 §9 command, §6.4.9 UID prefix)."""
    t, rest = tag(buf)
    try:
        rest = sp(rest)
        name, rest = atom(rest)
        uid = name.upper() == b"UID"
        if uid:
            name, rest = atom(sp(rest))
    except ImapParseError as exc:
        exc.tag = t
        raise
    return CommandHead(t, name.decode("ascii").upper(), uid, rest)
