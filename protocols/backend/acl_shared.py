"""A folder of another user selected through the shared namespace (RFC 4314, RFC 2342).

``SharedFolder`` is the contracts.OpenFolder a session gets for
``shared/<owner>/<folder>`` (protocols/backend/acl.py): the owner's folder
opened by imapaccess.py's OpenFolder, with

* rights: read again from the owner's dovecot-acl before each change and
  checked by protocols/backend/acl_rights.py: STORE (\\Seen ``s``, \\Deleted
  ``t``, other flags ``w``; flags without their right are left out, a STORE
  with none allowed is NO [NOPERM], RFC 4314 §4), EXPUNGE ``e``, MOVE ``t`` and
  ``e`` (RFC 6851 §4.2), COPY/MOVE targets ``i`` (acl.py ``target``);
  ``allows(right)`` tells FETCH (implicit \\Seen, ``s``) and CLOSE (``e``)
  (RFC 4314 §4: they must not fail for a missing right);
* private \\Seen (Dovecot's INDEXPVT): this user's \\Seen comes from their own
  file (store/acl.py), never from the owner's Maildir file names, and STORE
  \\Seen changes only that file;
* change notices: the owner's folder's key in the change hub (the owner's
  deliveries and changes reach this session), as the inner folder watches.

A private \\Seen change is announced in the change hub like any flag change,
so this user's other sessions on the folder see it at once.

DEVIATION(RFC 7162): a private \\Seen change does not raise the message's
MODSEQ (the owner's Maildir is not touched); a CONDSTORE client sees it
after a full flag resync.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Set

from protocols.backend import acl_rights as R
from protocols.backend.contracts import FolderChanges, FolderState, MailboxError, StoreOutcome
from protocols.backend.imapaccess import Serial
from store import acl as A

Done = Callable[[object], None]
SEEN = "\\Seen"


def _with_flags(meta, flags):
    """A copy of ``meta`` (MessageMeta or imapstore.LazyMeta) with other flags."""
    out = object.__new__(type(meta))
    out.__dict__.update(meta.__dict__)
    out.__dict__["flags"] = flags
    return out


def overlay(state: FolderState, seen: Set[int]) -> FolderState:
    """The owner's state as this user sees it: \\Seen from ``seen``."""
    msgs = []
    for m in state.messages:
        mine = m.uid in seen
        if (SEEN in m.flags) != mine:
            m = _with_flags(m, (m.flags | {SEEN}) if mine else (m.flags - {SEEN}))
        msgs.append(m)
    return FolderState(state.uidvalidity, state.uidnext, state.highestmodseq, tuple(msgs),
                       state.keywords, state.recent)


class SharedFolder:
    """contracts.OpenFolder of a shared folder (module docstring)."""

    def __init__(self, account, inner, name: str, place, readonly: bool):
        self.name = name
        self.readonly = readonly
        self._account = account
        self._inner = inner
        self._place = place
        self._rights = place.rights
        self._serial = Serial(account._loop)
        self._seen: Set[int] = set()
        self._state = None

    def allows(self, right: str) -> bool:
        """Whether this user held ``right`` at the last check (contracts.OpenFolder.allows)."""
        return right in self._rights

    def start(self, done: Done) -> None:
        """After the inner open: this user's \\Seen read, then ``done(self)``."""
        def work():
            self._seen = A.read_seen(self._account.seen_path(self._place), self._inner.state().uidvalidity)
            self._state = overlay(self._inner.state(), self._seen)
            return self
        self._serial.submit(work, done, self.name)

    def state(self) -> FolderState:
        return self._state

    def _fresh_rights(self) -> str:
        """On a worker: the rights as the owner's dovecot-acl says now."""
        self._rights = self._account._place(self.name).rights
        return self._rights

    def refresh(self, done: Done) -> None:
        def refreshed(changes: object) -> None:
            if isinstance(changes, BaseException):
                done(changes)
                return

            def work() -> FolderChanges:
                self._seen = A.read_seen(self._account.seen_path(self._place), changes.state.uidvalidity)
                return self._changes(changes)
            self._serial.submit(work, done, self.name)
        self._inner.refresh(refreshed)

    def _changes(self, changes: FolderChanges) -> FolderChanges:
        before = {m.uid: m.flags for m in self._state.messages} if self._state is not None else {}
        self._state = state = overlay(changes.state, self._seen)
        changed = set(changes.changed)
        changed.update(m.uid for m in state.messages if m.uid in before and before[m.uid] != m.flags)
        return FolderChanges(state, changes.new, changes.expunged, tuple(sorted(changed)))

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._inner.watch(callback)

    def read(self, uid: int, done: Done) -> None:
        self._inner.read(uid, done)

    def read_many(self, uids: Sequence[int], done: Done) -> None:
        self._inner.read_many(uids, done)

    def derived(self, uids, kind, compute, done: Done) -> None:
        self._inner.derived(uids, kind, compute, done)

    def load_dates(self, uids: Sequence[int], done: Done) -> None:
        self._inner.load_dates(uids, done)

    def shared(self, name: str) -> Dict[int, object]:
        return self._inner.shared(name)

    # -- changes --------------------------------------------------------------------------
    def store(self, uids: Sequence[int], flags: Sequence[str], mode: str, unchanged_since, done: Done) -> None:
        """STORE (RFC 9051 §6.4.6, RFC 4314 §4): see the module docstring."""
        uids, flags = list(uids), list(flags)
        if self.readonly:
            self._serial.submit(lambda: None, lambda _r: done(MailboxError(
                "CANNOT", "mailbox %s is read-only" % self.name)))
            return
        plan = {}

        def check():
            plan["kept"], plan["held"] = R.store_plan(self._fresh_rights(), flags, mode, self.name)
        self._serial.submit(check, lambda r: done(r) if isinstance(r, BaseException) else
                            self._store_owner(uids, plan["kept"], plan["held"], mode, unchanged_since, done))

    def _store_owner(self, uids, kept, held, mode, unchanged_since, done: Done) -> None:
        """The owner's flags (all but \\Seen) in the Maildir; then this user's \\Seen."""
        other = [f for f in kept if f != SEEN]
        steps = []
        if mode == "replace":
            current = set()
            for m in self._inner.state().messages:
                if m.uid in uids:
                    current |= m.flags
            drop = [f for f in current if f != SEEN and f not in other and R.flag_right(f) in held]
            if other:
                steps.append((other, "add"))
            if drop:
                steps.append((drop, "remove"))
        elif other:
            steps.append((other, mode))
        modified = set()

        def step(result: object = None) -> None:
            if isinstance(result, BaseException):
                done(result)
                return
            if isinstance(result, StoreOutcome):
                modified.update(result.modified)
            if steps:
                fl, how = steps.pop(0)
                self._inner.store(uids, fl, how, unchanged_since, step)
                return
            self._store_seen(uids, kept, held, mode, sorted(modified), done)
        step()

    def _store_seen(self, uids, kept, held, mode, modified, done: Done) -> None:
        seen_asked = SEEN in kept
        touch = "s" in held and (seen_asked or mode == "replace")
        add = seen_asked if mode != "remove" else False
        targets = [u for u in uids if u not in modified]

        def work() -> StoreOutcome:
            if touch:
                self._account.mark_seen(self._place, self._inner.state().uidvalidity, targets, add)
                self._seen = (self._seen | set(targets)) if add else (self._seen - set(targets))
            before = {m.uid: m.flags for m in self._state.messages}
            self._state = state = overlay(self._inner.state(), self._seen)
            wanted = set(uids)
            changed = tuple(m for m in state.messages if m.uid in wanted and before.get(m.uid) != m.flags)
            return StoreOutcome(changed, tuple(modified))

        def answered(result: object) -> None:
            if touch and isinstance(result, StoreOutcome):
                self._tell_others()         # this user's other sessions on the folder look again
            done(result)
        self._serial.submit(work, answered, self.name)

    def _tell_others(self) -> None:
        """Announce the folder in the change hub, this session's own watch kept quiet
        (as imapaccess.OpenFolder.store does): the others re-read the private \\Seen."""
        inner = self._inner
        inner._quiet = True
        try:
            self._account._service.announce(self._place.owner, self._place.folder)
        finally:
            inner._quiet = False

    def expunge(self, uids: Sequence[int], done: Done) -> None:
        """EXPUNGE (RFC 4314 §4: ``e``)."""
        uids = list(uids)
        self._checked("EXPUNGE", lambda: self._inner.expunge(uids, done), done)

    def copy(self, uids: Sequence[int], target: str, move: bool, done: Done) -> None:
        """COPY (the target's ``i``, acl.py) / MOVE (also ``t`` and ``e`` here, RFC 6851 §4.2)."""
        uids = list(uids)
        if not move:
            self._inner.copy(uids, target, move, done)
            return
        self._checked("MOVE-FROM", lambda: self._inner.copy(uids, target, move, done), done)

    def replace(self, uid: int, target: str, item, done: Done) -> None:
        """REPLACE (RFC 8508 §4.1: ``t`` and ``e`` here, ``i`` in the target).
        DEVIATION(RFC 8508 §3.2): from a shared folder only into the same
        folder (the owner's store resolves the target name, not this user's)."""
        if target != self.name:
            done(MailboxError("CANNOT", "REPLACE from a shared folder into another folder is not supported"))
            return
        self._checked("REPLACE-SAME", lambda: self._inner.replace(uid, self._inner.name, item, done), done)

    def _checked(self, op: str, then: Callable[[], None], done: Done) -> None:
        def check() -> None:
            R.require(self._fresh_rights(), op, self.name)
        self._serial.submit(check, lambda r: done(r) if isinstance(r, BaseException) else then())

    def close(self) -> None:
        self._inner.close()
