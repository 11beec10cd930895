"""The decoded envelope fields SEARCH keeps per message in the folder's cache
(derived.py's entries, item ``KEPT_ITEM``), pure functions.

SEARCH FROM / TO / CC / BCC / SUBJECT compare the key as a case-insensitive
substring of the field's text with its RFC 2047 encoded words decoded
(RFC 9051 §6.4.4).  ``kept_values(header)`` computes those texts once, when a
message's cache entry is made: for each field of ``FIELDS``, in that order,
the casemapped value (i;unicode-casemap, collation.py) of every occurrence of the field, as
search_eval._Mail.values gives them.  The item is UTF-8 text::

    field *(FIELD_SEP field)          (exactly len(FIELDS) fields)
    field = *(VALUE_SEP value)        (empty: the message has no such field)

so that a needle with neither separator in it is a substring of some value of
field ``i`` exactly when its UTF-8 octets occur in the item's octets after
``i`` FIELD_SEPs and before the next: ``field_has``.  UTF-8 is
self-synchronizing (RFC 3629 §1: a character's first octet is never one of
another's continuation octets), so a match of the octets is a match of the
characters, and no value is decoded to answer it (search_columns.py does
that over a whole folder).  A value holding either separator is kept as a
JSON object instead (``{"subject": [...], ...}``), which ``decode`` reads and
``field_has`` leaves to the caller (None).
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from protocols.imap.collation import casemap
from protocols.imap.search_text import value_text
from protocols.message import Header, parse_header

# The entry item (derived.py, store/msgcache.py) and the fields it holds, in order.
KEPT_ITEM = "SEARCH"
FIELDS = (b"from", b"to", b"cc", b"bcc", b"subject")
FIELD_INDEX = {name: i for i, name in enumerate(FIELDS)}
# ASCII record and unit separators (ECMA-6): between fields, before each value.
FIELD_SEP, VALUE_SEP = "\x1e", "\x1f"
_FIELD_SEP_B, _VALUE_SEP_B = b"\x1e", b"\x1f"
_JSON = json.JSONDecoder()
# Ours: address fields' values remembered by their raw octets (senders and
# recipients repeat from message to message), as envelope._LISTS does: at
# most 4,096 fields of at most 512 octets.  Shared by the worker threads (a
# dict's get and set are atomic in CPython).
_ADDRESSES = frozenset((b"from", b"to", b"cc", b"bcc"))
_MEMO_MAX, _MEMO_FIELD = 4096, 512
_MEMO: Dict[bytes, str] = {}


def kept_values(header: bytes, head: Optional[Header] = None) -> Dict[str, bytes]:
    """``{KEPT_ITEM: item}`` for a header block (see the module docstring);
    ``head``: parse_header of it when the caller has it (the same fields)."""
    groups: Dict[bytes, List[str]] = {name: [] for name in FIELDS}
    get = groups.get
    for name, raw in (head if head is not None else parse_header(header)).fields:
        values = get(name)
        if values is not None:
            values.append(_value(raw) if name in _ADDRESSES else casemap(value_text(raw)))
    return {KEPT_ITEM: encode(groups)}


def _value(raw: bytes) -> str:
    """``casemap(value_text(raw))``, remembered for a short field."""
    value = _MEMO.get(raw)
    if value is None:
        value = casemap(value_text(raw))
        if len(raw) <= _MEMO_FIELD:
            if len(_MEMO) >= _MEMO_MAX:
                _MEMO.clear()         # a plain bound: the next messages refill it
            _MEMO[raw] = value
    return value


def encode(groups: Dict[bytes, List[str]]) -> bytes:
    """The item for these values (each field of FIELDS a key of ``groups``)."""
    values = [groups[name] for name in FIELDS]
    item = FIELD_SEP.join([VALUE_SEP + VALUE_SEP.join(v) if v else "" for v in values])
    # a separator inside a value adds one to its count
    if item.count(FIELD_SEP) != len(FIELDS) - 1 or item.count(VALUE_SEP) != sum(map(len, values)):
        kept = {name.decode("ascii"): groups[name] for name in FIELDS}
        return json.dumps(kept).encode("ascii")
    return item.encode("utf-8", "surrogatepass")


def decode(raw: Optional[bytes]) -> Optional[Dict[bytes, List[str]]]:
    """field name -> its values, from an item ``encode`` wrote; None for
    anything else (the caller then parses the header)."""
    if not raw:
        return None
    try:
        if raw[:1] == b"{":
            kept = _JSON.decode(raw.decode("ascii"))
            out = {name: kept[name.decode("ascii")] for name in FIELDS}
            if all(type(v) is list and all(type(s) is str for s in v) for v in out.values()):
                return out
            return None
        fields = raw.decode("utf-8", "surrogatepass").split(FIELD_SEP)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if len(fields) != len(FIELDS) or any(f and f[0] != VALUE_SEP for f in fields):
        return None
    return {name: f.split(VALUE_SEP)[1:] for name, f in zip(FIELDS, fields)}


def plain(raw: object) -> bool:
    """True when ``raw`` is an item in the separator form (``field_has`` can read it)."""
    return type(raw) is bytes and raw[:1] in (_FIELD_SEP_B, _VALUE_SEP_B) and \
        raw.count(_FIELD_SEP_B) == len(FIELDS) - 1


def field_has(raw: bytes, needle: bytes, index: int) -> bool:
    """Whether a value of field ``FIELDS[index]`` contains ``needle`` (the
    UTF-8 of a casemapped key holding neither separator; empty: whether the
    field is there) in an item for which ``plain`` holds."""
    if not needle:
        start = _field_start(raw, index)
        return start < len(raw) and raw[start:start + 1] == _VALUE_SEP_B
    pos = raw.find(needle)
    while pos >= 0:
        field = raw.count(_FIELD_SEP_B, 0, pos)
        if field >= index:
            return field == index
        pos = raw.find(needle, pos + 1)
    return False


def _field_start(raw: bytes, index: int) -> int:
    pos = 0
    for _ in range(index):
        pos = raw.index(_FIELD_SEP_B, pos) + 1
    return pos
