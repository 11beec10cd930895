"""One IMAP account's mailbox events for NOTIFY (RFC 5465), from the change hub.

``ImapAccount.watch_mailboxes`` (contracts.py) is served here:

* names (RFC 5465 §5.4 MailboxName, §5.5 SubscriptionChange): this process's
  CREATE / DELETE / RENAME / SUBSCRIBE / UNSUBSCRIBE are announced by
  imapaccess.py through ``ChangeHub.announce_names`` once done on disk, and
  reach every watcher of the user at once, marked ``own`` for the account
  that made them (§5: that client SHOULD NOT hear of it).  Other processes'
  changes are found by the hub's poll of the user's Maildir root (folder
  directories) and subscriptions file: the watcher lists the tree again and
  reports the difference with the listing it last knew.  A rename made by
  another process is seen as a deletion and a creation (the poll sees names,
  not identities); one made here is a rename with its old name;
* messages (§5.1 - §5.3 for mailboxes other than the selected one): with
  ``messages`` the watcher subscribes to every existing mailbox of the user
  in the hub (``ChangeHub.subscribe``: this process's writers at once, other
  writers by the stat poll) and follows creations, deletions and renames;
  each change is a "messages" event, "look": the session asks STATUS.

Runs on the loop thread; the listing runs on the account's worker queue.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

from protocols.backend.contracts import HIERARCHY_SEP, MailboxEvent

log = logging.getLogger("mailsrv.imap.notify")

Known = Dict[str, Tuple[bool, bool]]      # name -> (exists, subscribed)


class AccountWatch:
    """The watcher behind one ``watch_mailboxes`` call (see the module docstring)."""

    def __init__(self, account, messages: bool, callback: Callable[[MailboxEvent], None]):
        self.account = account
        self.messages = messages
        self.callback = callback
        self.hub = account._service.hub
        self._known: Optional[Known] = None    # None until the first listing
        self._subs: Dict[str, object] = {}     # mailbox -> hub subscription (``messages``)
        self._listing = False
        self._again = False
        self._stale = False                   # a listing raced this process's own change: list again
        self._stopped = False
        self._stop_names = self.hub.watch_names(account.user, self._on_names)
        self._relist()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop_names()
        for handle in self._subs.values():
            handle.cancel()
        self._subs = {}

    # -- events ---------------------------------------------------------------
    def _on_names(self, _user: str, event, origin) -> None:
        if self._stopped:
            return
        if event is None:                     # the poll: someone else changed the tree (or: look)
            self._stale = False
            self._relist()
            return
        if self._stale:
            self._stale = False
            self._relist()
        if self._known is not None:
            apply_event(self._known, event)
            self._follow()
        self._emit(MailboxEvent(event.kind, event.name, event.old_name, origin is self.account))

    def _emit(self, event: MailboxEvent) -> None:
        try:
            self.callback(event)
        except Exception:
            log.exception("mailbox event failed user=%s", self.account.user)

    def _on_messages(self, name: str) -> None:
        if not self._stopped:
            self._emit(MailboxEvent("messages", name))

    # -- the listing ----------------------------------------------------------
    def _relist(self) -> None:
        if self._listing:
            self._again = True
            return
        self._listing = True
        boxes = self.account._boxes
        started = self.hub.names_state(self.account.user)

        def work() -> Known:
            return {e.name: (e.exists, e.subscribed) for e in boxes.list()}
        self.account._serial.submit(work, lambda result: self._listed(result, started))

    def _listed(self, result, started: Tuple[int, int]) -> None:
        self._listing = False
        if self._stopped:
            return
        now = self.hub.names_state(self.account.user)
        if self._known is not None and (now[0] or started != now):
            # this process changed names meanwhile: the listing may show a change before
            # its announcement (a rename would look like a deletion and a creation)
            if now[0]:
                self._stale = True            # listed again at the announcement
            else:
                self._again = True
        elif isinstance(result, BaseException):
            log.warning("mailbox listing failed user=%s: %r", self.account.user, result)
        else:
            before, self._known = self._known, result
            if before is not None:
                for event in diff(before, result):
                    self._emit(event)
            for name in self._follow():
                if before is not None:        # made by another process: what it holds already
                    self._on_messages(name)   # (the hub's poll takes its baseline only now)
        if self._again:
            self._again = False
            self._relist()

    def _follow(self) -> List[str]:
        """Hub subscriptions for exactly the existing mailboxes (``messages``);
        returns the names newly followed."""
        if not self.messages or self._known is None:
            return []
        from protocols.backend.imapaccess import hub_key    # imapaccess imports this module
        wanted = set(name for name, (exists, _s) in self._known.items() if exists)
        for name in [n for n in self._subs if n not in wanted]:
            self._subs.pop(name).cancel()
        new = []
        for name in sorted(wanted - set(self._subs)):
            try:
                key = hub_key(name)
            except Exception:
                continue                      # a name no folder can have
            self._subs[name] = self.hub.subscribe(self.account.user, key,
                                                  lambda _u, _f, name=name: self._on_messages(name))
            new.append(name)
        return new


def then_names(account, event: MailboxEvent, done: Callable[[object], None]) -> Callable[[object], None]:
    """``done`` of CREATE / DELETE / RENAME / (UN)SUBSCRIBE (imapaccess.py): once
    the change is on disk, the user's watchers hear of it (RFC 5465 §5.4, §5.5)."""
    hub = account._service.hub
    hub.names_begin(account.user)

    def answered(result: object) -> None:
        hub.names_end(account.user)
        if not isinstance(result, BaseException):
            hub.announce_names(account.user, event, account)
        else:                                 # nothing changed, or who knows: watchers list again
            hub.announce_names(account.user, None, account)
        done(result)
    return answered


def apply_event(known: Known, event: MailboxEvent) -> None:
    """Our own change, applied to the listing so that the poll's next diff does
    not report it again (RFC 5465 §5.4: a rename moves the children too)."""
    name = event.name
    exists, subscribed = known.get(name, (False, False))
    if event.kind == "created":
        known[name] = (True, subscribed)
    elif event.kind == "deleted":
        if subscribed:
            known[name] = (False, True)
        else:
            known.pop(name, None)
    elif event.kind == "renamed":
        old = event.old_name
        for n in [n for n in known if n == old or n.startswith(old + HIERARCHY_SEP)]:
            was_exists, was_sub = known.pop(n)
            known[name + n[len(old):]] = (was_exists, False)
            if was_sub:
                known[n] = (False, True)      # a subscription stays with its name
    elif event.kind in ("subscribed", "unsubscribed"):
        known[name] = (exists, event.kind == "subscribed")


def diff(before: Known, after: Known):
    """The events that turn listing ``before`` into ``after`` (another process's
    changes): creations, deletions, subscription changes, in name order."""
    out = []
    for name in sorted(set(before) | set(after)):
        was_exists, was_sub = before.get(name, (False, False))
        exists, sub = after.get(name, (False, False))
        if exists and not was_exists:
            out.append(MailboxEvent("created", name))
        elif was_exists and not exists:
            out.append(MailboxEvent("deleted", name))
        if sub != was_sub:
            out.append(MailboxEvent("subscribed" if sub else "unsubscribed", name))
    return out
