"""IMAP NOTIFY (RFC 5465), a mixin of protocols/imap/session.py's ImapSession.

``NOTIFY SET [STATUS] (filter events)...`` replaces the session's events,
``NOTIFY NONE`` ends them (§3.1; the grammar is notify_args.py).  Served:

* the selected mailbox (``selected`` / ``selected-delayed``, §6.1):
  MessageNew (EXISTS, then ``* n FETCH`` with the client's fetch-att list,
  §5.2), MessageExpunge (EXPUNGE, §5.3), FlagChange (FETCH (FLAGS), §5.1)
  are pushed as the change hub reports them (the folder's ``watch``), also
  between commands and while IDLE (§4); ``selected-delayed`` keeps EXPUNGE
  for the next command that allows it (§6.1.2).  A message that arrives
  while one of this session's commands runs is announced with that
  command's reply, its FETCH too, unless the command was an APPEND, COPY or
  MOVE (§5.2: none for a message the client made itself; which messages the
  command made and which arrived meanwhile is not told apart);
* other mailboxes (``inboxes`` = ``personal`` (§6.3 allows it), ``subscribed``,
  ``subtree``, ``mailboxes``): an untagged STATUS (MESSAGES UIDNEXT
  UIDVALIDITY, UNSEEN for FlagChange, HIGHESTMODSEQ once CONDSTORE is on:
  ``_notify_condstore``) when one changed (§5.1 - §5.3), only when the
  values differ from the last ones sent; MailboxName (§5.4: LIST, LIST
  (\\NonExistent), LIST ... ("OLDNAME" (old))) and SubscriptionChange (§5.5)
  from ``ImapAccount.watch_mailboxes`` (protocols/backend/imapnotify.py);
  this session's own CREATE / RENAME / ... are not reported back (§5); its
  own APPEND / COPY into a watched mailbox may be (the hub says that a
  folder changed, not who changed it);
* ``STATUS`` (§3.1): a STATUS response for each watched mailbox before the OK.

Not served (the command answers NO [BADEVENT (...)], §3.1):
AnnotationChange, MailboxMetadataChange, ServerMetadataChange (METADATA,
RFC 5464, is another module's; once it is announced these events belong
with it).  The mailbox's own parent is not reported on a creation or
deletion (RFC 5465 §5.4 lists it as affected; its \\HasChildren changes only).

Bound (RFC 5465 §5.8): events wait in a per-session queue while a lookup runs or the
client does not read (``notify_hold_octets`` of output unread); a mailbox
waits there once however often it changes.  Beyond ``notify_max_pending``
waiting events the session sends ``* OK [NOTIFICATIONOVERFLOW]`` and acts as
after NOTIFY NONE: the client re-syncs with LIST and STATUS, cheaper than a
replay of every change.

DEVIATION(RFC 5465 §3.1): without a ``selected`` group the selected mailbox
still gets EXISTS / EXPUNGE / FETCH with command replies, as before NOTIFY:
message numbers must stay right for the client; only the pushes stop.
Non-PEEK body items in MessageNew's list are served as PEEK (§5.2: clients
SHOULD NOT use them; a push must not change the mailbox).
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional

from protocols import mime
from protocols.backend.contracts import HIERARCHY_SEP, MailboxEvent
from protocols.imap import fetch_data, listing, wire
from protocols.imap.fetching import _NOT_OFFERED
from protocols.imap.notify_args import SUPPORTED_EVENTS, NotifySpec, notify_args
from protocols.imap.session_base import BAD, NO, OK, OUTPUT_HIGH_WATER, Refusal

log = logging.getLogger("mailsrv.imap")

# RFC 5465 §5.8 leaves the bound to the server.  Ours: 1,000 waiting events
# (a mailbox counts once, so this is a thousand folders changed, or a thousand
# folders created / renamed, while the client did not read); past that a
# LIST + STATUS re-sync costs less than the replay.
NOTIFY_MAX_PENDING = 1000
# Output unread by the client before events are held (session_base's FETCH
# high-water mark: the same "the client is not reading" signal).
NOTIFY_HOLD_OCTETS = OUTPUT_HIGH_WATER
# §5.2: "A FETCH response SHOULD NOT be generated for a new message created by
# the client on this particular connection" (its APPEND, COPY or MOVE).
_OWN_NEW = frozenset(("APPEND", "COPY", "MOVE"))
_NAME_EVENTS = {"created": "MAILBOXNAME", "deleted": "MAILBOXNAME", "renamed": "MAILBOXNAME",
                "subscribed": "SUBSCRIPTIONCHANGE", "unsubscribed": "SUBSCRIPTIONCHANGE"}


class NotifyCommands:
    """NOTIFY and its events (see the module docstring)."""

    notify_max_pending = NOTIFY_MAX_PENDING
    notify_hold_octets = NOTIFY_HOLD_OCTETS
    _notify: Optional[NotifySpec] = None
    _notify_stop = None
    _notify_busy = False
    _notify_view = None                       # the view _notify_upto belongs to
    _notify_upto = 0                          # highest UID MessageNew's FETCH was considered for

    def _notify_init(self) -> None:
        self._notify_queue: "OrderedDict[object, object]" = OrderedDict()
        self._notify_last: Dict[str, bytes] = {}      # the STATUS last sent per mailbox
        self._notify_subscribed: set = set()
        self._notify_serial = 0

    # -- the command (RFC 5465 §3.1) ---------------------------------------------

    def _cmd_notify(self, head):
        """NOTIFY SET / NOTIFY NONE (RFC 5465 §3.1)."""
        spec = notify_args(head.rest, self.utf8)
        for att in (spec.selected.fetch_atts if spec is not None and spec.selected else ()):
            if att.name in _NOT_OFFERED:          # as FETCH answers them (fetching.py)
                return (BAD, "%s is not supported" % att.name, None)
        if spec is not None and spec.unsupported:
            names = [n.encode("ascii") for n in SUPPORTED_EVENTS]
            return (NO, "Unsupported NOTIFY event %s" % spec.unsupported[0][:40],
                    wire.response_code("BADEVENT", names))
        self._notify_off()
        if spec is None:
            return None
        entries = yield from self._ask(self._account.list)
        self._notify_init()
        self._notify = spec
        self._notify_subscribed = set(e.name for e in entries if e.subscribed)
        watch = getattr(self._account, "watch_mailboxes", None)
        if watch is not None and spec.others():
            messages = any(gr.events for gr in spec.others())
            self._notify_stop = watch(messages, self._notify_event)
        for entry in entries:     # the values later changes are told against (sent with STATUS)
            items = self._notify_items(entry.name)
            if entry.exists and items and not self._is_selected(entry.name):
                yield from self._notify_status_now(entry.name, items, spec.status)
        self._dirty = True      # §3.1: "implies an implicit NOOP"
        return None

    def _notify_status_now(self, name: str, items: List[str], send: bool):
        st = yield lambda done: self._account.status(name, done)
        if not isinstance(st, BaseException):
            line = listing.status_response(name, st, items, self.utf8, self.config.max_append)
            self._notify_last[name] = line
            if send:
                self._emit(line)

    def _notify_off(self) -> None:
        """NOTIFY NONE, a new NOTIFY SET, an overflow, the session's end."""
        if self._notify_stop is not None:
            stop, self._notify_stop = self._notify_stop, None
            stop()
        self._notify = None
        if hasattr(self, "_notify_queue"):
            self._notify_queue.clear()

    def _release(self) -> None:
        self._notify_off()
        super()._release()

    # -- which mailboxes, which items ------------------------------------------------

    def _is_selected(self, name: str) -> bool:
        return self._folder is not None and self._folder.name == name

    def _notify_condstore(self) -> bool:
        """The CONDSTORE hook (RFC 5465 §5.1 - §5.3: HIGHESTMODSEQ in STATUS once
        the client enabled CONDSTORE or QRESYNC, RFC 7162)."""
        return bool(getattr(self, "condstore", False))

    def _notify_items(self, name: str, subscribed: Optional[Iterable[str]] = None) -> List[str]:
        """STATUS items for a non-selected mailbox's message events (§3.1, §5.1 - §5.3)."""
        events = set()
        for group in self._notify.others() if self._notify else ():
            if group.filter.matches(name, self._notify_subscribed if subscribed is None else subscribed):
                events |= group.events
        items = []
        if "MESSAGENEW" in events:
            items += ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
        if "FLAGCHANGE" in events:
            items.append("UNSEEN")
        if items and self._notify_condstore():
            items.append("HIGHESTMODSEQ")
        return items

    def _wants_name_event(self, event: MailboxEvent, wanted: str, subscribed) -> bool:
        names = [event.name] + ([event.old_name] if event.old_name else [])
        return any(wanted in group.events and group.filter.matches(n, subscribed)
                   for group in self._notify.others() for n in names)

    # -- events from the account (loop thread) --------------------------------------------

    def _notify_event(self, event: MailboxEvent) -> None:
        if self._closing or self._notify is None:
            return
        before = set(self._notify_subscribed)
        if event.kind in ("subscribed", "unsubscribed"):
            (self._notify_subscribed.add if event.kind == "subscribed" else self._notify_subscribed.discard)(event.name)
        if event.kind == "messages":
            if self._is_selected(event.name) or not self._notify_items(event.name):
                return
            self._notify_queue[("status", event.name)] = event.name
        elif event.kind in _NAME_EVENTS and not event.own:
            subscribed = before | self._notify_subscribed
            if not self._wants_name_event(event, _NAME_EVENTS[event.kind], subscribed):
                return
            self._notify_serial += 1
            self._notify_queue[("list", self._notify_serial)] = event
        else:
            return
        if len(self._notify_queue) > self.notify_max_pending:
            self._notify_overflow()
            return
        self._notify_pump()

    def _notify_overflow(self) -> None:
        """RFC 5465 §5.8: tell the client, then behave as after NOTIFY NONE."""
        log.info("imap notify overflow user=%s peer=%s pending=%d", self._user, self.ctx.peer_ip,
                 len(self._notify_queue))
        self._notify_off()
        self._emit(wire.status_line(None, OK, "Too many events waiting; NOTIFY is off, please re-sync",
                                    wire.response_code("NOTIFICATIONOVERFLOW")))
        self.ctx.wake()

    def _after_drain(self) -> None:
        """The client read its output: held events may go (session_base.data_to_send)."""
        if self._notify is not None and self._notify_queue and not self._notify_busy:
            self._notify_pump()

    def _notify_pump(self) -> None:
        """Send the oldest waiting event: one backend lookup at a time."""
        if self._notify_busy or self._closing or self._notify is None or not self._notify_queue:
            return
        if self._out_size >= self.notify_hold_octets:
            return                              # the client is not reading: hold (§5.8 bound)
        key, item = next(iter(self._notify_queue.items()))
        self._notify_busy = True
        if key[0] == "status":
            del self._notify_queue[key]
            self._account.status(item, lambda st: self._notify_answered(self._notify_status_line(item, st)))
        else:
            events = [self._notify_queue.pop(k) for k in [k for k in self._notify_queue if k[0] == "list"]]
            self._account.list(lambda entries: self._notify_answered(self._notify_list_lines(events, entries)))

    def _notify_answered(self, lines: bytes) -> None:
        self._notify_busy = False
        if self._closing or self._notify is None:
            return
        if lines:
            self._emit(lines)
            self.ctx.wake()
        self._notify_pump()

    def _notify_status_line(self, name: str, st) -> bytes:
        """§5.1 - §5.3: the STATUS, unless nothing the client asked for changed."""
        items = self._notify_items(name)
        if isinstance(st, BaseException) or not items or self._is_selected(name):
            return b""
        line = listing.status_response(name, st, items, self.utf8, self.config.max_append)
        if self._notify_last.get(name) == line:
            return b""                          # the hub may tell twice ("look"); nothing new
        if len(self._notify_last) >= self.notify_max_pending:
            self._notify_last.clear()
        self._notify_last[name] = line
        return line

    def _notify_list_lines(self, events: List[MailboxEvent], entries) -> bytes:
        """§5.4, §5.5: one LIST per affected name, its attributes as they are now."""
        if isinstance(entries, BaseException):
            entries = ()
        by_name = {e.name: e for e in entries}
        out = []
        for event in events:
            entry = by_name.get(event.name)
            attrs = []
            if entry is None or not entry.exists:
                attrs.append(b"\\NonExistent")
            elif entry is not None:
                attrs.append(b"\\HasChildren" if entry.has_children else b"\\HasNoChildren")
            if entry is not None and entry.subscribed:
                attrs.append(b"\\Subscribed")
            if entry is not None and entry.exists:
                attrs += [u.encode("ascii") for u in entry.special_use]
            line = b'LIST %s "%s" %s' % (wire.paren(attrs), HIERARCHY_SEP.encode(),
                                         wire.mailbox(event.name, self.utf8))
            if event.kind == "renamed":
                line += b' ("OLDNAME" (%s))' % wire.mailbox(event.old_name, self.utf8)
            out.append(wire.untagged(line))
        return b"".join(out)

    # -- the selected mailbox (§5.1 - §5.3, §6.1) ---------------------------------------

    def _on_change(self) -> None:
        """The selected folder's watch: with a ``selected`` group, pushed now
        (between commands, and while IDLE: §4), else as without NOTIFY."""
        group = self._notify.selected if self._notify is not None else None
        if group is None or not group.events:
            super()._on_change()
            return
        self._dirty = True
        if (self._current is None or self._idling) and not self._idle_refreshing and self._folder is not None:
            self._notify_refresh(group)

    def _sync(self, allow_expunge: bool):
        """A command's updates: with FlagChange for the selected mailbox each
        FETCH (FLAGS) carries UID (§5.1)."""
        group = self._notify.selected if self._notify is not None else None
        if group is not None and "FLAGCHANGE" in group.events and self._view is not None:
            self._view.fetch_uid = True
        yield from super()._sync(allow_expunge)
        new = self._notify_new_uids()
        if group is not None and group.fetch_atts and new and self._work_name not in _OWN_NEW:
            self._side(self._notify_fetch(self._folder, new, group.fetch_atts))

    def _notify_new_uids(self) -> List[int]:
        """The selected mailbox's messages the client has heard of (EXISTS) since
        the last call: MessageNew's FETCH is for them (§5.2).  A view seen for
        the first time (a SELECT) has none."""
        view = self._view
        if view is None:
            return []
        if self._notify_view is not view:
            self._notify_view, self._notify_upto = view, (view.uids[-1] if view.uids else 0)
            return []
        start = bisect.bisect_right(view.uids, self._notify_upto)
        new = [u for u in view.uids[start:view.known] if u not in view.gone]
        if new:
            self._notify_upto = new[-1]
        return new

    def _notify_refresh(self, group) -> None:
        self._dirty = False
        self._idle_refreshing = True
        folder = self._folder

        def refreshed(changes) -> None:
            self._idle_refreshing = False
            if self._closing or folder is not self._folder:
                return
            self._took_changes(folder, changes)
            if self._view is None or not (self._current is None or self._idling):
                return                          # a command started: its reply carries them
            delayed = group.filter.kind == "SELECTED-DELAYED" and not self._idling
            self._view.fetch_uid = True         # §5.1: "MUST include UID and FLAGS"
            self._emit(self._view.flush(not delayed))
            self._view.fetch_uid = False
            new = self._notify_new_uids()
            if group.fetch_atts and new:
                self._side(self._notify_fetch(folder, new, group.fetch_atts))
            if self._dirty:
                self._notify_refresh(group)
            self.ctx.wake()
        folder.refresh(refreshed)

    def _notify_fetch(self, folder, uids, atts):
        """§5.2: ``* n FETCH (...)`` of each new message, as the client listed."""
        content = any(fetch_data.needs_content(a) for a in atts)
        for uid in uids:
            data = root = None
            if folder is not self._folder:
                return                          # another mailbox selected meanwhile
            if content:
                data = yield from self._read(uid)
            view = self._view
            if folder is not self._folder or view is None or not view.has(uid) or (content and data is None):
                continue
            if content:
                root = mime.parse(data)
            self._emit(self._fetch_response(uid, atts, lambda att: self._render(att, data, root), False))

    def _side(self, gen) -> None:
        """Run a generator of backend calls beside the commands (a push has no
        tag): each answer continues it; a refusal ends it, logged."""
        def step(value) -> None:
            while True:
                try:
                    call = gen.send(value)
                except StopIteration:
                    return
                except Refusal as exc:
                    log.info("imap notify fetch stopped user=%s: %s", self._user, exc.text)
                    return
                box: list = []
                waiting = [False]

                def done(result, box=box, waiting=waiting) -> None:
                    if waiting[0]:
                        waiting[0] = False
                        if self._closing:
                            gen.close()
                            return
                        step(result)
                        self.ctx.wake()
                    else:
                        box.append(result)
                call(done)
                if not box:
                    waiting[0] = True
                    return
                value = box[0]
        step(None)
