"""What the IMAP session keeps per message in the folder's cache
(``OpenFolder.derived``, store/msgcache.py), pure functions.

``compute(data)`` renders, from the whole message, the FETCH items a client
asks of every message when it opens a folder (RFC 9051 §6.4.5): ENVELOPE,
BODYSTRUCTURE, BODY, each as fetch_data.render gives it, and the raw header
block (RFC 5322 §2.1: the fields and the blank line), from which
BODY[HEADER], BODY[HEADER.FIELDS (...)] (.NOT too), RFC822.HEADER and the
header-only SEARCH keys are answered by the same fetch_data / search_eval
code as for the whole message.  ``render(att, entry)`` builds a FETCH item
from such an entry, byte for byte what fetch_data.render gives on the message
(tests/test_imap_derived.py compares them over a corpus).

A header block over ``MAX_HEADER`` is not kept: those items and keys read
the message file as before.
"""

from __future__ import annotations

from typing import Dict, Optional

from protocols import mime
from protocols.imap import fetch_data, search_eval
from protocols.imap.fetch_args import FetchAtt
from protocols.imap.search import SearchKey

# The entries' kind (contracts.OpenFolder.derived): bump the number when
# envelope.py, bodystructure.py or fetch_data.py render differently, so the
# entries written by the older code are not used (v2: the envelope SEARCH
# keys' decoded values, search_eval.kept_values; v3: those values in
# search_kept.py's separator form instead of JSON; v4: those values
# i;unicode-casemap, RFC 5051, instead of str.casefold).
KIND = "imap-v4"
# Ours: a header block is kept up to 64 KiB (a usual header is 1-4 KiB;
# Dovecot's header cache fields are similarly bounded); beyond, it is read
# from the file each time, so one huge header does not bloat the cache.
MAX_HEADER = 64 * 1024
# The items kept rendered whole.
_RENDERED = ("ENVELOPE", "BODYSTRUCTURE", "BODY")
# Section texts of the message itself answered from the header block (RFC 9051 §6.4.5.1).
_HEADER_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
# SEARCH keys that need the message's content beyond its header (RFC 9051 §6.4.4).
_BODY_KEYS = ("BODY", "TEXT")


def compute(data: bytes) -> Dict[str, bytes]:
    """The entry for one message (``data`` in CRLF form)."""
    root = mime.parse(data)
    entry = {"ENVELOPE": fetch_data.render(FetchAtt("ENVELOPE"), data, root),
             "BODYSTRUCTURE": fetch_data.render(FetchAtt("BODYSTRUCTURE"), data, root),
             "BODY": fetch_data.render(FetchAtt("BODY"), data, root)}
    header = data[root.start:root.body_start]
    if len(header) <= MAX_HEADER:
        entry["HEADER"] = header
        entry.update(search_eval.kept_values(header))
    return entry


def _header_att(att: FetchAtt) -> bool:
    if att.name == "RFC822.HEADER":
        return True
    sec = att.section
    return att.name == "BODY" and sec is not None and not sec.part and sec.text in _HEADER_TEXTS


def cacheable(att: FetchAtt) -> bool:
    """True when ``att`` (a content item, fetch_data.needs_content) can be
    answered from an entry."""
    if att.name in _RENDERED and att.section is None:
        return True
    return _header_att(att)


def needs_header(att: FetchAtt) -> bool:
    """True when the item is answered from the header block (which may be missing)."""
    return _header_att(att)


def render(att: FetchAtt, entry: Dict[str, bytes]) -> Optional[bytes]:
    """The FETCH item from the entry; None when the entry lacks what it needs
    (the caller reads the message)."""
    if att.section is None and att.name in _RENDERED:
        return entry.get(att.name)
    header = entry.get("HEADER")
    if header is None:
        return None
    # The message's own header sections read only the root's start and body
    # start (fetch_data.section_data): the block is the whole header, so no
    # MIME parse is needed (fields_end is not read for them).
    root = mime.Part(start=0, fields_end=len(header), body_start=len(header), end=len(header))
    return fetch_data.render(att, header, root)


def header_only(key: SearchKey) -> bool:
    """True when no key inside ``key`` reads the body (BODY, TEXT), so the
    header block serves as the message (search_eval.matches)."""
    if key.op in _BODY_KEYS:
        return False
    return all(header_only(k) for k in key.args if isinstance(k, SearchKey))
