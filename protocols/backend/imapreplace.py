"""REPLACE (RFC 8508) on the store, for protocols/backend/imapaccess.py's
OpenFolder.replace; runs on a worker inside the folder's serial jobs.

Order (RFC 8508 §3.4: "MUST NOT leave the selected mailbox in an inconsistent
state"): the old message is looked up, the quota checked net of it (§3.4:
"only the net quota consumption is considered"), the new message appended
and made durable exactly as APPEND does (store/folder.py append_many: file
and directory fsync'd), and only then the old one removed, without ever
being marked \\Deleted (§3.4: the STORE step is not seen).  A crash or an
error between the two steps leaves both messages, never neither; an error in
the removal is answered as ``ReplaceOutcome.failed`` with the new UID, so the
client still learns it (APPENDUID).
"""

from __future__ import annotations

import logging

from protocols.backend import imapquota
from protocols.backend.contracts import AppendResult, MailboxError, ReplaceOutcome
from protocols.backend.imapstore import same_case, split_flags

log = logging.getLogger("mailsrv.imap.access")


def replace(opened, uid: int, target: str, item, timestamp) -> ReplaceOutcome:
    """``opened`` is imapaccess.OpenFolder (its account and store folder)."""
    account, folder = opened._account, opened._folder
    snap = folder.sync().snapshot
    old = snap.by_uid(uid)
    if old is None:
        raise MailboxError("EXPUNGEISSUED", "message UID %d of %s was expunged meanwhile" % (uid, opened.name))
    dest = account.target(target)                     # TRYCREATE (RFC 9051 §6.3.12)
    letters, keywords = split_flags(item.flags)
    keywords = same_case(dest.keywords(), keywords)
    growth = len(item.data) - imapquota.sizes_of([old.key])
    if growth > 0:
        imapquota.check(account, growth, 0)           # RFC 8508 §3.4, RFC 9208 §4.3.1
    added = dest.append_many([(item.data, letters, keywords, timestamp)])
    imapquota.note(account, imapquota.sizes_of(a.key for a in added), len(added))
    appended = AppendResult(added[0].uidvalidity, tuple(a.uid for a in added))
    try:
        gone = expunge_one(folder, uid)
    except Exception as exc:       # the new message stays (it is durable): say so, keep both
        log.error("REPLACE: old message not removed mailbox=%s uid=%d: %r", opened.name, uid, exc)
        return ReplaceOutcome(appended, (), "the old message UID %d could not be removed" % uid)
    imapquota.note_uids(account, snap, gone, -1)
    if uid not in gone:
        return ReplaceOutcome(appended, (), "the old message UID %d could not be removed" % uid)
    return ReplaceOutcome(appended, tuple(gone))


def expunge_one(folder, uid: int):
    """The removal step, apart so that a test can make it fail (a crash mid-REPLACE)."""
    return folder.expunge([uid]).uids
