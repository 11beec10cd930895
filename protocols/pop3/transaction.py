"""POP3 TRANSACTION state commands (RFC 1939 §5, §7): STAT, LIST, UIDL,
RETR, TOP, DELE, NOOP, RSET, as a mixin of protocols/pop3/server.py's
Pop3Session, which holds the state they read (``_maildrop``, ``_deleted``)
and the output queue they write.  Like smtp/transfer.py beside smtp/server.py:
the session keeps the state machine and the command table, this module the
handlers of one state.  Every disk step goes through the mail-access service
on a worker (``_maildrop``'s methods take ``done``)."""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple, Union

from protocols.base import ProtocolError
from protocols.pop3.stream import MessageStream

log = logging.getLogger("mailsrv.pop3")


def _line(text: Union[str, bytes]) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return data + b"\r\n"


def _multiline(first: str, lines: List[bytes]) -> bytes:
    """RFC 1939 §3: a multi-line response, byte-stuffed, ending CRLF "." CRLF."""
    out = [_line(first)]
    for item in lines:
        out.append(_line(b"." + item if item.startswith(b".") else item))
    out.append(b".\r\n")
    return b"".join(out)


class TransactionCommands:
    """The TRANSACTION handlers (see the module docstring)."""

    @staticmethod
    def _text_arg(raw: bytes) -> Optional[str]:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _totals(self) -> Tuple[int, int]:
        live = [m for i, m in enumerate(self._maildrop.messages) if i not in self._deleted]
        return len(live), sum(m.size for m in live)

    def _msg_arg(self, arg: bytes) -> Optional[int]:
        """A message number (RFC 1939 §3) → 0-based index; ProtocolError (-ERR) if none."""
        if not arg.isdigit() or len(arg) > 9:
            raise ProtocolError(_line("-ERR invalid message number"))
        n = int(arg)
        if not 1 <= n <= len(self._maildrop.messages):
            raise ProtocolError(_line("-ERR no such message"))
        if n - 1 in self._deleted:
            raise ProtocolError(_line("-ERR message %d already deleted" % n))  # RFC 1939 §5
        return n - 1

    def _args(self, rest: bytes, low: int, high: int) -> Optional[List[bytes]]:
        args = rest.split()
        if not low <= len(args) <= high:
            raise ProtocolError(_line("-ERR wrong number of arguments"))
        return args

    def _listing(self, rest: bytes, first: str, value: Callable[[object], bytes]) -> None:
        """LIST / UIDL: one message, or all non-deleted ones (RFC 1939 §5, §7)."""
        args = self._args(rest, 0, 1)
        if args is None:
            return
        msgs = self._maildrop.messages
        if args:
            i = self._msg_arg(args[0])
            if i is not None:
                self._send(b"+OK %d %s" % (i + 1, value(msgs[i])))
            return
        # Each scan line starts with a digit (RFC 1939 §5 scan listing, §7 unique-id
        # listing), so none needs byte-stuffing: one join builds the whole response.
        deleted = self._deleted
        body = b"".join([b"%d %s\r\n" % (i + 1, value(m)) for i, m in enumerate(msgs) if i not in deleted])
        self._out.append(_line(first) + body + b".\r\n")

    def _cmd_stat(self, rest: bytes) -> None:
        """RFC 1939 §5 STAT: "+OK count octets" over non-deleted messages."""
        if self._args(rest, 0, 0) is not None:
            self._send("+OK %d %d" % self._totals())

    def _cmd_list(self, rest: bytes) -> None:
        """RFC 1939 §5 LIST [msg]: exact CRLF-form sizes."""
        count, octets = self._totals()
        self._listing(rest, "+OK %d messages (%d octets)" % (count, octets),
                      lambda m: b"%d" % m.size)

    def _cmd_uidl(self, rest: bytes) -> None:
        """RFC 1939 §7 UIDL [msg]: the unique-id listing."""
        self._listing(rest, "+OK unique-id listing follows", lambda m: m.uid.encode("ascii", "replace"))

    def _open_stream(self, i: int, body_lines: Optional[int], first: str) -> None:
        """Open message ``i`` on a worker; input waits until it is open."""
        self._waiting = True
        self._maildrop.open_message(i, lambda result: self._stream_opened(i, body_lines, first, result))

    def _stream_opened(self, i: int, body_lines: Optional[int], first: str, result: object) -> None:
        """``open_message``'s answer: a MessageReader, or an OSError."""
        self._waiting = False
        if self._closing:
            if not isinstance(result, BaseException):
                result.close()
            return
        if isinstance(result, BaseException):
            log.error("pop3 open message failed user=%s: %r", self._user, result)
            self._send("-ERR [SYS/TEMP] cannot read message %d" % (i + 1))  # RFC 3206
        else:
            self._send(first)
            self._out.append(MessageStream(result, body_lines, self.ctx.wake))
            if body_lines is None:      # RETR, not TOP: the message is now \Seen
                self._retrieved += 1
                self._maildrop.mark_seen(i, self._marked_seen)
        self._resume()

    def _marked_seen(self, result: object) -> None:
        if isinstance(result, BaseException):
            log.error("pop3 mark_seen failed user=%s: %r", self._user, result)

    def _cmd_retr(self, rest: bytes) -> None:
        """RFC 1939 §5 RETR msg: "+OK n octets", the message, "."; marks \\Seen."""
        args = self._args(rest, 1, 1)
        i = None if args is None else self._msg_arg(args[0])
        if i is None:
            return
        self._open_stream(i, None, "+OK %d octets" % self._maildrop.messages[i].size)

    def _cmd_top(self, rest: bytes) -> None:
        """RFC 1939 §7 TOP msg n: headers, blank line, n body lines."""
        args = self._args(rest, 2, 2)
        i = None if args is None else self._msg_arg(args[0])
        if i is None:
            return
        if not args[1].isdigit() or len(args[1]) > 9:
            self._send("-ERR invalid line count")
            return
        self._open_stream(i, int(args[1]), "+OK top of message follows")

    def _cmd_dele(self, rest: bytes) -> None:
        """RFC 1939 §5 DELE msg: mark deleted; removed only at QUIT (§6)."""
        args = self._args(rest, 1, 1)
        i = None if args is None else self._msg_arg(args[0])
        if i is not None:
            self._deleted.add(i)
            self._send("+OK message %d deleted" % (i + 1))

    def _cmd_noop(self, rest: bytes) -> None:
        """RFC 1939 §5 NOOP."""
        if self._args(rest, 0, 0) is not None:
            self._send("+OK")

    def _cmd_rset(self, rest: bytes) -> None:
        """RFC 1939 §5 RSET: unmark all messages marked as deleted."""
        if self._args(rest, 0, 0) is not None:
            self._deleted.clear()
            self._send("+OK maildrop has %d messages (%d octets)" % self._totals())
