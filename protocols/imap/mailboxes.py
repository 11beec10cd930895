"""IMAP authenticated state (RFC 9051 §6.3): SELECT, EXAMINE, CREATE, DELETE,
RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, NAMESPACE, STATUS, APPEND and
IDLE, a mixin of protocols/imap/session.py's ImapSession.  Every mailbox
operation is one call to the user's ImapAccount (the contract of
protocols/backend/contracts.py); names are checked here first (issue 10,
Security) and again by the backend.
"""

from __future__ import annotations

import logging

from protocols.backend.contracts import SHARED_PREFIX, AppendItem
from protocols.imap import args as A
from protocols.imap import listing, wire
from protocols.imap.session_base import BAD, NO, OK, Refusal, Reply, check_name
from protocols.imap.view import SYSTEM_FLAGS, FolderView

log = logging.getLogger("mailsrv.imap")


def check_flags(flags) -> None:
    """RFC 9051 §2.3.2: a backslash flag must be a system flag (\\Recent is
    refused by the grammar already)."""
    for f in flags:
        if f.startswith("\\") and f not in SYSTEM_FLAGS:
            raise Refusal(BAD, "Unknown system flag %s" % f[:40])


class MailboxCommands:
    """The authenticated-state handlers (see the module docstring)."""

    # -- SELECT / EXAMINE (RFC 9051 §6.3.2, §6.3.3) ----------------------------

    def _cmd_select(self, head):
        return (yield from self._open(head, readonly=False))

    def _cmd_examine(self, head):
        return (yield from self._open(head, readonly=True))

    def _open(self, head, readonly: bool):
        sel = A.select(head.rest, self.utf8)
        self._select_params(sel)            # RFC 7162 §3.1.8, §3.2.5 (condstore.py)
        if self._folder is not None:
            # RFC 9051 §6.3.2: the old mailbox is closed first, even if this fails
            self._close_folder()
            self.state = type(self.state).AUTHENTICATED
            # RFC 7162 §3.2.11: a server offering CONDSTORE says CLOSED, rev1 too
            self._emit(wire.status_line(None, b"OK", "Previous mailbox closed",
                                        wire.response_code("CLOSED")))
        check_name(sel.mailbox)
        folder = yield from self._ask(self._account.open, sel.mailbox, readonly)
        state = folder.state()
        self._folder, self._dirty = folder, False
        self._view = view = FolderView(state, self.rev2, folder.readonly)
        view.allows = getattr(folder, "allows", view.allows)     # RFC 4314 §5.1.1 PERMANENTFLAGS
        self._unwatch = folder.watch(self._on_change)
        self.state = type(self.state).SELECTED
        self._emit(view.flags_response() + wire.untagged(b"%d EXISTS" % len(view)))
        if not self.rev2:   # RFC 3501 §6.3.1: RECENT and the first unseen
            self._emit(wire.untagged(b"%d RECENT" % len(view.recent)))
            unseen = next((i + 1 for i, m in enumerate(state.messages) if "\\Seen" not in m.flags), None)
            if unseen is not None and not self.uidonly:    # RFC 9586 §3: no message numbers
                self._emit(wire.status_line(None, b"OK", "First unseen",
                                            wire.response_code("UNSEEN", unseen)))
        self._emit(wire.status_line(None, b"OK", "UIDs valid",
                                    wire.response_code("UIDVALIDITY", state.uidvalidity)))
        self._emit(wire.status_line(None, b"OK", "Predicted next UID",
                                    wire.response_code("UIDNEXT", state.uidnext)))
        self._emit_mailbox_id(state)       # RFC 8474 §4.2 (objectid.py)
        self._emit(self._select_modseq())   # RFC 7162 §3.1.2.1 HIGHESTMODSEQ
        if self.rev2:   # RFC 9051 §6.3.2: a LIST response with the mailbox name
            self._emit(wire.untagged(b'LIST () "/" ' + wire.mailbox(folder.name, self.utf8)))
        yield from self._qresync_select(sel, state)     # RFC 7162 §3.2.5.1
        code = "READ-ONLY" if folder.readonly else "READ-WRITE"
        return (OK, "%s completed" % head.name, wire.response_code(code))

    # -- names (RFC 9051 §6.3.4 - §6.3.8) --------------------------------------

    def _cmd_create(self, head):
        """RFC 9051 §6.3.4 (a trailing separator is dropped), RFC 6154 §3 USE."""
        name, uses = A.create(head.rest, self.utf8)
        name = name.rstrip("/") or name
        if name.upper() == "INBOX":
            return (NO, "INBOX exists", wire.response_code("ALREADYEXISTS"))
        check_name(name, creating=True)
        yield from self._ask(self._account.create, name, uses)
        code = yield from self._created_mailbox_id(name)     # RFC 8474 §4.1 (objectid.py)
        return (OK, "CREATE completed", code)

    def _cmd_delete(self, head):
        name = A.mailbox_only(head.rest, self.utf8)
        if name == "INBOX":
            return (NO, "INBOX cannot be deleted", wire.response_code("CANNOT"))
        check_name(name)
        yield from self._ask(self._account.delete, name)
        return None

    def _cmd_rename(self, head):
        """RFC 9051 §6.3.6: renaming INBOX moves its messages (the backend's work)."""
        old, new = A.two_mailboxes(head.rest, self.utf8)
        check_name(old)
        new = new.rstrip("/") or new
        if new.upper() == "INBOX":
            return (NO, "INBOX exists", wire.response_code("ALREADYEXISTS"))
        check_name(new, creating=True)
        yield from self._ask(self._account.rename, old, new)
        return None

    def _cmd_subscribe(self, head):
        return (yield from self._subscribe(head, True))

    def _cmd_unsubscribe(self, head):
        return (yield from self._subscribe(head, False))

    def _subscribe(self, head, subscribed: bool):
        name = A.mailbox_only(head.rest, self.utf8)
        check_name(name)
        yield from self._ask(self._account.subscribe, name, subscribed)
        return None

    # -- LIST, LSUB, NAMESPACE, STATUS -----------------------------------------

    def _cmd_list(self, head):
        """RFC 9051 §6.3.9, RFC 5258, RFC 5819, RFC 6154."""
        la = A.list_args(head.rest, self.utf8)
        if not la.extended and la.patterns == ("",):
            # RFC 9051 §6.3.9: an empty pattern asks for the separator and root
            self._emit(wire.untagged(b'LIST (\\Noselect) "/" ""'))
            return None
        entries = yield from self._ask(self._account.list)
        for line, entry in listing.list_rows(entries, la, self.rev2, self.utf8):
            self._emit(line)
            if "STATUS" in la.returns and entry is not None:
                yield from self._status_of(entry.name, la.status, quiet=True)
            if la.metadata and entry is not None:
                yield from self._list_metadata(entry.name, la.metadata)     # RFC 9590 §3 (metadata.py)
        return None

    def _cmd_lsub(self, head):
        """RFC 3501 §6.3.9 (rev1; kept for rev2 clients too, RFC 9051 Appendix E)."""
        reference, pattern = A.lsub(head.rest, self.utf8)
        entries = yield from self._ask(self._account.list)
        for line in listing.lsub_rows(entries, reference, pattern, self.utf8):
            self._emit(line)
        return None

    def _cmd_namespace(self, head) -> Reply:
        """RFC 2342 §5, RFC 9051 §6.3.10: the personal namespace and, with ACLs, the
        other users' one, ``shared/<owner>/`` (protocols/backend/acl.py; Dovecot's
        ``type = shared`` namespace answers in the same place)."""
        A.no_args(head.rest)
        if getattr(self._account, "my_rights", None) is not None:
            others = b"((" + wire.quoted(SHARED_PREFIX.encode()) + b' "/"))'
        else:
            others = b"NIL"
        self._emit(wire.untagged(b'NAMESPACE (("" "/")) ' + others + b" NIL"))
        return None

    def _cmd_status(self, head):
        """RFC 9051 §6.3.11 (RFC 3501 §6.3.10: RECENT; RFC 8438: SIZE)."""
        name, items = A.status(head.rest, self.utf8)
        check_name(name)
        if "HIGHESTMODSEQ" in items:
            self._condstore_on()            # RFC 7162 §3.1: a CONDSTORE enabling command
        yield from self._status_of(name, items, quiet=False)
        return None

    def _status_of(self, name: str, items, quiet: bool):
        """One STATUS response; with ``quiet`` (LIST-STATUS) a failure is skipped."""
        st = yield lambda done: self._account.status(name, done)
        if isinstance(st, BaseException):
            if quiet:
                return
            yield from self._ask(lambda done: done(st))
        self._emit(listing.status_response(name, st, items, self.utf8, self.config.max_append))

    # -- APPEND (RFC 9051 §6.3.12, RFC 3502, RFC 4315 §3) ------------------------

    def _cmd_append(self, head):
        name, messages = A.append(head.rest, self.utf8)
        check_name(name)
        messages = yield from self._catenated(messages)     # RFC 4469 CATENATE (catenate.py)
        items = []
        for m in messages:
            check_flags(m.flags)
            if not m.data:
                return (NO, "Empty message refused", wire.response_code("CANNOT"))
            items.append(AppendItem(m.data, tuple(m.flags), m.date_time))
        result = yield from self._ask(self._account.append, name, items)
        self.counts["appended"] += len(items)
        if self._folder is not None and self._folder.name == name:
            self._dirty = True   # RFC 9051 §5.2: EXISTS before the tagged OK
        code = wire.response_code("APPENDUID", b"%d %s" % (result.uidvalidity, wire.sequence_set(result.uids)))
        return (OK, "APPEND completed", code)

    # -- IDLE (RFC 2177, RFC 9051 §6.3.13) -------------------------------------------

    def _cmd_idle(self, head):
        """``+ idling``; updates as they come (the watch callback); DONE ends it."""
        A.no_args(head.rest)
        self._emit(wire.continuation(b"idling"))
        self._idling = True
        self._idle_since = self.ctx.clock()
        if self._folder is not None:
            self._emit(self._view.flush(True))
            if self._dirty:
                self._idle_refresh()
        line = yield self._wait_line
        self._idling = False
        if line is None or line.strip().upper() != b"DONE":
            return (BAD, "Expected DONE", None)
        return (OK, "IDLE terminated", None)
