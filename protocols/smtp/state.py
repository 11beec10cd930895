"""SMTP server vocabulary: limits, configuration, envelope, states, replies.

Shared by ``protocols/smtp/server.py`` (the session) and
``protocols/smtp/auth.py`` (AUTH and STARTTLS handlers); the public names
are re-exported by ``protocols.smtp.server`` (the backend imports Envelope
and RcptDecision from there).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List, Optional, Protocol, Tuple

Reply = Tuple[int, str, str]

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
# Extensions lengthen MAIL: SIZE +26 (RFC 1870 §3 item 5), AUTH= +500
# (RFC 4954 §3), BODY=8BITMIME and SMTPUTF8 a few more, and a UTF-8 path of
# 256 characters may take up to 1024 octets (RFC 6531 §3.3).  512 + 526 +
# ~1000 rounds up to 2048 (the same as Postfix's line_length_limit).
MAX_COMMAND_LINE = 2048
# RFC 4954 §4: "12288 octets is considered to be a sufficient line length
# limit" for AUTH responses (+2 for CRLF).
MAX_AUTH_LINE = 12288 + 2
# Input held while a backend call is outstanding (the final fsync, an AUTH
# check): a client waits for that reply (RFC 2920 §3.1: end of data and AUTH
# end a pipelined group), so this only bounds a misbehaving one.  Message
# data itself is never held: it streams to the backend's sink.
MAX_HELD_INPUT = 256 * 1024
# Digits accepted in SIZE= and BDAT sizes: 20 digits hold any 64-bit count.
MAX_DIGITS = 20
DIGITS_RE = re.compile(r"[0-9]{1,%d}\Z" % MAX_DIGITS)
BDAT_RE = re.compile(r"([0-9]{1,%d})(?: +(LAST))? *\Z" % MAX_DIGITS, re.IGNORECASE)


@dataclass
class SmtpConfig:
    """Per-listener SMTP settings."""

    hostname: str = "localhost"
    # RFC 1870 §4: the SIZE we advertise; 25 MiB is the common default.
    max_message_size: int = 25 * 1024 * 1024
    # RFC 5321 §4.5.3.1.8: "The minimum total number of recipients that MUST
    # be buffered is 100"; beyond it 452 (§4.5.3.1.9, §4.5.3.1.10).
    max_recipients: int = 100
    # RFC 5321 §6.3: a simple loop counter of Received fields; the RFC says
    # "at least 100" as the hard limit for relays, 30 catches loops sooner
    # for a final-delivery server.  DEVIATION(RFC 5321 §6.3): below 100.
    max_received: int = 30
    # RFC 5321 §4.5.3.2.7: "An SMTP server SHOULD have a timeout of at least
    # 5 minutes while it is awaiting the next command from the sender."
    command_timeout: float = 300.0
    # RFC 5321 §4.5.3.2.5 gives the client 3 minutes per data block; the
    # server waits at least as long as §4.5.3.2.7's 5 minutes.
    data_timeout: float = 300.0
    # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with CRLF; a
    # longer one refuses the message (500 5.5.2, §4.5.3.1.9) after the end
    # of data was read.  0 accepts any length.
    # DEVIATION(RFC 5321 §4.5.3.1.6) when set above 1000 or to 0.
    max_text_line: int = 1000
    # Consecutive-error limit: after this many bad commands, 421 4.7.0
    # (RFC 5321 §4.2.3 / §3.8: the server may close with 421).
    max_bad_commands: int = 10
    # RFC 6409 §4.3 / RFC 4954 §6: submission requires AUTH before MAIL (530 5.7.0).
    require_auth: bool = False
    # RFC 4954 §4 / RFC 8314: plaintext mechanisms only over TLS unless allowed.
    allow_plaintext_auth: bool = False
    plaintext_auth_loopback: bool = True
    auth_enabled: bool = True
    # "header": the SPF result of MAIL FROM (RFC 7208 §2.4) goes into a
    # Received-SPF field above our Received (§9.1); "off": no SPF.
    spf_check: str = "off"


@dataclass
class Envelope:
    """What the backend receives with the message (``MessageSink`` below)."""

    mail_from: str
    rcpt_to: List[str]
    targets: List[object]
    body: str
    smtputf8: bool
    helo: str
    peer_ip: str
    auth_user: Optional[str]
    tls: bool
    listener: str
    queue_id: str
    spf: Optional[object] = None    # the session's SpfResult (spf_check = header), for Authentication-Results
    spf_helo: Optional[object] = None   # the HELO identity's SpfResult (RFC 7208 §2.3), when checked


class MessageSink(Protocol):
    """Where a message goes while it is received (``backend.open_message``).

    The session writes the message (its Received field, then the content,
    dot-unstuffed for DATA, as sent for BDAT) in order and in pieces of at
    most one read; the sink stores it so memory stays bounded.  Then exactly
    one of: ``finish(envelope, done)``, which makes the message durable
    (file and directory fsync'd) and calls ``done(reply)`` later, from the
    loop thread (250 only once it is on disk); or ``abort()`` (refused,
    RSET, connection lost), which drops everything written.  A write error
    is kept by the sink and reported by ``finish`` as 452 4.3.1.
    """

    def write(self, data: bytes) -> None: ...

    def finish(self, envelope: "Envelope", done: Callable[[Reply], None]) -> None: ...

    def abort(self) -> None: ...


@dataclass
class RcptDecision:
    ok: bool
    reply: Optional[Reply] = None
    target: object = None


class State(enum.Enum):
    """Session states, named after RFC 5321 §3.1-§3.3 / §4.1.4."""

    GREETING = "greeting"   # 220 sent, no EHLO/HELO yet (RFC 5321 §3.1)
    READY = "ready"         # after EHLO/HELO, no mail transaction (§4.1.1.1)
    MAIL = "mail"           # MAIL accepted, no recipient yet (§4.1.1.2)
    RCPT = "rcpt"           # at least one recipient accepted (§4.1.1.3)
    DATA = "data"           # reading message data after 354 (§4.1.1.4)
    BDAT = "bdat"           # a BDAT transaction between chunks (RFC 3030 §2)
    AUTH = "auth"           # SASL exchange awaiting a client line (RFC 4954 §4)
    STARTTLS = "starttls"   # 220 sent, waiting for the handshake (RFC 3207 §4)


ANY_STATE: FrozenSet[State] = frozenset({State.GREETING, State.READY, State.MAIL,
                                    State.RCPT, State.BDAT})
TXN_STATES = frozenset({State.MAIL, State.RCPT, State.BDAT})


@dataclass
class Transaction:
    """One mail transaction (RFC 5321 §3.3)."""

    mail_from: str
    body: str = "7BIT"
    smtputf8: bool = False
    rcpts: List[str] = field(default_factory=list)
    targets: List[object] = field(default_factory=list)
    # Set once message data starts (DATA's 354 or the first BDAT): the
    # backend's MessageSink receiving the octets, and the checks on them.
    queue_id: str = ""
    envelope: Optional["Envelope"] = None
    sink: Optional["MessageSink"] = None
    check: Optional[object] = None
    spf: Optional[object] = None        # the SpfResult once found (spf_check = header)
    spf_helo: Optional[object] = None   # the HELO identity's SpfResult (RFC 7208 §2.3), if checked


@dataclass
class Chunk:
    """A BDAT chunk being read (RFC 3030 §2): its octets are always consumed,
    even when the command is refused (``error``)."""

    remaining: int
    last: bool
    error: Optional[Reply] = None


def fmt_reply(code: int, enh: str, text: str) -> bytes:
    """One reply line (RFC 5321 §4.2) with the RFC 2034 §4 enhanced code."""
    if enh:
        text = "%s %s" % (enh, text)
    return ("%d %s\r\n" % (code, text)).encode("utf-8", "replace")
