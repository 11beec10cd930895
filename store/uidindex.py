"""Per-folder UID index for a Maildir folder (what IMAP and POP3 number messages by).

Implements the store side of RFC 3501 §2.3.1.1 / RFC 9051 §2.3.1.1 (Unique
Identifier message attribute, UIDVALIDITY, UIDNEXT) on top of Maildir
(the maildir spec at cr.yp.to/proto/maildir.html, and maildir(5)):

* ``mailsrv-uidlist`` in the folder, modelled on Dovecot's ``dovecot-uidlist``
  version 3::

      3 V<uidvalidity> N<uidnext>
      <uid> :<key>
      <uid> W<crlf-size> :<key>

  UIDs ascending.  The key is the rest of the line after `` :`` (so a key may
  contain spaces).  ``W<n>`` caches the CRLF size of a message whose name does
  not carry it.  The file is rewritten atomically (tmp + fsync + os.replace +
  directory fsync) while holding ``flock`` on ``mailsrv-uidlist.lock``.
* Maildir key = the file name up to the first ``:``; it survives new/ → cur/
  and flag changes.  Flags are the letters after ``:2,`` (maildir-spec: "Flags
  must be stored in ASCII order"; S R F T D P).
* ``size`` of an entry is always the message's size in CRLF form (what POP3
  LIST/STAT, RFC 1939 §11, and IMAP RFC822.SIZE report): ``,W=<n>`` in the
  name if present (our deliveries and Dovecot's write it), else ``,S=<n>`` (files
  of mailsrv before it stored LF were CRLF, so their S= is the CRLF size), else the file is read once
  and every LF not preceded by CR counts two octets (RFC 1939 §11); the result
  is cached in the uidlist.
  DEVIATION(maildir-spec "Do not try to extract information from unique
  names"): S=/W= are read from names, as Dovecot does, so listing 10,000
  messages opens no file.
* New keys (delivered by us, by another mailsrv process, or by mutt) get UIDs
  at the next sync in delivery order: the time prefix, then ``M<usec>``, then
  the name.  UIDNEXT only grows, so a UID is never reused (RFC 3501
  §2.3.1.1).  A missing or unparsable uidlist, or exhausted 32-bit UIDs, start
  over with a UIDVALIDITY greater than any earlier one (RFC 3501 §2.3.1.1).
* ``sync()`` is cheap when nothing changed: if new/, cur/ and the uidlist have
  the same (mtime_ns, inode, size) as at this process's last sync, and none was
  modified within ``MTIME_SLACK_S`` of now, the cached snapshot is returned
  without taking the lock or listing a directory.
* Keywords (IMAP keywords, RFC 3501 §2.3.2) live in the side file
  ``mailsrv-keywords`` (JSON), written atomically under the same lock.

Left out: MODSEQ (CONDSTORE), Dovecot's keyword letters in file names,
Maildir++ quota.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import fcntl
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple
from store.fsutil import write_atomic

log = logging.getLogger("mailsrv.store.uidindex")

UIDLIST = "mailsrv-uidlist"
UIDLIST_LOCK = "mailsrv-uidlist.lock"
KEYWORDS = "mailsrv-keywords"
UIDLIST_VERSION = "3"                 # Dovecot dovecot-uidlist format version 3 header shape

# RFC 3501 §9 / RFC 9051 §9: uniqueid = nz-number, "Non-zero unsigned 32-bit integer".
MAX_UID = 0xFFFFFFFF
# A directory whose mtime is this close to "now" may change again within the same
# mtime tick, so its cached scan is not trusted.  2 s covers the coarsest common
# timestamps (FAT: 2 s; ext3, HFS+: 1 s); ext4/xfs/btrfs tick in milliseconds.
MTIME_SLACK_S = 2.0
# Bound on the per-process snapshot cache (one entry per folder; ours).
MAX_CACHED_FOLDERS = 1000
# Maildir flag letters (maildir-spec.txt "What can I put in info?").  Other
# ASCII letters are kept as they are: "New flags may be defined later".
FLAG_LETTERS = "DFPRST"
# IMAP flag-keyword = atom (RFC 3501 §9): no atom-specials, CTLs or SP.
_ATOM_SPECIALS = set('(){ %*"\\]')

_SIZE_W = re.compile(r",W=(\d+)")
_SIZE_S = re.compile(r",S=(\d+)")
_ORDER = re.compile(r"(\d+)\.(?:[^.]*?M(\d+))?")


class UidEntry(NamedTuple):
    uid: int
    key: str
    path: str
    flags: str     # maildir info letters in ASCII order, "" for new/ files
    size: int      # octets in CRLF form


class UidSnapshot:
    """The folder at one sync: ``entries`` ascending by UID (RFC 3501 §2.3.1.1)."""

    __slots__ = ("uidvalidity", "uidnext", "entries", "_by_key", "_by_uid")

    def __init__(self, uidvalidity: int, uidnext: int, entries: List[UidEntry]):
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.entries = tuple(entries)
        self._by_key: Optional[Dict[str, UidEntry]] = None
        self._by_uid: Optional[Dict[int, UidEntry]] = None

    def by_key(self, key: str) -> Optional[UidEntry]:
        if self._by_key is None:
            self._by_key = {e.key: e for e in self.entries}
        return self._by_key.get(key)

    def by_uid(self, uid: int) -> Optional[UidEntry]:
        if self._by_uid is None:
            self._by_uid = {e.uid: e for e in self.entries}
        return self._by_uid.get(uid)


class _Cached(NamedTuple):
    signature: tuple
    snapshot: UidSnapshot


# Per-process cache, shared by every UidIndex on the same folder (a POP3 login
# builds a new one each time).  Keyed by the folder's real path.
_cache: Dict[str, _Cached] = {}
_last_validity: Dict[str, int] = {}
_cache_lock = threading.Lock()


class CorruptIndex(Exception):
    """The uidlist could not be parsed; carries the old UIDVALIDITY if readable."""

    def __init__(self, why: str, old_validity: int = 0):
        super().__init__(why)
        self.old_validity = old_validity


def split_name(name: str) -> Tuple[str, str]:
    """Maildir file name → (key, flags).  Flags only from ``:2,`` info (maildir-spec)."""
    key, sep, info = name.partition(":")
    if sep and info.startswith("2,"):
        return key, "".join(sorted(set(c for c in info[2:] if c.isalpha() and c.isascii())))
    return key, ""


def normalise_flags(flags: Iterable[str]) -> str:
    """Flag letters → the info string form: unique, ASCII order (maildir-spec)."""
    letters = set("".join(flags))
    for c in letters:
        if not (c.isascii() and c.isalpha()):
            raise ValueError("maildir flag must be an ASCII letter: %r" % c)
    return "".join(sorted(letters))


def size_from_name(key: str) -> Optional[int]:
    """CRLF size carried by the name: ``,W=`` (ours and Dovecot's), else ``,S=``
    (files from before mailsrv stored LF were CRLF, so their ``S=`` is the CRLF size)."""
    m = _SIZE_W.search(key) if ",W=" in key else _SIZE_S.search(key) if ",S=" in key else None
    return int(m.group(1)) if m else None


def crlf_size(path: str, chunk: int = 65536) -> int:
    """Octets of the file once every bare LF is sent as CRLF (RFC 1939 §11).

    Only LF not preceded by CR grows by one octet; nothing else changes, which
    is the normalisation POP3/IMAP apply when serving the file.
    """
    total = 0
    prev_cr = False
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                return total
            bare = data.count(b"\n") - data.count(b"\r\n")
            if prev_cr and data[:1] == b"\n":
                bare -= 1
            total += len(data) + bare
            prev_cr = data[-1:] == b"\r"


def valid_keyword(word: str) -> bool:
    """IMAP flag-keyword = atom (RFC 3501 §9): 1*ATOM-CHAR, no "\\" system flags."""
    return bool(word) and all(0x20 < ord(c) < 0x7F and c not in _ATOM_SPECIALS for c in word)


def _order_key(key: str) -> Tuple[int, int, str]:
    """Delivery order of a new key: the time prefix, then M<usec>, then the name."""
    m = _ORDER.match(key)
    if not m:
        return (1 << 62, 0, key)
    return (int(m.group(1)), int(m.group(2) or 0), key)


def _stat_sig(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def _atomic_write(folder: str, name: str, data: bytes) -> None:
    """tmp + fsync + os.replace + directory fsync (called with the lock held)."""
    write_atomic(os.path.join(folder, name), data)


def parse_uidlist(text: str) -> Tuple[int, int, List[Tuple[int, str, Optional[int]]]]:
    """Parse the uidlist → (uidvalidity, uidnext, [(uid, key, cached size)]).

    Raises CorruptIndex when anything breaks RFC 3501 §2.3.1.1's invariants
    (UIDs strictly ascending, all below UIDNEXT, keys unique).
    """
    lines = text.split("\n")
    head = lines[0].split()
    fields = {f[0]: f[1:] for f in head[1:] if f}
    try:
        if head[0] != UIDLIST_VERSION:
            raise ValueError("version")
        validity, uidnext = int(fields["V"]), int(fields["N"])
    except (IndexError, KeyError, ValueError):
        raise CorruptIndex("bad header")
    if not (0 < validity <= MAX_UID and 0 < uidnext <= MAX_UID + 1):
        raise CorruptIndex("header out of range", validity)
    rows, seen, last = [], set(), 0
    for line in lines[1:]:
        if not line:
            continue
        rows.append(_parse_row(line, validity))
        uid, key = rows[-1][0], rows[-1][1]
        if uid <= last or uid >= uidnext or key in seen:
            raise CorruptIndex("UIDs not ascending or duplicate key", validity)
        last = uid
        seen.add(key)
    return validity, uidnext, rows


def _parse_row(line: str, validity: int) -> Tuple[int, str, Optional[int]]:
    head, sep, key = line.partition(" :")
    parts = head.split()
    if not sep or not key or not parts or "/" in key:
        raise CorruptIndex("bad line", validity)
    try:
        uid = int(parts[0])
        size = None
        for p in parts[1:]:
            if p[:1] == "W":
                size = int(p[1:])
    except ValueError:
        raise CorruptIndex("bad number", validity)
    return uid, key, size


def format_uidlist(validity: int, uidnext: int, rows: Iterable[Tuple[int, str, Optional[int]]]) -> bytes:
    out = ["%s V%d N%d" % (UIDLIST_VERSION, validity, uidnext)]
    for uid, key, size in rows:
        out.append("%d W%d :%s" % (uid, size, key) if size is not None else "%d :%s" % (uid, key))
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


class UidIndex:
    """UIDs for one Maildir folder (the Maildir root for INBOX, ``.Name`` for the rest).

    Safe to use from several threads and processes at once: every change
    happens under ``flock`` on ``mailsrv-uidlist.lock`` (a lock on an open
    file description, so two descriptors in one process exclude each other too).
    """

    def __init__(self, folder_path: str):
        self.path = folder_path
        self._real = os.path.realpath(folder_path)
        self._snap: Optional[UidSnapshot] = None
        self._kw_sig: Optional[tuple] = None
        self._kw: Dict[str, List[str]] = {}

    # -- public API ------------------------------------------------------
    @property
    def uidvalidity(self) -> int:
        return (self._snap or self.sync()).uidvalidity

    @property
    def uidnext(self) -> int:
        return (self._snap or self.sync()).uidnext

    def sync(self) -> UidSnapshot:
        """Scan new/ and cur/, give new keys UIDs, drop vanished ones (RFC 3501 §2.3.1.1).

        Returns the cached snapshot when neither directory nor the uidlist
        changed since this process last synced (and none changed recently).
        """
        with _cache_lock:
            cached = _cache.get(self._real)
        if cached is not None and self._unchanged(cached.signature):
            self._snap = cached.snapshot
            return self._snap
        with self._locked():
            return self._sync_locked()

    def lookup(self, key: str) -> Optional[UidEntry]:
        """The current entry for ``key`` after a sync (None when the message is gone)."""
        return self.sync().by_key(key)

    def set_flags(self, key: str, flags: Iterable[str]) -> str:
        """Give the message exactly these flag letters; moves it to cur/ (maildir-spec).

        Returns the new path.  The key is kept, so the UID does not change.
        Raises KeyError when no file has this key.
        """
        letters = normalise_flags(flags)
        return self._change_flags(key, lambda old: letters)

    def add_flags(self, key: str, flags: Iterable[str]) -> str:
        """Add flag letters (e.g. POP3 RETR → S); other flags set meanwhile are kept."""
        letters = normalise_flags(flags)
        return self._change_flags(key, lambda old: normalise_flags(old + letters))

    def remove_flags(self, key: str, flags: Iterable[str]) -> str:
        """Clear flag letters (IMAP STORE -FLAGS, RFC 3501 §6.4.6); the others are kept."""
        letters = set(normalise_flags(flags))
        return self._change_flags(key, lambda old: "".join(c for c in old if c not in letters))

    def remove(self, keys: Iterable[str]) -> List[str]:
        """Unlink the messages and drop them from the index (UIDNEXT unchanged).

        Returns the keys whose file could not be removed (empty on success);
        a file already gone counts as removed.
        """
        failed = []
        with self._locked():
            for key in keys:
                if not self._unlink(key):
                    failed.append(key)
            self._sync_locked()
        return failed

    def get_keywords(self, key: str) -> Set[str]:
        return set(self._read_keywords().get(key, ()))

    def all_keywords(self) -> Set[str]:
        """Every keyword in use in the folder (for IMAP FLAGS / PERMANENTFLAGS)."""
        return {w for words in self._read_keywords().values() for w in words}

    def set_keywords(self, key: str, keywords: Iterable[str]) -> None:
        """Replace the keywords of ``key``; each must be an IMAP atom (RFC 3501 §9)."""
        words = sorted(set(keywords))
        for w in words:
            if not valid_keyword(w) or w.startswith("\\"):
                raise ValueError("not a keyword atom: %r" % w)
        with self._locked():
            table = dict(self._read_keywords())
            if words:
                table[key] = words
            else:
                table.pop(key, None)
            self._write_keywords(table)

    # -- locking and signatures -------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.path, UIDLIST_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # closing the only descriptor releases the flock

    def _signature(self) -> tuple:
        return tuple(_stat_sig(os.path.join(self.path, n)) for n in ("new", "cur", UIDLIST))

    def _unchanged(self, signature: tuple) -> bool:
        now = self._signature()
        if now != signature or None in now:
            return False
        recent = time.time() - MTIME_SLACK_S
        return all(sig[0] < recent * 1e9 for sig in now)

    # -- the sync itself (lock held) ----------------------------------------
    def _sync_locked(self) -> UidSnapshot:
        dir_sigs = self._signature()[:2]           # before the scan: a later change shows
        validity, uidnext, rows, dirty = self._read_uidlist()
        found = self._scan()
        entries, out_rows, vanished = self._merge(rows, found)
        # rows differ: a key vanished, a size was measured, or new keys follow
        dirty = dirty or out_rows != rows or bool(found)
        validity, uidnext = self._assign(validity, uidnext, found, entries, out_rows)
        if dirty:
            _atomic_write(self.path, UIDLIST, format_uidlist(validity, uidnext, out_rows))
        if vanished:
            self._prune_keywords(vanished)
        snap = UidSnapshot(validity, uidnext, entries)
        sig = dir_sigs + (_stat_sig(os.path.join(self.path, UIDLIST)),)
        with _cache_lock:
            if len(_cache) >= MAX_CACHED_FOLDERS:
                _cache.clear()
            _cache[self._real] = _Cached(sig, snap)
            _last_validity[self._real] = validity
        self._snap = snap
        return snap

    def _read_uidlist(self) -> Tuple[int, int, list, bool]:
        """(uidvalidity, uidnext, rows, must_write); a bad file starts over (RFC 3501 §2.3.1.1)."""
        try:
            with open(os.path.join(self.path, UIDLIST), "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return self._new_validity(0), 1, [], True
        try:
            validity, uidnext, rows = parse_uidlist(text)
        except CorruptIndex as e:
            log.warning("uidlist in %s unusable (%s): new UIDVALIDITY", self.path, e)
            return self._new_validity(e.old_validity), 1, [], True
        return validity, uidnext, rows, False

    def _new_validity(self, old: int) -> int:
        """A new UIDVALIDITY: the creation time, and greater than any earlier one
        (RFC 3501 §2.3.1.1: "MUST be greater than the one used in the earlier session")."""
        with _cache_lock:
            known = _last_validity.get(self._real, 0)
        value = max(int(time.time()), old + 1, known + 1)
        return value if value <= MAX_UID else 1

    def _scan(self) -> Dict[str, Tuple[str, str]]:
        """key → (path, flags) for new/ then cur/ (cur/ wins a duplicate); no file is opened."""
        found: Dict[str, Tuple[str, str]] = {}
        for sub in ("new", "cur"):
            with os.scandir(os.path.join(self.path, sub)) as it:
                for e in it:
                    name = e.name
                    # maildir-spec: unique names never start with "."; a name with a
                    # line break could not be stored in the uidlist, so it is skipped.
                    if name[0] == "." or "\n" in name or "\r" in name or e.is_dir():
                        continue
                    key, flags = split_name(name)
                    found[key] = (e.path, flags)
        return found

    def _merge(self, rows, found):
        """Keep indexed keys still present (popped from ``found``); the rest vanished."""
        entries, out_rows, vanished = [], [], []
        for uid, key, cached in rows:
            hit = found.pop(key, None)
            named = size_from_name(key) if hit else None
            size = named if named is not None else self._measure(hit, cached) if hit else None
            if size is None:
                vanished.append(key)
                continue
            entries.append(UidEntry(uid, key, hit[0], hit[1], size))
            out_rows.append((uid, key, None if named is not None else size))
        return entries, out_rows, vanished

    @staticmethod
    def _measure(hit: Tuple[str, str], cached: Optional[int]) -> Optional[int]:
        """CRLF size of a file whose name does not carry it: cached, else read once."""
        if cached is not None:
            return cached
        try:
            return crlf_size(hit[0])
        except FileNotFoundError:
            return None      # vanished, or renamed by another program: the next sync sees it

    def _assign(self, validity, uidnext, found, entries, out_rows) -> Tuple[int, int]:
        """Give the keys left in ``found`` new UIDs, in delivery order (RFC 3501 §2.3.1.1)."""
        new_keys = sorted(found, key=_order_key)
        if uidnext + len(new_keys) - 1 > MAX_UID:
            # 32-bit UIDs exhausted (RFC 3501 §9 nz-number): renumber under a new UIDVALIDITY.
            log.warning("UIDs exhausted in %s: new UIDVALIDITY", self.path)
            validity, uidnext = self._new_validity(validity), 1
            old = [(e.key, e.path, e.flags, e.size) for e in entries]
            entries.clear()
            out_rows.clear()
            for key, path, flags, size in old:
                self._add(entries, out_rows, uidnext, key, path, flags, size)
                uidnext += 1
        for key in new_keys:
            path, flags = found[key]
            size = size_from_name(key)
            size = size if size is not None else self._measure(found[key], None)
            if size is None:
                continue
            self._add(entries, out_rows, uidnext, key, path, flags, size)
            uidnext += 1
        return validity, uidnext

    @staticmethod
    def _add(entries, out_rows, uid, key, path, flags, size) -> None:
        entries.append(UidEntry(uid, key, path, flags, size))
        out_rows.append((uid, key, None if size_from_name(key) is not None else size))

    # -- flags and removal (lock held) --------------------------------------
    def _find(self, key: str) -> Optional[str]:
        """The current path of ``key``: the last snapshot's guess, else a directory scan."""
        entry = self._snap.by_key(key) if self._snap else None
        if entry is not None and os.path.exists(entry.path):
            return entry.path
        hit = self._scan().get(key)
        return hit[0] if hit else None

    def _change_flags(self, key: str, change) -> str:
        with self._locked():
            for _attempt in range(5):
                path = self._find(key)
                if path is None:
                    raise KeyError(key)
                new = os.path.join(self.path, "cur", key + ":2," + change(split_name(os.path.basename(path))[1]))
                if new == path:
                    return path
                try:
                    os.rename(path, new)
                    return new
                except FileNotFoundError:
                    self._snap = None      # moved meanwhile by another program: look again
            raise KeyError(key)

    def _unlink(self, key: str) -> bool:
        for _attempt in range(5):
            path = self._find(key)
            if path is None:
                return True
            try:
                os.unlink(path)
                return True
            except FileNotFoundError:
                self._snap = None
            except OSError as e:
                log.warning("cannot remove %s: %s", path, e)
                return False
        return False

    # -- keywords -------------------------------------------------------------
    def _read_keywords(self) -> Dict[str, List[str]]:
        path = os.path.join(self.path, KEYWORDS)
        sig = _stat_sig(path)
        if sig == self._kw_sig:
            return self._kw
        table: Dict[str, List[str]] = {}
        if sig is not None:
            try:
                with open(path, "rb") as f:
                    raw = json.loads(f.read().decode("utf-8", "surrogateescape"))
                table = {str(k): [str(w) for w in v] for k, v in raw.get("keywords", {}).items()}
            except (OSError, ValueError, AttributeError) as e:
                log.warning("keywords file in %s unusable (%s): ignored", self.path, e)
        self._kw_sig, self._kw = sig, table
        return table

    def _write_keywords(self, table: Dict[str, List[str]]) -> None:
        data = json.dumps({"version": 1, "keywords": table}, sort_keys=True, ensure_ascii=True)
        _atomic_write(self.path, KEYWORDS, data.encode("ascii"))

    def _prune_keywords(self, vanished: List[str]) -> None:
        table = self._read_keywords()
        gone = set(vanished)
        if any(k in table for k in gone):
            self._write_keywords({k: v for k, v in table.items() if k not in gone})
