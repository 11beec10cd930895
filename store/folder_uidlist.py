"""The uidlist side of store/folder.py: reading, appending to and rewriting
Dovecot's ``dovecot-uidlist`` (format in store/dovecot_files.py), converting
mailsrv's old ``mailsrv-uidlist`` once, and the CRLF sizes cached in it.

A mixin of ``Folder`` (it shares the folder's state and runs with the folder's
lock and dotlock held): kept apart only so each module stays readable.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, Iterable, List, Optional, Tuple

from store import dovecot_files as dv
from store.folder_bulk import new_records
from store.folder_types import crlf_size, name_size, sort_keys, stat_sig
from store.fsutil import write_all, write_atomic

log = logging.getLogger("mailsrv.store.folder")

# The uidlist of mailsrv before it wrote Dovecot's (converted once, then renamed).
OLD_UIDLIST = "mailsrv-uidlist"
OLD_KEYWORDS = "mailsrv-keywords"
# Compact the uidlist when more than this many records name vanished files and
# they are over a quarter of it (ours; Dovecot also rewrites lazily).
COMPACT_MIN_DEAD = 100
_new_record = tuple.__new__        # dv.Record(...) without the NamedTuple's Python-level __new__
# fdatasync where the platform has it (Linux), else fsync (macOS has no fdatasync).
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _uid_of(record: dv.Record) -> int:
    return record.uid


class UidlistMixin:
    # -- the uidlist ---------------------------------------------------------------------
    def _load_uidlist(self) -> None:
        """Read what is new in dovecot-uidlist: only the appended tail when the file is
        the same one, grown (another process appended records: each delivery of a
        sibling worker does), else the whole file; convert mailsrv-uidlist or start
        over when there is none.  ``_uidlist_parsed`` counts octets of the file."""
        if self._unwritten:
            return                  # made in this locked change, written before it ends
        path = os.path.join(self.path, dv.UIDLIST)
        sig = stat_sig(path)
        if sig is not None and sig == self._uidlist_sig:
            return
        try:
            with open(path, "rb") as f:
                if (self._uidlist_sig is not None and sig is not None and sig[1] == self._uidlist_sig[1]
                        and self._header is not None and sig[2] > self._uidlist_parsed):
                    f.seek(self._uidlist_parsed)
                    if self._append_tail(f.read()):
                        self._uidlist_sig = sig
                        return
                    f.seek(0)
                raw = f.read()
        except FileNotFoundError:
            self._start_uidlist()
            return
        try:
            header, records, _ = dv.parse_uidlist(raw.decode("utf-8", "surrogateescape"))
        except dv.UidlistError as e:
            log.warning("%s unusable (%s): new UIDVALIDITY", path, e)
            self._new_uidlist(e.validity)
            return
        parsed = raw.rfind(b"\n") + 1            # octets up to the last complete line
        self._header, self._uidlist_parsed, self._uidlist_sig = header, parsed, sig
        self._records = {r.key: r for r in records}
        if parsed < len(raw):
            self._rewrite_uidlist(list(self._records.values()))    # drop a torn last line

    def _append_tail(self, raw: bytes) -> bool:
        """Parse records appended since the last read (another process's new messages):
        each must be above every UID so far, which ``nextuid`` bounds (O(1), not a
        look at every record); anything else makes the caller read the whole file."""
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            return False        # a torn line of a writer that died: reparse, and rewrite without it
        last = self._header.nextuid - 1
        try:
            recs = [dv.parse_record(l) for l in raw[:end].decode("utf-8", "surrogateescape").split("\n") if l]
        except ValueError:
            return False
        for r in recs:
            if r.uid <= last:
                return False
            last = r.uid
        for r in recs:
            self._records[r.key] = r
        self._header = self._header._replace(nextuid=max(self._header.nextuid, last + 1))
        self._uidlist_parsed += end
        return True

    def _start_uidlist(self) -> None:
        old = os.path.join(self.path, OLD_UIDLIST)
        if os.path.exists(old):
            from store.folder_convert import convert_old_index
            try:
                header, records = convert_old_index(self.path)
            except dv.UidlistError as e:
                log.warning("%s unusable (%s): new UIDVALIDITY", old, e)
                self._new_uidlist(e.validity)
                self._flush_new_uidlist()         # on disk before the old file is renamed away
            else:
                self._write_new_uidlist(header, records)
                log.info("converted %s to %s (UIDVALIDITY %d kept)", old, dv.UIDLIST, header.uidvalidity)
            os.replace(old, old + ".converted")
            return
        self._new_uidlist(0)

    def _new_uidlist(self, old_validity: int) -> None:
        """A new UIDVALIDITY greater than any earlier one (RFC 3501 §2.3.1.1).  Written
        once, with the records the same change gives (``_add_records``) or alone before
        the change ends (``_flush_new_uidlist``), as Dovecot writes a new uidlist whole."""
        known = max(self._header.uidvalidity if self._header else 0, self._modseq.last_uidvalidity())
        validity = max(int(time.time()), old_validity + 1, known + 1)
        self._header = dv.Header(validity if validity <= dv.MAX_UID else 1, 1, dv.new_guid())
        self._records, self._fresh, self._unwritten = {}, True, True

    def _forget_unwritten(self) -> None:
        """Drop a uidlist made in memory that a failed change did not write: the next
        change reads the disk again (another process may have written one since)."""
        self._header, self._records, self._unwritten = None, {}, False
        self._uidlist_sig, self._uidlist_parsed = None, 0

    def _flush_new_uidlist(self) -> None:
        """Write a uidlist made by ``_new_uidlist`` that no record was added to."""
        if self._unwritten:
            self._rewrite_uidlist(list(self._records.values()))

    def _write_new_uidlist(self, header: dv.Header, records: List[dv.Record]) -> None:
        self._header, self._fresh = header, True
        self._records = {r.key: r for r in records}
        self._rewrite_uidlist(records)

    def _rewrite_uidlist(self, records: List[dv.Record], data: Optional[bytes] = None) -> None:
        """Replace the whole uidlist (tmp + fsync + rename + dir fsync), dotlock held;
        ``data``: the file already formatted from ``records``."""
        path = os.path.join(self.path, dv.UIDLIST)
        if data is None:
            data = dv.format_uidlist(self._header, sorted(records, key=_uid_of))
        write_atomic(path, data, tmp="%s.tmp.%d" % (path, os.getpid()))
        self._uidlist_sig, self._uidlist_parsed = stat_sig(path), len(data)
        self._sizes_dirty = self._unwritten = False

    def _add_records(self, keys: List[str], found, guids: Optional[Dict[str, str]] = None) -> None:
        """UIDs for new keys (in delivery order), appended to the uidlist in one write
        (Dovecot's way), or the whole file written once when it is new.  Many keys at
        once (10,000 at the first login after they arrived) go column by column
        (store/folder_bulk.py).  ``guids``: key -> message GUID for the ``G`` field
        (COPY / MOVE, ``note_copies``), taken one by one."""
        nextuid = self._header.nextuid
        if nextuid + len(keys) - 1 > dv.MAX_UID:
            # RFC 3501 §9 nz-number exhausted: renumber everything under a new UIDVALIDITY.
            log.warning("UIDs exhausted in %s: new UIDVALIDITY", self.path)
            keys = sort_keys(k for k in set(keys) | set(self._records) if k in found)
            self._new_uidlist(self._header.uidvalidity)
            nextuid = 1
        records, first = self._records, nextuid
        whole = self._unwritten and not records      # a new uidlist: header and records in one write
        bulk = new_records(keys, found, nextuid) if len(keys) > 1 and not guids else None
        if bulk is not None:
            added, text, sizes = bulk
            records.update(zip(keys, added))
            self._added.append((keys, sizes))
            nextuid += len(keys)
        else:
            text, nextuid = self._add_one_by_one(keys, found, nextuid, guids or {})
        self._header = self._header._replace(nextuid=nextuid)
        if whole:
            self._rewrite_uidlist([], (dv.format_header(self._header) + text).encode("utf-8", "surrogateescape"))
        elif self._unwritten:
            self._rewrite_uidlist(list(records.values()))
        elif nextuid > first:
            self._append_uidlist(text.encode("utf-8", "surrogateescape"))

    def _add_one_by_one(self, keys: List[str], found, nextuid: int, guids: Dict[str, str]) -> Tuple[str, int]:
        """_add_records for keys some of which lack ``,W=``: those files are read once
        for their CRLF size, kept in the record's W field (as Dovecot does); a key of
        ``guids`` gets its ``G`` field first (as Dovecot writes ``G`` before ``W``)."""
        records, added, sizes, lines = self._records, [], [], []
        for key in keys:
            path = found[key][0]
            name = path[path.rfind(os.sep) + 1:]
            size = name_size(key)
            if size is not None:
                lines.append("%d :%s\n" % (nextuid, name))
                ext: tuple = ()
            else:
                try:
                    size = crlf_size(path)        # S= alone may be an LF size: read once
                except FileNotFoundError:
                    continue                      # vanished meanwhile: the next sync sees it
                ext = (("W", str(size)),)
                lines.append("%d W%d :%s\n" % (nextuid, size, name))
            guid = guids.get(key)
            if guid is not None:                  # "<uid> G<guid> [W<size>] :<name>"
                ext = (("G", guid),) + ext
                lines[-1] = "%d G%s %s" % (nextuid, guid, lines[-1].partition(" ")[2])
            records[key] = _new_record(dv.Record, (nextuid, name, ext))
            added.append(key)
            sizes.append(size)
            nextuid += 1
        self._added.append((added, sizes))
        return "".join(lines), nextuid

    def _append_uidlist(self, data: bytes) -> None:
        """Append records, durable before the lock is let go.  Kept, not dropped:
        a UID a reader saw and a crash then lost would go to another message
        (UIDs must never be reused, RFC 3501 §2.3.1.1), and Dovecot does the same
        (maildir-uidlist.c fdatasyncs every uidlist write unless mail_fsync=never).
        fdatasync as Dovecot: the size it flushes is all a reader needs.  Its
        cost is amortised by batching, not by skipping it: the Deliverer notes
        many deliveries in one append, after their 250 (store/deliver.py)."""
        path = os.path.join(self.path, dv.UIDLIST)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_all(fd, data)
            _fdatasync(fd)
        finally:
            os.close(fd)
        self._uidlist_sig = stat_sig(path)
        self._uidlist_parsed += len(data)

    def _maybe_compact(self, found) -> None:
        dead = len(self._records) - len(self._by_key)
        if self._sizes_dirty or (dead > COMPACT_MIN_DEAD and dead * 4 > len(self._records)):
            # the names written are the current ones, as Dovecot does when it rewrites
            fresh = [r._replace(name=os.path.basename(found[k][0])) for k, r in self._records.items() if k in found]
            self._records = {r.key: r for r in fresh}
            self._rewrite_uidlist(fresh)

    def _size(self, rec: dv.Record, path: str) -> int:
        size = name_size(rec.key)
        if size is not None:
            return size
        w = rec.field("W")
        if w is not None and w.isdigit():
            return int(w)
        try:
            size = crlf_size(path)            # S= alone may be an LF size: read once
        except FileNotFoundError:
            size = 0
        self._records[rec.key] = rec._replace(ext=rec.ext + (("W", str(size)),))
        self._sizes_dirty = True              # cached in the uidlist at the rewrite of this sync
        return size

    # -- GUIDs (RFC 8474 OBJECTID: store/objectid.py) -----------------------------------
    def mailbox_guid(self) -> str:
        """The folder's GUID from the uidlist header's ``G`` field (Dovecot's mailbox
        GUID); a uidlist without one (an old mailsrv or a hand-made one) is rewritten
        once with a new one, as Dovecot adds it when it finds none."""
        with self._lock:
            header = self._header
            if header is not None and header.guid:
                return header.guid
            if header is None:
                self.sync()
            with self._locked():
                self._load_uidlist()
                self._flush_new_uidlist()
                if not self._header.guid:
                    self._header = self._header._replace(guid=dv.new_guid())
                    self._rewrite_uidlist(list(self._records.values()))
                return self._header.guid

    def message_guids(self, keys: Iterable[str]) -> Dict[str, str]:
        """Maildir key -> message GUID: the record's ``G`` field, else the key itself
        (Dovecot's maildir_get_guid: the base file name is the GUID when no ``G``
        is stored); keys without a record are left out."""
        with self._lock:
            records = self._records
            out = {}
            for key in keys:
                rec = records.get(key)
                if rec is not None:
                    out[key] = (rec.field("G") if rec.ext else None) or key
            return out

    def note_copies(self, found, guids: Dict[str, str]) -> None:
        """Records for messages COPY / MOVE just renamed into cur/ (folder and dotlock
        held): ``found`` as a scan gives it, ``guids`` the source messages' GUIDs, kept
        in each record's ``G`` field so the copy has the source's EMAILID (RFC 8474
        §5.1), as Dovecot's maildir copy keeps the GUID."""
        self._load_uidlist()
        fresh = [k for k in sort_keys(found) if k not in self._records]
        safe = {k: g for k, g in guids.items() if g and not any(c.isspace() or c == ":" for c in g)}
        if fresh:
            self._add_records(fresh, found, safe)
        self._flush_new_uidlist()
