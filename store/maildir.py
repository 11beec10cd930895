"""Maildir layout: where each user's mail lives, and unique file names.

Layout::

    DATA/mail/<domain>/<localpart>/{cur,new,tmp}          the INBOX
    DATA/mail/<domain>/<localpart>/.Sent/{cur,new,tmp,maildirfolder}
    ... .Drafts .Trash .Junk .Archive                    Maildir++ folders
    DATA/mail/<domain>/<localpart>/subscriptions          Dovecot's version 2 file
    DATA/mail/.deleted/<localpart>@<domain>.<time>.<rand> deleted mailboxes

This is Dovecot's Maildir++ layout ("." hierarchy separator, the
``maildirfolder`` marker file in each folder, ``subscriptions`` in Dovecot's
version 2 form), so the stdlib
``mailbox.Maildir`` and Dovecot can both open it.

Unique names follow D. J. Bernstein's maildir spec ("How are unique names
created?"): ``<time>.M<usec>P<pid>Q<n>R<random hex>.<hostname>``, the hostname
with "/" written as ``\\057`` and ":" as ``\\072``; ``,S=<size>`` is appended
(Dovecot's maildir "S=" size field) so readers get the size without a stat.

Reading and changing mail (UIDs, flags, expunges) is in store/folder.py and
store/maildrop.py; this module is only the layout.
"""

from __future__ import annotations

import binascii
import itertools
import os
import socket
import threading
import time
from typing import Dict, Optional

from store.users import normalize_address
from store.fsutil import fsync_dir
from store.dovecot_files import update_subscriptions

# Maildir++ folders every mailbox gets (RFC 6154 §2 special-use names).
DEFAULT_FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
SUBDIRS = ("cur", "new", "tmp")
DELETED_DIR = ".deleted"


_fsync_dir = fsync_dir


def _mkdir(path: str) -> bool:
    """mkdir 0700; True if created (race-safe: an existing dir is fine)."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False


def _ensure_maildir(path: str) -> None:
    """cur/new/tmp under ``path`` (which must exist); fsync what changed."""
    if any([_mkdir(os.path.join(path, sub)) for sub in SUBDIRS]):
        _fsync_dir(path)


class MailStore:
    """The Maildir tree under ``DATA/mail`` (see module docstring)."""

    def __init__(self, data_dir: str, hostname: Optional[str] = None):
        self.data_dir = data_dir
        self.mail_root = os.path.join(data_dir, "mail")
        host = hostname or socket.gethostname() or "localhost"
        # maildir spec: "/" → \057 and ":" → \072 in the hostname part.
        self.hostname = host.replace("/", "\\057").replace(":", "\\072")
        self._counter = itertools.count(1)
        self._paths: Dict[str, str] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------- paths
    def maildir_path(self, user: str) -> str:
        """``DATA/mail/<domain>/<localpart>`` (no trailing slash).

        ``user`` is normalised (store.users.normalize_address); a local part
        with "/", NUL or a leading "." is refused there (ValueError), so no
        address can escape ``DATA/mail`` or collide with a Maildir++ folder.
        """
        path = self._paths.get(user)
        if path is None:
            addr = normalize_address(user)
            local, domain = addr.split("@", 1)
            for part in (local, domain):
                if "/" in part or "\x00" in part or part.startswith(".") or part in ("", "..", "."):
                    raise ValueError("address not usable as a path")
            path = os.path.join(self.mail_root, domain, local)
            with self._lock:
                if len(self._paths) > 10000:
                    self._paths.clear()
                self._paths[user] = path
        return path

    def folder_path(self, user: str, folder: str) -> str:
        """"INBOX" (any case, RFC 3501 §5.1) → the root; "Sent" → ``.Sent``;
        "a.b" → ``.a.b`` (Maildir++ uses "." as hierarchy separator)."""
        root = self.maildir_path(user)
        if folder.upper() == "INBOX":
            return root
        parts = folder.split(".")
        if not folder or any(not p for p in parts) or "/" in folder or "\x00" in folder:
            raise ValueError("invalid folder name")
        return os.path.join(root, "." + folder)

    # ------------------------------------------------------- lifecycle
    def create_mailbox(self, user: str) -> None:
        """Create the Maildir, the Maildir++ folders and ``subscriptions``.

        Idempotent and safe against a concurrent creator.  Every new
        directory entry is fsync'd so mail delivered right after is durable.
        (The stdlib ``mailbox.Maildir(create=True)``/``add_folder`` make the
        same tree, but check-then-mkdir without fsync, so they are not used
        here; the tests open the result with ``mailbox.Maildir``.)
        """
        root = self.maildir_path(user)
        domain_dir = os.path.dirname(root)
        if not os.path.isdir(self.mail_root):
            os.makedirs(self.mail_root, 0o700, exist_ok=True)
            _fsync_dir(self.data_dir)
        if _mkdir(domain_dir):
            _fsync_dir(self.mail_root)
        if _mkdir(root):
            _fsync_dir(domain_dir)
        _ensure_maildir(root)
        created = False
        for name in DEFAULT_FOLDERS:
            fpath = os.path.join(root, "." + name)
            created = _mkdir(fpath) or created
            _ensure_maildir(fpath)
            marker = os.path.join(fpath, "maildirfolder")
            if not os.path.exists(marker):
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                _fsync_dir(fpath)
        self._write_subscriptions(root)
        if created:
            _fsync_dir(root)

    def _write_subscriptions(self, root: str) -> None:
        """Subscribe the default folders (RFC 3501 §6.3.6), keeping others; Dovecot's
        version 2 file under its dotlock (store/dovecot_files.py)."""
        update_subscriptions(root, add=DEFAULT_FOLDERS)

    def delete_mailbox(self, user: str) -> Optional[str]:
        """Move the mailbox aside to ``DATA/mail/.deleted/``; returns the new
        path, or None if there was no mailbox.  Nothing is removed."""
        root = self.maildir_path(user)
        if not os.path.isdir(root):
            return None
        aside = os.path.join(self.mail_root, DELETED_DIR)
        os.makedirs(aside, 0o700, exist_ok=True)
        local, domain = os.path.basename(root), os.path.basename(os.path.dirname(root))
        target = os.path.join(aside, "%s@%s.%d.%s" % (
            local, domain, int(time.time()), binascii.hexlify(os.urandom(4)).decode()))
        os.rename(root, target)
        _fsync_dir(os.path.dirname(root))
        _fsync_dir(aside)
        with self._lock:
            self._paths.pop(user, None)
        return target

    # ------------------------------------------------------------ names
    def unique_name(self, size: int, wire_size: Optional[int] = None) -> str:
        """A new Maildir file name with Dovecot's ``,S=<size>,W=<wire size>`` suffix.

        maildir spec: ``time.M<usec>P<pid>Q<deliveries>R<random>.<host>``;
        ``S=`` is the file's size, ``W=`` its size with CRLF line ends (what POP3
        and IMAP count), as Dovecot names them.
        """
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1000000)
        return "%d.M%dP%dQ%dR%s.%s,S=%d" % (
            sec, usec, os.getpid(), next(self._counter),
            binascii.hexlify(os.urandom(8)).decode("ascii"), self.hostname, size) + (
            ",W=%d" % wire_size if wire_size is not None else "")
