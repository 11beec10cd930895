"""SMTP policy: who may send as whom, to whom, and through us.

The ``PolicyService`` contract (protocols/backend/contracts.py):

* recipients (RFC 5321 §3.6, §4.5.1): local users, aliases, plus-addressing,
  postmaster; unknown users refused at RCPT time (RFC 5321 §3.6.2); no
  relaying except for authenticated sessions or trusted networks (§3.6.1,
  RFC 6409 §4), and only while outbound delivery exists;
* senders of authenticated users (RFC 6409 §6.1: the MSA may check that the
  submitter is allowed to use the sender address), with ``sender_login_match``.

Stateless apart from the configuration it is given: the users and aliases
belong to the store, picked up through ``refresh``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Callable, Optional

from protocols.backend.auth import canonical
from protocols.backend.contracts import Reply
from protocols.base import SessionContext
from protocols.smtp.state import RcptDecision
from store.users import AliasDB, Directory

smtp_log = logging.getLogger("mailsrv.smtp")


# Peer addresses whose trusted_networks answer is remembered: a bound so a
# spray of source addresses cannot grow it (local policy, a few hundred KiB).
TRUSTED_SEEN_MAX = 4096


class PolicyService:
    """check_sender / check_recipient / may_relay for the SMTP sessions."""

    def __init__(self, config, directory: Directory, aliases: AliasDB,
                 refresh: Callable[[], None], outbound_enabled: Callable[[], bool]):
        self.aliases = aliases
        self.refresh = refresh                    # users/aliases changed by another process
        self.outbound_enabled = outbound_enabled  # relaying and alias forwarding need the relay
        self.quota = None                         # protocols/backend/quota.py QuotaService, if any
        self.configure(config, directory)

    def configure(self, config, directory: Directory) -> None:
        """At start and SIGHUP: the live keys and the directory built from them."""
        self.config = config
        self.directory = directory
        self._trusted = config.trusted_networks.networks()
        self._trusted_seen: dict = {}      # peer address -> in trusted_networks (cleared with the keys)

    def _trusted_peer(self, ip: str) -> bool:
        """``ip`` is in trusted_networks: parsed once per address (issue 14:
        no per-message address parsing), the answer kept until the next
        configure (SIGHUP); at most TRUSTED_SEEN_MAX addresses remembered."""
        known = self._trusted_seen.get(ip)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address((ip or "").split("%")[0])
        except ValueError:
            return False
        if getattr(addr, "ipv4_mapped", None):
            addr = addr.ipv4_mapped
        answer = any(addr in net for net in self._trusted)
        if len(self._trusted_seen) >= TRUSTED_SEEN_MAX:
            self._trusted_seen.clear()
        self._trusted_seen[ip] = answer
        return answer

    def trusted_client(self, ip: str) -> bool:
        """The client is in trusted_networks (delivery's DMARC exemption asks too)."""
        return self._trusted_peer(ip)

    def may_relay(self, ctx: SessionContext, auth_user: Optional[str]) -> bool:
        """RFC 5321 §3.6.1 / RFC 6409 §4: relay only for authenticated users
        and trusted networks, and only once outbound delivery exists."""
        if not self.outbound_enabled():
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
        canon = canonical(address)
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
        self.refresh()
        domain = address.domain.lower()
        if not address.literal and self.directory.is_local_domain(domain):
            targets = self.directory.resolve(address.local, domain)
            if targets is None:
                # RFC 5321 §3.6.2 / §4.2.2: refuse now rather than bounce later.
                return RcptDecision(False, (550, "5.1.1", f"<{address.text}>: Recipient address rejected: User unknown"))
            local = [t for t in targets if self.directory.is_local_domain(t.rpartition("@")[2])]
            remote = [t for t in targets if t not in local]
            if remote and not self.outbound_enabled():
                remote = []     # alias forwarding needs outbound delivery
            if not local and not remote:
                return RcptDecision(False, (550, "5.1.1", f"<{address.text}>: Recipient address rejected: User unknown"))
            if self.quota is not None and any(self.quota.full(u) for u in local):
                # RFC 3463 §3.3 X.2.2, temporary (protocols/backend/quota.py)
                return RcptDecision(False, (452, "4.2.2", f"<{address.text}>: Mailbox full, try again later"))
            return RcptDecision(True, target=(local, remote))
        if self.may_relay(ctx, auth_user):
            return RcptDecision(True, target=([], [address.text]))
        # RFC 5321 §3.6.1: no open relay. RFC 3463 §3.8 X.7.1 delivery not authorized.
        return RcptDecision(False, (550, "5.7.1", f"<{address.text}>: Relay access denied"))
