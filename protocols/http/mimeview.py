"""A caught message taken apart for the web page (RFC 5322 header fields, RFC 2045-2047
MIME, RFC 2183 Content-Disposition, RFC 2231 parameters) with the standard library's
``email`` package.

CPU work on a big message: the session never calls these itself; the HTTP service
(protocols/http/service.py) runs them on a worker thread.  Pure functions of the
message octets, so the same index names the same attachment in the list and in the
download.
"""

from __future__ import annotations

import email
import email.policy
import re
from typing import Dict, List, Optional, Tuple

# Header fields longer than this are cut for the JSON view (the raw source has them
# whole); a local display bound, no RFC number (RFC 5322 §2.1.1 bounds lines, not fields).
MAX_FIELD_CHARS = 8192
# Longest download file name we produce (ext4 and most file systems allow 255 octets).
MAX_FILENAME = 100


def _message(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def _text(part) -> str:
    """The decoded text of a part; an unknown charset or a broken encoding is
    replaced, never raised (the ``email`` package records defects the same way)."""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _bodies(msg) -> Tuple[Optional[object], Optional[object]]:
    """RFC 2046 §5.1.4 alternative: the plain and the HTML body, as the email
    package picks them."""
    try:
        return msg.get_body(("plain",)), msg.get_body(("html",))
    except (KeyError, ValueError):
        return None, None


def _attachments(msg, bodies) -> List[object]:
    """Every leaf part that is not one of the two bodies, in document order."""
    out = []
    for part in msg.walk():
        if part.is_multipart() or any(part is b for b in bodies if b is not None):
            continue
        if part is msg and not msg.get_filename() and msg.get_content_maintype() == "text":
            continue    # a single-part message that is neither plain nor HTML text
        out.append(part)
    return out


def safe_filename(name: Optional[str], index: int) -> str:
    """A download name with no path, no control or quoting character: what is left
    of the sender's name after keeping letters, digits, dot, dash and underscore."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:MAX_FILENAME]
    return base or "attachment-%d" % index


def parse_message(raw: bytes) -> Dict[str, object]:
    """The JSON view of a message: header fields (decoded, RFC 2047), the text part,
    the HTML part (as text: JSON, never rendered), and the attachments (index,
    filename, type, size)."""
    msg = _message(raw)
    headers = []
    for name, value in msg.items():
        try:
            text = str(value)
        except Exception:       # a header the parser could not decode: show it raw
            text = str(msg.get_all(name, [""])[0])
        headers.append([name, text[:MAX_FIELD_CHARS]])
    plain, html = _bodies(msg)
    attachments = []
    for i, part in enumerate(_attachments(msg, (plain, html))):
        payload = part.get_payload(decode=True) or b""
        attachments.append({"index": i, "filename": part.get_filename() or "",
                            "safe_filename": safe_filename(part.get_filename(), i),
                            "type": part.get_content_type(), "size": len(payload)})
    return {"headers": headers, "text": _text(plain) if plain is not None else None,
            "html": _text(html) if html is not None else None,
            "has_html": html is not None, "attachments": attachments,
            "defects": len(msg.defects)}


def html_part(raw: bytes) -> Optional[str]:
    """The HTML body as text, or None."""
    _plain, html = _bodies(_message(raw))
    return _text(html) if html is not None else None


def attachment(raw: bytes, index: int) -> Optional[Tuple[str, bytes]]:
    """(safe filename, decoded octets) of attachment ``index``, or None."""
    msg = _message(raw)
    parts = _attachments(msg, _bodies(msg))
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    return safe_filename(part.get_filename(), index), part.get_payload(decode=True) or b""
