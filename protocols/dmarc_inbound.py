"""Authentication of mail received from other servers: SPF, DKIM and DMARC
results in one Authentication-Results field (RFC 8601), and what DMARC's
policy asks of a failing message.

``InboundChecks.run(data, done)`` is used by the message sink
(protocols/backend/sink.py) once the whole message is in hand:

1. the SPF result of MAIL FROM (RFC 7208 §2.4): the session's, found at DATA
   when ``spf_check = header``, else computed now when DMARC needs it;
2. every DKIM signature verified (protocols/dkim.py; the arithmetic on a
   worker through ``runner``) when ``dkim_verify = header`` or DMARC needs it;
3. DMARC (protocols/dmarc.py) when ``dmarc_check`` is not off;
4. ``done(data, action)``: ``data`` with our one Authentication-Results
   field on top, after removing every such field that claims our host name
   (RFC 8601 §5: a forgery, or a stale one), and ``action``: "" (deliver),
   "junk" (into the recipients' Junk folder) or "reject" (550 5.7.1).

DNS goes through the injected resolver; nothing here blocks.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence

from protocols import dkim_canon as canon
from protocols import dmarc

log = logging.getLogger("mailsrv.dmarc")

FIELD = b"authentication-results"
REJECT_REPLY = (550, "5.7.1", "Rejected by the DMARC policy of %s")     # RFC 7489 §6.7, RFC 3463 X.7.1


def clauses(spf, dkim_results: Optional[Sequence[object]], result: Optional[dmarc.DmarcResult],
            spf_helo=None) -> List[str]:
    """The resinfo clauses in order spf (MAIL FROM, then HELO: RFC 7208 §2.3),
    dkim..., dmarc (RFC 8601 §2.2)."""
    from protocols.spf_header import authres_clause
    out = [authres_clause(s) for s in (spf, spf_helo) if s is not None]
    if dkim_results is not None:
        out += [r.ar_text() for r in dkim_results] or ["dkim=none"]
    if result is not None:
        out.append(result.ar_text())
    return out or ["none"]                  # RFC 8601 §2.2: no-result


def authentication_results(host: str, parts: Sequence[str]) -> bytes:
    """One ``Authentication-Results: <host>; clause; clause`` field, one
    clause a line (folded, RFC 5322 §2.2.3), with its CRLF."""
    return ("Authentication-Results: %s;\r\n\t" % host + ";\r\n\t".join(parts) + "\r\n").encode("ascii", "replace")


def claims_host(raw: bytes, host: str) -> bool:
    """The field's authserv-id (RFC 8601 §2.2, before the first ";") is ``host``."""
    value = raw.partition(b":")[2].decode("latin-1")
    return value.replace("\r\n", "").strip().split(";")[0].strip().lower() == host.lower()


def replace_results(data: bytes, host: str, field: bytes) -> bytes:
    """``data`` with ``field`` on top, every Authentication-Results claiming
    ``host`` removed first (RFC 8601 §5)."""
    fields, body = canon.split_message(data)
    kept = [raw for name, raw in fields if name != FIELD or not claims_host(raw, host)]
    if len(kept) == len(fields):
        return field + canon.to_crlf(data)      # nothing removed: the message as it came
    return field + b"".join(kept) + b"\r\n" + body


def action_for(result: dmarc.DmarcResult, mode: str, reject_action: str) -> str:
    """What ``dmarc_check = enforce`` does with a message (RFC 7489 §6.7:
    the receiver's choice): a failing one whose disposition is reject gets
    ``dmarc_reject_action`` (reject, junk or mark), quarantine gets Junk
    unless the action is mark; everything else is delivered as usual."""
    if mode != "enforce" or result.result != "fail" or reject_action == "mark":
        return ""
    if result.disposition == "reject":
        return reject_action
    return "junk" if result.disposition == "quarantine" else ""


class InboundChecks:
    """The checks one message gets (see the module docstring)."""

    def __init__(self, host: str, envelope, resolver, runner, now: int, spf_wanted: bool,
                 dkim_wanted: bool, dmarc_mode: str = "off", reject_action: str = "reject",
                 draw: Optional[Callable[[], int]] = None):
        self.host, self.envelope = host, envelope
        self.resolver, self.runner, self.now = resolver, runner, now
        self.spf = getattr(envelope, "spf", None)
        self.spf_wanted = spf_wanted or self.spf is not None
        self.dkim_wanted = dkim_wanted
        self.dmarc_mode, self.reject_action, self.draw = dmarc_mode, reject_action, draw
        if dmarc_mode != "off":
            self.spf_wanted = self.dkim_wanted = True       # DMARC needs both (RFC 7489 §4.2)
        self.dkim_results: Optional[list] = None
        self.result: Optional[dmarc.DmarcResult] = None

    def run(self, data: bytes, done: Callable[[bytes, str], None]) -> None:
        self._spf(lambda: self._dkim(data, lambda: self._dmarc(data, lambda: self._done(data, done))))

    def _spf(self, then: Callable[[], None]) -> None:
        if not self.spf_wanted or self.spf is not None:
            then()
            return
        from protocols.spf import check_mail_from
        env = self.envelope

        def found(result) -> None:
            self.spf = result
            then()
        check_mail_from(env.peer_ip or "", env.mail_from, env.helo or "", self.resolver, found,
                        receiver=self.host)

    def _dkim(self, data: bytes, then: Callable[[], None]) -> None:
        if not self.dkim_wanted:
            then()
            return
        from protocols import dkim

        def verified(results) -> None:
            self.dkim_results = list(results)
            then()
        dkim.verify(data, self.resolver, verified, self.now, runner=self.runner)

    def _dmarc(self, data: bytes, then: Callable[[], None]) -> None:
        if self.dmarc_mode == "off":
            then()
            return
        end = data.find(b"\r\n\r\n")          # only the header block is read (RFC 7489 §6.6.1)
        fields, _body = canon.split_message(data if end < 0 else data[:end + 4])

        def evaluated(result) -> None:
            self.result = result
            then()
        dmarc.check(fields, self.spf, self.dkim_results, self.resolver, evaluated, self.draw)

    def _done(self, data: bytes, done: Callable[[bytes, str], None]) -> None:
        action = action_for(self.result, self.dmarc_mode, self.reject_action) if self.result else ""
        try:
            helo = getattr(self.envelope, "spf_helo", None)
            field = authentication_results(self.host, clauses(self.spf, self.dkim_results, self.result, helo))
            out = replace_results(data, self.host, field)
        except Exception:           # a bug: logged; the message is still delivered as it came
            log.exception("Authentication-Results for %s failed", getattr(self.envelope, "queue_id", "?"))
            out = data
        if self.result is not None:
            log.info("message %s: dmarc=%s from %s%s", getattr(self.envelope, "queue_id", "?"),
                     self.result.result, self.result.from_domain or "?",
                     (" -> " + action) if action else "")
        done(out, action)
