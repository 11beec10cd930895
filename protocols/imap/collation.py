"""The i;unicode-casemap comparator (RFC 5051), pure functions.

RFC 5051 §2: each string is mapped to a key by (1) the simple titlecase
mapping of each character (UnicodeData.txt's titlecase field: a character
without one stays as it is) and (2) the normalization form NFKD (RFC 5051 §2
step 2: "decompose ... using the compatibility decomposition"); the keys are
then compared octet by octet as UTF-8 (i;octet).  Python compares strings
by code point, which orders them as their UTF-8 octets do (RFC 3629 §1), so
``casemap(a) < casemap(b)`` is the comparator's ordering and ``==`` its
equality; a substring match (RFC 4790 §4.2.2) is ``casemap(needle) in
casemap(value)``.

Used by SORT and THREAD (RFC 5256 §7: "MUST collate strings according to
the i;unicode-casemap collation") and announced with I18NLEVEL=1 (RFC 5255
§4.3: the default comparator).  ``unicodedata`` supplies the Unicode tables
of the running Python.
"""

from __future__ import annotations

import unicodedata
from typing import Dict

COMPARATOR = "i;unicode-casemap"
# Ours: characters whose mapping is remembered (the scripts of a mailbox's
# subjects and names repeat); a plain bound, cleared when full.
_MEMO_MAX = 65536
_CHARS: Dict[str, str] = {}


def _title(ch: str) -> str:
    """RFC 5051 §2 step 1: the simple titlecase mapping of one character.
    ``str.title`` gives the full mapping (SpecialCasing.txt: "ß" -> "Ss");
    where that is longer than one character the simple mapping is the
    single-character one UnicodeData gives, which ``upper`` of it shares for
    those characters, else the character itself."""
    mapped = ch.title()
    if len(mapped) == 1:
        return mapped
    upper = ch.upper()
    return upper if len(upper) == 1 else ch


def _char_key(ch: str) -> str:
    key = _CHARS.get(ch)
    if key is None:
        key = unicodedata.normalize("NFKD", _title(ch))
        if len(_CHARS) >= _MEMO_MAX:
            _CHARS.clear()
        _CHARS[ch] = key
    return key


def casemap(text: str) -> str:
    """The i;unicode-casemap key of ``text`` (RFC 5051 §2).  ASCII text maps
    to its upper case (titlecase of an ASCII letter is its upper case, NFKD
    leaves ASCII alone), without looking at each character."""
    if text.isascii():
        return text.upper()
    # NFKD of the whole string after the per-character mapping: a mapped
    # character may combine with the next one's decomposition, so normalize
    # again over the joined text (NFKD is idempotent on each part).
    return unicodedata.normalize("NFKD", "".join([_char_key(ch) for ch in text]))
