"""Evaluating SEARCH keys against one message, and the SEARCH / ESEARCH
responses (RFC 9051 §6.4.4, §7.3.4; RFC 3501 §6.4.4, §7.2.5), sans-I/O.

``matches`` answers for one message of the selected folder whether the parsed
key of search.py (``SearchKey``) holds: every key of RFC 9051 §6.4.4, rev1's
NEW / OLD / RECENT (RFC 3501 §6.4.4), OR / NOT / parenthesized lists,
sequence sets, UID sets and ``$`` (RFC 5182 §2.1), WITHIN's OLDER / YOUNGER
(RFC 5032 §2), MODSEQ (RFC 7162 §3.1.5), SAVEDBEFORE / SAVEDON / SAVEDSINCE
and SAVEDATESUPPORTED (RFC 8514).  Nothing here reads a file or the clock:
the message bytes and "now" come from the caller.

Text keys compare the key, decoded with the CHARSET, as a case-insensitive
substring (i;unicode-casemap, RFC 5051, collation.py; RFC 5255 §4.3) of decoded text: header fields unfolded with
their RFC 2047 encoded words decoded (RFC 9051 §6.4.4 "[MIME-HDRS] strings
... MUST be decoded before comparing text"), and the body's text parts with
base64 / quoted-printable undone and their charset converted.  Left out:
body parts whose type is neither text nor message (RFC 9051 §6.4.4 allows
it), HTML is searched as it is written (tags included), and no fuzzy or
word-stem matching.

``esearch`` and ``search_response`` format the untagged results (RFC 4731
§3.1, RFC 9051 §7.3.4, RFC 3501 §7.2.5, RFC 7162 §3.1.5 for MODSEQ).
"""

from __future__ import annotations

import bisect
import codecs
import datetime
import email.utils
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from protocols import mime
from protocols.backend.contracts import MessageMeta
from protocols.imap import wire
from protocols.imap.grammar import SequenceSet
from protocols.imap.search import DATE_KEYS, SearchKey
from protocols.imap import search_kept
from protocols.imap.collation import casemap
from protocols.imap.search_text import (_NOT_CHARSETS, surely_absent, _codec, _field_text, _raw_has,
                                        _transfer_decode, decode_words, value_text)
from protocols.message import Header, parse_header

__all__ = ["ADVERTISED_CHARSETS", "CONTENT_KEYS", "ENVELOPE_KEYS", "MAX_SEARCH_TEXT", "SearchCharsetError",
           "SearchContext", "check_charset", "decode_words", "esearch", "kept_values", "matches",
           "needle_of", "needs_content", "search_response"]

# Ours: at most 8 MiB of decoded text (header and body together) is searched
# per message, so one message with a huge text attachment cannot hold a
# worker for long (a few hundred ms of casefold and find); text past the cap
# is not searched.
MAX_SEARCH_TEXT = 8 * 1024 * 1024
# RFC 9051 §6.4.4: "Servers MUST support US-ASCII and UTF-8"; these are the
# names BADCHARSET lists.  Any other charset Python decodes is accepted too.
ADVERTISED_CHARSETS = ("UTF-8", "US-ASCII")
# RFC 2978 §2.3: a registered charset name is at most 40 characters.
MAX_CHARSET_NAME = 40
# Keys that need the message's content (header or body).
CONTENT_KEYS = frozenset({"HEADER", "BODY", "TEXT", "FROM", "TO", "CC", "BCC", "SUBJECT",
                          "SENTBEFORE", "SENTON", "SENTSINCE"})


@dataclass
class SearchContext:
    """What one SEARCH command is evaluated against (built once per command).

    ``tz`` sets the day boundaries of BEFORE / ON / SINCE and SAVED*: RFC 9051
    §6.4.4 compares the date "disregarding time and timezone", but a Maildir
    internal date (the file's mtime) is an instant without a zone, so a day
    needs one.  The session passes the server's local zone, as Dovecot does
    (index-search.c turns the received date into local time before comparing),
    so "ON today" means the day on the server's calendar.  UTC by default.
    """
    largest_seq: int            # messages in the view (for * in sequence sets)
    largest_uid: int            # highest UID in the view (for * in UID sets)
    saved: Tuple[int, ...]      # the SEARCHRES saved result as UIDs (RFC 5182), () if none
    now: float                  # seconds since the epoch (WITHIN OLDER/YOUNGER)
    charset: str = "UTF-8"
    tz: datetime.timezone = datetime.timezone.utc
    # Per-command memo: resolved sequence sets, decoded keys (by id of the
    # key object, which the memo keeps alive).
    _memo: Dict[int, tuple] = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, obj: object, make: Callable[[], object]) -> object:
        hit = self._memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = make()
        self._memo[id(obj)] = (obj, value)
        return value


class SearchCharsetError(Exception):
    """CHARSET names no charset we decode: the session answers
    ``NO [BADCHARSET (UTF-8 US-ASCII)]`` (RFC 9051 §6.4.4, §7.1)."""


def check_charset(charset: Optional[str]) -> str:
    """The Python codec name for a SEARCH CHARSET (RFC 9051 §6.4.4); no
    CHARSET means UTF-8 (RFC 9051 §6.4.4 "IMAP4rev2 servers MUST assume
    UTF-8"; rev1 says US-ASCII, of which UTF-8 is a superset)."""
    if charset is None:
        return "utf-8"
    name = charset.strip()
    try:
        if not name or len(name) > MAX_CHARSET_NAME:
            raise LookupError(name)
        info = codecs.lookup(name)
        b"a".decode(info.name)          # LookupError for rot13, base64, zlib...
    except (LookupError, UnicodeError):
        raise SearchCharsetError("unknown charset %r" % charset[:MAX_CHARSET_NAME])
    if info.name in _NOT_CHARSETS:
        raise SearchCharsetError("unknown charset %r" % charset[:MAX_CHARSET_NAME])
    return info.name


def needs_content(key: SearchKey) -> bool:
    """True when ``key`` (or a key inside it) reads the message's header or body."""
    if key.op in CONTENT_KEYS:
        return True
    if key.op in ("AND", "OR", "NOT"):
        return any(needs_content(k) for k in key.args)
    return False


class _Budget:
    """How much decoded text one message may still add (MAX_SEARCH_TEXT)."""

    def __init__(self, left: int):
        self.left = left

    def take(self, text: str) -> str:
        text = text[:max(self.left, 0)]
        self.left -= len(text)
        return text


class _Mail:
    """One message's decoded text, computed on first use and kept for the rest
    of one ``matches`` call (so an OR of many text keys decodes once)."""

    def __init__(self, data: Optional[bytes], kept: Optional[Dict[str, bytes]] = None):
        self.data = data
        self.kept = kept
        self.budget = _Budget(MAX_SEARCH_TEXT)
        self._head: Optional[Header] = None
        self._values: Dict[bytes, List[str]] = {}
        self._header_text: Optional[str] = None
        self._parts: Optional[List[Tuple[mime.Part, Optional[bool], bool]]] = None
        self._body: Optional[str] = None
        self._mime_headers: Optional[str] = None
        self._sent: Optional[Tuple[Optional[datetime.date]]] = None

    @property
    def head(self) -> Header:
        if self._head is None:
            self._head = parse_header(self.data or b"")
        return self._head

    def values(self, name: bytes) -> List[str]:
        """The values of the fields named ``name`` (lowercase): unfolded,
        decoded, casemapped (collation.casemap); only the fields a key asks for are decoded."""
        if name not in self._values:
            if self.kept is not None:
                self._take_kept()
            if name not in self._values:
                self._values[name] = [casemap(self.budget.take(value_text(raw)))
                                      for n, raw in self.head.fields if n == name]
        return self._values[name]

    def _take_kept(self) -> None:
        """The values search_kept.kept_values computed, read once; an item
        that is not what it writes is ignored (the header is parsed instead)."""
        raw, self.kept = self.kept.get(search_kept.KEPT_ITEM), None
        values = search_kept.decode(raw)
        if values is not None:
            self._values.update(values)     # ours, written whole (crc-checked, store/msgcache.py)

    def header_text(self) -> str:
        """The whole header, decoded, one field a line (TEXT)."""
        if self._header_text is None:
            groups: Dict[bytes, List[bytes]] = {}
            for name, raw in self.head.fields:
                groups.setdefault(name, []).append(raw)
            for name, raws in groups.items():       # values() in the same order, one pass
                if name not in self._values:
                    self._values[name] = [casemap(self.budget.take(value_text(raw)))
                                          for raw in raws]
            self._header_text = "\n".join(
                "%s: %s" % (name.decode("ascii", "replace").upper(), value)
                for name in groups for value in self._values[name])
        return self._header_text

    def parts(self) -> List[Tuple[mime.Part, Optional[bool], bool]]:
        if self._parts is None:
            self._parts = _body_text(self.data or b"")
        return self._parts

    def body_text(self) -> str:
        if self._body is None:
            self._body, self._mime_headers = _decoded_body(self.data or b"", self.parts(), self.budget)
        return self._body

    def all_text(self) -> str:
        """TEXT: the header, the body and the MIME header fields of its parts
        (RFC 9051 §6.4.4 "header (including MIME header fields) or body")."""
        body = self.body_text()
        return "\n".join((self.header_text(), body, self._mime_headers or ""))

    def body_has(self, needle: str, text: bool = False) -> bool:
        """``needle in body_text()`` (``all_text()`` when ``text``), the same
        answer without decoding where the raw octets give it: the needle is
        ASCII with no LF (so it cannot span two of the pieces the text joins
        with LF), and the message is under MAX_SEARCH_TEXT (so no piece is
        cut: the decoded text is never longer than the octets it comes from)."""
        data = self.data or b""
        if self._body is not None or "\n" in needle or not needle.isascii() \
                or len(data) >= MAX_SEARCH_TEXT:
            return needle in (self.all_text() if text else self.body_text())
        if not needle:
            return True
        raw_needle = needle.lower().encode("ascii")   # the octets' fast paths compare lowercase
        if not _HEADER_SEPARATORS.search(needle) and surely_absent(data, raw_needle, text):
            return False        # no MIME parse (search_text.surely_absent)
        if text and self._header_has(data, raw_needle, needle):
            return True
        for part, in_body, is_text in self.parts():
            if (in_body or (text and in_body is not None)) and _raw_has(
                    data[part.start:part.fields_end], raw_needle, needle, None):
                return True
            if is_text and _raw_has(_transfer_decode(data[part.body_start:part.end], part.encoding),
                                    raw_needle, needle, _codec(part.param("charset"))):
                return True
        return False

    def _header_has(self, data: bytes, raw_needle: bytes, needle: str) -> bool:
        """``needle in header_text()``.  Without white space, colon or line
        end in the needle, a match lies inside one field name or inside one
        run of a value, and those runs are the same in the raw fields
        (unfolding removes only a line end before white space): so an ASCII
        header without encoded words is searched as it is."""
        root = self.parts()[0][0]
        head = data[root.start:root.fields_end]
        if self._header_text is None and b"=?" not in head and head.isascii() \
                and not _HEADER_SEPARATORS.search(needle):
            return raw_needle in head.lower()
        return needle in self.header_text()

    def sent_date(self) -> Optional[datetime.date]:
        if self._sent is None:
            self._sent = (_date_field(self.head.get(b"date")),)
        return self._sent[0]


def kept_values(header: bytes, head: Optional[Header] = None) -> Dict[str, bytes]:
    """What derived.py keeps per message for the envelope keys (FROM, TO, CC,
    BCC, SUBJECT): each field's ``_Mail.values`` (search_kept.py), so such a
    SEARCH on a cached message parses and decodes no header.  Only for a
    header block the cache holds (at most derived.MAX_HEADER octets, far below
    MAX_SEARCH_TEXT: ``_Budget`` never cuts, so the values are the same
    whichever keys were evaluated first)."""
    return search_kept.kept_values(header, head)


def _date_field(value: Optional[bytes]) -> Optional[datetime.date]:
    """The calendar day of a Date: field as written, in its own zone
    (RFC 9051 §6.4.4 "disregarding time and timezone"; RFC 5256 §2.2: the
    SEARCH date keys "are not adjusted by time zone"; Dovecot does the
    same); None when it is missing or unparseable."""
    if value is None:
        return None
    try:
        t = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        return datetime.date(t[0], t[1], t[2]) if t else None
    except (ValueError, TypeError, IndexError, OverflowError):
        # parsedate_tz itself has raised on malformed input in some Pythons.
        return None


def _body_text(data: bytes) -> List[Tuple[mime.Part, Optional[bool], bool]]:
    """The parts BODY and TEXT read, from one mime.parse of ``data``, in
    the order of ``Part.walk``: (part, where its header goes, text leaf?).
    The header of an enclosed message/rfc822 is body text (True), the MIME
    header of any other part below the root is TEXT's alone (False), the
    root's is neither (None).  Leaves whose type is not text/* are skipped
    (RFC 9051 §6.4.4 "MAY exclude ... body parts with terminal content media
    types other than TEXT and MESSAGE")."""
    root = mime.parse(data)
    enclosed = {id(p.message) for p in root.walk() if p.message is not None}
    return [(part, None if part is root else id(part) in enclosed,
             not (part.is_multipart or part.message is not None or part.maintype != "text"))
            for part in root.walk()]


def _decoded_body(data: bytes, parts, budget: _Budget) -> Tuple[str, str]:
    """(BODY text, MIME header text of the body parts), casemapped: every
    text/* leaf decoded (RFC 2045 §6 transfer encoding, then its charset),
    and the header of every enclosed message/rfc822 (part of the outer
    body)."""
    body: List[str] = []
    headers: List[str] = []
    for part, in_body, is_text in parts:
        if budget.left <= 0:
            break
        if in_body is not None:
            head = data[part.start:part.fields_end]
            text = casemap(budget.take(_field_text(head)))
            (body if in_body else headers).append(text)
        if not is_text:
            continue
        # Decoding shrinks: base64 is 4 raw octets for 3, quoted-printable at
        # most 3 for 1; so 3x the budget in raw octets gives about the budget.
        raw = data[part.body_start:min(part.end, part.body_start + 3 * budget.left + 4096)]
        octets = _transfer_decode(raw, part.encoding)[:budget.left]
        body.append(casemap(budget.take(octets.decode(_codec(part.param("charset")), "replace"))))
    return "\n".join(body), "\n".join(headers)


# -- evaluation ------------------------------------------------------------------------

class _Ranges:
    """A sequence set resolved against a largest number, for O(log n) lookups
    (a UID set of 100,000 ranges tested against each message of a folder)."""

    def __init__(self, seqset: SequenceSet, largest: int):
        merged: List[List[int]] = []
        for lo, hi in sorted(seqset.resolve(largest)):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.starts = [lo for lo, _ in merged]
        self.ends = [hi for _, hi in merged]

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self.starts, n) - 1
        return i >= 0 and n <= self.ends[i]


# What separates field names and value runs in header_text() (_header_has).
_HEADER_SEPARATORS = re.compile(r"[ \t\r\n:]")


@dataclass
class _Message:
    """What one ``matches`` call evaluates against."""
    seq: int
    meta: MessageMeta
    recent: bool
    mail: _Mail
    ctx: SearchContext

    def has_flag(self, flag: str) -> bool:
        """RFC 9051 §9 note 1: flag names are case-insensitive."""
        if flag in self.meta.flags:
            return True
        folded = flag.casefold()
        return any(f.casefold() == folded for f in self.meta.flags)

    def in_set(self, seqset: SequenceSet, number: int, largest: int) -> bool:
        """``$`` is the saved result, kept as UIDs (RFC 5182 §2.1: the server
        maps it to sequence numbers or UIDs as the context wants)."""
        if seqset.saved:
            saved = self.ctx.memo(self.ctx.saved, lambda: frozenset(self.ctx.saved))
            return self.meta.uid in saved
        ranges = self.ctx.memo(seqset, lambda: (largest, _Ranges(seqset, largest)))
        if ranges[0] != largest:
            ranges = (largest, _Ranges(seqset, largest))
        return number in ranges[1]

    def needle(self, raw: bytes) -> str:
        return needle_of(raw, self.ctx)

    def day(self, when: Optional[float]) -> Optional[datetime.date]:
        if when is None:
            return None
        try:
            return datetime.datetime.fromtimestamp(when, self.ctx.tz).date()
        except (OverflowError, OSError, ValueError):
            return None


def needle_of(raw: bytes, ctx: SearchContext) -> str:
    """A search string decoded with the CHARSET (bad octets replaced) and
    casemapped (RFC 9051 §6.4.4: case-insensitive matching; RFC 5255 §4.3:
    by i;unicode-casemap, collation.py)."""
    return ctx.memo(raw, lambda: casemap(raw.decode(_codec_strict(ctx.charset), "replace")))


def _codec_strict(charset: str) -> str:
    try:
        return check_charset(charset)
    except SearchCharsetError:
        return "utf-8"


_FLAG_KEYS = {   # RFC 9051 §6.4.4: key -> (flag, set?)
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}
ENVELOPE_KEYS = {"FROM": b"from", "TO": b"to", "CC": b"cc", "BCC": b"bcc", "SUBJECT": b"subject"}
_DATE_TESTS = {   # BEFORE / ON / SINCE on a day (RFC 9051 §6.4.4, RFC 8514 §4.3)
    "BEFORE": lambda day, d: day < d, "ON": lambda day, d: day == d,
    "SINCE": lambda day, d: day >= d,
}


def _date_key(op: str, m: _Message, wanted: datetime.date) -> bool:
    if op.startswith("SENT"):
        # Our choice: no Date: field, or one we cannot read, matches no SENT*
        # key (RFC 9051 §6.4.4 speaks of "messages whose Date: header field"
        # is before / on / since; a message without one is neither).  Dovecot
        # reads such a date as 0, 1970 (lib-storage index-mail.c, "0 = not
        # found / invalid"), so its SENTBEFORE matches them; the fallback to
        # the internal date is SORT's (RFC 5256 §2.2), not SEARCH's.
        day, test = m.mail.sent_date(), op[4:]
    elif op.startswith("SAVED"):
        # RFC 8514 §4.3: without a save date, the internal date is used.
        save = m.meta.save_date if m.meta.save_date is not None else m.meta.internal_date
        day, test = m.day(save), op[5:]
    else:
        day, test = m.day(m.meta.internal_date), op
    return day is not None and _DATE_TESTS[test](day, wanted)


def _header_key(m: _Message, name: str, value: bytes) -> bool:
    """HEADER field-name string (RFC 9051 §6.4.4): a field of that name whose
    text contains the string; an empty string tests presence."""
    needle = m.needle(value)
    return any(needle in v for v in m.mail.values(name.strip().lower().encode("ascii", "replace")))


def _within(op: str, m: _Message, seconds: int) -> bool:
    """RFC 5032 §2: the target is now minus the interval; OLDER matches an
    internal date at or before it, YOUNGER at or after, to the second."""
    target = int(m.ctx.now) - seconds
    internal = int(m.meta.internal_date)
    return internal <= target if op == "OLDER" else internal >= target


def _simple(key: SearchKey, m: _Message) -> bool:
    """Every key but AND / OR / NOT."""
    op, args = key.op, key.args
    if op in _FLAG_KEYS:
        flag, want = _FLAG_KEYS[op]
        return m.has_flag(flag) == want
    if op in ENVELOPE_KEYS:
        needle = m.needle(args[0])
        return m.mail.data is not None and any(
            needle in v for v in m.mail.values(ENVELOPE_KEYS[op]))
    if op in ("BODY", "TEXT"):
        if m.mail.data is None:
            return False
        return m.mail.body_has(m.needle(args[0]), text=op == "TEXT")
    if op == "HEADER":
        return m.mail.data is not None and _header_key(m, args[0], args[1])
    if op in DATE_KEYS:
        return _date_key(op, m, args[0])
    test = _OTHER_KEYS.get(op)
    return test(m, args) if test is not None else False


_OTHER_KEYS: Dict[str, Callable[[_Message, tuple], bool]] = {
    "ALL": lambda m, a: True,
    "SEQ": lambda m, a: m.in_set(a[0], m.seq, m.ctx.largest_seq),
    "UID": lambda m, a: m.in_set(a[0], m.meta.uid, m.ctx.largest_uid),
    "LARGER": lambda m, a: m.meta.size > a[0],
    "SMALLER": lambda m, a: m.meta.size < a[0],
    "KEYWORD": lambda m, a: m.has_flag(a[0]),
    "UNKEYWORD": lambda m, a: not m.has_flag(a[0]),
    # RFC 3501 §6.4.4 (rev1): NEW is RECENT UNSEEN, OLD is NOT RECENT.
    "RECENT": lambda m, a: m.recent,
    "NEW": lambda m, a: m.recent and not m.has_flag("\\Seen"),
    "OLD": lambda m, a: not m.recent,
    "OLDER": lambda m, a: _within("OLDER", m, a[0]),
    "YOUNGER": lambda m, a: _within("YOUNGER", m, a[0]),
    # RFC 7162 §3.1.5: mod-sequence "equal to or greater than"; one modseq
    # per message here, so the entry name and type are ignored (as it says).
    "MODSEQ": lambda m, a: m.meta.modseq >= a[0],
    # RFC 8514 §4.3: the store keeps (or falls back for) a save date.
    "SAVEDATESUPPORTED": lambda m, a: True,
}


def _cheap_first(keys: tuple) -> List[SearchKey]:
    """Keys that need no content first, so a flag test that fails spares the
    decoding (AND and OR results do not depend on order)."""
    return sorted(keys, key=needs_content)


def _eval(key: SearchKey, m: _Message) -> bool:
    if key.op == "AND":
        return all(_eval(k, m) for k in m.ctx.memo(key, lambda: _cheap_first(key.args)))
    if key.op == "OR":
        return any(_eval(k, m) for k in m.ctx.memo(key, lambda: _cheap_first(key.args)))
    if key.op == "NOT":
        return not _eval(key.args[0], m)
    return _simple(key, m)


def matches(key: SearchKey, seq: int, meta: MessageMeta, recent: bool,
            data: Optional[bytes], ctx: SearchContext, kept: Optional[Dict[str, bytes]] = None) -> bool:
    """Whether message ``seq`` (``meta``, ``recent`` for this session) matches
    ``key`` (RFC 9051 §6.4.4).  ``data`` is the whole message in CRLF form
    when ``needs_content(key)``, else None; content keys never match without
    it.  ``kept``: the message's cache entry holding ``kept_values`` of its
    header (derived.py), used instead of parsing ``data``.  Never raises on
    any message content."""
    return _eval(key, _Message(seq, meta, recent, _Mail(data, kept), ctx))


# -- responses -------------------------------------------------------------------------

def esearch(tag: bytes, uid: bool, numbers: Sequence[int], returns: Tuple[str, ...],
            modseq: Optional[int] = None) -> bytes:
    """The untagged ESEARCH response (RFC 4731 §3.1, RFC 9051 §7.3.4):
    ``* ESEARCH (TAG "a1") UID MIN 1 MAX 9 COUNT 3 ALL 1:3,9``.

    No result options (or ``RETURN ()``) means ALL (RFC 4731 §3.1, RFC 9051
    §6.4.4).  With no match MIN, MAX and ALL are left out and COUNT stays
    (RFC 9051 §7.3.4 "MUST NOT include"... "MUST always be included"); the
    response is still sent.  MODSEQ follows a non-empty result only
    (RFC 7162 §3.1.10, RFC 4731 §3.2; the caller picks its value).  SAVE alone
    suppresses the response (RFC 9051 §6.4.4): ``b""`` then.
    """
    opts = set(returns or ()) or {"ALL"}
    if opts == {"SAVE"}:
        return b""
    found = sorted(set(numbers))
    out = esearch_parts(tag, uid, found, opts, wire.sequence_set)
    if found and modseq is not None:
        out.append(b"MODSEQ %d" % modseq)
    return wire.untagged(b" ".join(out))


def esearch_parts(tag: bytes, uid: bool, ordered: Sequence[int], opts, all_set) -> List[bytes]:
    """``ESEARCH (TAG "a") [UID] [MIN n] [MAX n] [COUNT n] [ALL set]`` as parts
    (RFC 4731 §3.1): MIN / MAX the first and last of ``ordered`` (ascending for
    SEARCH, the sort order for ESORT, RFC 5267 §3.1), ALL through ``all_set``."""
    out = [b"ESEARCH (TAG " + wire.quoted(tag) + b")"]
    if uid:
        out.append(b"UID")
    if ordered and "MIN" in opts:
        out.append(b"MIN %d" % ordered[0])
    if ordered and "MAX" in opts:
        out.append(b"MAX %d" % ordered[-1])
    if "COUNT" in opts:
        out.append(b"COUNT %d" % len(ordered))
    if ordered and "ALL" in opts:
        out.append(b"ALL " + all_set(ordered))
    return out


def search_response(numbers: Sequence[int], modseq: Optional[int] = None) -> bytes:
    """``* SEARCH 2 3 5`` (RFC 3501 §7.2.5; ascending, no duplicates); an
    empty result is ``* SEARCH``.  With ``modseq``, a non-empty result ends
    in ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
    found = sorted(set(numbers))
    line = b"SEARCH" + b"".join(b" %d" % n for n in found)
    if found and modseq is not None:
        line += b" (MODSEQ %d)" % modseq
    return wire.untagged(line)
