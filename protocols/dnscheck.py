"""`mailsrv.py dns check DOMAIN [--ip ADDR ...]`: the records a domain served by
this server should publish, what DNS has now, and what differs (issue 13,
"Operator help"; mox's DNS page on the command line).

Pure: ``queries`` / ``ptr_queries`` say what to ask, the driver
(protocols/commands.py ``dns_check_main``) asks our resolver, and ``report``
turns the answers (``(name, TYPE) -> Answer | DnsError``) into lines and
whether every required record is right.  Checked, one line each:

  * MX of the domain names our hostname (RFC 5321 §5.1);
  * A / AAAA of the hostname: the given addresses (or those of ``listen``
    that are public), else any address (RFC 5321 §5.1);
  * SPF: exactly one ``v=spf1`` TXT record (RFC 7208 §4.5: two are a
    permerror) that lets our addresses send (``mx``, ``a``, ``ip4:``/``ip6:``);
  * DKIM: per key in DATA/dkim/DOMAIN/, the TXT record at
    ``<selector>._domainkey.DOMAIN`` with our public key (RFC 6376 §3.6.1,
    §3.6.2.2);
  * DMARC: one usable ``_dmarc.DOMAIN`` record (RFC 7489 §6.1, §6.6.3);
  * MTA-STS ``_mta-sts.DOMAIN`` (RFC 8461 §3.1) and TLS-RPT
    ``_smtp._tls.DOMAIN`` (RFC 8460 §3): optional, never fail the check;
    with ``mta_sts_mode`` set, the policy at
    ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` as fetched now
    (the driver fetches it) against the one we serve (RFC 8461 §3.2);
  * PTR of each address names the hostname (forward-confirmed reverse DNS,
    RFC 8601 §3 "iprev" / common receiver practice).

Status per line: ok / missing / differs / optional-missing / error (a DNS
failure, in DNS terms naming the server); each missing or different record
is followed by the zone-file line to publish.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Dict, List, Optional, Sequence, Tuple

from protocols import dkim, dmarc
from protocols.crypto import keys
from protocols.dkim_command import txt_record
from protocols.dns.resolver import Answer, DnsError
from protocols.outbound import mtasts
from protocols.spf_record import SpfSyntaxError, is_spf_record, parse_record

Answers = Dict[Tuple[str, str], object]      # (lower-case name, "MX"/"A"/...) -> Answer | DnsError
Line = Tuple[str, str, str, str, bool]       # status, what, found, publish, required
TXT_STRING_MAX = 255                         # RFC 1035 §3.3.14: a <character-string> is at most 255 octets
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")  # RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT)


def _name(text: str) -> str:
    return text.lower().rstrip(".")


def dkim_keys(keyfiles: Sequence[object]) -> List[Tuple[str, str, str, str]]:
    """(selector, k=, p= base64, the zone-file line of `dkim keygen`) for each
    key file (RFC 6376 §3.6.1; RFC 8463 §4: Ed25519's p= is the raw key).  A
    file that is not a key gives p="" (never matches) and says so."""
    out = []
    for kf in keyfiles:
        try:
            key = keys.load_private_key(kf.pem)
        except keys.KeyFileError as e:
            out.append((kf.selector, kf.key_type, "", "(DKIM key %s: %s)" % (kf.path, e)))
            continue
        kind = "ed25519" if dkim.key_algorithm(key) == dkim.ED25519_SHA256 else "rsa"
        public = key.public.raw if kind == "ed25519" else key.public.spki()
        out.append((kf.selector, kind, base64.b64encode(public).decode(), txt_record(kf.selector, kf.domain, key)))
    return out


def server_ips(given: Sequence[str], listen: Sequence[str]) -> List[str]:
    """--ip, else the public addresses of ``listen`` (loopback, wildcard and
    private ones say nothing about what the world reaches)."""
    if given:
        return [str(ipaddress.ip_address(a.strip("[]"))) for a in given]
    return [a for a in listen if ipaddress.ip_address(a).is_global]


def queries(domain: str, hostname: str, selectors: Sequence[str]) -> List[Tuple[str, str]]:
    """The first round of questions (PTRs come after the addresses are known)."""
    out = [(domain, "MX"), (hostname, "A"), (hostname, "AAAA"), (domain, "TXT"), ("_dmarc." + domain, "TXT"),
           ("_mta-sts." + domain, "TXT"), ("_smtp._tls." + domain, "TXT")]
    out += [("%s._domainkey.%s" % (s, domain), "TXT") for s in selectors]
    return [(_name(n), t) for n, t in out]


def ptr_queries(ips: Sequence[str]) -> List[Tuple[str, str]]:
    return [(ipaddress.ip_address(ip).reverse_pointer, "PTR") for ip in ips]   # RFC 1035 §3.5, RFC 3596 §2.5


def addresses(hostname: str, answers: Answers) -> List[str]:
    """What the hostname resolves to (A first, then AAAA)."""
    out: List[str] = []
    for qtype in ("A", "AAAA"):
        ans = answers.get((_name(hostname), qtype))
        if isinstance(ans, Answer):
            out += [str(r) for r in ans.records]
    return out


def _txts(ans) -> List[str]:
    """RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a TXT record's strings are joined with nothing between."""
    return [b"".join(rec).decode("utf-8", "replace") for rec in ans.records]


def _zone_txt(owner: str, text: str) -> str:
    strings = [text[i:i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    body = " ".join('"%s"' % s for s in strings)
    return "%s. IN TXT %s" % (owner, body if len(strings) == 1 else "( %s )" % body)


def _lookup(answers: Answers, name: str, qtype: str):
    """(records or None when absent, error line or None)."""
    ans = answers.get((_name(name), qtype))
    if isinstance(ans, Answer):
        return ans, None
    if ans is None or (isinstance(ans, DnsError) and ans.kind == "temporary"):
        return None, "%s %s: %s" % (name, qtype, ans.message if ans is not None else "no answer")
    return None, None


def _check_mx(domain: str, hostname: str, answers: Answers) -> Line:
    want = "%s. IN MX 10 %s." % (domain, hostname)
    what = "MX %s (RFC 5321 §5.1)" % domain
    ans, err = _lookup(answers, domain, "MX")
    if err:
        return ("error", what, err, want, True)
    if ans is None:
        return ("missing", what, "no MX records", want, True)
    found = ", ".join("%d %s" % (r.preference, r.exchange or ".") for r in sorted(ans.records))
    hosts = {_name(r.exchange) for r in ans.records}
    return ("ok" if _name(hostname) in hosts else "differs", what, found, want, True)


def _check_addresses(hostname: str, ips: Sequence[str], answers: Answers) -> List[Line]:
    """A and AAAA of the hostname: exactly our addresses of that family;
    with none known, any address will do."""
    lines: List[Line] = []
    for qtype, version in (("A", 4), ("AAAA", 6)):
        what = "%s %s (RFC 5321 §5.1)" % (qtype, hostname)
        want_ips = sorted(ip for ip in ips if ipaddress.ip_address(ip).version == version)
        publish = "\n".join("%s. IN %s %s" % (hostname, qtype, ip) for ip in want_ips)
        ans, err = _lookup(answers, hostname, qtype)
        have = sorted(str(r) for r in ans.records) if ans else []
        if err:
            lines.append(("error", what, err, publish, True))
        elif want_ips:
            status = "missing" if not have else "ok" if have == want_ips else "differs"
            lines.append((status, what, " ".join(have) or "no %s records" % qtype, publish, True))
        elif have and not ips:
            lines.append(("ok", what, " ".join(have), "", True))
    if not ips and not lines:
        lines.append(("missing", "A %s (RFC 5321 §5.1)" % hostname, "no A or AAAA records",
                      "%s. IN A <this server's address>" % hostname, True))
    return lines


def _spf_allows(text: str, ips: Sequence[str]) -> Tuple[bool, str]:
    """Whether the record plainly lets our addresses send: a pass ``mx`` or
    ``a`` (the MX / A lines check those names), or ip4:/ip6: covering every
    address; include:/redirect= are not followed (said so)."""
    try:
        rec = parse_record(text)
    except SpfSyntaxError as e:
        return False, "permerror: %s" % e
    passing = [m for m in rec.mechanisms if m.qualifier in ("", "+")]
    if any(m.name in ("mx", "a") and not m.domain for m in passing):
        return True, ""
    nets = [m.network for m in passing if m.network is not None]
    if ips and all(any(ipaddress.ip_address(ip) in n for n in nets if n.version == ipaddress.ip_address(ip).version)
                   for ip in ips):
        return True, ""
    if rec.redirect or any(m.name in ("include", "exists") for m in passing):
        return True, "include/redirect not followed"
    return False, "neither mx nor our addresses"


def _check_spf(domain: str, ips: Sequence[str], answers: Answers) -> Line:
    want = _zone_txt(domain, "v=spf1 mx -all")
    what = "SPF %s (RFC 7208 §4.5)" % domain
    ans, err = _lookup(answers, domain, "TXT")
    if err:
        return ("error", what, err, want, True)
    spf = [t for t in (_txts(ans) if ans else []) if is_spf_record(t)]
    if not spf:
        return ("missing", what, "no v=spf1 record", want, True)
    if len(spf) > 1:
        return ("differs", what, "%d v=spf1 records: permerror (RFC 7208 §4.5): %s"
                % (len(spf), " | ".join(spf)), want, True)
    ok, note = _spf_allows(spf[0], ips)
    return ("ok" if ok else "differs", what, spf[0] + ("  (%s)" % note if note else ""), want, True)


def _check_dkim(domain: str, held: Sequence[Tuple[str, str, str, str]], answers: Answers) -> List[Line]:
    if not held:
        return [("missing", "DKIM %s (RFC 6376 §3.6.2.2)" % domain, "no key in DATA/dkim/%s/" % domain,
                 "(run: mailsrv.py dkim keygen %s, then publish the record it prints)" % domain, True)]
    lines: List[Line] = []
    for selector, kind, p, want in held:
        owner = "%s._domainkey.%s" % (selector, domain)
        what = "DKIM %s (RFC 6376 §3.6.2.2)" % owner
        ans, err = _lookup(answers, owner, "TXT")
        if err:
            lines.append(("error", what, err, want, True))
            continue
        found = _txts(ans) if ans else []
        if not found:
            lines.append(("missing", what, "no TXT record", want, True))
            continue
        status = "differs"
        if len(found) == 1:
            try:
                tags = dmarc.tag_list(found[0])      # RFC 6376 §3.2 tag-list, as DMARC's
            except dmarc.RecordError:
                tags = {}
            p_dns = re.sub(r"\s+", "", tags.get("p", ""))
            if tags.get("v", "DKIM1") == "DKIM1" and tags.get("k", "rsa").lower() == kind and p and p_dns == p:
                status = "ok"
        shown = " | ".join(t if len(t) <= 80 else t[:77] + "..." for t in found)
        lines.append((status, what, shown, want, True))
    return lines


def _check_dmarc(domain: str, answers: Answers) -> Line:
    owner = "_dmarc." + domain
    want = _zone_txt(owner, "v=DMARC1; p=quarantine; rua=mailto:postmaster@%s" % domain)
    what = "DMARC %s (RFC 7489 §6.1)" % owner
    ans, err = _lookup(answers, owner, "TXT")
    if err:
        return ("error", what, err, want, True)
    recs = [t for t in (_txts(ans) if ans else []) if dmarc.is_dmarc(t)]
    if not recs:
        return ("missing", what, "no v=DMARC1 record", want, True)
    if len(recs) > 1:       # RFC 7489 §6.6.3 step 5: more than one record: none applies
        return ("differs", what, "%d v=DMARC1 records: none applies (RFC 7489 §6.6.3)" % len(recs), want, True)
    try:
        dmarc.parse_record(recs[0])
    except dmarc.RecordError as e:
        return ("differs", what, "%s: %s" % (recs[0], e), want, True)
    return ("ok", what, recs[0], want, True)


def _check_optional(owner: str, what: str, version: str, valid, want: str, answers: Answers) -> Line:
    """MTA-STS / TLS-RPT: one record starting with ``version``; absent is fine."""
    ans, err = _lookup(answers, owner, "TXT")
    if err:
        return ("error", what, err, want, False)
    recs = [t for t in (_txts(ans) if ans else []) if t.replace(" ", "").startswith(version + ";")
            or t.strip() == version]
    if not recs:
        return ("optional-missing", what, "no %s record" % version, want, False)
    if len(recs) > 1:
        return ("differs", what, "%d %s records: ignored by senders" % (len(recs), version), want, False)
    problem = valid(recs[0])
    return ("differs" if problem else "ok", what, recs[0] + ("  (%s)" % problem if problem else ""), want, False)


def _sts_problem(text: str) -> str:
    tags = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in text.split(";") if p.strip())}
    return "" if _STS_ID.match(tags.get("id", "")) else "id= must be 1 to 32 letters and digits (RFC 8461 §3.1)"


def _tlsrpt_problem(text: str) -> str:
    tags = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in text.split(";") if p.strip())}
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if uris and all(u.startswith(("mailto:", "https:")) for u in uris):
        return ""
    return "rua= must be mailto: or https: URIs (RFC 8460 §3)"


def _check_sts_policy(domain: str, served: Optional[bytes], live) -> Line:
    """The live policy (bytes as fetched, or a one-line error) against ``served``
    (ours, or None when mta_sts_mode is none); RFC 8461 §3.2, §3.3."""
    url = mtasts.policy_url(domain)
    what = "MTA-STS policy %s (RFC 8461 §3.2, optional)" % url
    publish = ""
    if served is not None:
        publish = ("%s reaching mailsrv's https_port (README \"MTA-STS and TLS-RPT\"), with a certificate for "
                   "mta-sts.%s; it serves:\n%s" % (url, domain, served.decode("ascii").replace("\r\n", "\n").strip()))
    if isinstance(live, str):
        return ("missing" if served is not None else "error", what, live, publish, False)
    try:
        policy = mtasts.parse_policy(live)
    except mtasts.PolicyError as e:
        return ("differs", what, "invalid: %s" % e, publish, False)
    found = "mode %s, mx %s, max_age %d" % (policy.mode, ", ".join(policy.mx) or "-", policy.max_age)
    if served is None:
        return ("ok", what, found, "", False)
    same, why = mtasts.same_policy(policy, mtasts.parse_policy(served))
    return ("ok" if same else "differs", what, found + ("  (%s)" % why if why else ""), publish, False)


def served_policy(cfg) -> Optional[bytes]:
    """The policy mailsrv serves (protocols/http/service.py), or None (mta_sts_mode = none)."""
    if getattr(cfg, "mta_sts_mode", "none") == "none":
        return None
    return mtasts.policy_text(cfg.mta_sts_mode, list(cfg.mta_sts_mx) or [cfg.hostname.lower()], cfg.mta_sts_max_age)


def fetch_policy(domain: str, cafile: Optional[str] = None, connect_to=None):
    """The live policy as RFC 8461 §3.3 fetches it (blocking: the CLI, or a worker):
    its octets, or one line saying why there is none."""
    from protocols import loop_https
    url = mtasts.policy_url(domain)
    try:
        reply = loop_https.request(url, cafile=cafile, timeout=60.0, max_body=mtasts.MAX_POLICY_BYTES,
                                   connect_to=connect_to)
    except loop_https.HttpsError as e:
        return str(e)
    if reply.status != 200:
        return "%s: HTTP status %d (RFC 8461 §3.3: only 200, no redirects)" % (url, reply.status)
    if not mtasts.media_type_ok(reply.headers.get("content-type")):
        return "%s: media type %r, not text/plain (RFC 8461 §3.2)" % (url, reply.headers.get("content-type", ""))
    return reply.body


def sts_id_for(served: Optional[bytes], fallback: str) -> str:
    """An id= that changes exactly when our policy does (RFC 8461 §3.1: 1*32 ALPHA/DIGIT)."""
    import hashlib
    return hashlib.sha256(served).hexdigest()[:16] if served is not None else fallback


def _check_ptr(hostname: str, ips: Sequence[str], answers: Answers) -> List[Line]:
    lines: List[Line] = []
    for ip in ips:
        owner = ipaddress.ip_address(ip).reverse_pointer
        want = "%s. IN PTR %s.  (set by whoever holds %s: your hosting provider)" % (owner, hostname, ip)
        what = "PTR %s (RFC 8601 §3 iprev)" % ip
        ans, err = _lookup(answers, owner, "PTR")
        if err:
            lines.append(("error", what, err, want, True))
        elif ans is None:
            lines.append(("missing", what, "no PTR record", want, True))
        else:
            names = [str(r) for r in ans.records]
            ok = _name(hostname) in {_name(n) for n in names}
            lines.append(("ok" if ok else "differs", what, " ".join(names), want, True))
    return lines


def checks(domain: str, hostname: str, ips: Sequence[str], held: Sequence[Tuple[str, str, str, str]],
           answers: Answers, sts_id: str, seen: Optional[Sequence[str]] = None, sts=None) -> List[Line]:
    """Every check, in the order of mox's DNS page.  ``ips``: the addresses
    the hostname must have ([]: any); ``seen``: those SPF and PTR are checked
    for (default ``ips``; the driver gives what the hostname resolves to);
    ``sts``: (our policy or None, the live one: bytes, an error line, or None
    when not fetched)."""
    served, live = sts if sts is not None else (None, None)
    domain, hostname = _name(domain), _name(hostname)
    seen = ips if seen is None else seen
    out = [_check_mx(domain, hostname, answers)]
    out += _check_addresses(hostname, ips, answers)
    out.append(_check_spf(domain, seen, answers))
    out += _check_dkim(domain, held, answers)
    out.append(_check_dmarc(domain, answers))
    out.append(_check_optional("_mta-sts." + domain, "MTA-STS _mta-sts.%s (RFC 8461 §3.1, optional)" % domain,
                               "v=STSv1", _sts_problem, _zone_txt("_mta-sts." + domain, "v=STSv1; id=%s" % sts_id)
                               + ("  (after the policy below is reachable; a new id= whenever it changes, RFC 8461 §3.1)"
                                  if served is not None else "  (only with a policy at https://mta-sts.%s/.well-known/"
                                  "mta-sts.txt, RFC 8461 §3.2: set mta_sts_mode to serve one)" % domain), answers))
    if served is not None or live is not None:
        out.append(_check_sts_policy(domain, served, live))
    out.append(_check_optional("_smtp._tls." + domain, "TLS-RPT _smtp._tls.%s (RFC 8460 §3, optional)" % domain,
                               "v=TLSRPTv1", _tlsrpt_problem,
                               _zone_txt("_smtp._tls." + domain, "v=TLSRPTv1; rua=mailto:postmaster@%s" % domain),
                               answers))
    out += _check_ptr(hostname, seen, answers)
    return out


def report(domain: str, hostname: str, ips: Sequence[str], held: Sequence[Tuple[str, str, str, str]],
           answers: Answers, sts_id: str = "1", seen: Optional[Sequence[str]] = None,
           sts=None) -> Tuple[List[str], bool]:
    """The lines to print and whether every required record is ok."""
    lines: List[str] = []
    bad = 0
    for status, what, found, publish, required in checks(domain, hostname, ips, held, answers, sts_id, seen, sts):
        lines.append("%-16s %s: %s" % (status, what, found))
        if status not in ("ok", "error") and publish:
            lines += ["%-16s publish: %s" % ("", p) for p in publish.split("\n")]
        bad += required and status != "ok"
    lines.append("all required records are ok" if not bad else "%d required record(s) not ok" % bad)
    return lines, not bad
