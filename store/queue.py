"""The durable outbound mail queue (RFC 5321 §4.5.4.1).

RFC 5321 §4.5.4.1: mail that cannot be transmitted immediately "MUST be
queued and periodically retried by the sender"; a queue entry holds "not only
the message itself but also the envelope information"; the retry parameters
"MUST be configurable"; the give-up time "generally needs to be at least 4-5
days".  RFC 5321 §6.1: once a server has accepted a message it takes
responsibility for it, so the queue must survive a crash.

Layout under ``DATA/queue/``, one entry per queue id::

    <id>.msg     the message, CRLF bytes as received
    <id>.env     the envelope (JSON)
    tmp-*        a file being written (never read; cleaned at start)

Each file is written under a ``tmp-`` name, flushed, fsync'd, renamed into
place, and the directory fsync'd.  The message is written first and the
envelope last: the envelope rename is the commit point.  A message file
without an envelope is an interrupted enqueue (never acknowledged to the
client): a failed enqueue removes it at once (a full disk must not stay
full of it), and one left by a crash is removed when the queue is opened;
an envelope without its message cannot happen by this ordering.
``remove`` unlinks the envelope first for the same reason.

A message received over SMTP is written to its ``tmp-`` file as it arrives
(``open_incoming``, bounded buffered appends) and committed by
``enqueue_file``; the relay reads it back in chunks (``message_source``),
never whole.

``MemoryQueue`` has the same interface and keeps everything in memory (the
idea of OpenSMTPD's queue_ram); tests of the relay use it.

Left out: per-destination host caches (RFC 5321 §4.5.4.1 "SHOULD keep a list
of hosts it cannot reach"), quarantine/hold, and a separate shorter lifetime
for bounces.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple
from store import queue_lease
from store.fsutil import READ_CHUNK, AppendFile, fsync_dir, read_chunks, write_atomic

# Recipient states.
PENDING = "pending"        # never tried
DEFERRED = "deferred"      # tried, 4xx or connection failure: retry later
DELIVERED = "delivered"    # a 2xx after DATA: done
FAILED = "failed"          # 5xx, null MX, NXDOMAIN or too old: bounce (RFC 3464)
OPEN_STATES = (PENDING, DEFERRED)

# RFC 5321 §4.5.4.1: "the retry interval SHOULD be at least 30 minutes".
# DEVIATION(RFC 5321 §4.5.4.1): the first retries come sooner (5, 10, 20
# minutes; Postfix's minimal_backoff_time is 300 s too) because most failures
# are short ("failures are typically transient", same section); from then on
# every 30 minutes.  Configurable, as the section requires.
DEFAULT_SCHEDULE = (300.0, 600.0, 1200.0, 1800.0)
# RFC 5321 §4.5.4.1: "the give-up time generally needs to be at least 4-5 days".
DEFAULT_MAX_AGE = 5 * 24 * 3600.0
EXPIRED_TEXT = "4.4.7 Delivery time expired: message too old, giving up"

CONTROL_COMMANDS = ("flush", "delete", "bounce")

# The first octets of a message read for a bounce's copy of the header
# (RFC 3464 §2.1 text/rfc822-headers): the header block, within reason.
HEAD_LIMIT = 256 * 1024

# shared_data (several hosts on one queue): a tmp file or an uncommitted
# message may be another host's message arriving now, so only what is older
# than this is garbage: 36 hours, the Maildir rule for tmp/ (maildir(5)).
SHARED_GARBAGE_AGE = 36 * 3600.0

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Recipient:
    address: str
    state: str = PENDING
    last_error: str = ""


@dataclass
class QueueEntry:
    """The envelope of one queued message."""

    id: str
    sender: str                      # "" for the null reverse-path <>
    recipients: List[Recipient]
    first_seen: float
    next_try: float
    attempts: int = 0
    last_error: str = ""
    smtputf8: bool = False           # RFC 6531: needs SMTPUTF8 on the next hop
    body_8bit: bool = False          # RFC 6152: send with BODY=8BITMIME
    size: int = 0

    def open_recipients(self) -> List[str]:
        """Recipients still to be tried (pending or deferred)."""
        return [r.address for r in self.recipients if r.state in OPEN_STATES]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> "QueueEntry":
        obj = json.loads(raw.decode("utf-8"))
        obj["recipients"] = [Recipient(**r) for r in obj["recipients"]]
        return cls(**obj)


def has_8bit(data: bytes) -> bool:
    """True when the message has an octet above 127 (RFC 6152 §3: needs 8BITMIME)."""
    return any(b > 127 for b in data)


def check_id(queue_id: str) -> str:
    """Queue ids become file names: allow only a safe alphabet."""
    if not _ID_RE.match(queue_id or ""):
        raise ValueError("bad queue id %r" % (queue_id,))
    return queue_id


class _Policy:
    """Retry schedule and results bookkeeping shared by both backends."""

    def __init__(self, schedule: Sequence[float], max_age: float):
        self.schedule = tuple(schedule) or DEFAULT_SCHEDULE
        self.max_age = max_age

    def delay(self, attempts: int) -> float:
        """Wait before retry number ``attempts`` (1-based), last step repeated."""
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]

    def apply(self, entry: QueueEntry, results: Dict[str, Tuple[str, str]], now: float) -> QueueEntry:
        """Fold one delivery round into ``entry`` (a copy is returned)."""
        e = copy.deepcopy(entry)
        for r in e.recipients:
            if r.address in results and r.state in OPEN_STATES:
                status, text = results[r.address]
                if status not in (DELIVERED, DEFERRED, FAILED):
                    raise ValueError("bad recipient status %r" % (status,))
                r.state, r.last_error = status, text
                if status != DELIVERED and text:
                    e.last_error = text
        e.attempts += 1
        if now - e.first_seen >= self.max_age:
            # RFC 5321 §4.5.4.1: give up after the configured lifetime.
            for r in e.recipients:
                if r.state in OPEN_STATES:
                    r.state = FAILED
                    r.last_error = (r.last_error + "; " if r.last_error else "") + EXPIRED_TEXT
        e.next_try = now + self.delay(e.attempts)
        return e


class Queue:
    """The on-disk queue under ``DATA/queue/`` (see the module docstring).

    Methods block on disk I/O; ``enqueue`` is meant for a worker thread.
    A lock makes each call atomic with respect to the others.
    """

    def __init__(self, data_dir: str, schedule: Sequence[float] = DEFAULT_SCHEDULE,
                 max_age: float = DEFAULT_MAX_AGE, recover: bool = True, shared: bool = False):
        """``recover=False`` reads without cleaning: for a second process (the
        `queue` command) looking at a queue a running server is writing, whose
        tmp files and not-yet-committed messages are not garbage.  ``shared``:
        other hosts write this queue now (shared_data): only garbage older
        than SHARED_GARBAGE_AGE is theirs to have left behind."""
        self.dir = os.path.join(data_dir, "queue")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.policy = _Policy(schedule, max_age)
        self._lock = threading.Lock()
        self._cache: Dict[str, QueueEntry] = {}
        self._min_garbage_age = SHARED_GARBAGE_AGE if shared else 0.0
        # tmp names unique between hosts sharing the folder (pids are not)
        self._tmp_tag = "%s-%d-%s" % (os.uname().nodename.replace("/", "_")[:64], os.getpid(), os.urandom(3).hex())
        self.cleaned = self._recover(clean=recover)

    def set_policy(self, schedule: Sequence[float], max_age: float) -> None:
        """New retry schedule and lifetime (SIGHUP); they apply from the next attempt."""
        with self._lock:
            self.policy = _Policy(schedule, max_age)

    # -- files ---------------------------------------------------------
    def _path(self, queue_id: str, ext: str) -> str:
        return os.path.join(self.dir, check_id(queue_id) + ext)

    def _fsync_dir(self) -> None:
        fsync_dir(self.dir)

    def _write_atomic(self, final: str, data: bytes) -> None:
        """tmp file, write, fsync, rename into place, fsync the directory."""
        write_atomic(final, data, tmp=os.path.join(self.dir, "tmp-%s-%s" % (self._tmp_tag, os.path.basename(final))))

    def _recover(self, clean: bool = True) -> List[str]:
        """Load the envelopes; drop tmp files and messages whose envelope was never committed."""
        names = set(os.listdir(self.dir))
        cleaned = []
        for name in sorted(names):
            garbage = name.startswith("tmp-") or (
                name.endswith((".msg", ".lease")) and name.rpartition(".")[0] + ".env" not in names)
            if garbage and clean and self._old_enough(name):
                _unlink(os.path.join(self.dir, name))
                cleaned.append(name)
            elif not garbage and name.endswith(".env"):
                try:
                    with open(os.path.join(self.dir, name), "rb") as f:
                        entry = QueueEntry.from_json(f.read())
                    self._cache[entry.id] = entry
                except (OSError, ValueError, TypeError, KeyError):
                    continue   # unreadable envelope: leave it for the operator
        if cleaned:
            self._fsync_dir()
        return cleaned

    def _old_enough(self, name: str) -> bool:
        if not self._min_garbage_age:
            return True
        try:
            return time.time() - os.stat(os.path.join(self.dir, name)).st_mtime > self._min_garbage_age
        except OSError:
            return False

    # -- API -----------------------------------------------------------
    def enqueue(self, sender: str, recipients: List[str], data: bytes, queue_id: str,
                now: float, smtputf8: bool = False, body_8bit: Optional[bool] = None) -> QueueEntry:
        """Store a message durably; only after this returns may the sender get its 250."""
        entry = _new_entry(sender, recipients, len(data), queue_id, now, smtputf8,
                           has_8bit(data) if body_8bit is None else body_8bit)
        with self._lock:
            if queue_id in self._cache:
                raise ValueError("queue id %s already queued" % queue_id)
            self._write_atomic(self._path(queue_id, ".msg"), data)
            self._commit(entry)
        return copy.deepcopy(entry)

    def open_incoming(self, queue_id: str) -> AppendFile:
        """A new message file to write as the message arrives, then give to
        ``enqueue_file`` (or ``discard``)."""
        return AppendFile(os.path.join(self.dir, "tmp-%s-%s.msg" % (self._tmp_tag, check_id(queue_id))))

    def enqueue_file(self, file: AppendFile, sender: str, recipients: List[str], queue_id: str,
                     now: float, smtputf8: bool, body_8bit: bool) -> QueueEntry:
        """``enqueue`` for a message written with ``open_incoming``: fsync it,
        rename it into place, then the envelope.  On error nothing is left."""
        entry = _new_entry(sender, recipients, file.size, queue_id, now, smtputf8, body_8bit)
        with self._lock:
            if queue_id in self._cache:
                file.discard()
                raise ValueError("queue id %s already queued" % queue_id)
            try:
                file.sync()
                entry.size = file.size
                os.replace(file.path, self._path(queue_id, ".msg"))
            except BaseException:
                file.discard()
                raise
            self._fsync_dir()
            self._commit(entry)
        return copy.deepcopy(entry)

    def _commit(self, entry: QueueEntry) -> None:
        """Write the envelope (the commit point); if that fails, the message
        file goes at once: a full disk must not stay full of it (issue 7)."""
        try:
            self._write_atomic(self._path(entry.id, ".env"), entry.to_json())
        except BaseException:
            _unlink(self._path(entry.id, ".msg"))
            try:
                self._fsync_dir()
            except OSError:
                pass        # at worst the next start removes it (_recover)
            raise
        self._cache[entry.id] = entry

    def list(self) -> List[QueueEntry]:
        with self._lock:
            return [copy.deepcopy(e) for e in sorted(self._cache.values(), key=lambda e: (e.first_seen, e.id))]

    def get(self, queue_id: str) -> Optional[QueueEntry]:
        with self._lock:
            e = self._cache.get(queue_id)
            return copy.deepcopy(e) if e else None

    def read_message(self, queue_id: str) -> bytes:
        """The whole message (small ones: tests, tools); the relay uses ``message_source``."""
        with open(self._path(queue_id, ".msg"), "rb") as f:
            return f.read()

    def message_source(self, queue_id: str) -> "StoredMessage":
        """The message, to be read in chunks (the file must exist now)."""
        path = self._path(queue_id, ".msg")
        return StoredMessage(path, os.stat(path).st_size)

    def read_head(self, queue_id: str, limit: int = HEAD_LIMIT) -> bytes:
        """The message's first ``limit`` octets (its header block, for a DSN)."""
        with open(self._path(queue_id, ".msg"), "rb") as f:
            return f.read(limit)

    def due(self, now: float) -> List[QueueEntry]:
        """Entries with open recipients whose ``next_try`` has come."""
        return [e for e in self.list() if e.next_try <= now and e.open_recipients()]

    def record_results(self, queue_id: str, results: Dict[str, Tuple[str, str]], now: float) -> QueueEntry:
        """Apply ``{rcpt: (state, reply_text)}`` and rewrite the envelope atomically."""
        with self._lock:
            entry = self.policy.apply(self._cache[queue_id], results, now)
            self._write_atomic(self._path(queue_id, ".env"), entry.to_json())
            self._cache[queue_id] = entry
            return copy.deepcopy(entry)

    def remove(self, queue_id: str) -> None:
        """Envelope first (the commit point), then the message (then its lease)."""
        with self._lock:
            _unlink(self._path(queue_id, ".env"))
            _unlink(self._path(queue_id, ".msg"))
            self._fsync_dir()
            self._cache.pop(queue_id, None)
            queue_lease.remove(self.dir, check_id(queue_id))

    # -- several processes on one queue (issue 14; store/queue_lease.py) ---
    def rescan(self) -> Tuple[int, int]:
        """Bring the cache in line with the directory, which other processes
        change too: envelopes committed elsewhere are read, entries removed
        elsewhere dropped.  Returns (added, dropped)."""
        names = set(os.listdir(self.dir))
        on_disk = {n[:-4] for n in names if n.endswith(".env") and not n.startswith("tmp-")}
        with self._lock:
            gone = [i for i in self._cache if i not in on_disk]
            for queue_id in gone:
                del self._cache[queue_id]
            new = [i for i in on_disk if i not in self._cache]
        added = 0
        for queue_id in new:
            entry = self._read_entry(queue_id)
            if entry is not None:
                with self._lock:
                    self._cache.setdefault(queue_id, entry)
                added += 1
        return added, len(gone)

    def _read_entry(self, queue_id: str) -> Optional[QueueEntry]:
        try:
            with open(self._path(queue_id, ".env"), "rb") as f:
                return QueueEntry.from_json(f.read())
        except (OSError, ValueError, TypeError, KeyError):
            return None     # gone meanwhile, or unreadable: left for the operator

    def lease_fresh(self, queue_id: str, leases: "queue_lease.Leases", now: float) -> Optional[QueueEntry]:
        """Take the entry's lease and read its envelope again from disk
        (another process may have delivered some recipients, or all, since our
        cache was filled): the entry as it is now, or None when another live
        process holds it or it is gone (its lease is let go then)."""
        if not leases.take(queue_id, now):
            return None
        entry = self._read_entry(queue_id)
        with self._lock:
            if entry is None or not os.path.exists(self._path(queue_id, ".msg")):
                self._cache.pop(queue_id, None)
                entry = None
            else:
                self._cache[queue_id] = entry
        if entry is None:
            leases.release(queue_id)
            return None
        return copy.deepcopy(entry)

    # -- administrative requests (`mailsrv.py queue ...`) ------------------
    # The running server caches envelopes, so another process must not edit
    # them.  The command line drops a request file in DATA/queue/control/
    # and signals the server, which applies it (Postfix's postqueue talks to
    # its master process for the same reason).
    def request(self, command: str, queue_id: str = "") -> None:
        if command not in CONTROL_COMMANDS:
            raise ValueError("unknown queue command: %s" % command)
        if queue_id:
            check_id(queue_id)
        control = os.path.join(self.dir, "control")
        os.makedirs(control, mode=0o700, exist_ok=True)
        name = "%s.%d.%s.%s" % (command, os.getpid(), os.urandom(4).hex(), queue_id or "-")
        tmp = os.path.join(control, "tmp-" + name)
        with open(tmp, "wb") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(control, name))

    def take_requests(self) -> List[Tuple[str, str]]:
        """The pending requests as (command, queue_id), removed from disk; each
        request is taken by one process only, however many look at once."""
        control = os.path.join(self.dir, "control")
        try:
            names = sorted(os.listdir(control))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            parts = name.split(".")
            if name.startswith("tmp-") or len(parts) != 4 or parts[0] not in CONTROL_COMMANDS:
                continue
            try:        # the one unlink that succeeds takes it (sibling workers, hosts)
                os.unlink(os.path.join(control, name))
            except FileNotFoundError:
                continue
            out.append((parts[0], "" if parts[3] == "-" else parts[3]))
        return out


class MemoryQueue:
    """The same interface as ``Queue``, in memory (OpenSMTPD queue_ram)."""

    def __init__(self, schedule: Sequence[float] = DEFAULT_SCHEDULE, max_age: float = DEFAULT_MAX_AGE):
        self.policy = _Policy(schedule, max_age)
        self._entries: Dict[str, QueueEntry] = {}
        self._data: Dict[str, bytes] = {}
        self._lock = threading.Lock()

    def enqueue(self, sender, recipients, data, queue_id, now, smtputf8=False, body_8bit=None) -> QueueEntry:
        entry = _new_entry(sender, recipients, len(data), queue_id, now, smtputf8,
                           has_8bit(data) if body_8bit is None else body_8bit)
        with self._lock:
            if queue_id in self._entries:
                raise ValueError("queue id %s already queued" % queue_id)
            self._entries[queue_id], self._data[queue_id] = entry, bytes(data)
        return copy.deepcopy(entry)

    def list(self) -> List[QueueEntry]:
        with self._lock:
            return [copy.deepcopy(e) for e in sorted(self._entries.values(), key=lambda e: (e.first_seen, e.id))]

    def get(self, queue_id):
        with self._lock:
            e = self._entries.get(queue_id)
            return copy.deepcopy(e) if e else None

    def read_message(self, queue_id) -> bytes:
        with self._lock:
            return self._data[queue_id]

    def message_source(self, queue_id) -> "MemoryMessage":
        return MemoryMessage(self.read_message(queue_id))

    def read_head(self, queue_id, limit: int = 0) -> bytes:
        data = self.read_message(queue_id)
        return data[:limit] if limit else data

    def due(self, now):
        return [e for e in self.list() if e.next_try <= now and e.open_recipients()]

    def record_results(self, queue_id, results, now) -> QueueEntry:
        with self._lock:
            entry = self.policy.apply(self._entries[queue_id], results, now)
            self._entries[queue_id] = entry
            return copy.deepcopy(entry)

    def remove(self, queue_id) -> None:
        with self._lock:
            self._entries.pop(queue_id, None)
            self._data.pop(queue_id, None)


def _new_entry(sender, recipients, size, queue_id, now, smtputf8, body_8bit) -> QueueEntry:
    check_id(queue_id)
    if not recipients:
        raise ValueError("no recipients")
    seen: List[str] = []
    for r in recipients:
        if r not in seen:
            seen.append(r)
    return QueueEntry(
        id=queue_id, sender=sender, recipients=[Recipient(a) for a in seen],
        first_seen=now, next_try=now, smtputf8=bool(smtputf8),
        body_8bit=bool(body_8bit), size=size)


class StoredMessage:
    """A queued message file, read in chunks each time ``chunks()`` is called
    (each delivery attempt reads it again from the start)."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size

    def __len__(self) -> int:
        return self.size

    def chunks(self, size: int = READ_CHUNK):
        return read_chunks(self.path, size)


class MemoryMessage:
    """``StoredMessage`` for bytes (MemoryQueue, tests)."""

    def __init__(self, data: bytes, piece: int = READ_CHUNK):
        self.data = data
        self.size = len(data)
        self.piece = piece

    def __len__(self) -> int:
        return self.size

    def chunks(self):
        return (self.data[i:i + self.piece] for i in range(0, self.size, self.piece))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
