"""The delivery service: where accepted mail goes, durably.

The ``DeliveryService`` contract (protocols/backend/contracts.py):

* ``open_message``: SMTP's ``MessageSink`` (protocols/backend/sink.py): the
  message goes to disk as it arrives, within a budget for message bytes in
  flight; the ``250`` is given only after the file and its directory are
  fsync'd (``store.deliver.Deliverer``), remote recipients queued;
* ``deliver``: a message already in hand, through the same sink;
* submission fixups (RFC 6409 §8.2, §8.3), Delivered-To (RFC 9228 §4);
* local submission: the sendmail command's postdrop/ (``start_pickup``,
  ``deliver_dropped``), and the relay's hook for queued mail to our own
  domains (``deliver_queued_locally``).

It owns the in-flight byte count and the Deliverer; the queue is the
outbound service's (it is handed new entries, the relay owns them).
"""

from __future__ import annotations

import logging
from email.utils import formatdate, make_msgid
from typing import Callable, Dict, List, Optional

from protocols import message
from protocols.backend.contracts import Reply
from protocols.backend.sink import IncomingSink
from protocols.smtp.state import Envelope
from store.datadir import DataDirError
from store.deliver import Deliverer, DeliveryJob
from store.maildir import MailStore
from store.users import normalize_address

smtp_log = logging.getLogger("mailsrv.smtp")

# Pieces in which ``deliver`` hands a message in hand to its sink (one SMTP read).
SINK_PIECE = 64 * 1024
STORAGE_ERROR: Reply = (452, "4.3.1", "Insufficient system storage, try again later")  # RFC 3463 §3.4


class DeliveryService:
    """Local delivery and queue hand-off for SMTP, sendmail and the relay."""

    def __init__(self, config, loop, store: MailStore, directory, outbound, refresh: Callable[[], None],
                 changes=None):
        self.config = config
        self.loop = loop
        self.store = store
        self.directory = directory      # replaced on SIGHUP (configure)
        self.outbound = outbound        # the queue and the relay (protocols/backend/outbound.py)
        self.refresh = refresh
        self.deliverer: Optional[Deliverer] = None
        self.pickup = None              # set by start_pickup (the serving server only)
        self.dkim = None                # protocols/dkim_signer.py DkimSigner: signs mail that leaves
        self._dkim_resolver = None      # dkim_verify's, when outbound mail is off
        self.inflight_bytes = 0         # octets of messages being received (sink.py)
        self.storage_error = STORAGE_ERROR
        self.changes = changes          # the change hub (protocols/backend/hub.py), or None
        self.quota = None               # protocols/backend/quota.py QuotaService (sink.py asks it)
        self.dmarc_draw = None          # DMARC's pct draw, 0..99 (protocols/dmarc.py; tests set it)

    def delivered(self, users: List[str], folder: str = "INBOX") -> None:
        """On the loop thread, once the files and new/ are fsync'd: tell the
        change hub each user's folder (INBOX, or Junk after DMARC) has new mail
        (an IDLE session learns at once)."""
        if self.changes is not None:
            for user in users:
                self.changes.announce(user, folder)

    def configure(self, config, directory) -> None:
        self.config = config
        self.directory = directory
        try:
            self.load_dkim_keys()
        except DataDirError as e:       # a reload keeps the keys it had
            smtp_log.error("%s (DKIM keys unchanged)", e)

    def load_dkim_keys(self) -> None:
        """The DKIM keys of DATA/dkim/ (store/dkimkeys.py), when dkim_sign is on;
        DataDirError naming the file that cannot be used."""
        from protocols.dkim_signer import DkimSigner
        from store.dkimkeys import list_keys
        if not getattr(self.config, "dkim_sign", False):
            self.dkim = None
            return
        try:
            self.dkim = DkimSigner(list_keys(self.config.data_dir)) or None
        except ValueError as e:         # a key file that is not a key (protocols/dkim_signer.py)
            raise DataDirError(str(e)) from None

    # the sink's view of the outbound side
    @property
    def queue(self):
        return self.outbound.queue

    @property
    def relay(self):
        return self.outbound.relay

    def start(self) -> None:
        if self.deliverer is None:
            self.deliverer = Deliverer(self.store)
        self.load_dkim_keys()

    def stop_pickup(self) -> None:
        if self.pickup is not None:
            self.pickup.stop()      # kept: SIGUSR2's handler may still kick it (protocols/commands.py)

    def close(self) -> None:
        self.stop_pickup()
        if self.deliverer is not None:
            self.deliverer.close()
            self.deliverer = None

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
        sink = IncomingSink(self, envelope, local, remote, fixups,
                            delivered_to=self._delivered_to(envelope.rcpt_to, local))
        # RFC 6376 §5: mail that leaves from us (submitted, sendmail's, or relayed for a client of
        # trusted_networks) is signed on its way to the queue
        sink.sign = bool(self.dkim and remote and (fixups or envelope.listener == "sendmail"
                                                   or self._trusted_client(envelope.peer_ip)))
        # mail from other servers gets our Authentication-Results (RFC 8601): SPF, DKIM, DMARC
        if not fixups and envelope.listener == "smtp":
            sink.checks = self._inbound_checks(envelope)
        return sink

    def _inbound_checks(self, envelope):
        """protocols/dmarc_inbound.py's checks for a message from another server,
        or None when none is on.  DMARC is not asked of clients of trusted_networks
        (internal hops, as SPF's RFC 7208 Appendix F)."""
        from protocols.dmarc_inbound import InboundChecks
        cfg = self.config
        spf = getattr(envelope, "spf", None)
        if cfg.dkim_verify != "header" and cfg.dmarc_check == "off" and spf is None:
            return None             # all off: no per-message work (issue 14)
        dmarc_mode = cfg.dmarc_check if not self._trusted_client(envelope.peer_ip) else "off"
        if cfg.dkim_verify != "header" and dmarc_mode == "off" and spf is None:
            return None
        return InboundChecks(cfg.hostname, envelope, self.dkim_resolver(), self.loop.run_in_thread,
                             int(self.loop.time()), spf is not None, cfg.dkim_verify == "header",
                             dmarc_mode, cfg.dmarc_reject_action, self.dmarc_draw)

    def _trusted_client(self, ip: str) -> bool:
        """The client is in trusted_networks (as protocols/backend/policy.py's may_relay asks)."""
        import ipaddress
        try:
            addr = ipaddress.ip_address((ip or "").split("%")[0])
        except ValueError:
            return False
        addr = getattr(addr, "ipv4_mapped", None) or addr
        return any(addr in net for net in self.config.trusted_networks.networks())

    def dkim_resolver(self):
        """The relay's resolver (its cache), or one of our own when outbound mail is off."""
        if self.outbound.resolver is not None:
            return self.outbound.resolver
        if self._dkim_resolver is None:
            self._dkim_resolver = self.outbound._make_resolver()
        return self._dkim_resolver

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

    def submission_fixups(self, data: bytes) -> bytes:
        """RFC 6409 §8.2 / §8.3: an MSA adds Date: and Message-ID: when missing."""
        head = message.parse_header(data)
        extra = []
        if b"date" not in head.names():
            extra.append(b"Date: " + formatdate(self.loop.time(), localtime=True).encode())
        if b"message-id" not in head.names():
            extra.append(b"Message-ID: " + make_msgid(domain=self.config.hostname).encode())
        return message.add_fields(data, extra, head)

    # -- local submission: the sendmail command's postdrop/ ------------------
    def start_pickup(self) -> None:
        """Serve DATA/postdrop/ (protocols/backend/pickup.py): at start, on kick, periodically."""
        from protocols.base import new_id
        from protocols.backend.pickup import Pickup
        self.pickup = Pickup(self.loop, self.config.data_dir, self.config.hostname,
                             lambda: self.config.max_message_size, self.deliver_dropped, new_id,
                             shared=bool(getattr(self.config, "shared_data", False)))
        self.loop.call_soon(self.pickup.start)

    def deliver_dropped(self, dropped, data: bytes, queue_id: str, done: Callable[[bool], None]) -> None:
        """One message from ``sendmail``: local recipients into the Maildirs, the
        rest queued; an unknown local recipient is queued too, so the relay
        bounces it to the sender (RFC 5321 §3.6.2: the command has exited)."""
        self.refresh()
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

    # -- queued mail for local recipients (the relay's hook) -------------------
    def is_local_domain(self, domain: str) -> bool:
        return self.directory.is_local_domain(domain)

    def deliver_queued_locally(self, entry, rcpts: List[str], data: bytes,
                               done: Callable[[Dict[str, Reply]], None]) -> None:
        """The relay's hook for queued mail to our own domains (bounces to local
        senders, alias targets queued with remote ones): into the Maildirs, with
        the same durable delivery as SMTP; a storage error defers (retried)."""
        self.refresh()
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
            if result.ok:
                self.delivered(users)
            else:
                for rcpt, reply in replies.items():
                    if reply[0] == 250:
                        replies[rcpt] = (451, "4.3.0", "Local delivery failed: %s" % result.error)
            done(replies)
        job = DeliveryJob(data=data, return_path=entry.sender, users=users, queue_id=entry.id)
        self.deliverer.submit(job, lambda r: self.loop.call_soon_threadsafe(lambda: stored(r)))
