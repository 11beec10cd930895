"""The outbound scheduler: queue → MX → SMTP client → results, retries, bounces.

RFC 5321 §4.5.4.1 (sending strategy): on start and every ``interval``
seconds the relay takes the queue entries that are due, groups their open
recipients by domain (one transaction per domain, RFC 5321 §4.5.4.1 "one copy
... for each host"), finds the mail exchangers (RFC 5321 §5.1) — or uses a
configured smarthost (RFC 5321 §3.6.3, RFC 6409) — and tries every address
of every MX in order, moving on after a connection failure, a timeout, a
4xx/5xx greeting or a 421 (RFC 5321 §5.1: "the SMTP client SHOULD try at
least two addresses"), up to the bounds of Postfix: 5 addresses
(``protocols.dns.mx.MAX_MX_ADDRESSES``, smtp_mx_address_limit) and 2 sessions
that got past the greeting and EHLO (``MX_SESSION_LIMIT``,
smtp_mx_session_limit).  Each recipient's outcome is
recorded in the queue: 2xx delivered, 4xx deferred (retried later with the
queue's backoff), 5xx failed.

An MX address that is one of our own listening (address, port) pairs
(``RelayConfig.own_addresses``; loopback and unspecified addresses count
when we listen on the wildcard or loopback, ``dns_mx.is_own_address``) is
dropped with every MX not better than it, as RFC 5321 §5.1 wants of a host
that finds itself in the MX list; none left → the mail fails at once with
550 5.4.6 "loops back to myself" (RFC 3463 X.4.6 routing loop, Postfix's
wording) instead of relaying to itself until the Received limit stops it.

Permanent failures (a 5xx from the server, a null MX 556 5.1.10 per RFC 7505
§4.1, a domain that does not exist, a loop, a message too old) produce a
delivery status notification (``protocols/outbound/dsn.py``) handed to ``on_bounce``.
Never to the null reverse-path (RFC 5321 §4.5.5, §6.2): a bounce that cannot
be delivered is a double bounce, and like Postfix (notify_classes 2bounce) it
goes to the postmaster (``RelayConfig.postmaster``), logged at WARNING, so no
accepted mail vanishes; a notice to the postmaster that fails in turn is
logged at ERROR and dropped — nothing is ever reported about it, so no loop.
An entry with no open recipient left is removed.

Logging on "mailsrv.relay": one line per delivery attempt (queue id, domain,
MX, IP, outcome); never message bodies or passwords.

Queue disk work (reading the message, ``record_results``, ``remove``) runs in
the loop's worker threads (``loop.run_in_thread``) when the loop has them, so
no fsync stalls the loop; an entry stays "active" until its round is written,
so it is never picked up twice.

The relay is the only writer of queue entries.  Administration (`mailsrv.py
queue delete|bounce`, Postfix's postsuper -d and postqueue's bounce) asks the
relay through :meth:`Relay.administer`: a request for an entry in a delivery
round is applied when that round's results are written, in the same step, so
a message is never bounced twice nor delivered after it was deleted.

Left out: per-host connection caching and reuse, a host-down cache (RFC 5321
§4.5.4.1 SHOULD), retrying in clear after a failed STARTTLS handshake, DANE
(MTA-STS: protocols/outbound/mtasts_relay.py), delay notices (RFC 3464 ``Action: delayed``).
"""

from __future__ import annotations

import email.utils
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Tuple

from protocols.base import SessionContext, new_id
from protocols.dns.mx import is_own_address
from protocols.message import header_block
from protocols.outbound.dsn import Failure, build_bounce, should_bounce
from protocols.outbound.mtasts_relay import StsRelayMixin
from protocols.outbound.relay_shared import SharedQueueMixin
from protocols.smtp.client import ClientConfig, ClientJob, ClientResult, SmtpClientSession
from store.queue import DEFERRED, DELIVERED, FAILED, OPEN_STATES

log = logging.getLogger("mailsrv.relay")

ADMIN_COMMANDS = ("delete", "bounce")
# RFC 3463 §3.1: X.0.0 "other undefined status"; the text says who decided.
ADMIN_BOUNCE_STATUS = "5.0.0"
ADMIN_BOUNCE_TEXT = "5.0.0 bounced by the administrator"
SMTP_PORT = 25            # RFC 5321 §4.5.4.2 (well-known port 25)
SUBMISSIONS_PORT = 465    # RFC 8314 §7.3: implicit TLS submission
# Postfix smtp_mx_session_limit = 2: SMTP sessions per delivery that got past
# the greeting and EHLO (those that did not are not counted, as in Postfix).
MX_SESSION_LIMIT = 2
# RFC 3463 §3.5 X.4.6 "Routing loop detected"; the text is Postfix's.
LOOPS_BACK_STATUS = "5.4.6"


@dataclass
class RelayConfig:
    hostname: str                           # EHLO name and Reporting-MTA
    relayhost: Optional[str] = None         # "host:port" or "[host]:port": smarthost, no MX lookup
    relay_auth_user: Optional[str] = None   # AUTH at the smarthost (RFC 4954), never logged
    relay_auth_password: Optional[str] = None
    # STARTTLS policy (RFC 3207): "may" (use when offered) | "require" | "never" |
    # "implicit" (smarthost with TLS from the first octet, RFC 8314 §3; "may" for MX delivery)
    relay_tls: str = "may"
    relay_port: int = SMTP_PORT             # port of the MX hosts (tests use another)
    interval: float = 60.0                  # seconds between queue runs
    # Not an RFC number: a bound on sockets and on the load we put on others.
    # Counts deliveries in flight; one that has its answer may still be saying QUIT.
    max_connections: int = 20
    # RFC 5321 has no connect timeout; 30 s as Postfix's smtp_connect_timeout.
    connect_timeout: float = 30.0
    tls_verify: bool = False                # Postfix "may": encrypt, don't verify (the wiring builds the context)
    local_names: Tuple[str, ...] = ()       # our own host names: MX loop detection (RFC 5321 §5.1)
    own_addresses: Tuple[Tuple[str, int], ...] = ()  # our SMTP listeners (address, port): loops by address
    postmaster: str = ""                    # double bounces go here; "" → postmaster@hostname
    client: ClientConfig = field(default_factory=ClientConfig)


def parse_relayhost(spec: str, default_port: int) -> Tuple[str, int]:
    """"[host]:port", "host:port", "host", "[::1]:25" → (host, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    else:
        host, port = spec, ""
    return host, int(port) if port else default_port


def _status_of(reply: Tuple[int, str, str]) -> str:
    """The RFC 3463 code of a reply; the class alone when the server gave none."""
    code, enhanced, _ = reply
    return enhanced or "%d.0.0" % (code // 100)


@dataclass
class _Round:
    """One queue entry's delivery round: one _Delivery per domain."""
    entry: object
    outstanding: int = 0
    states: Dict[str, Tuple[str, str]] = field(default_factory=dict)     # rcpt → (state, text)
    details: Dict[str, Failure] = field(default_factory=dict)            # rcpt → DSN fields
    admin: Optional[str] = None         # "delete" | "bounce", applied when the round is written
    writing: bool = False               # results are being written; later requests wait for it
    later: List[Tuple[str, Optional[Callable[[str], None]]]] = field(default_factory=list)
    notify: List[Callable[[str], None]] = field(default_factory=list)   # told the admin outcome
    leased: bool = False                # its queue entry's lease is ours (let go when written)


@dataclass
class _Delivery:
    round: _Round
    domain: str
    rcpts: List[str]
    targets: List[Tuple[str, str]] = field(default_factory=list)       # (host name, ip)
    index: int = 0
    last_error: str = ""
    attempt: int = 0
    sessions: int = 0           # sessions past EHLO (MX_SESSION_LIMIT)
    data: bytes = b""
    sts: object = None          # the MTA-STS outcome (protocols/outbound/mtasts_relay.py)
    sts_relaxed: bool = False   # testing mode: verified TLS failed, tried as without a policy
    ctx: object = None          # the last attempt's SessionContext (a failed handshake's reason)


class Relay(StsRelayMixin, SharedQueueMixin):
    """See the module docstring."""

    _round_class = _Round              # for SharedQueueMixin's placeholder rounds

    def __init__(self, loop, queue, resolver, config: RelayConfig,
                 on_bounce: Optional[Callable[[object, List[Failure], bytes], None]] = None,
                 tls_client_context=None, clock: Optional[Callable[[], float]] = None,
                 on_round: Optional[Callable[[object], None]] = None,
                 local: Optional[Callable[[str], bool]] = None,
                 deliver_local: Optional[Callable[[object, List[str], bytes, Callable], None]] = None,
                 leases=None):
        self.loop, self.queue, self.resolver, self.config = loop, queue, resolver, config
        self.on_bounce, self.tls_context, self.on_round = on_bounce, tls_client_context, on_round
        # Queued mail for our own domains (bounces to local senders, alias targets
        # queued with remote ones) is handed to ``deliver_local(entry, rcpts, data,
        # done({rcpt: reply}))`` instead of SMTP.
        self.local, self.deliver_local = local, deliver_local
        # store/queue_lease.py Leases when other processes run the same queue
        # (issue 14): a round starts only once its entry's lease is ours.
        self.leases = leases
        self.clock = clock or getattr(loop, "time", None) or getattr(loop, "clock")
        self._active: Dict[str, _Round] = {}
        self._waiting: Deque[_Delivery] = deque()
        self.connections = 0
        self._timer = None
        self._running = False

    # -- scheduling --------------------------------------------------------
    def start(self) -> None:
        """Run the queue now and then every ``interval`` seconds (loop thread).

        Entries left with no open recipient (a crash between writing the last
        result and removing the entry) are removed first."""
        self._running = True
        for entry in self.queue.list():
            if not entry.open_recipients():
                try:
                    self.queue.remove(entry.id)    # once, at start: blocking is fine here
                except OSError as exc:
                    log.error("id=%s cannot remove finished entry: %s", entry.id, exc)
        self.loop.call_soon(self._tick)

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wake(self) -> None:
        """A message was queued: look at due entries now (loop thread)."""
        self.run_queue()

    kick = wake

    def flush(self) -> None:
        """Everything is due now (the `queue flush` command, like Postfix's `postqueue -f`)."""
        self.run_queue(force=True)

    def administer(self, command: str, queue_id: str,
                   done: Optional[Callable[[str], None]] = None) -> None:
        """Delete or bounce one entry (loop thread); ``done(outcome)`` once it is on disk.

        An entry in a delivery round gets the request when the round's results
        are written (the round's failures and the administrator's bounce make
        one DSN); an idle entry gets an empty round of its own, so either way
        one step writes it and the entry stays "active" meanwhile."""
        if command not in ADMIN_COMMANDS:
            raise ValueError("unknown queue command: %s" % command)
        if self.leases is not None and queue_id not in self._active:
            self._administer_shared(command, queue_id, done)     # relay_shared.py: its lease first
            return
        self._administer(command, queue_id, done)

    def _administer(self, command: str, queue_id: str, done: Optional[Callable[[str], None]],
                    leased: bool = False) -> None:
        rnd = self._active.get(queue_id)
        if rnd is not None:
            if rnd.admin is not None:
                if done is not None:
                    done("already %s" % ("deleted" if rnd.admin == "delete" else "bounced"))
            elif rnd.writing:
                rnd.later.append((command, done))
            else:
                rnd.admin = command
                if done is not None:
                    rnd.notify.append(done)
            return
        entry = self.queue.get(queue_id)
        if entry is None:
            if done is not None:
                done("not in the queue")
            return
        rnd = _Round(entry, admin=command, notify=[done] if done is not None else [], leased=leased)
        self._active[queue_id] = rnd
        self._finish_round(rnd)

    def _tick(self) -> None:
        if not self._running:
            return
        try:
            if self.leases is not None:
                self._shared_tick()
            else:
                self.run_queue()
        finally:
            self._timer = self.loop.call_later(self.config.interval, self._tick)

    def run_queue(self, force: bool = False) -> None:
        now = self.clock()
        entries = self.queue.list() if force else self.queue.due(now)
        for entry in entries:
            if entry.id not in self._active:
                self._begin_round(entry)
        self._dispatch()

    @property
    def in_flight(self) -> int:
        return len(self._active)

    # -- rounds ------------------------------------------------------------
    def _begin_round(self, entry) -> None:
        if self.leases is not None:
            return self._lease_then_begin(entry)
        self._start_round(entry)

    def _start_round(self, entry, leased: bool = False) -> None:
        rcpts = entry.open_recipients()
        if not rcpts:           # all final but not yet removed (a crash in between)
            self._offload(lambda: self.queue.remove(entry.id), lambda _r: None)
            return
        by_domain: Dict[str, List[str]] = {}
        for rcpt in rcpts:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        rnd = _Round(entry, outstanding=len(by_domain), leased=leased)
        self._active[entry.id] = rnd
        for domain, group in by_domain.items():
            self._waiting.append(_Delivery(rnd, domain, group))

    def _dispatch(self) -> None:
        while self._waiting and self.connections < self.config.max_connections:
            d = self._waiting.popleft()
            self.connections += 1
            # a source read in chunks as it is sent, never the whole message (issue 7)
            self._offload(lambda d=d: self.queue.message_source(d.round.entry.id),
                          lambda data, d=d: self._loaded(d, data))

    def _loaded(self, d: _Delivery, data) -> None:
        if isinstance(data, BaseException):
            return self._settle_all(d, DEFERRED, (451, "4.3.0", "queue file unreadable: %s" % data), "")
        d.data = data
        self._route(d)

    def _route(self, d: _Delivery) -> None:
        if self.local is not None and self.deliver_local is not None and self.local(d.domain):
            return self.deliver_local(d.round.entry, list(d.rcpts), d.data, lambda replies: self._local_done(d, replies))
        if self.config.relayhost:
            host, _ = parse_relayhost(self.config.relayhost, SMTP_PORT)
            if self._own(host):
                return self._loops_back(d, host)
            d.targets = [(host, host)]
            return self._try_next(d)
        if d.domain.startswith("[") and d.domain.endswith("]"):
            # RFC 5321 §5.1 / §4.1.3: an address literal is the host itself, no MX lookup.
            ip = d.domain[1:-1]
            ip = ip[5:] if ip.lower().startswith("ipv6:") else ip
            if self._own(ip):
                return self._loops_back(d, ip)
            d.targets = [(d.domain, ip)]
            return self._try_next(d)
        try:
            # RFC 6531 §3.2: look up internationalized domains in A-label form.
            name = d.domain.encode("idna").decode("ascii")
        except UnicodeError:
            return self._settle_all(d, FAILED, (550, "5.1.2", "Bad destination domain name"), "")
        done = lambda result: self._on_mx(d, result)
        if self.config.local_names:
            self.resolver.lookup_mx_hosts(name, done, frozenset(self.config.local_names))
        else:
            self.resolver.lookup_mx_hosts(name, done)

    def _on_mx(self, d: _Delivery, result) -> None:
        """RFC 5321 §5.1 via the resolver; RFC 7505 §4.1 null MX → fail now."""
        if result.reply is not None:
            state = FAILED if result.reply[0] >= 500 else DEFERRED
            why = getattr(result, "dns_error", "")
            self._log(d, "-", "-", "dns %s %s %s%s" % (result.reply + ((" (%s)" % why) if why else "",)))
            return self._settle_all(d, state, result.reply, "")
        hosts = result.hosts
        mine = [h[0] for h in hosts if any(self._own(ip) for ip in h[2])]
        if mine:        # RFC 5321 §5.1: only MX hosts better than ourselves
            hosts = [h for h in hosts if h[0] < min(mine)]
            if not hosts:
                return self._loops_back(d, next(ip for h in result.hosts for ip in h[2] if self._own(ip)))
        d.targets = [(h[1], ip) for h in hosts for ip in h[2]]
        self._sts_route(d)      # RFC 8461 §5.1: the policy filters the MX hosts (mtasts_relay.py)

    def _own(self, ip: str) -> bool:
        return is_own_address(ip, self._port(), self.config.own_addresses)

    def _loops_back(self, d: _Delivery, ip: str) -> None:
        """One of our own addresses is the best way there: fail now (module docstring)."""
        reply = (550, LOOPS_BACK_STATUS, "mail for %s loops back to myself" % d.domain)
        self._log(d, "-", ip, "%d %s %s ([%s]:%d is one of our own addresses)" % (reply + (ip, self._port())))
        self._settle_all(d, FAILED, reply, "")

    def _port(self) -> int:
        """The smarthost's port (given, or 465 for implicit TLS, else 25); the MX port otherwise."""
        if self.config.relayhost:
            default = SUBMISSIONS_PORT if self.config.relay_tls == "implicit" else SMTP_PORT
            return parse_relayhost(self.config.relayhost, default)[1]
        return self.config.relay_port

    # -- one connection attempt ----------------------------------------------
    def _job(self, d: _Delivery, data: bytes) -> ClientJob:
        entry, cfg = d.round.entry, self.config
        auth = None
        if cfg.relayhost and cfg.relay_auth_user:
            auth = (cfg.relay_auth_user, cfg.relay_auth_password or "")
        starttls = {"require": "require", "never": "never"}.get(cfg.relay_tls, "may")
        if cfg.relayhost and cfg.relay_tls == "implicit":
            starttls = "never"        # already encrypted
        if self.tls_context is None and starttls == "may":
            starttls = "never"        # nothing to upgrade with
        starttls = self._sts_tls(d, starttls, None)[0]     # RFC 8461 §5: enforce/testing require TLS
        return ClientJob(helo_name=cfg.hostname, mail_from=entry.sender, rcpts=list(d.rcpts), data=data,
                         need_smtputf8=entry.smtputf8, body_8bit=entry.body_8bit, auth=auth, starttls=starttls)

    def _try_next(self, d: _Delivery) -> None:
        if d.index >= len(d.targets) or d.sessions >= MX_SESSION_LIMIT:
            text = d.last_error or "no mail host could be reached"
            return self._settle_all(d, DEFERRED, (451, "4.4.1", text), "")
        host, ip = d.targets[d.index]
        d.index += 1
        d.attempt += 1
        token = d.attempt
        job = self._job(d, d.data)

        def factory(ctx: SessionContext):
            d.ctx = ctx
            return SmtpClientSession(ctx, self.config.client, job,
                                     lambda res: self._on_result(d, token, host, ip, res))

        def on_error(exc: BaseException) -> None:
            if token != d.attempt:
                return
            d.last_error = "connect to %s[%s] failed: %s" % (host, ip, exc)
            self._log(d, host, ip, d.last_error)
            self._try_next(d)

        kwargs = {}
        if self.config.relayhost and self.config.relay_tls == "implicit":
            kwargs["implicit_tls"] = True       # RFC 8314 §3
        self.loop.connect(ip, self._port(), factory, self.config.connect_timeout, on_error,
                          ssl_context=self._sts_tls(d, "", self.tls_context)[1], server_hostname=host, **kwargs)

    def _on_result(self, d: _Delivery, token: int, host: str, ip: str, res: ClientResult) -> None:
        if token != d.attempt:
            return
        d.attempt += 1          # later callbacks of this attempt are stale
        if res.stage not in ("greeting", "ehlo"):
            d.sessions += 1
        if self._sts_result(d, host, ip, res):      # TLS-RPT counts; testing mode's second try
            return self.loop.call_soon(lambda: self._try_next(d))
        counts = {DELIVERED: 0, DEFERRED: 0, FAILED: 0}
        retry: List[str] = []
        for rcpt in d.rcpts:
            reply = res.per_rcpt.get(rcpt, (451, "4.4.2", "no reply"))
            state = DELIVERED if reply[0] // 100 == 2 else FAILED if reply[0] // 100 == 5 else DEFERRED
            counts[state] += 1
            if state == DEFERRED and res.error_kind == "temporary":
                retry.append(rcpt)     # RFC 5321 §5.1: this host failed, try the next one
            else:
                self._settle(d, rcpt, state, reply, host)
        self._log(d, host, ip, "delivered=%d deferred=%d failed=%d tls=%s%s" % (
            counts[DELIVERED], counts[DEFERRED], counts[FAILED], "yes" if res.tls_used else "no",
            " (%s)" % res.remote_reply if res.remote_reply else ""))
        if retry:
            d.rcpts = retry
            d.last_error = "%s[%s] said: %s" % (host, ip, res.remote_reply or "temporary failure")
            self.loop.call_soon(lambda: self._try_next(d))
        else:
            self._delivery_done(d)

    def _local_done(self, d: _Delivery, replies: Dict[str, Tuple[int, str, str]]) -> None:
        for rcpt in d.rcpts:
            reply = replies.get(rcpt, (451, "4.3.0", "local delivery gave no answer"))
            state = DELIVERED if reply[0] // 100 == 2 else FAILED if reply[0] // 100 == 5 else DEFERRED
            self._settle(d, rcpt, state, reply, "")
        self._log(d, "local", "-", " ".join("%s=%d" % (r, replies.get(r, (451,))[0]) for r in d.rcpts))
        self._delivery_done(d)

    # -- outcomes ------------------------------------------------------------
    def _settle(self, d: _Delivery, rcpt: str, state: str, reply: Tuple[int, str, str], remote: str) -> None:
        text = "%d %s %s" % reply if reply[1] else "%d %s" % (reply[0], reply[2])
        d.round.states[rcpt] = (state, (remote + " said: " if remote else "") + text)
        # RFC 3464 §2.3.6: diagnostic-type "smtp" for SMTP reply text.
        d.round.details[rcpt] = (rcpt, _status_of(reply), "smtp; " + text, remote)

    def _settle_all(self, d: _Delivery, state: str, reply, remote: str) -> None:
        for rcpt in d.rcpts:
            self._settle(d, rcpt, state, reply, remote)
        self._delivery_done(d)

    def _delivery_done(self, d: _Delivery) -> None:
        d.data = b""
        self.connections -= 1
        rnd = d.round
        rnd.outstanding -= 1
        if rnd.outstanding == 0:
            self._finish_round(rnd)
        self._dispatch()

    def _finish_round(self, rnd: _Round) -> None:
        """Write the round's results and any administrator's request; bounce
        what failed; drop the entry when done."""
        entry, now = rnd.entry, self.clock()
        rnd.writing = True
        if rnd.admin == "bounce":
            for r in entry.recipients:
                if r.state in OPEN_STATES and rnd.states.get(r.address, (None,))[0] not in (DELIVERED, FAILED):
                    rnd.states[r.address] = (FAILED, ADMIN_BOUNCE_TEXT)
                    rnd.details[r.address] = (r.address, ADMIN_BOUNCE_STATUS,
                                              "x-local; bounced by the administrator", "")

        def work():
            if rnd.admin == "delete":
                self.queue.remove(entry.id)     # like Postfix's postsuper -d: no report
                return entry, [], None
            updated = self.queue.record_results(entry.id, rnd.states, now)
            was_open = {r.address for r in entry.recipients if r.state in OPEN_STATES}
            failed = [r for r in updated.recipients if r.state == FAILED and r.address in was_open]
            bounce = None
            double = not should_bounce(entry.sender)
            to = self._postmaster() if double else entry.sender
            # A double bounce reports the failures to anyone but the postmaster:
            # one to the postmaster is dropped (logged), never reported again.
            report = [r for r in failed if not double or r.address.lower() != to.lower()]
            if report:
                headers = header_block(self.queue.read_head(entry.id))
                bounce = self._make_bounce(updated, report, rnd, headers, now, to) + (to,)
                # The bounce is queued, durably, before the entry goes: a crash in
                # between gives at worst a second attempt, never a lost report.
                self.queue.enqueue("", [to], bounce[1], new_id(), now)
            if not updated.open_recipients():
                self.queue.remove(entry.id)     # RFC 5321 §6.1: only now is our duty done
            return updated, failed, bounce

        self._offload(work, lambda result: self._round_written(rnd, result))

    def _round_written(self, rnd: _Round, result) -> None:
        self._active.pop(rnd.entry.id, None)
        if rnd.leased:
            self._offload(lambda: self.leases.release(rnd.entry.id), lambda _r: None)
        if isinstance(result, BaseException):
            # The entry stays as it was on disk and is tried again.
            log.error("id=%s recording results failed: %s", rnd.entry.id, result)
            outcome = "failed: %s" % (result,)
        else:
            self._report_round(rnd, *result)
            outcome = {"delete": "deleted", "bounce": "bounced"}.get(rnd.admin or "", "done")
        if rnd.admin:
            log.info("id=%s queue %s by the administrator: %s", rnd.entry.id, rnd.admin, outcome)
        for notify in rnd.notify:
            notify(outcome)
        for command, done in rnd.later:
            self.administer(command, rnd.entry.id, done)

    def _report_round(self, rnd: _Round, updated, failed, bounce) -> None:
        reported = {item[0] for item in bounce[0]} if bounce is not None else set()
        for r in failed:
            if r.address not in reported:
                log.error("id=%s notice to the postmaster <%s> failed: %s; dropped (a failed notice is "
                          "never reported, RFC 5321 §4.5.5)", updated.id, r.address, r.last_error)
        if bounce is not None:
            items, dsn, to = bounce
            if should_bounce(updated.sender):
                log.info("id=%s bounce to <%s> for %d recipient(s) queued", updated.id, to, len(items))
            else:
                log.warning("id=%s bounce from <%s> to %s failed: %s; sent to the postmaster <%s> instead "
                            "(never back to <>, RFC 5321 §4.5.5)", updated.id, updated.sender,
                            ", ".join("<%s>" % i[0] for i in items), items[0][2], to)
            try:
                if self.on_bounce is not None:
                    self.on_bounce(updated, items, dsn)
            except Exception:
                log.exception("id=%s on_bounce failed", updated.id)
            # Deliver the bounce now, in this callback, so the relay is never seen
            # idle between one round and the bounce it queued.
            self.run_queue()
        if self.on_round is not None:
            self.on_round(updated)

    def _postmaster(self) -> str:
        return self.config.postmaster or "postmaster@%s" % self.config.hostname.lower()

    def _make_bounce(self, entry, failed, rnd: _Round, headers: bytes, now: float,
                     to: str) -> Tuple[List[Failure], bytes]:
        """RFC 3464 DSN to ``to``: the sender, or the postmaster for a double
        bounce (never to <>, RFC 5321 §4.5.5, §6.2)."""
        items: List[Failure] = []
        for r in failed:
            rcpt, status, diag, remote = rnd.details.get(r.address, (r.address, "4.4.7", "", ""))
            if "4.4.7" in r.last_error:            # expired while deferred (RFC 3463 X.4.7)
                status, diag = "4.4.7", "smtp; " + r.last_error
            items.append((rcpt, status, diag, remote))
        # RFC 5322 §3.3: "+0000" is UTC; "-0000" would mean "zone unknown".
        dsn = build_bounce(self.config.hostname, to, items, headers, entry.id,
                           email.utils.formatdate(now, usegmt=True).replace("GMT", "+0000"),
                           "<%s.%s@%s>" % (entry.id, new_id(4), self.config.hostname),
                           arrival_date=email.utils.formatdate(entry.first_seen, usegmt=True).replace("GMT", "+0000"))
        return items, dsn

    # -- helpers ---------------------------------------------------------------
    def _offload(self, fn, callback) -> None:
        """Blocking queue work in a worker thread; ``callback(result or exception)`` in the loop."""
        run_in_thread = getattr(self.loop, "run_in_thread", None)
        if run_in_thread is not None:
            run_in_thread(fn, callback)
            return
        try:
            result = fn()
        except Exception as exc:       # handed to the callback, as run_in_thread does
            result = exc
        callback(result)

    def _log(self, d: _Delivery, host: str, ip: str, result: str) -> None:
        log.info("id=%s domain=%s mx=%s ip=%s result=%s", d.round.entry.id, d.domain, host, ip, result)
