"""Per-user quota: the limits the administrator sets, and the usage in Maildir++ ``maildirsize``.

Limits (``DATA/quotas``): one line per user, ``address limit_bytes limit_messages``
(0 = no limit of that kind), written by ``mailsrv.py user quota`` atomically
(tmp file, fsync, rename) under an ``fcntl`` lock on ``quotas.lock``.  A bad
line is skipped with one WARNING naming the file and line; the other lines
keep working and a rewrite keeps the bad line for the operator to fix.  A user
without a line gets the ``default_quota`` configuration key (bytes only).

Usage: Maildir++ quota (Courier's README.maildirquota, "Maildir++ quotas";
https://www.courier-mta.org/imap/README.maildirquota.html, implemented the
same way by Dovecot's ``quota = maildir``, maildrop and Exim).  The file
``maildirsize`` in the Maildir root:

* line 1, the limits: ``<bytes>S,<count>C`` (a part absent when not limited);
* then one line per change, ``<bytes> <count>`` (negative when mail goes),
  appended with one ``write`` on an ``O_APPEND`` descriptor, so several
  writers (delivery, IMAP, Dovecot) may append at once without a lock;
* usage is the sum of those lines.  The file is recalculated (every folder's
  ``cur/`` and ``new/`` scanned, sizes from the ``,S=`` of the file names,
  else ``stat``; written to ``tmp/`` and renamed over, as the spec says) when
  it is missing, when its first line no longer names the configured limits,
  when it has grown to ``RECALC_SIZE`` octets, or, as the spec asks, when the
  sum says "over quota" and the file is older than ``RECALC_AGE_S`` (ours
  too: over quota and a ``cur/`` or ``new/`` changed after the file, as when
  POP3 or another program removed mail): counting is cheap at every
  delivery, a rescan happens rarely.

The quota is soft, as in Maildir++: two deliveries racing may both pass the
check and end a little over the limit; the next one is refused.

No file is written for a user without limits; ``note_added`` / ``note_removed``
only append to a ``maildirsize`` that exists.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from store.fsutil import write_atomic
from store.folder_types import stat_sig

log = logging.getLogger("mailsrv.store")

QUOTAS_FILE = "quotas"
MAILDIRSIZE = "maildirsize"
# README.maildirquota: "If the maildirsize file is 5120 bytes or larger ... recalculate".
RECALC_SIZE = 5120
# README.maildirquota: recalculate when over quota and the file is older than 15 minutes.
RECALC_AGE_S = 15 * 60
# Sizes as Dovecot's quota_rule takes them: 1024-based (Dovecot "storage=1G" = 1073741824 octets).
UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_SIZE = re.compile(r"^(\d{1,15})\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)
_S_FIELD = re.compile(r",S=(\d+)")


class Limits(NamedTuple):
    bytes: int = 0            # 0: not limited
    messages: int = 0

    @property
    def any(self) -> bool:
        return bool(self.bytes or self.messages)


class Usage(NamedTuple):
    bytes: int
    messages: int


def parse_size(text: str) -> int:
    """``2G``, ``500M``, ``1024K``, ``12345`` -> octets; ``0`` / ``none`` -> 0.
    ValueError naming the value otherwise."""
    t = str(text).strip()
    if t.lower() in ("none", "unlimited", "0", ""):
        return 0
    m = _SIZE.match(t)
    if not m:
        raise ValueError("quota %r: expected a size like 2G, 500M, 100K or a number of octets" % t[:40])
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def format_size(n: int) -> str:
    """The largest unit that divides ``n`` exactly (``2G``), else octets."""
    for unit in ("T", "G", "M", "K"):
        if n and n % UNITS[unit] == 0:
            return "%d%s" % (n // UNITS[unit], unit)
    return str(n)


# -- the limits file --------------------------------------------------------------

class QuotaTable:
    """``DATA/quotas``: address -> Limits (see the module docstring)."""

    def __init__(self, data_dir: str, default: Limits = Limits()):
        self.path = os.path.join(data_dir, QUOTAS_FILE)
        self.default = default
        self._limits: Dict[str, Limits] = {}
        self._bad: List[str] = []
        self._signature: Optional[Tuple[int, int, int]] = None
        self._mutex = threading.Lock()
        self._load()

    def _stat_signature(self) -> Optional[Tuple[int, int, int]]:
        return stat_sig(self.path)

    def _load(self, warn: bool = True) -> None:
        sig = self._stat_signature()
        limits: Dict[str, Limits] = {}
        bad: List[str] = []
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip() or line.lstrip().startswith(b"#"):
                continue
            try:
                address, value = parse_line(line)
            except ValueError as exc:
                if warn:
                    log.warning("%s line %d skipped: %s", self.path, number, exc)
                bad.append(line.decode("utf-8", "replace"))
                continue
            limits[address] = value
        with self._mutex:
            self._limits, self._bad, self._signature = limits, bad, sig

    def reload_if_changed(self) -> bool:
        """Re-read when the file changed (mtime, size, inode); True if re-read."""
        if self._stat_signature() == self._signature:
            return False
        self._load()
        return True

    def get(self, address: str) -> Limits:
        """The user's limits: their line, else ``default``."""
        return self._limits.get(address, self.default)

    def has_line(self, address: str) -> bool:
        return address in self._limits

    def set(self, address: str, limits: Limits) -> None:
        """Set (or, with no limit at all, remove) the user's line; atomic, locked."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            self._load(warn=False)
            table = dict(self._limits)
            if limits.any:
                table[address] = limits
            else:
                table.pop(address, None)
            lines = ["%s %d %d\n" % (a, v.bytes, v.messages) for a, v in sorted(table.items())]
            lines += [b + "\n" for b in self._bad]       # kept for the operator
            write_atomic(self.path, "".join(lines).encode("utf-8"))
            self._load(warn=False)
        finally:
            os.close(lock_fd)


def parse_line(line: bytes) -> Tuple[str, Limits]:
    """``address limit_bytes [limit_messages]`` (sizes may carry K/M/G)."""
    try:
        fields = line.decode("utf-8").split()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8")
    if len(fields) not in (2, 3) or "@" not in fields[0]:
        raise ValueError("expected 'address limit_bytes limit_messages'")
    count = fields[2] if len(fields) == 3 else "0"
    if not count.isdigit():
        raise ValueError("message limit %r is not a number" % count[:20])
    return fields[0].lower(), Limits(parse_size(fields[1]), int(count))


# -- maildirsize ------------------------------------------------------------------

def header(limits: Limits) -> str:
    """The first line: ``<bytes>S,<count>C`` (README.maildirquota)."""
    parts = []
    if limits.bytes:
        parts.append("%dS" % limits.bytes)
    if limits.messages:
        parts.append("%dC" % limits.messages)
    return ",".join(parts) or "0S"


def parse_header(line: str) -> Limits:
    size = count = 0
    for part in line.strip().split(","):
        if part[:-1].isdigit() and part[-1:] == "S":
            size = int(part[:-1])
        elif part[:-1].isdigit() and part[-1:] == "C":
            count = int(part[:-1])
    return Limits(size, count)


def file_size(name: str, path: str) -> int:
    """Octets of a message file: its ``,S=`` field (Dovecot / Courier), else stat."""
    m = _S_FIELD.search(name)
    if m:
        return int(m.group(1))
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def folders_of(root: str) -> List[str]:
    """The Maildir root and its Maildir++ folders (``.name`` directories)."""
    out = [root]
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    out += [os.path.join(root, n) for n in sorted(names)
            if n.startswith(".") and n not in (".", "..") and os.path.isdir(os.path.join(root, n, "cur"))]
    return out


def scan(root: str) -> Usage:
    """Every folder's cur/ and new/ counted (the recalculation of README.maildirquota)."""
    size = count = 0
    for folder in folders_of(root):
        for sub in ("cur", "new"):
            d = os.path.join(folder, sub)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                size += file_size(name, os.path.join(d, name))
                count += 1
    return Usage(size, count)


def recalculate(root: str, limits: Limits) -> Usage:
    """Scan, write a fresh maildirsize through tmp/ and rename it over."""
    usage = scan(root)
    text = "%s\n%d %d\n" % (header(limits), usage.bytes, usage.messages)
    tmp = os.path.join(root, "tmp", "%d.%d_%d.maildirsize" % (time.time(), os.getpid(), threading.get_ident()))
    try:
        write_atomic(os.path.join(root, MAILDIRSIZE), text.encode("ascii"), tmp=tmp)
    except FileNotFoundError:       # no Maildir yet: nothing stored, nothing to write
        pass
    return usage


def _read(path: str) -> Optional[Tuple[Limits, Usage, int, float]]:
    """(limits of line 1, the sum, file size, mtime), None when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read(RECALC_SIZE + 1)
    except FileNotFoundError:
        return None
    lines = raw.decode("ascii", "replace").split("\n")
    size = count = 0
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != 2:
            continue        # an incomplete last line (a writer in progress) counts at the next read
        try:
            size += int(fields[0])
            count += int(fields[1])
        except ValueError:
            return None     # damaged: recalculated
    return parse_header(lines[0]), Usage(size, count), st.st_size, st.st_mtime


def usage(root: str, limits: Limits, now: Optional[float] = None) -> Usage:
    """The user's usage from maildirsize, recalculated when README.maildirquota says so."""
    found = _read(os.path.join(root, MAILDIRSIZE))
    if found is None:
        return recalculate(root, limits)
    have, used, size, mtime = found
    now = time.time() if now is None else now
    if have != limits or size >= RECALC_SIZE:
        return recalculate(root, limits)
    if over(used, limits) and (now - mtime > RECALC_AGE_S or _changed_since(root, mtime)):
        return recalculate(root, limits)
    return used


def _changed_since(root: str, mtime: float) -> bool:
    """A cur/ or new/ directory changed after maildirsize (mail removed by POP3, by
    Dovecot, by hand): ours, so a user over quota who deletes mail is let in again
    at once rather than after RECALC_AGE_S.  Looked at only while over quota."""
    for folder in folders_of(root):
        for sub in ("cur", "new"):
            try:
                if os.stat(os.path.join(folder, sub)).st_mtime > mtime:
                    return True
            except FileNotFoundError:
                continue
    return False


def over(used: Usage, limits: Limits, add_bytes: int = 0, add_messages: int = 0) -> bool:
    """True if ``used`` plus the addition passes a limit (at the limit is still allowed)."""
    return bool((limits.bytes and used.bytes + add_bytes > limits.bytes)
                or (limits.messages and used.messages + add_messages > limits.messages))


def note(root: str, add_bytes: int, add_messages: int) -> None:
    """Append one change line, if the file exists (one write on O_APPEND: atomic
    against other appenders, README.maildirquota)."""
    if not add_bytes and not add_messages:
        return
    try:
        fd = os.open(os.path.join(root, MAILDIRSIZE), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.write(fd, b"%d %d\n" % (add_bytes, add_messages))
    finally:
        os.close(fd)


def maildir_root(folder: str) -> str:
    """The Maildir root of a folder path: a Maildir++ folder (``maildirfolder``
    marker) is one level below it."""
    folder = folder.rstrip("/")
    if os.path.exists(os.path.join(folder, "maildirfolder")):
        return os.path.dirname(folder)
    return folder


def note_delivered(folder: str, names: List[str]) -> None:
    """Delivery's step: the files just linked into ``folder``'s new/ (their ``,S=``)."""
    root = maildir_root(folder)
    total = sum(file_size(n, os.path.join(folder, "new", n)) for n in names)
    try:
        note(root, total, len(names))
    except OSError as exc:      # the next recalculation corrects it
        log.warning("cannot update %s: %r", os.path.join(root, MAILDIRSIZE), exc)


def forget(root: str) -> None:
    """Drop maildirsize (a folder was deleted): the next read recalculates it."""
    try:
        os.unlink(os.path.join(root, MAILDIRSIZE))
    except OSError:
        pass


def quota_command(data_dir: str, root: str, address: str, limit: Optional[str],
                  messages: Optional[int], default: str = "0") -> List[str]:
    """`mailsrv.py user quota ADDRESS [SIZE] [--messages N]`: set (SIZE ``0`` /
    ``none`` and no --messages removes the user's line) or show; the lines to print.
    ValueError (one line naming the value) on a bad size or count."""
    table = QuotaTable(data_dir, Limits(parse_size(default), 0))
    if limit is not None or messages is not None:
        if messages is not None and messages < 0:
            raise ValueError("--messages %d: give 0 (no limit) or more" % messages)
        old = table.get(address) if table.has_line(address) else Limits()
        new = Limits(parse_size(limit) if limit is not None else old.bytes,
                     messages if messages is not None else old.messages)
        table.set(address, new)
    limits = table.get(address)
    used = usage(root, limits) if limits.any and os.path.isdir(root) else scan(root)
    where = "" if table.has_line(address) else " (default_quota)"
    return ["%s: storage %s of %s, messages %d of %s%s" % (
        address, format_size(used.bytes), format_size(limits.bytes) if limits.bytes else "unlimited",
        used.messages, limits.messages or "unlimited", where)]
