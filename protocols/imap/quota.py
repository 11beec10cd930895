"""IMAP QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT and SETQUOTA, with the
resources STORAGE (§5.1, units of 1024 octets) and MESSAGE (§5.2).

Each user has one quota root, named "" (as Dovecot's default "User quota"
root is one per user): every mailbox of the user is under it.  The limits are
the administrator's (``mailsrv.py user quota``, store/quota.py); SETQUOTA is
refused with NO [NOPERM] (§4.1.3: QUOTASET is not announced, the server may
refuse to change a limit).  A resource without a limit is left out of the
QUOTA response (§4.2.1: "Resources not named in the list are not limited").

The handlers are a mixin of protocols/imap/session.py's ImapSession (its
COMMANDS table names them); the usage comes
from ``ImapAccount.quota`` (protocols/backend/contracts.py).  OVERQUOTA on
APPEND / COPY / MOVE (§4.3.1) is the backend's MailboxError code, answered by
the session like every other response code.

STATUS DELETED and DELETED-STORAGE (§4.1.4) are in protocols/imap/args.py
and listing.py; DELETED-STORAGE is the sum of the RFC822.SIZE of the
\\Deleted messages, which §4.1.4 allows.
"""

from __future__ import annotations

from protocols.imap import args as A
from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.session_base import NO, OK, check_name

ROOT = ""                  # the user's one quota root (§3.2)
QUOTA_CAPABILITIES = [b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"]   # §5: one per resource


def quota_response(state) -> bytes:
    """``* QUOTA "" (STORAGE used limit MESSAGE used limit)`` (§4.2.1): limited resources only."""
    parts = []
    if state.storage_limit:
        parts.append(b"STORAGE %d %d" % (state.storage_used, state.storage_limit))
    if state.messages_limit:
        parts.append(b"MESSAGE %d %d" % (state.messages_used, state.messages_limit))
    return wire.untagged(b"QUOTA " + wire.quoted(ROOT.encode()) + b" (" + b" ".join(parts) + b")")


def _root_arg(buf) -> str:
    """SP quota-root-name (astring, §7)."""
    raw, rest = g.astring(g.sp(buf))
    g.end(rest)
    return bytes(raw).decode("utf-8", "replace")


class QuotaCommands:
    """GETQUOTA, GETQUOTAROOT, SETQUOTA (see the module docstring)."""

    def _cmd_getquota(self, head):
        """GETQUOTA quota-root (RFC 9208 §4.1.1)."""
        root = _root_arg(head.rest)
        if root != ROOT:
            return (NO, "No such quota root %s" % root[:100], wire.response_code("NONEXISTENT"))
        state = yield from self._ask(self._account.quota)
        self._emit(quota_response(state))
        return (OK, "GETQUOTA completed", None)

    def _cmd_getquotaroot(self, head):
        """GETQUOTAROOT mailbox (RFC 9208 §4.1.2): the mailbox need not exist."""
        name = A.mailbox_only(head.rest, self.utf8)
        check_name(name)
        state = yield from self._ask(self._account.quota)
        self._emit(wire.untagged(b"QUOTAROOT " + wire.mailbox(name, self.utf8) + b" " + wire.quoted(ROOT.encode())))
        self._emit(quota_response(state))
        return (OK, "GETQUOTAROOT completed", None)

    def _cmd_setquota(self, head):
        """SETQUOTA (RFC 9208 §4.1.3): limits are set by the administrator only."""
        root = _setquota_root(head.rest)
        return (NO, "Quota of %s is set by the administrator (mailsrv.py user quota)"
                % (root[:100] or '""'), wire.response_code("NOPERM"))


def _setquota_root(buf) -> str:
    """quota-root-name SP setquota-list (§7), checked so a bad command is BAD."""
    raw, rest = g.astring(g.sp(buf))

    def resource(b):
        name, b = g.atom(b)
        limit, b = g.number64(g.sp(b))
        return (name, limit), b
    _items, rest = g.paren_list(g.sp(rest), resource)
    g.end(rest)
    return bytes(raw).decode("utf-8", "replace")
