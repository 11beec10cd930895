"""The machinery under every IMAP command handler (see protocols/imap/session.py).

``SessionCore`` holds what the handler mixins share: the output queue, the
generator driver that runs one command at a time across backend calls, the
selected folder and its view, the refresh before a tagged reply, and the
session's end (logout, EOF, timeout, shutdown) with its log line.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Deque, List, Optional, Tuple

from protocols import sasl
from protocols.backend.contracts import FolderChanges, MailboxError
from protocols.base import SessionContext
from protocols.imap import wire
from protocols.imap.compress import CompressError, Deflater, Inflater
from protocols.imap.view import FolderView

log = logging.getLogger("mailsrv.imap")

OK, NO, BAD = b"OK", b"NO", b"BAD"
# A tagged reply: status, text, response code (wire.response_code) or None.
Reply = Optional[Tuple[bytes, str, Optional[bytes]]]
# Output held before a running FETCH waits for the client to read it: a
# FETCH 1:* BODY[] of a big folder streams instead of filling memory (the
# loop's write buffer drains it; local policy, as POP3's RETR chunks).
OUTPUT_HIGH_WATER = 256 * 1024
# Input buffered beyond the command being read (its literals included) while
# a command waits for the backend: RFC 9051 §5.5 lets clients pipeline, none
# needs more than this (about 4,000 "UID FETCH n FLAGS" lines); beyond it the
# connection gets BYE.  The "commands in flight" bound of issue 10.
MAX_PIPELINED = 128 * 1024
# Characters refused in a mailbox name by the session (issue 10, Security;
# the backend checks again): control characters, C1 controls and the line
# and paragraph separators (RFC 6855 §3); "*" and "%" are LIST wildcards
# (RFC 9051 §6.3.9) and cannot be listed back unambiguously.
_NAME_BAD = (set(chr(c) for c in range(0x20)) | set(chr(c) for c in range(0x7f, 0xa0))
             | {"\u2028", "\u2029", "*", "%"})


class Refusal(Exception):
    """A handler's NO (or BAD) with its response code, raised to the command boundary."""

    def __init__(self, status: bytes, text: str, code: Optional[str] = None, args=None):
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = wire.response_code(code, args) if code else None


def check_name(name: str, creating: bool = False) -> None:
    """Mailbox names that could leave the user's folders are refused here
    (issue 10, Security): "..", a leading "." in any level, empty levels,
    control characters; for a new name also the wildcards."""
    if name.upper() == "INBOX":
        return
    levels = name.split("/")
    bad = (not name or ".." in name or any(not lvl or lvl.startswith(".") for lvl in levels)
           or any(ch in _NAME_BAD for ch in name if creating or ch not in "*%"))
    if bad:
        raise Refusal(NO, "Invalid mailbox name %r" % name[:100], "CANNOT")


class SessionCore:
    """Shared state and machinery of ImapSession (see the module docstring)."""

    def __init__(self, ctx: SessionContext, config, backend):
        self.ctx = ctx
        self.config = config
        self.backend = backend
        self.want_tls = False
        self.rev2 = False          # ENABLE IMAP4rev2 (RFC 9051 §6.3.1)
        self.utf8 = False          # ENABLE UTF8=ACCEPT (RFC 6855 §3)
        self._out: Deque[bytes] = deque()
        self._out_size = 0
        self._closing = False
        self._processing = False
        self._current = None       # the running command's generator
        self._line_waiter: Optional[Callable] = None   # AUTHENTICATE / IDLE wait for a line
        self._drain_waiter: Optional[Callable] = None  # a FETCH waits for output to drain
        self._idling = False
        self._idle_since = 0.0
        self._idle_refreshing = False
        self._end_after: Optional[str] = None   # close once the running command answered
        self._starttls = False
        self._compress_next = False   # COMPRESS answered OK: switch after it (RFC 4978 §3)
        self._deflate: Optional[Deflater] = None
        self._inflate: Optional[Inflater] = None
        self._plain_head = b""         # output queued before the switch, sent as is
        self._preauth_base = 0         # commands counted before a (re)login
        self._shutdown = False
        self._shutdown_text = "Server shutting down"
        self._user: Optional[str] = None
        self._account = None
        self._folder = None
        self._view: Optional[FolderView] = None
        self._unwatch: Optional[Callable] = None
        self._dirty = False        # the folder may have changed (watch callback)
        self._saved: Tuple[int, ...] = ()   # SEARCH RETURN (SAVE) UIDs (RFC 5182)
        self._lines = 0
        self._bad_count = 0
        self._commands = 0
        self._auth_failures = 0
        self.counts = {"fetched": 0, "stored": 0, "appended": 0, "expunged": 0, "copied": 0}

    # -- the session protocol (protocols/base.py) --------------------------

    @property
    def closed(self) -> bool:
        return self._closing and not self._out and not self._plain_head

    @property
    def busy(self) -> bool:
        """A command is waiting for the backend (an APPEND's fsync, a MOVE),
        not for the client (IDLE, an AUTHENTICATE line)."""
        return self._current is not None and self._line_waiter is None

    @property
    def progress(self) -> int:
        """Line ends received (protocols/base.py): the loop's idle clock."""
        return self._lines

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._terminate("eof")
            return
        if self._closing or self.want_tls:
            return   # RFC 9051 §6.2.1: nothing pipelined after STARTTLS is read
        if self._inflate is not None:
            self._inflate.feed(data)
        else:
            self._take(data)
        self._inflate_input()

    def _take(self, data: bytes) -> None:
        """Command octets (inflated, under COMPRESS) to the reader, within its limits."""
        self._lines += data.count(b"\n")
        self._reader.feed(data)
        if self._reader.buffered > self._total_limit() + MAX_PIPELINED:
            self._fatal("Too much input pipelined")
            return
        self._process()

    def _inflate_input(self) -> None:
        """RFC 4978 §3: under COMPRESS, input is inflated before the reader, a
        bounded step at a time with the limits checked after each (compress.py)."""
        while self._inflate is not None and not (self._closing or self.want_tls):
            try:
                chunk = self._inflate.read()
            except CompressError as exc:
                log.info("imap compress error user=%s peer=%s: %s", self._user, self.ctx.peer_ip, exc)
                self._fatal("Compression error: %s" % exc)
                return
            if not chunk:
                return
            self._take(chunk)

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if self._deflate is not None:
            # RFC 4978 §4: each batch ends with a sync flush (compress.py)
            head, self._plain_head = self._plain_head, b""
            data = head + self._deflate.compress(data)
        if self._drain_waiter is not None:
            waiter, self._drain_waiter = self._drain_waiter, None
            waiter(None)
        self._after_drain()
        return data

    def _after_drain(self) -> None:
        """The output was taken: a mixin's held pushes may go (NOTIFY, notify.py)."""

    def tls_started(self, info: dict) -> None:
        """RFC 9051 §6.2.1: TLS is up; the client asks CAPABILITY again."""
        self.ctx.tls_active = True
        self.ctx.tls_info = info
        self.want_tls = False
        self._reader = type(self._reader)(max_literal=self._reader.max_literal)
        self._process()

    def timeout(self) -> None:
        """RFC 9051 §7.1.5: BYE on autologout."""
        log.info("imap timeout user=%s peer=%s", self._user, self.ctx.peer_ip)
        self._fatal("Autologout; idle for too long")

    def shutdown(self) -> None:
        """Server stopping: BYE now, or after the command in flight answers."""
        if self._closing:
            return
        if self.busy:
            self._shutdown = True
            return
        self._fatal("Server shutting down")

    # -- output and the end ---------------------------------------------------

    def _emit(self, data: bytes) -> None:
        if data and not (self._closing and self._end_after == "gone"):
            self._out.append(data)
            self._out_size += len(data)

    def _fatal(self, text: str) -> None:
        """Untagged BYE after what is queued, then close (RFC 9051 §7.1.5)."""
        if self._closing:
            return
        self._emit(wire.status_line(None, b"BYE", text))
        self._finish("bye")

    def _terminate(self, why: str) -> None:
        """The connection is gone: nothing more is sent."""
        self._out.clear()
        self._out_size = 0
        self._plain_head = b""
        self._finish(why)
        self._end_after = "gone"

    def _finish(self, why: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._line_waiter = self._drain_waiter = None
        self._idling = False
        self._release()
        c = self.counts
        log.info("imap session ended (%s) user=%s peer=%s commands=%d fetched=%d stored=%d "
                 "appended=%d copied=%d expunged=%d", why, self._user, self.ctx.peer_ip,
                 self._commands, c["fetched"], c["stored"], c["appended"], c["copied"], c["expunged"])
        if self._deflate is not None:
            log.info("imap compress totals user=%s peer=%s in=%d/%d out=%d/%d (wire/plain)",
                     self._user, self.ctx.peer_ip, self._inflate.wire, self._inflate.plain,
                     self._deflate.wire, self._deflate.plain)

    def _release(self) -> None:
        self._close_folder()
        if self._account is not None:
            account, self._account = self._account, None
            account.close()

    def _close_folder(self) -> None:
        if self._unwatch is not None:
            unwatch, self._unwatch = self._unwatch, None
            unwatch()
        if self._folder is not None:
            folder, self._folder = self._folder, None
            folder.close()
        self._view = None
        self._saved = ()

    # -- the command driver -------------------------------------------------------

    def _start(self, gen) -> None:
        self._current = gen
        self._step(gen, None)

    def _step(self, gen, value) -> None:
        """Run ``gen`` until it waits for a ``done`` that has not come yet, or ends.

        Each yield is a function taking ``done``; an answer given at once
        (the fakes) continues the loop here, a later one (the real backend,
        on the loop thread) through ``_resumed``."""
        while True:
            try:
                call = gen.send(value)
            except StopIteration:
                self._command_over()
                return
            box: List[object] = []
            waiting = [False]

            def done(result, box=box, waiting=waiting):
                if waiting[0]:
                    waiting[0] = False
                    self._resumed(gen, result)
                elif not box:
                    box.append(result)
            call(done)
            if not box:
                waiting[0] = True
                return
            value = box[0]

    def _resumed(self, gen, result) -> None:
        if self._closing or gen is not self._current:
            gen.close()
            _discard(result)
            return
        try:
            self._step(gen, result)
            self._process()
            self._inflate_input()
        except Exception:
            # a bug: the client hears BYE instead of waiting forever, and the
            # exception goes on to whoever called done (it is logged there)
            self._fatal("Internal server error")
            raise
        finally:
            self.ctx.wake()

    def _command_over(self) -> None:
        self._current = None
        if self._starttls:
            self._starttls = False
            self.want_tls = True
        if self._compress_next:
            self._start_compression()
        if self._end_after == "logout":
            self._finish("logout")
        elif self._shutdown:
            self._fatal(self._shutdown_text)

    def _start_compression(self) -> None:
        """RFC 4978 §3: compress "starting immediately after the CRLF which
        ends the tagged OK" (what is queued so far goes out as it is), and
        the client compresses from the first command after COMPRESS: octets
        already read past it are compressed ones, inflated by the callers."""
        self._compress_next = False
        self._plain_head = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        self._deflate, self._inflate = Deflater(), Inflater()
        self._inflate.feed(self._reader.take_unread())

    def _wait_line(self, done: Callable) -> None:
        """Yielded by AUTHENTICATE: the next client line comes to ``done``."""
        self._line_waiter = done

    def _wait_drain(self, done: Callable) -> None:
        """Yielded by FETCH between messages: go on once output is low."""
        if self._out_size < OUTPUT_HIGH_WATER:
            done(None)
        else:
            self._drain_waiter = done

    def _ask(self, method, *args):
        """Call a backend method with ``done`` last; a MailboxError or an
        OSError in its answer becomes the command's NO (RFC 5530 codes)."""
        result = yield lambda done: method(*args, done)
        if isinstance(result, MailboxError):
            raise Refusal(NO, result.text, result.code or "CANNOT")
        if isinstance(result, BaseException):
            log.error("imap backend error user=%s peer=%s: %r", self._user, self.ctx.peer_ip, result)
            raise Refusal(NO, "Mailbox temporarily unavailable, try again", "UNAVAILABLE")
        return result

    # -- the selected folder's updates (RFC 9051 §5.2, §7.5.1) -----------------

    def _sync(self, allow_expunge: bool):
        """Refresh if the folder may have changed, then send what is due."""
        if self._folder is None:
            return
        if self._dirty:
            self._dirty = False
            folder = self._folder
            changes = yield folder.refresh
            self._took_changes(folder, changes)
        if self._view is not None:
            self._emit(self._view.flush(allow_expunge))

    def _took_changes(self, folder, changes) -> None:
        if folder is not self._folder:
            return
        if isinstance(changes, FolderChanges):
            self._view.apply(changes)
        else:
            log.error("imap refresh failed user=%s folder=%r: %r", self._user, folder.name, changes)

    def _on_change(self) -> None:
        """The folder's watch callback (the change hub): IDLE hears at once."""
        self._dirty = True
        if self._idling and not self._idle_refreshing and self._folder is not None:
            self._idle_refresh()

    def _idle_refresh(self) -> None:
        self._dirty = False
        self._idle_refreshing = True
        folder = self._folder

        def refreshed(changes) -> None:
            self._idle_refreshing = False
            if self._closing:
                return
            self._took_changes(folder, changes)
            if self._idling and self._view is not None:
                self._emit(self._view.flush(True))   # RFC 2177 §3: EXPUNGE allowed while idling
                if self._dirty:
                    self._idle_refresh()
                self.ctx.wake()
        folder.refresh(refreshed)

    # -- authentication policy (as POP3's) --------------------------------------

    def _plaintext_ok(self) -> bool:
        """RFC 2595 §2.3, RFC 9051 §6.2.3: clear-text passwords only over TLS, unless configured."""
        c = self.config
        return (self.ctx.tls_active or c.allow_plaintext_auth
                or (c.plaintext_auth_loopback and self.ctx.is_loopback))

    def _mechanisms(self) -> List[str]:
        return sasl.offered_mechanisms(self._plaintext_ok())


def _discard(result) -> None:
    """An answer that came after the session ended: release what it opened."""
    if result is not None and not isinstance(result, BaseException) and hasattr(result, "close") \
            and (hasattr(result, "refresh") or hasattr(result, "list")):
        result.close()
