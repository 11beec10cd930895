"""SPF record syntax: record selection and term parsing (RFC 7208 §4.5, §4.6, §5, §6, §12).

``parse_record`` checks a whole record before anything is evaluated (RFC
7208 §4.6: a syntax error anywhere is "permerror") and returns its
mechanisms in order with the ``redirect`` and ``exp`` modifiers.  Domain-specs
are kept parsed (protocols/spf_macro.py) for expansion at evaluation time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import List, Optional

from protocols.spf_macro import Piece, SpfSyntaxError, parse_domain_spec, parse_macro_string

VERSION = "v=spf1"                 # RFC 7208 §4.5
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}   # RFC 7208 §4.6.2
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")   # RFC 7208 §4.6.1
DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})        # RFC 7208 §4.6.4
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.S)           # RFC 7208 §4.6.1 name "="
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)\Z", re.S)
# a / mx: [":" domain-spec] [dual-cidr-length] (RFC 7208 §5.3, §5.4, §5.6)
_A_MX_ARGS = re.compile(r"(?::(?P<dom>.+?))?(?:/(?P<c4>[0-9]+))?(?://(?P<c6>[0-9]+))?\Z", re.S)
_CIDR = re.compile(r"(0|[1-9][0-9]*)\Z")   # RFC 7208 §5.6: no leading zeros
# RFC 7208 §5.6 ip4-network: four qnum, each 0-255 without leading zeros
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP4 = re.compile(r"%s(?:\.%s){3}\Z" % (_QNUM, _QNUM))


@dataclass
class Mechanism:
    """One directive (RFC 7208 §4.6.1): qualifier, name and its arguments."""
    qualifier: str
    name: str
    text: str                                   # as written, for Received-SPF "mechanism=" (§9.1)
    domain: Optional[List[Piece]] = None        # the domain-spec, if any
    network: Optional[object] = None            # ip4 / ip6: an ipaddress network
    cidr4: int = 32                             # RFC 7208 §5.6 defaults
    cidr6: int = 128


@dataclass
class SpfRecord:
    mechanisms: List[Mechanism] = field(default_factory=list)
    redirect: Optional[List[Piece]] = None
    exp: Optional[List[Piece]] = None

    @property
    def has_all(self) -> bool:
        return any(m.name == "all" for m in self.mechanisms)


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: begins with exactly "v=spf1", ended by SP or the end
    ("v=spf10" is not one); compared case-insensitively (§4.6.1, RFC 5234)."""
    return text[:6].lower() == VERSION and (len(text) == 6 or text[6] == " ")


def parse_record(text: str) -> SpfRecord:
    """record = version terms *SP (RFC 7208 §4.5, §4.6.1; terms are separated
    by SP only).  Raises SpfSyntaxError."""
    if not is_spf_record(text):
        raise SpfSyntaxError("not an SPF record (RFC 7208 §4.5)")
    record = SpfRecord()
    for term in text[6:].split(" "):
        if term:
            _term(record, term)
    return record


def _term(record: SpfRecord, term: str) -> None:
    m = _MODIFIER.match(term)
    if m is not None:
        return _modifier(record, m.group(1).lower(), m.group(2), term)
    m = _DIRECTIVE.match(term)
    if m is None:
        raise SpfSyntaxError("bad term %r (RFC 7208 §4.6.1)" % term)
    qualifier, name, rest = m.group(1) or "+", m.group(2).lower(), m.group(3)
    if name not in MECHANISMS:
        raise SpfSyntaxError("unknown mechanism %r (RFC 7208 §4.6.1)" % term)
    mech = Mechanism(qualifier, name, term)
    if name == "all":
        if rest:
            raise SpfSyntaxError("'all' takes no argument: %r (RFC 7208 §5.1)" % term)
    elif name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SpfSyntaxError("%r needs ':' domain-spec (RFC 7208 §5.2, §5.7)" % term)
        mech.domain = parse_domain_spec(rest[1:])
    elif name == "ptr":
        if rest and not rest.startswith(":"):
            raise SpfSyntaxError("bad ptr argument %r (RFC 7208 §5.5)" % term)
        mech.domain = parse_domain_spec(rest[1:]) if rest else None
    elif name in ("a", "mx"):
        _a_mx_args(mech, rest)
    else:
        _ip_args(mech, rest)
    record.mechanisms.append(mech)


def _cidr(text: str, top: int, term: str) -> int:
    if not _CIDR.match(text) or int(text) > top:
        raise SpfSyntaxError("bad CIDR length /%s in %r (RFC 7208 §5.6: 0-%d)" % (text, term, top))
    return int(text)


def _a_mx_args(mech: Mechanism, rest: str) -> None:
    """[":" domain-spec] [dual-cidr-length] (RFC 7208 §5.3, §5.4, §5.6)."""
    m = _A_MX_ARGS.match(rest)
    if m is None or (rest and rest[0] not in ":/"):
        raise SpfSyntaxError("bad %s argument in %r (RFC 7208 §5.3/§5.4)" % (mech.name, mech.text))
    if m.group("dom") is not None:
        mech.domain = parse_domain_spec(m.group("dom"))
    if m.group("c4") is not None:
        mech.cidr4 = _cidr(m.group("c4"), 32, mech.text)
    if m.group("c6") is not None:
        mech.cidr6 = _cidr(m.group("c6"), 128, mech.text)


def _ip_args(mech: Mechanism, rest: str) -> None:
    """ip4 / ip6 ":" network [cidr-length] (RFC 7208 §5.6)."""
    if not rest.startswith(":"):
        raise SpfSyntaxError("%r needs ':' and an address (RFC 7208 §5.6)" % mech.text)
    addr, slash, length = rest[1:].partition("/")
    top = 32 if mech.name == "ip4" else 128
    cidr = _cidr(length, top, mech.text) if slash else top
    try:
        if mech.name == "ip4":
            if not _IP4.match(addr):
                raise ValueError(addr)
            network = ipaddress.IPv4Network((addr, cidr), strict=False)
        else:
            if "%" in addr:             # a zone index is not RFC 4291 §2.2 text
                raise ValueError(addr)
            network = ipaddress.IPv6Network((ipaddress.IPv6Address(addr), cidr), strict=False)
    except ValueError:
        raise SpfSyntaxError("bad address in %r (RFC 7208 §5.6)" % mech.text) from None
    mech.network = network
    if mech.name == "ip4":
        mech.cidr4 = cidr
    else:
        mech.cidr6 = cidr


def _modifier(record: SpfRecord, name: str, value: str, term: str) -> None:
    """redirect / exp at most once each (RFC 7208 §6); unknown modifiers are
    checked as macro-strings and otherwise ignored (§4.6.1, §6)."""
    if name in ("redirect", "exp"):
        if getattr(record, name) is not None:
            raise SpfSyntaxError("%s= appears twice (RFC 7208 §6)" % name)
        setattr(record, name, parse_domain_spec(value))
        return
    parse_macro_string(value, exp=True)
