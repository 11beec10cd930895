"""IMAP ACL (RFC 4314 §3): SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS,
a mixin of protocols/imap/session.py's ImapSession.

Grammar and answers only: the rights a command needs are checked by the
backend (protocols/backend/acl_rights.py through ImapAccount's ACL methods,
contracts.py), which answers NO [NOPERM], or NO [NONEXISTENT] for a mailbox
the user may not look up (RFC 4314 §6).

Identifiers (§3: SASLprep'ed; an empty result is BAD): mailsrv's user names
are e-mail addresses (ASCII, compared without case), so the preparation is
that of the backend's address normalisation; control characters and spaces
are BAD here.  Rights (§3.1): an unknown right is BAD ("The q right is not
supported"), as are upper-case letters and digits (we define no
site-specific rights).  The obsolete rights c and d of RFC 2086 are taken as
k and x, t, e (§2.1.1).

DEVIATION(RFC 4314 §2.1.1): ACL, MYRIGHTS and LISTRIGHTS answers list the
real rights only, never the virtual c and d (as Dovecot does).
"""

from __future__ import annotations

from protocols.backend.contracts import ACL_RIGHTS
from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.session_base import BAD, NO, OK, Refusal, check_name

ACL_CAPABILITIES = [b"ACL", b"RIGHTS=texk"]     # RFC 4314 §2, §5.1.1 (as Dovecot announces)
OBSOLETE = "cd"                                  # RFC 4314 §2.1.1


def _astring(buf):
    raw, rest = g.astring(g.sp(buf))
    return bytes(raw).decode("utf-8", "replace"), rest


def acl_args(buf, utf8: bool, count: int):
    """mailbox *(SP astring) with ``count`` astrings after it (RFC 4314 §7)."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    out = [name]
    for _ in range(count):
        value, rest = _astring(rest)
        out.append(value)
    g.end(rest)
    return out


def check_identifier(ident: str) -> str:
    """RFC 4314 §3: an identifier that prepares to nothing, or holds controls or
    spaces, is BAD."""
    if not ident.lstrip("-") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in ident):
        raise Refusal(BAD, "Invalid identifier %r" % ident[:60])
    return ident


def mod_rights(text: str):
    """mod-rights (RFC 4314 §3.1, §7): ("replace" | "add" | "remove", rights)."""
    mode = {"+": "add", "-": "remove"}.get(text[:1], "replace")
    letters = text[1:] if mode != "replace" else text
    for ch in letters:
        if ch.isupper():
            raise Refusal(BAD, "Uppercase rights are not allowed")
        if ch not in ACL_RIGHTS and ch not in OBSOLETE:
            raise Refusal(BAD, "The %s right is not supported" % ch)
    return mode, letters


def _rights(letters: str) -> bytes:
    return wire.astring(letters.encode("ascii")) if letters else b'""'


class AclCommands:
    """SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS (RFC 4314 §3)."""

    def _acl(self, method: str):
        """The account's ACL method (contracts.ImapAccount, optional there)."""
        found = getattr(self._account, method, None)
        if found is None:
            raise Refusal(NO, "ACLs are not available here", "CANNOT")
        return found

    def _cmd_setacl(self, head):
        """SETACL mailbox identifier mod-rights (RFC 4314 §3.1)."""
        name, ident, text = acl_args(head.rest, self.utf8, 2)
        check_name(name)
        mode, letters = mod_rights(text)
        yield from self._ask(self._acl("set_acl"), name, check_identifier(ident), mode, letters)
        return (OK, "Setacl complete", None)

    def _cmd_deleteacl(self, head):
        """DELETEACL mailbox identifier (RFC 4314 §3.2)."""
        name, ident = acl_args(head.rest, self.utf8, 1)
        check_name(name)
        yield from self._ask(self._acl("set_acl"), name, check_identifier(ident), "delete", "")
        return (OK, "Deleteacl complete", None)

    def _cmd_getacl(self, head):
        """GETACL mailbox (RFC 4314 §3.3, §3.6)."""
        name, = acl_args(head.rest, self.utf8, 0)
        check_name(name)
        entries = yield from self._ask(self._acl("get_acl"), name)
        parts = [b"ACL", wire.mailbox(name, self.utf8)]
        for ident, letters in entries:
            parts += [wire.astring(ident.encode("utf-8"), self.utf8), _rights(letters)]
        self._emit(wire.untagged(b" ".join(parts)))
        return (OK, "Getacl complete", None)

    def _cmd_listrights(self, head):
        """LISTRIGHTS mailbox identifier (RFC 4314 §3.4, §3.7): the identifier as given."""
        name, ident = acl_args(head.rest, self.utf8, 1)
        check_name(name)
        required, optional = yield from self._ask(self._acl("list_rights"), name, check_identifier(ident))
        parts = [b"LISTRIGHTS", wire.mailbox(name, self.utf8), wire.astring(ident.encode("utf-8"), self.utf8),
                 _rights(required)] + [_rights(r) for r in optional]
        self._emit(wire.untagged(b" ".join(parts)))
        return (OK, "Listrights completed", None)

    def _cmd_myrights(self, head):
        """MYRIGHTS mailbox (RFC 4314 §3.5, §3.8)."""
        name, = acl_args(head.rest, self.utf8, 0)
        check_name(name)
        letters = yield from self._ask(self._acl("my_rights"), name)
        self._emit(wire.untagged(b"MYRIGHTS " + wire.mailbox(name, self.utf8) + b" " + _rights(letters)))
        return (OK, "Myrights complete", None)
