"""Message content for the SMTP server: DATA framing, content checks, trace.

* ``DataReader``: finds the end of a DATA block, exactly CRLF "." CRLF
  (RFC 5321 §4.1.1.4), and dot-unstuffs (RFC 5321 §4.5.2) as the data
  arrives, holding back 4 octets.  A bare CR or LF never ends the data:
  "<LF>.<LF>", "<CR>.<CR>", "<CRLF>.<LF>" ... are content, so a message
  cannot be smuggled behind one (CVE-2023-51764 class, "SMTP smuggling").
  Scanning uses ``bytes.find``, so a 25 MB message costs a few C-level
  passes, not a Python loop per octet.
* ``ContentCheck``: the refusals (size, bare CR/LF, NUL, text line length,
  empty message, loop), decided chunk by chunk: no message is held whole.
* ``DotStuffer``: the sending side (the relay's client), piece by piece.
* ``count_received`` and ``received_header``: loop detection (RFC 5321
  §6.3) and the trace field (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3).

Bytes in, bytes out; the date comes from the caller (the session's clock).
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from protocols.message import parse_header, trace_field

Reply = Tuple[int, str, str]

# RFC 5321 §4.5.3.1.6: "The maximum total length of a text line including
# the <CRLF> is 1000 octets (not counting the leading dot duplicated for
# transparency)."
MAX_TEXT_LINE = 1000

_END = b"\r\n.\r\n"
# A Received: field starts a line of the header block; continuation lines
# start with WSP (RFC 5322 §2.2.3), so they can never match.


class DataReader:
    """Finds the end of one DATA block, CRLF "." CRLF (RFC 5321 §4.1.1.4), and
    hands out the content as it arrives, dot-unstuffed (RFC 5321 §4.5.2).

    The buffer always starts with two octets already handed out (at first a
    virtual CRLF: the data begins at the start of a line, after the DATA
    command's CRLF, so ".\\r\\n" right away is an empty message); they give
    the context for a stuffed dot or the terminator split across two reads.
    Only the last 4 octets (the longest proper prefix of CRLF "." CRLF) are
    held back, so the buffer holds 6 octets plus one read, whatever the
    message size.
    """

    def __init__(self):
        self.buf = bytearray(b"\r\n")
        self.received = 0

    def feed(self, data: bytes) -> Tuple[bytes, Optional[bytes]]:
        """Add input; returns (content ready, leftover input or None).

        ``leftover`` is None until the end of data was seen; then it holds
        the input that followed the terminator (pipelined commands).
        """
        self.buf += data
        self.received += len(data)
        end = self.buf.find(_END)
        if end >= 0:
            content = _unstuff_after(self.buf, end + 2)
            leftover = bytes(self.buf[end + 5:])
            self.buf = bytearray()
            return content, leftover
        cut = len(self.buf) - 4
        if cut <= 2:
            return b"", None
        content = _unstuff_after(self.buf, cut)
        del self.buf[:cut - 2]
        return content, None


def _unstuff_after(buf: bytearray, cut: int) -> bytes:
    """``buf[2:cut]`` with the transparency dots removed (RFC 5321 §4.5.2: a
    line that starts with "." has it removed); ``buf[:2]`` is context only."""
    part = bytes(buf[:cut])
    if b"\r\n." in part:
        part = part.replace(b"\r\n.", b"\r\n")
    return part[2:]


def has_bare_cr_or_lf(data: bytes) -> bool:
    """True if a CR or LF occurs other than as the pair CRLF (RFC 5321 §2.3.8:
    "CR and LF MUST only occur together as CRLF" in SMTP text)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


# Octets of the header block kept for loop detection (RFC 5321 §6.3): 30
# Received fields of a few hundred octets each fit many times over.  Beyond
# it the header is not examined (the rest of the message streams to disk).
HEAD_LIMIT = 64 * 1024


class ContentCheck:
    """The refusals for a message, decided incrementally on its unstuffed
    chunks (DATA) or raw chunks (BDAT), so the message is never held whole.

    ``feed`` each chunk in order, then ``refusal`` once the end was read.
    Holds a few counters and at most ``HEAD_LIMIT`` octets of header.
    """

    def __init__(self, max_size: int, max_line: int = MAX_TEXT_LINE):
        self.max_size = max_size
        self.max_line = max_line
        self.size = 0
        self.overflow = False
        self.bare = False
        self.nul = False
        self.eight_bit = False
        self.longest = 0
        self._line = 0          # octets of the current line so far
        self._cr = False        # the last chunk ended in CR (its LF may follow)
        self._head = bytearray()
        self._head_done = False

    @property
    def failed(self) -> bool:
        """A refusal is certain already (the rest need not be stored)."""
        return (self.overflow or self.bare or self.nul
                or bool(self.max_line) and self.longest > self.max_line)

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.overflow or self.size > self.max_size:
            self.overflow = True
            return
        if not self._head_done:
            start = max(0, len(self._head) - 3)
            self._head += data[:HEAD_LIMIT - len(self._head)]
            self._head_done = (len(self._head) >= HEAD_LIMIT
                               or self._head.find(b"\r\n\r\n", start) >= 0)
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        if not self.nul and b"\0" in data:
            self.nul = True
        seg = b"\r" + data if self._cr else data
        self._cr = seg.endswith(b"\r")
        if self._cr:
            seg = seg[:-1]
        self._scan(seg)

    def _scan(self, seg: bytes) -> None:
        """Bare CR/LF (RFC 5321 §2.3.8) and the longest line, CRLF included
        (RFC 5321 §4.5.3.1.6), from one split: a bare CR or LF is one that
        is not counted by a CRLF pair.  The last, partial line counts with
        its length so far (it only grows)."""
        lines = seg.split(b"\r\n")
        pairs = len(lines) - 1
        if not self.bare and (seg.count(b"\r") != pairs or seg.count(b"\n") != pairs):
            self.bare = True
        if not pairs:
            self._line += len(seg)
            return
        longest = max(self._line + len(lines[0]), max(map(len, lines))) + 2
        if longest > self.longest:
            self.longest = longest
        self._line = len(lines[-1])

    def refusal(self, max_received: int) -> Optional[Reply]:
        """The refusal for the complete message, or None if it may be delivered.

        Order: size first, then bare CR/LF, NUL, line length (``max_line``
        octets with CRLF; 0 disables the check), an empty message, and the
        Received count.
        """
        if self.overflow:
            # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.9: 552 "Too much mail data";
            # RFC 3463 §3.4: X.3.4 message too big for system.
            return (552, "5.3.4", "Message size exceeds fixed maximum message size")
        if self.bare or self._cr:
            # DEVIATION(RFC 5321 §4.5.2 "be liberal"): refused rather than
            # repaired; a bare LF is how smuggling attacks split messages.
            # RFC 3463 §3.7: X.6.0 other or undefined media error.
            return (550, "5.6.0", "Message refused: bare CR or LF in message data (RFC 5321 §2.3.8)")
        if self.nul:
            # RFC 5322 §4.1: NUL "was once allowed, but is no longer"; RFC 2045
            # §2.7/§2.8: 7bit and 8bit data have no NULs; binary needs
            # BINARYMIME (RFC 3030 §3), not offered.  Refused like bare CR/LF
            # (README "Choices"): some MTAs end a line or a string at NUL.
            return (550, "5.6.0", "Message refused: NUL in message data (RFC 5322 §4.1)")
        longest = max(self.longest, self._line + 2)
        if self.max_line and longest > self.max_line:
            # RFC 5321 §4.5.3.1.9 lists "500 Line too long." for this limit.
            return (500, "5.5.2", "Line too long (RFC 5321 §4.5.3.1.6: %d octets)" % self.max_line)
        if self.size == 0:
            # README "Choices": "BDAT 0 LAST" as the only chunk (RFC 3030 §2:
            # a zero count means "no additional data") or DATA then "." has
            # no message at all (RFC 5322 §3.6: Date and From are required).
            return (554, "5.6.0", "Message refused: empty message")
        if count_received(bytes(self._head)) > max_received:
            # RFC 5321 §6.3 loop detection; RFC 3463 X.4.6 routing loop.
            return (554, "5.4.6", "Too many Received headers: mail loop detected")
        return None


class DotStuffer:
    """The client side of DATA, piece by piece:
    CRLF line ends (RFC 5321 §2.3.8), a leading "." doubled (RFC 5321
    §4.5.2), "." CRLF at the end; so a large queued message is sent without
    being read whole, with the same output for any split of the input."""

    def __init__(self):
        self._prev = b"\r\n"     # the last two octets out (the data starts a line)
        self._cr = False         # the last piece ended in CR: its LF may follow
        self._any = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        return self._out(re.sub(rb"\r?\n", b"\r\n", data))

    def _out(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._any = True
        both = self._prev + data
        self._prev = both[-2:]
        return both.replace(b"\r\n.", b"\r\n..")[2:]

    def end(self) -> bytes:
        """The rest, a final CRLF if the data lacked one, then "." CRLF."""
        out = self._out(b"\r") if self._cr else b""
        if self._any and self._prev != b"\r\n":
            out += b"\r\n"
        return out + b".\r\n"


def count_received(data: bytes) -> int:
    """Number of Received: fields in the header block (RFC 5321 §6.3).

    The header block ends at the first empty line (RFC 5322 §2.1); the
    match is case-insensitive and ignores folded continuation lines.  A header
    block without the word at all (what the first hop sees) is not parsed.
    """
    end = data.find(b"\r\n\r\n")           # the block ends here at the latest
    if b"received" not in (data if end < 0 else data[:end]).lower():
        return 0
    return parse_header(data).count(b"received")


def protocol_word(esmtp: bool, tls: bool, auth: bool, smtputf8: bool) -> str:
    """The "with" keyword: RFC 3848 §1 (ESMTP, ESMTPA, ESMTPS, ESMTPSA;
    plain SMTP after HELO) and RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPA, ...)."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


def _ip_literal(ip: str) -> str:
    """RFC 5321 §4.1.3 address literal form: [1.2.3.4] or [IPv6:::1]."""
    return "[IPv6:%s]" % ip if ":" in ip else "[%s]" % ip


def received_header(helo: str, peer_ip: str, hostname: str, with_word: str,
                    queue_id: str, rcpt: Optional[str], when: float) -> bytes:
    """The trace field prepended to every message (RFC 5321 §4.4).

    Time-stamp-line grammar: "from" the EHLO name with the TCP-info comment
    (we do no reverse DNS: "unknown"), "by" our name, "with" protocol, "id",
    "for" only when there is exactly one recipient (RFC 5321 §7.2 warns
    that "for" with several recipients discloses Bcc), then "; " date-time
    (RFC 5322 §3.3), folded with TAB (RFC 5322 §2.2.3).
    """
    helo = _sanitize(helo) or "unknown"
    return trace_field(["from %s (unknown %s)" % (helo, _ip_literal(peer_ip)),
                        "by %s with %s id %s" % (hostname, with_word, queue_id)], rcpt, when)


def _sanitize(text: str) -> str:
    """Keep the client-supplied HELO name to printable non-space ASCII."""
    return "".join(c for c in text[:255] if "\x21" <= c <= "\x7e" and c not in "()\\")
