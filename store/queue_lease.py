"""Leases on outbound queue entries, shared by every process using one queue.

Several mailsrv processes (workers on one machine, or hosts sharing the data
directory over NFS: issue 14) run one queue.  Each entry must be delivered by
exactly one of them at a time, and an entry whose deliverer died must not be
forgotten.  Before a delivery round the relay takes the entry's lease; it
renews it while the round lasts and lets it go when the results are written.
A lease names its holder and the time it runs out: a holder that dies
(SIGKILL, a crash, a host that went away) stops renewing, and once the time
has passed another process takes the entry over.

On disk, beside the entry in ``DATA/queue/``::

    <id>.lease   "<holder> <until>\\n": holder = host:pid:token, until = Unix time

Every read-decide-write of a lease file happens under ``flock`` on
``DATA/queue/lease.lock`` (a few microseconds; Linux's NFS client turns it
into a POSIX lock the server keeps between hosts; unlike ``lockf``, it also
keeps apart two openers in one process), so two takers never both win.  A lease file is replaced with
a rename and not fsync'd: losing one in a crash only means it ran out early,
and the holder's death is exactly when that is right.  A lease of this
host whose process no longer exists is free at once (after a restart the
server does not wait out its own dead predecessor's leases).
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import List, Optional, Tuple

LOCK_FILE = "lease.lock"
SUFFIX = ".lease"


def new_holder() -> str:
    """host:pid:token, unique per process start (pids are reused)."""
    host = os.uname().nodename.replace(" ", "_").replace(":", "_") or "localhost"
    return "%s:%d:%s" % (host, os.getpid(), os.urandom(4).hex())


class Leases:
    """The leases of one queue directory, held as ``holder``, each ``ttl`` seconds long."""

    def __init__(self, directory: str, ttl: float, holder: Optional[str] = None):
        self.dir = directory
        self.ttl = float(ttl)
        self.holder = holder or new_holder()
        self._host = self.holder.split(":")[0]

    def _path(self, queue_id: str) -> str:
        return os.path.join(self.dir, queue_id + SUFFIX)

    def _locked(self):
        fd = os.open(os.path.join(self.dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _unlock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def read(self, queue_id: str) -> Optional[Tuple[str, float]]:
        """(holder, until) of the entry's lease, or None (none, or unreadable: free)."""
        try:
            with open(self._path(queue_id), "r", encoding="ascii", errors="replace") as f:
                holder, until = f.read(200).split()
            return holder, float(until)
        except (OSError, ValueError):
            return None

    def _free(self, lease: Optional[Tuple[str, float]], now: float) -> bool:
        if lease is None or lease[0] == self.holder or lease[1] <= now:
            return True
        host, _, rest = lease[0].partition(":")
        if host != self._host:
            return False
        try:
            os.kill(int(rest.split(":")[0]), 0)      # our host: is its process alive?
        except ProcessLookupError:
            return True
        except (ValueError, OSError):
            return False
        return False

    def _write(self, queue_id: str, until: float) -> None:
        tmp = os.path.join(self.dir, "tmp-lease-%s-%s" % (self.holder.replace(":", "-"), queue_id))
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%s %.3f\n" % (self.holder, until))
        os.replace(tmp, self._path(queue_id))

    def take(self, queue_id: str, now: float) -> bool:
        """The lease is ours until now + ttl: True; held by a live other: False."""
        fd = self._locked()
        try:
            if not self._free(self.read(queue_id), now):
                return False
            self._write(queue_id, now + self.ttl)
            return True
        finally:
            self._unlock(fd)

    def renew(self, queue_ids: List[str], now: float) -> List[str]:
        """Extend ours; returns the ids whose lease is no longer ours (taken over)."""
        lost = []
        if not queue_ids:
            return lost
        fd = self._locked()
        try:
            for queue_id in queue_ids:
                lease = self.read(queue_id)
                if lease is not None and lease[0] != self.holder:
                    lost.append(queue_id)
                else:
                    self._write(queue_id, now + self.ttl)
        finally:
            self._unlock(fd)
        return lost

    def release(self, queue_id: str) -> None:
        """Let ours go (the round's results are written); another's stays."""
        fd = self._locked()
        try:
            lease = self.read(queue_id)
            if lease is not None and lease[0] == self.holder:
                remove(self.dir, queue_id)
        finally:
            self._unlock(fd)


def remove(directory: str, queue_id: str) -> None:
    """The lease file of an entry that is gone (Queue.remove)."""
    try:
        os.unlink(os.path.join(directory, queue_id + SUFFIX))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
