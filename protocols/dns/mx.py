"""MX selection for delivery (RFC 5321 §5.1, RFC 7505 null MX), its bounds, and
the checks that keep the relay from mailing itself.

Implements
  * the MX → hosts → addresses walk of RFC 5321 §5.1 over ``Resolver``
    (``MxLookup``), with a null MX (RFC 7505 §3) and the implicit MX;
  * bounds on fan-out (issue 7 item 5): of a sorted MX list only the first
    ``MAX_MX_HOSTS`` hosts are looked up, and at most ``MAX_MX_ADDRESSES``
    addresses are returned for one delivery (Postfix's
    smtp_mx_address_limit = 5; RFC 5321 §5.1 asks only that a client "try at
    least two addresses");
  * ``is_own_address``: an MX address that is one of our own listening
    (address, port) pairs (RFC 5321 §5.1: a host that finds itself among the
    MX hosts must not send to itself; Postfix's "mail for X loops back to
    myself");
  * ``describe``: what DNS said, in DNS terms, for `mailsrv.py dns`.

Left out: telling our own public addresses when we listen on the wildcard
(only loopback and unspecified addresses are recognised then; the
Received-count limit of RFC 5321 §6.3 still ends such a loop).
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from protocols.dns import codec as dns
from protocols.dns.codec import DnsNameError
from protocols.dns.resolver import TYPE_NAMES, Answer, DnsError, Reply, Resolver, Result

# Postfix: smtp_mx_address_limit = 5 (addresses tried per delivery).  We look
# up as many hosts as could each give one address, so a huge MX answer costs
# at most 2 x 5 address queries.
MAX_MX_ADDRESSES = 5
MAX_MX_HOSTS = 5
MAX_ERRORS_SHOWN = 3         # per-host DNS failures quoted in one message

class MxHost(NamedTuple):
    preference: int
    host: str
    addresses: List[str]   # IPv4 first, then IPv6 (see MxLookup)


@dataclass
class MxResult:
    """Hosts to try in order, or a failure ``reply`` (permanent if 5xx)."""
    hosts: List[MxHost] = field(default_factory=list)
    reply: Optional[Reply] = None
    implicit: bool = False
    dns_error: str = ""     # on failure: what DNS said, in DNS terms, naming the server

    @property
    def ok(self) -> bool:
        return self.reply is None

    @property
    def permanent(self) -> bool:
        return self.reply is not None and self.reply[0] >= 500


# Failure replies.  Enhanced codes from RFC 3463 §3.
NULL_MX = (556, "5.1.10", "Recipient domain has a null MX (RFC 7505)")   # RFC 7505 §4.1, RFC 7504
NO_DOMAIN = (550, "5.1.2", "Recipient domain does not exist")           # RFC 3463 X.1.2
LOOPS_BACK = (550, "5.4.6", "Mail for this domain loops back to myself")  # RFC 5321 §5.1, RFC 3463 X.4.6
NO_ADDRESS = (550, "5.4.4", "No usable address for the domain's mail hosts")  # RFC 5321 §5.1, X.4.4
TEMP_FAIL = (451, "4.4.3", "Temporary DNS failure")                    # RFC 3463 X.4.3


class MxLookup:
    """RFC 5321 §5.1, step by step:

    1. MX query.  NXDOMAIN → permanent; temporary → temporary; no MX RRs →
       implicit MX: the domain itself at preference 0.
    2. A single MX with the root as exchange is a null MX → 556 5.1.10
       (RFC 7505 §3, §4.1).  DEVIATION(RFC 7505 §3): a root exchange mixed
       with other MX RRs breaks the MUST NOT there; we drop just that RR.
    3. Sort by preference, shuffling equal preferences (rng).  If one of
       ``local_names`` is an MX host, drop it and every MX with a preference
       not better than it; none left → "mail loops back to myself".
    4. Look up A and AAAA of the first ``MAX_MX_HOSTS`` remaining hosts,
       concurrently (the resolver bounds the queries in flight).  Addresses
       are listed IPv4 first, then IPv6 (our choice: RFC 5321 §5.2 leaves the
       order open, and IPv4 reachability is the more common).  Hosts without
       addresses are dropped; none left → temporary if any lookup failed
       temporarily, else permanent (RFC 5321 §5.1 "MUST be reported as an
       error").  At most ``MAX_MX_ADDRESSES`` addresses are kept, in order.
       MX exchanges that are CNAMEs are followed, though RFC 2181 §10.3
       forbids them.
    """

    def __init__(self, resolver: Resolver, domain: str, done: Callable[[MxResult], None],
                 local_names: FrozenSet[str]):
        self.r, self.domain, self.done = resolver, domain, done
        self.local = set()
        for name in local_names:
            try:
                self.local.add(dns.normalize_name(name))
            except DnsNameError:
                continue
        self.implicit = False

    def start(self) -> None:
        self.r.resolve(self.domain, dns.TYPE_MX, self._on_mx)

    def _on_mx(self, result: Result) -> None:
        if isinstance(result, DnsError):
            if result.kind == "nxdomain":
                return self.done(MxResult(reply=NO_DOMAIN, dns_error=result.message))
            if result.kind == "temporary":
                return self.done(MxResult(reply=TEMP_FAIL, dns_error=result.message))
            self.implicit = True  # RFC 5321 §5.1: implicit MX, preference 0
            return self._select([dns.MX(0, dns.normalize_name(self.domain))])
        mxs = [mx for mx in result.records if isinstance(mx, dns.MX)]
        if len(mxs) == 1 and mxs[0].exchange == "":
            why = "null MX (RFC 7505): %s accepts no mail" % self.domain
            return self.done(MxResult(reply=NULL_MX, dns_error=why))
        self._select([mx for mx in mxs if mx.exchange != ""])

    def _select(self, mxs: List[dns.MX]) -> None:
        by_pref: Dict[int, List[str]] = {}
        for mx in mxs:
            if mx.exchange not in by_pref.setdefault(mx.preference, []):
                by_pref[mx.preference].append(mx.exchange)
        ordered: List[Tuple[int, str]] = []
        for pref in sorted(by_pref):
            hosts = by_pref[pref]
            self.r.rng.shuffle(hosts)  # RFC 5321 §5.1: MUST randomize equal preferences
            ordered += [(pref, host) for host in hosts]
        mine = [pref for pref, host in ordered if host in self.local]
        if mine:
            ordered = [(pref, host) for pref, host in ordered if pref < min(mine)]
            if not ordered:
                why = "we are the best MX of %s: mail loops back to myself" % self.domain
                return self.done(MxResult(reply=LOOPS_BACK, implicit=self.implicit, dns_error=why))
        if not ordered:
            return self.done(MxResult(reply=NO_ADDRESS, implicit=self.implicit, dns_error="no MX hosts"))
        self._addresses(ordered[:MAX_MX_HOSTS])

    def _addresses(self, ordered: List[Tuple[int, str]]) -> None:
        found: Dict[Tuple[str, int], Result] = {}
        pending = [2 * len(ordered)]

        def one(host: str, qtype: int, result: Result) -> None:
            found[(host, qtype)] = result
            pending[0] -= 1
            if pending[0] == 0:
                self._finish(ordered, found)

        for _, host in ordered:
            for qtype in (dns.TYPE_A, dns.TYPE_AAAA):
                self.r.resolve(host, qtype, lambda res, h=host, t=qtype: one(h, t, res))

    def _finish(self, ordered: List[Tuple[int, str]], found: Dict[Tuple[str, int], Result]) -> None:
        hosts, temporary, errors, left = [], False, [], MAX_MX_ADDRESSES
        for pref, host in ordered:
            addrs: List[str] = []
            for qtype in (dns.TYPE_A, dns.TYPE_AAAA):
                res = found[(host, qtype)]
                if isinstance(res, Answer):
                    addrs += [a for a in res.records if a not in addrs]
                else:
                    temporary = temporary or res.kind == "temporary"
                    errors.append("%s %s: %s" % (host, TYPE_NAMES[qtype], res.message))
            if addrs and left > 0:
                hosts.append(MxHost(pref, host, addrs[:left]))
                left -= len(hosts[-1].addresses)
        if hosts:
            return self.done(MxResult(hosts=hosts, implicit=self.implicit))
        why = "; ".join(errors[:MAX_ERRORS_SHOWN]) + ("; ..." if len(errors) > MAX_ERRORS_SHOWN else "")
        if self.implicit:
            why = "no MX records, and no address for the domain itself: " + why
        if self.implicit and not temporary:
            return self.done(MxResult(reply=NO_DOMAIN, implicit=True, dns_error=why))
        self.done(MxResult(reply=TEMP_FAIL if temporary else NO_ADDRESS, implicit=self.implicit, dns_error=why))


# ---------------------------------------------------------------- our own addresses

def _ip(text: str) -> Optional[ipaddress._BaseAddress]:
    try:
        ip = ipaddress.ip_address(str(text).split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def is_own_address(ip: str, port: int, listening: Iterable[Tuple[str, int]]) -> bool:
    """Would connecting to ``ip``:``port`` reach one of our ``listening``
    (address, port) pairs?  RFC 5321 §5.1: we must not deliver to ourselves.

    The same address; or, where we listen on the wildcard (0.0.0.0 or ::),
    any loopback or unspecified address of that family; or the unspecified
    address where we listen on that family's loopback (Linux connects to
    0.0.0.0 / :: as to 127.0.0.1 / ::1).  IPv6 listeners are IPV6_V6ONLY
    (protocols/loop.py), so the families do not mix; a v4-mapped address is
    taken as the IPv4 address it maps."""
    target = _ip(ip)
    if target is None:
        return False            # a host name (smarthost): not an address we can judge
    for addr, lport in listening:
        ours = _ip(addr)
        if ours is None or int(lport) != int(port) or ours.version != target.version:
            continue
        if target == ours:
            return True
        if ours.is_unspecified and (target.is_loopback or target.is_unspecified):
            return True
        if target.is_unspecified and ours == ipaddress.ip_address("127.0.0.1" if ours.version == 4 else "::1"):
            return True
    return False


# ---------------------------------------------------------------- `mailsrv.py dns`

def describe(name: str, qtype: str, result) -> Tuple[List[str], bool]:
    """The lines `mailsrv.py dns QTYPE NAME` prints for an ``Answer`` /
    ``DnsError`` (A, AAAA, ...) or an ``MxResult`` (MX), and whether DNS gave
    an answer: records one a line; a failure as one line in DNS terms
    (NXDOMAIN, SERVFAIL, REFUSED, timeout, no records, null MX) naming the
    server that said it."""
    if isinstance(result, MxResult):
        if not result.ok:
            return ["%s MX: %s" % (name, result.dns_error or result.reply[2])], False
        note = "  (implicit MX)" if result.implicit else ""   # RFC 5321 §5.1
        return ["%d %s %s%s" % (h.preference, h.host, " ".join(h.addresses), note) for h in result.hosts], True
    if isinstance(result, DnsError):
        return ["%s %s: %s" % (name, qtype, result.message)], False
    return [str(r) for r in result.records], True
