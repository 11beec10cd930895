"""Recording an SPF result: the Received-SPF header field (RFC 7208 §9.1)
and the ``spf=`` clause of Authentication-Results (RFC 8601 §2.7.2; see
also RFC 7208 §9.2).

Every value that came from the SMTP client or from DNS (sender, HELO name,
problem text) is reduced to printable US-ASCII and quoted, so the field can
carry no line break or other injected header (RFC 7208 §9.1: "does not
contain malicious data"); the field is folded to stay near 78 characters
(RFC 5322 §2.1.1).
"""

from __future__ import annotations

import re
from typing import List

from protocols.spf import SpfResult

LINE_GOAL = 78          # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters
MAX_VALUE = 200         # our bound on one copied value (problem texts, addresses)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")  # RFC 5322 §3.2.3
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z")


def _clean(text: str) -> str:
    """Printable US-ASCII only, bounded: anything else becomes "?"."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return text[:MAX_VALUE]


def _quoted(text: str) -> str:
    """An RFC 5322 §3.2.4 quoted-string."""
    return '"%s"' % _clean(text).replace("\\", "\\\\").replace('"', '\\"')


def _value(text: str) -> str:
    """dot-atom when it is one, else quoted-string (RFC 7208 §9.1 key-value-pair)."""
    text = _clean(text)
    return text if _DOT_ATOM.match(text) else _quoted(text)


def _comment(text: str) -> str:
    """An RFC 5322 §3.2.2 comment: parentheses and backslashes escaped."""
    return "(%s)" % re.sub(r"([()\\])", r"\\\1", _clean(text))


def _who(res: SpfResult) -> str:
    return res.sender if res.identity == "mailfrom" else (res.helo or res.domain)


def explain(res: SpfResult, receiver: str) -> str:
    """The comment after the result (RFC 7208 §9.1 SHOULD: <ip>, <sender>, <domain>)."""
    who, ip = _who(res), res.ip
    text = {
        "pass": "domain of %s designates %s as permitted sender" % (who, ip),
        "fail": "domain of %s does not designate %s as permitted sender" % (who, ip),
        "softfail": "domain of transitioning %s does not designate %s as permitted sender" % (who, ip),
        "neutral": "%s is neither permitted nor denied by domain of %s" % (ip, who),
        "none": "domain of %s does not designate permitted sender hosts" % (who,),
        "temperror": "error in processing during lookup of %s" % (who,),
        "permerror": "domain of %s has an unusable SPF record" % (who,),
    }[res.result]
    return "%s: %s" % (receiver, text)


def received_spf(res: SpfResult, receiver: str) -> bytes:
    """The whole "Received-SPF:" field, folded, ending in CRLF (RFC 7208 §9.1):
    result, comment, then receiver, client-ip, envelope-from, helo, identity,
    mechanism and (for errors) problem."""
    pairs = [("receiver", _value(receiver)), ("client-ip", _value(res.ip))]
    if res.identity == "mailfrom":
        pairs.append(("envelope-from", _quoted(res.sender)))
    if res.helo:
        pairs.append(("helo", _value(res.helo)))
    pairs.append(("identity", res.identity))
    if res.mechanism:
        pairs.append(("mechanism", _value(res.mechanism)))
    if res.problem and res.result in ("temperror", "permerror"):
        pairs.append(("problem", _quoted(res.problem)))
    words = [res.result] + _comment(explain(res, receiver)).split(" ")
    words += ["%s=%s;" % kv for kv in pairs]
    return _fold("Received-SPF:", words)


def _fold(name: str, words: List[str]) -> bytes:
    """Join words with SP, breaking before a word that would pass LINE_GOAL
    (folding whitespace, RFC 5322 §2.2.3)."""
    lines, cur = [], name
    for word in words:
        if len(cur) + 1 + len(word) > LINE_GOAL and cur.strip():
            lines.append(cur)
            cur = "\t" + word
        else:
            cur += " " + word
    lines.append(cur)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _pvalue(text: str) -> str:
    """RFC 8601 §2.2 pvalue: [[local-part] "@"] domain-name, else a quoted value."""
    text = _clean(text)
    local, at, domain = text.rpartition("@")
    if _DOMAIN.match(domain) and (not at or not local or _DOT_ATOM.match(local)):
        return text
    return _quoted(text)


def authres_clause(res: SpfResult) -> str:
    """``spf=<result> smtp.mailfrom=<sender>`` or ``smtp.helo=<name>``
    (RFC 8601 §2.7.2; for the null reverse-path the sender is
    postmaster@<HELO>, RFC 7208 §2.4)."""
    prop = ("smtp.mailfrom=" + _pvalue(res.sender)) if res.identity == "mailfrom" \
        else ("smtp.helo=" + _pvalue(res.helo or res.domain))
    return "spf=%s %s" % (res.result, prop)
