# PLACEHOLDER: replaced by the imapfetch branch at merge
"""FETCH data items that need the message's content (RFC 9051 §6.4.5, §7.5.2).

This minimal version serves only what the session's tests use: the whole
message (BODY[], BODY.PEEK[], RFC822) and its header (BODY[HEADER],
RFC822.HEADER).  Every other content item raises ``FetchError``.
"""

from __future__ import annotations

from protocols import mime
from protocols.imap import wire
from protocols.imap.fetch_args import FetchAtt

# Items the session answers from MessageMeta alone (RFC 9051 §6.4.5).
META_ITEMS = ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "SAVEDATE",
              "EMAILID", "THREADID")


class FetchError(Exception):
    """An item that cannot be served: ``code`` for the tagged NO (RFC 5530), ``text``."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


def needs_content(att: FetchAtt) -> bool:
    """Whether ``att`` needs the message file (everything but the metadata items)."""
    return att.name not in META_ITEMS


def sets_seen(att: FetchAtt) -> bool:
    """RFC 9051 §6.4.5: BODY[...] and BINARY[...] without .PEEK, RFC822 and
    RFC822.TEXT set \\Seen."""
    if att.name in ("BODY", "BINARY") and att.section is not None:
        return not att.peek
    return att.name in ("RFC822", "RFC822.TEXT")


def render(att: FetchAtt, data: bytes, root: mime.Part) -> bytes:
    """The complete item, name and value, e.g. ``BODY[] {n}\\r\\n...``."""
    sec = att.section
    if att.name == "RFC822":
        return b"RFC822 " + wire.literal(data)
    if att.name == "RFC822.HEADER":
        return b"RFC822.HEADER " + wire.literal(data[:root.body_start])
    if att.name == "BODY" and sec is not None and not sec.part and att.partial is None:
        if sec.text is None:
            return b"BODY[] " + wire.literal(data)
        if sec.text == "HEADER":
            return b"BODY[HEADER] " + wire.literal(data[:root.body_start])
    raise FetchError("CANNOT", "%s is not served yet" % att.name)
