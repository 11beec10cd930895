"""The header section of an Internet message: split, fields, unfolding.

RFC 5322 §2.1: a message is a header section, then optionally an empty line
and a body.  §2.2: a field is a name, a colon and a body; §2.2.3: a long field
is folded by a line break before white space, and unfolding removes those line
breaks.  One implementation for every reader of headers in mailsrv (the relay's
DSN, the submission fixups, sendmail -t, loop detection, the MIME tree of
protocols/mime.py).

Line ends may be CRLF (the wire, the queue) or LF (Maildir files, store/deliver.py):
every function here accepts both, and fields it adds use the message's own.

The header section ends at the first line that is neither a field nor the fold
of one.  When that line is empty it is the separator and the body follows it;
any other line starts the body at once (``Header.separator`` is then empty), as
Python's email parser reads it (its MissingHeaderBodySeparatorDefect).
DEVIATION(RFC 5322 §3.6): a message with no header section at all, or with lines
RFC 5322 forbids, is read as it is, never refused here.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Set, Tuple

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
# A field as parse_header reads it: its name (group 1; RFC 5322 §3.6.8
# field-name = 1*ftext, printable US-ASCII except ":"; white space before the
# colon is the obsolete syntax of §4.5), the rest of its first line, then
# every following line that starts with white space (§2.2.3 folds).
_FIELD_AND_FOLDS = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*")
# The same, the whole field as group 1 and its name as group 2 (for findall).
_FIELDS_TILED = re.compile(rb"(([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*)")


@dataclass
class Header:
    """A parsed header section of ``data[start:end]``.

    ``fields``: (lowercased name, raw bytes of the field with its folds and line
    ends) in order.  Offsets are into the data given to :func:`parse_header`:
    ``data[start:fields_end]`` is the fields, ``data[fields_end:body_start]`` the
    empty line that separates them from the body (empty when there is none).
    """
    start: int
    fields_end: int
    body_start: int
    fields: List[Tuple[bytes, bytes]] = field(default_factory=list)
    defects: List[str] = field(default_factory=list)

    @property
    def has_separator(self) -> bool:
        return self.body_start > self.fields_end

    def names(self) -> Set[bytes]:
        return {name for name, _ in self.fields}

    def get_all(self, name: bytes) -> List[bytes]:
        """Unfolded values of every field named ``name`` (any case)."""
        key = name.lower()
        return [field_value(raw) for n, raw in self.fields if n == key]

    def get(self, name: bytes) -> Optional[bytes]:
        """The unfolded value of the first field named ``name``, or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def count(self, name: bytes) -> int:
        key = name.lower()
        return sum(1 for n, _ in self.fields if n == key)


def _tiled_fields(data: bytes, start: int, end: int) -> Optional[Header]:
    """The fast path of parse_header: the usual header, fields then an empty
    line, read with one ``findall`` up to the first empty line.  When the
    fields found tile ``data[start:sep]`` exactly, they are what the loop of
    parse_header finds one match at a time (a match cannot run past ``sep``:
    the line before it ends with LF and the empty line starts with no white
    space); otherwise None, and the loop reads it."""
    if not isinstance(data, (bytes, bytearray)):
        return None                # a memoryview has no find: the loop reads it as before
    lf, crlf = data.find(b"\n\n", start, end), data.find(b"\n\r\n", start, end)
    sep = crlf if lf < 0 or (0 <= crlf < lf) else lf
    if sep < 0:
        return None
    sep += 1                       # the empty line begins after the LF
    found = _FIELDS_TILED.findall(data, start, sep)
    if not found or sum(map(len, [raw for raw, _name in found])) != sep - start:
        return None
    nl = data.find(b"\n", sep, end)
    return Header(start, sep, nl + 1, [(name.lower(), raw) for raw, name in found])


def parse_header(data: bytes, start: int = 0, end: Optional[int] = None) -> Header:
    """The header section at ``data[start:end]`` (RFC 5322 §2.1, §2.2).

    One regex match per field, its folds included (``_FIELD_AND_FOLDS``), so
    no Python work is done per line; the usual header in one ``findall``
    (``_tiled_fields``)."""
    global _LAST
    end = len(data) if end is None else end
    last = _LAST
    if last[0] is data and last[1] == start and last[2] == end:
        return last[3]
    head = _parse_header(data, start, end)
    if type(data) is bytes and len(data) <= _LAST_MAX:
        _LAST = (data, start, end, head)
    return head


# The last header parsed (one immutable bytes object and range -> its Header,
# which callers only read): the IMAP cache's entry parses a header block for
# ENVELOPE and again for the SEARCH values (protocols/imap/fetch_cache.py).
# Ours: kept for data up to 64 KiB (protocols/imap/derived.py MAX_HEADER), so
# the reference held is small.
_LAST_MAX = 64 * 1024
_LAST: Tuple[object, int, int, Optional[Header]] = (None, 0, 0, None)


def _parse_header(data: bytes, start: int, end: int) -> Header:
    fast = _tiled_fields(data, start, end)
    if fast is not None:
        return fast
    head = Header(start, end, end)
    fields = head.fields
    match = _FIELD_AND_FOLDS.match
    pos = start
    while pos < end:
        m = match(data, pos, end)
        if m is not None:
            fields.append((m.group(1).lower(), m.group()))
            pos = m.end()
            continue
        if data[pos] in b"\r\n":
            nl = data.find(b"\n", pos, end)
            line_end = end if nl < 0 else nl + 1
            if not data[pos:line_end].rstrip(b"\r\n"):
                head.fields_end, head.body_start = pos, line_end
                return head
        head.defects.append("header section ends without an empty line")
        head.fields_end = head.body_start = pos
        return head
    return head


def unfold(raw: bytes) -> bytes:
    """RFC 5322 §2.2.3: remove each line break that is followed by white space."""
    return _FOLD.sub(b"", raw)


def field_value(raw: bytes) -> bytes:
    """The unfolded body of one raw field: after the colon, without the white
    space around it and the final line end (RFC 5322 §2.2)."""
    value = raw[raw.index(b":") + 1:].rstrip(b"\r\n")
    return (unfold(value) if b"\n" in value else value).strip(b" \t")


def line_end_of(data: bytes, start: int = 0) -> bytes:
    """The line end the message uses (its first line's), CRLF when it has none."""
    nl = data.find(b"\n", start)
    if nl < 0:
        return b"\r\n"
    return b"\r\n" if nl > start and data[nl - 1:nl] == b"\r" else b"\n"


def header_block(data: bytes) -> bytes:
    """The fields of the header section with their line ends, no empty line."""
    head = parse_header(data)
    return data[:head.fields_end]


def add_fields(data: bytes, lines: Iterable[bytes], head: Optional[Header] = None) -> bytes:
    """``data`` with the fields ``lines`` (each without its line end) added at
    the end of the header section, in the message's own line ends.  A message
    without a header section gets one, and the empty line before its body."""
    lines = list(lines)
    if not lines:
        return data
    head = head or parse_header(data)
    eol = line_end_of(data)
    at = head.fields_end
    before = data[:at]
    if before and not before.endswith(b"\n"):
        before += eol              # a last field without its line end
    added = b"".join(line + eol for line in lines)
    if at == 0 and data and not head.has_separator:
        added += eol               # no header section at all: the body follows an empty line
    return before + added + data[at:]


def remove_fields(data: bytes, names: Iterable[bytes], head: Optional[Header] = None) -> bytes:
    """``data`` without the fields named ``names`` (any case), folds included."""
    drop = {n.lower() for n in names}
    head = head or parse_header(data)
    kept = b"".join(raw for name, raw in head.fields if name not in drop)
    return data[:head.start] + kept + data[head.fields_end:]


def crlf_length(data: bytes, start: int = 0, end: Optional[int] = None) -> int:
    """The length of ``data[start:end]`` once every bare LF is sent as CRLF
    (what IMAP and POP3 count for a Maildir file stored with LF)."""
    end = len(data) if end is None else end
    return (end - start) + data.count(b"\n", start, end) - data.count(b"\r\n", start, end)


@functools.lru_cache(maxsize=4)         # one format per second, not per message
def _utc_date(second: int) -> str:
    """RFC 5322 §3.3 date-time of ``second`` in UTC, "+0000" (seconds are its finest unit)."""
    date = email.utils.format_datetime(datetime.datetime.fromtimestamp(second, datetime.timezone.utc))
    return date.replace("-0000", "+0000")


def trace_field(clauses: List[str], rcpt: Optional[str], when: float) -> bytes:
    """A Received: field (RFC 5321 §4.4) from its leading clauses, one per
    line: "for" only when there is exactly one recipient (RFC 5321 §7.2 warns
    that "for" with several recipients discloses Bcc), then "; " and the
    date-time in UTC (RFC 5322 §3.3, "+0000"), folded with TAB (RFC 5322 §2.2.3)."""
    date = _utc_date(int(when))
    lines = ["Received: " + clauses[0]] + ["\t" + c for c in clauses[1:]]
    if rcpt is not None:
        lines.append("\tfor <%s>; %s" % (rcpt, date))
    else:
        lines[-1] += ";"
        lines.append("\t" + date)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
