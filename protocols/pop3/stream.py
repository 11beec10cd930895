"""A stored message as a POP3 multi-line response, produced chunk by chunk.

RFC 1939 §3: lines of a multi-line response that begin with "." are
byte-stuffed, and the response ends with CRLF "." CRLF; RFC 1939 §7 TOP sends
the headers, the blank line and k body lines.  Messages are stored with LF
line ends (the Maildir form, store/deliver.py), and files written by other
programs may use either; each bare LF becomes CRLF here, so every octet count
matches the wire.
"""

from typing import Optional

# Octets read from a message file per data_to_send() call; the output is at
# most twice that (LF -> CRLF, dot-stuffing), so memory stays bounded however
# big the message is.
READ_CHUNK = 64 * 1024


class MessageStream:
    """Produces a message as RFC 1939 §3 multi-line response data, chunk by chunk.

    Reads the file ``READ_CHUNK`` octets at a time, turns bare LF into CRLF
    (stored files are LF, outside programs may write either), byte-stuffs
    lines that start with "." and ends with CRLF "." CRLF (adding a CRLF
    when the message does not end with one).  A CR at the end of a chunk is
    held back until the next chunk shows whether an LF follows it.

    ``body_lines`` None → the whole message (RETR); an int k → headers, the
    blank line and k body lines (TOP, RFC 1939 §7).
    """

    def __init__(self, fileobj, body_lines: Optional[int] = None):
        self._file = fileobj
        self._top = body_lines is not None
        self._body_left = body_lines or 0
        self._in_headers = True
        self._at_line_start = True
        self._carry = b""
        self.done = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def next_chunk(self) -> bytes:
        """The next piece of output; raises OSError when the file read fails."""
        if self.done:
            return b""
        data = self._carry + self._file.read(READ_CHUNK)
        if len(data) == len(self._carry):  # end of file
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
