"""The authentication service shared by SMTP, POP3 and (later) IMAP.

The ``AuthService`` contract (protocols/backend/contracts.py, which is
protocols/sasl.py's ``Authenticator``): ``scram_lookup`` and
``authenticate(ctx, outcome, done)`` answering ``done(user)``, ``done(None)``
or ``done(AuthTemporary)``.

* scrypt verification on its own bounded, fair thread lane (``loop.Lane``:
  a flood of password checks never delays maildrops, queue writes or
  deliveries);
* a delay after each failure, and the per-address lockout and per-account
  penalty of ``protocols.backend.auth_limits`` (RFC 4954 §4 leaves them to the
  server; we follow Postfix/Dovecot practice);
* a cache of recent successes (Dovecot's auth cache).

This service is the only owner of the failure counters and of the cache.
Sibling processes on this host (protocols/loop_siblings.py, issue 14) hear of
each completed attempt (``share``) and count it as their own, so N processes
do not give an attacker N times the guesses.  The attempts in flight are
counted in memory the workers of one supervisor share (``share_inflight``:
protocols/loop_connlimits.py, read at once, where a datagram would come too
late): an attempt starts only while the failures known here plus every
worker's attempts in flight from its address group stay within
``auth_max_failures``.  What is left: from an attempt's end until a sibling
reads its outcome (one datagram, at the sibling's next loop round) that
sibling counts it as neither, and a datagram a busy sibling drops is a
failure it never counts, no more than ``net.unix.max_dgram_qlen`` at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from typing import Callable, Dict, Optional, Tuple

from protocols.backend.auth_limits import AuthLimiter, Limits, address_group
from protocols.base import SessionContext
from protocols.loop import Lane
from protocols.sasl import AUTH_BUSY, AUTH_LOCKOUT, AuthTemporary, SaslOutcome, ScramCredentials
from store.users import UserDB, normalize_address

log = logging.getLogger("mailsrv.auth")

# Bound on remembered logins (memory), like Dovecot's auth_cache_size.
AUTH_CACHE_MAX = 10000
# Characters of a client-supplied user name kept in logs and counters (RFC 5321
# §4.5.3.1.1's 64-octet local part; longer names are an attack, not a user).
MAX_ID_LOG = 64
# Longest address group or account a sibling may report: an account is an
# address, RFC 5321 §4.5.3.1.1 + §4.5.3.1.2 (64 + 1 + 255); an IPv6 /64 is shorter.
MAX_SHARED_ID = 320


def canonical(address: str) -> Optional[str]:
    """The users file's form of ``address``, or None when it is not one."""
    try:
        return normalize_address(address)
    except ValueError:
        return None


def limits_of(cfg) -> Limits:
    return Limits(max_failures=cfg.auth_max_failures, lockout_seconds=cfg.auth_lockout_seconds,
                  account_max_failures=cfg.auth_account_max_failures,
                  account_delay=cfg.auth_account_delay, account_delay_max=cfg.auth_account_delay_max)


class AuthService:
    """Passwords, SCRAM secrets, the failure counters and the success cache."""

    def __init__(self, config, loop, users: UserDB, refresh: Optional[Callable[..., None]] = None):
        self.config = config
        self._refresh = refresh     # the backend's throttled check of the users file, if any
        self.loop = loop
        self.users = users
        self.limiter = AuthLimiter(limits_of(config))   # failed-login counters (the only owner)
        self.lane: Optional[Lane] = None                 # password hashing's own threads
        self._cache: Dict[str, Tuple[bytes, float]] = {}  # user -> (HMAC of the password, expiry)
        self._key = os.urandom(32)   # for stable fake SCRAM credentials and the cache's HMAC
        self._siblings = None        # protocols/loop_siblings.SiblingChannel, once shared
        self._inflight = None        # workers > 1: loop_connlimits.SharedCounts of attempts in flight

    def share(self, channel) -> None:
        """Tell the sibling processes of each outcome, and count theirs."""
        self._siblings = channel
        channel.on("auth", self._sibling_outcome)

    def share_inflight(self, counts) -> None:
        """workers > 1 (mailsrv.py ``MailServer.bind``): count the attempts in
        flight per address group in ``counts``, which every worker shares."""
        self._inflight = counts

    def _admit_inflight(self, group: str) -> bool:
        """The failures known here and every worker's attempts in flight, this
        one included, within ``auth_max_failures`` (AuthLimiter.begin's rule,
        across the workers); True when there are no siblings."""
        shared = self._inflight
        return shared is None or shared.admit(group, self.limiter.limits.max_failures - self.limiter.failures_from(group))

    def _release_inflight(self, group: str) -> None:
        if self._inflight is not None:
            self._inflight.release(group)

    def _sibling_outcome(self, message: dict) -> None:
        group, account, ok = message.get("g"), message.get("a"), message.get("ok")
        if (isinstance(group, str) and isinstance(account, str) and isinstance(ok, bool)
                and len(group) <= MAX_SHARED_ID and len(account) <= MAX_SHARED_ID):
            self.limiter.record(group, account, ok, self.loop.time())

    def configure(self, config) -> None:
        """SIGHUP: the live keys (limits now, lane sizes at the next check)."""
        self.config = config
        self.limiter.limits = limits_of(config)

    def refresh(self, then: Optional[Callable[[], None]] = None) -> None:
        """Pick up `user` changes made by another process: through the backend's
        check (at most once a second, re-read on a worker: wiring.py), or, on
        its own, a stat per lookup.  ``then()`` once the check due, if any, is
        done (the cache is consulted only then)."""
        if self._refresh is not None:
            self._refresh(then=then)
            return
        if self.users.reload_if_changed():
            self.users_changed()
        if then is not None:
            then()

    def users_changed(self) -> None:
        """The users file was re-read: a changed password must not stay valid through the cache."""
        self._cache.clear()

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()

    def scram_lookup(self, username: str) -> ScramCredentials:
        """RFC 5802 §5.1: an unknown user gets stable fake credentials, so
        the exchange looks the same and reveals nothing (RFC 5802 §9)."""
        self.refresh()
        user = canonical(username)
        creds = self.users.scram_credentials(user) if user else None
        if creds is not None:
            return ScramCredentials(salt=creds.salt, iterations=creds.iterations,
                                    stored_key=creds.stored_key, server_key=creds.server_key)
        seed = hmac.new(self._key, username.encode("utf-8", "replace"), hashlib.sha256).digest()
        return ScramCredentials(salt=seed[:16], iterations=4096, stored_key=os.urandom(32), server_key=os.urandom(32))

    def _hash_lane(self) -> Lane:
        cfg = self.config
        if self.lane is None:
            self.lane = Lane(self.loop, "auth", cfg.auth_hash_threads, 0, 1)
        self.lane.max_waiting = max(0, cfg.auth_hash_queue)            # live on SIGHUP
        self.lane.max_per_key = max(1, cfg.auth_hash_per_address)
        return self.lane

    def authenticate(self, ctx: SessionContext, outcome: SaslOutcome, done: Callable[[object], None]) -> None:
        """The contract of every protocol: ``done(user)``, ``done(None)`` for wrong
        credentials, ``done(AuthTemporary)`` for "try again later" (sasl.AuthTemporary)."""
        group = address_group(ctx.peer_ip)
        user = canonical(outcome.authcid)
        account = user or outcome.authcid[:MAX_ID_LOG].lower()
        attempt, refusal = self.limiter.begin(group, account, self.loop.time())
        if refusal is None and not self._admit_inflight(group):
            self.limiter.cancel(attempt)
            refusal = AUTH_LOCKOUT      # the other workers' attempts in flight fill the limit
        if refusal is not None:
            self._refused(ctx, outcome, refusal, account)
            done(refusal)
            return

        def finish(ok: bool) -> None:
            self._release_inflight(group)
            locked, penalised = self.limiter.end(attempt, ok, self.loop.time())
            if self._siblings is not None:
                self._siblings.send("auth", {"g": group, "a": account, "ok": ok})
            if ok:
                log.debug("auth ok user=%s mechanism=%s peer=%s listener=%s", user, outcome.mechanism, ctx.peer_ip, ctx.listener)
                done(user)
                return
            self._log_failure(ctx, outcome, group, account, locked, penalised)
            self.loop.call_later(self.config.auth_failure_delay, lambda: done(None))

        if user is None or (outcome.authzid and canonical(outcome.authzid) != user):
            finish(False)       # no proxy authorization (RFC 4616 §2 lets the server refuse)
            return
        if outcome.password is None:
            self.refresh()
            finish(bool(outcome.scram_verified) and self.has_account(user))
            return
        pw = outcome.password

        def verified(ok) -> None:
            if ok is True:
                self._remember(user, pw)
            finish(ok is True)

        def check() -> None:
            if self._cached(user, pw):
                finish(True)
            elif not self._hash_lane().submit(group, lambda: self.check_password(user, pw), verified):
                self.limiter.cancel(attempt)
                self._release_inflight(group)
                self._refused(ctx, outcome, AUTH_BUSY, account)
                done(AUTH_BUSY)
        # a check of the users file that is due ends first: a password changed
        # by another process since the last check never passes by the cache
        self.refresh(then=check)

    # the two questions catch-all mode answers differently (protocols/backend/catchall.py)
    def has_account(self, user: str) -> bool:
        return self.users.exists(user)

    def check_password(self, user: str, password: str) -> bool:
        """On the hashing lane: the users file's scrypt check."""
        return self.users.verify_password(user, password)

    def _log_failure(self, ctx, outcome: SaslOutcome, group: str, account: str, locked: bool, penalised: bool) -> None:
        """The session logs each failure (one line, without the password); here the
        lockout and the account penalty, once each, when they begin."""
        if locked:
            log.warning("auth lockout peer=%s (group %s) after %d failures (last user=%r mechanism=%s listener=%s) for %.0fs",
                        ctx.peer_ip, group, self.config.auth_max_failures, outcome.authcid[:MAX_ID_LOG],
                        outcome.mechanism, ctx.listener, self.config.auth_lockout_seconds)
        if penalised:
            log.warning("auth penalty user=%r after %d failures: further attempts from addresses it has "
                        "not logged in from are spaced (last peer=%s)", account,
                        self.limiter.account_failures(account), ctx.peer_ip)

    def _refused(self, ctx: SessionContext, outcome: SaslOutcome, refusal: AuthTemporary, account: str) -> None:
        """One line per attempt refused without checking the password (never the password)."""
        if refusal.reason == "lockout":
            why = "%d failures from this address" % self.limiter.failures_from(address_group(ctx.peer_ip))
        elif refusal.reason == "throttled":
            wait = max(0.0, self.limiter.next_allowed(account) - self.loop.time())
            why = "%d failures for this account, next attempt in %.0fs" % (self.limiter.account_failures(account), wait)
        else:
            why = "password-check lane full (%d running, %d waiting)" % (self.lane.running, self.lane.waiting)
        log.info("auth %s user=%r mechanism=%s peer=%s listener=%s: refused, %s", refusal.reason,
                 outcome.authcid[:MAX_ID_LOG], outcome.mechanism, ctx.peer_ip, ctx.listener, why)

    # Dovecot's auth cache, for the same reason: scrypt is deliberately slow
    # (tens of ms), and mail clients log in again every few minutes.  Only
    # successes are kept, as a keyed HMAC of the password (never the password),
    # for auth_cache_ttl seconds, and all are dropped when the users file changes.
    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, (user + "\0" + password).encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def _cached(self, user: str, password: str) -> bool:
        hit = self._cache.get(user)
        if hit is None or hit[1] < self.loop.time():
            return False
        return hmac.compare_digest(hit[0], self._digest(user, password))

    def _remember(self, user: str, password: str) -> None:
        ttl = self.config.auth_cache_ttl
        if ttl > 0:
            if len(self._cache) >= AUTH_CACHE_MAX:
                self._cache.clear()
            self._cache[user] = (self._digest(user, password), self.loop.time() + ttl)
