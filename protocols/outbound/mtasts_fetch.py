"""MTA-STS policy discovery for the relay (RFC 8461 §3, §5.1): DNS, HTTPS, cache.

``StsPolicies.policy_for(domain, done)`` (loop thread) asks our resolver for
the ``_mta-sts.<domain>`` TXT record (RFC 8461 §3.1), then on a worker lane
of its own (``protocols.loop.Lane``: a slow policy host never holds the
shared workers that write the queue) reads the durable cache
(store/stscache.py) and, when needed, fetches
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with
protocols/loop_https.py: no redirects, 200 only, ``text/plain``, 64 KiB and a
minute at most (RFC 8461 §3.3).  ``done(StsOutcome)`` runs in the loop thread.

The decision (RFC 8461 §3.3, §5.1):
  * a cached policy younger than its ``max_age`` whose id equals the record's
    is used as is; it is fetched again (refreshed) once older than
    ``REFRESH_AFTER`` (§3.3: "a suggested refresh frequency is once per day");
  * a record with a new id (or no cached policy) means a fetch; the new policy
    is cached (keyed by the record's id);
  * a fetch that fails, or no usable record, or a DNS failure: the cached
    policy if it has not expired (§3.3 "MUST apply that cached policy"), else
    none (§3.3 "as though the domain has not implemented MTA-STS");
  * a failed fetch is not tried again for ``FETCH_RETRY_AFTER`` per (domain, id)
    (§3.3: "five minutes or longer per version ID");
  * a policy in mode ``none`` applies nothing (§5 item 3) but stays cached.

Failures are logged on "mailsrv.mtasts" with the domain and the reason
(§3.3: "MTAs SHOULD alert administrators") and returned in the outcome as the
RFC 8460 §4.3 result type (``sts-policy-fetch-error``, ``sts-policy-invalid``,
``sts-webpki-invalid``) for TLS-RPT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from protocols import loop_https
from protocols.dns import codec as dnscodec
from protocols.dns.resolver import Answer, DnsError
from protocols.loop import Lane
from protocols.outbound import mtasts
from protocols.outbound.mtasts import Policy, PolicyError

log = logging.getLogger("mailsrv.mtasts")

REFRESH_AFTER = 86400.0        # RFC 8461 §3.3: refresh cached policies "once per day"
FETCH_RETRY_AFTER = 300.0      # RFC 8461 §3.3: "five minutes or longer per version ID"
FETCH_TIMEOUT = 60.0           # RFC 8461 §3.3: "A suggested timeout is one minute"
# Not RFC numbers: two fetches at once (a policy host is one HTTPS request),
# a few hundred domains waiting for one, one job per domain at a time.
FETCH_THREADS = 2
FETCH_WAITING = 512


@dataclass
class StsOutcome:
    policy: Optional[Policy] = None     # None: deliver as without MTA-STS (mode none counts as None)
    sts_id: str = ""
    source: str = "none"                # "fetched" | "cached" | "none"
    failure: str = ""                   # RFC 8460 §4.3 result type of a discovery failure
    reason: str = ""                    # one line for the log and the report


def _txt_strings(result) -> List[str]:
    """RFC 8461 §3.1: a record's strings concatenated without spaces."""
    if not isinstance(result, Answer):
        return []
    return [b"".join(rec).decode("ascii", "replace") for rec in result.records]


class StsPolicies:
    """See the module docstring.  ``fetch(url)`` may be injected (tests); by default
    protocols/loop_https.py with ``cafile`` and ``connect_to``."""

    def __init__(self, loop, resolver, cache, cafile: Optional[str] = None,
                 connect_to: Optional[Tuple[str, int]] = None,
                 fetch: Optional[Callable[[str], object]] = None):
        self.loop, self.resolver, self.cache = loop, resolver, cache
        self.cafile, self.connect_to = cafile or None, connect_to
        self.fetch = fetch or self._https_get
        self._lane = Lane(loop, "mta-sts", FETCH_THREADS, FETCH_WAITING, 1)
        self._waiters: Dict[str, List[Callable[[StsOutcome], None]]] = {}
        self._failed: Dict[Tuple[str, str], float] = {}      # (domain, id) -> when a fetch failed

    def close(self) -> None:
        self._lane.close()

    def policy_for(self, domain: str, done: Callable[[StsOutcome], None]) -> None:
        """The policy to apply to ``domain`` (loop thread); one lookup per domain at a time."""
        domain = domain.lower().rstrip(".")
        waiting = self._waiters.get(domain)
        if waiting is not None:
            waiting.append(done)
            return
        self._waiters[domain] = [done]
        self.resolver.resolve("_mta-sts." + domain, dnscodec.TYPE_TXT,
                              lambda result: self._on_txt(domain, result))

    def _on_txt(self, domain: str, result) -> None:
        now = self.loop.time()
        sts_id, why = "", ""
        if isinstance(result, DnsError):
            why = "DNS: %s" % (result.message or result.kind) if result.kind == "temporary" else ""
        else:
            try:
                sts_id = mtasts.parse_record(_txt_strings(result))
            except PolicyError as e:
                why = str(e) if any(t.startswith("v=STSv1") for t in _txt_strings(result)) else ""
        failed_at = self._failed.get((domain, sts_id))
        may_fetch = bool(sts_id) and (failed_at is None or now - failed_at >= FETCH_RETRY_AFTER)
        job = lambda: self._decide(domain, sts_id, why, may_fetch, now)
        if not self._lane.submit(domain, job, lambda out: self._decided(domain, sts_id, out)):
            self._decided(domain, sts_id, StsOutcome(reason="policy lookups busy"))

    def _decided(self, domain: str, sts_id: str, out) -> None:
        if isinstance(out, BaseException):
            log.error("mta-sts domain=%s lookup failed: %s", domain, out)
            out = StsOutcome(reason=str(out))
        if out.failure in ("sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"):
            self._failed[(domain, sts_id)] = self.loop.time()       # a fetch failed just now
        elif out.source == "fetched":
            self._failed.pop((domain, sts_id), None)
        for done in self._waiters.pop(domain, []):
            done(out)

    # -- on the lane's worker ------------------------------------------------
    def _decide(self, domain: str, sts_id: str, why: str, may_fetch: bool, now: float) -> StsOutcome:
        cached = self._cached(domain, now)
        if cached is not None and cached[0] == sts_id and now - cached[2] < REFRESH_AFTER:
            return self._apply(StsOutcome(cached[1], sts_id, "cached"))
        failure, reason = "", why
        if sts_id and may_fetch:
            try:
                policy, text = self._fetch_policy(domain)
            except _FetchFailed as e:
                failure, reason = e.kind, str(e)
            else:
                try:
                    self.cache.put(domain, sts_id, now, text)
                except (OSError, ValueError) as e:
                    log.error("mta-sts domain=%s cannot cache the policy: %s", domain, e)
                log.info("mta-sts domain=%s policy id=%s fetched: mode=%s max_age=%d mx=%s",
                         domain, sts_id, policy.mode, policy.max_age, ",".join(policy.mx) or "-")
                return self._apply(StsOutcome(policy, sts_id, "fetched"))
        elif sts_id:        # already reported when it failed; not a new failure
            reason = "policy id=%s: its fetch failed less than %d s ago" % (sts_id, FETCH_RETRY_AFTER)
        if reason:
            log.warning("mta-sts domain=%s %s%s", domain, reason,
                        "; using the cached policy" if cached is not None else "")
        if cached is not None:
            return self._apply(StsOutcome(cached[1], cached[0], "cached", failure, reason))
        return StsOutcome(None, sts_id, "none", failure, reason)

    @staticmethod
    def _apply(out: StsOutcome) -> StsOutcome:
        """RFC 8461 §5 item 3: mode none is as no policy."""
        if out.policy is not None and out.policy.mode == "none":
            out.policy = None
        return out

    def _cached(self, domain: str, now: float) -> Optional[Tuple[str, Policy, float]]:
        """(id, policy, fetched) of an unexpired cached policy (RFC 8461 §3.2 max_age)."""
        try:
            entry = self.cache.get(domain)
        except (OSError, ValueError):
            entry = None
        if entry is None:
            return None
        try:
            policy = mtasts.parse_policy(str(entry["policy"]).encode("utf-8"))
            fetched = float(entry["fetched"])
        except (PolicyError, TypeError, ValueError):
            log.warning("mta-sts domain=%s cached policy unreadable; ignored", domain)
            return None
        if now - fetched >= policy.max_age:
            return None
        return str(entry["id"]), policy, fetched

    def _fetch_policy(self, domain: str) -> Tuple[Policy, str]:
        url = mtasts.policy_url(domain)
        try:
            reply = self.fetch(url)
        except loop_https.HttpsError as e:
            kind = "sts-webpki-invalid" if "certificate" in str(e) else "sts-policy-fetch-error"
            raise _FetchFailed(kind, str(e)) from None
        if reply.status != 200:     # RFC 8461 §3.3: only 200; redirects are not followed
            raise _FetchFailed("sts-policy-fetch-error", "%s: HTTP status %d" % (url, reply.status))
        if not mtasts.media_type_ok(reply.headers.get("content-type")):
            raise _FetchFailed("sts-policy-invalid", "%s: media type %r is not text/plain (RFC 8461 §3.2)"
                               % (url, reply.headers.get("content-type", "")))
        try:
            policy = mtasts.parse_policy(reply.body)
        except PolicyError as e:
            raise _FetchFailed("sts-policy-invalid", "%s: %s" % (url, e)) from None
        return policy, reply.body.decode("utf-8")

    def _https_get(self, url: str):
        return loop_https.request(url, cafile=self.cafile, timeout=FETCH_TIMEOUT,
                                  max_body=mtasts.MAX_POLICY_BYTES, connect_to=self.connect_to,
                                  headers={"Cache-Control": "no-cache"})


class _FetchFailed(Exception):
    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind
