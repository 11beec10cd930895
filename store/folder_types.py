"""What store/folder.py hands out, and the pure helpers on Maildir file names.

The results of every mailbox change are small frozen dataclasses (the UIDs,
flags, keywords and MODSEQ that changed), so a protocol session can turn them
into responses without touching the disk.  Names follow maildir-spec
("How are unique names created?", "What can I put in info?") with Dovecot's
``,S=`` / ``,W=`` size fields and keyword letters a-z.
"""

from __future__ import annotations

import binascii
import itertools
import os
from itertools import repeat
from operator import itemgetter
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

# maildir-spec flag letters; Dovecot's keyword letters are a-z.
SYSTEM_FLAGS = "DFPRST"
SIZE_W = re.compile(r",W=(\d+)")
_ORDER = re.compile(r"(\d+)\.(?:[^.]*?M(\d+))?")
# sort_keys: per line of keys joined by LF, the time and the usec right after "M".
_ORDER_FAST = re.compile(r"^(?:(\d+)\.(?:M(\d+))?)?[^\n]*", re.M)
_USEC_SCALE = 10 ** 7                  # above any usec value of 7 digits
_NO_TIME = (1 << 62) * _USEC_SCALE     # order_key's rank of a key without a time prefix
# Distinct raw info-letter strings whose normal form is kept (ours: a folder uses a
# few dozen flag combinations; a bound so odd names cannot grow it for ever).
MAX_LETTER_SETS = 4096
_LETTERS: Dict[str, str] = {}
# IMAP atom-specials (RFC 3501 §9): not allowed in a keyword.
_ATOM_SPECIALS = set('(){ %*"\\]')
_counter = itertools.count(1)
_first, _second = itemgetter(0), itemgetter(1)


class Message(NamedTuple):
    """One message of a snapshot (a tuple: a folder of 10,000 builds fast)."""
    uid: int
    key: str                 # base file name, stable across flag changes (and the POP3 UIDL source)
    path: str
    flags: str               # system flag letters, ASCII order
    keywords: frozenset
    size: int                # octets in CRLF form
    modseq: int


@dataclass(frozen=True)
class Snapshot:
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: Tuple[Message, ...]
    _index: Optional[Dict[int, Message]] = field(default=None, compare=False, repr=False)

    def by_uid(self, uid: int) -> Optional[Message]:
        index = self._index
        if index is None:                 # built whole, then published: safe across threads
            index = {m.uid: m for m in self.messages}
            object.__setattr__(self, "_index", index)
        return index.get(uid)


@dataclass(frozen=True)
class SyncResult:
    snapshot: Snapshot
    new: Tuple[int, ...] = ()        # UIDs that appeared since this process's last sync
    expunged: Tuple[int, ...] = ()
    changed: Tuple[int, ...] = ()    # UIDs whose flags or keywords changed


@dataclass(frozen=True)
class Appended:
    uid: int
    uidvalidity: int
    modseq: int
    key: str


@dataclass(frozen=True)
class FlagChange:
    uid: int
    flags: str
    keywords: frozenset
    modseq: int


@dataclass(frozen=True)
class StoreResult:
    changed: Tuple[FlagChange, ...]
    modified: Tuple[int, ...] = ()   # UNCHANGEDSINCE failed (RFC 7162 §3.1.3 MODIFIED)
    missing: Tuple[int, ...] = ()    # UIDs not (or no longer) in the folder


@dataclass(frozen=True)
class Expunged:
    uids: Tuple[int, ...]
    modseq: int
    failed: Tuple[int, ...] = ()     # files that could not be removed


@dataclass(frozen=True)
class Copied:
    uid_map: Tuple[Tuple[int, int], ...]   # (source UID, target UID): COPYUID, RFC 4315 §3
    uidvalidity: int                       # the target's
    modseq: int                            # the target's new HIGHESTMODSEQ


# -- helpers on names ------------------------------------------------------------
def split_name(name: str) -> Tuple[str, str, str]:
    """File name → (key, flag letters in ASCII order, non-standard tail after a comma).

    Dovecot: "<flags>[,<non-standard fields>]" after ``:2,``; the tail is kept."""
    key, sep, info = name.partition(":")
    if not (sep and info.startswith("2,")):
        return key, "", ""
    letters, _, tail = info[2:].partition(",")
    return key, normal_letters(letters), tail


def normal_letters(raw: str) -> str:
    """The info letters as kept: ASCII letters only, each once, in ASCII order.  A folder
    has few distinct sets (the flag combinations in use), so they are kept once made."""
    norm = _LETTERS.get(raw)
    if norm is None:
        norm = "".join(sorted(set(c for c in raw if c.isascii() and c.isalpha())))
        if len(_LETTERS) < MAX_LETTER_SETS:
            _LETTERS[raw] = norm
    return norm


def name_size(key: str) -> Optional[int]:
    """The CRLF size Dovecot puts in a name as ``,W=<octets>`` (None: not there)."""
    i = key.find(",W=")
    if i < 0:
        return None
    digits = key[i + 3:].partition(",")[0]
    if digits.isdecimal():
        return int(digits)
    m = SIZE_W.search(key)                 # another field glued on, or a second ,W=
    return int(m.group(1)) if m else None


def crlf_size(path: str, chunk: int = 65536) -> int:
    """Octets once every LF not preceded by CR is sent as CRLF (RFC 1939 §11)."""
    total, prev_cr = 0, False
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                return total
            bare = data.count(b"\n") - data.count(b"\r\n") - (1 if prev_cr and data[:1] == b"\n" else 0)
            total += len(data) + bare
            prev_cr = data[-1:] == b"\r"


def valid_keyword(word: str) -> bool:
    """IMAP flag-keyword = atom (RFC 3501 §9), not a \\system flag."""
    return bool(word) and all(0x20 < ord(c) < 0x7F and c not in _ATOM_SPECIALS for c in word)


def order_key(key: str) -> Tuple[int, int, str]:
    """Delivery order of a new key: the time prefix, then M<usec>, then the name."""
    m = _ORDER.match(key)
    return (int(m.group(1)), int(m.group(2) or 0), key) if m else (1 << 62, 0, key)


def sort_keys(keys: Iterable[str]) -> List[str]:
    """``sorted(keys, key=order_key)``, made cheaper for many keys: sorted as text
    (the ties' order), then stably by one rank per key, its time and usec read for
    all the keys by one regex pass over them joined.  The rank
    is the time followed by the usec in 7 digits: as text when every time has the
    same number of ASCII digits (text order is then number order), else as an
    integer.  Keys this shortcut cannot read the way order_key does (an M not right
    after the first dot, 8 or more usec digits, a line break) go through order_key."""
    keys = sorted(keys)                 # the tie order, and ranks then nearly in order: a cheap sort
    if len(keys) < 2:
        return keys
    joined = "\n".join(keys)
    found = _ORDER_FAST.findall(joined)
    if len(found) != len(keys):
        return sorted(keys, key=order_key)
    usecs = list(map(_second, found))
    if "" not in usecs and max(map(len, usecs)) < 8:      # all "<time>.M<usec>..."
        secs = list(map(_first, found))
        ranks: list = list(map(str.__add__, secs, map(str.zfill, usecs, repeat(7))))
        if not (joined.isascii() and len(set(map(len, secs))) == 1):
            ranks = list(map(int, ranks))
    else:
        ranks = []
        for (secs_, usec), key in zip(found, keys):
            if not usec:
                if secs_ and "M" in key.split(".", 2)[1]:
                    return sorted(keys, key=order_key)       # order_key looks for M further on
                ranks.append(int(secs_) * _USEC_SCALE if secs_ else _NO_TIME)
            elif len(usec) < 8:
                ranks.append(int(secs_) * _USEC_SCALE + int(usec))
            else:
                return sorted(keys, key=order_key)
    return list(map(keys.__getitem__, sorted(range(len(keys)), key=ranks.__getitem__)))


def stat_sig(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def unique_base(size: int, wire: int) -> str:
    """maildir-spec unique name with Dovecot's ``,S=`` and ``,W=`` (file and CRLF sizes)."""
    now = time.time()
    host = (socket.gethostname() or "localhost").replace("/", "\\057").replace(":", "\\072")
    return "%d.M%dP%dQ%dR%s.%s,S=%d,W=%d" % (
        int(now), int((now % 1) * 1000000), os.getpid(), next(_counter),
        binascii.hexlify(os.urandom(8)).decode("ascii"), host, size, wire)


def stored_form(data: bytes) -> bytes:
    """LF line ends when the CRLF form can be rebuilt exactly from them (what the
    protocols send: every LF not preceded by CR becomes CRLF), else the data as is."""
    lf = data.replace(b"\r\n", b"\n")
    if lf is data or re.sub(rb"(?<!\r)\n", b"\r\n", lf) != data:
        return data
    return lf


def check_flags(flags: str) -> str:
    for c in flags:
        if c not in SYSTEM_FLAGS and not (c.isascii() and c.isupper()):
            raise ValueError("not a maildir flag letter: %r" % c)
    return "".join(sorted(set(flags)))


def apply_mode(old: str, letters: str, mode: str, mine) -> str:
    """New info letters: ``mine`` selects the class changed (upper: flags, lower: keywords)."""
    if mode == "add":
        new = set(old) | set(letters)
    elif mode == "remove":
        new = set(old) - set(letters)
    elif mode == "replace":
        new = {c for c in old if not mine(c)} | set(letters)
    else:
        raise ValueError("mode must be add, remove or replace: %r" % mode)
    return "".join(sorted(new))
