"""Failed-login accounting: the per-address lockout and the per-account penalty.

RFC 4954 §4 and RFC 5034 leave brute-force defence to the server; this is the
policy the README's "Login protection" section documents.  It is the one owner
of the failure counters (the backend asks it, the sessions never see them), and
it is pure: every call is given ``now`` (the loop's clock); no I/O.

* **Client addresses are grouped**: an IPv4 address counts alone (an IPv4-mapped
  IPv6 address as its IPv4 address); an IPv6 address by its /64, the usual
  assignment to one end site (RFC 6177 §2), so an attacker with a /64 does not
  get 2^64 fresh addresses.
* **Per address**: an attempt counts from the moment it *starts* (in flight),
  so concurrent guesses cannot all be evaluated against the limit; an address
  with ``max_failures`` failures or attempts in flight is locked out until
  ``lockout_seconds`` after its last failure.  A success clears only the failures
  of *that* account from that address: another account's login never resets them.
* **Per account** (Dovecot's auth penalty, but kept per account because a
  distributed attacker has many addresses): once an account has
  ``account_max_failures`` failures (or attempts in flight), attempts for it are
  spaced: one at a time, and after each further failure the next is allowed only
  ``account_delay * 2**n`` seconds later, at most ``account_delay_max``; an
  attempt that comes sooner is refused with a temporary error without checking
  the password.  The failures are forgotten ``ACCOUNT_WINDOW`` seconds after the
  last one; a success does not reset them (else the owner's own logins would
  reopen the window for the attacker).  So that the attacker cannot lock the
  owner out, an address group that logged in to the account successfully within
  ``KNOWN_TTL`` is exempt from the penalty (it still has its own address limit).
"""

from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from protocols.sasl import AUTH_LOCKOUT, AUTH_THROTTLED, AuthTemporary

# Dovecot's anvil forgets a penalty after an hour without failures
# (PENALTY_DEFAULT_EXPIRE_SECS = 60*60); the same for the account counters.
ACCOUNT_WINDOW = 3600.0
# How long a successful (account, address group) pair stays exempt from the
# account penalty: a month, so a phone that syncs at least monthly stays known.
KNOWN_TTL = 30 * 24 * 3600.0
# Memory bound on each table (addresses, accounts, known pairs), like Dovecot's
# auth_cache_size; beyond it the least recently failed records are dropped.
MAX_RECORDS = 100_000
# RFC 6177 §2: an end site gets a /48 to /64; one /64 is one network.
IPV6_GROUP_PREFIX = 64


def address_group(ip: str) -> str:
    """The key a client address is counted under: IPv4 as is, IPv6 as its /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network("%s/%d" % (addr, IPV6_GROUP_PREFIX), strict=False))
    return str(addr)


@dataclass
class Limits:
    max_failures: int = 10          # per address group (auth_max_failures)
    lockout_seconds: float = 300.0  # auth_lockout_seconds
    account_max_failures: int = 10  # auth_account_max_failures
    account_delay: float = 2.0      # auth_account_delay (Dovecot: AUTH_PENALTY_INIT_SECS 2)
    account_delay_max: float = 60.0  # auth_account_delay_max


@dataclass
class _Address:
    inflight: int = 0
    failures: Dict[str, int] = field(default_factory=dict)    # account -> failures
    last: float = 0.0

    def total(self) -> int:
        return self.inflight + sum(self.failures.values())


@dataclass
class _Account:
    inflight: int = 0
    failures: int = 0
    last: float = 0.0
    next_allowed: float = 0.0


@dataclass
class Attempt:
    """One authentication in progress, from ``begin`` to ``end``/``cancel``."""
    group: str
    account: str


class AuthLimiter:
    """See the module docstring.  Loop thread only."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._addresses: "collections.OrderedDict[str, _Address]" = collections.OrderedDict()
        self._accounts: "collections.OrderedDict[str, _Account]" = collections.OrderedDict()
        self._known: "collections.OrderedDict[Tuple[str, str], float]" = collections.OrderedDict()

    # -- queries -------------------------------------------------------------
    def _address(self, group: str, now: float) -> _Address:
        rec = self._addresses.get(group)
        if rec is not None and not rec.inflight and now - rec.last > self.limits.lockout_seconds:
            rec.failures.clear()
        if rec is None:
            rec = self._addresses[group] = _Address()
            _bound(self._addresses, lambda r: r.inflight == 0)
        return rec

    def _account(self, account: str, now: float) -> _Account:
        rec = self._accounts.get(account)
        if rec is not None and not rec.inflight and now - rec.last > ACCOUNT_WINDOW:
            rec.failures, rec.next_allowed = 0, 0.0
        if rec is None:
            rec = self._accounts[account] = _Account()
            _bound(self._accounts, lambda r: r.inflight == 0)
        return rec

    def known(self, group: str, account: str, now: float) -> bool:
        expiry = self._known.get((account, group))
        return expiry is not None and expiry > now

    def failures_from(self, group: str) -> int:
        rec = self._addresses.get(group)
        return 0 if rec is None else sum(rec.failures.values())

    def account_failures(self, account: str) -> int:
        rec = self._accounts.get(account)
        return 0 if rec is None else rec.failures

    # -- an attempt's life ---------------------------------------------------
    def begin(self, group: str, account: str, now: float) -> Tuple[Optional[Attempt], Optional[AuthTemporary]]:
        """Count an attempt as it starts: (Attempt, None), or (None, refusal)."""
        addr = self._address(group, now)
        if addr.total() >= self.limits.max_failures:
            return None, AUTH_LOCKOUT
        acct = self._account(account, now)
        if (acct.failures + acct.inflight >= self.limits.account_max_failures
                and not self.known(group, account, now)
                and (acct.inflight > 0 or now < acct.next_allowed)):
            return None, AUTH_THROTTLED
        addr.inflight += 1
        acct.inflight += 1
        return Attempt(group, account), None

    def cancel(self, attempt: Attempt) -> None:
        """The attempt was not evaluated (the lane was full): it counts for nothing."""
        self._addresses[attempt.group].inflight -= 1
        self._accounts[attempt.account].inflight -= 1

    def end(self, attempt: Attempt, ok: bool, now: float) -> Tuple[bool, bool]:
        """Record the outcome.  Returns (address now locked out, account penalty
        just started) so the caller can log each once."""
        self.cancel(attempt)
        return self.record(attempt.group, attempt.account, ok, now)

    def record(self, group: str, account: str, ok: bool, now: float) -> Tuple[bool, bool]:
        """An outcome: of our own attempt (``end``), or one a sibling process on
        this host reports (protocols/backend/auth.py), so the limits hold across
        them.  Returns what ``end`` returns."""
        addr = self._address(group, now)
        acct = self._account(account, now)
        if ok:
            addr.failures.pop(account, None)
            self._known.pop((account, group), None)
            self._known[(account, group)] = now + KNOWN_TTL
            _bound(self._known, lambda expiry: True)
            return False, False
        addr.failures[account] = addr.failures.get(account, 0) + 1
        addr.last = now
        self._addresses.move_to_end(group)
        acct.failures += 1
        acct.last = now
        self._accounts.move_to_end(account)
        over = acct.failures - self.limits.account_max_failures
        if over >= 0:
            delay = self.limits.account_delay * (2 ** min(over, 30))
            acct.next_allowed = now + min(delay, self.limits.account_delay_max)
        locked = sum(addr.failures.values()) == self.limits.max_failures
        return locked, over == 0

    def next_allowed(self, account: str) -> float:
        rec = self._accounts.get(account)
        return 0.0 if rec is None else rec.next_allowed


def _bound(table: "collections.OrderedDict", droppable) -> None:
    """Keep ``table`` within MAX_RECORDS: drop the oldest droppable tenth."""
    if len(table) <= MAX_RECORDS:
        return
    excess = len(table) - MAX_RECORDS + MAX_RECORDS // 10
    for key in [k for k, v in table.items() if droppable(v)][:excess]:
        del table[key]
