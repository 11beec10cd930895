"""IMAP server session, sans-I/O (see ``protocols/base.py`` for the protocol).

Implements RFC 9051 (IMAP4rev2) and RFC 3501 (IMAP4rev1): a client that sends
``ENABLE IMAP4rev2`` (RFC 9051 §6.3.1) gets rev2 semantics (no \\Recent,
ESEARCH answers to SEARCH, the LIST rules of rev2), every other client rev1.
Extensions: ENABLE (RFC 5161), ID (RFC 2971), IDLE (RFC 2177), NAMESPACE
(RFC 2342), UNSELECT (RFC 3691), UIDPLUS (RFC 4315), MOVE (RFC 6851),
MULTIAPPEND (RFC 3502), SASL-IR (RFC 4959), LITERAL+ (RFC 7888), CHILDREN
(RFC 3348), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and
CREATE-SPECIAL-USE (RFC 6154), ESEARCH (RFC 4731), SEARCHRES (RFC 5182),
STATUS=SIZE (RFC 8438), APPENDLIMIT (RFC 7889), UTF8=ACCEPT (RFC 6855 §3:
mailbox names in UTF-8), BINARY (RFC 3516, fetch_data.py), SAVEDATE (RFC
8514), WITHIN (RFC 5032, search_eval.py), COMPRESS=DEFLATE (RFC 4978,
compress.py), UNAUTHENTICATE (RFC 8437), NOTIFY (RFC 5465, notify.py),
MULTISEARCH (RFC 7377, multisearch.py), INPROGRESS (RFC 9585, inprogress.py),
after a login OBJECTID (RFC 8474, objectid.py), PREVIEW (RFC 8970,
preview.py), METADATA and METADATA-SERVER (RFC 5464, metadata.py),
CONDSTORE and QRESYNC (RFC 7162, condstore.py), UIDONLY (RFC 9586,
condstore.py), SORT / THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT and
CONTEXT=SORT (RFC 5267 §3.1) in sorting.py, CONTEXT=SEARCH (RFC 5267 §4,
sort_context.py), I18NLEVEL=1 (RFC 5255, collation.py).

Shape: the command reader (reader.py) cuts the input into commands and
literal continuations; each command runs as a generator (``_run_command``)
that yields a function taking ``done`` whenever it asks the backend, so a
command reads top to bottom while the disk work runs on workers (the
contracts of protocols/backend/contracts.py).  One command runs at a time,
in the order received (RFC 9051 §5.5 allows no more for commands that may
expunge).  The handlers live by state: session_auth.py (not authenticated),
mailboxes.py and listing.py (authenticated), selected.py and fetching.py
(selected); view.py keeps this session's sequence numbers and pending
untagged updates.
"""

from __future__ import annotations

import enum
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional

from protocols.backend.contracts import ImapBackend
from protocols.base import FaultView, SessionContext
from protocols.imap import args as A
from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.catenate import CatenateCommands
from protocols.imap.partial import PartialCommands
from protocols.imap.replace import ReplaceCommands
from protocols.imap.reader import Command, CommandReader, NeedContinuation
from protocols.imap.condstore import CondstoreCommands
from protocols.imap.selected import SelectedCommands
from protocols.imap.session_auth import AuthCommands
from protocols.imap.mailboxes import MailboxCommands
from protocols.imap.inprogress import ProgressCommands
from protocols.imap.multisearch import MultiSearchCommands
from protocols.imap.notify import NotifyCommands
from protocols.imap.quota import QUOTA_CAPABILITIES, QuotaCommands
from protocols.imap.acl import ACL_CAPABILITIES, AclCommands
from protocols.imap.objectid import OBJECTID_CAPABILITIES, ObjectIdCommands
from protocols.imap.preview import PREVIEW_CAPABILITIES, PreviewCommands
from protocols.imap.metadata import METADATA_CAPABILITIES, MetadataCommands
from protocols.imap.session_base import BAD, OK, Refusal, Reply, SessionCore
from protocols.imap.sorting import SORT_CAPABILITIES, SortCommands
from protocols.imap.view import BadSequence

log = logging.getLogger("mailsrv.imap")


class ImapState(enum.Enum):
    """RFC 9051 §3: the states of an IMAP connection."""

    NOT_AUTHENTICATED = "NOT-AUTHENTICATED"
    AUTHENTICATED = "AUTHENTICATED"
    SELECTED = "SELECTED"
    LOGOUT = "LOGOUT"


@dataclass
class ImapConfig:
    hostname: str = "localhost"
    # RFC 9051 §5.4: an autologout timer after authentication "MUST be at
    # least 30 minutes"; RFC 2177 §3 IDLE the same.
    idle_timeout: float = 1800.0
    # RFC 9051 §5.4 allows a shorter timer before authentication: 3 minutes
    # (Dovecot's login processes use the same order of magnitude).
    login_timeout: float = 180.0
    # RFC 2595 §2.3 / RFC 9051 §6.2.3: clear-text passwords only over TLS
    # unless configured, as POP3 decides (protocols/pop3/server.py).
    allow_plaintext_auth: bool = False
    plaintext_auth_loopback: bool = True
    # RFC 7889 APPENDLIMIT: the largest message APPEND takes, announced.  50
    # MiB, the size of the largest attachments common providers accept.
    max_append: int = 50 * 1024 * 1024
    # Abuse limits (local policy, as POP3's): bad commands, commands before a
    # login, failed logins per connection before BYE.
    max_bad_commands: int = 20
    max_commands_before_login: int = 30
    max_auth_failures: int = 3
    # RFC 2221 §4.1: host[:port] of the server this one's users moved to; a
    # correct login is answered NO [REFERRAL imap://user@host/] (empty: none).
    referral: str = ""


NOT_AUTH = frozenset([ImapState.NOT_AUTHENTICATED])
AUTH = frozenset([ImapState.AUTHENTICATED])
SELECTED = frozenset([ImapState.SELECTED])
LOGGED_IN = AUTH | SELECTED
ANY = NOT_AUTH | LOGGED_IN


@dataclass(frozen=True)
class Entry:
    """One row of the command table: handler, states, and whether untagged
    EXPUNGE may be sent before its tagged reply (RFC 9051 §7.5.1)."""
    handler: Callable
    states: FrozenSet[ImapState]
    expunge: bool = True


class ImapSession(AuthCommands, MailboxCommands, SelectedCommands, QuotaCommands, CatenateCommands,
                  ReplaceCommands, PartialCommands, AclCommands, NotifyCommands,
                  MultiSearchCommands, ProgressCommands, ObjectIdCommands,
                  PreviewCommands, MetadataCommands, CondstoreCommands, SortCommands, SessionCore):
    """One IMAP connection: bytes in, bytes out (RFC 9051 §3)."""

    def __init__(self, ctx: SessionContext, config: ImapConfig, backend: ImapBackend):
        SessionCore.__init__(self, ctx, config, backend)
        self.state = ImapState.NOT_AUTHENTICATED
        self._reader = CommandReader(max_literal=PREAUTH_LITERAL)
        self._preauth_literal = PREAUTH_LITERAL   # again after UNAUTHENTICATE (RFC 8437)
        self._faults = getattr(backend, "faults", None)    # injected faults (issue 11), if any
        # RFC 9051 §7.1.1: greeting with the capabilities (saves a round trip).
        self._emit(wire.status_line(None, b"OK", "%s IMAP4rev2 server ready" % config.hostname,
                                    b"[CAPABILITY " + self._capabilities() + b"]"))

    @property
    def idle_timeout(self) -> float:
        if self._idling:
            return KEEPALIVE
        if self._progress_due():
            return self.inprogress_interval     # RFC 9585 §4 (inprogress.py)
        if self.state is ImapState.NOT_AUTHENTICATED:
            return self.config.login_timeout
        return self.config.idle_timeout

    def keepalive(self) -> bool:
        """The loop's idle deadline passed while IDLE runs: ``* OK Still here``
        every KEEPALIVE seconds, up to the idle timeout (RFC 2177 §3); while
        a command works, its progress (RFC 9585, inprogress.py)."""
        if not self._idling:
            return self._progress_keepalive()
        if self._closing:
            return False
        if self.ctx.clock() - self._idle_since >= self.config.idle_timeout:
            return False
        self._emit(wire.status_line(None, b"OK", "Still here"))
        return True

    # -- input --------------------------------------------------------------

    def _process(self) -> None:
        """Handle buffered input in order, one command at a time (RFC 9051 §5.5)."""
        if self._processing:
            return
        self._processing = True
        try:
            while not (self._closing or self.want_tls):
                if self._current is not None and self._line_waiter is None:
                    return   # a command waits for the backend
                event = self._reader.next_event()
                if event is None:
                    return
                self._event(event)
        finally:
            self._processing = False

    def _event(self, event) -> None:
        if isinstance(event, g.ImapParseError):
            self._parse_error(event)
        elif isinstance(event, NeedContinuation):
            self._continuation(event)
        elif self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter(event.raw[:-2] if event.raw.endswith(b"\r\n") else event.raw)
        else:
            self._dispatch(event)

    def _parse_error(self, err: g.ImapParseError) -> None:
        if not err.at_boundary:
            log.info("imap stream error user=%s peer=%s: %s", self._user, self.ctx.peer_ip, err.message)
            self._fatal("Protocol error: %s" % err.message)
            return
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter(None)
            return
        if err.code == "TOOBIG":
            # RFC 7889 §4, RFC 4469 §4.2: a message over APPENDLIMIT is a NO [TOOBIG]
            self._emit(wire.status_line(err.tag, b"NO", err.message, wire.response_code("TOOBIG")))
            return
        code = wire.response_code(err.code) if err.code else None
        self._bad(err.tag, err.message, code)

    def _continuation(self, need: NeedContinuation) -> None:
        """RFC 9051 §4.3, §7.5: ``+`` for a literal we take, else a tagged refusal."""
        if self._line_waiter is None and self._refuse_metadata_literal(need):
            return          # RFC 5464 §4.3 (metadata.py)
        if self._line_waiter is not None or self._over_total(need.size):
            self._reader.refuse_literal()
            if self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                waiter(None)
            else:   # RFC 7889 §4: NO [TOOBIG], and no "+"
                self._emit(wire.status_line(need.tag, b"NO", "Command with literals over %d octets"
                                            % self._total_limit(), wire.response_code("TOOBIG")))
            return
        self._emit(wire.continuation(b"Ready for literal data"))
        self._reader.continue_literal()

    def _total_limit(self) -> int:
        """All literals of one command together: one APPEND's limit plus the
        command text (MULTIAPPEND, RFC 3502, shares it: local policy)."""
        return self._reader.max_literal + g.MAX_LINE

    def _over_total(self, size: int) -> bool:
        return self._reader.buffered + size > self._total_limit()

    def _bad(self, tag: Optional[bytes], text: str, code: Optional[bytes] = None) -> None:
        """RFC 9051 §7.1.5: BAD, tagged when the tag is known; too many: BYE."""
        self._bad_count += 1
        self._emit(wire.status_line(tag, b"BAD", text, code))
        if self._bad_count >= self.config.max_bad_commands:
            self._fatal("Too many bad commands")

    def _dispatch(self, cmd: Command) -> None:
        """RFC 9051 §2.2.1: tag, command name, arguments; table lookup by state."""
        self._commands += 1
        if self.state is ImapState.NOT_AUTHENTICATED and \
                self._commands - self._preauth_base > self.config.max_commands_before_login:
            self._fatal("Too many commands without logging in")
            return
        try:
            head = g.command_head(cmd.raw)
        except g.ImapParseError as exc:
            self._bad(exc.tag or cmd.tag, exc.message)
            return
        entry = COMMANDS.get(head.name)
        if entry is None or (head.uid and head.name not in UID_COMMANDS):
            self._bad(head.tag, "Unknown command %s" % head.name[:30])
            return
        if self.state not in entry.states:
            self._bad(head.tag, "%s not allowed in the %s state" % (head.name, self.state.value))
            return
        if self._numbers_refused(head):
            return      # RFC 9586 §3.2: BAD [UIDREQUIRED] after ENABLE UIDONLY (condstore.py)
        if self._faults is not None and self._faults.active and self._fault(entry, head):
            return      # an injected fault took the command (protocols/faults.py)
        self._start(self._run_command(entry, head))

    def _fault(self, entry: Entry, head: g.CommandHead) -> bool:
        """Ask the backend about this command (issue 11); True when a fault
        took it: its tagged NO/BAD instead, the command run later (input held,
        RFC 9051 §5.5 order kept), or the connection dropped without a reply."""
        view = FaultView("imap", head.name, bytes(head.rest).decode("utf-8", "replace").rstrip("\r\n"),
                         self.ctx.peer_ip, user=self._user, tls=self.ctx.tls_active)
        action = self.backend.fault("imap", head.name, view)
        if action is None:
            return False
        if action.kind == "fail":
            self._emit(head.tag + b" " + action.reply)
        elif action.kind == "delay":
            self._start(self._delayed(action.seconds, entry, head))
        else:
            self._terminate("injected fault")
        return True

    def _delayed(self, seconds: float, entry: Entry, head: g.CommandHead):
        yield lambda done: self.backend.fault_delay(seconds, done)
        yield from self._run_command(entry, head)

    def _run_command(self, entry: Entry, head: g.CommandHead):
        """One command to its tagged reply; untagged updates first where allowed."""
        self._work_begin(head.tag, head.name)   # RFC 9585 progress (inprogress.py)
        try:
            result = entry.handler(self, head)
            if inspect.isgenerator(result):
                result = yield from result
            reply: Reply = result or (OK, "%s completed" % head.name, None)
        except g.ImapParseError as exc:
            reply = (BAD, exc.message, wire.response_code(exc.code) if exc.code else None)
        except BadSequence as exc:
            reply = (BAD, exc.text, None)
        except Refusal as exc:
            reply = (exc.status, exc.text, exc.code)
        self._work_end()
        if reply[0] == BAD:
            self._bad(head.tag, reply[1], reply[2])
            return
        if self._folder is not None and self.state is ImapState.SELECTED:
            self._view.fetch_uid = head.uid
            yield from self._sync(entry.expunge or head.uid)
            self._view.fetch_uid = False
        self._emit(wire.tagged(head.tag, reply[0], reply[1], reply[2]))

    # -- any state: RFC 9051 §6.1 ---------------------------------------------

    def _cmd_capability(self, head) -> Reply:
        """RFC 9051 §6.1.1."""
        A.no_args(head.rest)
        self._emit(wire.untagged(b"CAPABILITY " + self._capabilities()))
        return None

    def _cmd_noop(self, head):
        """RFC 9051 §6.1.2: updates come with the reply (``_run_command``)."""
        A.no_args(head.rest)
        self._dirty = True
        return None

    def _cmd_logout(self, head) -> Reply:
        """RFC 9051 §6.1.3: BYE, then OK, then close."""
        A.no_args(head.rest)
        self._emit(wire.status_line(None, b"BYE", "%s logging out" % self.config.hostname))
        self._end_after = "logout"
        self.state = ImapState.LOGOUT
        return (OK, "LOGOUT completed", None)

    def _cmd_id(self, head) -> Reply:
        """RFC 2971 §3.1: the client's identification is logged; ours is short."""
        params = A.id_params(head.rest)
        if params:
            shown = " ".join("%s=%r" % (k, v) for k, v in params[:8])
            log.info("imap id peer=%s %s", self.ctx.peer_ip, shown[:300])
        self._emit(wire.untagged(b'ID ("name" "mailsrv")'))
        return None

    def _cmd_enable(self, head) -> Reply:
        """RFC 5161 §3.1: only the extensions we have; ENABLED lists what changed."""
        changed = []
        for cap in A.enable(head.rest):
            if cap == "IMAP4REV2" and not self.rev2:
                self.rev2 = True
                changed.append(b"IMAP4rev2")
            elif cap == "UTF8=ACCEPT" and not self.utf8:
                self.utf8 = True   # RFC 6855 §3: mailbox names in UTF-8 from now on
                changed.append(b"UTF8=ACCEPT")
            elif cap in ("CONDSTORE", "QRESYNC", "UIDONLY"):     # RFC 7162, RFC 9586 (condstore.py)
                name = self._enable_sync(cap)
                if name:
                    changed.append(name)
        self._emit(wire.untagged(b" ".join([b"ENABLED"] + changed)))
        return None

    def _capabilities(self) -> bytes:
        """RFC 9051 §7.2.2: what this state offers."""
        caps = [b"IMAP4rev2", b"IMAP4rev1"]
        if self.state is ImapState.NOT_AUTHENTICATED:
            if self.ctx.tls_available and not self.ctx.tls_active and self._deflate is None:
                caps.append(b"STARTTLS")   # RFC 9051 §6.2.1 (not under COMPRESS: session_auth.py)
            if not self._plaintext_ok():
                caps.append(b"LOGINDISABLED")   # RFC 9051 §6.2.3
            caps += [b"AUTH=" + m.encode("ascii") for m in self._mechanisms()]
            caps.append(b"SASL-IR")     # RFC 4959
            caps.append(b"LOGIN-REFERRALS")     # RFC 2221 §3 (session_auth.py, imap_referral)
        else:   # after a login: RFC 4978 §5 (command-auth), RFC 8437 §2
            caps += [b"COMPRESS=DEFLATE", b"UNAUTHENTICATE"]
        caps += [b"LITERAL+", b"ENABLE", b"ID", b"IDLE", b"NAMESPACE", b"UNSELECT", b"UIDPLUS",
                 b"MOVE", b"MULTIAPPEND", b"CHILDREN", b"LIST-EXTENDED", b"LIST-STATUS",
                 b"SPECIAL-USE", b"CREATE-SPECIAL-USE", b"ESEARCH", b"SEARCHRES", b"STATUS=SIZE",
                 b"APPENDLIMIT=%d" % self.config.max_append, b"UTF8=ACCEPT",
                 # served by fetch_data.py (RFC 3516 BINARY), the session and
                 # search_eval.py (RFC 8514 SAVEDATE), search_eval.py (RFC 5032 WITHIN)
                 b"BINARY", b"SAVEDATE", b"WITHIN",
                 b"CONDSTORE", b"QRESYNC", b"UIDONLY"]       # RFC 7162, RFC 9586 (condstore.py)
        if self.state is not ImapState.NOT_AUTHENTICATED:
            caps += QUOTA_CAPABILITIES      # RFC 9208 §5 (protocols/imap/quota.py), after login as Dovecot
            caps += APPENDX_CAPABILITIES    # catenate.py, imapurl.py, replace.py, partial.py
            if getattr(self._account, "my_rights", None) is not None:
                caps += ACL_CAPABILITIES    # RFC 4314 §2, §5.1.1 (protocols/imap/acl.py)
            caps.append(b"NOTIFY")          # RFC 5465 §3 (protocols/imap/notify.py)
            caps.append(b"MULTISEARCH")     # RFC 7377 §2 (protocols/imap/multisearch.py)
            caps.append(b"INPROGRESS")      # RFC 9585 §3 (protocols/imap/inprogress.py)
            caps += OBJECTID_CAPABILITIES   # RFC 8474 §3 (protocols/imap/objectid.py)
            caps += PREVIEW_CAPABILITIES    # RFC 8970 §1 (protocols/imap/preview.py)
            caps += METADATA_CAPABILITIES   # RFC 5464 §1 (protocols/imap/metadata.py)
            caps += SORT_CAPABILITIES       # RFC 5256, RFC 5957, RFC 5267 §3.1 (protocols/imap/sorting.py)
            caps.append(b"CONTEXT=SEARCH")  # RFC 5267 §4 (protocols/imap/sort_context.py)
        return b" ".join(caps)


# RFC 4469 CATENATE, RFC 5550 §5 URL-PARTIAL, RFC 8508 REPLACE, RFC 9394 PARTIAL (after login, as Dovecot announces them).
APPENDX_CAPABILITIES = [b"CATENATE", b"URL-PARTIAL", b"REPLACE", b"PARTIAL"]
# RFC 9051 §2.2.2 / RFC 7888: before a login a literal can only be a user
# name or password; 8 KiB is far above any real one (local policy).
PREAUTH_LITERAL = 8192
# RFC 2177 §3 lets the server send "* OK Still here" while IDLE; every 2
# minutes keeps NAT tables and firewalls (commonly 5 minutes or more) open.
KEEPALIVE = 120.0

S = ImapSession
# RFC 9051 §6 (with the extensions' sections): name -> handler, states,
# whether EXPUNGE may come before the tagged reply (§7.5.1: not FETCH, STORE, SEARCH).
COMMANDS: Dict[str, Entry] = {
    "CAPABILITY": Entry(S._cmd_capability, ANY),          # RFC 9051 §6.1.1
    "NOOP": Entry(S._cmd_noop, ANY),                      # RFC 9051 §6.1.2
    "LOGOUT": Entry(S._cmd_logout, ANY),                  # RFC 9051 §6.1.3
    "ID": Entry(S._cmd_id, ANY),                          # RFC 2971 §3.1
    "STARTTLS": Entry(S._cmd_starttls, NOT_AUTH),         # RFC 9051 §6.2.1
    "AUTHENTICATE": Entry(S._cmd_authenticate, NOT_AUTH),  # RFC 9051 §6.2.2
    "LOGIN": Entry(S._cmd_login, NOT_AUTH),               # RFC 9051 §6.2.3
    "ENABLE": Entry(S._cmd_enable, AUTH),                 # RFC 5161 §3.1
    "COMPRESS": Entry(S._cmd_compress, LOGGED_IN),        # RFC 4978 §3
    "UNAUTHENTICATE": Entry(S._cmd_unauthenticate, LOGGED_IN),  # RFC 8437 §3
    "SELECT": Entry(S._cmd_select, LOGGED_IN),            # RFC 9051 §6.3.2
    "EXAMINE": Entry(S._cmd_examine, LOGGED_IN),          # RFC 9051 §6.3.3
    "CREATE": Entry(S._cmd_create, LOGGED_IN),            # RFC 9051 §6.3.4
    "DELETE": Entry(S._cmd_delete, LOGGED_IN),            # RFC 9051 §6.3.5
    "RENAME": Entry(S._cmd_rename, LOGGED_IN),            # RFC 9051 §6.3.6
    "SUBSCRIBE": Entry(S._cmd_subscribe, LOGGED_IN),      # RFC 9051 §6.3.7
    "UNSUBSCRIBE": Entry(S._cmd_unsubscribe, LOGGED_IN),  # RFC 9051 §6.3.8
    "LIST": Entry(S._cmd_list, LOGGED_IN),                # RFC 9051 §6.3.9
    "LSUB": Entry(S._cmd_lsub, LOGGED_IN),                # RFC 3501 §6.3.9
    "NAMESPACE": Entry(S._cmd_namespace, LOGGED_IN),      # RFC 9051 §6.3.10
    "STATUS": Entry(S._cmd_status, LOGGED_IN),            # RFC 9051 §6.3.11
    "APPEND": Entry(S._cmd_append, LOGGED_IN),            # RFC 9051 §6.3.12
    "IDLE": Entry(S._cmd_idle, LOGGED_IN),                # RFC 9051 §6.3.13
    "CHECK": Entry(S._cmd_noop, SELECTED),                # RFC 3501 §6.4.1
    "CLOSE": Entry(S._cmd_close, SELECTED),               # RFC 9051 §6.4.1
    "UNSELECT": Entry(S._cmd_unselect, SELECTED),         # RFC 9051 §6.4.2
    "EXPUNGE": Entry(S._cmd_expunge, SELECTED),           # RFC 9051 §6.4.3, RFC 4315 §2.1
    "SEARCH": Entry(S._cmd_search, SELECTED, False),      # RFC 9051 §6.4.4
    "FETCH": Entry(S._cmd_fetch, SELECTED, False),        # RFC 9051 §6.4.5
    "STORE": Entry(S._cmd_store, SELECTED, False),        # RFC 9051 §6.4.6
    "COPY": Entry(S._cmd_copy, SELECTED),                 # RFC 9051 §6.4.7
    "MOVE": Entry(S._cmd_move, SELECTED),                 # RFC 6851 §3.1
    "GETQUOTA": Entry(S._cmd_getquota, LOGGED_IN),        # RFC 9208 §4.1.1
    "GETQUOTAROOT": Entry(S._cmd_getquotaroot, LOGGED_IN),  # RFC 9208 §4.1.2
    "SETQUOTA": Entry(S._cmd_setquota, LOGGED_IN),        # RFC 9208 §4.1.3
    "REPLACE": Entry(S._cmd_replace, SELECTED),           # RFC 8508 §3.2, §3.5
    "SETACL": Entry(S._cmd_setacl, LOGGED_IN),            # RFC 4314 §3.1
    "DELETEACL": Entry(S._cmd_deleteacl, LOGGED_IN),      # RFC 4314 §3.2
    "GETACL": Entry(S._cmd_getacl, LOGGED_IN),            # RFC 4314 §3.3
    "LISTRIGHTS": Entry(S._cmd_listrights, LOGGED_IN),    # RFC 4314 §3.4
    "MYRIGHTS": Entry(S._cmd_myrights, LOGGED_IN),        # RFC 4314 §3.5
    "NOTIFY": Entry(S._cmd_notify, LOGGED_IN),            # RFC 5465 §3.1
    "ESEARCH": Entry(S._cmd_esearch, LOGGED_IN, False),   # RFC 7377 §2
    "GETMETADATA": Entry(S._cmd_getmetadata, LOGGED_IN),  # RFC 5464 §4.2
    "SETMETADATA": Entry(S._cmd_setmetadata, LOGGED_IN),  # RFC 5464 §4.3
    "SORT": Entry(S._cmd_sort, SELECTED, False),          # RFC 5256 §3, RFC 5267 §3.1
    "THREAD": Entry(S._cmd_thread, SELECTED, False),      # RFC 5256 §3
    "CANCELUPDATE": Entry(S._cmd_cancelupdate, SELECTED),  # RFC 5267 §4.3.5
}
# RFC 9051 §6.4.9, RFC 4315 §2.1 (UID EXPUNGE), RFC 6851 §3.2 (UID MOVE), RFC 8508 §3.3
# (UID REPLACE), RFC 5256 §3 (UID SORT, UID THREAD).
UID_COMMANDS = frozenset(["FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE",
                          "REPLACE", "SORT", "THREAD"])
del S
