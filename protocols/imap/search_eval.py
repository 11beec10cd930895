# PLACEHOLDER: replaced by the imapsearch branch at merge
"""SEARCH evaluation (RFC 9051 §6.4.4; RFC 4731 ESEARCH; RFC 5182 SEARCHRES).

This minimal version knows ALL, sequence sets, UID, the flag keys, NEW / OLD
/ RECENT, KEYWORD / UNKEYWORD, LARGER / SMALLER and AND / OR / NOT; any
other key matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from protocols.imap import wire
from protocols.imap.search import SearchKey

_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
              "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}
_CONTENT_KEYS = ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
                 "SENTBEFORE", "SENTON", "SENTSINCE")


class SearchCharsetError(Exception):
    """RFC 9051 §6.4.4: NO [BADCHARSET]."""


@dataclass(frozen=True)
class SearchContext:
    largest_seq: int
    largest_uid: int
    saved: Tuple[int, ...]   # the UIDs saved by SEARCH RETURN (SAVE) (RFC 5182)
    now: float               # seconds since the epoch (WITHIN, RFC 5032)
    charset: str = "utf-8"
    tz: Any = None


def check_charset(charset: Optional[str]) -> str:
    """The codec name for a SEARCH CHARSET; no CHARSET means UTF-8."""
    if charset not in (None, "US-ASCII", "UTF-8"):
        raise SearchCharsetError(charset)
    return "us-ascii" if charset == "US-ASCII" else "utf-8"


def needs_content(key: SearchKey) -> bool:
    if key.op in _CONTENT_KEYS:
        return True
    return any(needs_content(k) for k in key.args if isinstance(k, SearchKey))


def matches(key: SearchKey, seq: int, meta, recent: bool, data: Optional[bytes],
            ctx: SearchContext) -> bool:
    op, args = key.op, key.args
    if op == "AND":
        return all(matches(k, seq, meta, recent, data, ctx) for k in args)
    if op == "OR":
        return any(matches(k, seq, meta, recent, data, ctx) for k in args)
    if op == "NOT":
        return not matches(args[0], seq, meta, recent, data, ctx)
    if op == "ALL":
        return True
    if op in ("SEQ", "UID"):
        n, largest = (seq, ctx.largest_seq) if op == "SEQ" else (meta.uid, ctx.largest_uid)
        if args[0].saved:
            return meta.uid in (ctx.saved or ())
        return args[0].contains(n, largest)
    if op in _FLAG_KEYS:
        return _FLAG_KEYS[op] in meta.flags
    if op.startswith("UN") and op[2:] in _FLAG_KEYS:
        return _FLAG_KEYS[op[2:]] not in meta.flags
    if op in ("RECENT", "NEW", "OLD"):
        return {"RECENT": recent, "OLD": not recent,
                "NEW": recent and "\\Seen" not in meta.flags}[op]
    if op in ("KEYWORD", "UNKEYWORD"):
        return (args[0] in meta.flags) == (op == "KEYWORD")
    if op in ("LARGER", "SMALLER"):
        return meta.size > args[0] if op == "LARGER" else meta.size < args[0]
    return False


def search_response(numbers: Sequence[int], modseq: Optional[int] = None) -> bytes:
    """``* SEARCH n...`` (RFC 9051 §7.3.4 / RFC 3501 §7.2.5)."""
    return wire.untagged(b" ".join([b"SEARCH"] + [b"%d" % n for n in numbers]))


def esearch(tag: bytes, uid: bool, numbers: Sequence[int], returns: Tuple[str, ...],
            modseq: Optional[int] = None) -> bytes:
    """``* ESEARCH (TAG "t") [UID] ...`` (RFC 4731 §3.1, RFC 9051 §7.3.4)."""
    out = [b"ESEARCH (TAG " + wire.quoted(tag) + b")"]
    if uid:
        out.append(b"UID")
    nums = sorted(numbers)
    if nums and "MIN" in returns:
        out.append(b"MIN %d" % nums[0])
    if nums and "MAX" in returns:
        out.append(b"MAX %d" % nums[-1])
    if nums and "ALL" in returns:
        out.append(b"ALL " + wire.sequence_set(nums))
    if "COUNT" in returns:
        out.append(b"COUNT %d" % len(nums))
    return wire.untagged(b" ".join(out))
