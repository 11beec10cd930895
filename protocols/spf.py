"""SPF evaluation: check_host() of RFC 7208 §4-§6, sans-I/O.

The evaluation is written as generators that ``yield (name, qtype)`` for each
DNS question and receive the resolver's ``Answer`` / ``DnsError``
(protocols/dns/resolver.py); ``SpfCheck`` drives them with an injected
resolver (``resolve(name, qtype, done)``), so the event loop, or a fake in the
tests, answers.  No blocking call, no socket.

Implements check_host() with record selection (§4.5), every mechanism
(§5: all, include, a, mx, ptr, ip4, ip6, exists) and modifier (§6: redirect,
exp), macros (§7, protocols/spf_macro.py), the limits of §4.6.4 (10
DNS-querying terms, 2 void lookups, 10 address lookups per MX and per PTR
set) and the results of §2.6; the HELO (§2.3) and MAIL FROM (§2.4)
identities.  The Received-SPF and Authentication-Results texts are in
protocols/spf_header.py.

Left out: result caching (§7.3 last paragraphs; the resolver caches DNS).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from typing import Callable, Generator, List, Optional, Tuple

from protocols.dns import codec as dns
from protocols.spf_macro import (MacroContext, SpfSyntaxError, client_ip, expand, parse_macro_string,
                                 target_name, uses_letter)
from protocols.spf_record import QUALIFIERS, Mechanism, SpfRecord, is_spf_record, parse_record

log = logging.getLogger(__name__)

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")   # RFC 7208 §2.6
MAX_DNS_TERMS = 10           # RFC 7208 §4.6.4: include, a, mx, ptr, exists, redirect
MAX_VOID_LOOKUPS = 2         # RFC 7208 §4.6.4: "SHOULD limit void lookups to two"
MAX_MX_ADDRESS_NAMES = 10    # RFC 7208 §4.6.4: address lookups per "mx" (more: permerror)
MAX_PTR_NAMES = 10           # RFC 7208 §4.6.4: address lookups per PTR set (the rest ignored)
MAX_SECONDS = 20             # RFC 7208 §4.6.4: an elapsed-time limit "SHOULD allow at least 20 seconds"
MAX_EXPLANATION = 400        # RFC 7208 §6.2 "MAY limit the length": one SMTP reply line's worth
MAX_LABEL = 63               # RFC 1035 §2.3.4 (RFC 7208 §4.3: malformed domains give "none")

Query = Tuple[str, int]
Evaluation = Generator[Query, object, object]


@dataclass
class SpfResult:
    """What check_host() returns (RFC 7208 §4.2) and what the headers record (§9.1)."""
    result: str
    domain: str = ""
    explanation: str = ""
    mechanism: str = ""        # the matching mechanism as written, or "default" (§9.1)
    problem: str = ""          # why, for temperror / permerror / none
    identity: str = "mailfrom"  # "mailfrom" or "helo" (§9.1)
    sender: str = ""
    ip: str = ""
    helo: str = ""


class _Stop(Exception):
    """A result that ends the whole evaluation: temperror or permerror (§4.6.2)."""

    def __init__(self, result: str, problem: str):
        super().__init__(problem)
        self.result, self.problem = result, problem


def valid_domain(name: str) -> bool:
    """RFC 7208 §4.3: a fully qualified, multi-label name with no empty or
    over-long label (the trailing root dot allowed), as A-labels."""
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not name.isascii():
        return False
    labels = name.split(".")
    return len(labels) >= 2 and all(0 < len(label) <= MAX_LABEL for label in labels)


def _a_labels(name: str) -> str:
    """RFC 7208 §4.3: internationalized names as A-labels."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


class _Evaluation:
    """The state shared by one check and every include/redirect below it:
    the counters of §4.6.4 are per evaluation, not per record."""

    def __init__(self, ctx: MacroContext):
        self.ctx = ctx
        self.dns_terms = 0
        self.voids = 0

    # -- limits (RFC 7208 §4.6.4) --
    def count_term(self, what: str) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _Stop("permerror", "more than %d DNS-querying terms (RFC 7208 §4.6.4) at %s"
                        % (MAX_DNS_TERMS, what))

    def _void(self, name: str) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise _Stop("permerror", "more than %d void lookups (RFC 7208 §4.6.4) at %s"
                        % (MAX_VOID_LOOKUPS, name))

    # -- DNS --
    def query(self, name: str, qtype: int, void_counts: bool = True) -> Evaluation:
        """The records for name/qtype; NXDOMAIN and no records are an empty
        list (RFC 7208 §5), counted as void; other errors raise temperror."""
        result = yield (name, qtype)
        kind = getattr(result, "kind", None)
        if kind == "temporary":
            raise _Stop("temperror", "DNS %s %s: %s" % (dns_type(qtype), name, result.message))
        records = list(getattr(result, "records", None) or []) if kind is None else []
        if not records and void_counts:
            self._void(name)
        return records

    def addresses(self, name: str, void_counts: bool = True) -> Evaluation:
        """A records for an IPv4 client, AAAA for IPv6 (RFC 7208 §5)."""
        qtype = dns.TYPE_A if self.ctx.ip.version == 4 else dns.TYPE_AAAA
        records = yield from self.query(name, qtype, void_counts)
        out = []
        for rec in records:
            try:
                out.append(ipaddress.ip_address(rec))
            except ValueError:
                continue
        return out

    def target(self, pieces, domain: str) -> Evaluation:
        """Expand a domain-spec (RFC 7208 §4.8, §7), finding %{p} first if used."""
        ctx = self.ctx
        ctx.domain = domain
        if uses_letter(pieces, "p"):
            ctx.validated = yield from self.validated_name(domain)
            ctx.domain = domain
        return target_name(expand(pieces, ctx))

    # -- ptr and %{p} (RFC 7208 §5.5, §7.3) --
    def validated_names(self, domain: Optional[str]) -> Evaluation:
        """The PTR names of <ip> whose addresses include <ip>, checking at most
        MAX_PTR_NAMES of them; with ``domain``, only names at or below it.  A
        DNS error on the PTR lookup gives none; on an address lookup, that
        name is skipped (§5.5)."""
        try:
            names = yield from self.query(self.ctx.ip.reverse_pointer, dns.TYPE_PTR)
        except _Stop as stop:
            if stop.result != "temperror":
                raise
            return []
        out = []
        for name in names[:MAX_PTR_NAMES]:      # §4.6.4: the rest ignored
            name = str(name).lower().rstrip(".")
            if domain is not None and not _within(name, domain):
                continue
            try:
                addrs = yield from self.addresses(name)
            except _Stop as stop:
                if stop.result != "temperror":
                    raise
                continue
            if self.ctx.ip in addrs:
                out.append(name)
        return out

    def validated_name(self, domain: str) -> Evaluation:
        """%{p} (RFC 7208 §7.3): <domain> itself if validated, else a
        subdomain, else any validated name, else "unknown"."""
        try:
            names = yield from self.validated_names(None)
        except _Stop as stop:
            if stop.result != "temperror":
                raise
            names = []
        domain = domain.lower().rstrip(".")
        for pick in ([n for n in names if n == domain], [n for n in names if _within(n, domain)], names):
            if pick:
                return pick[0]
        return "unknown"

    # -- check_host() (RFC 7208 §4) --
    def check_host(self, domain: str, explain: bool = True) -> Evaluation:
        """Returns (result, mechanism text, explanation, problem)."""
        domain = _a_labels(domain).rstrip(".").lower() if domain else ""
        if not valid_domain(domain):       # §4.3
            return "none", "", "", "malformed domain %r (RFC 7208 §4.3)" % domain
        record_text = yield from self.select_record(domain)
        if record_text is None:
            return "none", "", "", "no SPF record at %s (RFC 7208 §4.5)" % domain
        try:
            record = parse_record(record_text)     # §4.6: syntax first, whole record
        except SpfSyntaxError as exc:
            raise _Stop("permerror", "%s: %s" % (domain, exc)) from None
        return (yield from self.evaluate(record, domain, explain))

    def select_record(self, domain: str) -> Evaluation:
        """RFC 7208 §4.4, §4.5: the one "v=spf1" TXT record, None if there is
        none; NXDOMAIN gives none (§4.3), other errors temperror (§4.4)."""
        result = yield (domain, dns.TYPE_TXT)
        kind = getattr(result, "kind", None)
        if kind == "temporary":
            raise _Stop("temperror", "DNS TXT %s: %s" % (domain, result.message))
        if kind is not None:
            return None
        texts = [_txt_str(r) for r in getattr(result, "records", [])]
        found = [t for t in texts if t is not None and is_spf_record(t)]
        if len(found) > 1:
            raise _Stop("permerror", "%d SPF records at %s (RFC 7208 §4.5)" % (len(found), domain))
        return found[0] if found else None

    def evaluate(self, record: SpfRecord, domain: str, explain: bool) -> Evaluation:
        """Mechanisms left to right (RFC 7208 §4.6.2), then redirect (§6.1) or neutral (§4.7)."""
        for mech in record.mechanisms:
            if (yield from self.mechanism(mech, domain)):
                result = QUALIFIERS[mech.qualifier]
                text = ""
                if result == "fail" and explain and record.exp is not None:
                    text = yield from self.explanation(record.exp, domain)
                return result, mech.text, text, ""
        if record.redirect is not None and not record.has_all:   # §5.1: "all" voids redirect
            self.count_term("redirect")
            target = yield from self.target(record.redirect, domain)
            result, mech, text, problem = yield from self.check_host(target, explain)
            if result == "none":                                  # §6.1
                raise _Stop("permerror", "redirect=%s: %s" % (target, problem or "no SPF record"))
            return result, mech, text, problem
        return "neutral", "default", "", ""

    def mechanism(self, mech: Mechanism, domain: str) -> Evaluation:
        """Whether one mechanism matches (RFC 7208 §5); raises _Stop for errors."""
        ip = self.ctx.ip
        if mech.name == "all":                       # §5.1
            return True
        if mech.name in ("ip4", "ip6"):              # §5.6
            return mech.network.version == ip.version and ip in mech.network
        self.count_term(mech.text)
        target = domain
        if mech.domain is not None:
            target = yield from self.target(mech.domain, domain)
        if mech.name == "include":
            return (yield from self.include(target))
        if mech.name == "a":                         # §5.3
            return self.in_cidr((yield from self.addresses(target)), mech)
        if mech.name == "mx":
            return (yield from self.mx(target, mech))
        if mech.name == "ptr":                       # §5.5
            return bool((yield from self.validated_names(target.lower())))
        records = yield from self.query(target, dns.TYPE_A)      # exists, §5.7: A even for IPv6
        return bool(records)

    def include(self, target: str) -> Evaluation:
        """RFC 7208 §5.2's table: pass matches; fail, softfail, neutral do not;
        temperror, permerror and none end the evaluation (none as permerror)."""
        result, _mech, _text, problem = yield from self.check_host(target, explain=False)
        if result == "pass":
            return True
        if result in ("fail", "softfail", "neutral"):
            return False
        if result == "none":
            raise _Stop("permerror", "include:%s: %s" % (target, problem or "no SPF record"))
        raise _Stop(result, problem)

    def mx(self, target: str, mech: Mechanism) -> Evaluation:
        """RFC 7208 §5.4: the addresses of the MX hosts, no implicit MX; asking
        for the addresses of more than 10 of them is permerror (§4.6.4)."""
        records = yield from self.query(target, dns.TYPE_MX)
        hosts = [r.exchange for r in sorted(records, key=lambda r: r.preference) if getattr(r, "exchange", "")]
        for n, host in enumerate(hosts):
            if n >= MAX_MX_ADDRESS_NAMES:
                raise _Stop("permerror", "mx:%s has more than %d MX names (RFC 7208 §4.6.4)"
                            % (target, MAX_MX_ADDRESS_NAMES))
            if self.in_cidr((yield from self.addresses(host)), mech):
                return True
        return False

    def in_cidr(self, addrs: List[object], mech: Mechanism) -> bool:
        """RFC 7208 §5: compare the high-order CIDR bits (dual-cidr-length, §5.6)."""
        ip = self.ctx.ip
        bits = mech.cidr4 if ip.version == 4 else mech.cidr6
        network = ipaddress.ip_network((ip, bits), strict=False)
        return any(a.version == ip.version and a in network for a in addrs)

    def explanation(self, pieces, domain: str) -> Evaluation:
        """RFC 7208 §6.2: the one TXT record at the expanded exp= name,
        macro-expanded as an explain-string; any error gives "" (as if no exp)."""
        try:
            name = yield from self.target(pieces, domain)
            records = yield from self.query(name, dns.TYPE_TXT, void_counts=False)
        except _Stop:
            return ""
        texts = [_txt_str(r) for r in records]
        if len(texts) != 1 or texts[0] is None:
            return ""
        try:
            parsed, _ = parse_macro_string(texts[0], exp=True)
        except SpfSyntaxError:
            return ""
        self.ctx.domain = domain
        if uses_letter(parsed, "p"):
            self.ctx.validated = yield from self.validated_name(domain)
        text = expand(parsed, self.ctx)
        if not text.isascii() or not text.isprintable():      # §6.2: US-ASCII only
            return ""
        return text[:MAX_EXPLANATION]


def _within(name: str, domain: str) -> bool:
    """``name`` is ``domain`` or below it (RFC 7208 §5.5)."""
    domain = domain.lower().rstrip(".")
    return name == domain or name.endswith("." + domain)


def _txt_str(record) -> Optional[str]:
    """A TXT record's strings joined without spaces (RFC 7208 §3.3), octet
    for character: a non-ASCII octet in an SPF record is then a syntax error
    (§3: US-ASCII), not a reason to overlook the record.  None when it is
    not TXT data."""
    if isinstance(record, tuple):
        record = b"".join(record)
    if isinstance(record, bytes):
        return record.decode("latin-1")
    return None


def dns_type(qtype: int) -> str:
    return {dns.TYPE_A: "A", dns.TYPE_AAAA: "AAAA", dns.TYPE_MX: "MX", dns.TYPE_PTR: "PTR",
            dns.TYPE_TXT: "TXT"}.get(qtype, str(qtype))


# ---------------------------------------------------------------- driving it

class SpfCheck:
    """Runs one check_host() evaluation against ``resolver`` and calls
    ``done(SpfResult)`` once.  Answers given synchronously (a fake resolver)
    are taken in a loop, not by recursion.  With a resolver that has a
    ``loop``, the evaluation is cut at MAX_SECONDS as temperror (§4.6.4)."""

    def __init__(self, evaluation: _Evaluation, gen: Evaluation, resolver, done: Callable[[SpfResult], None],
                 base: SpfResult):
        self.ev, self.gen, self.resolver, self.done = evaluation, gen, resolver, done
        self.base = base
        self.finished = False
        self._running = False
        self._pending: List[object] = []
        self.queries = 0           # DNS questions asked (tests and the CLI show it)
        self._timer = None

    def start(self) -> "SpfCheck":
        loop = getattr(self.resolver, "loop", None)
        if loop is not None and hasattr(loop, "call_later"):
            self._timer = loop.call_later(MAX_SECONDS, self._timeout)
        self._run(None)
        return self

    def _timeout(self) -> None:
        self._finish("temperror", "", "", "no result within %d s (RFC 7208 §4.6.4)" % MAX_SECONDS)

    def _answer(self, result: object) -> None:
        if self.finished:
            return
        if self._running:
            self._pending.append(result)
            return
        self._run(result)

    def _run(self, value: object) -> None:
        self._running = True
        try:
            while not self.finished:
                try:
                    name, qtype = self.gen.send(value)
                except StopIteration as stop:
                    return self._finish(*stop.value)
                except _Stop as stop:
                    return self._finish(stop.result, "", "", stop.problem)
                except Exception:       # a bug: said in the log, and the caller still gets an answer
                    log.exception("spf: evaluation of %s failed", self.base.domain)
                    return self._finish("temperror", "", "", "internal error")
                self.queries += 1
                self.resolver.resolve(name, qtype, self._answer)
                if not self._pending:
                    return              # the answer comes later, from the loop
                value = self._pending.pop(0)
        finally:
            self._running = False

    def _finish(self, result: str, mechanism: str, explanation: str, problem: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        self.gen.close()
        out = SpfResult(result, self.base.domain, explanation, mechanism, problem, self.base.identity,
                        self.base.sender, self.base.ip, self.base.helo)
        log.debug("spf %s %s ip=%s: %s %s", out.identity, out.domain, out.ip, result, problem)
        self.done(out)


def _now() -> int:
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp())


def check_host(ip: str, domain: str, sender: str, helo: str, resolver, done: Callable[[SpfResult], None],
               receiver: str = "unknown", now: Optional[int] = None, identity: str = "mailfrom") -> SpfCheck:
    """RFC 7208 §4.1 check_host(<ip>, <domain>, <sender>): ``done(SpfResult)``
    is called once, later or (with a synchronous resolver) at once.  A
    ``sender`` without local-part gets "postmaster" (§4.3); ``helo`` is for
    %{h}, ``receiver`` for %{r}, ``now`` (seconds) for %{t}."""
    local, at, sdomain = (sender or "").rpartition("@")
    if not at:
        local, sdomain = "", sender or domain
    sender = "%s@%s" % (local or "postmaster", sdomain)
    base = SpfResult("none", domain, identity=identity, sender=sender, ip=ip, helo=helo)
    try:
        addr = client_ip(ip)
    except ValueError:
        def bad() -> Evaluation:
            raise _Stop("permerror", "client address %r is not an IP address" % ip)
            yield                                           # pragma: no cover - makes it a generator
        return SpfCheck(_Evaluation(MacroContext(sender, domain, None)), bad(), resolver, done, base).start()
    ctx = MacroContext(sender, domain, addr, helo=helo or "", receiver=receiver or "unknown",
                       now=_now() if now is None else now)
    ev = _Evaluation(ctx)
    return SpfCheck(ev, ev.check_host(domain), resolver, done, base).start()


def check_helo(ip: str, helo: str, resolver, done: Callable[[SpfResult], None], **kw) -> SpfCheck:
    """RFC 7208 §2.3: the HELO identity, check_host(ip, helo, postmaster@helo).
    An address literal or a name that is not a multi-label FQDN gives "none"
    (check_host() §4.3 does so for any malformed name)."""
    name = (helo or "").strip()
    if name.startswith("["):
        name = ""                                   # an address literal: nothing to check
    return check_host(ip, name, "postmaster@" + name, helo, resolver, done, identity="helo", **kw)


def check_mail_from(ip: str, mail_from: str, helo: str, resolver, done: Callable[[SpfResult], None],
                    **kw) -> SpfCheck:
    """RFC 7208 §2.4: the MAIL FROM identity; for the null reverse-path "<>"
    the sender is postmaster@<HELO> and the domain the HELO name."""
    path = (mail_from or "").strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    if not path:
        return check_host(ip, helo, "postmaster@" + (helo or ""), helo, resolver, done, **kw)
    return check_host(ip, path.rpartition("@")[2], path, helo, resolver, done, **kw)
