"""A per-folder cache of values derived from messages: ``mailsrv-cache`` in the
folder's directory (ours; Dovecot keeps its own ``dovecot.index.cache``).

What goes in is opaque to the store: for a message's Maildir key (its base
file name, stable across flag changes; a Maildir message's content never
changes, maildir-spec) and a ``kind`` (who computed it and with which
version, e.g. ``imap-v1``), a dict of name -> bytes.  The IMAP backend keeps
rendered ENVELOPE / BODYSTRUCTURE and the header block there, so a second
``FETCH 1:* (ENVELOPE)`` opens no message file; the store knows nothing of
IMAP.

It is a cache: nothing is fsync'd, and losing it (a crash, a deletion, a
damaged file) costs recomputation only.  So:

* the file is a magic line then append-only records, each
  ``b"R" length(4) crc32(4) body``; a batch of records is written by one
  ``os.write`` on an ``O_APPEND`` descriptor under an exclusive ``flock`` of
  the file (threads of one process: the cache's own lock too);
* a record whose length runs past the end of the file is a torn write (a
  crash) or one being written: readers ignore it; a writer holding the lock
  knows no one is writing, so it cuts such a tail off before appending;
* a whole record with a bad checksum or body, or a bad magic line: the
  file is deleted and starts empty (rebuilt lazily by the next lookups);
* readers take what others appended by reading from where they stopped to
  the current size, under a shared ``flock``; a file replaced (compaction
  by another process) or deleted is noticed by its inode and reopened;
* compaction (``compact(live_keys)``): when more than half of the records
  are dead (keys no longer in the folder, or superseded by a later record
  of the same key and kind), the live ones are written to a new file that
  is renamed over the old one, under the exclusive lock.

Memory: per open cache only an index (key, kind) -> (offset, length); the
values are read with ``os.pread`` when asked.  At most ``MAX_OPEN`` caches
stay open per process (least recently used closed first).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

log = logging.getLogger("mailsrv.store.cache")

CACHE_FILE = "mailsrv-cache"
MAGIC = b"mailsrv-cache 1\n"
_HEAD = struct.Struct(">cII")          # b"R", body length, crc32 of the body
_RECORD = b"R"
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
# Ours: a record is at most 16 MiB (the IMAP entries are a few KiB; the
# header block they keep is capped at 64 KiB), so a damaged length field
# cannot make us read or allocate more.
MAX_RECORD = 16 * 1024 * 1024
# Ours: open caches kept per process, each an fd and an index (a few hundred
# bytes per message); an IMAP server has one per selected folder in use.
MAX_OPEN = 64
# Ours: read the file in chunks of 1 MiB when catching up with appends.
_CHUNK = 1024 * 1024

Entry = Dict[str, bytes]


class CacheDamaged(Exception):
    """The file is not what we write: it is deleted and begins again."""


def encode_body(key: str, kind: str, entry: Entry) -> bytes:
    """key, kind, then the names and values, each with its length."""
    parts = [_length_prefixed(key), _length_prefixed(kind), _U16.pack(len(entry))]
    for name, value in entry.items():
        raw = _NAME_OCTETS.get(name)
        if raw is None:
            raw = _length_prefixed(name, "strict")
            if len(_NAME_OCTETS) < 64:
                _NAME_OCTETS[name] = raw
        parts += (raw, _U32.pack(len(value)), value if type(value) is bytes else bytes(value))
    return b"".join(parts)


def encode_record(key: str, kind: str, entry: Entry) -> bytes:
    body = encode_body(key, kind, entry)
    return _HEAD.pack(_RECORD, len(body), zlib.crc32(body)) + body


def _text(body: bytes, at: int, errors: str = "surrogateescape") -> Tuple[str, int]:
    """A text of ``encode_body`` (2-octet length, UTF-8) at ``at``."""
    (n,) = _U16.unpack_from(body, at)
    end = at + 2 + n
    if end > len(body):
        raise CacheDamaged("record body too short")
    return body[at + 2:end].decode("utf-8", errors), end


def key_kind(body: bytes) -> Tuple[str, str]:
    """The key and kind of a record body, its entry left unread."""
    try:
        key, at = _text(body, 0)
        kind, _ = _text(body, at)
    except struct.error as exc:
        raise CacheDamaged("record body does not parse: %s" % exc)
    return key, kind


def _length_prefixed(text: str, errors: str = "surrogateescape") -> bytes:
    """A text as encode_body writes it: 2-octet length, UTF-8."""
    raw = text.encode("utf-8", errors)
    return _U16.pack(len(raw)) + raw


def decode_body(body: bytes) -> Tuple[str, str, Entry]:
    """The inverse of ``encode_body``; CacheDamaged when it does not parse."""
    try:
        key, at = _text(body, 0)
        kind, at = _text(body, at)
    except struct.error as exc:
        raise CacheDamaged("record body does not parse: %s" % exc)
    return key, kind, decode_entry(body, at)


def decode_entry(body: bytes, at: int) -> Entry:
    """The entry of a record body, from ``at`` (past its key and kind).
    (Inlined: it runs once per message of every cached FETCH and SEARCH.)"""
    size_of = len(body)
    unpack16, unpack32 = _U16.unpack_from, _U32.unpack_from
    try:
        (count,) = unpack16(body, at)
        at += 2
        entry: Entry = {}
        for _ in range(count):
            (n,) = unpack16(body, at)
            raw = body[at + 2:at + 2 + n]
            name = _NAMES.get(raw)
            if name is None:
                name = raw.decode("utf-8")
                if len(_NAMES) < 64:
                    _NAMES[raw] = name
            (size,) = unpack32(body, at + 2 + n)
            start = at + 6 + n
            at = start + size
            if at > size_of:
                raise CacheDamaged("record body too short")
            entry[name] = body[start:at]
    except (struct.error, UnicodeDecodeError) as exc:
        raise CacheDamaged("record body does not parse: %s" % exc)
    if at != size_of:
        raise CacheDamaged("record body has %d octets too many" % (size_of - at))
    return entry


# Entry names seen (a handful: ENVELOPE, HEADER, ...), decoded / encoded once.
_NAMES: Dict[bytes, str] = {}
_NAME_OCTETS: Dict[str, bytes] = {}


class MsgCache:
    """The cache of one folder directory (see the module docstring).  Every
    method may be called from any thread; all block on the disk."""

    def __init__(self, folder_path: str):
        self.path = os.path.join(folder_path, CACHE_FILE)
        self._lock = threading.RLock()
        self._fd: Optional[int] = None
        self._ino: Optional[Tuple[int, int]] = None
        self._index: Dict[Tuple[str, str], Tuple[int, int]] = {}
        self._scanned = 0          # the file is indexed up to this offset
        self._records = 0          # records indexed, superseded ones included

    # -- opening, catching up ------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._ino, self._index, self._scanned, self._records = None, None, {}, 0, 0

    def _open(self) -> None:
        """(Re)open the file, creating it with its magic line when missing."""
        self.close()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fd = fd
        st = os.fstat(fd)
        self._ino = (st.st_dev, st.st_ino)

    def _current(self) -> bool:
        """True when our descriptor is still the file at ``path``."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return self._fd is not None and (st.st_dev, st.st_ino) == self._ino

    def _locked_fd(self, mode: int) -> int:
        """The descriptor, flock'd with ``mode``, of the file now at ``path``."""
        for _ in range(8):
            if not self._current():
                self._open()
            fcntl.flock(self._fd, mode)
            if self._current():
                return self._fd
            fcntl.flock(self._fd, fcntl.LOCK_UN)   # replaced meanwhile: take the new one
        raise OSError("cannot lock %s: it keeps being replaced" % self.path)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self, writer: bool) -> None:
        """Index what was appended since the last look (lock held).  A torn or
        unfinished tail is left unread; a writer (exclusive lock) cuts it off."""
        fd = self._fd
        size = os.fstat(fd).st_size
        if size == 0:
            if writer:
                os.write(fd, MAGIC)
            self._scanned = len(MAGIC) if writer else 0
            return
        if self._scanned == 0:
            if os.pread(fd, len(MAGIC), 0) != MAGIC:
                raise CacheDamaged("%s does not begin with %r" % (self.path, MAGIC))
            self._scanned = len(MAGIC)
        at = self._scanned
        while at < size:
            head = os.pread(fd, _HEAD.size, at)
            if len(head) < _HEAD.size:
                break
            mark, length, crc = _HEAD.unpack(head)
            if mark != _RECORD or length > MAX_RECORD:
                raise CacheDamaged("%s: no record at offset %d" % (self.path, at))
            if at + _HEAD.size + length > size:
                break                                 # torn, or being written
            body = os.pread(fd, length, at + _HEAD.size)
            if zlib.crc32(body) != crc:
                raise CacheDamaged("%s: bad checksum at offset %d" % (self.path, at))
            key, kind = self._key_kind(body)
            self._index[(key, kind)] = (at + _HEAD.size, length)
            self._records += 1
            at += _HEAD.size + length
        self._scanned = at
        if writer and at < size:
            log.info("cache %s: torn record at offset %d cut off", self.path, at)
            os.ftruncate(fd, at)

    @staticmethod
    def _key_kind(body: bytes) -> Tuple[str, str]:
        return key_kind(body)

    def _run(self, writer: bool, fn):
        """``fn()`` with the file locked and indexed.  Damage seen under the
        shared lock is looked at again under the exclusive one (another
        process may be replacing the file); damage seen under the exclusive
        lock deletes the file, and the work is done on a new one."""
        with self._lock:
            exclusive = writer
            for _ in range(3):
                self._locked_fd(fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                try:
                    try:
                        self._catch_up(exclusive)
                    except CacheDamaged as exc:
                        if exclusive:
                            log.warning("cache damaged, rebuilt: %s", exc)
                            self._discard()
                        else:
                            self._unlock()
                            self.close()
                        exclusive = True
                        continue
                    return fn()
                finally:
                    self._unlock()
            raise OSError("cache %s: still damaged after it was rebuilt" % self.path)

    def _discard(self) -> None:
        """Delete the file (our lock held on it) and forget it."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._unlock()
        self.close()

    # -- the interface ----------------------------------------------------------------
    def get_many(self, keys: Iterable[str], kind: str) -> Dict[str, Entry]:
        """The entries held for these keys and this kind (the others are missing)."""
        raw_kind = _length_prefixed(kind)

        def look() -> Dict[str, Entry]:
            out: Dict[str, Entry] = {}
            index, fd = self._index, self._fd
            for key in keys:
                where = index.get((key, kind))
                if where is None:
                    continue
                body = os.pread(fd, where[1], where[0])
                # the record is this key's and kind's (the index said so; checked
                # on the octets, the names left undecoded)
                head = _length_prefixed(key) + raw_kind
                if not body.startswith(head):
                    continue
                try:
                    out[key] = decode_entry(body, len(head))
                except CacheDamaged:
                    continue
            return out
        return self._run(False, look)

    def put_many(self, items: Sequence[Tuple[str, str, Entry]]) -> None:
        """Append these entries, the batch in one write."""
        if not items:
            return

        def append() -> None:
            # One write for the batch: a reader that sees part of it takes the
            # whole records and leaves the rest for later (a torn tail, above).
            at = os.lseek(self._fd, 0, os.SEEK_END)
            records, placed = [], []
            for key, kind, entry in items:
                record = encode_record(key, kind, entry)
                if len(record) - _HEAD.size > MAX_RECORD:
                    continue                          # too big to cache: computed each time
                records.append(record)
                placed.append(((key, kind), (at + _HEAD.size, len(record) - _HEAD.size)))
                at += len(record)
            blob = b"".join(records)
            done = 0
            while done < len(blob):                   # a short write: the rest after it
                done += os.write(self._fd, blob[done:])
            self._index.update(placed)
            self._records += len(placed)
            self._scanned = at
        self._run(True, append)

    def dead(self, live_keys: Set[str]) -> Tuple[int, int]:
        """(dead records, all records) as indexed now (no disk access)."""
        with self._lock:
            live = sum(1 for key, _ in self._index if key in live_keys)
            return self._records - live, self._records

    def compact(self, live_keys: Set[str], force: bool = False) -> bool:
        """Rewrite the file with the live entries only when more than half of
        its records are dead (or ``force``); True when it did."""
        def rewrite() -> bool:
            dead, total = self.dead(live_keys)
            if not force and dead * 2 <= total:
                return False
            tmp = self.path + ".tmp%d" % os.getpid()
            out = [MAGIC]
            for (key, kind), (offset, length) in sorted(self._index.items(), key=lambda kv: kv[1][0]):
                if key in live_keys:
                    body = os.pread(self._fd, length, offset)
                    out.append(_HEAD.pack(_RECORD, len(body), zlib.crc32(body)) + body)
            with open(tmp, "wb") as f:
                f.write(b"".join(out))
            os.replace(tmp, self.path)                # a cache: no fsync (module docstring)
            log.info("cache %s compacted: %d of %d records were dead", self.path, dead, total)
            return True
        with self._lock:
            dead, total = self.dead(live_keys)
            if not force and dead * 2 <= total:
                return False                          # the index says no: no lock taken
            done = self._run(True, rewrite)
            if done:
                self.close()                          # next use opens and indexes the new file
            return done


# -- the open caches of this process (LRU) ----------------------------------------------

_registry: "OrderedDict[str, MsgCache]" = OrderedDict()
_registry_lock = threading.Lock()


def cache_for(folder_path: str, max_open: int = MAX_OPEN) -> MsgCache:
    """The cache of a folder directory, shared by the threads of this process;
    the least recently used beyond ``max_open`` are closed (reopened on use)."""
    path = os.path.abspath(folder_path)
    with _registry_lock:
        cache = _registry.pop(path, None)
        if cache is None:
            cache = MsgCache(path)
        _registry[path] = cache
        evicted: List[MsgCache] = []
        while len(_registry) > max_open:
            evicted.append(_registry.popitem(last=False)[1])
    for old in evicted:
        old.close()
    return cache


def open_count() -> int:
    """Caches holding an open descriptor in this process (for tests)."""
    with _registry_lock:
        caches = list(_registry.values())
    return sum(1 for c in caches if c._fd is not None)
