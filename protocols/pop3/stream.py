"""A stored message as a POP3 multi-line response, produced chunk by chunk.

RFC 1939 §3: lines of a multi-line response that begin with "." are
byte-stuffed, and the response ends with CRLF "." CRLF; RFC 1939 §7 TOP sends
the headers, the blank line and k body lines.  Messages are stored with LF
line ends (the Maildir form, store/deliver.py), and files written by other
programs may use either; each bare LF becomes CRLF here, so every octet count
matches the wire.

The file is read by the mail-access service on a worker thread (the
``MessageReader`` contract, protocols/backend/contracts.py): the stream asks
for the next chunk while at most ``CHUNKS_AHEAD`` converted chunks wait for
the socket, and its ``wake`` tells the loop when one arrives.
"""

from collections import deque
from typing import Callable, Deque, Optional

# Octets read from a message file per read; the output is at most twice that
# (LF -> CRLF, dot-stuffing), so memory stays bounded however big the message is.
READ_CHUNK = 64 * 1024
# Converted chunks kept ready ahead of the socket (issue 9 §2: one or two).
CHUNKS_AHEAD = 2


class MessageStream:
    """Produces a message as RFC 1939 §3 multi-line response data, chunk by chunk.

    Reads the file ``READ_CHUNK`` octets at a time through ``reader``, turns
    bare LF into CRLF (stored files are LF, outside programs may write
    either), byte-stuffs lines that start with "." and ends with CRLF "." CRLF
    (adding a CRLF when the message does not end with one).  A CR at the end
    of a chunk is held back until the next chunk shows whether an LF follows.

    ``body_lines`` None → the whole message (RETR); an int k → headers, the
    blank line and k body lines (TOP, RFC 1939 §7).
    """

    def __init__(self, reader, body_lines: Optional[int] = None,
                 wake: Callable[[], None] = lambda: None):
        self._reader = reader
        self._wake = wake
        self._top = body_lines is not None
        self._body_left = body_lines or 0
        self._in_headers = True
        self._at_line_start = True
        self._carry = b""
        self._ready: Deque[bytes] = deque()
        self._reading = False
        self.done = False          # all output produced (some may still wait in _ready)
        self.error: Optional[BaseException] = None

    @property
    def finished(self) -> bool:
        return self.done and not self._ready

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def take(self) -> Optional[bytes]:
        """The next converted chunk, or None while the worker is still reading."""
        self._fill()
        if not self._ready:
            return None
        chunk = self._ready.popleft()
        self._fill()               # keep the worker one chunk ahead of the socket
        return chunk

    def _fill(self) -> None:
        if self.done or self._reading or self.error or len(self._ready) >= CHUNKS_AHEAD:
            return
        self._reading = True
        self._reader.read(READ_CHUNK, self._got)

    def _got(self, result) -> None:
        """The reader's answer: bytes (b"" at the end) or an OSError."""
        self._reading = False
        if self._reader is None:   # closed meanwhile
            return
        if isinstance(result, BaseException):
            self.error = result
        else:
            out = self._convert(result)
            if out or self.done:
                self._ready.append(out)
            else:
                self._fill()       # a lone held-back CR: nothing to send yet, read on
                return
        self._wake()

    def _convert(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        if not chunk:  # end of file
            return self._finish(self._emit(data) if data else b"")
        self._carry = b""
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        out = self._emit(data)
        return self._finish(out) if self.done else out

    def _finish(self, out: bytes) -> bytes:
        self.done = True
        self.close()
        return out + (b".\r\n" if self._at_line_start else b"\r\n.\r\n")

    def _emit(self, data: bytes) -> bytes:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._top:
            return self._emit_top(data)
        return self._stuff(data)

    def _stuff(self, data: bytes) -> bytes:
        """Dot-stuff ``data`` (CRLF form) given the line position before it."""
        if not data:
            return data
        out = data.replace(b"\n.", b"\n..")
        if self._at_line_start and out.startswith(b"."):
            out = b"." + out
        self._at_line_start = out.endswith(b"\n")
        return out

    def _emit_top(self, data: bytes) -> bytes:
        """RFC 1939 §7 TOP: header lines, the blank line, then k body lines."""
        out = []
        pos = 0
        while pos < len(data) and not self.done:
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            line = data[pos:end]
            blank = self._at_line_start and line == b"\r\n"
            if self._in_headers or self._body_left > 0:
                out.append(self._stuff(line))
            if self._in_headers:
                if blank:
                    self._in_headers = False
                    self.done = self._body_left == 0
            elif nl >= 0:
                self._body_left -= 1
                self.done = self._body_left <= 0
            pos = end
        return b"".join(out)
