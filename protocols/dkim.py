"""DKIM signatures (RFC 6376), with RFC 8301's algorithm rules and RFC 8463's Ed25519.

Pure: no I/O.  Signing takes the message and a key; verification takes the
message, an injected resolver (``resolve(name, qtype, done)`` as
protocols/dns/resolver.py's) and the clock, and calls ``done`` with one
:class:`DkimResult` per DKIM-Signature field; the hashing and signature
arithmetic goes through an injected ``runner`` (the server's worker threads),
so the event loop never computes it.  ``add_authentication_results`` writes
the RFC 8601 field.

- Algorithms: ``rsa-sha256`` (RFC 6376 §3.3.1, RSASSA-PKCS1-v1_5) and
  ``ed25519-sha256`` (RFC 8463 §3: PureEdDSA over the SHA-256 of the data).
  ``rsa-sha1`` is refused (RFC 8301 §3.1), as are RSA keys below 1024 bits
  (RFC 8301 §3.2).
- Results (RFC 8601 §2.7.1): ``pass``; ``fail`` when the body hash or the
  signature does not match or the signature has expired (x=, RFC 6376 §3.5);
  ``neutral`` for a DKIM-Signature with syntax errors (RFC 6376 §6.1.1); ``permerror``
  for a key that cannot be used (none published, revoked, malformed, of
  another type, refusing sha256 or this i= under t=s, an algorithm refused);
  ``temperror`` when DNS failed for now; ``none`` when nothing is signed.

Left out: q= other than dns/txt (none other is defined), z= is parsed but
not used (RFC 6376 §3.5: diagnostic only), ADSP and policy (DMARC: protocols/dmarc.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from protocols import dkim_canon as canon
from protocols.crypto import ed25519, keys, rsa
from protocols.dns import codec as dns

log = logging.getLogger("mailsrv.dkim")

SIGNATURE_FIELD = b"dkim-signature"
RSA_SHA256, ED25519_SHA256 = "rsa-sha256", "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
MIN_RSA_BITS = 1024             # RFC 8301 §3.2: verifiers MUST validate 1024..4096, and refuse smaller
MAX_RSA_BITS = 4096             # RFC 8301 §3.2: larger keys need not be validated (cost)
MAX_SECONDS = 20               # DEVIATION(RFC 6376): no limit given; as SPF's (RFC 7208 §4.6.4), then temperror
MAX_SIGNATURES = 8              # DEVIATION(RFC 6376 §6.1): more are not looked at (each costs a DNS query)
# RFC 6376 §5.4.1: the header set a signer SHOULD cover; From, To, Subject,
# Date oversigned (§8.15: a second copy added later then breaks the signature).
SIGNED_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
                  "references", "mime-version", "content-type", "content-transfer-encoding")
OVERSIGNED = ("from", "to", "subject", "date")


@dataclass
class DkimResult:
    """One signature's verdict (RFC 8601 §2.7.1), with what Authentication-Results shows."""
    result: str
    domain: str = ""
    selector: str = ""
    b: str = ""                 # the b= value (header.b shows its first 8 characters, RFC 6008)
    algorithm: str = ""
    identity: str = ""
    problem: str = ""
    testing: bool = False       # the key record said t=y (§3.6.1)

    def ar_text(self) -> str:
        """``dkim=pass header.d=... header.s=... header.b=...`` (RFC 8601 §2.7.1, RFC 6008 §4)."""
        if self.result == "none":
            return "dkim=none"
        out = "dkim=%s" % self.result
        if self.problem and self.result != "pass":
            out += " (%s)" % self.problem.replace("(", "[").replace(")", "]")
        for prop, value in (("header.d", self.domain), ("header.s", self.selector), ("header.b", self.b[:8])):
            if value:
                out += " %s=%s" % (prop, value)
        return out


class SignatureError(ValueError):
    """A DKIM-Signature field that cannot be evaluated (§6.1.1)."""


@dataclass
class Signature:
    """A parsed DKIM-Signature (RFC 6376 §3.5)."""
    raw: bytes                  # the field as it came, with its CRLF
    tags: Dict[str, str]
    algorithm: str
    domain: str
    selector: str
    headers: List[str]
    b: bytes
    bh: bytes
    canon: Tuple[str, str]
    identity: str
    length: Optional[int] = None
    timestamp: Optional[int] = None
    expires: Optional[int] = None

    @property
    def b_text(self) -> str:
        return canon.no_fws(self.tags.get("b", ""))


def _b64(value: str, tag: str) -> bytes:
    try:
        return base64.b64decode(canon.no_fws(value), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("%s= is not base64 (RFC 6376 §3.5)" % tag) from None


def _number(value: Optional[str], tag: str, digits: int) -> Optional[int]:
    """§3.5: t=, x=, l= are decimal, at most ``digits`` digits (12 and 76)."""
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or len(value) > digits:
        raise SignatureError("%s=%s is not a number (RFC 6376 §3.5)" % (tag, value[:20]))
    return int(value)


def parse_signature(raw: bytes) -> Signature:
    """§3.5 and the checks of §6.1.1; SignatureError says what is wrong."""
    try:
        tags = canon.parse_tags(canon.field_value(raw) or "")
    except canon.TagError as e:
        raise SignatureError(str(e)) from None
    for tag in ("v", "a", "b", "bh", "d", "h", "s"):            # §6.1.1: required tags
        if not tags.get(tag):
            raise SignatureError("tag %s= missing (RFC 6376 §6.1.1)" % tag)
    if tags["v"] != "1":
        raise SignatureError("v=%s is not 1 (RFC 6376 §6.1.1)" % tags["v"][:10])
    domain = tags["d"].lower().rstrip(".")
    headers = [h.strip().lower() for h in tags["h"].split(":")]
    if not all(headers):                                         # §3.5: hdr-name *( ":" hdr-name )
        raise SignatureError("h= has an empty header name (RFC 6376 §3.5)")
    if "from" not in headers:                                    # §6.1.1: h= MUST include From
        raise SignatureError("h= does not include From (RFC 6376 §6.1.1)")
    identity = tags.get("i", "@" + domain)
    idomain = identity.rpartition("@")[2].lower().rstrip(".")
    if "@" not in identity or not (idomain == domain or idomain.endswith("." + domain)):
        raise SignatureError("i=%s is not within d=%s (RFC 6376 §6.1.1)" % (identity[:60], domain))
    q = tags.get("q", "dns/txt").lower()
    if "dns/txt" not in [m.strip() for m in q.split(":")]:
        raise SignatureError("q=%s: no dns/txt (RFC 6376 §3.5)" % q[:30])
    try:
        c = canon.parse_c(tags.get("c", "simple/simple"))
    except canon.TagError as e:
        raise SignatureError(str(e)) from None
    sig = Signature(raw, tags, tags["a"].lower(), domain, tags["s"].lower(), headers, _b64(tags["b"], "b"),
                    _b64(tags["bh"], "bh"), c, identity, _number(tags.get("l"), "l", 76),
                    _number(tags.get("t"), "t", 12), _number(tags.get("x"), "x", 12))
    if sig.expires is not None and sig.timestamp is not None and sig.expires < sig.timestamp:
        raise SignatureError("x= is before t= (RFC 6376 §3.5)")
    return sig


def body_hash(body: bytes, body_canon: str, length: Optional[int] = None) -> Tuple[bytes, int]:
    """§3.7: SHA-256 of the canonicalized body, cut at l= (§3.5); and the canonical length."""
    data = canon.BODY[body_canon](body)
    return hashlib.sha256(data if length is None else data[:length]).digest(), len(data)


# ---------------------------------------------------------------- key records

@dataclass
class KeyRecord:
    """A DKIM key record (RFC 6376 §3.6.1)."""
    key_type: str
    public: bytes                       # p=, decoded (empty: revoked)
    hashes: Optional[List[str]] = None  # h=, None: any
    flags: List[str] = field(default_factory=list)
    services: List[str] = field(default_factory=lambda: ["*"])


def parse_key_record(text: str) -> KeyRecord:
    """§3.6.1: v=DKIM1 (first if present), k= (rsa), h=, p= (required), s=, t=."""
    try:
        tags = canon.parse_tags(text)
    except canon.TagError as e:
        raise SignatureError("key record: %s" % e) from None
    if "v" in tags and (tags["v"] != "DKIM1" or not text.lstrip().startswith("v")):
        raise SignatureError("key record: v= must be DKIM1 and first (RFC 6376 §3.6.1)")
    if "p" not in tags:
        raise SignatureError("key record without p= (RFC 6376 §3.6.1)")
    try:
        public = base64.b64decode(canon.no_fws(tags["p"]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("key record: p= is not base64 (RFC 6376 §3.6.1)") from None
    split = (lambda v: [x.strip().lower() for x in v.split(":") if x.strip()])
    return KeyRecord(tags.get("k", "rsa").strip().lower(), public,
                     split(tags["h"]) if "h" in tags else None, split(tags.get("t", "")),
                     split(tags.get("s", "*")))


def _public_key(sig: Signature, rec: KeyRecord):
    """The key to verify ``sig`` with, or SignatureError (§6.1.2's checks)."""
    want = "ed25519" if sig.algorithm == ED25519_SHA256 else "rsa"
    if not rec.public:
        raise SignatureError("key revoked (empty p=, RFC 6376 §3.6.1)")
    if rec.key_type != want:
        raise SignatureError("key is k=%s, signature is %s (RFC 6376 §6.1.2)" % (rec.key_type, sig.algorithm))
    if rec.hashes is not None and "sha256" not in rec.hashes:
        raise SignatureError("key record h= does not allow sha256 (RFC 6376 §3.6.1)")
    if "*" not in rec.services and "email" not in rec.services:
        raise SignatureError("key record s= is not for email (RFC 6376 §3.6.1)")
    if "s" in rec.flags and sig.identity.rpartition("@")[2].lower().rstrip(".") != sig.domain:
        raise SignatureError("key has t=s and i= is a subdomain of d= (RFC 6376 §3.6.1)")
    if want == "ed25519":
        if len(rec.public) != 32 or ed25519.decode_point(rec.public) is None:   # RFC 8463 §4
            raise SignatureError("Ed25519 key is not a 32-octet point (RFC 8463 §4)")
        return ed25519.Ed25519PublicKey(rec.public)
    try:
        key = keys.public_from_spki(rec.public)
    except (ValueError, IndexError):
        try:
            key = rsa.public_from_der(rec.public)       # DEVIATION(RFC 6376 §3.6.1): bare RSAPublicKey, as some publish
        except (ValueError, IndexError):
            raise SignatureError("RSA key in p= is not readable (RFC 6376 §3.6.1)") from None
    if not isinstance(key, rsa.RsaPublicKey):
        raise SignatureError("p= is not an RSA key (RFC 6376 §3.6.1)")
    if key.bits < MIN_RSA_BITS or key.bits > MAX_RSA_BITS:
        raise SignatureError("RSA key of %d bits, not %d..%d (RFC 8301 §3.2)" % (key.bits, MIN_RSA_BITS,
                                                                                   MAX_RSA_BITS))
    return key


# ---------------------------------------------------------------- verifying one

def check_signature(sig: Signature, fields: List[canon.Field], body: bytes, record: Optional[str],
                    now: int) -> DkimResult:
    """RFC 6376 §6.1.2 and §6.1.3 for one signature, its key record's text in hand."""
    out = DkimResult("fail", sig.domain, sig.selector, sig.b_text, sig.algorithm, sig.identity)
    if sig.expires is not None and now > sig.expires:
        out.problem = "signature expired (x=, RFC 6376 §3.5)"
        return out
    try:
        rec = parse_key_record(record or "")
        key = _public_key(sig, rec)
    except SignatureError as e:
        out.result, out.problem = "permerror", str(e)
        return out
    out.testing = "y" in rec.flags
    digest, size = body_hash(body, sig.canon[1], sig.length)
    if sig.length is not None and sig.length > size:
        out.problem = "l=%d is longer than the body (RFC 6376 §6.1.3)" % sig.length
        return out
    if digest != sig.bh:
        out.problem = "body hash did not verify (RFC 6376 §6.1.3)"
        return out
    data = canon.header_hash_input(canon.select_headers(fields, sig.headers), sig.raw, sig.canon[0])
    if sig.algorithm == ED25519_SHA256:
        good = key.verify(hashlib.sha256(data).digest(), sig.b)     # RFC 8463 §3
    else:
        good = rsa.verify_sha256(key, data, sig.b)
    if not good:
        out.problem = "signature did not verify (RFC 6376 §6.1.3)"
        return out
    out.result = "pass"
    return out


def signatures(fields: List[canon.Field]) -> List[bytes]:
    return [raw for name, raw in fields if name == SIGNATURE_FIELD][:MAX_SIGNATURES]


def key_name(sig: Signature) -> str:
    """§3.6.2.1: <selector>._domainkey.<domain>."""
    return "%s._domainkey.%s" % (sig.selector, sig.domain)


def _record_text(records: Sequence[object]) -> Tuple[Optional[str], str]:
    """§3.6.2.2: the TXT strings concatenated; more than one record is an error
    (DEVIATION: we take none rather than guess which)."""
    texts = [b"".join(r).decode("latin-1") if isinstance(r, tuple) else
             r.decode("latin-1") if isinstance(r, bytes) else None for r in records]
    texts = [t for t in texts if t is not None]
    if len(texts) != 1:
        return None, "%d key records (RFC 6376 §3.6.2.2)" % len(texts)
    return texts[0], ""


Runner = Callable[[Callable[[], object], Callable[[object], None]], None]


def _inline(fn: Callable[[], object], callback: Callable[[object], None]) -> None:
    callback(fn())


class DkimVerification:
    """Verifies every DKIM-Signature of a message: one TXT question per
    signature through ``resolver``, then the hashes and signatures computed
    through ``runner(fn, callback)`` (a loop's ``run_in_thread``: the
    arithmetic off the event loop; by default at once), then
    ``done(list of DkimResult)`` once."""

    def __init__(self, data: bytes, resolver, done: Callable[[List[DkimResult]], None], now: int,
                 runner: Optional[Runner] = None):
        self.fields, self.body = canon.split_message(data)
        self.resolver, self.done, self.now = resolver, done, now
        self.runner = runner or _inline
        self.results: List[Optional[DkimResult]] = []
        self.records: Dict[int, Tuple[Signature, str]] = {}
        self.waiting = 0
        self.finished = False
        self._timer = None

    def start(self) -> "DkimVerification":
        raws = signatures(self.fields)
        if not raws:
            self.finished = True
            self.done([DkimResult("none")])
            return self
        jobs = []
        for raw in raws:
            try:
                sig = parse_signature(raw)
            except SignatureError as e:
                self.results.append(DkimResult("neutral", problem=str(e)))
                continue
            if sig.algorithm not in ALGORITHMS:     # RFC 8301 §3.1: rsa-sha1 never valid
                self.results.append(DkimResult("permerror", sig.domain, sig.selector, sig.b_text, sig.algorithm,
                                               sig.identity, "algorithm %s refused (RFC 8301 §3.1)" % sig.algorithm))
                continue
            self.results.append(None)
            jobs.append((len(self.results) - 1, sig))
        self.waiting = len(jobs)
        loop = getattr(self.resolver, "loop", None)
        if jobs and loop is not None and hasattr(loop, "call_later"):
            self._timer = loop.call_later(MAX_SECONDS, self._timeout)
        for index, sig in jobs:
            self.resolver.resolve(key_name(sig), dns.TYPE_TXT,
                                  lambda answer, index=index, sig=sig: self._answer(index, sig, answer))
        self._maybe_done()
        return self

    def _answer(self, index: int, sig: Signature, answer) -> None:
        if self.finished or self.waiting <= 0 or self.results[index] is not None or index in self.records:
            return
        kind = getattr(answer, "kind", None)
        base = (sig.domain, sig.selector, sig.b_text, sig.algorithm, sig.identity)
        if kind == "temporary":
            self.results[index] = DkimResult("temperror", *base, "key lookup: %s" % answer.message)
        elif kind is not None:
            self.results[index] = DkimResult("permerror", *base, "no key for %s (%s)" % (key_name(sig), kind))
        else:
            text, why = _record_text(answer.records)
            if text is None:
                self.results[index] = DkimResult("permerror", *base, why)
            else:
                self.records[index] = (sig, text)
        self.waiting -= 1
        self._maybe_done()

    def _timeout(self) -> None:
        """No key within MAX_SECONDS: what is still asked is temperror."""
        self._timer = None
        if self.finished or self.waiting <= 0:
            return
        for index, result in enumerate(self.results):
            if result is None and index not in self.records:
                self.results[index] = DkimResult("temperror", problem="no key within %d s" % MAX_SECONDS)
        self.waiting = 0
        self._maybe_done()

    def _check_all(self) -> Dict[int, DkimResult]:
        """The arithmetic (body hashes, RSA, Ed25519): where ``runner`` puts it."""
        out = {}
        for index, (sig, text) in self.records.items():
            try:
                out[index] = check_signature(sig, self.fields, self.body, text, self.now)
            except Exception:       # a bug: logged, and the message still gets a verdict
                log.exception("dkim: checking the signature of %s failed", sig.domain)
                out[index] = DkimResult("temperror", sig.domain, sig.selector, sig.b_text, sig.algorithm,
                                        sig.identity, "internal error")
        return out

    def _maybe_done(self) -> None:
        if self.finished or self.waiting > 0:
            return
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.records:
            self.done([r for r in self.results if r is not None])
            return

        def checked(found) -> None:
            if not isinstance(found, dict):         # the runner's job raised: said, and still a verdict
                found = {i: DkimResult("temperror", sig.domain, sig.selector, sig.b_text, problem="internal error")
                         for i, (sig, _t) in self.records.items()}
            for index, result in found.items():
                self.results[index] = result
            self.done([r for r in self.results if r is not None])
        self.runner(self._check_all, checked)


def verify(data: bytes, resolver, done: Callable[[List[DkimResult]], None], now: int,
           runner: Optional[Runner] = None) -> DkimVerification:
    """Verify every DKIM-Signature of ``data`` (RFC 6376 §6); ``now`` in seconds."""
    return DkimVerification(data, resolver, done, now, runner).start()


def authentication_results(host: str, results: Sequence[DkimResult]) -> bytes:
    """An ``Authentication-Results:`` field (RFC 8601 §2.2) with one dkim
    clause per signature (§2.7.1), folded one clause a line, with its CRLF."""
    clauses = [r.ar_text() for r in results] or ["dkim=none"]
    return ("Authentication-Results: %s;\r\n\t" % host + ";\r\n\t".join(clauses) + "\r\n").encode()


def add_authentication_results(data: bytes, host: str, results: Sequence[DkimResult]) -> bytes:
    """``data`` with our Authentication-Results on top, after removing any
    that arrived claiming our authserv-id (RFC 8601 §5: they are forgeries)."""
    fields, body = canon.split_message(data)
    kept = [raw for name, raw in fields
            if name != b"authentication-results"
            or (canon.field_value(raw) or "").strip().split(";")[0].strip().lower() != host.lower()]
    if len(kept) == len(fields):
        head = b""                  # nothing removed: the message as it came
        rest = canon.to_crlf(data)
    else:
        head, rest = b"".join(kept) + b"\r\n", body
    return authentication_results(host, results) + head + rest


# ---------------------------------------------------------------- signing

def key_algorithm(key) -> str:
    return ED25519_SHA256 if isinstance(key, ed25519.Ed25519PrivateKey) else RSA_SHA256


def sign(data: bytes, domain: str, selector: str, key, now: int,
         headers: Sequence[str] = SIGNED_HEADERS, oversign: Sequence[str] = OVERSIGNED,
         expire_after: Optional[int] = None) -> bytes:
    """A DKIM-Signature field (with its CRLF) for ``data`` (RFC 6376 §5):
    c=relaxed/relaxed, t=now, no l=; h= lists the ``headers`` present, plus
    one more of each ``oversign`` name (§8.15), always From (§5.4)."""
    fields, body = canon.split_message(data)
    present = [n for n, _ in fields]
    names: List[str] = []
    for name in headers:
        count = present.count(name.encode())
        if name in oversign or name == "from":
            count += 1
        names.extend([name] * count)
    tags = [("v", "1"), ("a", key_algorithm(key)), ("c", "relaxed/relaxed"), ("d", domain),
            ("s", selector), ("t", str(now))]
    if expire_after:
        tags.append(("x", str(now + expire_after)))
    digest, _ = body_hash(body, "relaxed")
    tags += [("h", ":".join(names)), ("bh", base64.b64encode(digest).decode()), ("b", "")]
    unsigned = canon.fold_tags("DKIM-Signature:", tags).encode()
    data_in = canon.header_hash_input(canon.select_headers(fields, names), unsigned + b"\r\n", "relaxed")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(hashlib.sha256(data_in).digest())      # RFC 8463 §3
    else:
        signature = rsa.sign_sha256(key, data_in)
    b64 = base64.b64encode(signature).decode()
    room = max(8, 76 - len(unsigned.rsplit(b"\n", 1)[-1]))      # fill the b= line, then 72 a line
    pieces = [b64[:room]] + [b64[i:i + 72] for i in range(room, len(b64), 72)]
    return unsigned + "\r\n\t".join(pieces).encode() + b"\r\n"


def sign_message(data: bytes, signers: Sequence[Tuple[str, str, object]], now: int) -> bytes:
    """``data`` with one DKIM-Signature per (domain, selector, key) on top (RFC 6376 §5.6)."""
    data = canon.to_crlf(data)
    added = b"".join(sign(data, d, s, k, now) for d, s, k in signers)
    return added + data
