"""One user's IMAP METADATA annotations (RFC 5464): ``mailsrv-metadata`` in
the root of the user's Maildir, one file per user.

Dovecot keeps its annotations per user too (``mail_attribute_dict``, often
``file:~/Maildir/dovecot-attributes``), keyed by the mailbox GUID; so do we:
a mailbox's entries are filed under its GUID (its RFC 8474 MAILBOXID, from
the ``G`` of its dovecot-uidlist header, store/folder_uidlist.py), the
server's under ``""``.
RENAME moves the directory and its uidlist, so the entries follow the
mailbox with nothing written (RFC 5464 §4.1 SHOULD); a mailbox deleted and
made again has a new GUID, so it never inherits the old entries, which
DELETE removes anyway (§4.1 SHOULD).

The file: a first line ``mailsrv-metadata 1``, then one line per entry,
``<owner> TAB <entry name> TAB <value in base64> LF``.  Entry names are kept
in lower case (§3.2: "Entry names are case-insensitive") and can hold no TAB
or LF (§3.2 refuses octets below 0x20; protocols/imap/metadata.py checks
them); values are any octets (§5 ``value = nstring / literal8``), hence the
base64.  A line that cannot be read (bad bytes, a torn write by hand, a
value not in base64) is logged with the file's name and line number and
skipped, never fatal; the next change writes the file without it.

Changes are all or nothing (§4.3: "MUST NOT change the values for other
annotations"): the whole file is rewritten (tmp, fsync, rename, directory
fsync: fsutil.write_atomic) under an exclusive ``flock`` of
``mailsrv-metadata.lock``, which serialises the sessions and processes of the
user; readers read the file as last renamed, without the lock.

Limits (§4.1: at least 1024 octets a value and 10 entries a mailbox must be
accepted), all ours: ``MAX_VALUE`` octets a value, ``MAX_ENTRIES`` entries a
mailbox (or the server), ``MAX_TOTAL`` octets of values for the whole user,
so the file stays small enough to read whole at each command.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import logging
import os
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from store.fsutil import write_atomic

log = logging.getLogger("mailsrv.store.metadata")

FILE = "mailsrv-metadata"
LOCK = FILE + ".lock"
MAGIC = "mailsrv-metadata 1"
SERVER = ""                    # the owner of server annotations (RFC 5464 §3.1: mailbox "")
# Ours: 64 KiB a value (64 times the 1024 octets RFC 5464 §4.1 requires; a
# Sieve script or a client's settings blob fits, a mailbox of mail does not).
MAX_VALUE = 64 * 1024
# Ours: 100 entries per mailbox or for the server (ten times §4.1's 10).
MAX_ENTRIES = 100
# Ours: 1 MiB of values per user, so the file read at each command stays small.
MAX_TOTAL = 1024 * 1024
_guard = threading.Lock()
_path_locks: Dict[str, threading.Lock] = {}    # lock file -> its lock among our own threads


class TooBig(ValueError):
    """A value over MAX_VALUE: ``[METADATA MAXSIZE n]`` (§4.3)."""

    def __init__(self, entry: str, size: int):
        super().__init__("value of %s is %d octets, over the limit of %d" % (entry, size, MAX_VALUE))
        self.limit = MAX_VALUE


class TooMany(ValueError):
    """Over MAX_ENTRIES or MAX_TOTAL: ``[METADATA TOOMANY]`` (§4.3)."""


Entries = Dict[Tuple[str, str], bytes]     # (owner, entry name) -> value


class MetadataFile:
    """The annotations of the user whose Maildir root is ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.path = os.path.join(root, FILE)

    # -- reading ----------------------------------------------------------------------
    def load(self) -> Entries:
        """Every entry of the file; unreadable lines are logged and skipped."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        out: Entries = {}
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line or (number == 1 and line == MAGIC.encode("ascii")):
                continue
            try:
                owner, entry, value = _parse_line(line)
            except ValueError as exc:
                log.warning("%s line %d unusable (%s): skipped", self.path, number, exc)
                continue
            out[(owner, entry)] = value
        return out

    def of(self, owner: str) -> Dict[str, bytes]:
        """The entries of one owner (a mailbox GUID, or SERVER): name -> value."""
        return {entry: value for (o, entry), value in self.load().items() if o == owner}

    # -- changing ---------------------------------------------------------------------
    def change(self, owner: str, changes: Sequence[Tuple[str, Optional[bytes]]]) -> None:
        """Set (value) or remove (None) entries of ``owner``, all or none (§4.3);
        TooBig / TooMany when a limit would be passed, nothing written then."""
        for entry, value in changes:
            if value is not None and len(value) > MAX_VALUE:
                raise TooBig(entry, len(value))
        with self._locked():
            entries = self.load()
            count, total = _count(entries, owner), sum(map(len, entries.values()))
            for entry, value in changes:
                if value is None:
                    entries.pop((owner, entry.lower()), None)
                else:
                    entries[(owner, entry.lower())] = value
            now = _count(entries, owner)
            if now > MAX_ENTRIES and now > count:        # what is over already may still shrink
                raise TooMany("more than %d entries on one mailbox" % MAX_ENTRIES)
            size = sum(map(len, entries.values()))
            if size > MAX_TOTAL and size > total:
                raise TooMany("more than %d octets of annotations for the user" % MAX_TOTAL)
            self._write(entries)

    def copy(self, source: str, target: str) -> None:
        """Copy the entries of ``source`` to ``target`` (RENAME INBOX, §4.1)."""
        with self._locked():
            entries = self.load()
            mine = {e: v for (o, e), v in entries.items() if o == source}
            if not mine:
                return
            entries.update(((target, e), v) for e, v in mine.items())
            self._write(entries)

    def drop(self, owner: str) -> None:
        """Remove every entry of ``owner`` (DELETE, §4.1)."""
        with self._locked():
            entries = self.load()
            kept = {k: v for k, v in entries.items() if k[0] != owner}
            if len(kept) != len(entries):
                self._write(kept)

    def _write(self, entries: Entries) -> None:
        lines = [MAGIC + "\n"] + ["%s\t%s\t%s\n" % (o, e, base64.b64encode(v).decode("ascii"))
                                  for (o, e), v in sorted(entries.items())]
        write_atomic(self.path, "".join(lines).encode("ascii"), tmp="%s.tmp.%d" % (self.path, os.getpid()))

    def _locked(self):
        return _Flock(os.path.join(self.root, LOCK))


class _Flock:
    """An exclusive flock of the lock file (other processes), our threads serialised
    first by a lock per file (flock is per open file description: two descriptors
    of one process exclude each other too, the thread lock only saves the wait)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self):
        with _guard:            # one lock per user's file: users do not wait for each other
            self.threads = _path_locks.setdefault(self.path, threading.Lock())
        self.threads.acquire()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.threads.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            os.close(self.fd)          # closing the descriptor releases the flock
        finally:
            self.threads.release()


def _count(entries: Entries, owner: str) -> int:
    return sum(1 for o, _e in entries if o == owner)


def _parse_line(line: bytes) -> Tuple[str, str, bytes]:
    """``owner TAB entry TAB base64`` -> (owner, entry, value); ValueError if unusable."""
    parts = line.split(b"\t")
    if len(parts) != 3:
        raise ValueError("%d fields, not 3" % len(parts))
    owner_raw, entry_raw, value_raw = parts
    try:
        owner, entry = owner_raw.decode("ascii"), entry_raw.decode("ascii")
        value = base64.b64decode(value_raw, validate=True)
    except (UnicodeDecodeError, binascii.Error) as exc:
        raise ValueError("bad bytes: %s" % exc)
    if owner and not all(c.isascii() and (c.isalnum() or c in "_-") for c in owner):
        raise ValueError("owner %r is not a MAILBOXID" % owner[:40])
    if not entry.startswith(("/private/", "/shared/")) or any(ord(c) < 0x20 or c in "*%" for c in entry):
        raise ValueError("entry name %r not allowed" % entry[:60])
    return owner, entry.lower(), value


def below(entries: Iterable[str], name: str, depth: Optional[int]) -> List[str]:
    """The names among ``entries`` strictly below ``name`` within ``depth`` levels
    (None: any depth), sorted (RFC 5464 §4.2.2 DEPTH 1 / infinity)."""
    prefix = name.lower().rstrip("/") + "/"
    out = []
    for entry in entries:
        if entry.startswith(prefix) and (depth is None or entry[len(prefix):].count("/") < depth):
            out.append(entry)
    return sorted(out)
