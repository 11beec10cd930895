"""IMAP METADATA (RFC 5464) for imapaccess.ImapAccount: the store's
annotations file (store/metadata.py) behind ``metadata`` / ``set_metadata``
of the contract, and what RENAME and DELETE do to a mailbox's entries.
Runs on the account's worker steps.

A mailbox's entries are filed under its MAILBOXID (protocols/backend/
objectids.py, the uidlist's GUID), the server's under ``""``: RENAME keeps
them with nothing to do, RENAME INBOX copies INBOX's to the new mailbox
(§4.1: "annotations are preserved on the INBOX"), DELETE drops them.
Without the ACL extension every mailbox the user can LIST may be annotated
(§3.3); a mailbox that does not exist is ``NO [NONEXISTENT]``.
DEVIATION(RFC 5464 §4.1): a name that is only a \\Noselect parent (no folder
of its own, store/mailboxes.py) cannot be annotated (its entries would have no
GUID to be filed under); §4.1 says SHOULD allow it.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

from protocols.backend import objectids
from protocols.backend.contracts import MailboxError
from store import mailboxes as mb
from store import metadata as md

log = logging.getLogger("mailsrv.imap.access")


def _file(account) -> md.MetadataFile:
    return md.MetadataFile(account._boxes.root)


def _owner(account, name: str) -> str:
    """The entries' owner: "" for the server, else the mailbox's MAILBOXID."""
    if name == "":
        return md.SERVER
    try:
        return objectids.mailbox_id(account._boxes.folder(name))
    except mb.NoMailbox:
        raise MailboxError("NONEXISTENT", "mailbox %s does not exist" % name[:200])


def get(account, name: str, entries: Sequence[str], depth: Optional[int]) -> Dict[str, bytes]:
    """The values of ``entries`` (lower case) and of the entries below each within
    ``depth`` levels (0: none, None: all; RFC 5464 §4.2.2); missing ones left out."""
    have = _file(account).of(_owner(account, name))
    out: Dict[str, bytes] = {}
    for entry in entries:
        if entry in have:
            out[entry] = have[entry]
        if depth != 0:
            for child in md.below(have, entry, depth):
                out[child] = have[child]
    return out


def set_entries(account, name: str, changes: Sequence[Tuple[str, Optional[bytes]]]) -> None:
    """SETMETADATA (§4.3): all or none; the limits as ``MailboxError`` codes."""
    try:
        _file(account).change(_owner(account, name), changes)
    except md.TooBig as exc:
        raise MailboxError("METADATA MAXSIZE %d" % exc.limit, str(exc))
    except md.TooMany as exc:
        raise MailboxError("METADATA TOOMANY", str(exc))


def deleting(account, name: str, delete) -> object:
    """DELETE: ``delete()``, then the mailbox's entries dropped (§4.1)."""
    try:
        owner = _owner(account, name)
    except MailboxError:
        owner = None                       # a \\Noselect parent: delete() says what to say
    result = delete()
    if owner:
        _file(account).drop(owner)
    return result


def renaming(account, old: str, new: str, rename) -> None:
    """RENAME: ``rename()``; the entries follow the GUID, RENAME INBOX copies INBOX's (§4.1)."""
    rename()
    if mb.normalize(old) == "INBOX":
        _file(account).copy(_owner(account, "INBOX"), _owner(account, new))
