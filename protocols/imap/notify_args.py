"""NOTIFY's arguments (RFC 5465 §8) and the mailbox filters it shares with
MULTISEARCH's ESEARCH (RFC 7377 §2.2, §4), pure functions.

``notify_args`` parses ``NOTIFY SET [STATUS] event-group...`` / ``NOTIFY
NONE`` and checks the rules the RFC answers with BAD (§5: MessageNew and
MessageExpunge together, FlagChange / AnnotationChange only with both; RFC 5465 §6.1:
one selected filter, message events only there; §8: a fetch-att list only
for the selected filter).  Events this server does not offer are collected
(the session answers NO [BADEVENT ...], RFC 5465 §3.1): AnnotationChange,
MailboxMetadataChange and ServerMetadataChange (METADATA, RFC 5464, is not
served by this module) and any other event-ext atom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Iterable, List, Optional, Tuple

from protocols.backend.contracts import HIERARCHY_SEP, SHARED_PREFIX
from protocols.imap import grammar as g
from protocols.imap.fetch_args import FetchAtt, fetch_att

# RFC 5465 §8 event names, as the BADEVENT code lists them (our spelling).
SUPPORTED_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
MESSAGE_EVENTS = frozenset(("MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE", "ANNOTATIONCHANGE"))
_SUPPORTED = frozenset(e.upper() for e in SUPPORTED_EVENTS)
# filter-mailboxes (RFC 5465 §8; RFC 7377 §4 adds subtree-one and drops selected-delayed)
SELECTED_FILTERS = ("SELECTED", "SELECTED-DELAYED")
PLAIN_FILTERS = ("INBOXES", "PERSONAL", "SUBSCRIBED")
NAMED_FILTERS = ("SUBTREE", "MAILBOXES", "SUBTREE-ONE")


@dataclass(frozen=True)
class MailboxFilter:
    """One filter-mailboxes: ``kind`` upper-case, ``names`` for subtree / mailboxes."""
    kind: str
    names: Tuple[str, ...] = ()

    @property
    def selected(self) -> bool:
        return self.kind in SELECTED_FILTERS

    def matches(self, name: str, subscribed: Iterable[str] = ()) -> bool:
        """RFC 5465 §6.2 - §6.6, RFC 7377 §2.2 (subtree-one): does ``name`` fall
        under this filter?  "inboxes" is "personal" (RFC 5465 §6.3 allows it: mail may be
        filed into any folder).  Never wildcards (RFC 5465 §6.6).  Other users' folders
        (the shared namespace, RFC 4314) are not personal (RFC 5465 §6.2: "the user's
        personal namespace(s)")."""
        kind = self.kind
        if kind in ("INBOXES", "PERSONAL"):
            return not name.startswith(SHARED_PREFIX)
        if kind == "SUBSCRIBED":
            return name in subscribed
        if kind == "MAILBOXES":
            return name in self.names
        for top in self.names:
            if name == top:
                return True
            if name.startswith(top + HIERARCHY_SEP):
                if kind == "SUBTREE" or HIERARCHY_SEP not in name[len(top) + 1:]:
                    return True
        return False


@dataclass(frozen=True)
class EventGroup:
    """event-group: a filter and its events (upper-case names; empty for NONE)."""
    filter: MailboxFilter
    events: FrozenSet[str]
    fetch_atts: Tuple[FetchAtt, ...] = ()


@dataclass(frozen=True)
class NotifySpec:
    status: bool
    groups: Tuple[EventGroup, ...]
    unsupported: Tuple[str, ...] = ()      # events named that we do not offer (BADEVENT)

    @property
    def selected(self) -> Optional[EventGroup]:
        return next((gr for gr in self.groups if gr.filter.selected), None)

    def others(self) -> List[EventGroup]:
        return [gr for gr in self.groups if not gr.filter.selected]


def _many(buf: memoryview, utf8: bool) -> Tuple[Tuple[str, ...], memoryview]:
    """one-or-more-mailbox = mailbox / many-mailboxes (RFC 5465 §8)."""
    if bytes(buf[:1]) == b"(":
        names, rest = g.paren_list(buf, lambda b: g.mailbox(b, utf8), allow_empty=False)
        return tuple(names), rest
    name, rest = g.mailbox(buf, utf8)
    return (name,), rest


def filter_mailboxes(buf: g.Buf, utf8: bool, allowed: Tuple[str, ...]) -> Tuple[MailboxFilter, memoryview]:
    """filter-mailboxes (RFC 5465 §8, RFC 7377 §4): ``allowed`` the kinds the caller takes."""
    buf = g._mv(buf)
    raw, rest = g.atom(buf)
    kind = raw.decode("ascii").upper()
    if kind not in allowed:
        raise g.ImapParseError("unknown mailbox filter %r" % kind[:30])
    if kind in NAMED_FILTERS:
        names, rest = _many(g.sp(rest), utf8)
        return MailboxFilter(kind, names), rest
    return MailboxFilter(kind), rest


def _event(buf: memoryview) -> Tuple[Tuple[str, Tuple[FetchAtt, ...]], memoryview]:
    """event, with MessageNew's fetch-att list (RFC 5465 §8)."""
    raw, rest = g.atom(buf)
    name = raw.decode("ascii").upper()
    atts: Tuple[FetchAtt, ...] = ()
    if name == "MESSAGENEW" and g.peek(rest, b" ("):
        items, rest = g.paren_list(rest[1:], fetch_att, allow_empty=False)
        atts = tuple(items)
    return (name, atts), rest


def _group(buf: memoryview, utf8: bool) -> Tuple[EventGroup, memoryview]:
    """event-group = "(" filter-mailboxes SP events ")" (RFC 5465 §8).

    DEVIATION(RFC 5465 §8): the events may also stand without their
    parentheses, "(selected MessageNew (uid) MessageExpunge)", as the RFC's
    own example in §3.1 writes them (clients copy it)."""
    buf = g.expect(b"(", buf)
    flt, buf = filter_mailboxes(buf, utf8, SELECTED_FILTERS + PLAIN_FILTERS + NAMED_FILTERS[:2])
    buf = g.sp(buf)
    if g.peek(buf, b"NONE)"):
        return EventGroup(flt, frozenset()), buf[5:]
    if bytes(buf[:1]) == b"(":
        events, buf = g.paren_list(buf, _event, allow_empty=False)
        buf = g.expect(b")", buf)
    else:
        events, buf = g.paren_list(b"(" + bytes(buf), _event, allow_empty=False)
    atts = tuple(a for _n, atts in events for a in atts)
    return EventGroup(flt, frozenset(n for n, _a in events), atts), buf


def _check(group: EventGroup) -> None:
    """RFC 5465 §5 and §6.1: the combinations answered BAD."""
    ev = group.events
    if ("MESSAGENEW" in ev) != ("MESSAGEEXPUNGE" in ev):
        raise g.ImapParseError("MessageNew and MessageExpunge go together (RFC 5465 §5)")
    if ev & {"FLAGCHANGE", "ANNOTATIONCHANGE"} and "MESSAGENEW" not in ev:
        raise g.ImapParseError("FlagChange needs MessageNew and MessageExpunge (RFC 5465 §5)")
    if group.filter.selected and ev - MESSAGE_EVENTS:
        raise g.ImapParseError("only message events for the selected mailbox (RFC 5465 §6.1)")
    if group.fetch_atts and not group.filter.selected:
        raise g.ImapParseError("a fetch-att list only for the selected mailbox (RFC 5465 §8)")


def notify_args(buf: g.Buf, utf8: bool = False) -> Optional[NotifySpec]:
    """notify = "NOTIFY" SP (notify-set / notify-none) (RFC 5465 §8); None for NONE."""
    buf = g.sp(buf)
    if g.peek(buf, b"NONE"):
        g.end(buf[4:])
        return None
    buf = g.expect(b"SET", buf)
    status = False
    if g.peek(buf, b" STATUS"):
        status, buf = True, buf[7:]
    groups = []
    while bytes(buf[:1]) == b" ":
        group, buf = _group(buf[1:], utf8)
        _check(group)
        groups.append(group)
    g.end(buf)
    if not groups:
        raise g.fail("event-group", buf)
    if sum(1 for gr in groups if gr.filter.selected) > 1:
        raise g.ImapParseError("only one of selected and selected-delayed (RFC 5465 §6.1)")
    unsupported = sorted(set(n for gr in groups for n in gr.events) - _SUPPORTED)
    return NotifySpec(status, tuple(groups), tuple(unsupported))
