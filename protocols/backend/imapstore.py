"""STORE's bookkeeping for imapaccess.OpenFolder (RFC 9051 §6.4.6; RFC 7162
§3.1 CONDSTORE), kept apart so imapaccess.py stays readable.

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

import dataclasses
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

from protocols.backend.contracts import FolderState, MessageMeta


def changed_metas(folder, uids: Iterable[int], flags_of: Callable, shared: Optional[dict]) -> Tuple[MessageMeta, ...]:
    """The metas of ``uids`` (changed by our own store) as the folder has them
    now; ``flags_of(letters, keywords)`` gives the IMAP flags; ``shared``:
    the folder's entry of the shared metadata ``(snapshot, metas, {uid: (message,
    meta)})``, or None."""
    uids = sorted(uids)
    snap = folder.knowing(uids)         # the snapshot our change left: no listing
    msgs = [m for m in (snap.by_uid(uid) for uid in uids) if m is not None]
    dates = folder.dates(msgs)          # one call (one lock) for them all
    changed = tuple(MessageMeta(m.uid, flags_of(m.flags, m.keywords), m.size, dates[m.key][0],
                                m.modseq, dates[m.key][1]) for m in msgs)
    if shared is not None:
        cache: Dict[int, tuple] = shared[2]
        for m, meta in zip(msgs, changed):
            cache[m.uid] = (m, meta)    # one dict store each: safe beside another worker's look
    return changed


def with_changes(state: FolderState, changed: Sequence[MessageMeta]) -> FolderState:
    """``state`` with the messages of ``changed`` replaced (those not in it ignored)."""
    if not changed:
        return state
    by_uid = {m.uid: m for m in changed}
    get = by_uid.get
    messages = tuple([get(m.uid, m) for m in state.messages])
    top = max(m.modseq for m in changed)
    return dataclasses.replace(state, messages=messages, highestmodseq=max(state.highestmodseq, top))
