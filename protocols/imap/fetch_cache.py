"""The header-only cache entry: what a FETCH of ENVELOPE or of the message's
own header sections, and the header-only SEARCH keys, need of a message,
computed from its header block alone (RFC 5322 §2.1: the fields and the
empty line), so that filling the folder's cache reads the first few KiB of
each file instead of the whole message.

``compute_head`` is a ``compute`` for ``OpenFolder.derived`` (contracts.py)
that carries ``header_end``: the backend may then give it only the header
block, ``header_end`` telling its reader when the octets it has read hold
the whole block.  Given the whole message instead (a
backend that ignores the mark, the fakes of the tests), it cuts the block
itself: the entry is the same either way.

The entry holds ENVELOPE, HEADER (the block, when at most derived.MAX_HEADER
octets) and search_eval.kept_values of it, each as derived.compute gives
them (tests/test_imap_fetch_cache.py compares the two over corpora);
derived.render answers from it.  BODYSTRUCTURE and BODY need the MIME tree
of the whole message: they stay derived.compute's, under derived.KIND, and
are computed only when a FETCH asks for them.
"""

from __future__ import annotations

from typing import Dict, Optional

from protocols.imap import derived, search_eval
from protocols.imap.envelope import envelope
from protocols.imap.fetch_args import FetchAtt
from protocols.imap.search_text import HEADER_BLOCK
from protocols.message import parse_header

# The entries' kind: derived.KIND's version follows, so a change of what
# derived.py keeps (search_eval.kept_values) also retires these entries.
HEAD_KIND = derived.KIND + "-head1"
# The usual header block (search_text.HEADER_BLOCK).
_BLOCK = HEADER_BLOCK


def header_end(prefix: bytes, complete: bool) -> Optional[int]:
    """Where the header block of a message ends (mime.parse's root
    ``body_start``), from ``prefix``, the first octets of the message in
    CRLF form (``complete``: all of it); None when more octets are needed.

    parse_header ends the header at the first line that is neither a field
    nor a fold; when that line is whole in ``prefix`` (its LF is there),
    the octets after it cannot change where the header ends, so the answer
    is that of the whole message.  The usual header, fields then an empty
    line, is one match of ``_BLOCK``, which ends where parse_header does (no
    line of it can end the header sooner)."""
    usual = _BLOCK.match(prefix)
    if usual is not None:
        return usual.end()
    head = parse_header(prefix)
    if complete:
        return head.body_start
    if head.fields_end < len(prefix) and prefix.find(b"\n", head.fields_end) >= 0:
        return head.body_start
    return None


def compute_head(data: bytes) -> Dict[str, bytes]:
    """The header-only entry of a message (see the module docstring);
    ``data`` is its header block or the whole message, in CRLF form."""
    head = parse_header(data)
    header = data[:head.body_start]       # the offsets of ``head`` hold in it
    entry = {"ENVELOPE": b"ENVELOPE " + envelope(header, 0, len(header), head)}
    if len(header) <= derived.MAX_HEADER:
        entry["HEADER"] = header
        entry.update(search_eval.kept_values(header, head))
    return entry


compute_head.header_end = header_end    # type: ignore[attr-defined]


def from_head(att: FetchAtt) -> bool:
    """True when a header-only entry can answer ``att`` (a content item):
    ENVELOPE, and the sections of the message's own header."""
    if att.name == "ENVELOPE":
        return att.section is None
    return derived.needs_header(att)
