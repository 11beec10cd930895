"""CATENATE (RFC 4469) with URL-PARTIAL (RFC 5550 §5), a mixin of
protocols/imap/session.py's ImapSession.

``_catenated(messages)`` turns the APPEND messages given in the CATENATE form
(args.AppendMessage.parts) into plain ones before anything is stored, so
APPEND (mailboxes.py) and REPLACE (replace.py) store the result exactly as
a plain APPEND: one ``ImapAccount.append`` (or ``OpenFolder.replace``) call,
all or none for MULTIAPPEND (RFC 3502 §6.3.11), durable before the OK,
APPENDUID (RFC 4315 §3).

Each URL (imapurl.py) names a message of this user: the selected folder is
read through the session's own OpenFolder, any other is opened read-only for
the command (EXAMINE: no \\Recent claimed, no \\Seen set: RFC 4469 §3 "does
not cause the \\Seen flag to be set") and closed at its end.  The first URL
that cannot be resolved ends the command with ``NO [BADURL url]`` (RFC 4469
§4.1): bad syntax, another user or server, a mailbox that does not exist, a
stale UIDVALIDITY (RFC 5092 §5), a UID that does not exist, a missing body
part.  The running total over ``max_append`` (the APPENDLIMIT, RFC 7889) is
``NO [TOOBIG]`` (RFC 4469 §4.2), checked after each part, so a command of a
thousand URLs to a large message stops at the limit; the stored octets read
for one command are bounded too (READ_FACTOR).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Tuple

from protocols import mime
from protocols.backend.contracts import MailboxError
from protocols.imap import imapurl
from protocols.imap.session_base import NO, Refusal, check_name

log = logging.getLogger("mailsrv.imap")


def _badurl(url: bytes, why: str) -> Refusal:
    """NO [BADURL url] (RFC 4469 §4.1); the text never ends with what the client
    sent (a line ending in "{n}" would read as a literal announcement)."""
    refusal = Refusal(NO, "CATENATE failed: %s" % why)
    refusal.code = imapurl.badurl_code(url)
    return refusal


# Ours: the octets one command may read for its URLs, in APPENDLIMITs.  A
# message is read once and kept while the kept ones fit in one APPENDLIMIT;
# a command alternating between large messages would read them again and
# again, so past this it ends with NO [LIMIT] (RFC 5530 §3).
READ_FACTOR = 4


class _UrlSource:
    """One command's folders and messages read for its URLs (each read once;
    the messages kept together stay under the APPENDLIMIT)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.folders: Dict[str, object] = {}
        self.messages: Dict[Tuple[str, int], List] = {}    # [octets, mime.Part or None]
        self.held = 0
        self.read = 0

    def keep(self, key, data: bytes) -> List:
        self.read += len(data)
        if self.read > READ_FACTOR * self.limit:
            raise Refusal(NO, "CATENATE reads more than %d octets of stored messages" % (READ_FACTOR * self.limit),
                          "LIMIT")
        if self.held + len(data) > self.limit:
            self.messages.clear()
            self.held = 0
        entry = [data, None]
        self.messages[key] = entry
        self.held += len(data)
        return entry

    def close(self) -> None:
        for folder in self.folders.values():
            if folder is not None:
                folder.close()
        self.folders.clear()


class CatenateCommands:
    """CATENATE for APPEND and REPLACE (see the module docstring)."""

    def _catenated(self, messages):
        """The messages with each CATENATE one built from its parts (RFC 4469 §3)."""
        if not any(m.parts for m in messages):
            return list(messages)
        source = _UrlSource(self.config.max_append)
        try:
            out = []
            for m in messages:
                if m.parts:
                    data = yield from self._catenate(m.parts, source)
                    m = dataclasses.replace(m, data=data, parts=())
                out.append(m)
            return out
        finally:
            source.close()

    def _catenate(self, parts, source: _UrlSource):
        chunks, total = [], 0
        for kind, value in parts:
            piece = value if kind == "TEXT" else (yield from self._url_part(value, source))
            total += len(piece)
            if total > self.config.max_append:     # RFC 4469 §4.2, RFC 7889 §4
                raise Refusal(NO, "Catenated message over %d octets" % self.config.max_append, "TOOBIG")
            chunks.append(piece)
        return b"".join(chunks)

    def _url_part(self, url: bytes, source: _UrlSource):
        """The octets one URL names (RFC 4469 §3), or NO [BADURL url]."""
        try:
            selected = self._folder.name if self._folder is not None else None
            ref = imapurl.parse(url, self._user or "", self.config.hostname, selected)
            check_name(ref.mailbox)
        except imapurl.BadUrl as exc:
            raise _badurl(url, str(exc))
        except Refusal:
            raise _badurl(url, "invalid mailbox name")
        key = (ref.mailbox, ref.uid)
        entry = source.messages.get(key)
        if entry is None:
            folder = yield from self._url_folder(ref.mailbox, source)
            if folder is None:
                raise _badurl(url, "mailbox %s does not exist" % ref.mailbox[:100])
            if ref.uidvalidity is not None and folder.state().uidvalidity != ref.uidvalidity:
                raise _badurl(url, "UIDVALIDITY of %s changed (RFC 5092 §5)" % ref.mailbox[:100])
            data = yield lambda done: folder.read(ref.uid, done)
            if isinstance(data, BaseException):
                log.error("imap catenate read failed user=%s uid=%d: %r", self._user, ref.uid, data)
                raise Refusal(NO, "Cannot read message UID %d, try again" % ref.uid, "UNAVAILABLE")
            if data is None:
                raise _badurl(url, "mailbox %s has no message UID %d" % (ref.mailbox[:100], ref.uid))
            entry = source.keep(key, data)
        if entry[1] is None and imapurl.needs_structure(ref):
            entry[1] = mime.parse(entry[0])
        try:
            return imapurl.extract(ref, entry[0], entry[1])
        except imapurl.BadUrl as exc:
            raise _badurl(url, str(exc))

    def _url_folder(self, name: str, source: _UrlSource):
        """The selected folder, or ``name`` opened read-only for this command; None if missing."""
        if self._folder is not None and self._folder.name == name:
            return self._folder
        if name not in source.folders:
            folder = yield lambda done: self._account.open(name, True, done)
            if isinstance(folder, MailboxError):
                folder = None
            elif isinstance(folder, BaseException):
                log.error("imap catenate open failed user=%s: %r", self._user, folder)
                raise Refusal(NO, "Mailbox %s temporarily unavailable, try again" % name[:100], "UNAVAILABLE")
            source.folders[name] = folder
        return source.folders[name]
