"""`mailsrv.py user show ADDRESS`: what the store holds for one user.

Read-only: the users and aliases files (store/users.py) and the user's
Maildir (store/maildir.py layout).  Message counts and sizes are read from
``new/`` and ``cur/`` of the INBOX and of each Maildir++ folder (a ``.Name``
directory with a ``cur/``); the size is the stored size (LF line ends, see
store/deliver.py), from ``stat``.

Last login is not shown: recording it would need a write to disk (and an
fsync) at every login, which the server deliberately does not do; the log
has every login (``auth ok`` at DEBUG, POP3 session lines at INFO).
"""

from __future__ import annotations

import os
from typing import List, Tuple

from store.users import AliasDB, UserDB, normalize_address

_MAIL_SUBDIRS = ("new", "cur")      # Maildir: delivered messages live here; tmp/ is in flight


def _folder_stats(path: str) -> Tuple[int, int]:
    """(message count, total octets) of one Maildir folder."""
    count = size = 0
    for sub in _MAIL_SUBDIRS:
        try:
            entries = list(os.scandir(os.path.join(path, sub)))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
                    count += 1
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue            # removed meanwhile (a POP3 DELE)
    return count, size


def _folders(root: str) -> List[Tuple[str, str]]:
    """[(name, path)]: INBOX, then the Maildir++ folders sorted."""
    out = [("INBOX", root)]
    try:
        names = sorted(e.name for e in os.scandir(root)
                       if e.is_dir() and e.name.startswith(".") and e.name not in (".", ".."))
    except OSError:
        return out
    for name in names:
        if os.path.isdir(os.path.join(root, name, "cur")):
            out.append((name[1:], os.path.join(root, name)))
    return out


def show_user(users: UserDB, aliases: AliasDB, store, address: str) -> List[str]:
    """Lines describing ``address``; ValueError if it is not a user."""
    addr = users.canonical(address)
    if addr is None:
        raise ValueError("no such user: %s" % normalize_address(address))
    root = store.maildir_path(addr)
    lines = ["user:       %s" % addr,
             "domain:     %s" % addr.split("@", 1)[1],
             "logins:     %s" % ("DISABLED (user enable %s)" % addr if users.is_disabled(addr)
                                 else "enabled")]
    if not os.path.isdir(root):
        lines.append("maildir:    %s (not created yet: made at the first delivery)" % root)
    else:
        lines.append("maildir:    %s" % root)
        total_n = total_size = 0
        for name, path in _folders(root):
            n, size = _folder_stats(path)
            total_n, total_size = total_n + n, total_size + size
            lines.append("  %-10s %6d message(s) %12d octets" % (name, n, size))
        lines.append("  %-10s %6d message(s) %12d octets" % ("total", total_n, total_size))
    pointing = aliases.pointing_at(addr)
    lines.append("aliases:    %s" % (", ".join(pointing) if pointing else "none point here"))
    lines.append("last login: not recorded (it would cost a disk write per login; see the log)")
    return lines
