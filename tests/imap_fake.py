"""An in-memory ImapBackend (protocols/backend/contracts.py) for the IMAP session tests.

Honours the contract as the real service does: every ``done`` is called
exactly once (at once, or with ``deferred`` set only when the test calls
``run_pending``), refusals are ``MailboxError`` with the RFC 5530 codes,
UIDs are never reused (``uidnext`` only grows; a folder deleted and made
again gets a new UIDVALIDITY), keywords become known to the folder when set,
a new message is \\Recent for exactly one session (the first to see it), and
every change is announced to the folder's watchers (the change hub).
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Callable, Dict, List, Optional

from protocols import sasl
from protocols.backend.contracts import MailboxEvent
from protocols.backend.contracts import (HIERARCHY_SEP, AppendResult, CopyOutcome, FolderChanges, FolderEntry,
                                         FolderState, FolderStatus, MailboxError, MessageMeta,
                                         QuotaState, ReplaceOutcome, StoreOutcome)

SPECIAL = (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
           ("Junk", "\\Junk"), ("Archive", "\\Archive"))


class Msg:
    def __init__(self, uid: int, data: bytes, flags, date: float, modseq: int):
        self.uid, self.data, self.flags, self.date, self.modseq = uid, data, set(flags), date, modseq

    def meta(self) -> MessageMeta:
        return MessageMeta(self.uid, frozenset(self.flags), len(self.data), self.date, self.modseq, self.date)


class Folder:
    """One stored mailbox."""

    def __init__(self, name: str, special_use=(), uidvalidity: int = 1):
        self.name = name
        self.special_use = tuple(special_use)
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.modseq = 1
        self.messages: Dict[int, Msg] = {}
        self.expunged: List[tuple] = []          # (uid, modseq): the expunge log (RFC 7162 §3.2.10)
        self.expunge_start = 0                   # VANISHED complete for MODSEQ >= this
        self.keywords: List[str] = []
        self.unclaimed_recent = set()
        self.watchers: List[Callable[[], None]] = []
        self.shared: Dict[tuple, dict] = {}      # OpenFolder.shared: (UIDVALIDITY, name) -> dict

    def add(self, data: bytes, flags=(), date: float = 1700000000.0) -> int:
        uid = self.uidnext
        self.uidnext += 1
        self.modseq += 1
        self.messages[uid] = Msg(uid, data, [f for f in flags if f != "\\Recent"], date, self.modseq)
        self.note_keywords(flags)
        self.unclaimed_recent.add(uid)
        return uid

    def remove(self, uids) -> None:
        """Expunge ``uids`` under one new MODSEQ, remembered in the log."""
        if uids:
            self.modseq += 1
        for u in uids:
            self.messages.pop(u, None)
            self.expunged.append((u, self.modseq))

    def note_keywords(self, flags) -> None:
        for f in flags:
            if not f.startswith("\\") and f not in self.keywords:
                self.keywords.append(f)

    def status(self) -> FolderStatus:
        msgs = self.messages.values()
        return FolderStatus(len(self.messages), self.uidnext, self.uidvalidity,
                            sum(1 for m in msgs if "\\Seen" not in m.flags),
                            sum(1 for m in msgs if "\\Deleted" in m.flags),
                            sum(len(m.data) for m in msgs), len(self.unclaimed_recent), self.modseq,
                            sum(len(m.data) for m in msgs if "\\Deleted" in m.flags))


class FakeImapBackend:
    """AuthService + ImapMailAccess over dicts (see the module docstring)."""

    def __init__(self, users=None):
        self.users = users or {"fred": "secret"}
        self.boxes: Dict[str, Dict[str, Folder]] = {}
        self.subscriptions: Dict[str, set] = {}
        self.deferred = False
        self.pending: List[Callable[[], None]] = []
        self.outcomes = []
        self.open_error: Optional[BaseException] = None
        self.clock = 1700000000.0
        self._creds = {}
        self._validity = itertools.count(1000)
        self.quotas: Dict[str, tuple] = {}     # user -> (limit octets, limit messages), 0: none (RFC 9208)
        self.mailbox_watchers: List[tuple] = []   # (user, account, messages, callback): watch_mailboxes

    def folder(self, name: str, special_use=()) -> Folder:
        """A new stored folder with a UIDVALIDITY never used before."""
        return Folder(name, special_use, next(self._validity))

    # -- plumbing -------------------------------------------------------------

    def call(self, done, value) -> None:
        if self.deferred:
            self.pending.append(lambda: done(value))
        else:
            done(value)

    def run_pending(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    def announce(self, folder: Folder, quiet=()) -> None:
        for cb in [cb for cb in folder.watchers if cb not in quiet]:
            if self.deferred:
                self.pending.append(cb)
            else:
                cb()
        owner = next((u for u, boxes in self.boxes.items() if boxes.get(folder.name) is folder), None)
        for user, _account, messages, callback in list(self.mailbox_watchers):
            if user == owner and messages:
                self.call(callback, MailboxEvent("messages", folder.name))

    def announce_names(self, user: str, event: MailboxEvent, origin=None) -> None:
        """A name change (RFC 5465 §5.4, §5.5), ``own`` for the account that made it."""
        for watcher in list(self.mailbox_watchers):
            if watcher[0] == user:
                self.call(watcher[3], MailboxEvent(event.kind, event.name, event.old_name, watcher[1] is origin))

    # -- AuthService --------------------------------------------------------------

    def scram_lookup(self, username):
        password = self.users.get(username, "no such user, stable fake")
        if username not in self._creds:
            self._creds[username] = sasl.make_scram_credentials(password, salt=b"s" * 16)
        return self._creds[username]

    def authenticate(self, ctx, outcome, done):
        self.outcomes.append(outcome)
        if outcome.password is not None:
            ok = self.users.get(outcome.authcid) == outcome.password
        else:
            ok = bool(outcome.scram_verified)
        self.call(done, outcome.authcid if ok else None)

    # -- ImapMailAccess -------------------------------------------------------------

    def mailboxes(self, user: str) -> Dict[str, Folder]:
        if user not in self.boxes:
            self.boxes[user] = {"INBOX": self.folder("INBOX")}
            for name, use in SPECIAL:
                self.boxes[user][name] = self.folder(name, (use,))
            self.subscriptions[user] = set(["INBOX"] + [n for n, _ in SPECIAL])
        return self.boxes[user]

    def open_account(self, ctx, user, done):
        if self.open_error is not None:
            self.call(done, self.open_error)
            return
        self.mailboxes(user)
        self.call(done, FakeAccount(self, user))

    def deliver(self, user: str, data: bytes, folder: str = "INBOX", flags=()) -> int:
        """A message arriving from outside (SMTP delivery): announced at once."""
        box = self.mailboxes(user)[folder]
        uid = box.add(data, flags, self.clock)
        self.announce(box)
        return uid


class FakeAccount:
    """ImapAccount."""

    def __init__(self, backend: FakeImapBackend, user: str):
        self.backend, self.user = backend, user
        self.closed = False

    @property
    def boxes(self) -> Dict[str, Folder]:
        return self.backend.boxes[self.user]

    def _get(self, name: str) -> Folder:
        box = self.boxes.get(name)
        if box is None:
            raise MailboxError("NONEXISTENT", "Mailbox %r does not exist" % name)
        return box

    def _run(self, done, fn) -> None:
        try:
            value = fn()
        except MailboxError as exc:
            value = exc
        self.backend.call(done, value)

    def list(self, done):
        def entries():
            subs = self.backend.subscriptions[self.user]
            names = sorted(self.boxes, key=lambda n: (n != "INBOX", n))
            every = set(names) | subs
            parents = set()
            for n in every:
                parts = n.split("/")
                parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
            out = []
            for n in names + sorted((subs | parents) - set(names)):
                box = self.boxes.get(n)
                out.append(FolderEntry(n, box.special_use if box else (), n in subs, box is not None,
                                       n in parents))
            return tuple(out)
        self._run(done, entries)

    def create(self, name, special_use, done):
        def create():
            if name in self.boxes:
                raise MailboxError("ALREADYEXISTS", "Mailbox %r exists" % name)
            self.boxes[name] = self.backend.folder(name, special_use)
            parts = name.split(HIERARCHY_SEP)
            for i in range(1, len(parts)):      # RFC 9051 §6.3.4: superior names made as needed
                parent = HIERARCHY_SEP.join(parts[:i])
                if parent not in self.boxes:
                    self.boxes[parent] = self.backend.folder(parent)
            self._names(MailboxEvent("created", name))
        self._run(done, create)

    def delete(self, name, done):
        def delete():
            if name == "INBOX":
                raise MailboxError("CANNOT", "INBOX cannot be deleted")
            self._get(name)
            del self.boxes[name]
            self._names(MailboxEvent("deleted", name))
        self._run(done, delete)

    def rename(self, old, new, done):
        def rename():
            box = self._get(old)
            if new in self.boxes:
                raise MailboxError("ALREADYEXISTS", "Mailbox %r exists" % new)
            if old == "INBOX":
                target = self.boxes[new] = self.backend.folder(new)
                for m in list(box.messages.values()):
                    target.add(m.data, m.flags, m.date)
                box.messages.clear()
                self.backend.announce(box)
                self._names(MailboxEvent("created", new))
                return
            for name in [n for n in self.boxes if n == old or n.startswith(old + "/")]:
                moved = self.boxes.pop(name)
                moved.name = new + name[len(old):]
                self.boxes[moved.name] = moved
            self._names(MailboxEvent("renamed", new, old))
        self._run(done, rename)

    def subscribe(self, name, subscribed, done):
        subs = self.backend.subscriptions[self.user]
        (subs.add if subscribed else subs.discard)(name)
        self.backend.call(done, None)
        self._names(MailboxEvent("subscribed" if subscribed else "unsubscribed", name))

    def _names(self, event) -> None:
        self.backend.announce_names(self.user, event, self)

    def watch_mailboxes(self, messages, callback):
        """contracts.ImapAccount.watch_mailboxes (NOTIFY)."""
        watcher = (self.user, self, messages, callback)
        self.backend.mailbox_watchers.append(watcher)
        return lambda: watcher in self.backend.mailbox_watchers and self.backend.mailbox_watchers.remove(watcher)

    def status(self, name, done):
        self._run(done, lambda: self._get(name).status())

    def append(self, name, items, done):
        def append():
            box = self.boxes.get(name)
            if box is None:
                raise MailboxError("TRYCREATE", "Mailbox %r does not exist" % name)
            self.check_quota(sum(len(it.data) for it in items), len(items))
            uids = tuple(box.add(it.data, it.flags, it.internal_date.timestamp() if it.internal_date
                                 else self.backend.clock) for it in items)
            self.backend.announce(box)
            return AppendResult(box.uidvalidity, uids)
        self._run(done, append)

    def open(self, name, readonly, done):
        self._run(done, lambda: FakeOpenFolder(self, self._get(name), readonly))

    def used(self):
        msgs = [m for box in self.boxes.values() for m in box.messages.values()]
        return sum(len(m.data) for m in msgs), len(msgs)

    def check_quota(self, add_bytes: int, add_messages: int) -> None:
        """RFC 9208 §4.3.1 OVERQUOTA, as protocols/backend/imapquota.py."""
        limit_bytes, limit_messages = self.backend.quotas.get(self.user, (0, 0))
        size, count = self.used()
        if (limit_bytes and size + add_bytes > limit_bytes) or (limit_messages and count + add_messages > limit_messages):
            raise MailboxError("OVERQUOTA", "Quota exceeded for %s" % self.user)

    def quota(self, done):
        limit_bytes, limit_messages = self.backend.quotas.get(self.user, (0, 0))
        size, count = self.used()
        self.backend.call(done, QuotaState((size + 1023) // 1024, limit_bytes // 1024, count, limit_messages))

    def close(self):
        self.closed = True


class FakeOpenFolder:
    """OpenFolder: keeps the state last given to its session, to diff on refresh."""

    def __init__(self, account: FakeAccount, box: Folder, readonly: bool):
        self.account, self.box, self.readonly = account, box, readonly
        self.name = box.name
        self.backend = account.backend
        self.closed = False
        self._watching = []
        self.recent = set(box.unclaimed_recent)
        box.unclaimed_recent.clear()
        self._known = {uid: (frozenset(m.flags), m.modseq) for uid, m in box.messages.items()}
        self._state = self._snapshot()

    def _snapshot(self) -> FolderState:
        b = self.box
        self.recent &= set(b.messages)
        return FolderState(b.uidvalidity, b.uidnext, b.modseq,
                           tuple(b.messages[u].meta() for u in sorted(b.messages)),
                           tuple(b.keywords), frozenset(self.recent))

    def state(self):
        return self._state

    def refresh(self, done):
        b = self.box
        now = {uid: (frozenset(m.flags), m.modseq) for uid, m in b.messages.items()}
        new = tuple(sorted(set(now) - set(self._known)))
        gone = tuple(sorted(set(self._known) - set(now)))
        changed = tuple(sorted(u for u in now if u in self._known and now[u] != self._known[u]))
        self.recent |= set(new) & b.unclaimed_recent
        b.unclaimed_recent -= set(new)
        self._known = now
        self._state = self._snapshot()
        self.backend.call(done, FolderChanges(self._state, new, gone, changed))

    def watch(self, callback):
        self.box.watchers.append(callback)
        self._watching.append(callback)

        def stop():
            if callback in self.box.watchers:
                self.box.watchers.remove(callback)
        return stop

    def read(self, uid, done):
        m = self.box.messages.get(uid)
        self.backend.call(done, None if m is None else m.data)

    def shared(self, name):
        """One dict per mailbox, UIDVALIDITY and name, for its sessions."""
        return self.box.shared.setdefault((self._state.uidvalidity, name), {})

    def derived(self, uids, kind, compute, done):
        """No cache: computed each time (the contract allows it)."""
        out = {}
        for uid in uids:
            m = self.box.messages.get(uid)
            if m is not None:
                out[uid] = compute(m.data)
        self.backend.call(done, out)

    def vanished(self, modseq, done):
        b = self.box
        self.backend.call(done, (tuple(u for u, m in b.expunged if m > modseq), modseq >= b.expunge_start))

    def store(self, uids, flags, mode, unchanged_since, done):
        b = self.box
        changed, modified = [], []
        for uid in uids:
            m = b.messages.get(uid)
            if m is None:
                continue
            if unchanged_since is not None and m.modseq > unchanged_since:
                modified.append(uid)        # RFC 7162 §3.1.3
                continue
            new = {"add": m.flags | set(flags), "remove": m.flags - set(flags), "replace": set(flags)}[mode]
            if new != m.flags:
                b.modseq += 1
                m.flags, m.modseq = new, b.modseq
                changed.append(m.meta())
                self._known[uid] = (frozenset(new), m.modseq)
        b.note_keywords(flags)
        self.backend.call(done, StoreOutcome(tuple(changed), tuple(modified)))
        if changed:
            self.backend.announce(b, quiet=self._watching)   # the contract: not our own watches

    def expunge(self, uids, done):
        b = self.box
        removed = tuple(u for u in uids if u in b.messages and "\\Deleted" in b.messages[u].flags)
        b.remove(removed)
        for u in removed:
            self._known.pop(u, None)
        self.backend.call(done, removed)
        if removed:
            self.backend.announce(b)

    def copy(self, uids, target, move, done):
        dest = self.account.boxes.get(target)
        if dest is None:
            self.backend.call(done, MailboxError("TRYCREATE", "Mailbox %r does not exist" % target))
            return
        pairs = []
        if not move:
            msgs = [self.box.messages[u] for u in uids if u in self.box.messages]
            try:
                self.account.check_quota(sum(len(m.data) for m in msgs), len(msgs))
            except MailboxError as exc:
                self.backend.call(done, exc)
                return
        for uid in uids:
            m = self.box.messages.get(uid)
            if m is not None:
                pairs.append((uid, dest.add(m.data, m.flags, m.date)))
        expunged = ()
        if move:
            expunged = tuple(a for a, _ in pairs)
            self.box.remove(expunged)
            for a in expunged:
                self._known.pop(a, None)
        self.backend.call(done, CopyOutcome(dest.uidvalidity, tuple(pairs), expunged))
        if pairs:
            self.backend.announce(dest)
            if move:
                self.backend.announce(self.box)

    def replace(self, uid, target, item, done):
        """RFC 8508 §3.4 as protocols/backend/imapreplace.py: net quota, append, then
        remove; ``fail_expunge`` on the backend makes the removal fail (a crash there)."""
        b, dest = self.box, self.account.boxes.get(target)
        if self.readonly:
            refusal = MailboxError("CANNOT", "read-only")
        elif uid not in b.messages:
            refusal = MailboxError("EXPUNGEISSUED", "message UID %d was expunged meanwhile" % uid)
        elif dest is None:
            refusal = MailboxError("TRYCREATE", "Mailbox %r does not exist" % target)
        else:
            try:
                self.account.check_quota(max(0, len(item.data) - len(b.messages[uid].data)), 0)
                refusal = None
            except MailboxError as exc:
                refusal = exc
        if refusal is not None:
            self.backend.call(done, refusal)
            return
        new = dest.add(item.data, item.flags, item.internal_date.timestamp() if item.internal_date
                       else self.backend.clock)
        appended = AppendResult(dest.uidvalidity, (new,))
        if getattr(self.backend, "fail_expunge", False):
            self.backend.call(done, ReplaceOutcome(appended, (), "the old message UID %d could not be removed" % uid))
        else:
            del b.messages[uid]
            self._known.pop(uid, None)
            b.modseq += 1
            self.backend.call(done, ReplaceOutcome(appended, (uid,)))
        self.backend.announce(dest)
        if dest is not b:
            self.backend.announce(b)

    def close(self):
        """Stop watching (the contract) and release; safe twice."""
        self.closed = True
        for cb in self._watching:
            if cb in self.box.watchers:
                self.box.watchers.remove(cb)
        self._watching = []


# -- the session harness: transcripts fed whole, byte by byte, at random splits --

def make_session(backend=None, peer=("127.0.0.1", 40000), tls_active=False, tls_available=True,
                 **config):
    """An ImapSession over ``backend`` (a FakeImapBackend by default), greeting drained."""
    from protocols.base import SessionContext
    from protocols.imap.session import ImapConfig, ImapSession
    backend = backend or FakeImapBackend()
    wakes = []
    clock = [backend.clock]
    ctx = SessionContext(peer=peer, listener="imap", tls_active=tls_active,
                         tls_available=tls_available, wake=lambda: wakes.append(1),
                         clock=lambda: clock[0])
    session = ImapSession(ctx, ImapConfig(hostname="imap.example.test", **config), backend)
    session.wakes, session.clock = wakes, clock
    session.greeting = drain(session)
    return session, backend


def drain(session) -> bytes:
    out = b""
    while True:
        data = session.data_to_send()
        if not data:
            return out
        out += data


def whole(data, rng):
    return [data]


def bytewise(data, rng):
    return [data[i:i + 1] for i in range(len(data))]


def random_split(data, rng):
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


FEEDERS = (whole, bytewise, random_split)


def parse_transcript(text: str):
    """[(client bytes, expected server bytes)] from "C: " / "S: " lines; a
    "S: " line may end in "{n}" followed by its literal lines (joined by CRLF)."""
    steps = []
    for raw in text.strip("\n").splitlines():
        raw = raw.lstrip()
        if not raw:
            continue
        who, line = raw[:2], raw[3:].encode("utf-8") + b"\r\n"
        if who == "C:":
            if not steps or steps[-1][1]:
                steps.append([b"", b""])
            steps[-1][0] += line
        else:
            if not steps:
                steps.append([b"", b""])
            steps[-1][1] += line
    return steps


def feed(session, data: bytes, feeder=whole, rng=None) -> bytes:
    got = b""
    for piece in feeder(data, rng or random.Random(1)):
        session.receive_data(piece)
        got += drain(session)
    return got + drain(session)


def login(session, user=b"fred", password=b"secret") -> bytes:
    out = feed(session, b"L1 LOGIN " + user + b" " + password + b"\r\n")
    assert b"L1 OK" in out, out
    return out


def mask(data: bytes) -> bytes:
    """INTERNALDATE / capability lists vary with the test: not what a transcript checks."""
    return re.sub(rb'INTERNALDATE "[^"]*"', b'INTERNALDATE "*"', data)
