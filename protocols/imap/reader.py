"""The resumable IMAP command reader (RFC 9051 §2.2, §4.3, §7.5; RFC 7888).

Fed bytes with ``feed``; ``next_event`` returns one of

- ``Command(raw, tag)``: one complete command, its lines and literal octets
  as received (each ``{n}`` / ``{n+}`` / ``~{n}`` marker followed by CRLF and
  the n octets), ending with CRLF; grammar.py parses it;
- ``NeedContinuation(size, tag)``: a synchronizing literal was announced;
  the session answers ``+ Ready`` (RFC 9051 §7.5: never a bare ``+``) and
  calls ``continue_literal()``, or answers the tag with NO/BAD and calls
  ``refuse_literal()``.  The same event comes back until it does one;
- an ``ImapParseError``: ``at_boundary`` True means the command was
  dropped whole and the session answers BAD and goes on; False means
  the stream cannot be trusted any more: BYE and close;
- ``None``: more bytes are needed (``waiting_for`` says how many literal
  octets are still due, 0 while reading a line).

Limits and what happens at each (tests/test_imap_grammar.py proves them):

- a command's text (literal octets not counted) over ``max_line``: the rest
  of the line is skipped without being kept (only its last few octets, to
  see a literal marker ending it), then a tagged BAD; a literal announced at
  the end of such a line is handled as below, never taken for commands;
- a synchronizing literal over ``max_literal`` (the APPENDLIMIT the caller
  announces, RFC 7889): BAD ``[TOOBIG]`` (RFC 4469 §4) at once, without ``+``,
  so the client sends no octets (RFC 9051 §4.3);
- a non-synchronizing literal (``{n+}``, RFC 7888 §3) over ``max_literal``,
  or over 4096 under LITERAL- (RFC 7888 §5): its octets are read and
  discarded, the rest of the command too, then BAD ``[TOOBIG]``; above
  ``DISCARD_MAX`` the reader gives up with a BYE-class error (RFC 7888 §4
  allows both);
- octets already received when the session refuses a synchronizing literal
  can only be the literal sent without waiting for ``+``: a BYE-class error,
  so they are never read as commands.

The reader never holds more than the current command (bounded by
``max_line`` plus its accepted literals) and what the caller fed and has not
pulled yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

from protocols.imap.grammar import LITERAL_MINUS_MAX, MAX_LINE, ImapParseError

# RFC 7888 §4 lets a server either read and discard an over-limit
# non-synchronizing literal or close the connection.  We discard up to 64 MiB
# (about twice the largest attachment limits of common providers, so a client
# that sent a too-big message hears TOOBIG and can go on) and close beyond.
DISCARD_MAX = 64 * 1024 * 1024
# A literal marker is at most "~{" + 20 digits + "+}" + CR: the tail kept of
# a line being skipped must hold one.
_TAIL = 32

_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_TAG_AT_START = re.compile(rb'([^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+) ')


@dataclass(frozen=True)
class Command:
    raw: bytes
    tag: Optional[bytes]


@dataclass(frozen=True)
class NeedContinuation:
    size: int
    tag: Optional[bytes]


Event = Union[Command, NeedContinuation, ImapParseError, None]

_LINE, _LITERAL, _AWAIT_PLUS, _CLOSED = "line", "literal", "await-plus", "closed"


class CommandReader:
    """Bytes in, complete commands out (see the module docstring)."""

    def __init__(self, max_literal: int, max_line: int = MAX_LINE,
                 literal_minus: bool = False):
        self.max_literal = max_literal
        self.max_line = max_line
        self.literal_minus = literal_minus
        self._buf = bytearray()
        self._state = _LINE
        self._fatal: Optional[ImapParseError] = None
        self._reset()

    def _reset(self) -> None:
        self._cmd = bytearray()
        self._line_len = 0
        self._tag: Optional[bytes] = None
        self._error: Optional[ImapParseError] = None  # set while skipping
        self._tail = b""
        self._remaining = 0
        self._keep = True
        self._pending: Optional[NeedContinuation] = None

    @property
    def waiting_for(self) -> int:
        """Literal octets still due (0 when reading a line)."""
        return self._remaining if self._state == _LITERAL else 0

    @property
    def buffered(self) -> int:
        """Octets held: the unread input plus the command being assembled."""
        return len(self._buf) + len(self._cmd)

    def feed(self, data: bytes) -> None:
        if self._state != _CLOSED:
            self._buf += data

    def take_unread(self) -> bytes:
        """Octets fed and not read yet, given back (at a command boundary:
        the session's COMPRESS, RFC 4978 §3, inflates them instead)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def continue_literal(self) -> None:
        """The session sent ``+ ...``: the literal's octets may come."""
        assert self._pending is not None
        self._remaining, self._keep = self._pending.size, True
        self._pending = None
        self._state = _LITERAL

    def refuse_literal(self) -> None:
        """The session answered the tag instead of ``+``: drop the command."""
        assert self._pending is not None
        self._reset()
        self._state = _LINE
        if self._buf:
            self._state = _CLOSED
            self._buf.clear()
            self._fatal = ImapParseError(
                "literal octets sent before the server's continuation", at_boundary=False)

    def next_event(self) -> Event:
        while True:
            if self._state == _CLOSED:
                fatal, self._fatal = self._fatal, None
                return fatal
            if self._state == _AWAIT_PLUS:
                return self._pending
            if self._state == _LITERAL:
                if not self._take_literal():
                    return None
                continue
            i = self._buf.find(b"\n")
            if i < 0:
                self._partial_line()
                return None
            line = bytes(self._buf[:i])
            del self._buf[:i + 1]
            event = self._end_of_line(line)
            if event is not None:
                return event

    def _take_literal(self) -> bool:
        take = min(self._remaining, len(self._buf))
        if self._keep:
            self._cmd += self._buf[:take]
        del self._buf[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _LINE
        return True

    def _skip(self, message: str, code: Optional[str] = None) -> None:
        if self._error is None:
            self._error = ImapParseError(message, tag=self._tag, code=code)
            self._cmd = bytearray()

    def _note_tag(self, text: bytes) -> None:
        if self._tag is None and not self._cmd and not self._error:
            m = _TAG_AT_START.match(text)
            self._tag = m.group(1) if m else None

    def _partial_line(self) -> None:
        """No LF yet: enforce the line limit now, keep only a tail if over."""
        if self._error is None and self._line_len + len(self._buf) <= self.max_line:
            return
        self._note_tag(bytes(self._buf[:64]))
        self._skip("command line longer than %d octets" % self.max_line)
        self._tail = (self._tail + bytes(self._buf))[-_TAIL:]
        self._buf.clear()

    def _end_of_line(self, text: bytes) -> Event:
        """A line ended.

        DEVIATION(RFC 9051 §2.2): a bare LF ends a line as CRLF does (the
        stored command gets CRLF), as Dovecot accepts it; clients scripted
        with printf and netcat send LF alone.
        """
        if self._error is not None:
            text, self._tail = (self._tail + text)[-_TAIL:], b""
        text = text[:-1] if text.endswith(b"\r") else text
        self._note_tag(text)
        if self._error is not None:
            look = text
        elif self._line_len + len(text) + 2 > self.max_line:
            self._skip("command line longer than %d octets" % self.max_line)
            look = text[-_TAIL:]
        else:
            look = text
            self._cmd += text + b"\r\n"
            self._line_len += len(text) + 2
        m = _MARKER.search(look)
        if not m:
            return self._finish()
        size = int(m.group(2)) if len(m.group(2)) <= 20 else DISCARD_MAX + 1
        if m.group(3):
            return self._non_sync(size)
        return self._sync(size)

    def _non_sync(self, size: int) -> Event:
        """{n+}: the octets follow at once (RFC 7888 §3)."""
        too_big = size > self.max_literal or (self.literal_minus and size > LITERAL_MINUS_MAX)
        if too_big:
            self._skip("literal of %d octets is over the limit" % size, code="TOOBIG")
        if self._error is not None and size > DISCARD_MAX:
            self._state = _CLOSED
            self._buf.clear()
            self._reset()
            return ImapParseError("literal of %d octets is over the limit" % size,
                                  at_boundary=False, code="TOOBIG")
        self._remaining, self._keep = size, self._error is None
        self._state = _LITERAL
        return None

    def _sync(self, size: int) -> Event:
        """{n}: the client waits for "+" (RFC 9051 §4.3, §7.5)."""
        if self._error is not None:
            return self._finish()  # no "+": the client sends no octets
        if size > self.max_literal:
            self._skip("literal of %d octets is over the limit" % size, code="TOOBIG")
            if self._buf:
                # octets after a refused {n} can only be the literal sent
                # without waiting (RFC 9051 §4.3): never read them as commands
                self._state = _CLOSED
                self._buf.clear()
                self._reset()
                return ImapParseError("literal of %d octets is over the limit and sent without "
                                      "waiting" % size, at_boundary=False, code="TOOBIG")
            return self._finish()
        self._pending = NeedContinuation(size, self._tag)
        self._state = _AWAIT_PLUS
        return self._pending

    def _finish(self) -> Event:
        error, raw, tag = self._error, bytes(self._cmd), self._tag
        self._reset()
        self._state = _LINE
        return error if error is not None else Command(raw, tag)
