"""What ``OpenFolder.derived`` (imapaccess.py) gives a ``compute`` when the
cache misses: the whole message in CRLF form, or, for a compute that
carries a ``header_end`` function (contracts.OpenFolder.derived;
protocols/imap/fetch_cache.py), only its header block, read from the start
of the file in one bounded read (a second, whole read when the header runs
past it).  Runs on the folder's worker thread.  ``cached``: the entries the
cache already holds, nothing read (RFC 8970 PREVIEW (LAZY)).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Sequence

from store import msgcache
from store.folder_imap import to_crlf

log = logging.getLogger("mailsrv.imap.access")

# Ours: the first read of a message file when only its header is wanted.
# The benchmark corpus's headers are 0.3-1 KiB and a usual one is 1-4 KiB
# (protocols/imap/derived.py MAX_HEADER's comment); a longer header takes a
# second read of the whole file.
HEAD_READ = 8 * 1024


def message_for(folder, msg, uid: int, compute: Callable) -> Optional[bytes]:
    """The octets ``compute`` is given for the message ``msg`` (UID ``uid``)
    of the snapshot; None when it is gone (RFC 2180 §4.1)."""
    header_end = getattr(compute, "header_end", None)
    if header_end is not None and msg is not None:
        try:
            return _header_block(msg.path, header_end)
        except FileNotFoundError:
            pass                      # renamed by a flag change: read_crlf looks again
    return folder.read_crlf(uid)


def _header_block(path: str, header_end: Callable) -> bytes:
    """The header block of the message file at ``path``, in CRLF form;
    ``header_end(prefix, complete)`` says where it ends, or None: read more."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # read(2) of a regular file is short only at its end (POSIX: unless a
        # signal interrupts it, which a local file's read is not)
        raw = os.read(fd, HEAD_READ)
        # to_crlf of a prefix of the file is a prefix of its CRLF form (each LF
        # gets one CR): first only up to the first empty line, usually enough
        blank = raw.find(b"\n\n")
        if blank < 0:
            blank = raw.find(b"\n\r\n")
        else:
            crlf = raw.find(b"\n\r\n", 0, blank)
            blank = crlf if crlf >= 0 else blank
        if blank >= 0:
            prefix = to_crlf(raw[:blank + 3])
            end = header_end(prefix, False)
            if end is not None:
                return prefix[:end]
        prefix = to_crlf(raw)
        end = header_end(prefix, len(raw) < HEAD_READ)
        if end is None:
            with os.fdopen(os.dup(fd), "rb") as f:
                prefix = to_crlf(raw + f.read())
            end = header_end(prefix, True)
    finally:
        os.close(fd)
    return prefix[:end]


def cached(folder, uids: Sequence[int], kind: str) -> Dict[int, Dict[str, bytes]]:
    """``{uid: entry}`` of ``kind`` already in the folder's cache (store/msgcache.py),
    no message read (contracts.OpenFolder.cached); an unreadable cache answers {}."""
    snap = folder.knowing(uids)
    keys = {}
    for uid in uids:
        msg = snap.by_uid(uid)
        if msg is not None:
            keys[uid] = msg.key
    try:
        hits = msgcache.cache_for(folder.path).get_many(keys.values(), kind)
    except OSError as exc:
        log.warning("message cache unusable folder=%s: %r", folder.path, exc)
        return {}
    return {uid: hits[key] for uid, key in keys.items() if key in hits}
