"""The local channel between sibling mailsrv processes on one host (issue 14).

Several processes may serve one data folder on one host (``workers = N``, or
any two mailsrv started on it): they share the failed-login counters, the
auth cache's invalidation and the change hub's news through this channel.  It
needs no supervisor: each process binds a Unix datagram socket (unix(7)) in
the host's run folder, ``DATA/run/<host>/`` (store/datadir.py ``run_folder``),
and a message is sent to every other socket there.

* **Who may talk**: the folder is made mode 0700 (only our user, and root,
  may reach a socket in it), and a datagram is accepted only from a socket
  bound in that same folder (its sender address); anything else is counted as
  refused and dropped.
* **What is sent**: small JSON objects ``{"t": kind, ...}``; the messages of
  one loop iteration go out together, as a JSON array per datagram of at most
  ``MAX_DATAGRAM`` octets (identical messages once).  A datagram that does not
  parse, or a message without a string ``t``, is dropped (debug log);
  handlers get the object and check its fields themselves.
* **Never blocking the loop**: the socket is non-blocking.  A peer whose
  receive queue is full (its loop is busy: Linux queues only
  ``net.unix.max_dgram_qlen`` datagrams, 10 by default) loses that datagram,
  logged at debug; each use says why that is acceptable (a hint, with the
  poll or a later message behind it).  A socket left by a process that died
  (ECONNREFUSED) or already gone (ENOENT) is unlinked and forgotten.
* **Commands**: a process without a loop (``mailsrv.py user passwd``) may
  send one message with ``tell_siblings``, from a socket bound in the
  folder for the moment.
* **Peers**: the folder is listed at start and every ``PEER_RESCAN_S`` (on a
  worker: with shared_data it is on NFS); a new process says ``hello`` and a
  closing one ``bye``, so siblings know of each other at once.

Part of the event loop (tests/test_layering.py lets it use sockets).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
from typing import Callable, Dict, List, Optional, Set

log = logging.getLogger("mailsrv.siblings")

Handler = Callable[[dict], None]

# Octets per datagram.  A message is a user name and a folder name (each at
# most a few hundred octets, RFC 5321 §4.5.3.1: 64 + 255 for an address) or an
# address group and an account: 4 KB holds any of them and packs dozens of
# the usual ones; Linux takes datagrams far larger (unix(7): wmem_default).
MAX_DATAGRAM = 4096
# Messages waiting for the next flush, beyond which new ones are dropped (each
# is a hint with a fallback, see the module docstring): one loop iteration
# rarely produces more than a few dozen.
MAX_PENDING = 1024
# Seconds between listings of the run folder, for a sibling whose ``hello`` we
# lost; its own messages teach us of it sooner.
PEER_RESCAN_S = 10.0
# unix(7): sun_path is 108 octets on Linux, the terminating NUL included.
SOCKET_PATH_MAX = 107
SUFFIX = ".sock"


class SiblingChannel:
    """One process's end of the channel; loop thread only (``close`` also after
    the loop stopped)."""

    def __init__(self, loop, folder: str):
        self.loop = loop
        self.folder = folder
        self.path: Optional[str] = None
        self._dg = None
        self._handlers: Dict[str, Handler] = {}
        self._peers: Set[str] = set()
        self._pending: Dict[bytes, None] = {}     # encoded messages, in order, once each
        self._flushing = False
        self._rescan_at = 0.0
        self._rescanning = False
        self.stats = {"sent": 0, "dropped": 0, "received": 0, "refused": 0, "malformed": 0}

    @property
    def open(self) -> bool:
        return self._dg is not None

    def on(self, kind: str, handler: Handler) -> None:
        """``handler(message)`` for each message of ``kind`` a sibling sends."""
        self._handlers[kind] = handler

    # -- life cycle ------------------------------------------------------------
    def start(self) -> bool:
        """Bind our socket and greet the siblings; False (logged) when the
        channel cannot be had here: the process then runs alone, its hub
        polling as before."""
        try:
            folder = self._make_folder()
        except OSError as e:
            log.warning("no channel to sibling processes: run folder %s: %s", self.folder, e.strerror or e)
            return False
        path = os.path.join(folder, "%d-%s%s" % (os.getpid(), os.urandom(4).hex(), SUFFIX))
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:
            log.warning("no channel to sibling processes: socket path %s is longer than %d octets (unix(7))",
                        path, SOCKET_PATH_MAX)
            return False
        try:
            self._dg = self.loop.open_datagram(socket.AF_UNIX, self._on_datagram, local_addr=path)
        except OSError as e:
            log.warning("no channel to sibling processes: cannot bind %s: %s", path, e.strerror or e)
            return False
        self.folder, self.path = folder, path
        self._peers = set(_listing(folder, path))
        self._rescan_at = self.loop.time() + PEER_RESCAN_S
        self.send("hello", {})
        return True

    def _make_folder(self) -> str:
        """The run folder, mode 0700, ours and not a symbolic link."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        st = os.lstat(self.folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "not a folder of this user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.folder, 0o700)
        return os.path.realpath(self.folder)

    def close(self) -> None:
        """Say ``bye``, close and unlink our socket."""
        if self._dg is None:
            return
        self._pending.clear()
        self.send("bye", {})
        self._flush()
        self._dg.close()
        self._dg = None
        try:
            os.unlink(self.path)
        except OSError:
            pass

    # -- sending ---------------------------------------------------------------
    def send(self, kind: str, fields: dict) -> None:
        """Queue ``{"t": kind, **fields}`` for every sibling (at the end of this
        loop iteration, with the others of it)."""
        if self._dg is None or (not self._peers and self.loop.time() < self._rescan_at):
            return          # alone on this host (until the next listing or a sibling's hello)
        data = json.dumps(dict(fields, t=kind), separators=(",", ":")).encode("utf-8", "surrogatepass")
        if len(data) + 2 > MAX_DATAGRAM or len(self._pending) >= MAX_PENDING:
            self.stats["dropped"] += 1
            log.debug("sibling message %s dropped: %d octets, %d waiting", kind, len(data), len(self._pending))
            return
        self._pending[data] = None
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        items, self._pending = list(self._pending), {}
        if self._dg is None or not items:
            return
        if self.loop.time() >= self._rescan_at:
            self._rescan()
        for datagram in _pack(items):
            for peer in list(self._peers):
                self._send_to(peer, datagram)

    def _send_to(self, peer: str, datagram: bytes) -> None:
        try:
            self._dg.sock.sendto(datagram, peer)
            self.stats["sent"] += 1
        except (BlockingIOError, InterruptedError):
            self.stats["dropped"] += 1
            log.debug("sibling %s is busy (its queue is full): datagram dropped", peer)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            self._peers.discard(peer)
            if isinstance(e, ConnectionRefusedError):
                log.debug("sibling socket %s is left by a process that ended: removed", peer)
                _unlink(peer)
        except OSError as e:
            self.stats["dropped"] += 1
            log.debug("cannot send to sibling %s: %s", peer, e)

    def _rescan(self) -> None:
        self._rescan_at = self.loop.time() + PEER_RESCAN_S
        if self._rescanning:
            return
        self._rescanning = True
        folder, own = self.folder, self.path
        self.loop.run_in_thread(lambda: _listing(folder, own), self._rescanned)

    def _rescanned(self, result) -> None:
        self._rescanning = False
        if isinstance(result, BaseException):
            log.debug("cannot list %s: %r", self.folder, result)
        elif self._dg is not None:
            self._peers = set(result)

    # -- receiving -------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr) -> None:
        if not isinstance(addr, str) or os.path.dirname(addr) != self.folder or addr == self.path:
            self.stats["refused"] += 1
            log.debug("datagram from %r refused: not a sibling's socket in %s", addr, self.folder)
            return
        messages = _unpack(data)
        if messages is None:
            self.stats["malformed"] += 1
            log.debug("malformed datagram from sibling %s (%d octets) ignored", addr, len(data))
            return
        self._peers.add(addr)
        for message in messages:
            self.stats["received"] += 1
            kind = message["t"]
            if kind == "bye":
                self._peers.discard(addr)
            handler = self._handlers.get(kind)
            if handler is None:
                continue
            try:
                handler(message)
            except Exception:
                log.exception("sibling message %s from %s failed", kind, addr)


def tell_siblings(folder: str, kind: str, fields: Optional[dict] = None) -> int:
    """From a process without a channel (a command such as ``mailsrv.py user
    passwd``): send one message to every process of the run folder ``folder``,
    from a socket bound there for the moment; returns how many took it."""
    data = _pack([json.dumps(dict(fields or {}, t=kind), separators=(",", ":")).encode("ascii")])[0]
    real = os.path.realpath(folder)
    path = os.path.join(real, "%d-%s%s" % (os.getpid(), os.urandom(4).hex(), SUFFIX))
    if not os.path.isdir(real) or len(os.fsencode(path)) > SOCKET_PATH_MAX or len(data) > MAX_DATAGRAM:
        return 0
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.bind(path)
        except OSError as e:
            log.debug("cannot bind %s: %s", path, e)
            return 0
        try:
            for peer in _listing(real, path):
                try:
                    sock.sendto(data, peer)
                    sent += 1
                except OSError as e:        # gone, or busy: it finds the change by its own check
                    log.debug("cannot tell sibling %s: %s", peer, e)
        finally:
            _unlink(path)
    return sent


def _pack(items: List[bytes]) -> List[bytes]:
    """JSON arrays of at most MAX_DATAGRAM octets (each item fits alone)."""
    out: List[bytes] = []
    batch: List[bytes] = []
    size = 2
    for item in items:
        if batch and size + len(item) + 1 > MAX_DATAGRAM:
            out.append(b"[" + b",".join(batch) + b"]")
            batch, size = [], 2
        batch.append(item)
        size += len(item) + 1
    if batch:
        out.append(b"[" + b",".join(batch) + b"]")
    return out


def _unpack(data: bytes) -> Optional[List[dict]]:
    """The messages of a datagram, or None when it is not ours."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(m, dict) and isinstance(m.get("t"), str) for m in value):
        return None
    return value


def _listing(folder: str, own: Optional[str]) -> List[str]:
    """The sockets in the run folder but ours."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [p for p in (os.path.join(folder, n) for n in names if n.endswith(SUFFIX)) if p != own]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
