"""The composition of the backend services, and the session factories.

The sessions (protocols/smtp, protocols/pop3) are pure state machines that
ask an injected backend for everything that needs the disk, a thread or the
clock; what they may ask is written as contracts in
protocols/backend/contracts.py.  Each contract has one service, one module:

=================  ==========================  ===============================
service            module                      owns
=================  ==========================  ===============================
auth               protocols/backend/auth.py   failure counters, login cache,
                                               the password-hashing lane
policy             protocols/backend/policy.py (configuration only)
delivery           protocols/backend/delivery  in-flight bytes, the Deliverer,
                   .py                         sendmail pick-up
mail access        protocols/backend/          (the store owns mailboxes)
                   mailaccess.py, imapaccess.py
outbound           protocols/backend/          the queue, resolver, relay
                   outbound.py                 (the relay owns queue entries)
=================  ==========================  ===============================

``Backend`` builds them from one configuration, hands each session the
methods of its contract (``SmtpBackend``: auth + policy + delivery;
``Pop3Backend``: auth + mail access; ``ImapBackend``: auth + IMAP mail
access), starts, reloads and closes them.  The
session factories live here and nowhere else.

It uses the event loop only through ``call_later``, ``call_soon_threadsafe``,
``run_in_thread``, a ``Lane`` and ``time``; it never touches a socket.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional

from protocols.backend.auth import AuthService
from protocols.backend.catchall import CatchAllAuth, CatchAllDirectory
from protocols.backend.caught import CaughtCatalog, RecordingDelivery
from protocols.backend.delivery import DeliveryService
from protocols.backend.imapaccess import ImapAccessService
from protocols.backend.mailaccess import MailAccessService
from protocols.backend.outbound import OutboundService
from protocols.backend.policy import PolicyService
from protocols.backend.quota import QuotaService
from protocols.base import FaultAction, FaultView, SessionContext
from protocols.faults import Faults
from protocols.loop_siblings import SiblingChannel
from protocols.smtp.server import SmtpConfig, SmtpSession
from store.datadir import run_folder
from store.maildir import MailStore
from store.quota import parse_size
from store.users import AliasDB, Directory, UserDB, normalize_address

log = logging.getLogger("mailsrv.auth")

# Seconds between checks of the users and aliases files for changes made by
# another process (`mailsrv.py user ...`, an editor).  Ours, issue 9 §2: the
# check was two stat calls on the loop thread at every RCPT and login; now a
# change counts within about a second, and the re-read runs on a worker.
TABLE_CHECK_INTERVAL_S = 1.0


def make_directory(cfg, users: UserDB, aliases: AliasDB) -> Directory:
    """Who receives mail, from ``cfg`` and the two tables (the backend's, and the
    supervisor's start-up lines: protocols/supervisor.py)."""
    if cfg.catch_all:
        return CatchAllDirectory(users, aliases, cfg.local_domains(), cfg.postmaster or None)
    # no postmaster set: Directory picks an existing user (README "Users and aliases")
    return Directory(users, aliases, cfg.local_domains(), cfg.postmaster or None)


class Backend:
    """The services of one server, composed for the sessions."""

    def __init__(self, config, loop, tls_client_context=None, resolv_conf: str = ""):
        self.config = config
        self.loop = loop
        data = config.data_dir
        os.makedirs(data, mode=0o700, exist_ok=True)
        self.users = UserDB(data)
        self.aliases = AliasDB(data)
        self.store = MailStore(data, config.hostname)
        self.directory = self._make_directory()
        self._tables_checked: Optional[float] = None     # loop.time() of the last check
        self._tables_checking = False
        self._after_check: List[Callable[[], None]] = []   # refresh(then=...) waiting for the check
        # catch-all mode (issue 11): its directory and auth variants, chosen here only
        self.auth = (CatchAllAuth if config.catch_all else AuthService)(config, loop, self.users, refresh=self.refresh)
        self.outbound = OutboundService(config, loop, tls_client_context, resolv_conf,
                                        is_local=self.directory_is_local,
                                        deliver_local=self._deliver_queued_locally)
        self.policy = PolicyService(config, self.directory, self.aliases, self.refresh,
                                    lambda: self.outbound.enabled)
        self.mail = MailAccessService(loop, self.store)
        self.imap = ImapAccessService(loop, self.store, self.mail.hub, config.imap_max_userip_connections)
        self.caught = CaughtCatalog(loop, self.store, self.mail.hub)     # what the test server caught
        delivery = RecordingDelivery if config.catch_all else DeliveryService
        self.delivery = delivery(config, loop, self.store, self.directory, self.outbound, self.refresh,
                                 changes=self.mail.hub)
        if config.catch_all:
            self.delivery.catalog = self.caught
        # TLS-RPT reports by mail are DKIM-signed (RFC 8460 §3), on the reporter's worker
        self.outbound.sign = lambda data: self.delivery.dkim.sign(data, int(loop.time())) if self.delivery.dkim else data
        # per-user limits (protocols/backend/quota.py); catch-all mode has none
        self.quota = None if config.catch_all else QuotaService(loop, self.store, data, parse_size(config.default_quota))
        if self.quota is not None:
            self.policy.quota = self.delivery.quota = self.imap.quota = self.quota
        # injected faults (issue 11, protocols/faults.py): always present, empty unless a test adds rules
        self.faults = Faults(clock=loop.time)
        self._spf_resolver = None       # for spf_check when outbound mail is off (check_spf)
        from protocols.acme.service import AcmeService
        self.acme = AcmeService(config, loop)       # certificates from acme_directory (README "ACME certificates")
        # the other mailsrv processes of this host on this data folder (issue 14): login
        # outcomes, the hub's changes, "the users file changed"; opened by start_pickup
        self.siblings = SiblingChannel(loop, run_folder(data, config.shared_data, config.hostname))
        self.auth.share(self.siblings)
        self.mail.hub.share(self.siblings)
        self.siblings.on("users", self._sibling_users)
        self.acme.share(self.siblings)      # worker 0's new certificate reaches the others ("tls")
        # workers > 1 (protocols/supervisor.py): this process's index.  The siblings share
        # the queue by leases; pick-up, ACME orders and TLS-RPT reports run in worker 0 alone.
        self.worker: Optional[int] = None

    def _make_directory(self) -> Directory:
        return make_directory(self.config, self.users, self.aliases)

    # -- life cycle ---------------------------------------------------------
    def start(self, outbound: bool = True) -> None:
        self.delivery.start()
        # news of caught mail (a listing per change) for the test server and the web page's live list
        if self.config.catch_all or getattr(self.config, "http_port", None) is not None:
            self.caught.start()
        if outbound and not self.config.catch_all:     # catch-all mode relays nothing
            self.outbound.shared_queue, self.outbound.reports = self.worker is not None, not self.worker
            self.outbound.start()

    def start_pickup(self) -> None:
        """What only the serving server runs (not `queue flush` without a server):
        the sendmail command's postdrop/ (protocols/backend/pickup.py) and ACME
        (protocols/acme/: its checks, and its tls-alpn-01 listener)."""
        if not self.worker:     # with workers = N, worker 0's alone (protocols/supervisor.py)
            self.delivery.start_pickup()
            self.acme.start()
        else:
            self.acme.follow()  # the others load the certificate worker 0 obtains
        self.siblings.start()   # in every worker: each has its own socket

    def close(self) -> None:
        self.siblings.close()
        self.acme.close()
        self.auth.close()
        self.delivery.stop_pickup()     # no new local submissions, then the relay, then the disk
        self.outbound.close()
        self.delivery.close()
        self.caught.close()
        self.mail.close()

    def reload(self, config=None) -> None:
        """SIGHUP and periodic: pick up users, aliases and live config keys."""
        if config is not None:
            self.config = config
            self.directory = self._make_directory()
            self.auth.configure(config)
            self.policy.configure(config, self.directory)
            self.delivery.configure(config, self.directory)
            self.outbound.configure(config)
            self._spf_resolver = None       # dns_servers may have changed
            self.acme.reload(config)        # `mailsrv.py acme renew` asks through SIGHUP
            self.imap.max_userip = config.imap_max_userip_connections
            if self.imap.quota is not None:
                self.imap.quota.configure(parse_size(config.default_quota))
            # our own loggers only: an embedding host's root logger is not ours to change
            logging.getLogger("mailsrv").setLevel(getattr(logging, str(config.log_level).upper(), logging.INFO))
        # SIGHUP, an operator's explicit request: the files are checked now
        # (rare, so on the loop thread), and the next lookups see them.
        self._tables_reloaded(self._reload_tables())
        self._tables_checked = self.loop.time()
        self.siblings.send("users", {})     # an operator's request: the siblings check now too
        log.info("reloaded users (%d), aliases and configuration", len(self.users.list()))

    def refresh(self, force: bool = False, then: Optional[Callable[[], None]] = None) -> None:
        """Pick up `user`/`alias` changes made by another process: at most every
        TABLE_CHECK_INTERVAL_S, the two stats and any re-read on a worker thread;
        lookups meanwhile use the tables last loaded (loop thread only).
        ``then``: run once no check is due or running (at once, or when the
        check ends), for a caller that must not act on a table just found old
        (the auth cache)."""
        now = self.loop.time()
        last = self._tables_checked
        if then is not None:
            self._after_check.append(then)
        if self._tables_checking or (not force and last is not None
                                     and 0 <= now - last < TABLE_CHECK_INTERVAL_S):
            if not self._tables_checking:
                self._run_after_check()
            return
        self._tables_checked = now
        self._tables_checking = True
        self.loop.run_in_thread(self._reload_tables, self._tables_reloaded)

    def _reload_tables(self):
        """On a worker: (users re-read, aliases re-read)."""
        return self.users.reload_if_changed(), self.aliases.reload_if_changed()

    def _tables_reloaded(self, result) -> None:
        self._tables_checking = False
        if isinstance(result, BaseException):
            log.error("cannot check %s and %s for changes: %r", self.users.path, self.aliases.path, result)
        elif result[0]:
            self.auth.users_changed()
            self.siblings.send("users", {})     # found here first: the siblings drop theirs now
        self._run_after_check()

    def _run_after_check(self) -> None:
        waiting, self._after_check = self._after_check, []
        for then in waiting:
            try:
                then()
            except Exception:
                log.exception("a login waiting for the users file check failed")

    def _sibling_users(self, _message: dict) -> None:
        """A sibling found the users file changed (or had a SIGHUP, or a command
        changed it: loop_siblings.tell_siblings): our cached logins go now and
        the file is checked now, on the loop thread as for SIGHUP (rare), so no
        login here is checked against the old table.  Should the notice be
        dropped (our queue full), our own check finds the change within
        TABLE_CHECK_INTERVAL_S, as it finds a change nobody announced."""
        self.auth.users_changed()
        try:
            self._reload_tables()
        except Exception as e:
            log.error("cannot check %s and %s for changes: %r", self.users.path, self.aliases.path, e)

    def add_user(self, address: str, password: str) -> None:
        self.users.add(address, password)
        self.store.create_mailbox(normalize_address(address))

    def directory_is_local(self, domain: str) -> bool:
        return self.directory.is_local_domain(domain)

    def _deliver_queued_locally(self, entry, rcpts, data, done) -> None:
        self.delivery.deliver_queued_locally(entry, rcpts, data, done)

    # -- for the queue commands; the queue, relay, pick-up and in-flight count are
    # reached on the service that owns them (backend.outbound.relay, .delivery.pickup)
    def queue_control(self, done: Optional[Callable[[str, str, str], None]] = None) -> None:
        self.outbound.queue_control(done)

    # -- the session contracts (protocols/backend/contracts.py) ---------------
    # AuthService
    def scram_lookup(self, username: str):
        return self.auth.scram_lookup(username)

    def authenticate(self, ctx: SessionContext, outcome, done: Callable[[object], None]) -> None:
        self.auth.authenticate(ctx, outcome, done)

    # PolicyService
    def check_sender(self, ctx: SessionContext, auth_user: Optional[str], address):
        return self.policy.check_sender(ctx, auth_user, address)

    def check_recipient(self, ctx: SessionContext, auth_user: Optional[str], address):
        return self.policy.check_recipient(ctx, auth_user, address)

    def may_relay(self, ctx: SessionContext, auth_user: Optional[str]) -> bool:
        return self.policy.may_relay(ctx, auth_user)

    # SPF (RFC 7208, protocols/spf.py): spf_check = header
    def check_spf(self, ctx: SessionContext, helo: str, mail_from: str, done: Callable[[object], None]) -> None:
        """The MAIL FROM identity's SPF result (RFC 7208 §2.4) for the client
        of ``ctx``: DNS through the relay's resolver (its cache), or one of our
        own when outbound mail is off; ``done`` runs on the loop thread."""
        from protocols.spf import check_mail_from
        check_mail_from(ctx.peer_ip or "", mail_from, helo, self._spf_dns(), done, receiver=self.config.hostname)

    def check_spf_helo(self, ctx: SessionContext, helo: str, done: Callable[[object], None]) -> None:
        """The HELO identity's SPF result (RFC 7208 §2.3), as check_spf."""
        from protocols.spf import check_helo
        check_helo(ctx.peer_ip or "", helo, self._spf_dns(), done, receiver=self.config.hostname)

    def _spf_dns(self):
        resolver = self.outbound.resolver
        if resolver is None:
            if self._spf_resolver is None:
                self._spf_resolver = self.outbound._make_resolver()
            resolver = self._spf_resolver
        return resolver

    # DeliveryService
    def open_message(self, envelope):
        return self.delivery.open_message(envelope)

    def deliver(self, envelope, data: bytes, done) -> None:
        self.delivery.deliver(envelope, data, done)

    # MailAccess
    def open_maildrop(self, ctx: SessionContext, user: str, done: Callable[[object], None]) -> None:
        self.mail.open_maildrop(ctx, user, done)

    # ImapMailAccess
    def open_account(self, ctx: SessionContext, user: str, done: Callable[[object], None]) -> None:
        self.imap.open_account(ctx, user, done)

    # Faults: the sessions ask only while ``faults.active`` holds a rule
    def fault(self, protocol: str, command: str, view: FaultView) -> Optional[FaultAction]:
        return self.faults.decide(protocol, command, view)

    def fault_delay(self, seconds: float, done: Callable[[object], None]) -> None:
        """A delay fault: ``done(None)`` on the loop thread ``seconds`` from now."""
        self.loop.call_later(seconds, lambda: done(None))

    # -- session factories --------------------------------------------------
    def smtp_config(self, listener: str) -> SmtpConfig:
        cfg = self.config
        return SmtpConfig(
            hostname=cfg.hostname,
            max_message_size=cfg.max_message_size,
            max_recipients=cfg.max_recipients,
            max_received=cfg.max_received_headers,
            command_timeout=cfg.smtp_idle_timeout,
            # catch-all (the test server): AUTH offered everywhere, required nowhere, as
            # GreenMail and Mailpit, so an app set up for submission without a login still sends
            require_auth=listener in ("submission", "smtps") and not cfg.catch_all,
            allow_plaintext_auth=cfg.allow_plaintext_auth,
            plaintext_auth_loopback=cfg.plaintext_auth_loopback,
            spf_check=cfg.spf_check,
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

    def imap_factory(self):
        from protocols.imap.session import ImapConfig, ImapSession

        def factory(ctx: SessionContext):
            cfg = self.config
            icfg = ImapConfig(hostname=cfg.hostname, idle_timeout=cfg.imap_idle_timeout,
                              max_append=cfg.imap_append_limit,
                              allow_plaintext_auth=cfg.allow_plaintext_auth,
                              plaintext_auth_loopback=cfg.plaintext_auth_loopback,
                              referral=cfg.imap_referral)
            return ImapSession(ctx, icfg, self)
        return factory

    def http_factory(self):
        """The web page and JSON API (protocols/http/); the catalog and faults are
        ``self.caught`` / ``self.faults`` when the test server made them."""
        from protocols.http.service import HttpService
        from protocols.http.session import HttpConfig, HttpSession
        service = HttpService(self, self.loop)

        def factory(ctx: SessionContext):
            cfg = self.config
            hcfg = HttpConfig(require_login=not getattr(cfg, "catch_all", False),
                              idle_timeout=cfg.http_idle_timeout,
                              allow_plaintext_auth=cfg.allow_plaintext_auth,
                              plaintext_auth_loopback=cfg.plaintext_auth_loopback,
                              host_names=tuple([cfg.hostname] + list(cfg.machine_names)))
            return HttpSession(ctx, hcfg, service)
        return factory
