"""REPLACE and UID REPLACE (RFC 8508), a mixin of protocols/imap/session.py's
ImapSession; the store's side is protocols/backend/imapreplace.py.

``REPLACE 4 Drafts (\\Seen \\Draft) {312}`` appends the new message (CATENATE
too, §4.2) to the named mailbox, which need not be the selected one (§3.4),
then removes message 4 of the selected mailbox, in one backend step
(``OpenFolder.replace``): the new message is durable before the old one goes,
so a failure in between leaves both, never neither.  The responses follow
§3.2 and §4.3: ``* OK [APPENDUID v uid] Replacement Message ready`` first,
then ``* n EXISTS`` when the new message is in the selected mailbox, then the
old message's EXPUNGE (after every step succeeded, §3.4), then the tagged OK.
A refusal (TOOBIG, OVERQUOTA, TRYCREATE, BADURL, a read-only mailbox) leaves
the old message untouched; if only the removal failed, the tagged reply is
``NO [UNAVAILABLE]`` after the untagged APPENDUID.
"""

from __future__ import annotations

from protocols.backend.contracts import AppendItem
from protocols.imap import args as A
from protocols.imap import wire
from protocols.imap.mailboxes import check_flags
from protocols.imap.session_base import NO, OK, check_name
from protocols.imap.view import BadSequence


class ReplaceCommands:
    """REPLACE / UID REPLACE (see the module docstring)."""

    def _cmd_replace(self, head):
        """RFC 8508 §3.2 (REPLACE), §3.3 (UID REPLACE), selected state only (§3.5)."""
        number, name, message = A.replace(head.rest, self.utf8)
        check_name(name)
        check_flags(message.flags)
        view = self._view
        if head.uid:
            uid = number
            if not view.has(uid) or uid in view.gone:
                return (NO, "No message with UID %d" % uid, wire.response_code("NONEXISTENT"))
        else:
            if number > len(view):
                raise BadSequence("no message %d (%d exist)" % (number, len(view)))
            uid = view.uids[number - 1]
        if self._folder.readonly:
            return (NO, "Mailbox is read-only", wire.response_code("READ-ONLY"))
        (message,) = yield from self._catenated([message])      # RFC 8508 §4.2
        if not message.data:
            return (NO, "Empty message refused", wire.response_code("CANNOT"))
        item = AppendItem(message.data, tuple(message.flags), message.date_time)
        out = yield from self._ask(self._folder.replace, uid, name, item)
        self.counts["appended"] += 1
        result = out.appended
        self._emit(wire.status_line(None, b"OK", "Replacement Message ready", wire.response_code(
            "APPENDUID", b"%d %s" % (result.uidvalidity, wire.sequence_set(result.uids)))))   # §4.3
        if name == self._folder.name:       # §3.2: EXISTS for the new message before the EXPUNGE
            folder = self._folder
            changes = yield folder.refresh
            self._took_changes(folder, changes)
            self._emit(self._view.flush(False))
        if out.failed:
            return (NO, "Replacement stored, but %s; try again" % out.failed, wire.response_code("UNAVAILABLE"))
        view.expunged(out.expunged)
        self.counts["expunged"] += len(out.expunged)
        return (OK, "REPLACE completed", None)
