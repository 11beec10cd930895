"""SMTP paths and MAIL/RCPT parameters (RFC 5321 §4.1.2, RFC 6531 §3.3).

Grammar functions are named after the ABNF rules of RFC 5321 §4.1.2 and
§4.1.3 and work on ``str`` (the session decodes the command line as UTF-8;
non-ASCII characters are allowed only when the transaction uses SMTPUTF8,
RFC 6531 §3.3).  Each parse function takes the text and a position and
returns the position after what it consumed; errors raise ``AddressError``
carrying the SMTP reply.

Implemented: Reverse-path / Forward-path / Path with the source route
(A-d-l) accepted and ignored (RFC 5321 §4.1.1.3, §3.6.1, Appendix C), the
null reverse-path ``<>``, ``<Postmaster>`` without a domain (RFC 5321
§4.1.1.3), Dot-string and Quoted-string local parts, Domain and
address-literal (IPv4, IPv6, General-address-literal syntax), the length
limits of RFC 5321 §4.5.3.1.1-3 and Mail-parameters / Rcpt-parameters
(RFC 5321 §4.1.2 esmtp-param).

Left out: IDNA validation of U-labels (any non-ASCII character is accepted
inside a label under SMTPUTF8), the %-hack and "!" paths (RFC 5321 §3.6.1:
we never relay on them; such characters in a local part are just atext).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from protocols.base import ProtocolError

# RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other
# local-part is 64 octets."
MAX_LOCAL_PART = 64
# RFC 5321 §4.5.3.1.2: "The maximum total length of a domain name or number
# is 255 octets."
MAX_DOMAIN = 255
# RFC 5321 §4.5.3.1.3: "The maximum total length of a reverse-path or
# forward-path is 256 octets (including the punctuation and element
# separators)."
MAX_PATH = 256
# RFC 1035 §2.3.4: labels are 63 octets or less.
MAX_LABEL = 63

# RFC 5322 §3.2.3 atext (used by RFC 5321 §4.1.2 Atom).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-/=?^_`{|}~")
_LET_DIG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# RFC 5321 §4.1.2 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# RFC 5321 §4.1.2 esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds
# UTF8-non-ascii (checked separately).
_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+\Z")
# RFC 5321 §4.1.3 Standardized-tag = Ldh-str ; dcontent = %d33-90 / %d94-126
_GENERAL_LITERAL_RE = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")
# The common path in one match: "<" Dot-string "@" Domain ">" in ASCII, labels of
# at most 63 (RFC 5321 §4.1.2, RFC 1035 §2.3.4), then nothing or SP and the
# parameters; lengths are checked after it.  Whatever it does not match takes the
# full parser below, which gives the same answer for what it does (tests/test_smtp_address.py).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SIMPLE_PATH_RE = re.compile(r"(?s) *<(%s(?:\.%s)*)@(%s(?:\.%s)*)>(?: (.*))?\Z" % (_ATOM, _ATOM, _LABEL, _LABEL))


class AddressError(ProtocolError):
    """A path or parameter the server refuses; ``reply_tuple`` is the Reply."""

    def __init__(self, code: int, enhanced: str, text: str):
        self.code = code
        self.enhanced = enhanced
        self.text = text
        super().__init__(("%d %s %s\r\n" % (code, enhanced, text)).encode("utf-8"))

    @property
    def reply_tuple(self) -> Tuple[int, str, str]:
        return (self.code, self.enhanced, self.text)


@dataclass(frozen=True)
class Address:
    """A Mailbox (RFC 5321 §4.1.2): ``local`` is the unquoted local part."""

    local: str
    domain: str
    literal: bool = False

    @property
    def text(self) -> str:
        """Canonical "local@domain": the local part is quoted only when it is
        not a Dot-string (RFC 5321 §4.1.2: "a sender SHOULD NOT ... use the
        Quoted-string form ... unless it is necessary")."""
        local = self.local
        if not _is_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return local + "@" + self.domain if self.domain else local

    def __str__(self) -> str:
        return self.text


class _Errors:
    """The replies for one role: sender (X.1.7) or recipient (X.1.3), RFC 3463 §3.2."""

    def __init__(self, sender: bool):
        self.enh = "5.1.7" if sender else "5.1.3"
        self.what = "sender" if sender else "recipient"

    def syntax(self, why: str) -> AddressError:
        # RFC 5321 §4.2.2 / §4.3.2: 501 Syntax error in parameters or arguments.
        return AddressError(501, self.enh, "Bad %s address syntax: %s" % (self.what, why))

    def not_allowed(self, why: str) -> AddressError:
        # RFC 5321 §4.2.2: 553 mailbox name not allowed.
        return AddressError(553, self.enh, "%s address not allowed: %s" % (self.what.capitalize(), why))


def _is_dot_string(s: str, utf8: bool = True) -> bool:
    """Dot-string = Atom *("." Atom) (RFC 5321 §4.1.2)."""
    if not s:
        return False
    for atom in s.split("."):
        if not atom or not all(c in _ATEXT or (utf8 and ord(c) > 0x7f) for c in atom):
            return False
    return True


def _check_chars(s: str, smtputf8: bool, err: _Errors) -> None:
    """No control characters anywhere (RFC 5321 §4.1.2 grammar admits none);
    non-ASCII only with SMTPUTF8 (RFC 6531 §3.3, reply per §3.5)."""
    for c in s:
        o = ord(c)
        if o < 0x20 or o == 0x7f or 0x80 <= o < 0xa0:
            raise err.syntax("control character")
    if not smtputf8 and not s.isascii():
        # RFC 6531 §3.5: 553 5.6.7 for a non-ASCII address without SMTPUTF8.
        raise AddressError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")


def local_part(s: str, i: int, err: _Errors) -> Tuple[str, int]:
    """Local-part = Dot-string / Quoted-string (RFC 5321 §4.1.2).

    Quoted-string = DQUOTE *QcontentSMTP DQUOTE; quoted-pairSMTP = "\\" %d32-126.
    Returns the unquoted value and the position after it.
    """
    if i < len(s) and s[i] == '"':
        out = []
        i += 1
        while i < len(s):
            c = s[i]
            if c == '"':
                return "".join(out), i + 1
            if c == "\\":
                if i + 1 >= len(s):
                    break
                out.append(s[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        raise err.syntax("unterminated quoted string")
    j = i
    while j < len(s) and (s[j] in _ATEXT or s[j] == "." or ord(s[j]) > 0x7f):
        j += 1
    value = s[i:j]
    if not _is_dot_string(value):
        raise err.syntax("invalid local part")
    return value, j


def domain(s: str, i: int, err: _Errors) -> Tuple[str, int]:
    """Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
    (RFC 5321 §4.1.2; U-labels allowed under SMTPUTF8, RFC 6531 §3.3).

    Empty labels and a trailing dot are refused (the grammar has no root
    label); labels are at most 63 octets (RFC 1035 §2.3.4).
    """
    j = i
    while j < len(s) and (s[j] in _LET_DIG or s[j] in "-." or ord(s[j]) > 0x7f):
        j += 1
    name = s[i:j]
    if not name:
        raise err.syntax("missing domain")
    for label in name.split("."):
        if not label:
            raise err.syntax("empty domain label")
        if label[0] == "-" or label[-1] == "-":
            raise err.syntax("domain label starts or ends with '-'")
        if len(label.encode("utf-8")) > MAX_LABEL:
            raise err.not_allowed("domain label too long")
    if len(name.encode("utf-8")) > MAX_DOMAIN:
        raise err.not_allowed("domain too long")
    return name, j


def address_literal(s: str, i: int, err: _Errors) -> Tuple[str, int]:
    """address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
    General-address-literal ) "]" (RFC 5321 §4.1.3)."""
    end = s.find("]", i)
    if end < 0:
        raise err.syntax("unterminated address literal")
    body = s[i + 1:end]
    if body[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(body[5:])
        except ValueError:
            raise err.syntax("invalid IPv6 address literal") from None
    elif _GENERAL_LITERAL_RE.match(body):
        pass  # General-address-literal: syntax only, never routed by us
    else:
        try:
            ipaddress.IPv4Address(body)
        except ValueError:
            raise err.syntax("invalid address literal") from None
    return s[i:end + 1], end + 1


def mailbox(s: str, i: int, err: _Errors) -> Tuple[Address, int]:
    """Mailbox = Local-part "@" ( Domain / address-literal ) (RFC 5321 §4.1.2)."""
    local, i = local_part(s, i, err)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise err.not_allowed("local part longer than 64 octets (RFC 5321 §4.5.3.1.1)")
    if i >= len(s) or s[i] != "@":
        raise err.syntax("missing '@domain'")
    i += 1
    if i < len(s) and s[i] == "[":
        lit, i = address_literal(s, i, err)
        return Address(local, lit, True), i
    dom, i = domain(s, i, err)
    return Address(local, dom, False), i


def _source_route(s: str, i: int, err: _Errors) -> int:
    """A-d-l = At-domain *( "," At-domain ) ":"  — parsed and ignored
    (RFC 5321 §4.1.1.3: servers SHOULD accept and MAY ignore; Appendix C)."""
    while True:
        if i >= len(s) or s[i] != "@":
            raise err.syntax("bad source route")
        _, i = domain(s, i + 1, err)
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == ":":
            return i + 1
        raise err.syntax("bad source route")


def _split_path(s: str, err: _Errors) -> Tuple[str, str]:
    """Separate "<...>" from the parameters that follow (after SP)."""
    s = s.lstrip(" ")  # DEVIATION(RFC 5321 §4.1.1.2): "MAIL FROM: <a@b>" is common, accepted
    if not s.startswith("<"):
        raise err.syntax("path must be enclosed in <>")
    i, quoted = 1, False
    while i < len(s):
        c = s[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            break
        i += 1
    else:
        raise err.syntax("missing '>'")
    path, rest = s[:i + 1], s[i + 1:]
    if rest and not rest.startswith(" "):
        raise err.syntax("junk after path")
    if len(path.encode("utf-8")) > MAX_PATH:
        # RFC 5321 §4.5.3.1.9: "501 Path too long"
        raise AddressError(501, err.enh, "Path too long (RFC 5321 §4.5.3.1.3)")
    return path, rest.strip(" ")


def _path(path: str, smtputf8: bool, err: _Errors) -> Address:
    """Path = "<" [ A-d-l ":" ] Mailbox ">" (RFC 5321 §4.1.2)."""
    _check_chars(path, smtputf8, err)
    i = 1
    if path.startswith("<@"):
        i = _source_route(path, 1, err)
    addr, i = mailbox(path, i, err)
    if i != len(path) - 1:
        # e.g. <user@remote@local>: the first "@" ends the local part.
        raise err.syntax("unexpected characters after domain")
    return addr


def _simple_path(s: str) -> Optional[Tuple[Address, str]]:
    """The common case of both paths in one regular expression (no loop per
    character); None sends the caller to the full parser."""
    m = _SIMPLE_PATH_RE.match(s)
    if m is None:
        return None
    local, dom, rest = m.group(1, 2, 3)
    if len(local) > MAX_LOCAL_PART or len(dom) > MAX_DOMAIN or len(local) + len(dom) + 3 > MAX_PATH:
        return None             # the full parser gives the reply
    return Address(local, dom, False), (rest or "").strip(" ")


def parse_reverse_path(s: str, smtputf8: bool = False) -> Tuple[Optional[Address], str]:
    """Reverse-path = Path / "<>" (RFC 5321 §4.1.2) followed by parameters.

    Returns (None, params) for the null path, else (Address, params).
    """
    simple = _simple_path(s)
    if simple is not None:
        return simple
    err = _Errors(sender=True)
    path, rest = _split_path(s, err)
    if path == "<>":
        return None, rest
    return _path(path, smtputf8, err), rest


def parse_forward_path(s: str, smtputf8: bool = False,
                       postmaster_domain: str = "") -> Tuple[Address, str]:
    """Forward-path = Path, or "<Postmaster>" (RFC 5321 §4.1.1.3, §4.5.1).

    The bare ``<Postmaster>`` (case-insensitive) becomes
    Address("postmaster", postmaster_domain).
    """
    simple = _simple_path(s)
    if simple is not None:
        return simple
    err = _Errors(sender=False)
    path, rest = _split_path(s, err)
    if path.lower() == "<postmaster>":
        return Address("postmaster", postmaster_domain, False), rest
    if path == "<>":
        raise err.syntax("null forward-path")
    return _path(path, smtputf8, err), rest


def parse_parameters(s: str) -> Dict[str, Optional[str]]:
    """Mail-parameters / Rcpt-parameters = esmtp-param *(SP esmtp-param)
    (RFC 5321 §4.1.2); esmtp-param = esmtp-keyword ["=" esmtp-value].

    Keywords are case-insensitive (RFC 5321 §2.4) and returned upper-cased;
    a repeated keyword is a syntax error.  Raises AddressError 501 5.5.4.
    """
    out: Dict[str, Optional[str]] = {}
    for item in s.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD_RE.match(key):
            raise AddressError(501, "5.5.4", "Invalid parameter keyword")
        if eq and not _VALUE_RE.match(value):
            raise AddressError(501, "5.5.4", "Invalid parameter value")
        key = key.upper()
        if key in out:
            raise AddressError(501, "5.5.4", "Duplicate parameter " + key)
        out[key] = value if eq else None
    return out
