"""SMTP TLS Reporting (RFC 8460): the ``_smtp._tls`` record, the daily counts, the report.

* :func:`parse_record`: the ``rua`` URIs of the one ``v=TLSRPTv1`` record (§3).
* :class:`TlsRptCounter` (loop thread): the relay's outbound TLS sessions per
  recipient domain and UTC day, successes and failures by result type
  (§4.3), kept in memory and written to DATA/tls-rpt/ (store/stscache.py) on a
  worker every ``FLUSH_INTERVAL`` seconds and at close; small: one entry per
  domain and (result type, MX host) pair.
* :func:`build_report` / :func:`report_file_name` / :func:`report_message`:
  the JSON report of §4.4 for one domain and one full UTC day (§4.4
  "00:00-24:00"), gzip-compressed (§5.2), and the mail that carries it
  (§5.3: multipart/report; report-type="tlsrpt", TLS-Report-Domain and
  TLS-Report-Submitter, the Subject of §5.3's ABNF).

Sending (once per day per domain, mailto: through our queue, https: POST) is
protocols/outbound/tlsrpt_send.py.  Transient failures (connection refused,
timeouts) are not counted (§4.3.4).
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import logging
import re
from typing import Dict, List, Optional

from protocols.outbound import mtasts
from store.stscache import KEEP_DAYS

log = logging.getLogger("mailsrv.tlsrpt")

FLUSH_INTERVAL = 60.0       # not an RFC number: at most a minute of counts lost in a crash
# Failure detail rows per domain and day: a bound on the file, not an RFC number.
MAX_DETAILS = 100
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")      # RFC 8460 §3 tlsrpt-ext-name
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")            # RFC 8460 §3 tlsrpt-ext-value


class RecordError(ValueError):
    pass


def parse_record(texts: List[str]) -> List[str]:
    """The ``rua`` URIs of the ``_smtp._tls`` record (RFC 8460 §3); RecordError
    when there is not exactly one ``v=TLSRPTv1`` record or it is invalid."""
    recs = [t for t in texts if t.startswith("v=TLSRPTv1;") or t == "v=TLSRPTv1"]
    if len(recs) != 1:
        raise RecordError("%d v=TLSRPTv1 records (RFC 8460 §3: exactly one)" % len(recs))
    body = re.sub(r"[ \t]*;[ \t]*\Z", "", recs[0])
    rua: Optional[List[str]] = None
    for part in re.split(r"[ \t]*;[ \t]*", body)[1:]:
        name, eq, value = part.partition("=")
        if name == "rua" and eq and rua is None:
            rua = [u for u in re.split(r"[ \t]*,[ \t]*", value) if u]
            if not rua or not all(u.startswith(("mailto:", "https:")) for u in rua):
                raise RecordError("rua=%s: mailto: or https: URIs only (RFC 8460 §3)" % value)
        elif not eq or not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise RecordError("bad field %r (RFC 8460 §3)" % part)
    if rua is None:
        raise RecordError("no rua= (RFC 8460 §3: required)")
    return rua


def utc_day(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d")


def day_range(day: str):
    """(start, end) seconds since the epoch of a full UTC day (RFC 8460 §4.4)."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    return int(start.timestamp()), int(start.timestamp()) + 86400


def _policy_json(domain: str, outcome) -> dict:
    """RFC 8460 §4.4 "policy": sts with the policy lines (§4.5), or no-policy-found."""
    policy = getattr(outcome, "policy", None)
    if policy is None:
        return {"policy-type": "no-policy-found", "policy-domain": domain}
    lines = mtasts.policy_text(policy.mode, policy.mx, policy.max_age).decode("ascii").split("\r\n")[:-1]
    return {"policy-type": "sts", "policy-string": lines, "policy-domain": domain, "mx-host": list(policy.mx)}


class TlsRptCounter:
    """Per (UTC day, domain) counts of the relay's TLS sessions (module docstring)."""

    def __init__(self, loop, store):
        self.loop, self.store = loop, store
        self._counts: Dict[str, Dict[str, dict]] = {}
        self._timer = None

    def start(self) -> None:
        self._timer = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def _entry(self, domain: str, outcome) -> dict:
        day = self._counts.setdefault(utc_day(self.loop.time()), {})
        entry = day.setdefault(domain, {"policy": {}, "success": 0, "failure": {}, "details": {}})
        entry["policy"] = _policy_json(domain, outcome)
        return entry

    def success(self, domain: str, outcome) -> None:
        self._entry(domain, outcome)["success"] += 1

    def record(self, domain: str, outcome, host: str, kind: str, reason: str) -> None:
        entry = self._entry(domain, outcome)
        entry["failure"][kind] = entry["failure"].get(kind, 0) + 1
        key = "%s|%s" % (kind, host)
        detail = entry["details"].get(key)
        if detail is None and len(entry["details"]) < MAX_DETAILS:
            detail = entry["details"][key] = {"result-type": kind, "receiving-mx-hostname": host,
                                              "failure-reason-code": reason[:200], "count": 0}
        if detail is not None:
            detail["count"] += 1

    def flush(self, done=None) -> None:
        """Write the counts so far (worker thread); ``done()`` after (loop thread)."""
        counts, self._counts = self._counts, {}
        now = self.loop.time()

        def work():
            for day, per_domain in counts.items():
                self.store.add(day, per_domain)
            self.store.prune(utc_day(now - KEEP_DAYS * 86400))

        def written(result):
            if isinstance(result, BaseException):
                log.error("tls-rpt counts not written: %s", result)
            if done is not None:
                done()
        self.loop.run_in_thread(work, written)

    def _tick(self) -> None:
        self.flush()
        self._timer = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def close(self) -> None:
        """Stop the timer and write what is left, now (this thread: the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        for day, per_domain in counts.items():
            try:
                self.store.add(day, per_domain)
            except (OSError, ValueError) as e:
                log.error("tls-rpt counts not written: %s", e)


def build_report(day: str, domain: str, counts: dict, organization: str, contact: str,
                 report_id: str) -> dict:
    """The RFC 8460 §4.4 JSON report of one domain for one UTC day."""
    start, end = day_range(day)
    iso = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    failures = [{"result-type": d["result-type"], "receiving-mx-hostname": d.get("receiving-mx-hostname", ""),
                 "failed-session-count": int(d.get("count", 0)),
                 "failure-reason-code": d.get("failure-reason-code", "")}
                for _k, d in sorted(counts.get("details", {}).items())]
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": iso(start), "end-datetime": iso(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [{
            "policy": counts.get("policy") or {"policy-type": "no-policy-found", "policy-domain": domain},
            "summary": {"total-successful-session-count": int(counts.get("success", 0)),
                        "total-failure-session-count": sum(int(n) for n in counts.get("failure", {}).values())},
            "failure-details": failures,
        }],
    }


def report_file_name(submitter: str, domain: str, day: str, unique: str) -> str:
    """RFC 8460 §5.1: sender!policy-domain!begin!end!unique-id.json.gz"""
    start, end = day_range(day)
    return "%s!%s!%d!%d!%s.json.gz" % (submitter, domain, start, end, unique)


def compress(report: dict) -> bytes:
    """RFC 8460 §5.2: gzip; mtime 0 so the same report gives the same octets."""
    return gzip.compress(json.dumps(report, indent=1).encode("utf-8"), mtime=0)


def report_message(report: dict, gz: bytes, domain: str, submitter: str, sender: str, to: str,
                   date: str, message_id: str, boundary: str, file_name: str) -> bytes:
    """The mail of RFC 8460 §5.3 (its example's shape), CRLF line ends."""
    b64 = base64.encodebytes(gz).decode("ascii").replace("\n", "\r\n")
    rid = report["report-id"]
    head = [
        "From: %s" % sender, "Date: %s" % date, "To: %s" % to,
        # RFC 8460 §5.3 tlsrpt-subject, folded (RFC 5322 §2.2.3)
        "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>" % (domain, submitter, rid),
        "Message-ID: <%s>" % message_id,
        "TLS-Report-Domain: %s" % domain, "TLS-Report-Submitter: %s" % submitter,
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type="tlsrpt";\r\n boundary="%s"' % boundary,
        "", "This is a multipart message in MIME format.", "",
        "--" + boundary, 'Content-Type: text/plain; charset="us-ascii"', "Content-Transfer-Encoding: 7bit", "",
        "This is an aggregate TLS report from %s for %s, %s." % (submitter, domain, report["date-range"]["start-datetime"][:10]),
        "",
        "--" + boundary, "Content-Type: application/tlsrpt+gzip", "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment;\r\n filename="%s"' % file_name, "",
    ]
    return ("\r\n".join(head) + "\r\n" + b64 + "--%s--\r\n" % boundary).encode("ascii")
