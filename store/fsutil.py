"""The few file-system moves every durable write in store/ is made of.

A file becomes visible under its final name only complete and on disk:
write it under a temporary name, fsync it, rename it into place
(``os.replace`` is atomic on POSIX), then fsync the directory so the rename
itself survives a crash (fsync(2): "calling fsync() on the file does not
necessarily ensure that the entry in the directory containing the file has
also reached disk").
"""

import os
from typing import Optional


def write_all(fd: int, data: bytes) -> None:
    """os.write until every octet is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, tmp: Optional[str] = None, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` durably: tmp, fsync, rename, directory fsync.

    ``tmp`` defaults to ``path + ".tmp"``; callers that may race hold a lock
    or pass a unique name.  A leftover tmp file of a crash is overwritten; on
    error the tmp file is removed and the old ``path`` is untouched.
    """
    tmp = tmp or path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(os.path.dirname(path))
