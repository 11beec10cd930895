"""IMAP OBJECTID (RFC 8474): MAILBOXID, EMAILID and THREADID, a mixin of
protocols/imap/session.py's ImapSession.

* MAILBOXID (§4): the tagged OK of CREATE carries ``[MAILBOXID (id)]``
  (§4.1), SELECT / EXAMINE send ``* OK [MAILBOXID (id)]`` (§4.2), STATUS and
  LIST ... RETURN (STATUS (MAILBOXID)) answer it (§4.3; args.py, listing.py).
* EMAILID (§5.1) in FETCH and SEARCH, from ``OpenFolder.email_ids``.
* THREADID (§5.2): not computed (the backend keeps no threads): FETCH
  answers ``THREADID NIL`` and SEARCH THREADID matches nothing, as §5.2
  requires of such a server.

Where the ids come from and why they survive COPY, MOVE and RENAME:
protocols/backend/objectids.py.  A backend without ``email_ids`` /
``mailbox_id`` (contracts.py: optional) gets EMAILID refused (BAD) and no
MAILBOXID codes; the real one has both.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, Optional

from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.search import SearchKey
from protocols.imap.session_base import BAD, Refusal

log = logging.getLogger("mailsrv.imap")

OBJECTID_CAPABILITIES = [b"OBJECTID"]       # RFC 8474 §3
OBJECTID_ITEMS = ("EMAILID", "THREADID")    # RFC 8474 §5.3 fetch-att
_NOTHING = SearchKey("NOT", (SearchKey("ALL"),))


def mailbox_id_code(mailbox_id: str) -> bytes:
    """resp-text-code "MAILBOXID" SP "(" objectid ")" (RFC 8474 §7)."""
    return b"[MAILBOXID (" + mailbox_id.encode("ascii") + b")]"


def uses_objectids(key: SearchKey) -> bool:
    if key.op in OBJECTID_ITEMS:
        return True
    return any(uses_objectids(a) for a in key.args if isinstance(a, SearchKey))


def resolve_key(key: SearchKey, ids: Dict[int, str]) -> SearchKey:
    """``key`` with each EMAILID id as the UIDs holding it, each THREADID as
    nothing (§5.2: no threads, no match), for search_eval to evaluate."""
    if key.op == "EMAILID":
        uids = sorted(uid for uid, eid in ids.items() if eid == key.args[0])
        if not uids:
            return _NOTHING
        return SearchKey("UID", (g.SequenceSet(tuple((u, u) for u in uids)),))
    if key.op == "THREADID":
        return _NOTHING
    if not any(isinstance(a, SearchKey) for a in key.args):
        return key
    return SearchKey(key.op, tuple(resolve_key(a, ids) if isinstance(a, SearchKey) else a for a in key.args))


class ObjectIdCommands:
    """The OBJECTID parts of CREATE, SELECT, FETCH and SEARCH (see the module docstring)."""

    def _created_mailbox_id(self, name: str):
        """§4.1: the response code of CREATE's tagged OK (None: the backend has no ids)."""
        getter = getattr(self._account, "mailbox_id", None)
        if getter is None:
            return None
        got = yield lambda done: getter(name, done)
        if isinstance(got, BaseException) or not got:
            log.warning("imap MAILBOXID of new mailbox %s unknown user=%s: %r", name[:100], self._user, got)
            return None
        return mailbox_id_code(got)

    def _emit_mailbox_id(self, state) -> None:
        """§4.2: ``* OK [MAILBOXID (id)]`` on SELECT / EXAMINE."""
        mailbox_id = getattr(state, "mailbox_id", "")
        if mailbox_id:
            self._emit(wire.status_line(None, b"OK", "Mailbox id", mailbox_id_code(mailbox_id)))

    def _objectid_items(self, uids, atts):
        """FETCH EMAILID / THREADID (§5.3): ``{name: uid -> item or None}``."""
        out: Dict[str, Callable[[int], Optional[bytes]]] = {}
        names = set(a.name for a in atts)
        if "THREADID" in names:
            out["THREADID"] = lambda uid: b"THREADID NIL"
        if "EMAILID" in names:
            ids = yield from self._email_ids(uids)

            def emailid(uid: int) -> Optional[bytes]:
                eid = ids.get(uid)
                return None if eid is None else b"EMAILID (" + eid.encode("ascii") + b")"
            out["EMAILID"] = emailid
        return out

    def _email_ids(self, uids):
        getter = getattr(self._folder, "email_ids", None)
        if getter is None:
            raise Refusal(BAD, "EMAILID is not supported")
        return (yield from self._ask(getter, list(uids)))

    def _objectid_search(self, sa):
        """SEARCH EMAILID / THREADID (RFC 8474 §6) turned into UID sets first."""
        if not uses_objectids(sa.key):
            return sa
        view = self._view
        ids = {}
        if any(k == "EMAILID" for k in _ops(sa.key)):
            ids = yield from self._email_ids([u for u in view.uids if u not in view.gone])
        return dataclasses.replace(sa, key=resolve_key(sa.key, ids))


def _ops(key: SearchKey):
    yield key.op
    for a in key.args:
        if isinstance(a, SearchKey):
            yield from _ops(a)
