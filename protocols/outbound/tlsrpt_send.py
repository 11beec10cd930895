"""Sending the daily TLS-RPT reports (RFC 8460 §5), when ``tls_rpt = yes``.

Every ``CHECK_INTERVAL`` (and soon after start) the reporter looks at the
finished UTC days in DATA/tls-rpt/ (store/stscache.py), and for each domain
of a day not yet reported: asks DNS for ``_smtp._tls.<domain>`` (RFC 8460 §3),
builds the report (protocols/outbound/tlsrpt.py) and sends it to each ``rua``
URI: ``mailto:`` as a DKIM-signed mail (§3: "MUST contain a valid DKIM
signature", when we hold a key for the sender's domain) put in our own queue,
whose retries carry it (§5.5); ``https:`` as a POST of
``application/tlsrpt+gzip`` (§5.4) with protocols/loop_https.py on a worker
lane; a failed POST is tried again at the next check, for a day (§5.5: "for up
to 24 hours").  A domain is then marked sent for that day: one report per day
per domain.  A domain without a usable record gets none, and is marked too.

Our own reports are delivered like any mail; a domain's failures while its
report travels are counted in the next day's (DEVIATION(RFC 8460 §3): "SHOULD
NOT include this SMTP session in the next report"; kept simple).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import urllib.parse
from typing import Callable, List, Optional

from protocols import loop_https
from protocols.base import new_id
from protocols.dns import codec as dnscodec
from protocols.dns.resolver import Answer
from protocols.loop import Lane
from protocols.outbound import tlsrpt
from store.stscache import KEEP_DAYS

log = logging.getLogger("mailsrv.tlsrpt")

CHECK_INTERVAL = 3600.0     # not an RFC number: an hour after midnight UTC at the latest
FIRST_CHECK = 30.0          # after start, once the relay is running
POST_TIMEOUT = 60.0         # as RFC 8461 §3.3's policy fetch; RFC 8460 names none
POST_GIVE_UP = 2            # days: §5.5 retries "for up to 24 hours" after the day's end


def _public(uri: str) -> bool:
    """An https: rua names a host by name or a global address: a domain's DNS must not
    make us POST to our loopback or private network (not an RFC rule; our own care)."""
    host = urllib.parse.urlsplit(uri).hostname or ""
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return bool(host) and host != "localhost" and not host.endswith(".localhost")


class TlsReporter:
    def __init__(self, loop, resolver, store, queue, submitter: str, contact: str,
                 sign: Optional[Callable[[bytes], bytes]] = None, kick: Optional[Callable[[], None]] = None,
                 cafile: Optional[str] = None, post=None):
        self.loop, self.resolver, self.store, self.queue = loop, resolver, store, queue
        self.submitter, self.contact = submitter.lower(), contact
        self.sign = sign or (lambda data: data)
        self.kick = kick or (lambda: None)
        self.cafile = cafile
        self.post = post or self._https_post
        self._lane = Lane(loop, "tls-rpt", 1, 256, 1)
        self._timer = None
        self._busy = False

    def start(self) -> None:
        self._timer = self.loop.call_later(FIRST_CHECK, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lane.close()

    def _tick(self) -> None:
        self._timer = self.loop.call_later(CHECK_INTERVAL, self._tick)
        self.run()

    def run(self, done: Optional[Callable[[], None]] = None) -> None:
        """Send what is due (loop thread); ``done()`` when every domain was handled."""
        if self._busy:
            return
        self._busy = True
        today = tlsrpt.utc_day(self.loop.time())

        def due():
            self.store.prune(tlsrpt.utc_day(self.loop.time() - KEEP_DAYS * 86400))
            out = []
            for day in self.store.days():
                if day >= today:
                    continue
                sent = set(self.store.sent(day))
                out += [(day, dom, c) for dom, c in sorted(self.store.day(day).items()) if dom not in sent]
            return out

        def listed(items):
            if isinstance(items, BaseException):
                log.error("tls-rpt cannot read DATA/tls-rpt: %s", items)
                items = []
            self._each(list(items), today, done)
        self.loop.run_in_thread(due, listed)

    def _each(self, items: List[tuple], today: str, done) -> None:
        if not items:
            self._busy = False
            if done is not None:
                done()
            return
        day, domain, counts = items.pop(0)
        self.resolver.resolve("_smtp._tls." + domain, dnscodec.TYPE_TXT,
                              lambda result: self._send(day, domain, counts, result, today,
                                                        lambda: self._each(items, today, done)))

    def _send(self, day: str, domain: str, counts: dict, result, today: str, next_one) -> None:
        texts = [b"".join(r).decode("ascii", "replace") for r in result.records] if isinstance(result, Answer) else []
        try:
            rua = tlsrpt.parse_record(texts)
        except tlsrpt.RecordError as e:
            log.debug("tls-rpt domain=%s day=%s no report: %s", domain, day, e)
            return self._mark(day, domain, next_one)
        now = self.loop.time()
        unique = new_id(8)
        report = tlsrpt.build_report(day, domain, counts, self.submitter, self.contact,
                                     "%s.%s@%s" % (day, unique, self.submitter))
        gz = tlsrpt.compress(report)
        name = tlsrpt.report_file_name(self.submitter, domain, day, unique)
        jobs = []
        for uri in rua:
            if uri.startswith("mailto:"):
                to = uri[7:].split("?")[0]
                msg = tlsrpt.report_message(report, gz, domain, self.submitter, self.contact, to,
                                            email.utils.formatdate(now, usegmt=True).replace("GMT", "+0000"),
                                            "%s.%s@%s" % (day, new_id(6), self.submitter),
                                            "tlsrpt-" + new_id(12), name)
                jobs.append(lambda to=to, msg=msg: self.queue.enqueue(self.contact, [to], self.sign(msg), new_id(), now))
            elif _public(uri):
                jobs.append(lambda uri=uri: self._posted(uri, self.post(uri, gz)))
            else:
                log.warning("tls-rpt domain=%s rua=%s: not a public https host; not sent", domain, uri)

        def work():
            ok = True
            for job in jobs:
                try:
                    job()
                except Exception as e:      # one URI's failure does not stop the others
                    log.warning("tls-rpt domain=%s day=%s not sent: %s", domain, day, e)
                    ok = False
            return ok

        def finished(ok):
            old = tlsrpt.day_range(day)[0] < tlsrpt.day_range(today)[0] - POST_GIVE_UP * 86400
            if ok is True or old:
                log.info("tls-rpt domain=%s day=%s report sent to %s", domain, day, ", ".join(rua))
                self.kick()
                return self._mark(day, domain, next_one)
            next_one()          # tried again at the next check (RFC 8460 §5.5)
        if not self._lane.submit(domain, work, finished):
            next_one()

    @staticmethod
    def _posted(uri: str, reply) -> None:
        if not 200 <= reply.status < 300:       # RFC 8460 §5.4: "typically a 200 or 201"
            raise loop_https.HttpsError("%s: HTTP status %d" % (uri, reply.status))

    def _https_post(self, uri: str, gz: bytes):
        # RFC 8460 §3: "Report submitters MAY ignore certificate validation errors"; we do not.
        return loop_https.request(uri, "POST", gz, {"Content-Type": "application/tlsrpt+gzip"},
                                  cafile=self.cafile, timeout=POST_TIMEOUT, max_body=64 * 1024)

    def _mark(self, day: str, domain: str, next_one) -> None:
        def work():
            self.store.mark_sent(day, domain)
        self.loop.run_in_thread(work, lambda _r: next_one())
