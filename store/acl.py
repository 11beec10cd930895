"""Access control lists of mail folders (RFC 4314), kept as Dovecot keeps them.

Each folder's ACL is the file ``dovecot-acl`` in its directory (INBOX: the
Maildir root), one entry a line, as Dovecot's acl plugin with the "vfile"
backend reads it (doc.dovecot.org, "Access Control Lists"):

    user=bob@example.org lrs
    -user=eve@example.org w
    anyone l
    authenticated lr

Identifiers: ``user=NAME``, ``anyone``, ``authenticated``, ``owner``,
``group=NAME`` and ``group-override=NAME`` (kept, matching nobody: mailsrv
has no groups), each may be prefixed with "-" for negative rights (RFC 4314
§2).  Rights are the letters of RFC 4314 §2.1 (``lrswipkxtea``).  Blank
lines and ``#`` comments are skipped; a line that is none of these is logged
with the file name and line number and skipped, never a crash (and dropped
when the file is next written).

The file moves with its folder on RENAME (RFC 4314 §4: "SHOULD NOT change the
ACLs") and goes with it on DELETE (§4: "MUST delete the ACL").  Writes are
atomic and durable (store/fsutil.py write_atomic: tmp, fsync, rename,
directory fsync) under the file's dotlock, so two SETACLs cannot lose one.

Rights of a user (RFC 4314 §2 leaves the combination to the
implementation): the owner has every right on their own folders, always
(as Dovecot's default, and RFC 4314 §2's "the a right is always granted to
the owner"); anyone else gets the union of the entries naming them
(``user=``, ``authenticated``, ``anyone``) minus the union of the negative
entries naming them.

Private \\Seen (Dovecot's INDEXPVT, per user on a shared folder): another
user's \\Seen on a folder of an owner is the file
``mailsrv-private/<owner>/<folder dir>.seen`` in that user's own Maildir
(INBOX's folder dir is ``INBOX``): ``uidvalidity N`` then ``seen <uid set>``.
A UIDVALIDITY change empties it.  The owner's \\Seen stays in the Maildir
file names.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, List, Optional, Sequence, Set, Tuple

from store import dovecot_files as dv
from store import mailboxes as mb
from store.fsutil import fsync_dir, write_atomic
from store.users import normalize_address

log = logging.getLogger("mailsrv.acl")

ACL_FILE = "dovecot-acl"                      # Dovecot's vfile backend name
RIGHTS = "lrswipkxtea"                        # RFC 4314 §2.1, in its order
OBSOLETE = {"c": "k", "d": "xte"}             # RFC 4314 §2.1.1: RFC 2086's virtual rights
PRIVATE_DIR = "mailsrv-private"
KINDS = ("user=", "group=", "group-override=")
SPECIAL = ("anyone", "authenticated", "owner")
# Ours: an ACL file is a handful of lines; 64 KiB is thousands of entries.
MAX_ACL_FILE = 64 * 1024
# Ours: entries per folder (RFC 4314 sets none); SETACL beyond it is refused.
MAX_ENTRIES = 1000

Entry = Tuple[str, str]        # (identifier as in the file, rights letters)


class AclError(ValueError):
    """An identifier or rights string refused; the text says why."""


# -- rights strings --------------------------------------------------------------
def canonical(letters: str) -> str:
    """The rights in RFC 4314 §2.1 order, each once; obsolete c/d mapped (§2.1.1)."""
    have = set()
    for ch in letters:
        have.update(OBSOLETE.get(ch, ch))
    bad = sorted(ch for ch in have if ch not in RIGHTS)
    if bad:
        raise AclError("unknown right %r" % "".join(bad))
    return "".join(r for r in RIGHTS if r in have)


def file_identifier(ident: str) -> str:
    """An IMAP identifier (RFC 4314 §2) -> the file's form: "anyone",
    "authenticated", "owner", "$team" -> group=team, else user=NAME (an
    address normalized, so "Bob@Example.ORG" and "bob@example.org" are one)."""
    negative = ident.startswith("-")
    name = ident[1:] if negative else ident
    if not name or any(ord(c) < 0x21 or ord(c) == 0x7F for c in name):
        raise AclError("identifier %r: empty, or has spaces or control characters" % ident[:60])
    if name.lower() in SPECIAL:
        out = name.lower()
    elif name.startswith("$"):
        out = "group=" + name[1:]
    else:
        out = "user=" + _user_name(name)
    return ("-" if negative else "") + out


def _user_name(name: str) -> str:
    if "@" in name:
        try:
            return normalize_address(name)
        except ValueError as e:
            raise AclError("identifier %r: %s" % (name[:60], e))
    return name.lower()


def imap_identifier(entry_id: str) -> str:
    """The file's form -> the IMAP identifier GETACL shows."""
    negative = entry_id.startswith("-")
    name = entry_id[1:] if negative else entry_id
    if name.startswith("user="):
        name = name[5:]
    elif name.startswith("group="):
        name = "$" + name[6:]
    return ("-" if negative else "") + name


# -- the file ------------------------------------------------------------------------
def acl_path(folder_dir: str) -> str:
    return os.path.join(folder_dir, ACL_FILE)


def parse(text: str, where: str) -> List[Entry]:
    """The entries of a dovecot-acl text; bad lines logged (``where``:line) and skipped."""
    out: List[Entry] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ident, _sep, rights = line.partition(" ")
        rights = rights.strip()
        name = ident[1:] if ident.startswith("-") else ident
        known = name in SPECIAL or any(name.startswith(k) and len(name) > len(k) for k in KINDS)
        try:
            if not known:
                raise AclError("unknown identifier %r" % ident[:60])
            if not rights:
                raise AclError("no rights after %r" % ident[:60])
            if rights.startswith(":") or " :" in rights:
                rights = rights.partition(":")[0].strip()      # Dovecot's ":flags" part: not ours
            letters = canonical(rights)
        except AclError as e:
            log.warning("%s:%d: %s; line skipped", where, number, e)
            continue
        out = [(i, r) for i, r in out if i != ident]
        out.append((ident, letters))
    return out


def read_acl(folder_dir: str) -> List[Entry]:
    """The folder's entries ([] without a file)."""
    path = acl_path(folder_dir)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ACL_FILE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if len(data) > MAX_ACL_FILE:
        log.warning("%s: longer than %d octets; only the first are read", path, MAX_ACL_FILE)
        data = data[:MAX_ACL_FILE]
    return parse(data.decode("utf-8", "replace"), path)


def format_acl(entries: Sequence[Entry]) -> bytes:
    return "".join("%s %s\n" % (i, r) for i, r in entries).encode("utf-8")


def change_acl(folder_dir: str, ident: str, mode: str, letters: str = "") -> List[Entry]:
    """SETACL (``mode`` "replace", "add", "remove") or DELETEACL ("delete") of one
    identifier (the file's form), under the file's dotlock; returns the entries now.
    An identifier left with no rights is removed (RFC 4314 §3.1 allows either);
    an ACL left empty removes the file."""
    path = acl_path(folder_dir)
    with dv.Dotlock(path, dv.SUBSCRIPTIONS_STALE_S, dv.SUBSCRIPTIONS_LOCK_TIMEOUT_S) as lock:
        entries = read_acl(folder_dir)
        old = dict(entries).get(ident, "")
        if mode == "delete":
            new = ""
        elif mode == "add":
            new = canonical(old + letters)
        elif mode == "remove":
            new = "".join(r for r in old if r not in canonical(letters))
        else:
            new = canonical(letters)
        kept = [(i, r) for i, r in entries if i != ident]
        if new:
            kept.append((ident, new))
        if len(kept) > MAX_ENTRIES:
            raise AclError("ACL of %s would have more than %d entries" % (folder_dir, MAX_ENTRIES))
        if kept:
            lock.replace(format_acl(kept))
        else:
            try:
                os.unlink(path)
                fsync_dir(folder_dir)
            except FileNotFoundError:
                pass
        return kept


def copy_acl(parent_dir: str, child_dir: str) -> None:
    """RFC 4314 §4 CREATE: a new mailbox SHOULD inherit its parent's ACL."""
    entries = read_acl(parent_dir)
    if entries:
        write_atomic(acl_path(child_dir), format_acl(entries),
                     tmp="%s.tmp.%s" % (acl_path(child_dir), os.urandom(6).hex()))


# -- whose rights ---------------------------------------------------------------------
def rights_for(entries: Sequence[Entry], user: str, owner: str) -> str:
    """The rights of ``user`` on a folder of ``owner`` (module docstring)."""
    if user == owner:
        return RIGHTS
    names = {"anyone", "authenticated", "user=" + user}
    plus = set("".join(r for i, r in entries if i in names))
    minus = set("".join(r for i, r in entries if i.startswith("-") and i[1:] in names))
    return "".join(r for r in RIGHTS if r in plus and r not in minus)


def owners(mail_root: str) -> Iterator[Tuple[str, str]]:
    """(address, Maildir) of every user with a Maildir under ``DATA/mail/<domain>/<local>``."""
    try:
        domains = sorted(os.listdir(mail_root))
    except FileNotFoundError:
        return
    for domain in domains:
        if domain.startswith("."):
            continue
        try:
            locals_ = sorted(os.listdir(os.path.join(mail_root, domain)))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for local in locals_:
            root = os.path.join(mail_root, domain, local)
            if not local.startswith(".") and os.path.isdir(os.path.join(root, "cur")):
                yield "%s@%s" % (local, domain), root


def granted_folders(root: str) -> Iterator[Tuple[str, str]]:
    """(folder name, directory) of the folders of one Maildir that have an ACL file."""
    if os.path.exists(acl_path(root)):
        yield "INBOX", root
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        name = mb.name_of(entry)
        path = os.path.join(root, entry)
        if name is not None and os.path.exists(acl_path(path)) and os.path.isdir(os.path.join(path, "cur")):
            yield name, path


# -- private \Seen (INDEXPVT) -------------------------------------------------------------
def private_seen_path(user_root: str, owner: str, folder_dir_name: str) -> str:
    for part in (owner, folder_dir_name):
        if not part or "/" in part or part in (".", "..") or "\x00" in part:
            raise ValueError("private seen file: bad part %r" % part[:60])
    return os.path.join(user_root, PRIVATE_DIR, owner, folder_dir_name + ".seen")


def read_seen(path: str, uidvalidity: int) -> Set[int]:
    """The private \\Seen UIDs, empty when missing, unreadable or of another UIDVALIDITY."""
    try:
        with open(path, "rb") as f:
            text = f.read(16 * 1024 * 1024).decode("ascii", "replace")
    except FileNotFoundError:
        return set()
    lines = dict(line.partition(" ")[::2] for line in text.split("\n") if line)
    if lines.get("uidvalidity", "").strip() != str(uidvalidity):
        return set()
    try:
        return parse_uid_set(lines.get("seen", "").strip())
    except ValueError:
        log.warning("%s: bad uid set; private \\Seen taken as empty", path)
        return set()


def write_seen(path: str, uidvalidity: int, uids: Set[int]) -> None:
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    body = "uidvalidity %d\nseen %s\n" % (uidvalidity, format_uid_set(uids))
    write_atomic(path, body.encode("ascii"), tmp="%s.tmp.%s" % (path, os.urandom(6).hex()))


def parse_uid_set(text: str) -> Set[int]:
    out: Set[int] = set()
    for part in text.split(",") if text else ():
        lo, _sep, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        if a < 1 or b < a or b - a > 10_000_000:
            raise ValueError(part)
        out.update(range(a, b + 1))
    return out


def format_uid_set(uids: Set[int]) -> str:
    runs: List[str] = []
    start: Optional[int] = None
    prev = 0
    for uid in sorted(uids):
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            runs.append(str(start) if start == prev else "%d:%d" % (start, prev))
            start = prev = uid
    if start is not None:
        runs.append(str(start) if start == prev else "%d:%d" % (start, prev))
    return ",".join(runs)
