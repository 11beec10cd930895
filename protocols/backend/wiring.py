"""The backends that connect protocol sessions to the store, and the policy between them.

The sessions (``smtp_server``, ``pop3_server``) are pure state machines that
ask an injected backend for everything that needs the disk, a thread or the
clock.  This module is that backend for the real server:

* authentication for every protocol: scrypt verification on its own bounded,
  fair thread lane (``loop.Lane``: a flood of password checks never delays
  maildrops, queue writes or deliveries), a delay after each failure, and the
  per-address lockout and per-account penalty of ``protocols.backend.auth_limits``
  (RFC 4954 §4 leaves them to the server; we follow Postfix/Dovecot practice);
* recipient policy (RFC 5321 §3.6, §4.5.1): local users, aliases,
  plus-addressing, postmaster, unknown users refused at RCPT time, and no
  relaying except for authenticated sessions or trusted networks;
* sender policy for authenticated users (RFC 6409 §6.1: the MSA may check that
  the submitter is allowed to use the sender address);
* durable delivery through ``store.deliver.Deliverer``: the ``250`` is given
  only after the file and its directory are fsync'd; the message goes to
  disk as it arrives (``open_message``, protocols/backend/sink.py), within a
  budget for message bytes in flight.

It uses the event loop only through ``call_later``, ``call_soon_threadsafe``,
``run_in_thread``, a ``Lane`` and ``time``; it never touches a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

from email.utils import formatdate, make_msgid

from protocols.backend.auth_limits import AuthLimiter, Limits, address_group
from protocols import message
from protocols.base import SessionContext
from protocols.dns.resolver import Resolver
from protocols.outbound.relay import Relay, RelayConfig, parse_relayhost
from protocols.loop import Lane
from protocols.sasl import AUTH_BUSY, AuthTemporary, SaslOutcome, ScramCredentials
from protocols.smtp.client import ClientConfig
from protocols.smtp.server import Envelope, RcptDecision, SmtpConfig, SmtpSession
from protocols.backend.sink import IncomingSink
from store.deliver import Deliverer, DeliveryJob
from store.maildir import MailStore
from store.queue import Queue
from store.users import AliasDB, Directory, UserDB, normalize_address

log = logging.getLogger("mailsrv.auth")
smtp_log = logging.getLogger("mailsrv.smtp")

Reply = Tuple[int, str, str]

# Bound on remembered logins (memory), like Dovecot's auth_cache_size.
AUTH_CACHE_MAX = 10000
# Characters of a client-supplied user name kept in logs and counters (RFC 5321
# §4.5.3.1.1's 64-octet local part; longer names are an attack, not a user).
MAX_ID_LOG = 64

# Pieces in which ``deliver`` hands a message in hand to its sink (one SMTP read).
SINK_PIECE = 64 * 1024
STORAGE_ERROR: Reply = (452, "4.3.1", "Insufficient system storage, try again later")  # RFC 3463 §3.4


class Backend:
    """Everything the sessions need from the outside world, for one server."""

    def __init__(self, config, loop, tls_client_context=None, resolv_conf: str = ""):
        self.config = config
        self.loop = loop
        self.tls_client_context = tls_client_context
        self.resolv_conf = resolv_conf
        data = config.data_dir
        os.makedirs(data, mode=0o700, exist_ok=True)
        self.users = UserDB(data)
        self.aliases = AliasDB(data)
        self.store = MailStore(data, config.hostname)
        self.directory = self._make_directory()
        self.deliverer: Optional[Deliverer] = None
        self.relay = None          # set by the outbound wiring when it is enabled
        self.queue = None
        self.pickup = None         # set by start_pickup (the serving server only)
        self._limiter = AuthLimiter(self._limits())    # failed-login counters (the only owner)
        self._lane: Optional[Lane] = None              # password hashing's own threads
        self._auth_cache: Dict[str, Tuple[bytes, float]] = {}  # user -> (HMAC of the password, expiry)
        self._fake_key = os.urandom(32)   # for stable fake SCRAM credentials of unknown users
        self.inflight_bytes = 0           # octets of messages being received (wiring_sink.py)
        self.storage_error = STORAGE_ERROR
        self._trusted = config.trusted_networks()

    def _make_directory(self) -> Directory:
        cfg = self.config
        # no postmaster set: Directory picks an existing user (README "Users and aliases")
        return Directory(self.users, self.aliases, cfg.local_domains(), cfg.postmaster or None)

    # -- life cycle ---------------------------------------------------------
    def start(self, outbound: bool = True) -> None:
        if self.deliverer is None:
            self.deliverer = Deliverer(self.store)
        if outbound and self.queue is None:
            cfg = self.config
            self.queue = Queue(cfg.data_dir, schedule=[float(x) for x in cfg.retry_schedule],
                               max_age=cfg.max_queue_age)
            self.resolver = self._make_resolver()
            self.relay = Relay(self.loop, self.queue, self.resolver, self._relay_config(),
                               tls_client_context=self.tls_client_context,
                               local=self.directory_is_local, deliver_local=self.deliver_queued_locally)
            self.loop.call_soon(self.relay.start)

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

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()
        if self.pickup is not None:
            self.pickup.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.deliverer is not None:
            self.deliverer.close()
            self.deliverer = None

    def reload(self, config=None) -> None:
        """SIGHUP and periodic: pick up users, aliases and live config keys."""
        if config is not None:
            self.config = config
            self._trusted = config.trusted_networks()
            self.directory = self._make_directory()
            self._limiter.limits = self._limits()
            if self.relay is not None:
                self.relay.config = self._relay_config()
                self.resolver = self.relay.resolver = self._make_resolver()
                self.queue.set_policy([float(x) for x in config.retry_schedule], config.max_queue_age)
            # our own loggers only: an embedding host's root logger is not ours to change
            logging.getLogger("mailsrv").setLevel(getattr(logging, str(config.log_level).upper(), logging.INFO))
        self._refresh()
        log.info("reloaded users (%d), aliases and configuration", len(self.users.list()))

    def _refresh(self) -> None:
        """Pick up `user`/`alias` changes made by another process: two stats
        per lookup (a few microseconds), so a change counts from the next command."""
        if self.users.reload_if_changed():
            self._auth_cache.clear()      # a changed password must not stay valid
        self.aliases.reload_if_changed()

    def add_user(self, address: str, password: str) -> None:
        self.users.add(address, password)
        self.store.create_mailbox(normalize_address(address))

    # -- session factories --------------------------------------------------
    def smtp_config(self, listener: str) -> SmtpConfig:
        cfg = self.config
        return SmtpConfig(
            hostname=cfg.hostname,
            max_message_size=cfg.max_message_size,
            max_recipients=cfg.max_recipients,
            max_received=cfg.max_received_headers,
            command_timeout=cfg.smtp_idle_timeout,
            require_auth=listener in ("submission", "smtps"),
            allow_plaintext_auth=cfg.allow_plaintext_auth,
            plaintext_auth_loopback=cfg.plaintext_auth_loopback,
        )

    def smtp_factory(self, listener: str) -> Callable[[SessionContext], SmtpSession]:
        def factory(ctx: SessionContext) -> SmtpSession:
            return SmtpSession(ctx, self.smtp_config(listener), self)
        return factory

    def pop3_factory(self):
        from protocols.pop3.server import Pop3Config, Pop3Session

        def factory(ctx: SessionContext):
            cfg = self.config
            pcfg = Pop3Config(hostname=cfg.hostname, idle_timeout=cfg.pop3_idle_timeout,
                              allow_plaintext_auth=cfg.allow_plaintext_auth,
                              plaintext_auth_loopback=cfg.plaintext_auth_loopback)
            return Pop3Session(ctx, pcfg, self)
        return factory

    # -- authentication (shared by SMTP, POP3, IMAP) ------------------------
    def _canonical(self, address: str) -> Optional[str]:
        try:
            return normalize_address(address)
        except ValueError:
            return None

    def scram_lookup(self, username: str) -> ScramCredentials:
        """RFC 5802 §5.1: an unknown user gets stable fake credentials, so
        the exchange looks the same and reveals nothing (RFC 5802 §9)."""
        self._refresh()
        user = self._canonical(username)
        creds = self.users.scram_credentials(user) if user else None
        if creds is not None:
            salt, iterations, stored_key, server_key = (
                creds if isinstance(creds, tuple) else
                (creds.salt, creds.iterations, creds.stored_key, creds.server_key))
            return ScramCredentials(salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key)
        seed = hmac.new(self._fake_key, username.encode("utf-8", "replace"), hashlib.sha256).digest()
        return ScramCredentials(salt=seed[:16], iterations=4096, stored_key=os.urandom(32), server_key=os.urandom(32))

    def _limits(self) -> Limits:
        cfg = self.config
        return Limits(max_failures=cfg.auth_max_failures, lockout_seconds=cfg.auth_lockout_seconds,
                      account_max_failures=cfg.auth_account_max_failures,
                      account_delay=cfg.auth_account_delay, account_delay_max=cfg.auth_account_delay_max)

    def _hash_lane(self) -> Lane:
        cfg = self.config
        if self._lane is None:
            self._lane = Lane(self.loop, "auth", cfg.auth_hash_threads, 0, 1)
        self._lane.max_waiting = max(0, cfg.auth_hash_queue)            # live on SIGHUP
        self._lane.max_per_key = max(1, cfg.auth_hash_per_address)
        return self._lane

    def authenticate(self, ctx: SessionContext, outcome: SaslOutcome, done: Callable[[object], None]) -> None:
        """The contract of every protocol: ``done(user)``, ``done(None)`` for wrong
        credentials, ``done(AuthTemporary)`` for "try again later" (sasl.AuthTemporary)."""
        group = address_group(ctx.peer_ip)
        user = self._canonical(outcome.authcid)
        account = user or outcome.authcid[:MAX_ID_LOG].lower()
        attempt, refusal = self._limiter.begin(group, account, self.loop.time())
        if refusal is not None:
            self._refused(ctx, outcome, refusal, account)
            done(refusal)
            return

        def finish(ok: bool) -> None:
            locked, penalised = self._limiter.end(attempt, ok, self.loop.time())
            if ok:
                log.debug("auth ok user=%s mechanism=%s peer=%s listener=%s", user, outcome.mechanism, ctx.peer_ip, ctx.listener)
                done(user)
                return
            # The session logs each failure (one line, without the password); here the
            # lockout and the account penalty, once each, when they begin.
            if locked:
                log.warning("auth lockout peer=%s (group %s) after %d failures (last user=%r mechanism=%s listener=%s) for %.0fs",
                            ctx.peer_ip, group, self.config.auth_max_failures, outcome.authcid[:MAX_ID_LOG],
                            outcome.mechanism, ctx.listener, self.config.auth_lockout_seconds)
            if penalised:
                log.warning("auth penalty user=%r after %d failures: further attempts from addresses it has "
                            "not logged in from are spaced (last peer=%s)", account,
                            self._limiter.account_failures(account), ctx.peer_ip)
            self.loop.call_later(self.config.auth_failure_delay, lambda: done(None))

        if user is None or (outcome.authzid and self._canonical(outcome.authzid) != user):
            finish(False)       # no proxy authorization (RFC 4616 §2 lets the server refuse)
            return
        self._refresh()
        if outcome.password is None:
            finish(bool(outcome.scram_verified) and self.users.exists(user))
            return
        pw = outcome.password
        if self._auth_cached(user, pw):
            finish(True)
            return

        def verified(ok) -> None:
            if ok is True:
                self._auth_remember(user, pw)
            finish(ok is True)
        if not self._hash_lane().submit(group, lambda: self.users.verify_password(user, pw), verified):
            self._limiter.cancel(attempt)
            self._refused(ctx, outcome, AUTH_BUSY, account)
            done(AUTH_BUSY)

    def _refused(self, ctx: SessionContext, outcome: SaslOutcome, refusal: AuthTemporary, account: str) -> None:
        """One line per attempt refused without checking the password (never the password)."""
        if refusal.reason == "lockout":
            why = "%d failures from this address" % self._limiter.failures_from(address_group(ctx.peer_ip))
        elif refusal.reason == "throttled":
            wait = max(0.0, self._limiter.next_allowed(account) - self.loop.time())
            why = "%d failures for this account, next attempt in %.0fs" % (self._limiter.account_failures(account), wait)
        else:
            why = "password-check lane full (%d running, %d waiting)" % (self._lane.running, self._lane.waiting)
        log.info("auth %s user=%r mechanism=%s peer=%s listener=%s: refused, %s", refusal.reason,
                 outcome.authcid[:MAX_ID_LOG], outcome.mechanism, ctx.peer_ip, ctx.listener, why)

    # Dovecot's auth cache, for the same reason: scrypt is deliberately slow
    # (tens of ms), and mail clients log in again every few minutes.  Only
    # successes are kept, as a keyed HMAC of the password (never the password),
    # for auth_cache_ttl seconds, and all are dropped when the users file changes.
    def _auth_digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._fake_key, (user + "\0" + password).encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def _auth_cached(self, user: str, password: str) -> bool:
        hit = self._auth_cache.get(user)
        if hit is None or hit[1] < self.loop.time():
            return False
        return hmac.compare_digest(hit[0], self._auth_digest(user, password))

    def _auth_remember(self, user: str, password: str) -> None:
        ttl = self.config.auth_cache_ttl
        if ttl > 0:
            if len(self._auth_cache) >= AUTH_CACHE_MAX:
                self._auth_cache.clear()
            self._auth_cache[user] = (self._auth_digest(user, password), self.loop.time() + ttl)

    # -- SMTP policy --------------------------------------------------------
    def _trusted_peer(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        if getattr(addr, "ipv4_mapped", None):
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._trusted)

    def may_relay(self, ctx: SessionContext, auth_user: Optional[str]) -> bool:
        """RFC 5321 §3.6.1 / RFC 6409 §4: relay only for authenticated users
        and trusted networks, and only once outbound delivery exists."""
        if self.queue is None:
            return False
        return bool(auth_user) or self._trusted_peer(ctx.peer_ip)

    def check_sender(self, ctx: SessionContext, auth_user: Optional[str], address) -> Optional[Reply]:
        text = getattr(address, "text", address) or ""
        if not auth_user or not text or not self.config.sender_login_match:
            return None
        if self._owns(auth_user, text):
            return None
        smtp_log.info("refused sender=<%s> peer=%s auth=%s: not owned (sender_login_match)", text, ctx.peer_ip, auth_user)
        return (553, "5.7.1", f"Sender address rejected: not owned by user {auth_user}")

    def _owns(self, user: str, address: str) -> bool:
        canon = self._canonical(address)
        if canon is None:
            return False
        if canon == user:
            return True
        local, _, domain = canon.rpartition("@")
        if not self.directory.is_local_domain(domain):
            return False
        if local == "postmaster" and not self.config.postmaster and self.aliases.targets(canon) is None:
            return False    # the user who gets postmaster mail by default does not thereby send as it
        return self.directory.resolve(local, domain) == [user]

    def check_recipient(self, ctx: SessionContext, auth_user: Optional[str], address) -> RcptDecision:
        decision = self._decide_recipient(ctx, auth_user, address)
        if not decision.ok:
            code, enhanced, text = decision.reply
            smtp_log.info("refused rcpt=<%s> peer=%s listener=%s auth=%s result=%d %s %s",
                          address.text, ctx.peer_ip, ctx.listener, auth_user or "-", code, enhanced, text)
        return decision

    def _decide_recipient(self, ctx: SessionContext, auth_user: Optional[str], address) -> RcptDecision:
        self._refresh()
        domain = address.domain.lower()
        if not address.literal and self.directory.is_local_domain(domain):
            targets = self.directory.resolve(address.local, domain)
            if targets is None:
                # RFC 5321 §3.6.2 / §4.2.2: refuse now rather than bounce later.
                return RcptDecision(False, (550, "5.1.1", f"<{address.text}>: Recipient address rejected: User unknown"))
            local = [t for t in targets if self.directory.is_local_domain(t.rpartition("@")[2])]
            remote = [t for t in targets if t not in local]
            if remote and self.queue is None:
                remote = []     # alias forwarding needs outbound delivery
            if not local and not remote:
                return RcptDecision(False, (550, "5.1.1", f"<{address.text}>: Recipient address rejected: User unknown"))
            return RcptDecision(True, target=(local, remote))
        if self.may_relay(ctx, auth_user):
            return RcptDecision(True, target=([], [address.text]))
        # RFC 5321 §3.6.1: no open relay. RFC 3463 §3.8 X.7.1 delivery not authorized.
        return RcptDecision(False, (550, "5.7.1", f"<{address.text}>: Relay access denied"))

    def open_message(self, envelope):
        """The MessageSink (protocols/smtp/state.py) for a message whose data
        starts now: it goes to disk as it arrives (protocols/backend/sink.py).
        Over the budget for message bytes in flight: 452 4.3.1 (RFC 3463 §3.4)."""
        if self.inflight_bytes >= self.config.max_inflight_message_bytes:
            smtp_log.warning("message %s refused: %d octets of messages in flight (max_inflight_message_bytes)",
                             envelope.queue_id, self.inflight_bytes)
            return (452, "4.3.1", "Insufficient system storage: too much mail in flight, try again later")
        local: List[str] = []
        remote: List[str] = []
        for loc, rem in envelope.targets:
            local.extend(u for u in loc if u not in local)
            remote.extend(r for r in rem if r not in remote)
        fixups = bool(envelope.auth_user) or envelope.listener in ("submission", "smtps")
        return IncomingSink(self, envelope, local, remote, fixups,
                            delivered_to=self._delivered_to(envelope.rcpt_to, local))

    def deliver(self, envelope, data: bytes, done: Callable[[Reply], None]) -> None:
        """A whole message already in hand (a local submission): the same path
        as SMTP's, through ``open_message``; ``done(reply)`` as for a session."""
        sink = self.open_message(envelope)
        if isinstance(sink, tuple):
            done(sink)
            return
        view = memoryview(data)
        for i in range(0, len(data), SINK_PIECE):
            sink.write(bytes(view[i:i + SINK_PIECE]))
        sink.finish(envelope, done)

    def _delivered_to(self, rcpts: List[str], users: List[str]) -> str:
        """Delivered-To (RFC 9228 §4) for a one-user delivery: the recipient as
        given, with its +tag, when it is that user's own address (as Postfix's
        local(8) writes it); otherwise (an alias) the user."""
        if len(users) != 1 or len(rcpts) != 1:
            return ""
        local, _, domain = rcpts[0].rpartition("@")
        try:
            given = normalize_address(rcpts[0])
        except ValueError:
            return ""
        if "+" in local and normalize_address(local.split("+", 1)[0] + "@" + domain) == users[0]:
            return given
        return ""

    # -- local submission: the sendmail command's postdrop/ ------------------
    def start_pickup(self) -> None:
        """Serve DATA/postdrop/ (protocols/backend/pickup.py): at start, on kick, periodically."""
        from protocols.base import new_id
        from protocols.backend.pickup import Pickup
        self.pickup = Pickup(self.loop, self.config.data_dir, self.config.hostname,
                             lambda: self.config.max_message_size, self.deliver_dropped, new_id)
        self.loop.call_soon(self.pickup.start)

    def deliver_dropped(self, dropped, data: bytes, queue_id: str, done: Callable[[bool], None]) -> None:
        """One message from ``sendmail``: local recipients into the Maildirs, the
        rest queued; an unknown local recipient is queued too, so the relay
        bounces it to the sender (RFC 5321 §3.6.2: the command has exited)."""
        self._refresh()
        targets = []
        for rcpt in dropped.recipients:
            local_part, _, domain = rcpt.rpartition("@")
            resolved = self.directory.resolve(local_part, domain) if self.directory.is_local_domain(domain) else None
            if resolved is None:
                targets.append(([], [rcpt]))
            else:
                local = [t for t in resolved if self.directory.is_local_domain(t.rpartition("@")[2])]
                targets.append((local, [t for t in resolved if t not in local]))
        if self.queue is None and any(rem for _loc, rem in targets):
            done(False)
            return
        utf8 = not all(a.isascii() for a in [dropped.sender, *dropped.recipients])
        env = Envelope(mail_from=dropped.sender, rcpt_to=list(dropped.recipients), targets=targets,
                       body="7BIT" if data.isascii() else "8BITMIME", smtputf8=utf8, helo="",
                       peer_ip="", auth_user=None, tls=False, listener="sendmail", queue_id=queue_id)
        self.deliver(env, data, lambda reply: done(reply[0] == 250))

    # -- POP3 ---------------------------------------------------------------
    def open_maildrop(self, ctx: SessionContext, user: str, done: Callable[[object], None]) -> None:
        from store.maildrop import open_maildrop
        self.loop.run_in_thread(lambda: open_maildrop(self.store, user), done)

    # -- submission (RFC 6409) ------------------------------------------------
    def _submission_fixups(self, data: bytes) -> bytes:
        """RFC 6409 §8.2 / §8.3: an MSA adds Date: and Message-ID: when missing."""
        head = message.parse_header(data)
        extra = []
        if b"date" not in head.names():
            extra.append(b"Date: " + formatdate(self.loop.time(), localtime=True).encode())
        if b"message-id" not in head.names():
            extra.append(b"Message-ID: " + make_msgid(domain=self.config.hostname).encode())
        return message.add_fields(data, extra, head)

    # -- queued mail for local recipients, bounces, administrative commands -----
    def directory_is_local(self, domain: str) -> bool:
        return self.directory.is_local_domain(domain)

    def deliver_queued_locally(self, entry, rcpts: List[str], data: bytes,
                               done: Callable[[Dict[str, Reply]], None]) -> None:
        """The relay's hook for queued mail to our own domains (bounces to local
        senders, alias targets queued with remote ones): into the Maildirs, with
        the same durable delivery as SMTP; a storage error defers (retried)."""
        self._refresh()
        replies: Dict[str, Reply] = {}
        users: List[str] = []
        for rcpt in rcpts:
            local, _, domain = rcpt.rpartition("@")
            targets = [t for t in (self.directory.resolve(local, domain) or [])
                       if self.directory.is_local_domain(t.rpartition("@")[2])]
            if not targets:
                replies[rcpt] = (550, "5.1.1", "User unknown")
                continue
            users.extend(t for t in targets if t not in users)
            replies[rcpt] = (250, "2.0.0", "Delivered")
        if not users:
            done(replies)
            return

        def stored(result) -> None:
            if not result.ok:
                for rcpt, reply in replies.items():
                    if reply[0] == 250:
                        replies[rcpt] = (451, "4.3.0", "Local delivery failed: %s" % result.error)
            done(replies)
        job = DeliveryJob(data=data, return_path=entry.sender, users=users, queue_id=entry.id)
        self.deliverer.submit(job, lambda r: self.loop.call_soon_threadsafe(lambda: stored(r)))

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
