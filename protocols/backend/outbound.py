"""The outbound service: the queue, the resolver and the relay, built from the
configuration, and queue administration through the relay.

The ``OutboundService`` contract (protocols/backend/contracts.py).  The relay
owns every queue entry (it may be delivering the one an administrator names),
so `mailsrv.py queue delete|bounce` are requests to it, never writes beside
it (STYLE.md "One owner for each piece of changing state").
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from protocols.dns.resolver import Resolver
from protocols.outbound.relay import Relay, RelayConfig, parse_relayhost
from protocols.smtp.client import ClientConfig
from store.queue import Queue
from store.queue_lease import Leases

smtp_log = logging.getLogger("mailsrv.smtp")


class OutboundService:
    """Queue + resolver + relay; ``queue`` is None until ``start`` (outbound off)."""

    def __init__(self, config, loop, tls_client_context=None, resolv_conf: str = "",
                 is_local: Callable[[str], bool] = lambda domain: False,
                 deliver_local: Optional[Callable] = None):
        self.config = config
        self.loop = loop
        self.tls_client_context = tls_client_context
        self.resolv_conf = resolv_conf
        self.is_local = is_local              # the relay's "our own domain" test
        self.deliver_local = deliver_local    # the relay's hook for queued local mail
        self.queue: Optional[Queue] = None
        self.relay: Optional[Relay] = None
        self.resolver: Optional[Resolver] = None
        self.sign: Optional[Callable[[bytes], bytes]] = None     # DKIM for our TLS-RPT mail (the wiring sets it)
        self.sts = self.tls_counter = self.tls_reporter = None   # MTA-STS, TLS-RPT (_start_sts)
        self.shared_queue = False     # sibling workers run this queue too (leases, as shared_data)
        self.reports = True           # TLS-RPT reports are sent from here (one process of the siblings)

    @property
    def enabled(self) -> bool:
        return self.queue is not None

    def start(self) -> None:
        if self.queue is not None:
            return
        cfg = self.config
        shared = bool(getattr(cfg, "shared_data", False)) or self.shared_queue
        self.queue = Queue(cfg.data_dir, schedule=[float(x) for x in cfg.retry_schedule],
                           max_age=cfg.max_queue_age, shared=shared)
        self.resolver = self._make_resolver()
        # issue 14: other hosts or workers run this queue too; each round leases its entry
        leases = Leases(self.queue.dir, cfg.queue_lease) if shared else None
        self.relay = Relay(self.loop, self.queue, self.resolver, self._relay_config(),
                           tls_client_context=self.tls_client_context,
                           local=self.is_local, deliver_local=self.deliver_local, leases=leases)
        self._start_sts()
        self.loop.call_soon(self.relay.start)

    def configure(self, config) -> None:
        """SIGHUP: the relay's settings, a new resolver and the retry policy."""
        self.config = config
        if self.relay is not None:
            self.relay.config = self._relay_config()
            self.resolver = self.relay.resolver = self._make_resolver()
            self.queue.set_policy([float(x) for x in config.retry_schedule], config.max_queue_age)
            if self.relay.leases is not None:
                self.relay.leases.ttl = float(config.queue_lease)
            self._start_sts()

    def _start_sts(self) -> None:
        """MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) for the relay, per the configuration
        (README "MTA-STS and TLS-RPT"); again on SIGHUP, keeping what runs."""
        from protocols import loop_https
        from protocols.outbound.mtasts_fetch import StsPolicies
        from protocols.outbound.tlsrpt import TlsRptCounter
        from protocols.outbound.tlsrpt_send import TlsReporter
        from store.stscache import StsCache, TlsRptStore
        cfg, relay = self.config, self.relay
        cafile = cfg.mta_sts_cafile or None
        if self.sts is None:
            self.sts = StsPolicies(self.loop, self.resolver, StsCache(cfg.data_dir), cafile)
            self.tls_counter = TlsRptCounter(self.loop, TlsRptStore(cfg.data_dir))
            self.tls_counter.start()
        self.sts.resolver, self.sts.cafile = self.resolver, cafile
        relay.sts = self.sts if cfg.mta_sts else None
        relay.sts_context = loop_https.client_context(cafile) if cfg.mta_sts else None
        relay.tls_report = self.tls_counter
        if cfg.tls_rpt and self.reports and self.tls_reporter is None:
            # RFC 8460 §5.3: the submitter is the domain of contact-info; our first mail domain, whose
            # DKIM key (if any) signs the report (§3)
            submitter = (list(cfg.domains) or [cfg.hostname])[0].lower().rstrip(".")
            self.tls_reporter = TlsReporter(self.loop, self.resolver, TlsRptStore(cfg.data_dir), self.queue,
                                            submitter, "postmaster@" + submitter,
                                            sign=lambda data: (self.sign or (lambda d: d))(data),
                                            kick=self.kick, cafile=cafile)
            self.tls_reporter.start()
        elif not cfg.tls_rpt and self.tls_reporter is not None:
            self.tls_reporter.close()
            self.tls_reporter = None
        if self.tls_reporter is not None:
            self.tls_reporter.resolver = self.resolver

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for part in (self.tls_reporter, self.sts, self.tls_counter):
            if part is not None:
                part.close()

    def kick(self) -> None:
        """A new entry is on disk: try it now."""
        if self.relay is not None:
            self.relay.kick()

    def _make_resolver(self) -> Resolver:
        # "host", "host:port", "[v6]:port"; RFC 1035 §4.2: port 53 by default
        servers = [parse_relayhost(spec, 53) for spec in self.config.dns_servers]
        if servers:
            return Resolver(self.loop, servers)
        return Resolver.from_resolv_conf(self.loop, self.resolv_conf)

    def _relay_config(self) -> RelayConfig:
        cfg = self.config
        return RelayConfig(
            hostname=cfg.hostname, relayhost=cfg.relayhost or None,
            relay_auth_user=cfg.relay_auth_user or None, relay_auth_password=cfg.relay_auth_password or None,
            relay_tls=cfg.relay_tls, relay_port=cfg.relay_port, tls_verify=cfg.tls_verify,
            interval=cfg.queue_interval,
            local_names=tuple({cfg.hostname.lower()}),
            # our SMTP listeners (RFC 5321 §5.1 loops by address) and where double bounces go
            own_addresses=tuple((host, cfg.smtp_port) for host in cfg.listen) if cfg.smtp_port else (),
            postmaster=cfg.postmaster or "postmaster@%s" % cfg.hostname.lower(),
            client=ClientConfig(allow_plaintext_auth=cfg.allow_plaintext_auth))

    def queue_control(self, done: Optional[Callable[[str, str, str], None]] = None) -> None:
        """Apply `mailsrv.py queue flush|delete|bounce` requests (SIGUSR1, loop thread).

        The relay owns the queue entries (it may be delivering the same one), so
        delete and bounce are requests to it; ``done(command, id, outcome)``
        follows each once it is on disk."""
        if self.queue is None:
            return
        for command, qid in self.queue.take_requests():
            smtp_log.info("queue %s %s", command, qid or "(all)")
            if command == "flush":
                self.relay.flush()
                if done is not None:
                    done(command, qid, "done")
            else:
                self.relay.administer(command, qid, None if done is None else
                                      (lambda outcome, c=command, q=qid: done(c, q, outcome)))

