"""The change hub: who waits for news of a folder, and who tells them.

Issue 9 §2.  Keyed by (user, folder); everything here runs on the loop thread
except the poll's stat calls, which run on a worker:

* ``announce(user, folder)``: a change this process made (local delivery once
  its file and directory fsync are done, so the mail is there to read; POP3's
  QUIT expunge; later IMAP's changes) reaches every subscriber at once;
* ``subscribe(user, folder, callback)`` returns a handle (``unsubscribe`` or
  ``handle.cancel()``); IMAP IDLE sessions (RFC 2177) will subscribe;
* writers outside this process (another mailsrv, Dovecot, mutt) are found by a
  poll every ``POLL_INTERVAL_S`` of the folders that have subscribers: the
  folder's ``token()`` (store/folder.py: four stat calls, no lock, no listing)
  compared with the last one.  A change we announced ourselves is seen by the
  poll as well: subscribers may hear of one change twice, never of none
  ("something changed, look": they re-sync, which is cheap when nothing did);
* ``watch_names(user, callback)``: the user's mailbox tree (NOTIFY, RFC 5465
  §5.4, §5.5): ``announce_names(user, event, origin)`` from this process's
  CREATE / DELETE / RENAME / SUBSCRIBE (protocols/backend/imapaccess.py) at
  once, and ``callback(user, None, None)`` ("look again") when the poll finds
  the Maildir root's folder directories or its subscriptions file changed by
  another process (a folder made or removed by Dovecot, mutt, a second
  mailsrv; a rename there is seen as a deletion and a creation);
* ``share(channel)``: sibling mailsrv processes on this host
  (protocols/loop_siblings.py, issue 14) hear of each ``announce`` and
  ``announce_names`` at once and tell their own subscribers as if the change
  were theirs (``callback(user, folder)``: the IDLE session re-reads the
  folder from disk; names: ``callback(user, None, None)``, "look again").  A
  datagram a busy sibling drops costs only time: its poll finds the change.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

from store.folder import open_folder

log = logging.getLogger("mailsrv.hub")

Key = Tuple[str, str]                     # (user, folder name; "INBOX" for the root)
Callback = Callable[[str, str], None]     # callback(user, folder)
NameCallback = Callable[[str, object, object], None]   # callback(user, event or None, origin)

# Seconds between polls for outside writers.  Dovecot's mailbox_idle_check_interval
# defaults to 30 s; ours is shorter because a poll costs four stat calls per
# watched folder (no listing): 1,000 watched folders cost 2,000 stat calls a second,
# and another writer's mail (Dovecot, mutt, a second mailsrv) reaches IDLE within
# about two seconds (issue 10: "within a few seconds").
POLL_INTERVAL_S = 2.0
# Longest user or folder name a sibling may announce: an address (RFC 5321
# §4.5.3.1: 64 + 1 + 255) or a mailbox name well beyond any folder path.
MAX_SHARED_NAME = 1024


class Subscription:
    """A subscriber's handle: ``cancel()`` (or ``hub.unsubscribe(handle)``)."""

    def __init__(self, hub: "ChangeHub", key: Key, callback: Callback):
        self.hub, self.key, self.callback = hub, key, callback

    def cancel(self) -> None:
        self.hub.unsubscribe(self)


class ChangeHub:
    def __init__(self, loop, maildir_path: Callable[[str], str], poll_interval: float = POLL_INTERVAL_S):
        self.loop = loop
        self.maildir_path = maildir_path        # user -> the user's Maildir (MailStore's)
        self.poll_interval = poll_interval
        self._subs: Dict[Key, List[Subscription]] = {}
        self._all: List[Callback] = []          # watch_all: every announce (the catch-all catalog)
        self._tokens: Dict[Key, tuple] = {}     # last token seen per watched folder
        self._names: Dict[str, List[NameCallback]] = {}   # watch_names, by user
        self._name_tokens: Dict[str, tuple] = {}          # last root token seen per watched user
        self._name_ops: Dict[str, Tuple[int, int]] = {}   # user -> (name changes in flight, changes ended)
        self._timer = None
        self._polling = False
        self._closed = False
        self._siblings = None                   # protocols/loop_siblings.SiblingChannel, once shared

    def share(self, channel) -> None:
        """Announce our changes to the sibling processes, and theirs here."""
        self._siblings = channel
        channel.on("change", self._sibling_change)
        channel.on("names", self._sibling_names)

    def _sibling_change(self, message: dict) -> None:
        user, folder = message.get("u"), message.get("f")
        if _name_ok(user) and _name_ok(folder):
            self._notify(user, folder)

    def _sibling_names(self, message: dict) -> None:
        user = message.get("u")
        if _name_ok(user):
            self._notify_names(user, None, None)

    def folder_path(self, user: str, folder: str) -> str:
        """INBOX is the Maildir itself, another folder its Maildir++ ``.Name``."""
        root = self.maildir_path(user)
        return root if folder.upper() == "INBOX" else os.path.join(root, "." + folder)

    def subscribe(self, user: str, folder: str, callback: Callback) -> Subscription:
        """``callback(user, folder)`` on each change until unsubscribed.  A folder
        newly watched is polled at once, so the poll's baseline is taken now."""
        handle = Subscription(self, (user, folder), callback)
        new_key = handle.key not in self._subs
        self._subs.setdefault(handle.key, []).append(handle)
        if not self._closed and not self._polling and (self._timer is None or new_key):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(0 if new_key else self.poll_interval, self._poll)
        return handle

    def unsubscribe(self, handle: Subscription) -> None:
        subs = self._subs.get(handle.key)
        if subs and handle in subs:
            subs.remove(handle)
            if not subs:
                del self._subs[handle.key]
                self._tokens.pop(handle.key, None)

    def subscribers(self, user: str, folder: str) -> int:
        return len(self._subs.get((user, folder), ()))

    def watch_all(self, callback: Callback) -> Callable[[], None]:
        """``callback(user, folder)`` for every change this process announces (no
        poll); returns the function that stops it."""
        self._all.append(callback)
        return lambda: self._all.remove(callback) if callback in self._all else None

    def watch_names(self, user: str, callback: NameCallback) -> Callable[[], None]:
        """``callback(user, event, origin)`` for each ``announce_names`` of ``user``,
        and ``callback(user, None, None)`` when the poll sees the user's mailbox
        tree changed by someone else; returns the function that stops it."""
        new_user = user not in self._names
        self._names.setdefault(user, []).append(callback)
        if new_user and not self._closed and not self._polling:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(0, self._poll)    # the baseline, now

        def stop() -> None:
            callbacks = self._names.get(user)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._names[user]
                    self._name_tokens.pop(user, None)
                    if self._name_ops.get(user, (0, 0))[0] <= 0:
                        self._name_ops.pop(user, None)
        return stop

    def announce_names(self, user: str, event: object, origin: object = None) -> None:
        """A mailbox of ``user`` created, deleted, renamed or (un)subscribed by this
        process (``event``: contracts.MailboxEvent; ``origin``: the account that did it)."""
        self._notify_names(user, event, origin)
        if self._siblings is not None:
            self._siblings.send("names", {"u": user})

    def _notify_names(self, user: str, event: object, origin: object) -> None:
        for callback in list(self._names.get(user, ())):
            try:
                callback(user, event, origin)
            except Exception:
                log.exception("mailbox watcher failed user=%s", user)

    def names_begin(self, user: str) -> None:
        """A name change of ``user`` was handed to a worker (imapnotify.then_names)."""
        running, ended = self._name_ops.get(user, (0, 0))
        self._name_ops[user] = (running + 1, ended)

    def names_end(self, user: str) -> None:
        running, ended = self._name_ops.get(user, (1, 0))
        self._name_ops[user] = (running - 1, ended + 1)
        if running - 1 <= 0 and user not in self._names:
            del self._name_ops[user]

    def names_state(self, user: str) -> Tuple[int, int]:
        """(changes in flight, changes ended): a listing taken while a change of
        this process ran, or across one's end, may show it before its announcement."""
        return self._name_ops.get(user, (0, 0))

    def announce(self, user: str, folder: str = "INBOX") -> None:
        """A change in (user, folder): every subscriber's callback, now (loop
        thread), and the sibling processes' subscribers."""
        self._notify(user, folder)
        if self._siblings is not None:
            self._siblings.send("change", {"u": user, "f": folder})

    def _notify(self, user: str, folder: str) -> None:
        for callback in list(self._all):
            try:
                callback(user, folder)
            except Exception:
                log.exception("change watcher failed user=%s folder=%s", user, folder)
        for handle in list(self._subs.get((user, folder), ())):
            try:
                handle.callback(user, folder)
            except Exception:
                log.exception("change subscriber failed user=%s folder=%s", user, folder)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the poll for writers outside this process ---------------------------
    def _poll(self) -> None:
        self._timer = None
        if self._closed or not (self._subs or self._names):
            return
        self._polling = True
        watched = [(key, self.folder_path(*key)) for key in self._subs]
        roots = [(user, self.maildir_path(user)) for user in self._names]
        self.loop.run_in_thread(lambda: (_tokens(watched), _root_tokens(roots)), self._polled)

    def _polled(self, result) -> None:
        self._polling = False
        if isinstance(result, BaseException):
            log.error("change poll failed: %r", result)
            result = ({}, {})
        result, roots = result
        for user, token in roots.items():
            before = self._name_tokens.get(user)
            if user in self._names:
                self._name_tokens[user] = token
                if before is not None and token != before:
                    self._notify_names(user, None, None)
        for key, token in result.items():
            if key not in self._subs:
                continue
            before = self._tokens.get(key)
            self._tokens[key] = token
            if before is not None and token != before:
                self._notify(*key)
        if (self._subs or self._names) and not self._closed and self._timer is None:
            self._timer = self.loop.call_later(self.poll_interval, self._poll)


def _name_ok(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_SHARED_NAME


def _tokens(watched: List[Tuple[Key, str]]) -> Dict[Key, Optional[tuple]]:
    """On a worker: each watched folder's ``token()`` (a missing one is None)."""
    out: Dict[Key, Optional[tuple]] = {}
    for key, path in watched:
        out[key] = open_folder(path).token() if os.path.isdir(path) else None
    return out


def _root_tokens(roots: List[Tuple[str, str]]) -> Dict[str, tuple]:
    """On a worker: per user, the Maildir++ folder directories of the root
    (one scandir: a folder made, removed or renamed changes the set; the
    root's mtime would also move at each INBOX uidlist rewrite) and the
    subscriptions file's (mtime, inode, size) (a SUBSCRIBE rewrites it,
    store/dovecot_files.py)."""
    out: Dict[str, tuple] = {}
    for user, root in roots:
        try:
            with os.scandir(root) as it:
                folders = frozenset(e.name for e in it if e.name.startswith(".") and e.is_dir())
        except OSError:
            folders = None
        try:
            st = os.stat(os.path.join(root, "subscriptions"))
            subs = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            subs = None
        out[user] = (folders, subs)
    return out
