"""IMAP PREVIEW (RFC 8970): ``FETCH ... PREVIEW`` and ``PREVIEW (LAZY)``, a
mixin of protocols/imap/session.py's ImapSession, and the preview text
itself (pure functions).

The preview (§3.3) is the first ``PREVIEW_CHARS`` characters of the
message's first text part: the first text/plain or text/html leaf that is
not an attachment, in MIME order (a multipart/alternative's plain part comes
first by RFC 2046 §5.1.4, so it is the one taken), its transfer encoding
removed (RFC 2045 §6: base64, quoted-printable), decoded from its charset
(unknown: UTF-8 with replacement), HTML reduced to its text (tags, comments,
``<script>`` / ``<style>`` / ``<head>`` dropped, entities unescaped), runs of
white space and control characters made one space.  A message without such
a part has the empty preview (RFC 8970 §3.2: "MUST return a zero-length string").

Cached with the other per-message values (``OpenFolder.derived``, kind
``PREVIEW_KIND``: store/msgcache.py), computed on a worker the first time:
a plain PREVIEW reads the messages not yet cached; PREVIEW (LAZY) (RFC 8970 §4.1)
answers from the cache alone (``OpenFolder.cached``) and NIL for the others,
so a client listing a folder never waits for files to be read, and a later
plain PREVIEW fills them in.  §8: each FETCH PREVIEW is logged with the user.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Callable, Dict, Optional

from protocols import mime
from protocols.imap import wire
from protocols.imap.search_text import _codec, _transfer_decode
from protocols.imap.session_base import NO, Refusal

log = logging.getLogger("mailsrv.imap")

PREVIEW_CAPABILITIES = [b"PREVIEW"]     # RFC 8970 §1
# The cache entries' kind (contracts.OpenFolder.derived): bump when the text changes.
PREVIEW_KIND = "imap-preview-v1"
# RFC 8970 §3.3: "SHOULD limit ... to 200 preview characters" (MUST NOT pass 256).
PREVIEW_CHARS = 200
# Ours: octets of the part's body decoded at most; 200 characters of text
# seldom need more than a few KiB even of markup-heavy HTML.
RAW_LIMIT = 64 * 1024
# Ours: UIDs per worker request (protocols/imap/fetching.py CACHE_BATCH's size).
BATCH = 256
_DROPPED = re.compile(r"<!--.*?(?:-->|\Z)|<(script|style|head|title)\b.*?(?:</\1\s*>|\Z)",
                      re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z0-9]*)[^>]*(?:>|\Z)")
# Tags inside a run of text (HTML 4.01's "inline" elements): no space for them.
_INLINE = frozenset(("a", "abbr", "b", "big", "cite", "code", "em", "font", "i", "small", "span",
                     "strong", "sub", "sup", "u", "s", "strike", "tt", "q", "mark"))
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b\ufeff]+")


def first_text(root: mime.Part) -> Optional[mime.Part]:
    """The first text/plain or text/html leaf that is not an attachment."""
    for part in root.walk():
        if part.is_multipart or part.message is not None or part.maintype != "text":
            continue
        if part.subtype in ("plain", "html") and (part.disposition or "").lower() != "attachment":
            return part
    return None


def html_text(markup: str) -> str:
    """The text of HTML: comments, script, style and head dropped, tags made spaces
    (inline ones such as ``<b>`` nothing), entities (``&amp;``, ``&#233;``) unescaped."""
    def tag(m) -> str:
        return "" if m.group(2).lower() in _INLINE else " "
    return html.unescape(_TAG.sub(tag, _DROPPED.sub(" ", markup)))


def preview_text(data: bytes) -> str:
    """The preview of a message in CRLF form (see the module docstring)."""
    root = mime.parse(data)
    part = first_text(root)
    if part is None:
        return ""
    # decoding shrinks (base64: 3 of 4, QP: at least 1 of 3), so RAW_LIMIT raw octets suffice
    raw = data[part.body_start:min(part.end, part.body_start + RAW_LIMIT)]
    try:
        octets = _transfer_decode(raw, part.encoding)
    except ValueError:                      # binascii.Error: a body not in its encoding
        octets = raw
    text = octets.decode(_codec(part.param("charset")), "replace")
    if part.subtype == "html":
        text = html_text(text)
    return _BLANKS.sub(" ", text).strip()[:PREVIEW_CHARS]


def compute(data: bytes) -> Dict[str, bytes]:
    """A ``compute`` for ``OpenFolder.derived``: ``{"PREVIEW": UTF-8 text}``."""
    return {"PREVIEW": preview_text(data).encode("utf-8")}


def preview_item(value: Optional[bytes], utf8: bool) -> bytes:
    """msg-att-dynamic =/ "PREVIEW" SP nstring (RFC 8970 §6); NIL only under LAZY."""
    return b"PREVIEW " + wire.nstring(value, utf8)


class PreviewCommands:
    """FETCH PREVIEW (see the module docstring)."""

    def _preview_items(self, uids, atts):
        """``{"PREVIEW": uid -> item}`` for this FETCH: LAZY alone reads only the
        cache; any plain PREVIEW computes what is missing (§3.2, §4.1)."""
        lazy = all(a.lazy for a in atts if a.name == "PREVIEW")
        log.info("imap preview user=%s messages=%d lazy=%s", self._user, len(uids), lazy)   # §8
        values: Dict[int, bytes] = {}
        for start in range(0, len(uids), BATCH):
            batch = list(uids[start:start + BATCH])
            entries = yield from (self._preview_cached(batch) if lazy else self._preview_derived(batch))
            for uid, entry in entries.items():
                value = entry.get("PREVIEW")
                if value is not None:
                    values[uid] = value
        utf8 = self.utf8
        render: Callable[[int], Optional[bytes]] = lambda uid: preview_item(
            values.get(uid, None if lazy else b""), utf8)
        return {"PREVIEW": render}

    def _preview_derived(self, uids):
        result = yield lambda done: self._folder.derived(uids, PREVIEW_KIND, compute, done)
        if isinstance(result, BaseException):
            log.error("imap preview failed user=%s: %r", self._user, result)
            raise Refusal(NO, "Cannot read messages, try again", "UNAVAILABLE")
        return result

    def _preview_cached(self, uids):
        cached = getattr(self._folder, "cached", None)
        if cached is None:
            return {}
        result = yield lambda done: cached(uids, PREVIEW_KIND, done)
        if isinstance(result, BaseException):       # a cache: without it, NIL (§4.1)
            log.warning("imap preview cache unreadable user=%s: %r", self._user, result)
            return {}
        return result
