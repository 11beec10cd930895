"""One user's folder tree, as Dovecot's Maildir++ layout keeps it (RFC 9051 §6.3).

The root of the user's Maildir is INBOX; every other mailbox is a directory
``.Name`` beside its cur/ new/ tmp/, with cur/ new/ tmp/ and an empty
``maildirfolder`` file of its own (Dovecot's "Maildir++" layout, also what
Courier and mutt read).  The hierarchy is flat on disk: IMAP's separator "/"
(contracts.HIERARCHY_SEP) is "." in the directory name, so "a/b" is
``.a.b``, and each level is written in modified UTF-7 (RFC 3501 §5.1.3), as
Dovecot writes it by default (``mailbox_list_utf8 = no``).

Names (checked by ``check_name``, refused with one line saying why):
"." is the separator on disk, so it is refused anywhere in a name, which also
refuses "..", a leading "." and anything that could name a control file;
empty levels ("a//b", "/" at either end), NUL and other control characters,
levels Dovecot reserves, and names whose directory name would exceed
NAME_MAX are refused too.  Finally the path is resolved and must be a direct
child of the user's Maildir (a symlink planted as ``.x`` cannot lead out).

What Dovecot does, and so we do (src/lib-storage/list/mailbox-list-maildir.c,
mailbox-list-delete.c, mailbox-uidvalidity.c, read, not copied):

* CREATE (RFC 9051 §6.3.4) makes the directory with a new UIDVALIDITY from
  the ``dovecot-uidvalidity`` file in the root (Dovecot's
  mailbox_uidvalidity_next: the last value, in hex, and an empty
  ``dovecot-uidvalidity.<hex>`` renamed forward atomically), so a folder
  deleted and made again never gets its old UIDVALIDITY back (RFC 9051
  §2.3.1.1).  Superior names are created as folders too (the RFC's SHOULD;
  Dovecot's Maildir++ leaves them implicit, \\Noselect).
* DELETE (RFC 9051 §6.3.5) renames ``.Name`` to ``.DOVECOT-TRASHED.<unique>``
  (atomic: no half-deleted folder is ever listed; Dovecot's trash name, made
  unique so two deletions cannot meet) and removes that.  Children are
  separate directories and stay: the name then lists as a \\Noselect (rev2:
  \\NonExistent) parent with \\HasChildren, which RFC 9051 §6.3.5 allows.
  Deleting such a parent, or INBOX, is refused.
* RENAME (RFC 9051 §6.3.6) renames the directory, then each child's: the
  uidlist moves with it, so UIDVALIDITY and UIDs are kept, as Dovecot does.
  RENAME INBOX makes the new folder and moves INBOX's messages into it
  (copy, fsync, then expunge: store/folder.py's MOVE); INBOX stays, empty.
* Subscriptions: Dovecot's ``subscriptions`` file, version 2
  (store/dovecot_files.py), in on-disk level form.
* SPECIAL-USE (RFC 6154): Dovecot learns it from its configuration
  (``mailbox Sent { special_use = \\Sent }``); we keep ``mailsrv-special-use``
  in the Maildir root, a line per folder: the on-disk name, TAB, the
  attributes separated by spaces.  The first login makes Sent, Drafts, Trash,
  Junk and Archive (Dovecot's example names) and writes the file; CREATE ...
  USE adds lines, RENAME moves them, DELETE drops them.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from store import dovecot_files as dv
from store.folder import Folder, forget_folder, open_folder
from store.fsutil import fsync_dir, write_atomic

SEP = "/"                       # IMAP hierarchy separator (contracts.HIERARCHY_SEP)
DISK_SEP = "."                  # Maildir++ separator in directory names
SPECIAL_USE_FILE = "mailsrv-special-use"
UIDVALIDITY_FILE = "dovecot-uidvalidity"
TRASH_DIR = ".DOVECOT-TRASHED"  # Dovecot's name for a folder being deleted
# RFC 6154 §2 attributes of real folders we keep; \\All and \\Flagged name virtual ones.
SPECIAL_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")
DEFAULT_SPECIAL = (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                   ("Junk", "\\Junk"), ("Archive", "\\Archive"))
# Linux NAME_MAX: the octets of one directory entry, ".a.b" included.
MAX_DIR_NAME = 255
# Levels Dovecot keeps for itself in a Maildir++ root.
RESERVED = {"DOVECOT-TRASHED"}
SUBDIRS = ("cur", "new", "tmp")


class BadName(ValueError):
    """A name refused (CANNOT); the text says why."""


class NoMailbox(LookupError):
    """No such mailbox (NONEXISTENT)."""


class MailboxExists(Exception):
    """The name is taken (ALREADYEXISTS)."""


class Refused(Exception):
    """The operation is not possible on this mailbox (CANNOT, or HASCHILDREN)."""

    def __init__(self, text: str, code: str = "CANNOT"):
        super().__init__(text)
        self.code = code


class BadUse(ValueError):
    """A special-use attribute we cannot give (RFC 6154 §3: USEATTR)."""


class Entry(NamedTuple):
    name: str
    special_use: Tuple[str, ...]
    subscribed: bool
    exists: bool
    has_children: bool


# -- names -------------------------------------------------------------------------
def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def normalize(name: str) -> str:
    """INBOX in any case is INBOX (RFC 9051 §5.1), as a first level too ("inbox/x")."""
    first, sep, rest = name.partition(SEP)
    return ("INBOX" if is_inbox(first) else first) + sep + rest


def check_name(name: str) -> List[str]:
    """The levels of a valid non-INBOX name, or BadName saying why."""
    if not name:
        raise BadName("empty mailbox name")
    shown = name[:60].encode("unicode_escape").decode("ascii")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadName("mailbox name %r: control characters are not allowed" % shown)
    if name.startswith(SEP) or name.endswith(SEP):
        raise BadName("mailbox name %r: %r at its start or end" % (shown, SEP))
    levels = name.split(SEP)
    for level in levels:
        if not level:
            raise BadName("mailbox name %r: empty level" % shown)
        if level in (".", ".."):
            raise BadName("mailbox name %r: %r is not a mailbox name" % (shown, level))
        if level.startswith("."):
            raise BadName("mailbox name %r: a level may not start with '.'" % shown)
        if DISK_SEP in level:
            raise BadName("mailbox name %r: '.' is not allowed (it separates levels on disk, Maildir++)" % shown)
        if level.upper() in RESERVED:
            raise BadName("mailbox name %r: reserved" % shown)
    if len(dir_name(levels).encode("ascii")) > MAX_DIR_NAME:
        raise BadName("mailbox name %r...: longer than %d octets on disk" % (shown, MAX_DIR_NAME))
    return levels


def dir_name(levels: Sequence[str]) -> str:
    return "." + DISK_SEP.join(mutf7_encode(l) for l in levels)


def mutf7_encode(text: str) -> str:
    """Modified UTF-7 (RFC 3501 §5.1.3): printable ASCII as is, "&" as "&-", the rest base64."""
    out, run = [], []
    for ch in text + "\x00":
        if ch != "\x00" and not 0x20 <= ord(ch) <= 0x7E:
            run.append(ch)
            continue
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.append("&" + b64.decode("ascii") + "-")
            run = []
        if ch == "&":
            out.append("&-")
        elif ch != "\x00":
            out.append(ch)
    return "".join(out)


def mutf7_decode(text: str) -> Optional[str]:
    """The name a directory level stands for; None when it is not modified UTF-7."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "&":
            out.append(text[i])
            i += 1
            continue
        j = text.find("-", i + 1)
        if j < 0:
            return None
        run = text[i + 1:j]
        if not run:
            out.append("&")
        else:
            try:
                raw = base64.b64decode((run.replace(",", "/") + "===")[:len(run) + (-len(run)) % 4])
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                return None
        i = j + 1
    return "".join(out)


def name_of(entry: str) -> Optional[str]:
    """``.a.b`` -> "a/b" (None when the directory name is no mailbox of ours)."""
    if not entry.startswith(".") or entry in (".", "..") or entry.startswith(TRASH_DIR):
        return None
    levels = [mutf7_decode(l) for l in entry[1:].split(DISK_SEP)]
    if any(not l for l in levels):
        return None
    return normalize(SEP.join(levels))


# -- UIDVALIDITY -------------------------------------------------------------------
def next_uidvalidity(root: str) -> int:
    """Dovecot's mailbox_uidvalidity_next over ``dovecot-uidvalidity`` in ``root``: the
    last value handed out + 1 (at least the clock, as our uidlists start), claimed by
    renaming the empty ``dovecot-uidvalidity.<hex>`` forward, atomic between processes."""
    path = os.path.join(root, UIDVALIDITY_FILE)
    for _attempt in range(10):
        marks = [int(n[len(UIDVALIDITY_FILE) + 1:], 16) for n in os.listdir(root)
                 if n.startswith(UIDVALIDITY_FILE + ".") and _is_hex(n[len(UIDVALIDITY_FILE) + 1:])]
        now = min(int(time.time()), dv.MAX_UID)
        if not marks:
            mark = "%s.%08x" % (path, now)
            try:
                os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
            except FileExistsError:
                continue
            value = now
        else:
            last = max(marks)
            value = max(last + 1, now)
            if value > dv.MAX_UID:
                value = 1
            try:
                os.rename("%s.%08x" % (path, last), "%s.%08x" % (path, value))
            except FileNotFoundError:
                continue                    # another process took it: look again
        write_atomic(path, b"%08x" % value, tmp="%s.tmp.%d" % (path, os.getpid()))
        return value
    raise OSError("cannot claim a UIDVALIDITY in %s" % root)


def _is_hex(s: str) -> bool:
    return len(s) == 8 and all(c in "0123456789abcdef" for c in s.lower())


def user_mailboxes(store, user: str) -> "Mailboxes":
    """The user's mailboxes (a store.maildir.MailStore), the Maildir made at the first
    login if the user has none yet, and the special-use folders (``Mailboxes.ensure``)."""
    root = store.maildir_path(user)
    if not os.path.isdir(os.path.join(root, "cur")):
        store.create_mailbox(user)
    boxes = Mailboxes(root)
    boxes.ensure()
    return boxes


# -- the tree ----------------------------------------------------------------------
class Mailboxes:
    """One user's mailboxes; every method blocks on the disk (run it on a worker)."""

    def __init__(self, root: str):
        self.root = root
        self._real_root = os.path.realpath(root)

    # paths
    def path_of(self, name: str) -> str:
        """The directory of a mailbox (INBOX: the root), whether or not it exists."""
        name = normalize(name)
        if name == "INBOX":
            return self.root
        path = os.path.join(self.root, dir_name(check_name(name)))
        if os.path.dirname(os.path.realpath(path)) != self._real_root:
            raise BadName("mailbox name %r leads outside the mailbox" % name[:60])
        return path

    def exists(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.path_of(name), "cur"))

    def folder(self, name: str) -> Folder:
        """The Folder of an existing mailbox, else NoMailbox."""
        if not self.exists(name):
            raise NoMailbox("mailbox %s does not exist" % normalize(name))
        return open_folder(self.path_of(name))

    # first login
    def ensure(self) -> None:
        """INBOX's directories, and at the first login (no special-use file yet) the
        special-use folders of RFC 6154 with Dovecot's names, subscribed."""
        for sub in SUBDIRS:
            os.makedirs(os.path.join(self.root, sub), 0o700, exist_ok=True)
        if os.path.exists(os.path.join(self.root, SPECIAL_USE_FILE)):
            return
        for name, _use in DEFAULT_SPECIAL:
            if not self.exists(name):
                self._make(name)
        self._change_special(lambda table: table.update((dir_name([n]), (u,)) for n, u in DEFAULT_SPECIAL))
        dv.update_subscriptions(self.root, add=[self._sub_name(n) for n, _u in DEFAULT_SPECIAL])

    # LIST
    def list(self) -> List[Entry]:
        """INBOX first, then every folder, every \\Noselect parent and every subscribed
        name that does not exist, sorted by name (RFC 9051 §6.3.9, RFC 5258)."""
        names = {"INBOX"}
        with os.scandir(self.root) as it:
            for e in it:
                name = name_of(e.name)
                if name is None or not e.is_dir() or not os.path.isdir(os.path.join(e.path, "cur")):
                    continue
                if e.is_symlink() and os.path.dirname(os.path.realpath(e.path)) != self._real_root:
                    continue              # leads out of the Maildir: never listed, never opened
                names.add(name)
        parents = {SEP.join(n.split(SEP)[:i]) for n in names for i in range(1, n.count(SEP) + 1)}
        subscribed = set(self.subscriptions())
        special = self._special()
        out = []
        for name in sorted(names | parents | subscribed, key=lambda n: (n != "INBOX", n)):
            uses = special.get(dir_name(name.split(SEP))) if name != "INBOX" else None
            out.append(Entry(name, tuple(uses or ()), name in subscribed, name in names, name in parents))
        return out

    # CREATE
    def create(self, name: str, special_use: Iterable[str] = ()) -> None:
        """RFC 9051 §6.3.4; RFC 6154 §3 USE."""
        if name.endswith(SEP) and len(name) > 1:
            name = name[:-1]          # RFC 9051 §6.3.4: a trailing separator declares a parent
        name = normalize(name)
        known = {u.lower(): u for u in SPECIAL_USES}
        uses = tuple(dict.fromkeys(known.get(u.lower(), u) for u in special_use))
        bad = [u for u in uses if u not in SPECIAL_USES]
        if bad:
            raise BadUse("special use %s is not supported (only %s)" % (" ".join(bad), " ".join(SPECIAL_USES)))
        if name == "INBOX" or self.exists(name):
            raise MailboxExists("mailbox %s already exists" % name)
        levels = check_name(name)
        if "*" in name or "%" in name:
            # RFC 9051 §5.1: LIST's wildcards in a name make it unlistable by pattern (Dovecot refuses them too)
            raise BadName("mailbox name %r: '*' and '%%' are LIST wildcards, not allowed in new names" % name[:60])
        for i in range(1, len(levels)):
            parent = SEP.join(levels[:i])
            if not self.exists(parent):
                self._make(parent)
        self._make(name)
        if uses:
            self._change_special(lambda table: table.__setitem__(dir_name(levels), uses))

    def _make(self, name: str) -> None:
        """The directory with cur/ new/ tmp/ and maildirfolder, made in a temporary name
        and renamed into place (a half-made folder is never listed), with its UIDVALIDITY."""
        path = self.path_of(name)
        tmp = os.path.join(self.root, "tmp", "mkfolder.%d.%s" % (os.getpid(), os.urandom(6).hex()))
        os.mkdir(tmp, 0o700)
        for sub in SUBDIRS:
            os.mkdir(os.path.join(tmp, sub), 0o700)
        os.close(os.open(os.path.join(tmp, "maildirfolder"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        folder = Folder(tmp)
        folder.initialize(next_uidvalidity(self.root))
        folder.sync()                 # the MODSEQ journal of a fresh folder, counting from 1
        fsync_dir(tmp)
        try:
            os.rename(tmp, path)      # fails when the name exists (non-empty directory)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.exists(name):
                raise MailboxExists("mailbox %s already exists" % name)
            raise
        forget_folder(path)
        fsync_dir(self.root)

    # DELETE
    def delete(self, name: str) -> None:
        """RFC 9051 §6.3.5, Dovecot's Maildir++ way (module docstring)."""
        name = normalize(name)
        if name == "INBOX":
            raise Refused("INBOX cannot be deleted (RFC 9051 §6.3.5)")
        path = self.path_of(name)
        if not self.exists(name):
            if any(e.name.startswith(name + SEP) for e in self.list() if e.exists):
                raise Refused("mailbox %s holds only other mailboxes; delete them first" % name, "HASCHILDREN")
            raise NoMailbox("mailbox %s does not exist" % name)
        for left in [e for e in os.listdir(self.root) if e.startswith(TRASH_DIR)]:
            shutil.rmtree(os.path.join(self.root, left), ignore_errors=True)   # a deletion that died
        trash = os.path.join(self.root, "%s.%d.%s" % (TRASH_DIR, os.getpid(), os.urandom(6).hex()))
        os.rename(path, trash)
        fsync_dir(self.root)
        forget_folder(path)
        shutil.rmtree(trash, ignore_errors=True)
        self._change_special(lambda table: table.pop(os.path.basename(path), None))

    # RENAME
    def rename(self, old: str, new: str) -> None:
        """RFC 9051 §6.3.6: children move too; INBOX's messages move, INBOX stays."""
        old, new = normalize(old), normalize(new)
        if new == "INBOX" or self.exists(new):
            raise MailboxExists("mailbox %s already exists" % new)
        new_levels = check_name(new)
        if old == "INBOX":
            self._rename_inbox(new)
            return
        old_levels = check_name(old)
        if new_levels[:len(old_levels)] == old_levels:
            raise Refused("mailbox %s cannot be moved under itself" % old)
        children = [e.name for e in self.list() if e.exists and e.name.startswith(old + SEP)]
        if not self.exists(old) and not children:
            raise NoMailbox("mailbox %s does not exist" % old)
        for i in range(1, len(new_levels)):
            parent = SEP.join(new_levels[:i])
            if not self.exists(parent):
                self._make(parent)
        moves = ([(old, new)] if self.exists(old) else []) + [(c, new + c[len(old):]) for c in children]
        done = []
        for src, dst in moves:
            src_path, dst_path = self.path_of(src), self.path_of(dst)
            if os.path.lexists(dst_path):
                continue              # Dovecot: a child whose new name is taken stays where it was
            os.rename(src_path, dst_path)
            forget_folder(src_path)
            done.append((os.path.basename(src_path), os.path.basename(dst_path), src, dst))
        fsync_dir(self.root)

        def move_uses(table):
            for src_dir, dst_dir, _s, _d in done:
                uses = table.pop(src_dir, None)
                if uses:
                    table[dst_dir] = uses
        self._change_special(move_uses)
        renamed = {self._sub_name(s): self._sub_name(d) for _a, _b, s, d in done}
        subs = [s for s in self.subscriptions_raw() if s in renamed]
        if subs:
            dv.update_subscriptions(self.root, add=[renamed[s] for s in subs], remove=subs)

    def _rename_inbox(self, new: str) -> None:
        self.create(new)
        inbox = open_folder(self.root)
        uids = [m.uid for m in inbox.sync().snapshot.messages]
        if uids:
            inbox.move(uids, self.folder(new))

    # SUBSCRIBE / UNSUBSCRIBE
    def _sub_name(self, name: str) -> str:
        """The subscriptions file's form: on-disk levels joined by "." (the file's levels)."""
        name = normalize(name)
        return name if name == "INBOX" else DISK_SEP.join(mutf7_encode(l) for l in check_name(name))

    def subscriptions_raw(self) -> List[str]:
        return dv.read_subscriptions(self.root)

    def subscriptions(self) -> List[str]:
        out = []
        for raw in self.subscriptions_raw():
            name = "INBOX" if is_inbox(raw) else name_of("." + raw)
            if name is not None:
                out.append(name)
        return out

    def subscribe(self, name: str, subscribed: bool) -> None:
        """RFC 9051 §6.3.7: a name that does not exist may be subscribed; §6.3.8."""
        sub = self._sub_name(name)
        if subscribed:
            dv.update_subscriptions(self.root, add=[sub])
        else:
            dv.update_subscriptions(self.root, remove=[sub])

    # SPECIAL-USE file
    def _special(self) -> Dict[str, Tuple[str, ...]]:
        """On-disk name -> attributes (``mailsrv-special-use``; missing: Dovecot's defaults)."""
        try:
            with open(os.path.join(self.root, SPECIAL_USE_FILE), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return dict((dir_name([n]), (u,)) for n, u in DEFAULT_SPECIAL)
        table = {}
        for line in text.split("\n"):
            entry, sep, uses = line.partition("\t")
            if sep and entry.startswith("."):
                table[entry] = tuple(u for u in uses.split() if u in SPECIAL_USES)
        return table

    def _change_special(self, change) -> None:
        """Read, ``change(table)``, write back, under the file's dotlock (two sessions of
        one user may CREATE ... USE at once), as the subscriptions file is changed."""
        path = os.path.join(self.root, SPECIAL_USE_FILE)
        with dv.Dotlock(path, dv.SUBSCRIPTIONS_STALE_S, dv.SUBSCRIPTIONS_LOCK_TIMEOUT_S) as lock:
            table = self._special()
            before = dict(table)
            change(table)
            if table != before or not os.path.exists(path):
                body = "".join("%s\t%s\n" % (k, " ".join(v)) for k, v in sorted(table.items()) if v)
                lock.replace(body.encode("utf-8"))
