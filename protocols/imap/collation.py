"""The i;unicode-casemap comparator (RFC 5051), pure functions.

RFC 5051 §2: each string is mapped to a key by (1) the simple titlecase
mapping of each character (UnicodeData.txt's titlecase field: a character
without one stays as it is) and (2) the normalization form NFKD (RFC 5051 §2
step 2: "decompose ... using the compatibility decomposition"); the keys are
then compared octet by octet as UTF-8 (i;octet).  Python compares strings
by code point, which orders them as their UTF-8 octets do (RFC 3629 §1), so
``casemap(a) < casemap(b)`` is the comparator's ordering and ``==`` its
equality; a substring match (RFC 4790 §4.2.2) is ``casemap(needle) in
casemap(value)`` (SEARCH's text keys: search_eval.py, search_kept.py).

DEVIATION(RFC 5051 §2): step 2 decomposes character by character; here
NFKD runs over the whole mapped text, which also puts runs of combining
marks in canonical order (the Unicode Standard's canonical ordering), so two texts that differ only in
that order (canonically equivalent) compare equal.

Used by SORT and THREAD (RFC 5256 §7: "MUST collate strings according to
the i;unicode-casemap collation") and announced with I18NLEVEL=1 (RFC 5255
§4.3: the default comparator).  ``unicodedata`` supplies the Unicode tables
of the running Python.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Dict

COMPARATOR = "i;unicode-casemap"
# Ours: for each character met, whether its simple titlecase differs from
# ``str.upper`` of it (digraphs such as U+01C6, and characters whose upper
# case is several, such as U+00DF); a plain bound, cleared when full.
_MEMO_MAX = 65536
_ODD: Dict[str, bool] = {}


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


def casemap(text: str) -> str:
    """The i;unicode-casemap key of ``text`` (RFC 5051 §2): each character
    titlecased, then NFKD over the whole (a mapped character may combine
    with the next one's decomposition).  ASCII text maps to its upper case
    (titlecase of an ASCII letter is its upper case, NFKD leaves ASCII
    alone)."""
    if text.isascii():
        return text.upper()
    odd = []
    for ch in set(text):
        flag = _ODD.get(ch)
        if flag is None:
            if len(_ODD) >= _MEMO_MAX:
                _ODD.clear()
            flag = _ODD[ch] = _title(ch) != ch.upper()
        if flag:
            odd.append(ch)
    if not odd:     # str.upper maps character by character: each one's titlecase here
        return unicodedata.normalize("NFKD", text.upper())
    parts = re.split("([%s])" % "".join(map(re.escape, odd)), text)
    return unicodedata.normalize("NFKD", "".join(
        [_title(part) if i % 2 else part.upper() for i, part in enumerate(parts)]))
