"""MULTISEARCH (RFC 7377): the ESEARCH command, a mixin of
protocols/imap/session.py's ImapSession.

``ESEARCH [IN (filters)] [RETURN (...)] search-program`` searches the
mailboxes the filters name (notify_args.py's filter-mailboxes, with
"subtree-one" and without "selected-delayed", §2.2; no filter: the selected
mailbox) and answers one ``* ESEARCH (TAG "t" MAILBOX m UIDVALIDITY v) UID ...``
per mailbox with at least one match (§2.1), UIDs always.  Each mailbox is
searched with the SEARCH evaluation of selected.py (``_search_columns`` /
``_search_each``, the same search_eval.py and cache) over a read-only open of
that mailbox (EXAMINE's: nothing claimed, nothing changed), one mailbox at a
time; the selected one over this session's own view.

Rules (§2.2): "selected" needs the selected state (else BAD); SAVE only when
the selected mailbox alone is searched (else BAD); a mailbox named twice is
searched once; ``$`` refers to the selected mailbox's saved result and
matches nothing elsewhere.  Scope options (none are defined) are BAD.
Mailboxes that do not exist are skipped (§2.2: no response for them).

Bound (§2.4): at most ``MAX_MAILBOXES`` mailboxes per command, else
``NO [LIMIT]`` before any is searched.

RETURN (UPDATE) is BAD without a selected mailbox (RFC 7377 §2.2), else
answered with the results and ``NO [NOUPDATE]`` (RFC 5267 §4.3.1: refused).
"""

from __future__ import annotations

import datetime
from typing import List, Tuple

from protocols.imap import grammar as g
from protocols.imap import search as S
from protocols.imap import search_columns, search_eval, wire
from protocols.imap.notify_args import MailboxFilter, filter_mailboxes
from protocols.imap.selected import SelectedCommands, _uses_dates
from protocols.imap.session_base import BAD, NO, SessionCore
from protocols.imap.view import FolderView

# RFC 7377 §2.4 lets the server limit the mailboxes of one ESEARCH.  Ours:
# 1,000, above any real personal hierarchy (Dovecot's users with the most
# folders have hundreds), below what would keep one command busy for minutes.
MAX_MAILBOXES = 1000
# filter-mailboxes of RFC 7377 §4 (selected-delayed is not valid here).
SOURCE_FILTERS = ("SELECTED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "SUBTREE-ONE", "MAILBOXES")


def esearch_args(buf: g.Buf, utf8: bool = False) -> Tuple[Tuple[MailboxFilter, ...], S.SearchArgs]:
    """esearch = "ESEARCH" [SP esearch-source-opts] [SP search-return-opts]
    SP search-program; esearch-source-opts = "IN" SP "(" source-mbox
    [SP "(" scope-options ")"] ")" (RFC 7377 §4)."""
    buf = g._mv(buf)
    if not g.peek(buf, b" IN ("):
        return (MailboxFilter("SELECTED"),), S.search_args(buf)
    buf = buf[5:]
    filters: List[MailboxFilter] = []
    while True:
        flt, buf = filter_mailboxes(buf, utf8, SOURCE_FILTERS)
        filters.append(flt)
        if g.peek(buf, b" ("):
            raise g.ImapParseError("unknown scope option (RFC 7377 §4 defines none)")
        if bytes(buf[:1]) == b")":
            break
        buf = g.sp(buf)
    return tuple(filters), S.search_args(buf[1:])


class _Searcher(SelectedCommands):
    """selected.py's search steps over one folder and view that are not the
    session's selected ones: the generators yield backend calls for the
    session's driver, as the session's own would."""

    _ask = SessionCore._ask

    def _work_goal(self, total: int) -> None:
        """Progress is counted per mailbox by the command (RFC 9585, inprogress.py)."""

    def _work_step(self, n: int = 1) -> None:
        pass

    def __init__(self, session, folder, view):
        self._folder, self._view, self._user, self.ctx = folder, view, session._user, session.ctx


class MultiSearchCommands:
    """ESEARCH (see the module docstring)."""

    def _cmd_esearch(self, head):
        """RFC 7377 §2."""
        filters, sa = esearch_args(head.rest, self.utf8)
        if self.utf8 and sa.charset is not None:
            return (BAD, "No CHARSET after ENABLE UTF8=ACCEPT", None)   # RFC 6855 §3
        try:
            charset = search_eval.check_charset(sa.charset)
        except search_eval.SearchCharsetError:
            return (NO, "Unsupported charset", wire.response_code("BADCHARSET", [b"US-ASCII", b"UTF-8"]))
        selected = any(f.selected for f in filters)
        others = [f for f in filters if not f.selected]
        if selected and self._folder is None:
            return (BAD, "ESEARCH of the selected mailbox in the AUTHENTICATED state", None)   # RFC 7377 §2.2
        update = bool(sa.returns and "UPDATE" in sa.returns)
        if update and self._folder is None:
            return (BAD, "RETURN (UPDATE) needs a selected mailbox (RFC 7377 §2.2)", None)
        if sa.returns and "SAVE" in sa.returns and others:
            return (BAD, "RETURN (SAVE) only for the selected mailbox alone (RFC 7377 §2.2)", None)
        names = [self._folder.name] if selected else []
        if others:
            entries = yield from self._ask(self._account.list)
            subscribed = set(e.name for e in entries if e.subscribed)
            names += [e.name for e in entries if e.exists and e.name not in names
                      and any(f.matches(e.name, subscribed) for f in others)]
        if len(names) > MAX_MAILBOXES:
            return (NO, "ESEARCH over %d mailboxes; at most %d" % (len(names), MAX_MAILBOXES),
                    wire.response_code("LIMIT"))
        self._work_goal(len(names))         # RFC 9585 progress: mailboxes searched
        for name in names:
            if selected and name == self._folder.name:
                searcher = _Searcher(self, self._folder, self._view)
                hits, uidvalidity = (yield from self._esearch_in(searcher, sa, charset, True)), self._view.uidvalidity
            else:
                hits, uidvalidity = yield from self._esearch_other(name, sa, charset)
            self._work_step()
            if hits:
                self._emit(_correlated(head.tag, name, uidvalidity, hits, sa.returns, self.utf8))
        if update:      # RFC 5267 §4.3.1: refused here; SEARCH RETURN (UPDATE) keeps one (sort_context.py)
            self._emit(wire.status_line(None, b"NO", "No updates for ESEARCH, use SEARCH RETURN (UPDATE)",
                                        wire.response_code("NOUPDATE", wire.quoted(head.tag))))
        return None

    def _esearch_other(self, name: str, sa, charset: str):
        """One mailbox opened read-only (EXAMINE's open), searched, closed."""
        folder = yield lambda done: self._account.open(name, True, done)
        if isinstance(folder, BaseException):
            return [], 0                      # gone meanwhile: skipped as RFC 7377 §2.2 skips the unknown
        try:
            view = FolderView(folder.state(), self.rev2, True)
            hits = yield from self._esearch_in(_Searcher(self, folder, view), sa, charset, False)
        finally:
            folder.close()
        return hits, view.uidvalidity

    def _esearch_in(self, searcher, sa, charset: str, selected: bool):
        """selected.py's SEARCH evaluation (``_cmd_search``'s steps) over ``searcher``'s view."""
        view = searcher._view
        now = self.ctx.clock()
        local = datetime.datetime.fromtimestamp(now).astimezone().tzinfo
        ctx = search_eval.SearchContext(
            largest_seq=len(view), largest_uid=view.uids[-1] if view.uids else 0,
            saved=tuple(self._saved) if selected else (), now=now, charset=charset, tz=local)
        if _uses_dates(sa.key):
            yield from searcher._load_dates([u for u in view.uids if u not in view.gone])
        if search_columns.usable(sa.key):
            hits = yield from searcher._search_columns(sa.key, ctx)
        else:
            rows = [(i + 1, uid, meta, uid in view.recent) for i, (uid, meta) in enumerate(zip(view.uids, view.metas))
                    if uid not in view.gone]
            hits = yield from searcher._search_each(sa.key, rows, ctx)
        if selected and sa.returns and "SAVE" in sa.returns:
            self._saved = tuple(_saved_part(hits, sa.returns))    # RFC 5182 §2.1, as selected.py
        return hits


def _saved_part(hits, returns) -> List[int]:
    """RFC 5182 §2.4: with MIN / MAX and neither ALL nor COUNT, only those are saved."""
    if hits and ("MIN" in returns or "MAX" in returns) and not ("ALL" in returns or "COUNT" in returns):
        return sorted(set(([hits[0]] if "MIN" in returns else []) + ([hits[-1]] if "MAX" in returns else [])))
    return list(hits)


def _correlated(tag: bytes, name: str, uidvalidity: int, hits, returns, utf8: bool) -> bytes:
    """``* ESEARCH (TAG "t" MAILBOX m UIDVALIDITY v) UID ...`` (RFC 7377 §2.1, §4)."""
    opts = tuple(r for r in (returns or ()) if r != "SAVE") or ("ALL",)
    line = search_eval.esearch(tag, True, hits, opts)
    head = b"ESEARCH (TAG " + wire.quoted(tag) + b")"
    corr = b"ESEARCH (TAG %s MAILBOX %s UIDVALIDITY %d)" % (wire.quoted(tag), wire.mailbox(name, utf8), uidvalidity)
    return line.replace(head, corr, 1)
