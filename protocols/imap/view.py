"""One session's view of its selected mailbox (RFC 9051 §2.3.1.2, §5.2, §7.5.1; RFC 2180 §4).

Every session numbers the messages for itself: message sequence numbers are
this session's, and change only when this session *tells* its client (an
untagged EXPUNGE lowers the numbers above it, an EXISTS adds new ones at the
end).  ``FolderView`` keeps that map (``uids``, position = number - 1), the
metadata last given by the backend, and what is still to be announced:

* ``apply(FolderChanges)`` records a refresh (or what our own STORE / EXPUNGE
  / MOVE answered); every refresh result must be applied, none may be dropped
  (each is a delta since the previous one);
* ``flush(allow_expunge)`` returns the untagged responses due now: EXPUNGE
  only when RFC 9051 §7.5.1 allows (never while a FETCH, STORE or SEARCH is in
  progress: the expunged message keeps its number until then, RFC 2180 §4.1),
  then FLAGS / PERMANENTFLAGS when keywords were added, EXISTS (never
  lowering the count, RFC 9051 §5.2), RECENT for IMAP4rev1 (RFC 3501 §7.3.2),
  and FETCH (FLAGS) for flag changes made by others (RFC 9051 §5.2, §7.5.2).

Once the client is CONDSTORE-aware (``condstore``, RFC 7162 §3.1), every
unsolicited FETCH carries UID and MODSEQ (§3.1, §3.2.4), and flag changes
wait while expunges are held back (§3.2: a MODSEQ sent before an older
expunge would let a client resync past it); a command that answers while one
is held (its own FETCH or STORE responses may carry newer MODSEQs) ends with
``* OK [HIGHESTMODSEQ n]`` of the last point where the client had heard
everything, below the held expunge's (RFC 7162 §3.2, the example of §6).  Once QRESYNC is enabled
(``qresync``), expunges go out as one ``VANISHED`` of UIDs instead of
EXPUNGEs (RFC 7162 §3.2.10.2); after ENABLE UIDONLY (``uidonly``) too, and
every FETCH response is ``* uid UIDFETCH (...)`` (RFC 9586 §3.3, §3.6).

The module is pure data: no backend call, no I/O.
"""

from __future__ import annotations

import bisect
import functools
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from protocols.backend.contracts import FolderChanges, FolderState, MessageMeta
from protocols.base import ProtocolError
from protocols.imap import grammar as g
from protocols.imap import wire

# RFC 9051 §2.3.2: the system flags every mailbox offers.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class BadSequence(ProtocolError):
    """A sequence number beyond the mailbox (RFC 9051 §9 seq-number: BAD)."""

    def __init__(self, text: str):
        super().__init__(text.encode("ascii"))
        self.text = text


class FolderView:
    """The sequence map and the pending updates (see the module docstring).

    Kept small, since every IDLE connection holds one (issue 10's benchmark:
    memory of 1,000 IDLE connections): two lists aligned by position (UIDs
    ascending, so a UID's number is a bisection) and, per message, only what
    differs from the backend's metadata (the flags last sent, while a change
    is not yet announced)."""

    def __init__(self, state: FolderState, rev2: bool, readonly: bool):
        self.rev2 = rev2
        self.readonly = readonly
        self.allows = lambda right: True    # the OpenFolder's ``allows`` (RFC 4314), if it has one
        self.uids: List[int] = [m.uid for m in state.messages]
        self.metas: List[MessageMeta] = list(state.messages)
        self.shown: Dict[int, FrozenSet[str]] = {}   # flags as last sent, for changed ones
        self.recent: Set[int] = set(state.recent)
        self.gone: Set[int] = set()          # expunged; EXPUNGE not sent yet
        self.flag_dirty: Set[int] = set()    # maybe changed; FETCH not sent yet
        self.uidvalidity = state.uidvalidity
        self.uidnext = state.uidnext
        self.keywords: Tuple[str, ...] = tuple(state.keywords)
        self.known = len(self.uids)          # EXISTS as the client knows it
        self.known_recent = len(self.recent)
        self.known_keywords = self.keywords
        self.highestmodseq = state.highestmodseq
        self.safe_modseq = state.highestmodseq   # everything up to it announced (RFC 7162 §3.2)
        self.fetch_uid = False               # add UID to unsolicited FETCH (a UID command runs)
        self.condstore = False               # RFC 7162 §3.1: UID and MODSEQ in unsolicited FETCH
        self.qresync = False                 # RFC 7162 §3.2.10.2: VANISHED instead of EXPUNGE
        self.uidonly = False                 # RFC 9586 §3.3, §3.6: UIDFETCH and VANISHED, no numbers

    # -- numbers ----------------------------------------------------------

    def _index(self, uid: int) -> Optional[int]:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def position(self, uid: int) -> Optional[int]:
        """The message's index in ``uids`` and ``metas`` (its number - 1)."""
        return self._index(uid)

    def seq(self, uid: int) -> Optional[int]:
        i = self._index(uid)
        return None if i is None else i + 1

    def has(self, uid: int) -> bool:
        return self._index(uid) is not None

    def meta(self, uid: int) -> Optional[MessageMeta]:
        i = self._index(uid)
        return None if i is None else self.metas[i]

    def __len__(self) -> int:
        return len(self.uids)

    def resolve(self, seqset: g.SequenceSet, uid_mode: bool,
                saved: Optional[Iterable[int]] = None) -> List[int]:
        """The UIDs a sequence set names, in ascending order (RFC 9051 §9).

        Sequence numbers beyond EXISTS are an error (BadSequence, answered
        BAD); UIDs that do not exist are ignored (RFC 9051 §6.4.8). ``$``
        (RFC 5182 §2) is ``saved``: UIDs no longer here drop out."""
        if seqset.saved:
            return sorted(u for u in (saved or ()) if self.has(u))
        if uid_mode:
            return self._resolve_uids(seqset)
        largest = len(self.uids)
        if not largest:
            raise BadSequence("no messages in the mailbox: use UID commands or wait for EXISTS")
        picked: Set[int] = set()
        for lo, hi in seqset.resolve(largest):
            if hi > largest or lo < 1:
                raise BadSequence("no message %d (%d exist)" % (hi if hi > largest else lo, largest))
            picked.update(range(lo - 1, hi))
        return [self.uids[i] for i in sorted(picked)]

    def _resolve_uids(self, seqset: g.SequenceSet) -> List[int]:
        if not self.uids:
            return []
        largest = self.uids[-1]
        picked: Set[int] = set()
        for lo, hi in seqset.resolve(largest):
            a = bisect.bisect_left(self.uids, lo)
            b = bisect.bisect_right(self.uids, hi)
            picked.update(self.uids[a:b])
        return sorted(picked)

    # -- changes ----------------------------------------------------------

    def apply(self, changes: FolderChanges) -> None:
        """Record one refresh result (see the module docstring)."""
        st = changes.state
        self.uidnext, self.keywords = st.uidnext, tuple(st.keywords)
        self.highestmodseq = max(self.highestmodseq, st.highestmodseq)
        if changes.new or changes.changed:
            wanted = set(changes.new) | set(changes.changed)
            by_uid = {m.uid: m for m in st.messages if m.uid in wanted}
            for uid in sorted(changes.new):
                m = by_uid.get(uid)
                if m is None or (self.uids and uid <= self.uids[-1]):
                    continue  # known already, or below: UIDs only grow (RFC 9051 §2.3.1.1)
                self.uids.append(uid)
                self.metas.append(m)
            for uid in changes.changed:
                m = by_uid.get(uid)
                if m is not None:
                    self.update(m)
        for uid in changes.expunged:
            if self.has(uid):
                self.gone.add(uid)
        self.recent = set(u for u in st.recent if u not in self.gone and self.has(u))

    def update(self, meta: MessageMeta) -> None:
        """New metadata for a message (a refresh, or our own STORE)."""
        i = self._index(meta.uid)
        if i is None:
            return
        self.shown.setdefault(meta.uid, self.metas[i].flags)
        self.metas[i] = meta
        self.flag_dirty.add(meta.uid)

    def expunged(self, uids: Iterable[int]) -> None:
        """Our own EXPUNGE / MOVE removed these."""
        for uid in uids:
            if self.has(uid):
                self.gone.add(uid)

    def note_keywords(self, flags: Iterable[str]) -> bytes:
        """Our own STORE made keywords: FLAGS / PERMANENTFLAGS now, before the
        FETCH responses that show them (RFC 9051 §7.3.5)."""
        new = [f for f in flags if not f.startswith("\\") and f not in self.keywords]
        if not new:
            return b""
        self.keywords = self.known_keywords = self.keywords + tuple(new)
        return self.flags_response()

    def mark_shown(self, uid: int) -> None:
        """A FETCH response carrying FLAGS was just sent for ``uid``."""
        self.shown.pop(uid, None)
        self.flag_dirty.discard(uid)

    def stored(self, changed: Iterable[MessageMeta], uids: Iterable[int], with_uid: bool, silent: bool,
               conditional: bool = False) -> bytes:
        """Our own STORE on ``uids`` (ascending) changed ``changed``: their new
        metadata, and ``* n FETCH (FLAGS (...))`` for each of ``uids`` still
        here (RFC 9051 §6.4.6), none with .SILENT; ``update`` then
        ``flag_fetch`` (or ``mark_shown``) for each, built in one pass (a
        STORE 1:* on 10,000 messages).  CONDSTORE-aware: UID and MODSEQ in
        each, and with .SILENT still one for each message changed, or for
        each one an UNCHANGEDSINCE store (``conditional``) passed (RFC 7162
        §3.1.3, §3.2.4)."""
        new = {m.uid: m for m in changed}
        out: List[bytes] = []
        rev1, uids_, metas = not self.rev2, self.uids, self.metas
        shown, dirty, gone, recent = self.shown, self.flag_dirty, self.gone, self.recent
        condstore, uidonly = self.condstore, self.uidonly
        with_uid = (with_uid or condstore) and not uidonly
        lo = 0
        for uid in uids:
            i = bisect.bisect_left(uids_, uid, lo)
            if i == len(uids_) or uids_[i] != uid:
                continue
            lo, meta = i, new.get(uid)
            if uid in gone:
                if meta is not None:
                    self.update(meta)       # announced with the EXPUNGE's flush
                continue
            if meta is not None:
                metas[i] = meta
            if shown:
                shown.pop(uid, None)
            dirty.discard(uid)
            modseq = b" MODSEQ (%d)" % metas[i].modseq if condstore else b""
            if silent:
                if modseq and (meta is not None or conditional):
                    out.append(b"* %d UIDFETCH (%s)\r\n" % (uid, modseq[1:]) if uidonly
                               else b"* %d FETCH (UID %d%s)\r\n" % (i + 1, uid, modseq))
                continue
            flags = metas[i].flags
            if type(flags) is not frozenset:      # the contract's type; anything else made one
                flags = frozenset(flags)
            flags = _flag_list(flags, rev1 and uid in recent)     # a few distinct sets: each rendered once
            out.append(b"* %d %s (%sFLAGS %s%s)\r\n" % (uid if uidonly else i + 1, b"UIDFETCH" if uidonly else b"FETCH",
                                                         b"UID %d " % uid if with_uid else b"", flags, modseq))
        return b"".join(out)

    # -- what the client hears ------------------------------------------------

    def flags_of(self, uid: int) -> bytes:
        """FLAGS as sent: with \\Recent for IMAP4rev1 (RFC 3501 §2.3.2)."""
        flags = self.meta(uid).flags
        if type(flags) is not frozenset:      # the contract's type; anything else made one
            flags = frozenset(flags)
        return _flag_list(flags, not self.rev2 and uid in self.recent)

    def flags_response(self) -> bytes:
        """FLAGS and PERMANENTFLAGS (RFC 9051 §7.3.5, §7.1): \\* lets clients make keywords."""
        names = [f.encode("utf-8") for f in SYSTEM_FLAGS + self.keywords]
        out = wire.untagged(b"FLAGS " + wire.paren(names))
        perm = [] if self.readonly else names + [b"\\*"]
        allows = self.allows    # RFC 4314 §5.1.1: only the flags the user's rights let change
        perm = [f for f in perm if allows({b"\\Seen": "s", b"\\Deleted": "t"}.get(f, "w"))]
        text = "Read-only mailbox" if self.readonly else "Flags permitted"
        out += wire.status_line(None, b"OK", text, wire.response_code("PERMANENTFLAGS", perm))
        return out

    def flush(self, allow_expunge: bool) -> bytes:
        """The untagged updates due now (see the module docstring)."""
        out: List[bytes] = []
        if allow_expunge and self.gone:
            out.append(self._expunges())
        if self.keywords != self.known_keywords:
            self.known_keywords = self.keywords
            out.append(self.flags_response())
        if len(self.uids) != self.known:
            self.known = len(self.uids)
            out.append(wire.untagged(b"%d EXISTS" % self.known))
        if not self.rev2 and len(self.recent) != self.known_recent:
            self.known_recent = len(self.recent)
            out.append(wire.untagged(b"%d RECENT" % self.known_recent))
        if self.condstore and self.gone and not allow_expunge:
            # RFC 7162 §3.2: no newer MODSEQ before a held expunge, and a HIGHESTMODSEQ below it
            out.append(wire.status_line(None, b"OK", "Expunges pending",
                                        wire.response_code("HIGHESTMODSEQ", self.safe_modseq)))
            return b"".join(out)
        for uid in sorted(self.flag_dirty):
            if uid in self.gone or not self.has(uid):
                continue
            if uid in self.shown and self.meta(uid).flags != self.shown[uid]:
                out.append(self.flag_fetch(uid))
            self.mark_shown(uid)
        if not self.gone:
            self.safe_modseq = self.highestmodseq
        return b"".join(out)

    def flag_fetch(self, uid: int, with_uid: Optional[bool] = None) -> bytes:
        """``* n FETCH (FLAGS (...))``, with UID while a UID command runs (RFC 9051 §6.4.9);
        CONDSTORE-aware: always with UID, and MODSEQ (RFC 7162 §3.1, §3.2.4)."""
        self.mark_shown(uid)
        items = b"FLAGS " + self.flags_of(uid)
        if self.condstore:
            items += b" MODSEQ (%d)" % self.meta(uid).modseq
        if self.uidonly:
            return wire.untagged(b"%d UIDFETCH (%s)" % (uid, items))     # RFC 9586 §3.6
        if self.condstore or (self.fetch_uid if with_uid is None else with_uid):
            items = b"UID %d " % uid + items
        return wire.untagged(b"%d FETCH (%s)" % (self.seq(uid), items))

    def _expunges(self) -> bytes:
        """RFC 9051 §7.5.1: one EXPUNGE each, highest number first so that
        every number sent is still right when the client reads it; after
        ENABLE QRESYNC one ``VANISHED`` of their UIDs (RFC 7162 §3.2.10.2).
        A message the client never heard of (no EXISTS yet) goes unannounced:
        RFC 7162 §3.2.10.2 forbids naming it, and its number means nothing."""
        told = [u for u in self.gone if self._index(u) < self.known]
        if self.qresync or self.uidonly:
            out = [wire.untagged(b"VANISHED " + wire.sequence_set(told))] if told else []
        else:
            out = [wire.untagged(b"%d EXPUNGE" % self.seq(uid)) for uid in sorted(told, reverse=True)]
        for uid in self.gone:
            self.shown.pop(uid, None)
            self.recent.discard(uid)
        keep = [i for i, u in enumerate(self.uids) if u not in self.gone]
        self.uids = [self.uids[i] for i in keep]
        self.metas = [self.metas[i] for i in keep]
        self.known -= len(told)
        self.known_recent = min(self.known_recent, len(self.recent))
        self.flag_dirty -= self.gone
        self.gone = set()
        return b"".join(out)


@functools.lru_cache(maxsize=1024)
def _flag_list(flags: FrozenSet[str], recent: bool) -> bytes:
    """flag-fetch list (RFC 9051 §7.5.2) of a flag set; a mailbox has few
    distinct sets, so each is rendered once (ours: 1,024 remembered)."""
    ordered = sorted(flags, key=_flag_order)
    if recent:
        ordered.append("\\Recent")
    return wire.paren([f.encode("utf-8") for f in ordered])


def _flag_order(flag: str) -> Tuple[int, str]:
    """System flags first in RFC order, then keywords as named."""
    try:
        return (SYSTEM_FLAGS.index(flag), "")
    except ValueError:
        return (len(SYSTEM_FLAGS), flag)
