"""What IMAP asks of a folder beyond store/folder.py's changes: a UIDVALIDITY
chosen by the caller for a folder just created, the keywords defined,
INTERNALDATE / SAVEDATE of each message, and \\Recent.

A mixin of ``Folder`` (same state, same locks), kept apart so each module
stays readable.

* INTERNALDATE (RFC 9051 §2.3.3) is the file's mtime, as Dovecot's Maildir
  has it (APPEND with a date sets it with utime before the file is visible,
  store/folder.py); SAVEDATE (RFC 8514 §3) the file's ctime when first seen,
  as Dovecot's maildir_mail_get_save_date() falls back to.  Both are stat'ed
  once per message and process, when first asked for (SELECT does not: the
  IMAP backend asks only before a command that shows or compares them), kept
  by Maildir key (the key survives flag renames).
* \\Recent (RFC 3501 §2.3.2: "this session is the first session to have been
  notified about this message"): Dovecot keeps the first UID not yet claimed
  in its index header (first_recent_uid); we keep it in ``mailsrv-recent``
  (one decimal number) in the folder.  A read-write SELECT, and each later
  look of that session at the folder, claims every UID from that number up
  to the UIDNEXT it saw, under the folder's lock, so exactly one session gets
  each message as recent; EXAMINE and STATUS only read it (RFC 3501 §6.3.2:
  EXAMINE "MUST NOT cause messages to lose the \\Recent flag").  The file is
  replaced by rename without fsync: an OS crash may make messages recent a
  second time, never lose one.  A folder without the file has every message
  recent (as a new Dovecot index does).
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Tuple

from store import dovecot_files as dv

RECENT_FILE = "mailsrv-recent"
# Dates kept per folder beyond the live messages before the stale ones are dropped (ours).
DATES_SLACK = 1000


def to_crlf(data: bytes) -> bytes:
    """Every LF not after a CR as CRLF, the rest as it is: each LF gets exactly
    one CR before it, so CRLF -> LF -> CRLF is the same, and two C-level
    replaces are ~30x faster than a look-behind regex sub over the message."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


class ImapMixin:
    def initialize(self, uidvalidity: int) -> None:
        """A folder just created gets this UIDVALIDITY (a new uidlist), unless it has one."""
        with self._locked():
            if not os.path.exists(os.path.join(self.path, dv.UIDLIST)):
                self._write_new_uidlist(dv.Header(uidvalidity, 1, dv.new_guid()), [])

    def keywords(self) -> Tuple[str, ...]:
        """The keywords defined in dovecot-keywords, in letter order (FLAGS, RFC 9051 §7.3.5)."""
        with self._lock:
            self._load_keywords()
            return tuple(self._kw[i] for i in sorted(self._kw))

    def dates(self, messages: Iterable) -> Dict[str, Tuple[float, float]]:
        """Maildir key -> (INTERNALDATE, SAVEDATE) for these snapshot messages; a file
        gone meanwhile gets (0, 0) until the next look.  Each is also kept in
        ``known_dates()``."""
        with self._lock:
            cache = self.known_dates()
            out = {}
            for m in messages:
                hit = cache.get(m.key)
                if hit is None:
                    try:
                        st = os.stat(m.path)
                    except FileNotFoundError:
                        out[m.key] = (0.0, 0.0)
                        continue
                    hit = cache[m.key] = (st.st_mtime, st.st_ctime)
                out[m.key] = hit
            live = self._by_key
            if len(cache) > len(live) + DATES_SLACK:       # trimmed in place: readers keep the dict
                for key in [k for k in cache if k not in live and k not in out]:
                    del cache[key]
            return out

    def known_dates(self) -> Dict[str, Tuple[float, float]]:
        """The dates stat'ed so far, Maildir key -> (INTERNALDATE, SAVEDATE): one dict for the
        life of the Folder (entries only added, or removed for messages gone), so a reader on
        another thread may look into it (one ``get`` each) without the lock."""
        cache = self.__dict__.get("_dates")
        if cache is None:
            cache = self.__dict__.setdefault("_dates", {})
        return cache

    def knowing(self, uids: Iterable[int]):
        """The last snapshot when it has every one of ``uids`` (a UID names one
        Maildir key for ever, RFC 3501 §2.3.1.1), else a fresh one: no rescan
        for lookups by UID, which a young uidlist (MTIME_SLACK_S) would force."""
        snap = self._snap
        if snap is None or None in map(snap.by_uid, uids):
            snap = self.sync().snapshot
        return snap

    def read_crlf(self, uid: int):
        """The message in CRLF form (every LF not after a CR sent as CRLF, the size
        RFC822.SIZE counts), or None when it is gone (RFC 2180 §4.1)."""
        for fresh in (False, True):
            snap = self._snap if not fresh and self._snap is not None else self.sync(rescan=True).snapshot
            msg = snap.by_uid(uid)
            if msg is None:
                continue
            try:
                with open(msg.path, "rb") as f:
                    return to_crlf(f.read())
            except FileNotFoundError:
                continue              # renamed by a flag change meanwhile: look again
        return None

    # -- \Recent --------------------------------------------------------------------
    def recent_from(self) -> int:
        """The first UID no session has claimed as recent (1: none claimed)."""
        try:
            with open(os.path.join(self.path, RECENT_FILE), "rb") as f:
                value = f.read(32).strip()
            return int(value) if value.isdigit() and int(value) > 0 else 1
        except FileNotFoundError:
            return 1

    def claim_recent(self, uidnext: int) -> int:
        """Claim the UIDs below ``uidnext`` for the calling session; returns the first UID
        it got (those from it to ``uidnext`` - 1 are recent for it alone)."""
        with self._locked():
            first = self.recent_from()
            if uidnext > first:
                path = os.path.join(self.path, RECENT_FILE)
                tmp = "%s.tmp.%d" % (path, os.getpid())
                with open(tmp, "wb") as f:
                    f.write(b"%d\n" % uidnext)
                os.replace(tmp, path)
            return first

