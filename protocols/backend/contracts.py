"""The contracts between the protocol sessions and the backend services.

Every session (SMTP, POP3, later IMAP) is a sans-I/O state machine that asks
an injected backend for anything that needs the disk, a thread or the clock.
What it may ask, and what comes back, is written here as ``typing.Protocol``
classes; the real services (protocols/backend/auth.py, policy.py,
delivery.py, mailaccess.py, outbound.py) and the fakes of the session tests
honour them, and tests/test_backend_contracts.py runs one set of checks
against both.

Rules common to every contract:

* a method that takes ``done`` calls it exactly once, later on the loop
  thread (the real services) or at once (the fakes); the session never
  assumes either;
* errors a session must answer travel as values or as the contract-level
  exceptions below, never as a store class (tests/test_layering.py: sessions
  import nothing from ``store/``);
* replies are ``(code, enhanced, text)`` tuples (RFC 5321 §4.2, RFC 3463).

This module imports no store class and no session: both sides import it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Protocol, Sequence, Tuple

from protocols.sasl import AuthTemporary, Authenticator, SaslOutcome, ScramCredentials  # noqa: F401

Reply = Tuple[int, str, str]


class MailboxInUse(Exception):
    """``open_maildrop``'s answer when another session holds the mailbox's
    exclusive lock (RFC 1939 §4: "-ERR [IN-USE]", RFC 2449 §8.1.2).  The mail
    access service translates the store's lock error into this."""


# -- authentication: protocols/sasl.py's Authenticator -----------------------
# scram_lookup(username) -> ScramCredentials (stable fake ones for an unknown
# name, RFC 5802 §9); authenticate(ctx, outcome, done) -> done(user) |
# done(None) (wrong credentials) | done(AuthTemporary) (not checked now).
AuthService = Authenticator


class PolicyService(Protocol):
    """SMTP policy (RFC 5321 §3.6, §4.5.1; RFC 6409 §4, §6.1)."""

    def check_sender(self, ctx, auth_user: Optional[str], address) -> Optional[Reply]:
        """None to accept MAIL FROM, else the refusal."""

    def check_recipient(self, ctx, auth_user: Optional[str], address) -> Any:
        """A ``protocols.smtp.state.RcptDecision``: ``ok``, the refusal ``reply``,
        and an opaque ``target`` the delivery service gets back in the envelope."""

    def may_relay(self, ctx, auth_user: Optional[str]) -> bool:
        """Whether a non-local recipient is accepted from this session."""

    def check_spf(self, ctx, helo: str, mail_from: str, done) -> None:
        """spf_check = header: ``done(SpfResult)`` of the MAIL FROM identity
        (RFC 7208 §2.4), later, on the loop thread."""

    def check_spf_helo(self, ctx, helo: str, done) -> None:
        """spf_check = header: ``done(SpfResult)`` of the HELO identity (RFC 7208 §2.3)."""


class DeliveryService(Protocol):
    """Where accepted mail goes (RFC 5321 §4.1.1.4: 250 only once it is safe)."""

    def open_message(self, envelope) -> Any:
        """A ``MessageSink`` (protocols/smtp/state.py: write / abort /
        finish(envelope, done(Reply))) for a message whose data starts now,
        or a refusal Reply (over the in-flight budget: 452 4.3.1).  (The real
        service also has ``deliver(envelope, data, done)`` for a message in
        hand, used by local submission, not by sessions.)"""


class MaildropMessage(Protocol):
    uid: str        # UIDL unique-id (RFC 1939 §7)
    size: int       # octets in CRLF form (RFC 1939 §11)


class MessageReader(Protocol):
    """One message file being read for RETR/TOP, on a worker thread."""

    def read(self, size: int, done: Callable[[object], None]) -> None:
        """``done(bytes)``: the next at most ``size`` octets (b"" at the end),
        or ``done(OSError)``.  One read at a time."""

    def close(self) -> None:
        """Release the file (after a read in flight ends); no answer."""


class Maildrop(Protocol):
    """A user's locked mailbox as POP3 sees it (RFC 1939 §4-§6).

    ``messages`` is plain data; every method that may touch the disk takes
    ``done`` and runs on a worker thread (issue 9 §2: no session touches the
    disk), one after another in the order asked."""

    messages: Sequence[MaildropMessage]

    def open_message(self, i: int, done: Callable[[object], None]) -> None:
        """``done(MessageReader)`` for message ``i`` (0-based), or ``done(OSError)``."""

    def mark_seen(self, i: int, done: Callable[[object], None]) -> None:
        """RETR read message ``i`` (IMAP then shows it \\Seen); ``done(None)``."""

    def commit_deletes(self, indices: List[int], done: Callable[[object], None]) -> None:
        """RFC 1939 §6 UPDATE: remove these messages.  ``done(None)`` when all
        are gone; ``done(OSError)`` when some are left (the others are removed)."""

    def close(self, done: Optional[Callable[[object], None]] = None) -> None:
        """Release the lock (pending \\Seen marks applied); ``done(None)`` after;
        safe to call twice."""


class MailAccess(Protocol):
    """Users' mailboxes (POP3 today; IMAP folders and the change hub next)."""

    def open_maildrop(self, ctx, user: str, done: Callable[[object], None]) -> None:
        """``done(Maildrop)``, or ``done(exception)``: ``MailboxInUse``;
        PermissionError / NotADirectoryError / ValueError for a fault an
        operator must fix; any other OSError for one that may pass."""


class OutboundService(Protocol):
    """The relay and its queue: the relay owns every queue entry (STYLE.md)."""

    queue: Any      # None while outbound delivery is off

    def queue_control(self, done: Optional[Callable[[str, str, str], None]] = None) -> None:
        """Apply the `mailsrv.py queue ...` requests through the relay;
        ``done(command, id, outcome)`` once each is on disk."""


# -- IMAP mail access (RFC 9051 §6.3, §6.4; RFC 3501) --------------------------------
# Names are IMAP mailbox names as the client means them (already decoded from
# modified UTF-7 or UTF-8), "INBOX" in that spelling, the hierarchy separator
# is HIERARCHY_SEP.  Flags are IMAP flag strings: system flags with their
# backslash ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft") and
# keywords as given ("$Forwarded", "Junk"); "\\Recent" never appears in a
# stored flag set (it is a session property, ``FolderState.recent``).
HIERARCHY_SEP = "/"   # RFC 9051 §5.1: ours; on disk Dovecot's Maildir++ ".Sent", ".a.b"
ACL_RIGHTS = "lrswipkxtea"   # RFC 4314 §2.1: the rights the backend knows
SHARED_PREFIX = "shared/"    # RFC 2342 §5: the other users' namespace ("shared/<owner>/<folder>")


class MailboxError(Exception):
    """A mailbox operation refused.  ``code`` is the response code the session
    puts in its tagged NO (RFC 5530: NONEXISTENT, ALREADYEXISTS, CANNOT,
    NOPERM, INUSE, LIMIT, OVERQUOTA, SERVERBUG, TRYCREATE of RFC 9051 §7.1),
    ``text`` one line for the user, naming the mailbox.  Also HASCHILDREN
    (RFC 9051 §7.1: DELETE of a \\Noselect name with children) and USEATTR
    (RFC 6154 §3: CREATE ... USE with an attribute the server cannot give)."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class FolderEntry:
    """One mailbox for LIST (RFC 9051 §7.3.1, RFC 5258, RFC 6154)."""
    name: str
    special_use: Tuple[str, ...] = ()     # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"
    subscribed: bool = False
    exists: bool = True                   # False: only subscribed (\\NonExistent), or a \\Noselect parent
    has_children: bool = False


@dataclass(frozen=True)
class FolderStatus:
    """STATUS items (RFC 9051 §6.3.11, RFC 3501 §6.3.10, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ)."""
    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    deleted: int
    size: int
    recent: int
    highestmodseq: int
    deleted_storage: int = 0              # RFC 9208 §4.1.4 DELETED-STORAGE: octets of the \\Deleted messages
    mailbox_id: str = ""                  # RFC 8474 §4.3 MAILBOXID (an objectid), "" if the backend has none


@dataclass(frozen=True)
class QuotaState:
    """The user's quota root "" (RFC 9208 §4.2.1): STORAGE in units of 1024 octets
    (§5.1), MESSAGE a count (§5.2); a limit of 0 means not limited."""
    storage_used: int
    storage_limit: int
    messages_used: int
    messages_limit: int


@dataclass(frozen=True)
class MailboxEvent:
    """A change among one user's mailboxes, for NOTIFY (RFC 5465 §5):
    ``kind`` is "messages" (messages or flags of ``name`` changed: look),
    "created", "deleted", "renamed" (``old_name`` the name before),
    "subscribed", "unsubscribed", or "rescan" (the tree changed on disk in a
    way not known in detail: list again).  ``own``: the change came from the
    account that watches (RFC 5465 §5: the client SHOULD NOT hear of it)."""
    kind: str
    name: str = ""
    old_name: str = ""
    own: bool = False


@dataclass(frozen=True)
class AppendItem:
    """One message of APPEND / MULTIAPPEND (RFC 3502): octets as the client sent them."""
    data: bytes
    flags: Tuple[str, ...] = ()
    internal_date: Optional[datetime.datetime] = None   # None: now


@dataclass(frozen=True)
class AppendResult:
    """APPENDUID (RFC 4315 §3): the target's UIDVALIDITY and the new UIDs in order."""
    uidvalidity: int
    uids: Tuple[int, ...]


@dataclass(frozen=True)
class MessageMeta:
    """What a session keeps per message of the selected folder (no file content)."""
    uid: int
    flags: FrozenSet[str]                 # system flags and keywords, IMAP spelling
    size: int                             # RFC822.SIZE: octets in CRLF form
    internal_date: float                  # INTERNALDATE, seconds since the epoch (Maildir: the file's mtime)
    modseq: int                           # RFC 7162 §3.1.4
    save_date: Optional[float] = None     # SAVEDATE (RFC 8514), None if unknown


@dataclass(frozen=True)
class FolderState:
    """The selected folder as the backend last saw it, in UID order."""
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: Tuple[MessageMeta, ...]
    keywords: Tuple[str, ...] = ()        # keywords defined in the folder, for FLAGS / PERMANENTFLAGS
    recent: FrozenSet[int] = frozenset()  # UIDs \\Recent for this session only (RFC 3501 §2.3.2)
    mailbox_id: str = ""                  # RFC 8474 §4.2 MAILBOXID (an objectid), "" if the backend has none


@dataclass(frozen=True)
class FolderChanges:
    """What ``refresh`` found since the previous state this session was given."""
    state: FolderState
    new: Tuple[int, ...] = ()             # UIDs added
    expunged: Tuple[int, ...] = ()        # UIDs gone
    changed: Tuple[int, ...] = ()         # UIDs whose flags or modseq changed (by anyone)


@dataclass(frozen=True)
class StoreOutcome:
    """STORE's result (RFC 9051 §6.4.6; RFC 7162 §3.1.3 UNCHANGEDSINCE)."""
    changed: Tuple[MessageMeta, ...]      # the messages whose flags changed, as they are now
    modified: Tuple[int, ...] = ()        # UIDs refused by UNCHANGEDSINCE ([MODIFIED ...])


@dataclass(frozen=True)
class CopyOutcome:
    """COPYUID (RFC 4315 §3): the target's UIDVALIDITY and (source, target) UID pairs."""
    uidvalidity: int
    uid_map: Tuple[Tuple[int, int], ...]
    expunged: Tuple[int, ...] = ()        # MOVE: the source UIDs now gone (RFC 6851 §3.3)


@dataclass(frozen=True)
class ReplaceOutcome:
    """REPLACE (RFC 8508 §3.4): the new message's APPENDUID (RFC 4315 §3) and the
    replaced UID once it is gone.  ``failed`` (one line for the user) when the
    new message is stored but the old one could not be removed: both stay."""
    appended: AppendResult
    expunged: Tuple[int, ...] = ()
    failed: str = ""


class OpenFolder(Protocol):
    """A folder selected (or examined) by one IMAP session.  Every method with
    ``done`` runs on a worker and answers a value or a ``MailboxError`` /
    ``OSError``; calls are served one after another in the order asked."""

    name: str
    readonly: bool

    def state(self) -> FolderState:
        """The state last given to this session (at open, or by ``refresh``): plain data."""

    def refresh(self, done: Callable[[object], None]) -> None:
        """Sync from disk: ``done(FolderChanges)`` (every writer: this process,
        another mailsrv, Dovecot, a POP3 QUIT)."""

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop thread when the folder may have changed
        (the change hub: at once for this process's writers, by a stat poll for
        others); returns the function that stops it."""

    def read(self, uid: int, done: Callable[[object], None]) -> None:
        """``done(bytes)``: the message in CRLF form, or ``done(None)`` if it is
        gone (RFC 2180 §4.1), or ``done(OSError)``."""

    def read_many(self, uids: Sequence[int], done: Callable[[object], None]) -> None:
        """Optional (a session calls it only when present): ``done({uid: bytes})``,
        each message as ``read`` gives it, the UIDs gone left out, in one worker
        step (SEARCH BODY over a folder), or ``done(OSError)``."""

    def derived(self, uids: Sequence[int], kind: str, compute: Callable[[bytes], Dict[str, bytes]],
                done: Callable[[object], None]) -> None:
        """``done({uid: dict})``: for each UID, what ``compute(message in CRLF
        form)`` returns, taken from the folder's cache (store/msgcache.py) when
        it holds an entry for (the message's Maildir key, ``kind``), else
        computed on the worker from the file and kept; UIDs gone are missing
        from the dict (RFC 2180 §4.1), or ``done(OSError)``.  ``kind`` names
        ``compute`` and its version ("imap-v1"): a changed renderer takes a new
        kind and old entries are not used.  ``compute`` must be pure (it runs on
        a worker thread) and return the same dict for the same octets.  An
        implementation may compute each time (the cache is an optimisation).
        A ``compute`` with a ``header_end(prefix, complete)`` attribute needs
        only the message's header block (RFC 5322 §2.1, the fields and the
        empty line): it may be given that block alone, which ends where
        ``header_end`` says once it answers an offset for the first octets
        read (None: read more; ``complete``: they are the whole message)."""

    def load_dates(self, uids: Sequence[int], done: Callable[[object], None]) -> None:
        """Optional (a session calls it only when present): make ``internal_date`` and
        ``save_date`` of these messages' metas readable without disk I/O, before a
        command reads them (FETCH INTERNALDATE / SAVEDATE, SEARCH on dates); answers
        None.  An implementation whose metas carry their dates needs none."""

    def shared(self, name: str) -> Dict[int, object]:
        """A dict named ``name``, by UID, that every session of this process
        with this folder open under the same UIDVALIDITY gets (the one of this
        session's ``state()``), for values that depend on a message's content
        alone: the mailbox name, UIDVALIDITY and UID name one immutable message
        (RFC 9051 §2.3.1.1).  Loop thread only, no I/O; what a session puts
        there is its own business (e.g. SEARCH's decoded header fields).  An
        implementation may hand out a new empty dict (nothing shared) at any
        time."""

    def store(self, uids: Sequence[int], flags: Sequence[str], mode: str,
              unchanged_since: Optional[int], done: Callable[[object], None]) -> None:
        """``mode`` is "add", "remove" or "replace" (+FLAGS, -FLAGS, FLAGS):
        ``done(StoreOutcome)``.  New keywords are created as needed.  The
        outcome's metadata counts as given to this session: a later
        ``refresh`` does not report those changes again, and this folder's own
        ``watch`` callbacks are not called for them (other sessions' are)."""

    def expunge(self, uids: Sequence[int], done: Callable[[object], None]) -> None:
        """Remove these messages if they carry \\Deleted: ``done(tuple of UIDs removed)``."""

    def vanished(self, modseq: int, done: Callable[[object], None]) -> None:
        """The expunge log (RFC 7162 §3.2.5.1, §3.2.6 VANISHED (EARLIER)): ``done((uids,
        complete))``, the UIDs expunged with a MODSEQ above ``modseq`` (by anyone,
        ascending MODSEQ) and whether the log reaches back that far (False: older
        expunges were forgotten, the session reports every UID not present)."""

    def copy(self, uids: Sequence[int], target: str, move: bool,
             done: Callable[[object], None]) -> None:
        """COPY / MOVE into the mailbox ``target``: ``done(CopyOutcome)``, durable
        in the target before the answer; ``MailboxError("TRYCREATE", ...)`` when
        the target does not exist (RFC 9051 §6.4.7)."""

    def replace(self, uid: int, target: str, item: AppendItem, done: Callable[[object], None]) -> None:
        """REPLACE (RFC 8508 §3.4): append ``item`` to the mailbox ``target`` (durable
        first, as ``ImapAccount.append``), then remove message ``uid`` of this folder
        whatever its flags: ``done(ReplaceOutcome)``.  Quota is checked net of the
        message replaced; a refusal (``MailboxError``: TRYCREATE, OVERQUOTA,
        EXPUNGEISSUED when ``uid`` is gone) leaves everything as it was."""
    def cached(self, uids: Sequence[int], kind: str, done: Callable[[object], None]) -> None:
        """Optional (a session calls it only when present): ``done({uid: dict})``
        with what ``derived`` would answer for ``kind`` from its cache alone,
        no message read; UIDs without an entry are missing (RFC 8970 §4.1
        PREVIEW (LAZY) answers NIL for them)."""

    def email_ids(self, uids: Sequence[int], done: Callable[[object], None]) -> None:
        """Optional (OBJECTID, RFC 8474 §5.1: a session offers EMAILID only when
        present): ``done({uid: objectid})``, the same id for a message and its
        copies (COPY / MOVE) and for no other message; UIDs gone are left out."""

    def close(self) -> None:
        """Stop watching and release; no answer; safe to call twice."""

    def allows(self, right: str) -> bool:
        """Optional (absent: every right): whether the user holds the RFC 4314 right
        (``ACL_RIGHTS``) on this folder, as last checked.  FETCH's implicit \\Seen
        (``s``) and CLOSE's expunge (``e``) are skipped, not refused, without it
        (RFC 4314 §4); STORE, EXPUNGE, COPY and MOVE are refused by the backend."""


class ImapAccount(Protocol):
    """One user's mailboxes for one IMAP session (after LOGIN / AUTHENTICATE)."""

    user: str

    def list(self, done: Callable[[object], None]) -> None:
        """``done(tuple of FolderEntry)``: every mailbox (INBOX first) and every
        subscribed name, with special-use attributes and children."""

    def create(self, name: str, special_use: Sequence[str], done: Callable[[object], None]) -> None:
        """CREATE (RFC 9051 §6.3.4, RFC 6154 §3 USE): ``done(None)``."""

    def delete(self, name: str, done: Callable[[object], None]) -> None:
        """DELETE (RFC 9051 §6.3.5): ``done(None)``; INBOX cannot be deleted."""

    def rename(self, old: str, new: str, done: Callable[[object], None]) -> None:
        """RENAME (RFC 9051 §6.3.6; INBOX: its messages move, INBOX stays): ``done(None)``."""

    def subscribe(self, name: str, subscribed: bool, done: Callable[[object], None]) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8): ``done(None)``."""

    def status(self, name: str, done: Callable[[object], None]) -> None:
        """``done(FolderStatus)``."""

    def append(self, name: str, items: Sequence[AppendItem], done: Callable[[object], None]) -> None:
        """APPEND / MULTIAPPEND (RFC 9051 §6.3.12, RFC 3502): all or none, durable
        (files and directory fsync'd) before ``done(AppendResult)``."""

    def open(self, name: str, readonly: bool, done: Callable[[object], None]) -> None:
        """SELECT / EXAMINE: ``done(OpenFolder)``."""

    def quota(self, done: Callable[[object], None]) -> None:
        """GETQUOTA / GETQUOTAROOT (RFC 9208): ``done(QuotaState)`` of the user's
        one quota root "".  APPEND and COPY/MOVE into the account answer
        ``MailboxError("OVERQUOTA", ...)`` when over (RFC 9208 §4.3.1)."""

    def watch_mailboxes(self, messages: bool, callback: Callable[[MailboxEvent], None]) -> Callable[[], None]:
        """Optional (a session calls it only when present; NOTIFY, RFC 5465):
        ``callback(MailboxEvent)`` on the loop thread for each mailbox created,
        deleted, renamed, subscribed or unsubscribed by any session of this
        process (``own`` set for this account's), "rescan" when another process
        changed the tree (the change hub's poll); with ``messages`` also
        "messages" for each mailbox whose messages may have changed (the hub:
        at once for this process's writers, by its poll for others).  Returns
        the function that stops it."""
    def metadata(self, name: str, entries: Sequence[str], depth: Optional[int],
                 done: Callable[[object], None]) -> None:
        """Optional (METADATA, RFC 5464 §4.2; the session offers it only when
        present): ``done({entry: value})`` for the mailbox ``name`` ("" the
        server): each of ``entries`` (lower case) that has a value, and the
        entries below each within ``depth`` levels (0 none, None all);
        ``MailboxError("NONEXISTENT")`` for a mailbox that does not exist."""

    def set_metadata(self, name: str, changes: Sequence[Tuple[str, Optional[bytes]]],
                     done: Callable[[object], None]) -> None:
        """Optional (SETMETADATA, RFC 5464 §4.3): set (bytes) or remove (None)
        entries, all or none, durable before ``done(None)``; refusals as
        ``MailboxError`` codes "METADATA MAXSIZE n" / "METADATA TOOMANY".  A
        mailbox's entries follow it on RENAME and go with it on DELETE."""

    def mailbox_id(self, name: str, done: Callable[[object], None]) -> None:
        """Optional (OBJECTID, RFC 8474 §4.1): ``done(objectid)`` of the mailbox
        ``name``, kept across RENAME (the same as ``status(...).mailbox_id``)."""

    def close(self) -> None:
        """The session ended: release everything (open folders too)."""

    # RFC 4314 (ACL), optional: a session announces ACL only when its account has them.
    # A missing right answers MailboxError("NOPERM"), or "NONEXISTENT" when the user
    # may not even look the mailbox up (RFC 4314 §6); a bad identifier "CANNOT".
    def my_rights(self, name: str, done: Callable[[object], None]) -> None:
        """MYRIGHTS (§3.5): ``done(rights)``, letters of ``ACL_RIGHTS``."""

    def get_acl(self, name: str, done: Callable[[object], None]) -> None:
        """GETACL (§3.3): ``done(((identifier, rights), ...))``."""

    def set_acl(self, name: str, identifier: str, mode: str, rights: str,
                done: Callable[[object], None]) -> None:
        """SETACL (§3.1: ``mode`` "replace", "add", "remove") or DELETEACL (§3.2:
        ``mode`` "delete", ``rights`` ""): ``done(None)``."""

    def list_rights(self, name: str, identifier: str, done: Callable[[object], None]) -> None:
        """LISTRIGHTS (§3.4): ``done((always granted, (grantable rights, ...)))``."""


class ImapMailAccess(Protocol):
    """The IMAP side of the mail access service."""

    def open_account(self, ctx, user: str, done: Callable[[object], None]) -> None:
        """``done(ImapAccount)`` (INBOX and the special-use folders made on first
        use, RFC 6154), or ``done(exception)`` as ``open_maildrop``, or
        ``done(MailboxError("LIMIT", ...))`` over the user's session limit
        (too many sessions of this user from this address)."""


class SmtpBackend(AuthService, PolicyService, DeliveryService, Protocol):
    """What an SmtpSession is given."""


class Pop3Backend(AuthService, MailAccess, Protocol):
    """What a Pop3Session is given."""


class ImapBackend(AuthService, ImapMailAccess, Protocol):
    """What an ImapSession is given."""


# -- the test server (issue 11): caught mail and injected faults ---------------
# Written before the code so that the catch-all catalog (protocols/backend/
# caught.py), the fault engine (protocols/faults.py) and the HTTP session
# (protocols/http/) can be built apart; each honours its part.

@dataclass(frozen=True)
class CaughtMessage:
    """One message the test server caught, as its list shows it."""

    id: str                         # stable, URL-safe, opaque; unique in the data dir
    mailbox: str                    # the address whose mailbox holds it
    mail_from: str                  # the SMTP envelope ("" for <>; "" too for deliver()/APPEND)
    rcpt_to: Tuple[str, ...]
    header_from: str                # decoded (RFC 2047) header fields, "" if absent
    header_to: str
    subject: str
    date: str                       # the Date field as sent
    received: float                 # arrival, seconds since the epoch
    size: int                       # octets as stored
    tls: bool = False               # how it was submitted (False for deliver()/APPEND)
    auth_user: Optional[str] = None
    helo: str = ""
    peer_ip: str = ""
    listener: str = ""              # "smtp", "submission", "smtps", "deliver", "imap"


class CaughtMail(Protocol):
    """The catch-all catalog, for the HTTP session and the in-process API.
    Called on the loop thread; ``done`` as the rules at the top of this module."""

    def list_caught(self, query: Dict[str, str], limit: int, done: Callable[[object], None]) -> None:
        """``done([CaughtMessage, ...])`` newest first.  ``query`` keys (all
        optional, case-insensitive substring matches, ANDed): "to" (any
        envelope recipient or the To field), "from" (envelope sender or From),
        "subject", "text" (any of those or the mailbox)."""

    def caught_raw(self, message_id: str, done: Callable[[object], None]) -> None:
        """``done((CaughtMessage, bytes))``, or ``done(None)`` for an unknown id."""

    def delete_caught(self, message_id: str, done: Callable[[object], None]) -> None:
        """``done(True)`` once removed from disk, ``done(False)`` for an unknown id."""

    def delete_all_caught(self, done: Callable[[object], None]) -> None:
        """``done(count)`` once every caught message is removed."""

    def watch_caught(self, callback: Callable[[CaughtMessage], None]) -> Callable[[], None]:
        """``callback(message)`` on the loop thread for each message caught
        from now on (after its fsync); returns the function that stops it."""


class FaultControl(Protocol):
    """The injected faults (protocols/faults.py), for the in-process API and
    the HTTP API.  A rule is a dict: {"id", "protocol" ("smtp" | "pop3" |
    "imap"), "command" (verb, upper case), "action" ("fail" | "delay" |
    "disconnect" | "greylist" | "tls_required"), "code", "text", "seconds",
    "times" (None: every time), "hits"}."""

    def rules(self) -> List[Dict[str, object]]:
        """The rules in force, oldest first."""

    def add_rule(self, rule: Dict[str, object]) -> Dict[str, object]:
        """Validate and add one rule (ValueError naming the bad key); returns it with its id."""

    def remove_rule(self, rule_id: str) -> bool:
        """False for an unknown id."""

    def reset(self) -> None:
        """Remove every rule."""
