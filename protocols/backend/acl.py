"""ACL (RFC 4314) and the shared namespace (RFC 2342) over the IMAP mail access.

``AclAccount`` is the ImapAccount a session gets (contracts.ImapAccount and
its ACL methods): a user's own names go to their ImapAccount
(protocols/backend/imapaccess.py) untouched, where the owner has every right
(store/acl.py); names under ``shared/`` are another user's folders:

    shared/<owner address>/<owner's folder name>      e.g. shared/alice@example.org/Projects

as Dovecot's ``namespace { type = shared; prefix = shared/%%u/ }`` names
them, announced by NAMESPACE as the "other users" namespace.  Every
operation there is refused unless the rights module
(protocols/backend/acl_rights.py) allows it for the rights the owner's
``dovecot-acl`` gives this user, read again for each operation (on a
worker); an owner, a folder or a right that does not exist all answer the
same NONEXISTENT (RFC 4314 §6).  Owner names are addresses, normalized
(case) and checked for a Maildir under the data folder; the folder part
goes through the owner's store/mailboxes.py name checks, so "..", "." and
symlinks cannot lead out of the owner's Maildir.

The selected shared folder is protocols/backend/acl_shared.py's
SharedFolder (private \\Seen, rights on STORE/EXPUNGE/COPY/MOVE).  Its
change-hub key is the owner's folder (user, folder on disk), so the owner's
deliveries reach every grantee watching it.

Subscriptions of shared names are this user's file ``mailsrv-shared-
subscriptions`` (one name a line), since Dovecot's ``subscriptions`` holds
only the user's own namespace's levels.

DEVIATION(RFC 4314 §4): RENAME between namespaces (own <-> shared, or two
owners) is refused with CANNOT.  Quota (RFC 9208): APPEND, COPY and MOVE into
another user's folder count against that user's quota, MOVE out of it frees
theirs.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from protocols.backend import acl_rights as R
from protocols.backend.contracts import AppendItem, FolderEntry, FolderStatus, MailboxError
from protocols.backend.imapaccess import ImapAccount, Serial
from store import acl as A
from store import dovecot_files as dv
from store import mailboxes as mb
from store.users import normalize_address

log = logging.getLogger("mailsrv.imap.acl")
Done = Callable[[object], None]

NAMESPACE = "shared"
PREFIX = NAMESPACE + "/"
SHARED_SUBSCRIPTIONS = "mailsrv-shared-subscriptions"


def split_shared(name: str) -> Optional[Tuple[str, str]]:
    """"shared/owner/a/b" -> ("owner", "a/b"); "shared" -> ("", ""); None: an own name.
    The prefix is matched exactly (case-sensitive, as Dovecot's): "Shared/x" is the user's own."""
    if name == NAMESPACE:
        return "", ""
    if not name.startswith(PREFIX):
        return None
    owner, _sep, folder = name[len(PREFIX):].partition("/")
    return owner, folder


def folder_status(folder, snap, seen: Set[int]) -> FolderStatus:
    """STATUS (RFC 9051 §6.3.11) as imapaccess.py's, UNSEEN from a private \\Seen."""
    first = folder.recent_from()
    msgs = snap.messages
    return FolderStatus(len(msgs), snap.uidnext, snap.uidvalidity, sum(1 for m in msgs if m.uid not in seen),
                        sum(1 for m in msgs if "T" in m.flags),
                        sum(m.size for m in msgs), sum(1 for m in msgs if m.uid >= first),
                        snap.highestmodseq, sum(m.size for m in msgs if "T" in m.flags))


class Place(NamedTuple):
    """A shared name resolved (on a worker)."""
    owner: str              # normalized address
    folder: str             # the owner's IMAP name
    boxes: mb.Mailboxes     # the owner's
    path: str               # the folder's directory (may not exist)
    rights: str             # this user's rights on it ("" when it does not exist)


class AclAccount:
    """contracts.ImapAccount with RFC 4314 ACLs and the shared namespace."""

    def __init__(self, inner: ImapAccount):
        self.user = inner.user
        self._inner = inner
        self._service = inner._service
        self._loop = inner._loop
        self._serial = Serial(inner._loop)
        self._owners: Dict[str, ImapAccount] = {}
        inner.router = self                    # COPY/MOVE targets named by this user

    def __getattr__(self, attr: str):
        # Methods other extensions add to ImapAccount (METADATA, ...) reach the user's own
        # account; a shared name given to one fails there (BadName: CANNOT), never leaks.
        if attr.startswith("__") or attr == "_inner":
            raise AttributeError(attr)
        return getattr(self._inner, attr)

    # -- names ----------------------------------------------------------------------
    def _place(self, name: str) -> Place:
        """On a worker: the owner's folder of a shared name, or NONEXISTENT."""
        owner_text, folder = split_shared(name)
        gone = MailboxError("NONEXISTENT", "mailbox %s does not exist" % name)
        try:
            owner = normalize_address(owner_text)
            root = self._service.store.maildir_path(owner)
        except ValueError:
            raise gone from None
        if not folder or owner == self.user or not os.path.isdir(os.path.join(root, "cur")):
            raise gone              # the user's own folders have one name only: their own
        boxes = mb.Mailboxes(root)
        try:
            folder = mb.normalize(folder)
            path = boxes.path_of(folder)
        except mb.BadName:
            raise gone from None
        exists = os.path.isdir(os.path.join(path, "cur"))
        rights = A.rights_for(A.read_acl(path), self.user, owner) if exists else ""
        return Place(owner, folder, boxes, path, rights)

    def _checked(self, name: str, op: str) -> Place:
        place = self._place(name)
        R.require(place.rights, op, name)
        return place

    def owner_account(self, owner: str, boxes: mb.Mailboxes) -> ImapAccount:
        account = self._owners.get(owner)
        if account is None:
            account = ImapAccount(self._service, owner, boxes, None)
            account.router = self
            self._owners[owner] = account
        return account

    def _then(self, check: Callable[[], object], step: Callable[[object, Done], None], done: Done) -> None:
        """``check`` on a worker (rights), then ``step(result, done)`` on the loop thread."""
        def checked(result: object) -> None:
            if isinstance(result, BaseException):
                done(result)
            else:
                step(result, done)
        self._serial.submit(check, checked)

    # -- COPY / MOVE targets (imapaccess.OpenFolder.copy, on its worker) ------------
    def target(self, name: str):
        """The Folder a COPY/MOVE named by this user goes to, with ``i`` on a shared one."""
        if split_shared(name) is None:
            return self._inner.target(name)
        place = self._place(name)
        if not os.path.isdir(os.path.join(place.path, "cur")):
            raise MailboxError("NONEXISTENT", "mailbox %s does not exist" % name)   # §6: no TRYCREATE hint
        R.require(place.rights, "COPY-INTO", name)
        return place.boxes.folder(place.folder)

    def after_copy(self, name: str, dest, copied) -> None:
        """On the COPY/MOVE worker, into a shared folder (RFC 4314 §4): \\Deleted kept only
        with ``t``, other flags only with ``w``; \\Seen becomes this user's private \\Seen
        (with ``s``), never the owner's."""
        if split_shared(name) is None or not copied.uid_map:
            return
        place = self._place(name)
        new = [t for _s, t in copied.uid_map]
        snap = dest.sync().snapshot
        seen = [u for u in new if snap.by_uid(u) is not None and "S" in snap.by_uid(u).flags]
        if not R.may_change(place.rights, "\\Deleted"):
            dest.set_flags(new, "T", "remove")
        if not R.may_change(place.rights, "\\Flagged"):     # w: every flag but \\Seen and \\Deleted
            dest.set_flags(new, "RFD", "remove")
            dest.set_keywords(new, [], "replace")
        if place.owner != self.user and seen:
            dest.set_flags(seen, "S", "remove")
            if R.may_change(place.rights, "\\Seen"):
                self.mark_seen(place, copied.uidvalidity, seen, True)

    def quota_account(self, name: str) -> ImapAccount:
        """On the COPY/MOVE worker: whose quota a copy into ``name`` counts against."""
        split = split_shared(name)
        if split is None:
            return self._inner
        owner = normalize_address(split[0])
        return self.owner_account(owner, mb.Mailboxes(self._service.store.maildir_path(owner)))

    def hub_of(self, name: str) -> Tuple[str, str]:
        """(user, folder) a change to ``name`` is announced under (loop thread, no disk)."""
        split = split_shared(name)
        if split is None or not split[1]:
            return self.user, name
        try:
            return normalize_address(split[0]), mb.normalize(split[1])
        except ValueError:
            return self.user, name

    # -- the contract -----------------------------------------------------------------
    def list(self, done: Done) -> None:
        """LIST (RFC 9051 §6.3.9): own folders, then the shared ones with ``l`` (RFC 4314 §4)."""
        def own(entries: object) -> None:
            if isinstance(entries, BaseException):
                done(entries)
                return
            own = tuple(e for e in entries if split_shared(e.name) is None)   # an old "shared" of one's own is hidden
            self._serial.submit(lambda: own + self._shared_entries(), done)
        self._inner.list(own)

    def _shared_entries(self) -> Tuple[FolderEntry, ...]:
        subs = set(self._shared_subscriptions())
        names = []
        for owner, root in A.owners(self._service.store.mail_root):
            if owner == self.user:
                continue
            for name, path in A.granted_folders(root):
                if not R.missing(A.rights_for(A.read_acl(path), self.user, owner), "LIST"):
                    names.append(PREFIX + owner + "/" + name)
        real = set(names)
        parents = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
        out = []
        for name in sorted(real | parents | subs):
            exists = name in real
            out.append(FolderEntry(name, (), name in subs, exists, name in parents))
        return tuple(out)

    def create(self, name: str, special_use: Sequence[str], done: Done) -> None:
        """CREATE (RFC 4314 §4: ``k`` on the nearest existing parent; the ACL inherited)."""
        if split_shared(name) is None:
            self._inner.create(name, special_use, done)
            return
        uses = tuple(special_use)

        def work() -> None:
            place = self._place(name)
            if os.path.isdir(os.path.join(place.path, "cur")) and not R.missing(place.rights, "LIST"):
                raise MailboxError("ALREADYEXISTS", "mailbox %s already exists" % name)
            parent = self._parent_place(name)
            R.require(parent.rights, "CREATE", name)
            place.boxes.create(place.folder, uses)
            A.copy_acl(parent.path, place.boxes.path_of(place.folder))
        self._serial.submit(work, done, name)

    def _parent_place(self, name: str) -> Place:
        """The nearest existing parent of a shared name (the owner's INBOX for a top level)."""
        owner, folder = split_shared(name)
        levels = folder.split("/")
        for i in range(len(levels) - 1, 0, -1):
            place = self._place(PREFIX + owner + "/" + "/".join(levels[:i]))
            if place.rights or os.path.isdir(os.path.join(place.path, "cur")):
                return place
        return self._place(PREFIX + owner + "/INBOX")

    def delete(self, name: str, done: Done) -> None:
        """DELETE (RFC 4314 §4: ``x``; the ACL file goes with the directory)."""
        if split_shared(name) is None:
            self._inner.delete(name, done)
            return
        self._then(lambda: self._checked(name, "DELETE"),
                   lambda p, d: self.owner_account(p.owner, p.boxes).delete(p.folder, d), done)

    def rename(self, old: str, new: str, done: Done) -> None:
        """RENAME (RFC 4314 §4: ``x`` on the old name, ``k`` on the new parent; one owner)."""
        a, b = split_shared(old), split_shared(new)
        if a is None and b is None:
            self._inner.rename(old, new, done)
            return

        def check():
            place = self._checked(old, "RENAME") if a is not None else None
            if a is None or b is None or place is None or self._place(new).owner != place.owner:
                raise MailboxError("CANNOT", "RENAME between %s and %s: not across users' folders" % (old, new))
            R.require(self._parent_place(new).rights, "RENAME-INTO", new)
            return place, self._place(new).folder
        self._then(check, lambda pn, d: self.owner_account(pn[0].owner, pn[0].boxes).rename(
            pn[0].folder, pn[1], d), done)

    def subscribe(self, name: str, subscribed: bool, done: Done) -> None:
        """SUBSCRIBE (``l``, RFC 4314 §4) / UNSUBSCRIBE (no right) of a shared name."""
        if split_shared(name) is None:
            self._inner.subscribe(name, subscribed, done)
            return

        def work() -> None:
            if subscribed:
                self._checked(name, "SUBSCRIBE")
            self._change_shared_subscriptions(name, subscribed)
        self._serial.submit(work, done, name)

    def _subs_path(self) -> str:
        return os.path.join(self._inner._boxes.root, SHARED_SUBSCRIPTIONS)

    def _shared_subscriptions(self) -> List[str]:
        try:
            with open(self._subs_path(), "rb") as f:
                text = f.read(1024 * 1024).decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line.startswith(PREFIX)]

    def _change_shared_subscriptions(self, name: str, subscribed: bool) -> None:
        path = self._subs_path()
        with dv.Dotlock(path, dv.SUBSCRIPTIONS_STALE_S, dv.SUBSCRIPTIONS_LOCK_TIMEOUT_S) as lock:
            names = [n for n in self._shared_subscriptions() if n != name]
            if subscribed:
                names.append(name)
            lock.replace("".join(n + "\n" for n in sorted(names)).encode("utf-8"))

    def status(self, name: str, done: Done) -> None:
        """STATUS (RFC 4314 §4: ``r``); UNSEEN from this user's private \\Seen."""
        if split_shared(name) is None:
            self._inner.status(name, done)
            return

        def work():
            place = self._checked(name, "STATUS")
            folder = place.boxes.folder(place.folder)
            snap = folder.sync().snapshot
            seen = A.read_seen(self.seen_path(place), snap.uidvalidity)
            return folder_status(folder, snap, seen)
        self._serial.submit(work, done, name)

    def seen_path(self, place: Place) -> str:
        """This user's private \\Seen file of a shared folder (store/acl.py)."""
        disk = "INBOX" if place.folder == "INBOX" else mb.dir_name(mb.check_name(place.folder))
        return A.private_seen_path(self._inner._boxes.root, place.owner, disk)

    def append(self, name: str, items, done: Done) -> None:
        """APPEND (RFC 4314 §4: ``i``; flags without their right dropped, \\Seen kept privately)."""
        if split_shared(name) is None:
            self._inner.append(name, items, done)
            return
        items = list(items)

        def check():
            place = self._place(name)
            if not os.path.isdir(os.path.join(place.path, "cur")):
                raise MailboxError("NONEXISTENT", "mailbox %s does not exist" % name)
            R.require(place.rights, "APPEND", name)
            return place

        def step(place: Place, answer: Done) -> None:
            allowed = [R.flags_allowed(place.rights, i.flags) for i in items]
            seen = [any(f.lower() == "\\seen" for f in fl) for fl in allowed]
            kept = [AppendItem(i.data, tuple(f for f in fl if f.lower() != "\\seen"), i.internal_date)
                    for i, fl in zip(items, allowed)]

            def appended(result: object) -> None:
                if isinstance(result, BaseException) or not any(seen):
                    answer(result)
                    return
                uids = [u for u, s in zip(result.uids, seen) if s]
                self._serial.submit(lambda: self.mark_seen(place, result.uidvalidity, uids, True),
                                    lambda _r: answer(result))
            self.owner_account(place.owner, place.boxes).append(place.folder, kept, appended)
        self._then(check, step, done)

    def mark_seen(self, place: Place, uidvalidity: int, uids, add: bool) -> None:
        """On a worker: this user's private \\Seen of ``uids`` set or cleared."""
        path = self.seen_path(place)
        seen = A.read_seen(path, uidvalidity)
        new = (seen | set(uids)) if add else (seen - set(uids))
        if new != seen:
            A.write_seen(path, uidvalidity, new)

    def open(self, name: str, readonly: bool, done: Done) -> None:
        """SELECT / EXAMINE (RFC 4314 §4: ``r``; READ-ONLY as §5.2 maps the rights)."""
        if split_shared(name) is None:
            self._inner.open(name, readonly, done)
            return
        from protocols.backend.acl_shared import SharedFolder

        def step(place: Place, answer: Done) -> None:
            account = self.owner_account(place.owner, place.boxes)

            def opened(inner: object) -> None:
                if isinstance(inner, BaseException):
                    answer(inner)
                    return
                shared = SharedFolder(self, inner, name, place, inner.readonly)
                shared.start(answer)
            # RFC 4314 §5.2: READ-ONLY without i, e or flag rights (nor \\Recent claimed then)
            account.open(place.folder, readonly or R.read_only(place.rights), opened)
        self._then(lambda: self._checked(name, "EXAMINE" if readonly else "SELECT"), step, done)

    def close(self) -> None:
        for account in list(self._owners.values()):
            account.close()
        self._owners = {}
        self._inner.close()

    # -- RFC 4314 §3 --------------------------------------------------------------------
    def _acl_place(self, name: str, op: str) -> Place:
        """The folder of an ACL command: own (all rights, must exist) or shared (``op``)."""
        if split_shared(name) is None:
            boxes = self._inner._boxes
            if not boxes.exists(name):
                raise MailboxError("NONEXISTENT", "mailbox %s does not exist" % mb.normalize(name))
            return Place(self.user, mb.normalize(name), boxes, boxes.path_of(name), R.ALL)
        return self._checked(name, op)

    def my_rights(self, name: str, done: Done) -> None:
        """MYRIGHTS (RFC 4314 §3.5): ``done(rights)``."""
        self._serial.submit(lambda: self._acl_place(name, "MYRIGHTS").rights, done, name)

    def get_acl(self, name: str, done: Done) -> None:
        """GETACL (RFC 4314 §3.3): ``done(((identifier, rights), ...))``, the owner first."""
        def work():
            place = self._acl_place(name, "GETACL")
            return ((place.owner, R.ALL),) + tuple((A.imap_identifier(i), r) for i, r in A.read_acl(place.path))
        self._serial.submit(work, done, name)

    def set_acl(self, name: str, identifier: str, mode: str, rights: str, done: Done) -> None:
        """SETACL (RFC 4314 §3.1; ``mode`` "replace", "add", "remove") and DELETEACL
        (§3.2; ``mode`` "delete")."""
        def work() -> None:
            place = self._acl_place(name, "DELETEACL" if mode == "delete" else "SETACL")
            set_rights(place.path, place.owner, identifier, mode, rights)
        self._serial.submit(work, done, name)

    def list_rights(self, name: str, identifier: str, done: Done) -> None:
        """LISTRIGHTS (RFC 4314 §3.4): ``done((always granted, (grantable, ...)))``."""
        def work():
            place = self._acl_place(name, "LISTRIGHTS")
            try:
                ident = A.file_identifier(identifier)
            except A.AclError as e:
                raise MailboxError("CANNOT", str(e))
            if ident == "user=" + place.owner:
                return R.ALL, ()
            return "", tuple(R.ALL)
        self._serial.submit(work, done, name)


def set_rights(path: str, owner: str, identifier: str, mode: str, rights: str) -> None:
    """One SETACL / DELETEACL on a folder's dovecot-acl (the IMAP commands and
    ``mailsrv.py acl``): the owner's own rights cannot be changed."""
    try:
        ident = A.file_identifier(identifier)
        if ident.lstrip("-") in ("user=" + owner, "owner"):
            raise A.AclError("the owner %s always has every right on their folders" % owner)
        A.change_acl(path, ident, mode, rights)
    except A.AclError as e:
        raise MailboxError("CANNOT", str(e))
