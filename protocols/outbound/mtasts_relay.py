"""MTA-STS applied by the relay (RFC 8461 §4, §5): a mixin of protocols/outbound/relay.py's Relay.

Hooks, each called by the relay at one place:
  * ``_sts_route(d)`` after the MX lookup (RFC 8461 §5.1 step 1): asks
    ``self.sts`` (protocols/outbound/mtasts_fetch.py) for the domain's policy,
    then, in ``enforce`` mode, drops every MX host no ``mx:`` pattern matches
    (§4.1; logged with the domain), and tries the rest;
  * ``_sts_tls(d)``: the STARTTLS requirement and TLS context of an attempt:
    with a policy in ``enforce`` or ``testing`` mode, STARTTLS is required and
    the certificate verified for the MX host name (SNI and the DNS-ID check
    of §4.2, ``self.sts_context``: check_hostname on);
  * ``_sts_result(d, host, ip, res)``: after an attempt: counts it for TLS-RPT
    (``self.tls_report``, RFC 8460 §4.3 result types) and, in ``testing``
    mode, when the verified TLS failed, tries the same host again the way it
    would without a policy (§5 item 2: "messages may be delivered as though
    there were no MTA-STS validation failure").

An ``enforce`` failure is temporary (§5: "MTAs SHOULD treat such failures as
transient errors"): the recipients stay queued, and the next round looks the
record up again (§5.1 step 3) before any bounce, which comes only from the
queue's maximum age.

DEVIATION(RFC 8461 §3.4): a smarthost (``relayhost``) is not treated as a
Policy Domain; ``relay_tls`` and ``tls_verify`` say how to reach it.
"""

from __future__ import annotations

import logging

from protocols.outbound import mtasts

log = logging.getLogger("mailsrv.mtasts")

# RFC 3463 §3.8: X.7.10 "Encryption Needed"? No: RFC 5248 registers 4.7.5
# "Cryptographic failure" (used by Postfix for an unverified TLS peer); 4.x: retried.
STS_STATUS = "4.7.5"


def _failure_type(error: str) -> str:
    """RFC 8460 §4.3.1 result type of a failed verified handshake, from OpenSSL's words."""
    text = error.lower()
    if "hostname mismatch" in text or "ip address mismatch" in text:
        return "certificate-host-mismatch"
    if "expired" in text:
        return "certificate-expired"
    if "certificate" in text or "self-signed" in text or "self signed" in text or "issuer" in text:
        return "certificate-not-trusted"
    return "validation-failure"


class StsRelayMixin:
    sts = None              # StsPolicies, set by the wiring (None: MTA-STS off)
    sts_context = None      # a verifying client TLS context (protocols/loop_https.client_context)
    tls_report = None       # TlsRptCounter (protocols/outbound/tlsrpt.py) or None

    def _sts_route(self, d) -> None:
        if self.sts is None or d.domain.startswith("["):
            return self._try_next(d)
        try:        # RFC 8461 §3.2: A-labels (the relay checked the name for its MX lookup)
            name = d.domain.encode("idna").decode("ascii")
        except UnicodeError:
            return self._try_next(d)
        self.sts.policy_for(name, lambda out: self._sts_known(d, out))

    def _sts_known(self, d, out) -> None:
        d.sts = out
        if out.failure and self.tls_report is not None:
            self.tls_report.record(d.domain, out, "", out.failure, out.reason)
        policy = out.policy
        if policy is None:
            return self._try_next(d)
        skipped = sorted({host for host, _ip in d.targets if not mtasts.mx_allowed(policy, host)})
        for host in skipped:
            log.warning("mta-sts domain=%s mode=%s mx=%s not in the policy (mx: %s)%s", d.domain, policy.mode,
                        host, ", ".join(policy.mx), "; skipped" if policy.mode == "enforce" else "")
            if self.tls_report is not None:
                self.tls_report.record(d.domain, out, host, "validation-failure",
                                       "MX %s matches no mx: pattern of the policy" % host)
        if policy.mode == "enforce":
            d.targets = [t for t in d.targets if t[0] not in skipped]
            if not d.targets:
                text = "MTA-STS policy of %s (enforce) allows none of its MX hosts (%s)" % (
                    d.domain, ", ".join(skipped) or "none")
                self._log(d, "-", "-", "451 %s %s" % (STS_STATUS, text))
                return self._settle_all(d, "deferred", (451, STS_STATUS, text), "")
        self._try_next(d)

    def _sts_policy(self, d):
        out = getattr(d, "sts", None)
        return out.policy if out is not None else None

    def _sts_tls(self, d, starttls: str, context):
        """(starttls, ssl context) for an attempt of delivery ``d``."""
        policy = self._sts_policy(d)
        if policy is None or getattr(d, "sts_relaxed", False) or self.sts_context is None:
            return starttls, context
        return "require", self.sts_context

    def _sts_result(self, d, host: str, ip: str, res) -> bool:
        """Count the attempt; True when it is to be tried again on the same host
        (testing mode after a failed verified TLS)."""
        policy = self._sts_policy(d)
        strict = policy is not None and not getattr(d, "sts_relaxed", False)
        kind = ""
        if res.stage == "tls-handshake" and not res.tls_used:
            error = ((getattr(getattr(d, "ctx", None), "tls_info", None) or {}).get("error") or "handshake failed")
            kind = _failure_type(error) if strict else "validation-failure"
            reason = "TLS with %s[%s] failed: %s" % (host, ip, error)
        elif not res.tls_used and "STARTTLS" in (res.remote_reply or ""):
            kind, reason = "starttls-not-supported", "%s[%s]: %s" % (host, ip, res.remote_reply)
        elif not res.tls_used and policy is not None and res.stage not in ("greeting", "ehlo", "connect"):
            kind, reason = "starttls-not-supported", "%s[%s] delivered without TLS" % (host, ip)
        if self.tls_report is not None:
            if res.tls_used:
                self.tls_report.success(d.domain, getattr(d, "sts", None))
            elif kind:
                self.tls_report.record(d.domain, getattr(d, "sts", None), host, kind, reason)
        if kind and policy is not None:
            log.warning("mta-sts domain=%s mode=%s mx=%s %s: %s", d.domain, policy.mode, host, kind, reason)
            if policy.mode == "enforce":       # the queue's last error says why, not "connection closed"
                text = "MTA-STS policy of %s (enforce): %s" % (d.domain, reason)
                for rcpt in res.per_rcpt:
                    if res.per_rcpt[rcpt][0] // 100 != 2:
                        res.per_rcpt[rcpt] = (451, STS_STATUS, text)
                res.remote_reply = text
            if policy.mode == "testing" and strict:
                d.sts_relaxed = True      # RFC 8461 §5 item 2: deliver anyway, as without a policy
                d.index -= 1
                d.sessions = max(0, d.sessions - 1)
                return True
        return False
