"""FETCH (RFC 9051 §6.4.5, §7.5.2; RFC 3501 §6.4.5), a mixin of
protocols/imap/session.py's ImapSession.

The session answers the metadata items itself (FLAGS, UID, INTERNALDATE,
RFC822.SIZE, MODSEQ (RFC 7162 §3.1.4), SAVEDATE (RFC 8514 §4)) from the
view, EMAILID and THREADID (RFC 8474 §5.3) from objectid.py, PREVIEW (RFC
8970) from preview.py; the content items go to fetch_data.py with the
message read through ``OpenFolder.read`` one at a time, each response queued before the next read
and the next read held while too much output waits (``_wait_drain``).  A
non-PEEK body fetch on a read-write mailbox sets \\Seen through
``OpenFolder.store`` first, and the FETCH response carries the new FLAGS
(RFC 9051 §6.4.5).  A message expunged by another session meanwhile: its
metadata is still served, its content cannot be, and the command ends
``NO [EXPUNGEISSUED]`` (RFC 2180 §4.1.2, RFC 5530 §3).  The CHANGEDSINCE and
VANISHED modifiers (RFC 7162 §3.1.4.1, §3.2.6) narrow the UIDs and send the
VANISHED (EARLIER) first (condstore.py); after ENABLE UIDONLY each response
is a UIDFETCH (RFC 9586 §3.3).

A FETCH whose content items are all ones derived.py keeps (ENVELOPE,
BODYSTRUCTURE, BODY, the message's own HEADER / HEADER.FIELDS (.NOT) and
RFC822.HEADER) asks ``OpenFolder.derived`` instead, ``CACHE_BATCH`` UIDs at a
time: the folder's cache answers without opening the files, and the
response is byte for byte the one built from the message.  When every such
item is one the header block answers (ENVELOPE, the header sections), the
entries asked for are fetch_cache.py's header-only ones, whose misses read
only the start of each file; BODYSTRUCTURE and BODY take derived.py's whole
entries.
"""

from __future__ import annotations

import datetime
import logging
from typing import Callable, List, Optional, Sequence

from protocols import mime
from protocols.imap import args as A
from protocols.imap import derived, fetch_cache, fetch_data, partial, wire
from protocols.imap.fetch_args import FetchAtt
from protocols.imap.objectid import OBJECTID_ITEMS
from protocols.imap.session_base import NO, OUTPUT_HIGH_WATER, Refusal

log = logging.getLogger("mailsrv.imap")

# FETCH items of the grammar that are refused (BAD): none since OBJECTID
# (RFC 8474); NOTIFY's MessageNew checks its items against this (notify.py).
_NOT_OFFERED: tuple = ()
# Ours: UIDs asked of the folder's cache at once (imapaccess.DERIVED_BATCH's
# size): a round trip per 256 messages, at most 256 entries held.
CACHE_BATCH = 256


def _date(seconds: Optional[float]) -> bytes:
    if seconds is None:
        return b"NIL"
    return wire.date_time(datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc))


class FetchCommands:
    """FETCH / UID FETCH (see the module docstring)."""

    _fetch_extra: dict = {}     # this FETCH's items from _extra_items (read only; replaced per FETCH)

    def _cmd_fetch(self, head):
        seqset, fa = A.fetch(head.rest)
        atts = list(fa.atts)
        if fa.changed_since is not None and not any(a.name == "MODSEQ" for a in atts):
            atts.insert(0, FetchAtt("MODSEQ"))     # RFC 7162 §3.1.4.1: implied
        if head.uid and not self.uidonly and not any(a.name == "UID" for a in atts):
            atts.insert(0, FetchAtt("UID"))    # RFC 9051 §6.4.9 (UIDONLY: UIDFETCH names it, RFC 9586 §3.3)
        view = self._view
        uids = view.resolve(seqset, head.uid, self._saved)
        if fa.changed_since is not None:    # RFC 7162 §3.1.4.1, §3.2.6 (condstore.py)
            yield from self._fetch_modifiers(head, fa, seqset)
            uids = self._changed_uids(uids, fa.changed_since)
        elif any(a.name == "MODSEQ" for a in atts):
            self._condstore_on()            # RFC 7162 §3.1: a CONDSTORE enabling command
        if fa.partial is not None:      # RFC 9394 §3.3: UID FETCH only, the window of what is left
            uids = partial.fetch_window(uids, fa.partial, head.uid)
        flagged = yield from self._set_seen(uids, atts)
        self._work_goal(len(uids))          # RFC 9585 progress: messages sent
        if any(a.name in ("INTERNALDATE", "SAVEDATE") for a in atts):
            yield from self._load_dates(uids)
        self._fetch_extra = yield from self._extra_items(uids, atts)
        wanted = [a for a in atts if fetch_data.needs_content(a)]
        if wanted and all(derived.cacheable(a) for a in wanted):
            head = all(fetch_cache.from_head(a) for a in wanted)
            missing = yield from self._fetch_cached(uids, atts, flagged, head)
        else:
            missing = yield from self._fetch_read(uids, atts, flagged, bool(wanted))
        self._fetch_extra = {}              # this FETCH's ids and previews are not kept
        if missing:
            return (NO, "Some messages were expunged meanwhile", wire.response_code("EXPUNGEISSUED"))
        return None

    def _extra_items(self, uids, atts):
        """The items answered from the backend beside the message (RFC 8474 §5.3
        EMAILID / THREADID: objectid.py; RFC 8970 PREVIEW: preview.py):
        ``{name: uid -> item, or None for no item}``."""
        extra = {}
        if any(a.name in OBJECTID_ITEMS for a in atts):
            extra.update((yield from self._objectid_items(uids, atts)))
        if any(a.name == "PREVIEW" for a in atts):
            extra.update((yield from self._preview_items(uids, atts)))     # RFC 8970 (preview.py)
        return extra

    def _fetch_read(self, uids, atts, flagged, content: bool):
        """Each message read whole (when an item needs content); True if one was gone."""
        missing = False
        for uid in uids:
            data = root = None
            if content:
                data = yield from self._read(uid)
                if data is None:
                    missing = True
                    continue
                root = mime.parse(data)
            self._emit(self._fetch_response(uid, atts, lambda att: self._render(att, data, root),
                                            uid in flagged))
            self.counts["fetched"] += 1
            self._work_step()
            if self._out_size >= OUTPUT_HIGH_WATER:   # what _wait_drain looks at: yield only then
                yield self._wait_drain
        return missing

    def _fetch_cached(self, uids, atts, flagged, head: bool):
        """The content items from the folder's cache (derived.py; ``head``: the
        header-only entries of fetch_cache.py), ``CACHE_BATCH`` UIDs a request;
        a message whose entry lacks an item is read whole."""
        missing = False
        content = [(att, self._header_renderer(att)) for att in atts if fetch_data.needs_content(att)]
        for start in range(0, len(uids), CACHE_BATCH):
            batch = uids[start:start + CACHE_BATCH]
            entries = yield from self._derived(batch, not head)
            for uid in batch:
                entry = entries.get(uid)
                if entry is None:
                    missing = True
                    continue
                rendered = {id(att): (self._cached_item(att, entry) if fast is None
                                      else fast(entry.get("HEADER"))) for att, fast in content}
                if None in rendered.values():
                    gone = yield from self._fetch_read([uid], atts, flagged, True)
                    missing = missing or gone
                    continue
                self._emit(self._fetch_response(uid, atts, lambda att: rendered[id(att)], uid in flagged))
                self.counts["fetched"] += 1
                self._work_step()
                if self._out_size >= OUTPUT_HIGH_WATER:   # what _wait_drain looks at: yield only then
                    yield self._wait_drain
        return missing

    def _derived(self, uids: Sequence[int], full: bool = False):
        """``{uid: entry}`` from ``OpenFolder.derived``; gone UIDs missing (RFC 2180 §4.1).
        The header-only entries (fetch_cache.py: ENVELOPE, HEADER, the SEARCH
        values), unless ``full``: derived.compute's, BODYSTRUCTURE and BODY too."""
        kind, compute = ((derived.KIND, derived.compute) if full
                         else (fetch_cache.HEAD_KIND, fetch_cache.compute_head))
        result = yield lambda done: self._folder.derived(uids, kind, compute, done)
        if isinstance(result, BaseException):
            log.error("imap cache read failed user=%s: %r", self._user, result)
            raise Refusal(NO, "Cannot read messages, try again", "UNAVAILABLE")
        return result

    @staticmethod
    def _header_renderer(att: FetchAtt) -> Optional[Callable[[Optional[bytes]], Optional[bytes]]]:
        """For a header section: derived.render's answer from the entry's header
        block, made with no MIME Part (fetch_data.header_renderer); None (the
        entry lacks the block) when the message must be read."""
        if not derived.needs_header(att):
            return None
        render = fetch_data.header_renderer(att)
        return lambda header: None if header is None else render(header)

    @staticmethod
    def _cached_item(att: FetchAtt, entry) -> Optional[bytes]:
        try:
            return derived.render(att, entry)
        except fetch_data.FetchError as exc:
            raise Refusal(NO, exc.text, exc.code)

    def _set_seen(self, uids: Sequence[int], atts: List[FetchAtt]):
        """RFC 9051 §6.4.5: BODY[...] (not PEEK), RFC822, RFC822.TEXT set \\Seen."""
        view = self._view
        if self._folder.readonly or not any(fetch_data.sets_seen(a) for a in atts):
            return set()
        if not getattr(self._folder, "allows", lambda right: True)("s"):
            return set()        # RFC 4314 §4: FETCH must not set \Seen without "s" (and not fail)
        unseen = [u for u in uids if "\\Seen" not in view.meta(u).flags]
        if not unseen:
            return set()
        outcome = yield from self._ask(self._folder.store, unseen, ["\\Seen"], "add", None)
        for meta in outcome.changed:
            view.update(meta)
        return set(m.uid for m in outcome.changed)

    def _read(self, uid: int):
        """The message's octets, or None when it is gone (RFC 2180 §4.1)."""
        data = yield lambda done: self._folder.read(uid, done)
        if isinstance(data, BaseException):
            log.error("imap read failed user=%s uid=%d: %r", self._user, uid, data)
            raise Refusal(NO, "Cannot read message UID %d, try again" % uid, "UNAVAILABLE")
        return data

    def _fetch_response(self, uid: int, atts: Sequence[FetchAtt],
                        render: Callable[[FetchAtt], bytes], add_flags: bool) -> bytes:
        """``* n FETCH (...)``: items in the order asked (RFC 9051 §7.5.2)."""
        view = self._view
        at = view.position(uid)
        meta = view.metas[at]
        items: List[bytes] = []
        for att in atts:
            name = att.name
            if name == "FLAGS":
                items.append(b"FLAGS " + view.flags_of(uid))
                view.mark_shown(uid)
                add_flags = False
            elif name == "UID":
                items.append(b"UID %d" % uid)
            elif name == "INTERNALDATE":
                items.append(b"INTERNALDATE " + _date(meta.internal_date))
            elif name == "RFC822.SIZE":
                items.append(b"RFC822.SIZE %d" % meta.size)
            elif name == "MODSEQ":
                items.append(b"MODSEQ (%d)" % meta.modseq)
            elif name == "SAVEDATE":
                items.append(b"SAVEDATE " + _date(meta.save_date))
            elif name in self._fetch_extra:     # OBJECTID, PREVIEW: _extra_items
                item = self._fetch_extra[name](uid)
                if item is not None:
                    items.append(item)
            else:
                items.append(render(att))
        if add_flags:   # \\Seen was just set: the client hears it here
            items.append(b"FLAGS " + view.flags_of(uid))
            view.mark_shown(uid)
            if view.condstore:      # RFC 7162 §3.2.4: with UID and MODSEQ then
                items += [b"UID %d" % uid] * (not view.uidonly and not any(a.name == "UID" for a in atts)) + \
                    [b"MODSEQ (%d)" % meta.modseq] * (not any(a.name == "MODSEQ" for a in atts))
        if view.uidonly:            # RFC 9586 §3.3: UIDFETCH, by UID
            return b"* %d UIDFETCH (" % uid + b" ".join(items) + b")\r\n"
        return b"* %d FETCH (" % (at + 1) + b" ".join(items) + b")\r\n"

    @staticmethod
    def _render(att: FetchAtt, data: bytes, root: mime.Part) -> bytes:
        try:
            return fetch_data.render(att, data, root)
        except fetch_data.FetchError as exc:
            raise Refusal(NO, exc.text, exc.code)
