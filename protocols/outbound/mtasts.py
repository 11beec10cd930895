"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the policy file, MX matching.

Pure functions, no I/O: protocols/outbound/mtasts_fetch.py asks DNS, fetches
the policy over HTTPS (protocols/loop_https.py on a worker thread) and keeps
the cache; the relay (protocols/outbound/relay.py) applies what
:func:`mx_allowed` says.  The policy we serve ourselves (``mta_sts_mode``) is
written by :func:`policy_text`.

Strict parsing (RFC 8461 §3.2): a line that is not ``key: value`` makes the
whole policy invalid; ``version``, ``mode`` and ``max_age`` are required once
(a repeated one: the first counts, §3.2 last paragraph), ``mx`` at least once
unless the mode is ``none``; unknown keys are ignored.  Left out: IDN U-labels
in ``mx`` (§3.2 wants A-labels, so a U-label is refused like any bad name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

MODES = ("enforce", "testing", "none")                 # RFC 8461 §3.2 sts-policy-mode-value
MAX_AGE_LIMIT = 31557600                               # RFC 8461 §3.2: "maximum value of 31557600"
WELL_KNOWN = "/.well-known/mta-sts.txt"                # RFC 8461 §3.2
# RFC 8461 §3.3: "a suggested maximum policy size is 64 kilobytes".
MAX_POLICY_BYTES = 64 * 1024
# RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT)
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
# RFC 8461 §3.1: sts-ext-name / sts-ext-value
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")
# RFC 8461 §3.2: sts-policy-ext-name
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
# RFC 5321 §4.1.2 Domain: sub-domain *("." sub-domain), Let-dig [Ldh-str]
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\Z")


class PolicyError(ValueError):
    """A record or policy that RFC 8461 says to treat as absent; one line saying why."""


@dataclass
class Policy:
    mode: str
    max_age: int
    mx: List[str] = field(default_factory=list)       # patterns, lower case
    version: str = "STSv1"


def policy_url(domain: str) -> str:
    """RFC 8461 §3.2: the Policy Host is "mta-sts." + the Policy Domain."""
    return "https://mta-sts.%s%s" % (domain.lower().rstrip("."), WELL_KNOWN)


def parse_record(texts: Sequence[str]) -> str:
    """The ``id`` of the one usable ``_mta-sts`` TXT record (RFC 8461 §3.1).

    ``texts``: every TXT record, its strings already joined.  Records not
    beginning with "v=STSv1;" are discarded; not exactly one left, or that
    one invalid, raises PolicyError (the domain has no policy)."""
    recs = [t for t in texts if t.startswith("v=STSv1;") or t == "v=STSv1"]
    if not recs:
        raise PolicyError("no v=STSv1 record")
    if len(recs) > 1:
        raise PolicyError("%d v=STSv1 records (RFC 8461 §3.1: exactly one)" % len(recs))
    found_id = None
    body = re.sub(r"[ \t]*;[ \t]*\Z", "", recs[0])        # [sts-field-delim] at the end
    for part in re.split(r"[ \t]*;[ \t]*", body)[1:]:       # after "v=STSv1", checked above
        name, eq, value = part.partition("=")
        if not eq or not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise PolicyError("bad field %r in %r (RFC 8461 §3.1)" % (part, recs[0]))
        if name == "id" and found_id is None:
            if not _ID.match(value):
                raise PolicyError("id=%s is not 1 to 32 letters and digits (RFC 8461 §3.1)" % value)
            found_id = value
    if found_id is None:
        raise PolicyError("no id= in %r (RFC 8461 §3.1)" % recs[0])
    return found_id


def valid_pattern(pattern: str) -> bool:
    """RFC 8461 §3.2: sts-policy-mx-value = ["*."] Domain (RFC 5321 §4.1.2)."""
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.rstrip(".").split(".")
    return bool(name) and all(len(l) <= 63 and _LABEL.match(l) for l in labels) and len(name) <= 253


def parse_policy(body: bytes) -> Policy:
    """The policy file (RFC 8461 §3.2 ABNF), strictly; PolicyError when invalid."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8 (RFC 8461 §3.2)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()     # the optional final sts-policy-term
    first = {}
    mx: List[str] = []
    for n, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith("\r") else line
        line = line.rstrip(" \t")       # sts-policy-field *WSP
        name, colon, value = line.partition(":")
        value = value.lstrip(" \t")     # sts-policy-field-delim = ":" *WSP
        if not colon or not _FIELD_NAME.match(name) or not value or any(ord(c) < 0x20 or ord(c) == 0x7f
                                                                           for c in value):
            raise PolicyError("line %d is not a key: value field (RFC 8461 §3.2): %r" % (n, line[:80]))
        if name == "mx":
            if not valid_pattern(value):
                raise PolicyError("mx: %r is not a domain or *.domain (RFC 8461 §3.2)" % value[:80])
            mx.append(value.lower().rstrip("."))
        else:
            first.setdefault(name, value)   # RFC 8461 §3.2: a repeated field: the first counts
    return _checked(first, mx)


def _checked(fields: dict, mx: List[str]) -> Policy:
    if fields.get("version") != "STSv1":
        raise PolicyError("version must be STSv1, not %r (RFC 8461 §3.2)" % fields.get("version"))
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError("mode must be enforce, testing or none, not %r (RFC 8461 §3.2)" % mode)
    age = fields.get("max_age", "")
    if not (age.isdigit() and age.isascii() and 1 <= len(age) <= 10) or int(age) > MAX_AGE_LIMIT:
        raise PolicyError("max_age must be 0 to %d seconds, not %r (RFC 8461 §3.2)" % (MAX_AGE_LIMIT, age))
    if not mx and mode != "none":
        raise PolicyError("no mx: field in a %s policy (RFC 8461 §3.2)" % mode)
    return Policy(mode, int(age), mx)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: literal (case-insensitive), or "*.example.com" for exactly
    one left-most label ("mail.example.com", not "example.com" nor "a.b.example.com")."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, dot, rest = host.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return pattern == host


def mx_allowed(policy: Policy, host: str) -> bool:
    return any(mx_matches(p, host) for p in policy.mx)


def policy_text(mode: str, mx: Sequence[str], max_age: int) -> bytes:
    """The policy we serve (RFC 8461 §3.2), CRLF-separated."""
    lines = ["version: STSv1", "mode: %s" % mode]
    lines += ["mx: %s" % m for m in mx]
    lines.append("max_age: %d" % max_age)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def media_type_ok(content_type: Optional[str]) -> bool:
    """RFC 8461 §3.2: senders SHOULD check the media type is text/plain."""
    return (content_type or "").split(";")[0].strip().lower() == "text/plain"


def same_policy(a: Policy, b: Policy) -> Tuple[bool, str]:
    """Whether two policies say the same (for `dns check`), and the first difference."""
    if a.mode != b.mode:
        return False, "mode %s, we serve %s" % (a.mode, b.mode)
    if sorted(a.mx) != sorted(b.mx):
        return False, "mx %s, we serve %s" % (", ".join(a.mx) or "none", ", ".join(b.mx) or "none")
    if a.max_age != b.max_age:
        return False, "max_age %d, we serve %d" % (a.max_age, b.max_age)
    return True, ""
