"""What SORT (RFC 5256 §3, RFC 5957) and THREAD (RFC 5256 §3) read of a
message, computed once from its header block and kept in the folder's cache
(contracts.OpenFolder.derived, kind ``KIND``), pure functions.

``compute_sort`` is a ``compute`` with ``header_end`` (fetch_cache.py): the
backend reads only the header block of a message the cache lacks, on its
worker, and keeps the entry on disk, so a SORT after a restart reads no
message file.  The entry's one item (``ITEM``) holds ``Keys``'s fields in
order, as UTF-8 text separated by FIELD_SEP (the references by VALUE_SEP;
None and False as ""), or as a JSON list when a value holds a separator:

- ``date``: the sent date (RFC 5256 §2.2) as seconds since the epoch in
  UTC, or None when there is no Date field or it cannot be read (the
  session then uses INTERNALDATE, as §2.2 says);
- ``subject``: the i;unicode-casemap key (collation.py, RFC 5256 §7) of the
  base subject (§2.1, ``base_subject``); ``reply``: whether the extraction
  removed a reply/forward marker (§4 REFERENCES);
- ``from_``, ``to``, ``cc``: the casemap key of the addr-mailbox of the
  field's first address (§3: FROM, TO, CC; "" when absent);
- ``display_from``, ``display_to``: RFC 5957 §3's DISPLAYFROM / DISPLAYTO
  keys: the first address's display name, RFC 2047-decoded, when it has a
  non-empty one, else its addr-spec (mailbox@host);
- ``message_id``: the normalized Message ID (§4 REFERENCES, ``msg_ids``) or
  None; ``refs``: the normalized references (References, else the first
  valid Message ID of In-Reply-To).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from protocols.imap import fetch_cache
from protocols.imap.collation import casemap
from protocols.imap.envelope import address_list
from protocols.imap.search_text import decode_words, value_text
from protocols.message import field_value, parse_header

# The cache entries' kind (contracts.OpenFolder.derived): a change to what is
# kept or how takes a new version.
KIND = "imap-sort-v3"
ITEM = "SORT"
# Ours: references kept per message.  RFC 5322 §3.6.4 sets no limit; real
# References fields hold tens; 200 keeps a thread of any real length linked
# (its first and last IDs are what matter, RFC 5322 §3.6.4) and bounds the
# threading work a crafted header can cause.
MAX_REFS = 200
# Ours: the longest base subject and address key kept (octets of text; a
# longer one is cut: only its order among equals of that length changes).
MAX_TEXT = 1000


class Keys(NamedTuple):
    date: Optional[int]
    subject: str
    reply: bool
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: Optional[str]
    refs: Tuple[str, ...]


# -- RFC 5256 §2.1 base subject ------------------------------------------------------

_WS = re.compile(r"[ \t\r\n]+")
# subj-blob = "[" *BLOBCHAR "]" *WSP
_BLOB = r"\[[^\[\]]*\] *"
# subj-leader = (*subj-blob subj-refwd) / WSP;
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_LEADER = re.compile(r"(?:%s)*(?:re|fwd?) *(?:%s)?:| " % (_BLOB, _BLOB), re.I)
_BLOB_RUN = re.compile("(?:%s)+" % _BLOB)
# The first characters of a subj-leader, subj-blob or subj-fwd-hdr; the last
# ones of a subj-trailer (RFC 5256 §5).
_LEADS, _TRAILS = frozenset(" [rRfF"), frozenset(" )")


def base_subject(text: str) -> Tuple[str, bool]:
    """(base subject, whether it is a reply or forward) of a decoded Subject
    (RFC 5256 §2.1 steps 1-7; §4 REFERENCES: a subj-refwd, a "(fwd)"
    trailer or the subj-fwd-hdr / subj-fwd-trl removed).  The text stays
    whole; ``start`` and ``end`` move, so many artifacts cost one pass."""
    text = _WS.sub(" ", text)                                   # (1)
    if not text or (text[0] not in _LEADS and text[-1] not in _TRAILS):
        return text, False      # nothing can match: no leader, blob, [fwd: nor trailer
    reply = False
    start, end = 0, len(text)
    while True:
        while end > start:                                      # (2) subj-trailer
            if text[end - 1] == " ":
                end -= 1
            elif end - start >= 5 and text[end - 5:end].lower() == "(fwd)":
                end -= 5
                reply = True
            else:
                break
        while True:                                             # (5): (3) and (4) until none
            m = _LEADER.match(text, start, end)                 # (3)
            if m is not None:
                reply = reply or m.group() != " "
                start = m.end()
                continue
            m = _BLOB_RUN.match(text, start, end)               # (4), blob after blob:
            if m is None:                                       # none starts a leader (3) (that
                break                                           # failed at the run's start)
            if m.end() < end:                                   # a non-empty subj-base remains
                start = m.end()
                continue
            last = text.rfind("[", start, end)                  # the last blob is the subj-base
            if last == start:
                break
            start = last
        if end - start >= 6 and text[start:start + 5].lower() == "[fwd:" and text[end - 1] == "]":   # (6)
            start, end = start + 5, end - 1
            reply = True
            continue
        return text[start:end], reply                           # (7)


# -- RFC 5256 §2.2 sent date ----------------------------------------------------------

# RFC 5322 §3.3 date-time in its usual form (day-of-week optional, seconds
# optional, a numeric zone): read by one match; anything else goes to the
# lenient parser of the email package (obsolete zones, two-digit years...).
_USUAL_DATE = re.compile(rb"[ \t]*(?:[A-Za-z]{3},[ \t]*)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) "
                         rb"(\d\d):(\d\d)(?::(\d\d))? ([+-])(\d\d)(\d\d)(?:[ \t]*\([^()]*\))?[ \t]*")
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()
_MONTHS = {m: i + 1 for i, m in enumerate((b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug",
                                            b"sep", b"oct", b"nov", b"dec"))}


def sent_date(value: Optional[bytes]) -> Optional[int]:
    """The Date field's value as UTC seconds (RFC 5256 §2.2): an invalid
    zone counts as UTC (parsedate_tz answers None for it); None when the
    field is missing or unreadable (INTERNALDATE is then used, §2.2)."""
    if value is None:
        return None
    m = _USUAL_DATE.fullmatch(value)
    if m is not None and m.group(2).lower() in _MONTHS:
        day, hour, minute, sec = int(m.group(1)), int(m.group(4)), int(m.group(5)), int(m.group(6) or 0)
        if 1 <= day <= 31 and hour < 24 and minute < 60 and sec <= 60:
            offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60
            try:
                days = datetime.date(int(m.group(3)), _MONTHS[m.group(2).lower()], day).toordinal() - _EPOCH_DAY
            except ValueError:
                return None                     # 31 Feb: no such day
            when = days * 86400 + hour * 3600 + minute * 60 + sec
            return when - offset if m.group(7) == b"+" else when + offset
    try:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        if parsed is None:
            return None
        if parsed[9] is None:
            parsed = parsed[:9] + (0,)
        return int(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


# -- addresses: RFC 5256 §3, RFC 5957 §3 ----------------------------------------------

def _text(raw: Optional[bytes]) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")


def first_address(value: Optional[bytes]) -> Optional[tuple]:
    """The first address structure of an address field as the ENVELOPE
    gives it (RFC 9051 §7.5.2): for a group, its start (NIL NIL name NIL),
    whose addr-mailbox is the group's name (Dovecot reads RFC 5256 §3 so)."""
    addrs = address_list(value)
    return addrs[0] if addrs else None


# Ours: address fields' keys remembered by their octets (senders and
# recipients repeat), as search_kept._MEMO: at most 4,096 fields of at most
# 512 octets; shared by the worker threads (a dict's get and set are atomic
# in CPython).
_MEMO_MAX, _MEMO_FIELD = 4096, 512
_MEMO: Dict[bytes, Tuple[str, str]] = {}


def address_keys(value: Optional[bytes]) -> Tuple[str, str]:
    """(addr-mailbox, display key) of the field's first address (RFC 5256
    §3; RFC 5957 §3: the display-name decoded per RFC 2047 when non-empty,
    else the addr-spec), both as casemap keys; ("", "") without one."""
    if value is None:
        return "", ""
    keys = _MEMO.get(value)
    if keys is None:
        keys = _address_keys(value)
        if len(value) <= _MEMO_FIELD:
            if len(_MEMO) >= _MEMO_MAX:
                _MEMO.clear()         # a plain bound: the next messages refill it
            _MEMO[value] = keys
    return keys


def _address_keys(value: bytes) -> Tuple[str, str]:
    addr = first_address(value)
    if addr is None:
        return "", ""
    mailbox = _text(addr[2])
    display = decode_words(_text(addr[0])).strip() if addr[0] else ""
    if not display:
        display = mailbox if addr[3] is None else "%s@%s" % (mailbox, _text(addr[3]))
    return casemap(mailbox[:MAX_TEXT]), casemap(display[:MAX_TEXT])


# -- RFC 5256 §4 Message IDs ----------------------------------------------------------

_MSG_ID = re.compile(rb"<([^<>]*)>")
_CFWS = re.compile(rb'[ \t\r\n]+|\\(?=.)|"')


def msg_ids(value: Optional[bytes]) -> List[str]:
    """The valid Message IDs of a field, normalized (RFC 5256 §4: quoting
    removed, so <"a"@b> is <a@b>; a valid one has a non-empty local part
    and domain, RFC 5322 §3.6.4); case kept (§4: comparisons are
    case-sensitive)."""
    if not value:
        return []
    out = []
    for m in _MSG_ID.finditer(value):
        inner = _CFWS.sub(b"", m.group(1))
        local, at, domain = inner.rpartition(b"@")
        if at and local and domain:
            out.append(inner.decode("utf-8", "replace"))
    return out


# -- the entry ------------------------------------------------------------------------

_FIELDS = frozenset((b"date", b"subject", b"from", b"to", b"cc", b"message-id", b"references",
                     b"in-reply-to"))


def keys_of(header: bytes) -> Keys:
    """``Keys`` of a header block (or a whole message) in CRLF form."""
    firsts: Dict[bytes, bytes] = {}
    for name, raw in parse_header(header).fields:
        if name in _FIELDS and name not in firsts:
            firsts[name] = raw
    get = firsts.get

    def value(name: bytes) -> Optional[bytes]:
        raw = get(name)
        return None if raw is None else field_value(raw)

    subject, reply = base_subject(value_text(get(b"subject")) if get(b"subject") else "")
    from_, display_from = address_keys(value(b"from"))
    to, display_to = address_keys(value(b"to"))
    cc, _ = address_keys(value(b"cc"))
    ids = msg_ids(value(b"message-id"))
    refs = msg_ids(value(b"references"))
    if not refs:
        refs = msg_ids(value(b"in-reply-to"))[:1]
    return Keys(sent_date(value(b"date")), casemap(subject[:MAX_TEXT]), reply, from_, to, cc,
                display_from, display_to, ids[0] if ids else None, _bounded(refs))


def _bounded(refs: List[str]) -> Tuple[str, ...]:
    """At most MAX_REFS references: the first (the thread's start) and the
    last ones (the parent and its ancestors, RFC 5322 §3.6.4)."""
    if len(refs) > MAX_REFS:
        refs = refs[:1] + refs[1 - MAX_REFS:]
    return tuple(refs)


# ASCII record and unit separators (ECMA-6), as search_kept.py's.
FIELD_SEP, VALUE_SEP = "\x1e", "\x1f"


def encode(keys: Keys) -> bytes:
    """The item for ``keys`` (see the module docstring)."""
    texts = [keys.subject, keys.from_, keys.to, keys.cc, keys.display_from, keys.display_to,
             keys.message_id or ""] + list(keys.refs)
    if any(FIELD_SEP in t or VALUE_SEP in t for t in texts):
        return json.dumps(list(keys)).encode("ascii")
    return FIELD_SEP.join(["" if keys.date is None else str(keys.date), keys.subject, "1" if keys.reply else "",
                           keys.from_, keys.to, keys.cc, keys.display_from, keys.display_to,
                           keys.message_id or "", VALUE_SEP.join(keys.refs)]).encode("utf-8", "surrogatepass")


# The lighter entry for a sort on dates alone (``compute_date``): the sent
# date, so that a first SORT (DATE) reads and parses one field per message.
DATE_KIND = "imap-sort-date-v1"
DATE_ITEM = "DATE"
_DATE_FIELD = re.compile(rb"^date[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*", re.I | re.M)


class Dated(NamedTuple):
    """A message's sent date alone (what ``Keys.date`` holds)."""
    date: Optional[int]


def compute_date(data: bytes) -> Dict[str, bytes]:
    """``{DATE_ITEM: the sent date's digits, or b""}`` of a header block or a
    whole message: the first Date field inside the header (where
    parse_header ends it: fetch_cache.header_end), as ``keys_of`` reads it."""
    end = fetch_cache.header_end(data, True)
    m = _DATE_FIELD.search(data, 0, end)
    date = sent_date(field_value(m.group())) if m is not None else None
    return {DATE_ITEM: b"" if date is None else b"%d" % date}


compute_date.header_end = fetch_cache.header_end    # type: ignore[attr-defined]


def decode_date(entry: Optional[Dict[str, bytes]]) -> Optional[Dated]:
    """``Dated`` from a ``compute_date`` entry; None for anything else."""
    try:
        raw = entry[DATE_ITEM]
        return Dated(int(raw) if raw else None)
    except (KeyError, TypeError, ValueError):
        return None


def compute_sort(data: bytes) -> Dict[str, bytes]:
    """The cache entry (see the module docstring); ``data`` is the header
    block or the whole message, CRLF form."""
    return {ITEM: encode(keys_of(data))}


compute_sort.header_end = fetch_cache.header_end    # type: ignore[attr-defined]

_JSON = json.JSONDecoder()


def decode(entry: Optional[Dict[str, bytes]]) -> Optional[Keys]:
    """``Keys`` from a cache entry ``compute_sort`` made; None for anything else."""
    try:
        raw = entry[ITEM]
        if raw[:1] == b"[":
            keys = Keys(*_JSON.decode(raw.decode("ascii")))
            return keys._replace(refs=tuple(keys.refs))
        f = raw.decode("utf-8", "surrogatepass").split(FIELD_SEP)
        return Keys(int(f[0]) if f[0] else None, f[1], f[2] == "1", f[3], f[4], f[5], f[6], f[7], f[8] or None,
                    tuple(f[9].split(VALUE_SEP)) if f[9] else ())
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
