"""Per-message modification sequences and the expunge log of one folder (RFC 7162).

CONDSTORE / QRESYNC (RFC 7162 §3.1.1, §3.2.10) need, per folder, a MODSEQ for
every message that grows with every change to it, HIGHESTMODSEQ (never 0 for
an existing folder: RFC 7162 §3.1.2.1 would make us say NOMODSEQ), and for
VANISHED (EARLIER) the UIDs expunged since a given MODSEQ.  Dovecot keeps its
modseqs in its index files, which mailsrv does not write; mailsrv keeps its
own in ``mailsrv-modseq``, a journal appended to under the folder's uidlist
dotlock::

    1 V<uidvalidity> H<highest modseq at the last rewrite> E<expunge log start>
    <uid> <modseq> <flag letters>      a message appended or its flags changed
    -<uid> <modseq>                    the message was expunged
    B<boot id> <modseq>                the first write of this boot (below)

The last line for a UID wins.  The flag letters (system flags and Dovecot
keyword letters) are what the folder's sync compares with the file names: a
change made behind our back (Dovecot, mutt) is seen there and bumped then.
E: VANISHED answers are complete only for MODSEQ >= E (RFC 7162 §3.2.5.2
lets a server send UIDs that were not in the client's set, so older ones get
"every UID not present").

Rebuildable: a missing or unreadable journal, or one for another UIDVALIDITY,
starts over with HIGHESTMODSEQ = the current time in microseconds (above any
value the old journal could have handed out at fewer than a million changes a
second), every message gets that MODSEQ and E moves up to it: clients resync,
UIDVALIDITY stays.

MODSEQ only grows, across restarts too (RFC 7162 §3.1.1: "MUST be ...
strictly increasing").  A process that dies loses nothing (the kernel keeps
what was written); only an OS crash can lose appends not yet on disk.  So the
journal carries a line ``B<boot id> <modseq>`` (Linux's
/proc/sys/kernel/random/boot_id): the first writer after a reboot appends one
with HIGHESTMODSEQ raised to the clock in microseconds, fsync'd, above
anything the lost tail could have handed out; later appends in the same boot
are not fsync'd each (a flag change costs no disk flush, as with Dovecot).
A rewrite (a rebuild, a compaction) is renamed into place without fsync for
the same reason: after an OS crash the file is the old one (its B line is of
another boot), or one that does not parse (rebuilt from the clock), and the
first write of the new boot raises HIGHESTMODSEQ above the clock either way.
Without a boot id, every append and rewrite is fsync'd.
"""

from __future__ import annotations

import logging
import os
import time
from itertools import repeat
from operator import itemgetter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from store.folder_bulk import journal_columns, journal_lines
from store.fsutil import write_all, write_atomic

log = logging.getLogger("mailsrv.store.modseq")

MODSEQ_FILE = "mailsrv-modseq"
_first, _second = itemgetter(0), itemgetter(1)
# RFC 7162 §7 mod-sequence-value = 1*DIGIT, "Positive unsigned 63-bit integer".
MAX_MODSEQ = (1 << 63) - 1
# Expunges kept for VANISHED (EARLIER); older ones raise E (ours: ~1 MB of journal).
MAX_EXPUNGED = 50000
# Rewrite the journal once it holds this many more lines than live state (ours).
COMPACT_SLACK = 2000


class ModseqLog:
    """The journal of one folder; the caller holds the folder's lock and dotlock."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, MODSEQ_FILE)
        self.uidvalidity = 0
        self.highest = 0
        self.expunge_start = 0
        self.messages: Dict[int, Tuple[int, str]] = {}     # uid → (modseq, flag letters)
        self.expunged: List[Tuple[int, int]] = []          # (uid, modseq), modseq ascending
        self._lines = 0
        self._sig: Optional[Tuple[int, int, int]] = None
        self._boot = ""                                    # the boot id of the last B line
        self._unwritten = False                            # rebuilt in memory, not yet on disk

    # -- reading --------------------------------------------------------------
    def load(self, uidvalidity: int, fresh: bool = False) -> None:
        """Read the journal if it changed on disk (only the appended tail when it grew);
        rebuild it when it cannot serve ``uidvalidity``.

        ``fresh``: the UIDVALIDITY was made just now (a new folder, or mailsrv's old
        index converted), so no client holds a MODSEQ of it and counting starts at 1."""
        if self._unwritten:
            # a rebuild the last change did not get to write (it failed before record()):
            # what is on disk wins again
            self._unwritten, self._sig = False, None
        sig, old = _stat(self.path), self._sig
        if sig is not None and sig == old and self.uidvalidity == uidvalidity:
            return
        try:
            with open(self.path, "rb") as f:
                grown = old is not None and sig is not None and sig[1:] > old[1:] and sig[1] == old[1]
                if grown and self.uidvalidity == uidvalidity:
                    f.seek(old[2])                      # another process appended: read just that
                    self._apply(f.read().decode("ascii").split("\n"))
                else:
                    self._parse(f.read().decode("ascii"), uidvalidity)
            if self.uidvalidity != uidvalidity:
                raise ValueError("journal is for UIDVALIDITY %d" % self.uidvalidity)
        except FileNotFoundError:
            self._rebuild(uidvalidity, "missing", fresh)
        except (ValueError, UnicodeDecodeError, IndexError, KeyError) as e:
            self._rebuild(uidvalidity, str(e))
        self._sig = _stat(self.path)

    def _parse(self, text: str, uidvalidity: int) -> None:
        first, _, rest = text.partition("\n")
        head = dict((f[0], int(f[1:])) for f in first.split()[1:])
        self.uidvalidity, self.highest, self.expunge_start = head["V"], head["H"], head.get("E", 0)
        self.messages, self.expunged, self._lines, self._boot = {}, [], 0, ""
        if self.uidvalidity == uidvalidity:      # else rebuilt: its lines are not read
            self._apply(rest.split("\n"))

    def _apply(self, lines: List[str]) -> None:
        """Journal lines (the last element: what follows the last LF, which must be empty)."""
        if lines[-1]:
            raise ValueError("last line incomplete")
        messages, expunged, highest = self.messages, self.expunged, self.highest
        for line in lines[:-1]:
            if line.startswith("B"):
                self._boot, _, value = line[1:].partition(" ")
                modseq = int(value)
            elif line.startswith("-"):
                uid, modseq = (int(x) for x in line[1:].split(" "))
                messages.pop(uid, None)
                expunged.append((uid, modseq))
            else:
                uid_s, modseq_s, letters = line.split(" ", 2)
                modseq = int(modseq_s)
                messages[int(uid_s)] = (modseq, letters)
            if not 0 < modseq <= MAX_MODSEQ:
                raise ValueError("modseq out of range")
            highest = max(highest, modseq)
        self.highest = highest
        self._lines += len(lines) - 1

    def _rebuild(self, uidvalidity: int, why: str, fresh: bool = False) -> None:
        """Start over above every earlier value: clients resync, UIDVALIDITY stays.

        A folder that had a uidlist before may have been served by Dovecot, whose
        clients hold Dovecot's MODSEQs: hence the clock, not 1, unless ``fresh``."""
        if why != "missing":
            log.warning("modseq journal %s unusable (%s): rebuilt, clients will resync", self.path, why)
        base = 1 if fresh else max(self.highest, int(time.time() * 1000000))
        self.uidvalidity, self.highest, self.expunge_start = uidvalidity, base, 0 if fresh else base
        self.messages, self.expunged = {}, []
        self._unwritten = True         # written once, with the records of the change (record())

    def last_uidvalidity(self) -> int:
        """The UIDVALIDITY the journal was kept for (0: none): a uidlist made anew must
        get a greater one (RFC 3501 §2.3.1.1) even when it is lost within a second."""
        try:
            with open(self.path, "rb") as f:
                head = f.readline().decode("ascii").split()
            return max([int(x[1:]) for x in head[1:] if x[:1] == "V"] + [self.uidvalidity])
        except (OSError, ValueError, UnicodeDecodeError):
            return self.uidvalidity

    # -- queries ---------------------------------------------------------------
    def modseq_of(self, uid: int) -> int:
        hit = self.messages.get(uid)
        return hit[0] if hit else self.highest

    def expunged_since(self, modseq: int) -> Tuple[List[int], bool]:
        """UIDs expunged with a MODSEQ above ``modseq`` (RFC 7162 §3.2.10), and whether
        the log reaches that far back (False: the caller reports every UID not present).
        Read from the end (the log is in MODSEQ order): the work is the answer's size,
        not the log's (a resync after 10 changes in a log of 50,000)."""
        log, i = self.expunged, len(self.expunged)
        while i and log[i - 1][1] > modseq:
            i -= 1
        return [u for u, _m in log[i:]], modseq >= self.expunge_start

    # -- changes ---------------------------------------------------------------
    def record(self, changed: Iterable[Tuple[int, str]], gone: Iterable[int]) -> int:
        """One new MODSEQ for these flag states and expunges (RFC 7162 §3.1: messages
        changed by one operation may share it); appended (fsync'd as the module docstring says).
        Returns it (0: nothing)."""
        changed, gone = list(changed), [u for u in gone if u in self.messages]
        if self._unwritten:
            return self._record_rewritten(changed, gone)
        if not changed and not gone:
            return 0
        out = [self._boot_line()]
        self.highest += 1
        modseq = self.highest
        if changed:                          # one ``%`` for them all (a STORE 1:* changes 10,000)
            uids, letters = list(map(_first, changed)), list(map(_second, changed))
            self.messages.update(zip(uids, zip(repeat(modseq), letters)))
            out.append(journal_columns(uids, [modseq] * len(uids), letters))
        for uid in gone:
            del self.messages[uid]
            self.expunged.append((uid, modseq))
            out.append("-%d %d\n" % (uid, modseq))
        self._lines += len(changed) + len(gone)
        if len(self.expunged) > MAX_EXPUNGED or self._lines > len(self.messages) + len(self.expunged) + COMPACT_SLACK:
            self._rewrite()
        else:
            self._append("".join(out).encode("ascii"))
        return modseq

    def record_all(self, uids: Sequence[int], letters: Sequence[str]) -> int:
        """record() of a journal that holds no message yet, the messages given as two
        columns in UID order (a folder's first sync: 10,000 messages at a first login);
        nothing expunged."""
        if self.messages or not uids:
            return self.record(zip(uids, letters), ())
        out = [self._boot_line()] if not self._unwritten else []
        self.highest += 1
        modseq = self.highest
        self.messages = dict(zip(uids, zip(repeat(modseq), letters)))
        lines = journal_columns(uids, [modseq] * len(uids), letters)
        self._lines += len(uids)
        if self._unwritten or len(self.expunged) > MAX_EXPUNGED or self._lines > len(uids) + len(self.expunged) + COMPACT_SLACK:
            self._rewrite(lines)
        else:
            self._append(("".join(out) + lines).encode("ascii"))
        return modseq

    def _record_rewritten(self, changed: List[Tuple[int, str]], gone: List[int]) -> int:
        """record() on a journal rebuilt in this change: one rewrite holds it all."""
        modseq = 0
        if changed or gone:
            self.highest += 1
            modseq = self.highest
            messages = self.messages
            messages.update(zip(map(_first, changed), zip(repeat(modseq), map(_second, changed))))
            for uid in gone:
                del messages[uid]
                self.expunged.append((uid, modseq))
        self._rewrite()
        return modseq

    def _boot_line(self) -> str:
        """The ``B`` line the first write since a reboot starts with (see the module
        docstring): HIGHESTMODSEQ raised above what a lost tail could have held."""
        if not BOOT_ID or self._boot == BOOT_ID:
            return ""
        self.highest = max(self.highest + 1, int(time.time() * 1000000))
        return "B%s %d\n" % (BOOT_ID, self.highest)

    def _append(self, data: bytes) -> None:
        synced = bool(BOOT_ID) and self._boot == BOOT_ID and not data.startswith(b"B")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_all(fd, data)
            if not synced:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._boot = BOOT_ID or self._boot
        self._sig = _stat(self.path)

    def _rewrite(self, lines: Optional[str] = None) -> None:
        """Write the journal anew; ``lines``: its message lines, already made."""
        if len(self.expunged) > MAX_EXPUNGED:
            drop = self.expunged[:len(self.expunged) - MAX_EXPUNGED]
            self.expunge_start = drop[-1][1]
            self.expunged = self.expunged[len(drop):]
        out = ["1 V%d H%d E%d\n" % (self.uidvalidity, self.highest, self.expunge_start)]
        out += ["B%s %d\n" % (BOOT_ID, self.highest)] if BOOT_ID else []
        out.append(lines if lines is not None else journal_lines(sorted(self.messages.items())))
        out += ["-%d %d\n" % (u, m) for u, m in self.expunged]
        data, tmp = "".join(out).encode("ascii"), self.path + ".tmp.%d" % os.getpid()
        if BOOT_ID:
            write_atomic(self.path, data, tmp=tmp, durable=False)       # see the module docstring
        else:
            write_atomic(self.path, data, tmp=tmp)
        self._lines = len(out) - 2 + len(self.messages)
        self._boot, self._unwritten = BOOT_ID, False
        self._sig = _stat(self.path)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            value = f.read(64).decode("ascii").strip()
        return value if value and " " not in value else ""
    except (OSError, UnicodeDecodeError):
        return ""


BOOT_ID = _boot_id()


def _stat(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
