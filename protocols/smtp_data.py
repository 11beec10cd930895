"""Message content for the SMTP server: DATA framing, content checks, trace.

* ``DataReader``: finds the end of a DATA block, exactly CRLF "." CRLF
  (RFC 5321 §4.1.1.4), and dot-unstuffs (RFC 5321 §4.5.2).  A bare CR or LF
  never ends the data: "<LF>.<LF>", "<CR>.<CR>", "<CRLF>.<LF>" ... are
  content, so a message cannot be smuggled behind one (CVE-2023-51764 class,
  "SMTP smuggling").  Scanning uses ``bytes.find`` on a growing buffer, so
  a 25 MB message costs a few C-level passes, not a Python loop per octet.
* ``check_content``: the refusals decided once the whole message is read
  (bare CR/LF, text line length, size).
* ``count_received`` and ``received_header``: loop detection (RFC 5321
  §6.3) and the trace field (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3).

Bytes in, bytes out; the date comes from the caller (the session's clock).
"""

from __future__ import annotations

import datetime
import email.utils
import re
from typing import Optional, Tuple

Reply = Tuple[int, str, str]

# RFC 5321 §4.5.3.1.6: "The maximum total length of a text line including
# the <CRLF> is 1000 octets (not counting the leading dot duplicated for
# transparency)."
MAX_TEXT_LINE = 1000

_END = b"\r\n.\r\n"
# A Received: field starts a line of the header block; continuation lines
# start with WSP (RFC 5322 §2.2.3), so they can never match.
_RECEIVED_RE = re.compile(rb"(?:^|\r\n)received[ \t]*:", re.IGNORECASE)


class DataReader:
    """Accumulates one DATA block until CRLF "." CRLF (RFC 5321 §4.1.1.4).

    The buffer starts with a virtual CRLF because the data begins at the
    start of a line (after the DATA command's CRLF), so ".\\r\\n" right away
    is an empty message.  Once more than ``keep_limit`` octets arrived the
    content is dropped (only the tail needed to find the end is kept) and
    ``overflow`` is set: the message will be refused with 552 after the
    real end was read (RFC 5321 §4.5.3.1.9, RFC 1870 §6.3).
    """

    def __init__(self, keep_limit: int):
        self.keep_limit = keep_limit
        self.buf = bytearray(b"\r\n")
        self.scan = 0
        self.received = 0
        self.overflow = False

    def feed(self, data: bytes) -> Optional[Tuple[bytes, bytes]]:
        """Add input; returns (raw content, leftover input) at the end, else None.

        Raw content still carries dot-stuffing and ends with the CRLF of its
        last line (or is empty).
        """
        self.buf += data
        self.received += len(data)
        end = self.buf.find(_END, self.scan)
        if end >= 0:
            content = bytes(self.buf[2:end + 2]) if not self.overflow else b""
            leftover = bytes(self.buf[end + 5:])
            return content, leftover
        if not self.overflow and len(self.buf) - 2 > self.keep_limit:
            self.overflow = True
        if self.overflow:
            # Keep 4 octets: the longest proper prefix of _END.  The first
            # two stand for the virtual CRLF so offsets stay meaningful.
            del self.buf[:-4]
            self.scan = 0
        else:
            self.scan = max(0, len(self.buf) - 4)
        return None


def unstuff(raw: bytes) -> bytes:
    """Remove the transparency dot (RFC 5321 §4.5.2): a line that starts
    with "." has it removed (the lone "." line was the terminator)."""
    if b"\r\n." not in raw and not raw.startswith(b"."):
        return raw
    return (b"\r\n" + raw).replace(b"\r\n.", b"\r\n")[2:]


def has_bare_cr_or_lf(data: bytes) -> bool:
    """True if a CR or LF occurs other than as the pair CRLF (RFC 5321 §2.3.8:
    "CR and LF MUST only occur together as CRLF" in SMTP text)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def longest_line(data: bytes, limit: int = MAX_TEXT_LINE) -> int:
    """Length of the longest line, CRLF included (RFC 5321 §4.5.3.1.6);
    exact whenever it exceeds ``limit``."""
    if len(data) <= limit - 2:
        return len(data) + 2
    return max(map(len, data.split(b"\r\n"))) + 2


def check_content(data: bytes, max_size: int, overflow: bool,
                  max_line: int = MAX_TEXT_LINE) -> Optional[Reply]:
    """The refusal for a fully read message, or None if it may be delivered.

    Order: size first (the content may be gone), then bare CR/LF, then line
    length (``max_line`` octets with CRLF; 0 disables the check).
    """
    if overflow or len(data) > max_size:
        # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.9: 552 "Too much mail data";
        # RFC 3463 §3.4: X.3.4 message too big for system.
        return (552, "5.3.4", "Message size exceeds fixed maximum message size")
    if has_bare_cr_or_lf(data):
        # DEVIATION(RFC 5321 §4.5.2 "be liberal"): refused rather than
        # repaired; a bare LF is how smuggling attacks split messages.
        # RFC 3463 §3.7: X.6.0 other or undefined media error.
        return (550, "5.6.0", "Message refused: bare CR or LF in message data (RFC 5321 §2.3.8)")
    if max_line and longest_line(data, max_line) > max_line:
        # RFC 5321 §4.5.3.1.9 lists "500 Line too long." for this limit.
        return (500, "5.5.2", "Line too long (RFC 5321 §4.5.3.1.6: %d octets)" % max_line)
    return None


def count_received(data: bytes) -> int:
    """Number of Received: fields in the header block (RFC 5321 §6.3).

    The header block ends at the first empty line (RFC 5322 §2.1); the
    match is case-insensitive and ignores folded continuation lines.
    """
    end = data.find(b"\r\n\r\n")
    header = data if end < 0 else data[:end + 2]
    if header.startswith(b"\r\n"):
        return 0  # no header block at all
    return len(_RECEIVED_RE.findall(header))


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
    date = email.utils.format_datetime(
        datetime.datetime.fromtimestamp(when, datetime.timezone.utc))
    date = date.replace("-0000", "+0000")
    helo = _sanitize(helo) or "unknown"
    lines = ["Received: from %s (unknown %s)" % (helo, _ip_literal(peer_ip)),
             "\tby %s with %s id %s" % (hostname, with_word, queue_id)]
    if rcpt is not None:
        lines.append("\tfor <%s>; %s" % (rcpt, date))
    else:
        lines[-1] += ";"
        lines.append("\t" + date)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _sanitize(text: str) -> str:
    """Keep the client-supplied HELO name to printable non-space ASCII."""
    return "".join(c for c in text[:255] if "\x21" <= c <= "\x7e" and c not in "()\\")
