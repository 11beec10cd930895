"""LIST and LSUB answers from the backend's folder list, pure functions.

RFC 9051 §6.3.9 (patterns: ``*`` matches anything, ``%`` anything but the
hierarchy separator; INBOX matched without regard to case), RFC 5258
(LIST-EXTENDED: selection options SUBSCRIBED, REMOTE, RECURSIVEMATCH, return
options SUBSCRIBED and CHILDREN, ``\\NonExistent``, CHILDINFO), RFC 6154 §2
(special-use attributes, the SPECIAL-USE selection option), RFC 5819
(STATUS return option; the session asks the backend and formats with
``status_response``), RFC 3501 §6.3.9 (LSUB).
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Tuple

from protocols.backend.contracts import HIERARCHY_SEP, FolderEntry, FolderStatus
from protocols.imap import wire
from protocols.imap.args import ListArgs


def pattern_regex(reference: str, pattern: str) -> "re.Pattern[str]":
    """RFC 9051 §6.3.9: reference and pattern joined; ``*`` / ``%`` wildcards."""
    if pattern.startswith(HIERARCHY_SEP) or not reference:
        full = pattern
    elif reference.endswith(HIERARCHY_SEP):
        full = reference + pattern
    else:
        full = reference + HIERARCHY_SEP + pattern if pattern else reference
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^%s]*" % re.escape(HIERARCHY_SEP))
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _matches(regexes: Sequence["re.Pattern[str]"], name: str) -> bool:
    for rx in regexes:
        if rx.match(name):
            return True
        # RFC 9051 §5.1: INBOX is case-insensitive
        if name == "INBOX" and re.compile(rx.pattern, re.IGNORECASE | re.DOTALL).match(name):
            return True
    return False


def _attributes(e: FolderEntry, la: ListArgs, rev2: bool) -> List[bytes]:
    attrs: List[bytes] = []
    if not e.exists:
        # RFC 5258 §3.4: \NonExistent (implies \Noselect) for LIST-EXTENDED / rev2
        attrs.append(b"\\NonExistent" if (la.extended or rev2) else b"\\Noselect")
    # RFC 3348 / RFC 9051 §7.3.1: children attributes (CHILDREN return option too)
    attrs.append(b"\\HasChildren" if e.has_children else b"\\HasNoChildren")
    subscribed_wanted = "SUBSCRIBED" in la.select or "SUBSCRIBED" in la.returns
    if e.subscribed and subscribed_wanted:
        attrs.append(b"\\Subscribed")   # RFC 5258 §3.2
    attrs += [u.encode("ascii") for u in e.special_use]   # RFC 6154 §2
    return attrs


def list_rows(entries: Iterable[FolderEntry], la: ListArgs, rev2: bool,
              utf8: bool) -> List[Tuple[bytes, Optional[FolderEntry]]]:
    """The LIST lines for ``la`` with the entry each one is about (for LIST-STATUS)."""
    entries = list(entries)
    regexes = [pattern_regex(la.reference, p) for p in la.patterns]
    subscribed_only = "SUBSCRIBED" in la.select
    recursive = "RECURSIVEMATCH" in la.select
    special_only = "SPECIAL-USE" in la.select
    sub_parents = _subscribed_parents(entries) if recursive else set()
    rows = []
    for e in entries:
        if not _matches(regexes, e.name):
            continue
        extra = b""
        if subscribed_only and not e.subscribed:
            if e.name not in sub_parents:
                continue
            extra = b' ("CHILDINFO" ("SUBSCRIBED"))'   # RFC 5258 §3.5
            attrs = [a for a in _attributes(e, la, rev2) if a != b"\\Subscribed"]
        else:
            if not subscribed_only and not e.exists and not e.has_children:
                continue    # only subscribed: listed under SUBSCRIBED alone
            if special_only and not e.special_use:
                continue
            attrs = _attributes(e, la, rev2)
            if subscribed_only and recursive and e.name in sub_parents:
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
        line = b'LIST %s "%s" %s%s' % (wire.paren(attrs), HIERARCHY_SEP.encode(),
                                      wire.mailbox(e.name, utf8), extra)
        rows.append((wire.untagged(line), e if e.exists else None))
    return rows


def _subscribed_parents(entries: Sequence[FolderEntry]) -> set:
    """Names with a subscribed mailbox below them (RFC 5258 §3.5 RECURSIVEMATCH)."""
    out = set()
    for e in entries:
        if e.subscribed:
            parts = e.name.split(HIERARCHY_SEP)
            for i in range(1, len(parts)):
                out.add(HIERARCHY_SEP.join(parts[:i]))
    return out


def lsub_rows(entries: Iterable[FolderEntry], reference: str, pattern: str, utf8: bool) -> List[bytes]:
    """RFC 3501 §6.3.9: the subscribed names matching; \\Noselect when gone,
    and for "%" an unsubscribed level above a subscribed name (the RFC's
    "news/comp/mail/misc" example)."""
    rx = [pattern_regex(reference, pattern)]
    entries = list(entries)
    subscribed = set(e.name for e in entries if e.subscribed)
    names = [(e.name, e.exists) for e in entries if e.subscribed]
    if "%" in pattern:
        names += [(p, False) for p in sorted(_subscribed_parents(entries) - subscribed)]
    out = []
    for name, exists in names:
        if _matches(rx, name):
            noselect = not exists or name not in subscribed
            out.append(wire.untagged(b'LSUB %s "%s" %s' % (
                wire.paren([b"\\Noselect"] if noselect else []), HIERARCHY_SEP.encode(),
                wire.mailbox(name, utf8))))
    return out


def status_response(name: str, st: FolderStatus, items: Sequence[str], utf8: bool,
                    append_limit: int) -> bytes:
    """``* STATUS name (...)`` (RFC 9051 §7.3.2; RFC 8438 SIZE; RFC 7889 APPENDLIMIT)."""
    values = {"MESSAGES": st.messages, "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
              "UNSEEN": st.unseen, "DELETED": st.deleted, "SIZE": st.size, "RECENT": st.recent,
              "HIGHESTMODSEQ": st.highestmodseq, "APPENDLIMIT": append_limit,
              "DELETED-STORAGE": st.deleted_storage}     # RFC 9208 §4.1.4
    parts = [b"MAILBOXID (%s)" % st.mailbox_id.encode("ascii") if item == "MAILBOXID"    # RFC 8474 §4.3
             else b"%s %d" % (item.encode("ascii"), values[item]) for item in dict.fromkeys(items)
             if item != "MAILBOXID" or st.mailbox_id]      # "": a backend without ids
    return wire.untagged(b"STATUS " + wire.mailbox(name, utf8) + b" (" + b" ".join(parts) + b")")
