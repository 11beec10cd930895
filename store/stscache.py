"""Durable small state of MTA-STS (RFC 8461 §5.1 policy cache) and TLS-RPT
(RFC 8460 §4 daily counts), under DATA.

* ``DATA/mta-sts/<domain>.json``: the last valid policy of a domain: the
  record's id, when it was fetched, the policy text as fetched.  Written
  atomically (tmp, fsync, rename, directory fsync), so a crash leaves the old
  policy or the new one.
* ``DATA/tls-rpt/<YYYY-MM-DD>.json``: per recipient domain, that UTC day's
  counts of successful and failed TLS sessions by result type, and the policy
  that applied; ``DATA/tls-rpt/sent-<YYYY-MM-DD>.json``: the domains whose
  report for that day went out (a report is sent once per day per domain).

Plain values only (no protocol objects): the protocol layer parses the policy
text again when it reads it (protocols/outbound/mtasts.py).  Files that do not
parse are treated as absent and say so to the caller's log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from typing import Dict, List, Optional

from store.fsutil import write_atomic

STS_DIR = "mta-sts"
RPT_DIR = "tls-rpt"
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\Z")   # a file name safe A-label domain
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
# Days of counts kept (older files are removed when a day's reports are sent):
# a week, for an operator's look after a weekend; not an RFC number.
KEEP_DAYS = 7


def _safe_domain(domain: str) -> str:
    d = domain.lower().rstrip(".")
    if not _DOMAIN.match(d) or ".." in d:
        raise ValueError("not a domain name: %r" % domain)
    return d


class StsCache:
    """The MTA-STS policy cache; blocking (the caller runs it on a worker thread)."""

    def __init__(self, data_dir: str):
        self.dir = os.path.join(data_dir, STS_DIR)

    def get(self, domain: str) -> Optional[dict]:
        """{"id", "fetched", "policy"} or None (absent, or a file that does not parse)."""
        path = os.path.join(self.dir, _safe_domain(domain) + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not all(k in entry for k in ("id", "fetched", "policy")):
            return None
        return entry

    def put(self, domain: str, sts_id: str, fetched: float, policy: str) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        data = json.dumps({"id": sts_id, "fetched": fetched, "policy": policy}).encode("utf-8")
        path = os.path.join(self.dir, _safe_domain(domain) + ".json")
        write_atomic(path, data, tmp=path + ".%d.tmp" % os.getpid())

    def remove(self, domain: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, _safe_domain(domain) + ".json"))
        except FileNotFoundError:
            pass


class TlsRptStore:
    """TLS-RPT daily counts; blocking (worker thread)."""

    # one writer at a time in this process: a flush and the reporter's marks are read-modify-write
    _lock = threading.Lock()

    def __init__(self, data_dir: str):
        self.dir = os.path.join(data_dir, RPT_DIR)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".json")

    def _read(self, name: str) -> dict:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self):
        """One read-modify-write at a time: this process's threads, then the
        sibling processes of ``workers = N`` (flock on DATA/tls-rpt/lock)."""
        with self._lock:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _write(self, name: str, data: dict) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = self._path(name)
        write_atomic(path, json.dumps(data, sort_keys=True).encode("utf-8"), tmp=path + ".%d.tmp" % os.getpid())

    def add(self, day: str, counts: Dict[str, dict]) -> None:
        """Merge ``{domain: {"policy": {...}, "success": n, "failure": {type: n}, "mx": {host: ...}}}``
        into the day's file."""
        if not _DAY.match(day):
            raise ValueError("not a day: %r" % day)
        with self._locked():
            self._add(day, counts)

    def _add(self, day: str, counts: Dict[str, dict]) -> None:
        data = self._read(day)
        for domain, c in counts.items():
            d = data.setdefault(domain, {"policy": c.get("policy", {}), "success": 0, "failure": {}})
            d["policy"] = c.get("policy") or d.get("policy", {})
            d["success"] = int(d.get("success", 0)) + int(c.get("success", 0))
            for kind, n in c.get("failure", {}).items():
                d["failure"][kind] = int(d["failure"].get(kind, 0)) + int(n)
            for key, detail in c.get("details", {}).items():
                have = d.setdefault("details", {}).setdefault(key, dict(detail, count=0))
                have["count"] = int(have.get("count", 0)) + int(detail.get("count", 0))
        self._write(day, data)

    def day(self, day: str) -> dict:
        return self._read(day) if _DAY.match(day) else {}

    def days(self) -> List[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and _DAY.match(n[:-5]))

    def sent(self, day: str) -> List[str]:
        got = self._read("sent-" + day)
        return list(got.get("domains", [])) if isinstance(got.get("domains"), list) else []

    def mark_sent(self, day: str, domain: str) -> None:
        with self._locked():
            done = self.sent(day)
            if domain not in done:
                self._write("sent-" + day, {"domains": done + [domain]})

    def prune(self, before: str) -> None:
        """Remove the counts and sent-marks of days before ``before`` (YYYY-MM-DD)."""
        for d in self.days():
            if d < before:
                for name in (d, "sent-" + d):
                    try:
                        os.unlink(self._path(name))
                    except FileNotFoundError:
                        pass
