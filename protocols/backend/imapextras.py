"""The IMAP extensions' calls of imapaccess.ImapAccount and OpenFolder, as
mixins (so imapaccess.py stays readable): OBJECTID (RFC 8474:
objectids.py), METADATA (RFC 5464: imapmetadata.py) and PREVIEW (LAZY)
(RFC 8970: derive_read.cached).  Each is one worker step in the session's
order (imapaccess.Serial), as every other call of the contract."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from protocols.backend import derive_read, imapmetadata, objectids

Done = Callable[[object], None]


class AccountExtras:
    """contracts.ImapAccount's optional mailbox_id, metadata and set_metadata."""

    def mailbox_id(self, name: str, done: Done) -> None:
        """OBJECTID MAILBOXID (RFC 8474 §4.1)."""
        self._serial.submit(lambda: objectids.mailbox_id(self._boxes.folder(name)), done, name)

    def metadata(self, name: str, entries: Sequence[str], depth: Optional[int], done: Done) -> None:
        """GETMETADATA (RFC 5464 §4.2)."""
        entries = list(entries)
        self._serial.submit(lambda: imapmetadata.get(self, name, entries, depth), done, name)

    def set_metadata(self, name: str, changes, done: Done) -> None:
        """SETMETADATA (RFC 5464 §4.3)."""
        changes = list(changes)
        self._serial.submit(lambda: imapmetadata.set_entries(self, name, changes), done, name)


class FolderExtras:
    """contracts.OpenFolder's optional email_ids and cached."""

    def email_ids(self, uids: Sequence[int], done: Done) -> None:
        """OBJECTID EMAILID (RFC 8474 §5.1)."""
        uids = list(uids)
        self._serial.submit(lambda: objectids.email_ids(self._folder, uids), done, self.name)

    def cached(self, uids: Sequence[int], kind: str, done: Done) -> None:
        """The folder cache's entries alone, no message read (RFC 8970 PREVIEW (LAZY))."""
        uids = list(uids)
        self._serial.submit(lambda: derive_read.cached(self._folder, uids, kind), done, self.name)
