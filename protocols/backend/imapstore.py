"""STORE for imapaccess.OpenFolder (RFC 9051 §6.4.6; RFC 7162 §3.1 CONDSTORE)
and the flag mapping of the IMAP mail access, kept apart so imapaccess.py
stays readable.

Flags: IMAP's system flags are the maildir-spec info letters (\\Seen S,
\\Answered R, \\Flagged F, \\Deleted T, \\Draft D, RFC 9051 §2.3.2, as Dovecot
maps them) and keywords are Dovecot's letters through dovecot-keywords
(store/folder.py); \\Recent is never stored.

STORE 1:* on a large folder changes every message at once, so nothing here
is done per message twice:

* ``changed_metas``: the MessageMeta of each message the store renamed, from
  the folder's snapshot after its own change (store/folder.py patches it in
  place: no directory listing) and one ``dates`` call; each is also put in
  the folder's shared metadata (imapaccess ``shared_metas``), so the next
  look at the folder by any session reuses it instead of building it again;
* ``with_changes``: this session's last state with those metas in it, since
  the session has them now (its STORE answer carried them): the refresh that
  follows reports as changed only what someone else changed (RFC 9051 §7.5.2
  unsolicited FETCH), not the session's own 10,000 messages a second time.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import operator
from typing import Callable, Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

from protocols.backend.contracts import FolderState, MailboxError, MessageMeta, StoreOutcome

# RFC 9051 §2.3.2 system flags and maildir-spec's info letters (as Dovecot maps them).
FLAG_LETTERS = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
_BY_LOWER = {k.lower(): v for k, v in FLAG_LETTERS.items()}


def split_flags(flags: Iterable[str]) -> Tuple[str, Tuple[str, ...]]:
    """IMAP flags -> (maildir letters, keywords).  \\Recent is dropped (RFC 9051 §2.3.2:
    not storable); another \\word is no flag of ours: MailboxError CANNOT."""
    letters, keywords = [], []
    for flag in flags:
        if flag.startswith("\\"):
            letter = _BY_LOWER.get(flag.lower())
            if letter is not None:
                letters.append(letter)
            elif flag.lower() != "\\recent":
                raise MailboxError("CANNOT", "%s is not a flag that can be stored" % flag[:40])
        else:
            keywords.append(flag)
    return "".join(sorted(set(letters))), tuple(dict.fromkeys(keywords))


def same_case(defined: Sequence[str], keywords: Sequence[str]) -> Tuple[str, ...]:
    """Keywords in the spelling the folder already has: flag names are atoms, and "all
    alphabetic characters are case insensitive" (RFC 9051 §9, note 1), so "$label1" is
    the folder's "$Label1", and one request's case variants are one keyword."""
    have = {w.lower(): w for w in defined}
    out: Dict[str, str] = {}
    for word in keywords:
        out.setdefault(word.lower(), have.get(word.lower(), word))
    return tuple(out.values())


@functools.lru_cache(maxsize=256)
def _system_flags(letters: str) -> FrozenSet[str]:
    return frozenset(LETTER_FLAGS[c] for c in letters if c in LETTER_FLAGS)


def imap_flags(letters: str, keywords: FrozenSet[str]) -> FrozenSet[str]:
    """Maildir letters and keywords -> IMAP flag strings (letters we do not know, like P, are not shown)."""
    system = _system_flags(letters)
    return system | keywords if keywords else system


def store_flags(folder, uids: Sequence[int], flags: Sequence[str], mode: str, unchanged_since: Optional[int],
                shared: Optional[dict]) -> StoreOutcome:
    """On a worker: STORE ``flags`` (``mode`` add, remove or replace) on ``uids``
    of the store's ``folder``; ``shared`` as for ``changed_metas``."""
    letters, keywords = split_flags(flags)
    keywords = same_case(folder.keywords(), keywords)
    if mode not in ("add", "remove", "replace"):
        raise MailboxError("CANNOT", "STORE mode %r" % mode)
    modified, touched = (), set()
    todo = list(uids)
    if letters or mode == "replace":
        result = folder.set_flags(todo, letters, mode, unchanged_since)
        modified, unchanged_since = result.modified, None
        touched.update(c.uid for c in result.changed)
        skip = set(modified)
        todo = [u for u in todo if u not in skip]
    if keywords or mode == "replace":
        result = folder.set_keywords(todo, keywords, mode, unchanged_since)
        modified = tuple(modified) + tuple(result.modified)
        touched.update(c.uid for c in result.changed)
    return StoreOutcome(changed_metas(folder, touched, imap_flags, shared), tuple(modified))




class LazyMeta(MessageMeta):
    """A MessageMeta whose ``internal_date`` and ``save_date`` are read from the
    folder's dates (store/folder_imap.py ``known_dates``) when asked: SELECT does
    not stat 10,000 files for dates no command may need.  The session asks
    ``OpenFolder.load_dates`` (a worker step) before a command that reads them;
    one read without it is still right: the file is stat'ed then (a look-up by
    Maildir key, so a flag rename meanwhile does not matter)."""

    def __init__(self, uid: int, flags: FrozenSet[str], size: int, modseq: int, msg, folder, known: dict):
        self.__dict__.update(uid=uid, flags=flags, size=size, modseq=modseq,
                             _msg=msg, _folder=folder, _known=known)

    def _dates(self) -> Tuple[float, float]:
        hit = self._known.get(self._msg.key)
        if hit is None:
            hit = self._folder.dates((self._msg,))[self._msg.key]
        return hit

    @property
    def internal_date(self) -> float:     # type: ignore[override]
        return self._dates()[0]

    @property
    def save_date(self) -> Optional[float]:   # type: ignore[override]
        return self._dates()[1]

    def __reduce__(self):                 # a copy is a plain MessageMeta with the dates
        return (MessageMeta, (self.uid, self.flags, self.size, self.internal_date, self.modseq, self.save_date))


def lazy_metas(folder, msgs, flags_of: Callable) -> list:
    """LazyMeta of each store message (``flags_of(letters, keywords)``: the IMAP flags)."""
    known, flag_sets, out = folder.known_dates(), {}, []
    new, cls, append = object.__new__, LazyMeta, out.append
    for m in msgs:
        uid, _key, _path, letters, keywords, size, modseq = m     # a store.folder_types.Message
        flags = flag_sets.get((letters, keywords))
        if flags is None:
            flags = flag_sets[(letters, keywords)] = flags_of(letters, keywords)
        meta = new(cls)
        meta.__dict__.update(uid=uid, flags=flags, size=size, modseq=modseq,
                             _msg=m, _folder=folder, _known=known)
        append(meta)
    return out


_uid_of = operator.attrgetter("uid")


def recent_uids(msgs: Sequence, first: int, kept: FrozenSet[int] = frozenset()) -> FrozenSet[int]:
    """The UIDs of ``msgs`` (store messages in UID order) from ``first`` on, and those of
    ``kept`` still among them: \\Recent (RFC 3501 §2.3.2), with no Python step per message."""
    uids = list(map(_uid_of, msgs))
    recent = frozenset(uids[bisect.bisect_left(uids, first):])
    return recent | kept.intersection(uids) if kept else recent


def changed_metas(folder, uids: Iterable[int], flags_of: Callable, shared: Optional[dict]) -> Tuple[MessageMeta, ...]:
    """The metas of ``uids`` (changed by our own store) as the folder has them
    now; ``flags_of(letters, keywords)`` gives the IMAP flags; ``shared``:
    the folder's entry of the shared metadata ``(snapshot, metas, {uid: (message,
    meta)})``, or None."""
    uids = sorted(uids)
    snap = folder.knowing(uids)         # the snapshot our change left: no listing
    msgs = [m for m in map(snap.by_uid, uids) if m is not None]
    changed = lazy_metas(folder, msgs, flags_of)
    if shared is not None:
        cache: Dict[int, tuple] = shared[2]
        for m, meta in zip(msgs, changed):
            cache[m.uid] = (m, meta)    # one dict store each: safe beside another worker's look
    return tuple(changed)


def with_changes(state: FolderState, changed: Sequence[MessageMeta]) -> FolderState:
    """``state`` with the messages of ``changed`` replaced (those not in it ignored)."""
    if not changed:
        return state
    by_uid = {m.uid: m for m in changed}
    get = by_uid.get
    messages = tuple([get(m.uid, m) for m in state.messages])
    top = max(m.modseq for m in changed)
    return dataclasses.replace(state, messages=messages, highestmodseq=max(state.highestmodseq, top))
