"""The IMAP extensions' calls of imapaccess.ImapAccount and OpenFolder, as
mixins (so imapaccess.py stays readable): OBJECTID (RFC 8474:
objectids.py), METADATA (RFC 5464: imapmetadata.py), PREVIEW (LAZY)
(RFC 8970: derive_read.cached), QRESYNC's expunge log (RFC 7162) and REPLACE
(RFC 8508: imapreplace.py).  Each is one worker step in the session's
order (imapaccess.Serial), as every other call of the contract."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from protocols.backend import derive_read, imapmetadata, imapreplace, objectids
from protocols.backend.imapconv import timestamp

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

    def vanished(self, modseq: int, done: Done) -> None:
        """contracts.OpenFolder.vanished: the store's expunge log (store/modseq.py)."""
        def work():
            uids, complete = self._folder.expunged_since(modseq)
            return tuple(uids), complete
        self._serial.submit(work, done, self.name)

    def replace(self, uid: int, target: str, item, done: Done) -> None:
        """REPLACE (RFC 8508 §3.4): protocols/backend/imapreplace.py."""
        if self.readonly:
            self._refuse_readonly(done)
            return
        when = timestamp(item.internal_date)
        self._serial.submit(lambda: imapreplace.replace(self, uid, target, item, when),
                            self._announce([target, self.name], done), self.name)
