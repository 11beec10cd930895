"""`mailsrv.py acl set|get|delete`: an administrator's RFC 4314 ACLs from the command line.

    mailsrv.py acl set OWNER FOLDER GRANTEE RIGHTS     # RIGHTS "lrs", "+w", "-- -w"
    mailsrv.py acl get OWNER FOLDER
    mailsrv.py acl delete OWNER FOLDER GRANTEE

The same change as the IMAP commands SETACL / GETACL / DELETEACL of the owner
(protocols/backend/acl.py ``set_rights``, store/acl.py): the folder's
``dovecot-acl`` written atomically under its lock, so a running server sees
it at the next command (rights are read for each operation).  GRANTEE is an
address, ``anyone``, ``authenticated``, or one of them with "-" in front for
negative rights (RFC 4314 §2).  A RIGHTS or GRANTEE starting with "-" goes
after ``--``.  Every error is one line naming the owner, folder or value.
"""

from __future__ import annotations

import argparse
import os
import sys

from protocols.backend.acl import set_rights
from protocols.backend.contracts import MailboxError
from store import acl as A
from store import mailboxes as mb
from store.maildir import MailStore
from store.users import normalize_address


def acl_parser(sub, common: argparse.ArgumentParser) -> None:
    """The `acl` subcommands (mailsrv.py's parser; ``run`` is called by admin_main)."""
    acl = sub.add_parser("acl", help="acl set OWNER FOLDER GRANTEE RIGHTS | get OWNER FOLDER | "
                         "delete OWNER FOLDER GRANTEE: shared folders (RFC 4314)").add_subparsers(
                             dest="action", required=True)
    for action, extra in (("set", ("grantee", "rights")), ("get", ()), ("delete", ("grantee",))):
        p = acl.add_parser(action, parents=[common])
        for name in ("owner", "folder") + extra:
            p.add_argument(name)
        p.set_defaults(run=acl_main)


def _folder_dir(data_dir: str, owner: str, folder: str):
    """(normalized owner, folder directory); ValueError naming what is wrong."""
    try:
        owner = normalize_address(owner)
    except ValueError as e:
        raise ValueError("owner %r: %s" % (owner, e))
    root = MailStore(data_dir).maildir_path(owner)
    if not os.path.isdir(os.path.join(root, "cur")):
        raise ValueError("owner %s has no mailbox yet (%s)" % (owner, root))
    boxes = mb.Mailboxes(root)
    try:
        if not boxes.exists(folder):
            raise ValueError("folder %s of %s does not exist" % (folder, owner))
        return owner, boxes.path_of(folder)
    except mb.BadName as e:
        raise ValueError(str(e))


def acl_main(cfg, args) -> int:
    """Run one `acl` subcommand: 0, or 2 with one line on stderr."""
    try:
        owner, path = _folder_dir(cfg.data_dir, args.owner, args.folder)
        if args.action == "get":
            print("%s %s" % (owner, A.RIGHTS))
            for ident, rights in A.read_acl(path):
                print("%s %s" % (A.imap_identifier(ident), rights))
            return 0
        if args.action == "delete":
            set_rights(path, owner, args.grantee, "delete", "")
        else:
            text = args.rights
            mode = {"+": "add", "-": "remove"}.get(text[:1], "replace")
            set_rights(path, owner, args.grantee, mode, text if mode == "replace" else text[1:])
    except (ValueError, OSError) as e:
        print("mailsrv: acl %s: %s" % (args.action, e), file=sys.stderr)
        return 2
    except MailboxError as e:
        print("mailsrv: acl %s: %s %s: %s" % (args.action, owner, args.folder, e.text), file=sys.stderr)
        return 2
    return 0
