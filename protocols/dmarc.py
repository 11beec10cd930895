"""DMARC (RFC 7489): the policy record, the organizational domain, SPF and
DKIM alignment, and the policy a failing message gets.

Pure: no I/O.  ``check`` takes the message's header fields, the SPF result
(protocols/spf.py ``SpfResult``) and the DKIM results (protocols/dkim.py
``DkimResult``), asks an injected resolver (``resolve(name, qtype, done)``,
as protocols/dns/resolver.py's) for ``_dmarc.`` TXT records and calls
``done(DmarcResult)`` once.  ``DmarcResult.ar_text`` is the ``dmarc=``
clause of Authentication-Results (RFC 7489 §11.1-11.2, RFC 8601 §2.7).

- Record (§6.3, §6.4): ``v=DMARC1`` first; ``p`` required; ``sp``, ``pct``,
  ``adkim``, ``aspf``; ``rua``, ``ruf``, ``fo``, ``rf``, ``ri`` (and
  DMARCbis' ``np``, ``psd``) are parsed and kept, but NO aggregate or
  failure reports are sent.  Unknown tags are ignored (§6.3); a tag given
  twice makes the record unusable (DEVIATION(RFC 7489 §6.4): not said
  there; RFC 6376 §3.2's tag-list rule, which RFC 7489 §6.4 borrows).
- Organizational domain: DEVIATION(RFC 7489 §3.2): no public-suffix list
  is shipped; the DNS tree walk of DMARCbis (draft-ietf-dmarc-dmarcbis
  part 4.10) is used instead, see ``walk_names`` and ``org_domain``.
- Author domain (§6.6.1): exactly one From field with exactly one address;
  several fields or addresses, or none, give ``permerror`` and no policy is
  applied (our reading of §6.6.1, which leaves the choice to the receiver:
  we neither reject such a message nor pick one of the domains).
- Result (RFC 7489 §11.1-11.2, RFC 8601 §2.7): ``pass`` (an aligned SPF or
  DKIM pass, §4.2), ``fail``, ``none`` (no record), ``temperror`` (a DNS
  failure, or an aligned identifier whose check failed temporarily: the
  message is not punished for our DNS), ``permerror`` (an unusable record
  or From field).
- Policy (RFC 7489 §6.6.4): ``p``, or ``sp`` for a From domain below the domain of
  the record found; ``pct`` sampled with an injectable draw; outside the
  sample the next lower policy applies (reject → quarantine → none).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Callable, Dict, Generator, List, Optional, Sequence, Tuple

from protocols.dns import codec as dns

POLICIES = ("none", "quarantine", "reject")          # RFC 7489 §6.3 p=
MAX_WALK_LABELS = 8     # draft-ietf-dmarc-dmarcbis, part 4.10.1: a name of 8 or more labels ...
WALK_JUMP_TO = 7        # ... is shortened to its 7 rightmost labels at once (at most 8 queries)
MAX_SECONDS = 20        # DEVIATION(RFC 7489): no limit given; as SPF's (RFC 7208 §4.6.4), then temperror
MAX_LABEL = 63          # RFC 1035 §2.3.4
_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")       # RFC 7489 §6.4 / RFC 6376 §3.2 tag-name
_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|\Z)")  # RFC 7489 §6.4: v=DMARC1 first
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z")   # RFC 3986 §3.1 scheme ":" ... (the rua check of §6.6.3)


class RecordError(ValueError):
    """A DMARC record that cannot be used (RFC 7489 §6.6.3 step 6)."""


@dataclass
class DmarcRecord:
    """A parsed policy record (RFC 7489 §6.3); report tags kept, unused."""
    p: str
    sp: str = ""                # "" = as p (§6.3)
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: List[str] = field(default_factory=list)
    ruf: List[str] = field(default_factory=list)
    fo: str = "0"
    rf: str = "afrf"
    ri: int = 86400
    np: str = ""                # DMARCbis: policy for non-existent subdomains (kept, not used)
    psd: str = ""               # DMARCbis, part 4.10.2: y / n / u
    defects: List[str] = field(default_factory=list)


def is_dmarc(text: str) -> bool:
    """§6.6.3 step 3: a record not starting with v=DMARC1 is discarded."""
    return bool(_VERSION.match(text))


def tag_list(text: str) -> Dict[str, str]:
    """RFC 7489 §6.4 (RFC 6376 §3.2): ``tag=value`` pairs separated by ";",
    whitespace around both ignored, an empty last one allowed."""
    tags: Dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not _TAG.match(name):
            raise RecordError("%r is not tag=value (RFC 7489 §6.4)" % part.strip()[:40])
        if name.lower() in tags:
            raise RecordError("tag %s= given twice" % name)
        tags[name.lower()] = value.strip()
    return tags


def _uris(value: str) -> List[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def parse_record(text: str) -> DmarcRecord:
    """The record of §6.3; RecordError when it cannot be used.  A missing or
    bad p= (or bad sp=) with a usable rua= reads as p=none (§6.6.3 step 6.1)."""
    if not is_dmarc(text):
        raise RecordError("not a DMARC1 record (v=DMARC1 must come first, RFC 7489 §6.4)")
    tags = tag_list(text)
    rec = DmarcRecord(p="none", rua=_uris(tags.get("rua", "")), ruf=_uris(tags.get("ruf", "")))
    p, sp = tags.get("p", "").lower(), tags.get("sp", "").lower()
    if p not in POLICIES or (sp and sp not in POLICIES):
        what = ("p=%s" % p) if p else "no p="
        if sp and sp not in POLICIES:
            what = "sp=%s" % sp
        if not any(_URI.match(u) for u in rec.rua):
            raise RecordError("%s (RFC 7489 §6.3: p= is required, none/quarantine/reject)" % what)
        rec.defects.append("%s: read as p=none (RFC 7489 §6.6.3)" % what)
        return rec
    rec.p, rec.sp = p, sp
    for name in ("adkim", "aspf"):
        value = tags.get(name, "r").lower()
        if value in ("r", "s"):
            setattr(rec, name, value)
        else:
            rec.defects.append("%s=%s ignored (r or s, RFC 7489 §6.3)" % (name, value))
    rec.pct = _number(tags, "pct", 100, 0, 100, rec.defects)
    rec.ri = _number(tags, "ri", 86400, 0, 2 ** 32 - 1, rec.defects)
    rec.fo, rec.rf = tags.get("fo", "0"), tags.get("rf", "afrf")
    rec.np = tags.get("np", "").lower() if tags.get("np", "").lower() in POLICIES else ""
    rec.psd = tags.get("psd", "").lower()
    return rec


def _number(tags: Dict[str, str], name: str, default: int, low: int, high: int, defects: List[str]) -> int:
    """An integer tag in [low, high]; a bad one is ignored (recorded as a defect)."""
    value = tags.get(name)
    if value is None:
        return default
    if value.isdigit() and low <= int(value) <= high:
        return int(value)
    defects.append("%s=%s ignored (RFC 7489 §6.3)" % (name, value[:20]))
    return default


# --------------------------------------------------------- the author domain

def _normal_domain(name: str) -> Optional[str]:
    """A domain as A-labels, lower-case, without the root dot; None if unusable."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if not name or len(name) > 253 or any(not 0 < len(x) <= MAX_LABEL for x in labels):
        return None
    return name


def author_domain(fields: Sequence[Tuple[bytes, bytes]]) -> Tuple[Optional[str], str]:
    """(the RFC 5322 From domain, "") or (None, why) (RFC 7489 §6.6.1):
    exactly one From field holding exactly one address."""
    froms = [raw for name, raw in fields if name == b"from"]
    if len(froms) != 1:
        return None, "%d From fields (RFC 7489 §6.6.1)" % len(froms)
    value = froms[0].partition(b":")[2].decode("utf-8", "replace").replace("\r\n", "")
    addrs = [a for _n, a in getaddresses([value]) if a]
    if len(addrs) != 1:
        return None, "%d addresses in From (RFC 7489 §6.6.1)" % len(addrs)
    local, at, domain = addrs[0].rpartition("@")
    name = _normal_domain(domain) if at and local else None
    if name is None:
        return None, "From address without a usable domain (RFC 7489 §6.6.1)"
    return name, ""


# ------------------------------------------- the DNS tree walk (DMARCbis)

def walk_names(domain: str) -> List[str]:
    """The names whose ``_dmarc.`` records the tree walk reads, in order
    (draft-ietf-dmarc-dmarcbis, part 4.10.1): the domain itself; then, for a name
    of MAX_WALK_LABELS labels or more, its WALK_JUMP_TO rightmost labels;
    then one label less each time, down to the top-level name."""
    labels = domain.split(".")
    names = [domain]
    for k in range(min(len(labels) - 1, WALK_JUMP_TO), 0, -1):
        names.append(".".join(labels[-k:]))
    return names


@dataclass
class Found:
    """What ``_dmarc.<name>`` held: a record, nothing, an unusable record, or a DNS failure."""
    name: str
    record: Optional[DmarcRecord] = None
    problem: str = ""           # unusable record(s)
    temporary: bool = False
    text: str = ""              # the record as published


def org_domain(domain: str, found: Sequence[Found]) -> str:
    """The organizational domain from a tree walk (draft-ietf-dmarc-dmarcbis
    part 4.10.2): the first record with psd=n names itself, with psd=y the name
    one label below it; else the name of fewest labels with a record; with
    no record at all, the domain itself."""
    labels = domain.split(".")
    best = None
    for item in found:
        if item.record is None:
            continue
        if item.record.psd == "n":
            return item.name
        if item.record.psd == "y":
            n = len(item.name.split("."))
            return ".".join(labels[-(n + 1):]) if n < len(labels) else domain
        best = item.name
    return best or domain


def _answer_found(name: str, answer) -> Found:
    """One ``_dmarc.`` answer read per RFC 7489 §6.6.3 steps 3-4."""
    kind = getattr(answer, "kind", None)
    if kind == "temporary":
        return Found(name, problem="lookup of _dmarc.%s: %s" % (name, answer.message), temporary=True)
    if kind is not None:
        return Found(name)                          # NXDOMAIN / no TXT: no record
    texts = []
    for rec in answer.records:
        if isinstance(rec, tuple):
            rec = b"".join(rec)
        if isinstance(rec, bytes):
            texts.append(rec.decode("latin-1"))
    texts = [t for t in texts if is_dmarc(t)]
    if not texts:
        return Found(name)
    if len(texts) > 1:
        return Found(name, problem="%d DMARC records at _dmarc.%s (RFC 7489 §6.6.3)" % (len(texts), name))
    try:
        return Found(name, record=parse_record(texts[0]), text=texts[0])
    except RecordError as e:
        return Found(name, problem="_dmarc.%s: %s" % (name, e), text=texts[0])


Query = str                     # a name whose TXT records are wanted
Evaluation = Generator[Query, object, object]


def _walk(domain: str, cache: Dict[str, Found]) -> Evaluation:
    """Every name of the walk asked (once per evaluation, ``cache``)."""
    out = []
    for name in walk_names(domain):
        if name not in cache:
            answer = yield "_dmarc." + name
            cache[name] = _answer_found(name, answer)
        out.append(cache[name])
    return out


# ------------------------------------------------------------- the result

@dataclass
class DmarcResult:
    """The verdict (RFC 7489 §11.2 / RFC 8601 §2.7) and the policy to apply."""
    result: str
    from_domain: str = ""
    policy: str = ""            # the published policy that applies (p or sp), "" without a record
    disposition: str = "none"   # what to do: none / quarantine / reject (after pct, RFC 7489 §6.6.4)
    record_domain: str = ""     # where the record was found
    org_domain: str = ""
    problem: str = ""
    record: Optional[DmarcRecord] = None

    def ar_text(self) -> str:
        """``dmarc=fail (p=reject dis=reject) header.from=example.org``."""
        out = "dmarc=%s" % self.result
        if self.policy:
            out += " (p=%s dis=%s)" % (self.policy, self.disposition)
        elif self.problem:
            out += " (%s)" % re.sub(r"[^ -~]|[()\\]", "?", self.problem)[:200]
        if self.from_domain:
            out += " header.from=%s" % self.from_domain
        return out


def _aligned(ident: str, author: str, author_org: str, mode: str, cache: Dict[str, Found]) -> Evaluation:
    """RFC 7489 §3.1: strict = the same name; relaxed = the same
    organizational domain (which must then be a common suffix)."""
    ident = (_normal_domain(ident or "") or "")
    if not ident:
        return False
    if ident == author:
        return True
    if mode == "s" or not (ident == author_org or ident.endswith("." + author_org)):
        return False
    other = yield from _walk(ident, cache)
    return org_domain(ident, other) == author_org


def _policy(rec: DmarcRecord, record_domain: str, author: str, draw: int) -> Tuple[str, str]:
    """(published, disposition): sp for a subdomain of the record's domain
    (§6.3), then pct (§6.6.4): outside the sample the next lower policy."""
    published = rec.p if record_domain == author else (rec.sp or rec.p)
    disposition = published
    if draw >= rec.pct:
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(published, "none")
    return published, disposition


def evaluate(fields, spf, dkim_results, draw: int) -> Evaluation:
    """The whole check as a generator of ``_dmarc.`` names (RFC 7489 §6.6)."""
    author, why = author_domain(fields)
    if author is None:
        return DmarcResult("permerror", problem=why)
    cache: Dict[str, Found] = {}
    found = yield from _walk(author, cache)
    first = found[0]
    if first.temporary:
        return DmarcResult("temperror", author, problem=first.problem)
    at = next((f for f in found if f.record is not None or f.problem), None)
    if at is None:
        return DmarcResult("none", author, problem="no DMARC record")
    if at.temporary:
        return DmarcResult("temperror", author, problem=at.problem)
    if at.record is None:
        return DmarcResult("permerror", author, problem=at.problem)
    rec, org = at.record, org_domain(author, found)
    identifiers = []                    # (domain, result, mode): SPF's (§3.1.2), each DKIM d= (§3.1.1)
    if spf is not None:
        identifiers.append((spf.domain, spf.result, rec.aspf))
    identifiers += [(r.domain, r.result, rec.adkim) for r in dkim_results or () if r.domain]
    temporary = False
    for domain, result, mode in identifiers:
        if result not in ("pass", "temperror"):
            continue
        aligned = yield from _aligned(domain, author, org, mode, cache)
        if aligned and result == "pass":
            return DmarcResult("pass", author, rec.p if at.name == author else (rec.sp or rec.p),
                               "none", at.name, org, record=rec)
        temporary = temporary or aligned
    if temporary:
        return DmarcResult("temperror", author, problem="an aligned check failed temporarily")
    published, disposition = _policy(rec, at.name, author, draw)
    return DmarcResult("fail", author, published, disposition, at.name, org, record=rec)


class DmarcCheck:
    """Runs ``evaluate`` against ``resolver``; ``done(DmarcResult)`` once,
    temperror after MAX_SECONDS (when the resolver has a loop)."""

    def __init__(self, gen: Evaluation, resolver, done: Callable[[DmarcResult], None]):
        self.gen, self.resolver, self.done = gen, resolver, done
        self.finished = False
        self.asked = 0
        self._timer = None

    def start(self) -> "DmarcCheck":
        loop = getattr(self.resolver, "loop", None)
        if loop is not None and hasattr(loop, "call_later"):
            self._timer = loop.call_later(MAX_SECONDS, self._timeout)
        self._run(None)
        return self

    def _run(self, value: object) -> None:
        try:
            name = self.gen.send(value)
        except StopIteration as stop:
            self._finish(stop.value)
            return
        self.asked += 1
        asked = self.asked
        self.resolver.resolve(name, dns.TYPE_TXT, lambda answer: self._answer(asked, answer))

    def _answer(self, asked: int, answer) -> None:
        if not self.finished and asked == self.asked:
            self._run(answer)

    def _timeout(self) -> None:
        self._timer = None
        if not self.finished:
            self._finish(DmarcResult("temperror", problem="no answer within %d s" % MAX_SECONDS))

    def _finish(self, result: DmarcResult) -> None:
        if self.finished:
            return
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        self.done(result)


def check(fields, spf, dkim_results, resolver, done: Callable[[DmarcResult], None],
          draw: Optional[Callable[[], int]] = None) -> DmarcCheck:
    """DMARC for a message's header ``fields`` (protocols/dkim_canon.py
    ``split_message``); ``draw()`` gives 0..99 for pct (default: random)."""
    value = (draw or (lambda: random.randrange(100)))()
    return DmarcCheck(evaluate(fields, spf, dkim_results, value), resolver, done).start()


# ------------------------------------------------ `mailsrv.py dns DMARC`

def discover(domain: str) -> Evaluation:
    """The tree walk for ``domain`` (a list of Found; [] for a bad name)."""
    name = _normal_domain(domain)
    if name is None:
        return []
    found = yield from _walk(name, {})
    return found


def describe(domain: str, found) -> Tuple[List[str], bool]:
    """The lines `dns DMARC DOMAIN` prints: each name asked, the policy record
    that applies and where (RFC 7489 §6.6.3), the organizational domain."""
    if not isinstance(found, list):         # the walk timed out (a DmarcResult)
        return ["%s DMARC: %s" % (domain, getattr(found, "problem", "no answer"))], False
    if not found:
        return ["%s DMARC: not a usable domain name" % domain], False
    name = found[0].name
    lines = []
    for item in found:
        what = item.problem or (item.text if item.record is not None else "no DMARC record")
        lines.append("_dmarc.%s: %s" % (item.name, what))
    at = next((f for f in found if f.record is not None or f.problem), None)
    if at is None or at.record is None:
        lines.append("policy for %s: none found" % name if at is None else "policy for %s: unusable" % name)
    else:
        rec = at.record
        applied = rec.p if at.name == name else (rec.sp or rec.p)
        lines.append("policy for %s: %s (record at _dmarc.%s, %s=; pct=%d adkim=%s aspf=%s)"
                     % (name, applied, at.name, "p" if at.name == name or not rec.sp else "sp",
                        rec.pct, rec.adkim, rec.aspf))
        lines += ["note: %s" % d for d in rec.defects]
    lines.append("organizational domain: %s (DNS tree walk, draft-ietf-dmarc-dmarcbis, part 4.10)"
                 % org_domain(name, found))
    return lines, at is not None and at.record is not None
