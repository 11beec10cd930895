"""The few file-system moves every durable write in store/ is made of.

A file becomes visible under its final name only complete and on disk:
write it under a temporary name, fsync it, rename it into place
(``os.replace`` is atomic on POSIX), then fsync the directory so the rename
itself survives a crash (fsync(2): "calling fsync() on the file does not
necessarily ensure that the entry in the directory containing the file has
also reached disk").
"""

import os
from typing import Callable, Optional


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


def write_atomic(path: str, data: bytes, tmp: Optional[str] = None, mode: int = 0o600,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` durably: tmp, fsync, rename, directory fsync.

    ``tmp`` defaults to ``path + ".tmp"``; callers that may race hold a lock
    or pass a unique name.  A leftover tmp file of a crash is overwritten; on
    error the tmp file is removed and the old ``path`` is untouched.
    ``durable=False``: atomic but not flushed (no fsync of file or directory),
    for a file whose loss in a crash its owner recovers from (store/modseq.py).
    """
    tmp = tmp or path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            if durable:
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
    if durable:
        fsync_dir(os.path.dirname(path))


# Octets an AppendFile holds before it writes: one SMTP read (64 KiB, the
# event loop's READ_CHUNK) is a system call per read, and the memory per
# open message file stays this small constant.
APPEND_BUFFER = 64 * 1024
READ_CHUNK = 64 * 1024          # octets per read when a file is copied or sent
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class AppendFile:
    """A new file written by bounded buffered appends (never whole in memory).

    ``write`` buffers at most ``APPEND_BUFFER`` octets, then appends them;
    ``sync`` writes the rest, fsyncs and closes; ``discard`` closes and
    removes the file.  The file is named and created (``O_EXCL``) by the
    first append, so a small message costs the caller nothing but the copy
    into the buffer: its ``sync``, on a worker thread, names, creates,
    writes and fsyncs it.  ``path`` may be a function giving the name then;
    ``prepare`` is called once if the directory is missing (a mailbox to
    create); ``lf`` stores CRLF as LF (the Maildir form, store/deliver.py),
    a CRLF split between two appends included.  The directory entry is the
    caller's business (link or rename, then fsync the directory).
    """

    def __init__(self, path, mode: int = 0o600, prepare: Optional[Callable[[], None]] = None,
                 lf: bool = False):
        self._namer = path if callable(path) else (lambda: path)
        self.path: Optional[str] = None if callable(path) else path
        self.size = 0               # octets on disk
        self.wire_size = 0          # octets given to write()
        self._buf = bytearray()
        self._mode = mode
        self._prepare = prepare
        self._lf = lf
        self._fd: Optional[int] = None
        self._created = False

    def _create(self) -> None:
        self.path = self._namer()
        try:
            self._fd = os.open(self.path, _CREATE_FLAGS, self._mode)
        except FileNotFoundError:
            if self._prepare is None:
                raise
            self._prepare()
            self._fd = os.open(self.path, _CREATE_FLAGS, self._mode)
        self._created = True

    def write(self, data: bytes) -> None:
        self.wire_size += len(data)
        self._buf += data
        if len(self._buf) >= APPEND_BUFFER:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if not self._created:
            self._create()
        buf, keep = self._buf, b""
        if self._lf:
            if not final and buf.endswith(b"\r"):
                buf, keep = buf[:-1], b"\r"      # its LF may come with the next append
            buf = bytes(buf).replace(b"\r\n", b"\n")
        if buf:
            write_all(self._fd, buf)
            self.size += len(buf)
        self._buf = bytearray(keep)

    def sync(self) -> None:
        """Write what is buffered, fsync, close: the content is durable."""
        self.flush(final=True)
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self._buf = bytearray()
        self.close()
        if self._created:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def read_chunks(path: str, size: int = READ_CHUNK):
    """The file's content in pieces of at most ``size`` octets."""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk
