"""The data folder as the command line and the server meet it.

* :func:`open_data_dir`: the folder must exist for every command but
  ``user add`` and the server, which may create it; any problem is one line
  naming the folder and what is wrong (:class:`DataDirError`).
* :class:`ServerLock`: a running server holds ``fcntl.flock`` on
  ``DATA/mailsrv.pid`` (which holds its pid), so a second server on the same
  folder refuses to start, and ``queue`` commands signal only a process that
  holds the lock: a pid left in a stale file is never signalled.
* :func:`check_record_file`: the users and aliases files line by line, for
  ``mailsrv.py check``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from typing import List, Optional, Tuple

PID_FILE = "mailsrv.pid"


def pid_name(shared: bool, host: str) -> str:
    """The pid file of this server: ``mailsrv.pid``, or with shared_data
    (several hosts on one folder, issue 14) one per host name,
    ``mailsrv.<host>.pid``, so each host's server locks only its own."""
    if not shared:
        return PID_FILE
    return "mailsrv.%s.pid" % host_part(host)


def host_part(host: str) -> str:
    """``host`` (or this machine's name) made safe as one file name."""
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in (host or os.uname().nodename))
    return safe.strip(".") or "localhost"


def run_folder(data_dir: str, shared: bool, host: str) -> str:
    """``DATA/run/<host>/``: the sockets of the mailsrv processes of one host
    (protocols/loop_siblings.py).  Per host: Unix sockets do not cross hosts,
    and with shared_data the folder is on a network file system seen by
    several; the host is named as pid_name names it (the configured host
    name with shared_data, else this machine's name)."""
    return os.path.join(data_dir, "run", host_part(host if shared else ""))


class DataDirError(Exception):
    """A data folder or file that cannot be used; the message is one line."""


def os_reason(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return (e.strerror or str(e)).lower()


def open_data_dir(path: str, create: bool = False, write: bool = True) -> str:
    """The absolute path of a usable data folder, made (mode 0700) if
    ``create``; raises DataDirError otherwise."""
    data = os.path.abspath(path)
    if not os.path.lexists(data) and not create:
        raise DataDirError(f"data folder {data} does not exist (give --data DIR; "
                           f"only `user add` and the server create one)")
    if not os.path.lexists(data):
        try:
            os.makedirs(data, mode=0o700)
        except OSError as e:
            raise DataDirError(f"cannot create data folder {data}: {os_reason(e)}") from None
    if not os.path.isdir(data):
        raise DataDirError(f"data folder {data} is not a directory")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(data, mode):
        raise DataDirError(f"data folder {data} is not {'writable' if write else 'readable'} by this user")
    if write:
        _probe_write(data)
    return data


def open_for_command(path: str, cmd: str, action: Optional[str]) -> str:
    """The data folder for a command line subcommand: only `user add` (and
    the server) create it; reading commands need it to exist, not to be
    writable."""
    reading = action in ("list", "show")
    return open_data_dir(path, create=(cmd, action) == ("user", "add"), write=not reading)


def _probe_write(data: str) -> None:
    """os.access says yes to root on a read-only mount; a real write does not."""
    probe = os.path.join(data, f".mailsrv-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataDirError(f"cannot write in data folder {data}: {os_reason(e)}") from None


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class ServerLock:
    """The exclusive lock of one data folder, held for the server's life."""

    def __init__(self, data: str, name: str = PID_FILE):
        self.path = os.path.join(data, name)
        self.fd: Optional[int] = None

    def acquire(self) -> "ServerLock":
        """Lock and write our pid; DataDirError names the holder's pid."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise DataDirError(f"cannot open {self.path}: {os_reason(e)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid else "another process"
                raise DataDirError(f"data folder {os.path.dirname(self.path)} is in use by another mailsrv "
                                   f"({who}, holding the lock on {self.path}); stop it first") from None
            if self._still_linked(fd):
                break
            os.close(fd)   # the holder removed the file as we opened it: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        return self

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the pid file (while still holding the lock), then unlock."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def lock_holder(data: str, name: str = PID_FILE) -> Optional[int]:
    """The pid of the server holding ``data``'s lock, or None when no process
    holds it (a pid file without a lock is stale and names nobody)."""
    try:
        fd = os.open(os.path.join(data, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or None
        return None
    finally:
        os.close(fd)


def check_record_file(path: str, key: str) -> List[str]:
    """Problems of a users/aliases file (JSON lines with ``key``), one line
    each; a missing file is empty, not a problem."""
    problems: List[str] = []
    try:
        with open(path, "r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    rec[key]
                except (ValueError, KeyError, TypeError):
                    problems.append(f"{path}:{lineno}: malformed line (the server skips it)")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        why = os_reason(e) if isinstance(e, OSError) else "not UTF-8 text"
        problems.append(f"cannot read {path}: {why}")
    return problems


def check_data_dir(path: str) -> Tuple[List[str], str]:
    """(problems, description) of a data folder for ``mailsrv.py check``:
    one that does not exist yet is fine if the server could create it."""
    data = os.path.abspath(path)
    if os.path.lexists(data):
        try:
            open_data_dir(data, write=True)
        except DataDirError as e:
            return [str(e)], ""
        return [], f"data folder {data} is usable"
    parent = os.path.dirname(data)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return [f"cannot create data folder {data}: {parent} is not a directory"], ""
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"cannot create data folder {data}: {parent} is not writable by this user"], ""
    return [], f"data folder {data} does not exist yet; the server (or `user add`) creates it"


def lock_or_holder(data: str, name: str = PID_FILE) -> Tuple[Optional[ServerLock], Optional[int]]:
    """(our lock, None) when no server holds ``data``; else (None, its pid)."""
    try:
        return ServerLock(data, name).acquire(), None
    except DataDirError:
        pid = lock_holder(data, name)
        if pid is None:
            raise
        return None, pid
