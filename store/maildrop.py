"""POP3's view of a user's INBOX Maildir (RFC 1939), the store side of pop3_server.

* RFC 1939 §4: after authentication the server "acquires an exclusive-access
  lock on the maildrop".  ``open_maildrop`` takes ``flock(LOCK_EX|LOCK_NB)`` on
  ``mailsrv-pop3.lock`` in the Maildir and keeps that descriptor open for the
  session.  flock belongs to the open file description, so a second session in
  the same process conflicts as well, and the kernel drops the lock when the
  process dies: no stale lock files.  Other readers (IMAP, mutt) are not
  locked out; Maildir needs no locks (maildir-spec.txt "Two words: no locks"),
  and this module copes with files that move or vanish under it.
* RFC 1939 §4: messages are numbered 1..n at open ("index 0 = message 1"
  here), in UID order of the folder's snapshot.  The maildrop is a view over
  store/folder.py, the one module that changes a mailbox: RETR's \\Seen marks
  (applied together at QUIT or at the session's end) and QUIT's deletes are a
  ``set_flags`` and an ``expunge`` through it, so IMAP sessions and Dovecot see
  them with their MODSEQ.
* RFC 1939 §7 UIDL: the unique-id must be 1-70 characters 0x21-0x7E and
  persist across sessions.  It is derived from the Maildir key (which survives
  new/ → cur/ moves and flag changes and even a lost UID index): the key
  itself when it already fits, as qmail-pop3d and Courier use it, else
  ``"H"`` + the SHA-1 of the key in hex (41 characters).
* RFC 1939 §11 sizes: ``size`` is the octet count in CRLF form (stored files
  have LF line ends and carry their CRLF size as ``,W=`` in the name; a file
  without it is read once and its size cached in the uidlist, store/folder.py),
  so STAT/LIST/UIDL open no file.

Stored form served by ``open_message``: the raw file.  The POP3 session turns
every LF not preceded by CR into CRLF and byte-stuffs lines starting with "."
(RFC 1939 §3); with that rule the bytes it sends equal ``size``.

Left out: APOP secrets, per-user "leave on server" policies.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import re
import threading
from itertools import repeat
from operator import itemgetter, methodcaller
from typing import BinaryIO, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

from store.folder import Folder, Message, Snapshot, open_folder

POP3_LOCK = "mailsrv-pop3.lock"
# RFC 1939 §7: "one to 70 characters in the range 0x21 to 0x7E".
MAX_UIDL_LEN = 70
# Bound on the per-process listing cache (one entry per maildrop opened; ours).
MAX_CACHED_LISTINGS = 1000
_UIDL_OK = re.compile(r"[\x21-\x7e]{1,%d}\Z" % MAX_UIDL_LEN)
_HEX = methodcaller("hexdigest")
_KEY, _SIZE, _UID, _PATH = (itemgetter(Message._fields.index(f)) for f in ("key", "size", "uid", "path"))


class MaildropLocked(Exception):
    """Another POP3 session holds the maildrop (RFC 1939 §4: answer -ERR)."""


class DeleteFailed(OSError):
    """commit_deletes could not remove these messages (``indices``, 0-based)."""

    def __init__(self, indices: List[int]):
        super().__init__(errno.EIO, "%d deleted messages not removed" % len(indices))
        self.indices = indices


class MaildropMessage(NamedTuple):
    uid: str        # UIDL unique-id (RFC 1939 §7)
    size: int       # octets in CRLF form (RFC 1939 §11)
    key: str        # Maildir key
    imap_uid: int   # the folder's UID (RFC 3501 §2.3.1.1)


@functools.lru_cache(maxsize=1 << 17)
def pop3_uid(key: str) -> str:
    """A UIDL unique-id from a Maildir key (RFC 1939 §7: 1-70 chars, 0x21-0x7E)."""
    if _UIDL_OK.match(key) and not key.startswith("H"):
        return key
    return "H" + hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


class Maildrop:
    """An open, locked maildrop; build it with ``open_maildrop``."""

    def __init__(self, path: str, lock_fd: int, folder: Folder, snapshot: Snapshot):
        self.path = path
        self._lock_fd: Optional[int] = lock_fd
        self._folder = folder
        self._seen: Set[int] = set()            # RETR'd, \\Seen not yet applied
        messages, paths = _listing(path, snapshot)
        self.messages: List[MaildropMessage] = list(messages)
        self._paths: List[str] = list(paths)
        self.uidvalidity = snapshot.uidvalidity

    @property
    def total_size(self) -> int:
        """STAT's octet count (RFC 1939 §5), before any DELE."""
        return sum(m.size for m in self.messages)

    def open_message(self, i: int) -> BinaryIO:
        """The stored file of message ``i`` (0-based), opened for binary reading.

        Follows a rename made meanwhile by another program (new/ → cur/, flag
        change).  Raises FileNotFoundError when the message is gone for good.
        """
        key = self.messages[i].key
        try:
            return open(self._paths[i], "rb")
        except FileNotFoundError:
            entry = self._folder.sync(rescan=True).snapshot.by_uid(self.messages[i].imap_uid)
            if entry is None or entry.key != key:
                raise
            self._paths[i] = entry.path
            return open(entry.path, "rb")

    def mark_seen(self, i: int) -> None:
        """RETR read the message: it gets the S flag (maildir-spec; moved to cur/, key kept).

        RFC 1939 has no flags; like Dovecot, a message fetched over POP3 shows
        as \\Seen (RFC 3501 §2.3.2) to IMAP and mutt afterwards: at QUIT, or when
        the session ends without it, all in one change (one dotlock, one MODSEQ)
        instead of one per RETR.
        """
        self._seen.add(i)

    def _flush_seen(self, skip: Iterable[int] = ()) -> None:
        """Apply the pending \\Seen marks (a message deleted meanwhile has nothing to mark)."""
        pending, self._seen = self._seen - set(skip), set()
        if pending:
            self._folder.set_flags([self.messages[i].imap_uid for i in sorted(pending)], "S", "add")

    def commit_deletes(self, indices: Iterable[int]) -> None:
        """RFC 1939 §6 UPDATE: remove the messages marked deleted (an expunge).

        A file already gone counts as removed.  When some could not be removed,
        the rest are still removed and DeleteFailed (an OSError) lists them, so
        POP3 answers "-ERR some deleted messages not removed".
        """
        wanted = sorted(set(indices))
        self._flush_seen(skip=wanted)
        result = self._folder.expunge([self.messages[i].imap_uid for i in wanted])
        failed = set(result.failed)
        if failed:
            raise DeleteFailed([i for i in wanted if self.messages[i].imap_uid in failed])

    def close(self) -> None:
        """Apply pending \\Seen marks, release the maildrop lock (RFC 1939 §6); safe to
        call twice."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            self._flush_seen()
        finally:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def __enter__(self) -> "Maildrop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The listing built from the last snapshot of each maildrop in this process: a
# login to an unchanged maildrop reuses it (the Folder returns the same snapshot).
_listings: Dict[str, Tuple[Snapshot, Tuple[MaildropMessage, ...], Tuple[str, ...]]] = {}
_listings_lock = threading.Lock()


def _listing(path: str, snapshot: Snapshot) -> Tuple[Tuple[MaildropMessage, ...], Tuple[str, ...]]:
    """(messages, paths) for ``snapshot``, from the per-process cache when it is the same one."""
    with _listings_lock:
        hit = _listings.pop(path, None)
        if hit is not None:
            _listings[path] = hit              # most recently used last
    if hit is not None and hit[0] is snapshot:
        return hit[1], hit[2]
    entries = snapshot.messages
    keys = list(map(_KEY, entries))
    # column by column: 10,000 messages at a first login (as in store/folder_bulk.py)
    messages = tuple(map(tuple.__new__, repeat(MaildropMessage),
                         zip(_pop3_uids(keys), map(_SIZE, entries), keys, map(_UID, entries))))
    paths = tuple(map(_PATH, entries))
    with _listings_lock:
        _listings.pop(path, None)
        while len(_listings) >= MAX_CACHED_LISTINGS:      # LRU: dicts keep insertion order
            del _listings[next(iter(_listings))]
        _listings[path] = (snapshot, messages, paths)
    return messages, paths


def _pop3_uids(keys: List[str]) -> List[str]:
    """pop3_uid of each key, for all the keys of a maildrop at once when they are all
    printable ASCII (what delivery names are): the key where it fits, else "H" and
    the SHA-1 of the key (ours run to ~75 characters), hashed in one pass."""
    flat = "".join(keys)
    if not keys or not (flat.isascii() and flat.isprintable() and " " not in flat):
        return list(map(pop3_uid, keys))
    lengths = list(map(len, keys))
    hashed = map("H".__add__, map(_HEX, map(hashlib.sha1, map(str.encode, keys))))
    if min(lengths) > MAX_UIDL_LEN:
        return list(hashed)                              # none fits
    if max(lengths) <= MAX_UIDL_LEN and "" not in keys and "\nH" not in "\n" + "\n".join(keys):
        return keys                                      # every one fits
    return [h if not 0 < n <= MAX_UIDL_LEN or k[:1] == "H" else k for k, n, h in zip(keys, lengths, hashed)]


def open_maildrop(store_or_path: Union[object, str], user: Optional[str] = None) -> Maildrop:
    """Lock and open ``user``'s INBOX (RFC 1939 §4).

    ``store_or_path`` is a MailStore (its ``maildir_path(user)`` is used, and
    ``create_mailbox(user)`` when the Maildir does not exist yet) or the path
    of a Maildir.  Raises MaildropLocked when another session holds it.
    """
    path = _maildir(store_or_path, user)
    fd = _lock(path)
    try:
        folder = open_folder(path)
        return Maildrop(path, fd, folder, folder.sync().snapshot)
    except BaseException:
        os.close(fd)       # RFC 1939 §4: release the lock before answering -ERR
        raise


def _maildir(store_or_path: Union[object, str], user: Optional[str]) -> str:
    if isinstance(store_or_path, (str, os.PathLike)):
        path = os.fspath(store_or_path)
        if not os.path.isdir(os.path.join(path, "cur")):
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
        return path
    path = store_or_path.maildir_path(user)
    if not os.path.isdir(os.path.join(path, "cur")):
        store_or_path.create_mailbox(user)
    return path


def _lock(path: str) -> int:
    """flock(LOCK_EX|LOCK_NB) on a fresh open file description → the descriptor."""
    fd = os.open(os.path.join(path, POP3_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise MaildropLocked(path) from None
        raise
    return fd
