"""The snapshot side of store/folder.py: a folder's scan (new/ then cur/), the
snapshot built from it and the uidlist's records with the MODSEQ journal
compared, and the snapshot patched after our own changes.

A mixin of ``Folder`` (it shares the folder's state and runs with the folder's
lock held): kept apart only so each module stays readable.  The first
snapshot of a folder in a process is made column by column
(store/folder_bulk.py); later ones reuse every message that did not change.
"""

from __future__ import annotations

import operator
import os
from typing import Dict, List, Optional, Tuple

from store import dovecot_files as dv
from store.folder_bulk import messages_of, scan_dir
from store.folder_types import Message, Snapshot, SyncResult

_NO_KEYWORDS: frozenset = frozenset()
_new_message = tuple.__new__            # Message(...) without the NamedTuple's Python-level __new__
_uid_of = _modseq_of = operator.itemgetter(0)      # of a dv.Record; of a journal entry (modseq, letters)
_letters_of = operator.itemgetter(1)               # of a scan entry (path, letters, tail)
_UNKNOWN = (0, None)                               # a journal entry no message has


class SnapshotMixin:
    def _build(self, found, only: Optional[set] = None) -> SyncResult:
        """The snapshot of the live records (the records dict is in UID order), their flags
        compared with the MODSEQ journal; unchanged messages are reused from the last one.
        ``only``: the keys our own change touched; the rest of ``found`` may be older than
        the journal (another process's changes), so only these are recorded."""
        header, journal, records = self._header, self._modseq, self._records
        journal.load(header.uidvalidity, self._fresh)
        self._fresh = False
        keys = list(records) if found.keys() == records.keys() else [k for k in records if k in found]
        uids = list(map(_uid_of, records.values() if len(keys) == len(records) else map(records.__getitem__, keys)))
        entries = list(map(found.__getitem__, keys))
        known = journal.messages
        if only is not None:
            changed = [(uid, e[1]) for k, uid, e in zip(keys, uids, entries)
                       if k in only and known.get(uid, _UNKNOWN)[1] != e[1]]
            gone = [records[k].uid for k in only if k not in found and records[k].uid in known]
        elif not known:                              # a journal started anew: every message is news
            changed = gone = None
            journal.record_all(uids, list(map(_letters_of, entries)))
        else:
            changed = [(uid, e[1]) for uid, e in zip(uids, entries) if known.get(uid, _UNKNOWN)[1] != e[1]]
            live_uids = set(uids)
            gone = [u for u in known if u not in live_uids]
        if changed is not None:
            journal.record(changed, gone)
        prev = self._by_key if self._snap is not None and self._snap.uidvalidity == header.uidvalidity else {}
        added, self._added = self._added, []
        if not prev and only is None:
            # a first snapshot: every message is new and (after record()) in the journal
            known = journal.messages                 # (record_all replaces the dict)
            messages = messages_of(keys, uids, entries, self._sizes_of(keys, entries, added),
                                   map(_modseq_of, map(known.__getitem__, uids)), self._flags_of)
            by_key, new, flagged = dict(zip(keys, messages)), uids, []
        else:
            sizes = {k: n for chunk_keys, chunk_sizes in added for k, n in zip(chunk_keys, chunk_sizes)}
            messages, by_key, new, flagged = self._rebuild_messages(keys, uids, entries, prev, sizes)
        gone = tuple(m.uid for k, m in prev.items() if k not in by_key or by_key[k].uid != m.uid)
        self._snap = Snapshot(header.uidvalidity, header.nextuid, journal.highest, tuple(messages))
        self._by_key, self._kw_built, self._pos = by_key, self._kw_sig, None
        return SyncResult(self._snap, tuple(new), gone, tuple(flagged))

    def _rebuild_messages(self, keys, uids, entries, prev, sizes):
        """_build's messages when there is a last snapshot: unchanged ones reused."""
        known, highest = self._modseq.messages, self._modseq.highest
        same_kw, kinds = self._kw_built == self._kw_sig, {}
        messages, by_key, new, flagged = [], {}, [], []
        for key, uid, (path, letters, _tail) in zip(keys, uids, entries):
            hit = known.get(uid)
            modseq = hit[0] if hit is not None else highest
            old = prev.get(key)
            if old is not None and old.path == path and old.uid == uid and old.modseq == modseq and same_kw:
                msg = old
            else:
                kind = kinds.get(letters)
                if kind is None:
                    kind = kinds[letters] = self._flags_of(letters)
                size = sizes.get(key)
                if size is None:
                    size = self._size(self._records[key], path)
                msg = _new_message(Message, (uid, key, path, kind[0], kind[1], size, modseq))
                if old is None or old.uid != uid:
                    new.append(uid)
                elif (old.flags, old.keywords) != (msg.flags, msg.keywords):
                    flagged.append(uid)
            by_key[key] = msg
            messages.append(msg)
        return messages, by_key, new, flagged

    def _sizes_of(self, keys: List[str], entries, added: List[Tuple[List[str], List[int]]]) -> List[int]:
        """The CRLF size of each key: what _add_records just learnt (``added``: its keys and
        their sizes; as they are when it gave UIDs to these very keys), else _size."""
        if len(added) == 1 and added[0][0] == keys:
            return added[0][1]
        sizes = {k: n for chunk_keys, chunk_sizes in added for k, n in zip(chunk_keys, chunk_sizes)}
        got = list(map(sizes.get, keys))
        if None in got:
            records = self._records
            got = [n if n is not None else self._size(records[k], e[0]) for n, k, e in zip(got, keys, entries)]
        return got

    def _positions(self) -> Dict[str, int]:
        if self._pos is None:
            self._pos = {m.key: i for i, m in enumerate(self._snap.messages)}
        return self._pos

    def _after_own_change(self, updates: Dict[str, Optional[Tuple[str, str, str]]]) -> SyncResult:
        """The snapshot after our own renames/appends/unlinks, without listing the directories
        again (``updates``: key → new scan entry, None = removed).  Renames and an append at
        the end patch the last snapshot in place; the directories' new mtimes make the next
        ``sync()`` rescan anyway."""
        if None in updates.values():
            for key, hit in updates.items():
                if hit is None:
                    self._found.pop(key, None)
                else:
                    self._found[key] = hit
        else:
            self._found.update(updates)
        old = self._snap
        if old is None or None in updates.values() or old.uidvalidity != self._header.uidvalidity:
            return self._build(self._found, set(updates))
        journal = self._modseq
        journal.load(self._header.uidvalidity)
        records, known = self._records, journal.messages
        uids = [records[key].uid for key in updates]
        journal.record([(uid, hit[1]) for uid, hit in zip(uids, updates.values())
                        if known.get(uid, _UNKNOWN)[1] != hit[1]], [])
        known = journal.messages
        messages, index = list(old.messages), dict(old._index or {m.uid: m for m in old.messages})
        new, flagged, kinds = [], [], {}
        positions, by_key = self._positions(), self._by_key
        for (key, (path, letters, _tail)), uid in zip(updates.items(), uids):
            kind = kinds.get(letters)
            if kind is None:
                kind = kinds[letters] = self._flags_of(letters)
            prev = by_key.get(key)
            if prev is not None and prev.uid == uid:      # a rename: same file, same size
                msg = _new_message(Message, (uid, key, path, kind[0], kind[1], prev.size, known[uid][0]))
                messages[positions[key]] = msg
                if prev.flags != msg.flags or prev.keywords != msg.keywords:
                    flagged.append(uid)
            elif not messages or uid > messages[-1].uid:
                msg = self._message(records[key], key, path, letters, known[uid][0])
                positions[key] = len(messages)
                messages.append(msg)
                new.append(uid)
            else:
                return self._build(self._found, set(updates))
            by_key[key] = index[uid] = msg
        self._snap = Snapshot(old.uidvalidity, self._header.nextuid, journal.highest, tuple(messages), index)
        self._added = []                          # (their sizes are in the messages made above)
        return SyncResult(self._snap, tuple(new), (), tuple(flagged))

    def _message(self, rec: dv.Record, key: str, path: str, letters: str, modseq: int) -> Message:
        flags, keywords = self._flags_of(letters)
        return Message(rec.uid, key, path, flags, keywords, self._size(rec, path), modseq)

    def _flags_of(self, letters: str) -> Tuple[str, frozenset]:
        """Info letters → (system flag letters, keywords)."""
        if not letters or letters.isupper():        # no keyword letters
            return letters, _NO_KEYWORDS
        return "".join(c for c in letters if c.isupper()), self._keywords_of(letters)

    def _scan(self) -> Dict[str, Tuple[str, str, str]]:
        """key → (path, letters, tail) for new/ then cur/ (cur/ wins a duplicate); no file opened."""
        found: Dict[str, Tuple[str, str, str]] = {}
        for sub in ("new", "cur"):
            scan_dir(os.path.join(self.path, sub), found)
        return found
