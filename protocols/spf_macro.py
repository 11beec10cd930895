"""SPF macros: the grammar and expansion of RFC 7208 §7, pure functions.

A macro-string is parsed once into pieces (literal text and ``Macro``
values) so that a record's syntax is checked whole before it is evaluated
(RFC 7208 §4.6), then expanded against a ``MacroContext`` per evaluation.
The ``p`` letter needs DNS: the evaluator (protocols/spf.py) finds the
validated name first and puts it in the context.

Left out: nothing of §7; the ``r`` letter is what the caller names as the
receiving host ("unknown" without one, RFC 7208 §7.3).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

MACRO_LETTERS = "slodiphcrtv"      # RFC 7208 §7.1 macro-letter
EXP_ONLY_LETTERS = "crt"           # RFC 7208 §7.2: allowed only in "exp" text
DELIMITERS = ".-+,/_="             # RFC 7208 §7.1 delimiter
MAX_DOMAIN_TEXT = 253              # RFC 7208 §7.3: expanded names over 253 characters lose left labels
# RFC 7208 §7.1 toplabel: LDH with at least one letter, or a hyphenated label.
_TOPLABEL = r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_END = re.compile(r"\." + _TOPLABEL + r"\.?\Z")
_MACRO = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")


class SpfSyntaxError(ValueError):
    """The record, a domain-spec or an explanation is not RFC 7208 syntax:
    check_host() then returns "permerror" (RFC 7208 §4.6)."""


@dataclass(frozen=True)
class Macro:
    """``%{letter digits r delimiters}`` (RFC 7208 §7.1); ``upper``: URL-escape (§7.3)."""
    letter: str
    digits: Optional[int]
    reverse: bool
    delimiters: str
    upper: bool


Piece = Union[str, Macro]


@dataclass
class MacroContext:
    """The values the letters stand for (RFC 7208 §7.2)."""
    sender: str                       # s: local-part@domain, "postmaster" filled in (§4.3)
    domain: str                       # d: the <domain> being evaluated
    ip: object                        # i, c, v: an ipaddress address (IPv4-mapped already unmapped)
    helo: str = ""                    # h
    receiver: str = "unknown"         # r (§7.3: "unknown" without a name)
    now: int = 0                      # t: seconds since the Epoch
    validated: str = "unknown"        # p (§7.3: "unknown" when none is validated)

    @property
    def local_part(self) -> str:
        return self.sender.rpartition("@")[0]

    @property
    def sender_domain(self) -> str:
        """%{o}: lowercase, as <domain> (%{d}) is: names compare without case
        (RFC 1035 §2.3.3) and Mail::SPF expands both so; %{s} and %{l} stay as given."""
        return self.sender.rpartition("@")[2].lower()


def parse_macro_string(text: str, exp: bool = False) -> Tuple[List[Piece], bool]:
    """macro-string (RFC 7208 §7.1), or explain-string when ``exp`` (which
    also allows SP and the letters c, r, t, §7.2).  Returns the pieces and
    whether the text ends with a macro-expand (for domain-end).  Raises
    SpfSyntaxError for a "%" not followed by "{", "%", "-" or "_" (§7.3), an
    unknown letter, a DIGIT of zero (§7.3) or a character outside
    macro-literal (§7.1: visible ASCII)."""
    pieces: List[Piece] = []
    i, ends_expand = 0, False
    while i < len(text):
        c = text[i]
        if c == "%":
            i, piece = _percent(text, i, exp)
            pieces.append(piece)
            ends_expand = True
            continue
        if not ("\x21" <= c <= "\x7e" or (exp and c == " ")):
            raise SpfSyntaxError("character %r not allowed in a macro-string (RFC 7208 §7.1)" % c)
        j = i
        while j < len(text) and text[j] != "%" and ("\x21" <= text[j] <= "\x7e" or (exp and text[j] == " ")):
            j += 1
        pieces.append(text[i:j])
        i, ends_expand = j, False
    return pieces, ends_expand


def _percent(text: str, i: int, exp: bool) -> Tuple[int, Piece]:
    """One macro-expand at text[i] == "%" (RFC 7208 §7.1, §7.3)."""
    two = text[i:i + 2]
    if two in ("%%", "%_", "%-"):
        return i + 2, {"%%": "%", "%_": " ", "%-": "%20"}[two]   # §7.1 special cases
    m = _MACRO.match(text, i)
    if m is None:
        raise SpfSyntaxError("bad macro at %r (RFC 7208 §7.3)" % text[i:i + 12])
    letter, digits, rev, delims = m.groups()
    low = letter.lower()
    if low not in MACRO_LETTERS:
        raise SpfSyntaxError("unknown macro letter %r (RFC 7208 §7.2)" % letter)
    if low in EXP_ONLY_LETTERS and not exp:
        raise SpfSyntaxError("macro %%{%s} is allowed only in exp text (RFC 7208 §7.2)" % letter)
    if digits and int(digits) == 0:
        raise SpfSyntaxError("macro DIGIT must be nonzero (RFC 7208 §7.3)")
    return m.end(), Macro(low, int(digits) if digits else None, bool(rev), delims, letter.isupper())


def parse_domain_spec(text: str) -> List[Piece]:
    """domain-spec = macro-string domain-end (RFC 7208 §7.1): it must end
    in a macro-expand or in "." toplabel ["."]."""
    if not text:
        raise SpfSyntaxError("empty domain-spec (RFC 7208 §7.1)")
    pieces, ends_expand = parse_macro_string(text)
    if not ends_expand:
        tail = pieces[-1] if pieces and isinstance(pieces[-1], str) else ""
        if not _DOMAIN_END.search(tail):
            raise SpfSyntaxError("domain-spec %r does not end in a top-level label (RFC 7208 §7.1)" % text)
    return pieces


def uses_letter(pieces: List[Piece], letter: str) -> bool:
    return any(isinstance(p, Macro) and p.letter == letter for p in pieces)


def expand(pieces: List[Piece], ctx: MacroContext) -> str:
    """Expand parsed pieces (RFC 7208 §7.3)."""
    out = []
    for piece in pieces:
        out.append(piece if isinstance(piece, str) else _expand_one(piece, ctx))
    return "".join(out)


def _expand_one(m: Macro, ctx: MacroContext) -> str:
    value = _letter_value(m.letter, ctx)
    if m.digits is not None or m.reverse or m.delimiters:
        # §7.3: split on the delimiters (default "."), reverse, keep the
        # rightmost DIGIT parts, rejoin with "."
        parts = re.split("[" + re.escape(m.delimiters or ".") + "]", value)
        if m.reverse:
            parts.reverse()
        if m.digits is not None and m.digits < len(parts):
            parts = parts[-m.digits:]
        value = ".".join(parts)
    if m.upper:
        value = urllib.parse.quote(value, safe="")  # §7.3: escape all but RFC 3986 "unreserved"
    return value


def _letter_value(letter: str, ctx: MacroContext) -> str:
    """What each letter stands for (RFC 7208 §7.2, §7.3)."""
    ip = ctx.ip
    if letter == "s":
        return ctx.sender
    if letter == "l":
        return ctx.local_part
    if letter == "o":
        return ctx.sender_domain
    if letter == "d":
        return ctx.domain
    if letter == "i":
        return ip_dotted(ip)
    if letter == "p":
        return ctx.validated
    if letter == "v":
        return "in-addr" if ip.version == 4 else "ip6"
    if letter == "h":
        return ctx.helo
    if letter == "c":
        return str(ip)          # §7.3: dotted quad, or an RFC 4291 §2.2 form (compressed)
    if letter == "r":
        return ctx.receiver or "unknown"
    return str(ctx.now)         # "t"


def ip_dotted(ip) -> str:
    """%{i} (RFC 7208 §7.3): dotted quad for IPv4; for IPv6 its 32 nibbles
    separated by dots ("2.0.0.1.0.d.b.8...")."""
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def target_name(text: str) -> str:
    """An expanded domain-spec as a name to query: the trailing dot dropped
    and, over 253 characters, left labels removed until it fits (RFC 7208 §7.3)."""
    if text.endswith("."):
        text = text[:-1]
    while len(text) > MAX_DOMAIN_TEXT and "." in text:
        text = text.split(".", 1)[1]
    return text


def client_ip(text: str):
    """The SMTP client address as an ipaddress value; an IPv4-mapped IPv6
    address is taken as the IPv4 address (RFC 7208 §5, RFC 4291 §2.5.5.2).
    Raises ValueError for anything else."""
    ip = ipaddress.ip_address(text.strip().strip("[]"))
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
