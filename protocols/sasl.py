"""SASL server mechanisms shared by SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE.

Implements:

* the SASL framework rules the mechanisms need (RFC 4422 §5: client-first
  mechanisms get an empty first challenge when no initial response was sent;
  additional data with success is answered by an empty response);
* PLAIN (RFC 4616 §2);
* LOGIN (draft-murchison-sasl-login-00 §2, the widely deployed legacy
  mechanism; challenges ``Username:`` and ``Password:``);
* SCRAM-SHA-256 (RFC 5802 with SHA-256 per RFC 7677 §3), without channel
  binding: the -PLUS variant is never advertised (RFC 5802 §4, §6);
* the base64 decoding of client response lines with the "*" cancel
  (RFC 4954 §4, RFC 5034 §4, RFC 4954 §8 ABNF ``initial-response``);
* a minimal SCRAM-SHA-256 client (``ScramClient``) and ``plain_response`` for
  the tests of the protocol sessions.

Bytes in, bytes out: no sockets, no clock, no files.  Randomness comes from
``os.urandom`` through injectable callables.

Left out: channel binding (SCRAM-SHA-256-PLUS), security layers (none of the
mechanisms here has one, RFC 5802 §5.2 item 4), the server-final ``e=`` error
message (RFC 5802 §5.1 makes it OPTIONAL: a failure is reported by the
application protocol), CRAM-MD5, ANONYMOUS, full SASLprep (see ``saslprep``).

Passwords never appear in exception messages or in ``repr(SaslOutcome)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from store.scram import saslprep, scram_keys   # RFC 4013 prep and RFC 5802 §3 keys: one definition (store/scram.py)

PLAIN = "PLAIN"
LOGIN = "LOGIN"
SCRAM_SHA_256 = "SCRAM-SHA-256"
MECHANISMS = (PLAIN, LOGIN, SCRAM_SHA_256)

# RFC 4616 §2: servers MUST accept authzid, authcid and passwd up to and
# including 255 octets.  Identities are capped there; passwords get more room
# (long passphrases from password managers) -- still far below the line limit.
MAX_ID_OCTETS = 255
MAX_PASSWORD_OCTETS = 1024
# RFC 4954 §4: 12288 octets "is considered to be a sufficient line length
# limit for handling of deployed authentication mechanisms".
MAX_RESPONSE_OCTETS = 12288
# RFC 7677 §3: the iteration count announced SHOULD be at least 4096.
DEFAULT_ITERATIONS = 4096
# The client helper refuses absurd counts a hostile server could send to burn
# CPU (RFC 5802 §9 leaves the bound to the implementation).
MAX_CLIENT_ITERATIONS = 10_000_000
SALT_OCTETS = 16
NONCE_OCTETS = 18
_HASH = "sha256"
_DIGEST_OCTETS = hashlib.sha256().digest_size

# RFC 4422 §5 item 2b / RFC 4954 §4: a line made of a single "*" cancels.
CANCEL = b"*"
# RFC 4954 §8 ABNF: base64 = base64-terminal / (1*(4base64-char) [base64-terminal]).
_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# RFC 5802 §7: printable = %x21-2B / %x2D-7E  (printable ASCII except ",").
_PRINTABLE_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# RFC 5802 §7: attr-val = ALPHA "=" value; value = 1*value-char.
_ATTR_RE = re.compile(r"([A-Za-z])=(.+)", re.S)
# RFC 5802 §7: posit-number = %x31-39 *DIGIT.
_POSIT_RE = re.compile(r"[1-9][0-9]*")


class SaslError(Exception):
    """Malformed client data: the protocol answers 501 / -ERR / BAD.

    The message is short and never contains a password.
    """


class SaslCancelled(SaslError):
    """The client sent "*" (RFC 4954 §4, RFC 5034 §4)."""


@dataclass
class ScramCredentials:
    """What the server stores per user for SCRAM (RFC 5802 §3, RFC 7677 §3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass
class SaslOutcome:
    """The result of a finished exchange, handed to ``backend.authenticate``.

    PLAIN/LOGIN carry the password for the backend to verify, exactly as the
    client sent it (UTF-8 decoded, not SASLprep'd here: the store's
    ``verify_password`` applies the same SASLprep-lite before scrypt); SCRAM has verified the proof itself
    (``scram_verified``), with SASLprep-lite applied on both sides.
    ``authcid``/``authzid`` are SASLprep'd (RFC 4616 §2, RFC 5802 §5.1);
    ``authzid`` is "" when the client asked for none (RFC 4422 §3.4.1).
    """

    mechanism: str
    authcid: str
    authzid: str
    password: Optional[str] = field(default=None, repr=False)
    scram_verified: Optional[bool] = None
    # With ``hold_server_final``: the SCRAM server-final-message ("v=...") that the
    # session sends only once ``backend.authenticate`` has accepted the attempt.
    server_final: Optional[bytes] = None


@dataclass(frozen=True)
class AuthTemporary:
    """The third answer of ``backend.authenticate(ctx, outcome, done)``.

    The contract every protocol session uses: ``done(user)`` = authenticated
    as ``user``; ``done(None)`` = wrong credentials; ``done(AuthTemporary)`` =
    not checked, try again later (the address is locked out, the account is
    throttled, or the password-check lane is full).  SMTP answers ``454 4.7.0``
    (RFC 4954 §6), POP3 ``-ERR [SYS/TEMP]`` (RFC 3206 §4), IMAP will answer
    ``NO [UNAVAILABLE]`` (RFC 5530 §3).  ``text`` is the one line for the
    client; the backend has logged the refusal (``reason``) already.
    """

    reason: str     # "lockout", "throttled" or "busy"
    text: str


class Authenticator(Protocol):
    """What SMTP, POP3 (and IMAP) sessions need from the backend to authenticate."""

    def scram_lookup(self, username: str) -> "ScramCredentials":
        """SCRAM secrets for ``username``, stable fake ones for an unknown name (RFC 5802 §9)."""

    def authenticate(self, ctx, outcome: "SaslOutcome", done: Callable[[object], None]) -> None:
        """Verify and count the attempt; later ``done(user)``, ``done(None)`` (wrong
        credentials) or ``done(AuthTemporary)`` (not checked: try again later)."""


AUTH_LOCKOUT = AuthTemporary("lockout", "Too many failed logins from your address, try again later")
AUTH_THROTTLED = AuthTemporary("throttled", "Too many failed logins for this account, try again later")
AUTH_BUSY = AuthTemporary("busy", "Too many password checks in progress, try again later")


def offered_mechanisms(plaintext_ok: bool) -> List[str]:
    """The mechanism names to advertise.

    Plaintext mechanisms only over TLS or where the operator allows them
    (RFC 4954 §4 / RFC 4616 §5 security considerations); SCRAM always.
    """
    if plaintext_ok:
        return [PLAIN, LOGIN, SCRAM_SHA_256]
    return [SCRAM_SHA_256]


def decode_response(line: bytes) -> bytes:
    """Decode one client response line (terminator already removed).

    RFC 4954 §4: "*" cancels (``SaslCancelled``); any character outside the
    base64 alphabet and misplaced padding are rejected (``SaslError``).
    RFC 4954 §4 / §8 ``initial-response``: "=" is a present-but-empty
    response; an empty line is also an empty response (``*(CRLF [base64])``).
    """
    line = bytes(line)
    if line == CANCEL:
        raise SaslCancelled("authentication cancelled")
    if len(line) > MAX_RESPONSE_OCTETS:
        raise SaslError("response too long")
    if line == b"=":
        return b""
    if not _BASE64_RE.fullmatch(line):
        raise SaslError("invalid base64")
    try:
        return binascii.a2b_base64(line)
    except binascii.Error:
        raise SaslError("invalid base64") from None


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, _HASH).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i); Hi is PBKDF2."""
    return hashlib.pbkdf2_hmac(_HASH, saslprep(password).encode("utf-8"), salt, iterations)


def make_scram_credentials(password: str, salt: Optional[bytes] = None,
                           iterations: int = DEFAULT_ITERATIONS) -> ScramCredentials:
    """Derive the stored SCRAM-SHA-256 keys for ``password`` (RFC 5802 §3).

    The math is store/scram.py's ``scram_keys``, which the users file uses
    to compute the same keys at ``user add``; this is its protocol-side name."""
    if iterations < 1:
        raise ValueError("iterations must be positive")  # RFC 5802 §7 posit-number
    keys = scram_keys(password, os.urandom(SALT_OCTETS) if salt is None else bytes(salt), iterations)
    return ScramCredentials(salt=keys.salt, iterations=keys.iterations,
                            stored_key=keys.stored_key, server_key=keys.server_key)


def _default_nonce() -> bytes:
    """A fresh printable nonce part: base64 of random octets (RFC 5802 §5.1 "r")."""
    return base64.b64encode(os.urandom(NONCE_OCTETS))


# ---------------------------------------------------------------------------
# SCRAM message syntax (RFC 5802 §7)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("invalid UTF-8") from None


def scram_escape(name: str) -> str:
    """saslname escaping, RFC 5802 §5.1: "," → "=2C" and "=" → "=3D"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_unescape(value: str) -> str:
    """Undo saslname escaping; RFC 5802 §5.1: any other "=" MUST fail."""
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise SaslError("invalid username encoding")
    return value.replace("=2C", ",").replace("=3D", "=")


def _split_attrs(text: str) -> List[Tuple[str, str]]:
    """Split ``attr-val *("," attr-val)`` (RFC 5802 §7) into (name, value) pairs."""
    pairs = []
    for part in text.split(","):
        m = _ATTR_RE.fullmatch(part)
        if not m or "\x00" in part:
            raise SaslError("malformed attribute")
        pairs.append((m.group(1), m.group(2)))
    return pairs


def _expect(pairs: List[Tuple[str, str]], index: int, name: str) -> str:
    """The value of the attribute required at ``index`` (fixed order, RFC 5802 §5.1)."""
    if index >= len(pairs) or pairs[index][0] != name:
        raise SaslError("missing attribute " + name)
    return pairs[index][1]


def _b64_attr(value: str) -> bytes:
    """An attribute whose value is ``base64`` (RFC 5802 §7), decoded strictly."""
    raw = value.encode("ascii", "replace")
    if not raw or not _BASE64_RE.fullmatch(raw):
        raise SaslError("invalid base64")
    return binascii.a2b_base64(raw)


def _nonce_attr(value: str) -> str:
    if not _PRINTABLE_RE.fullmatch(value):
        raise SaslError("invalid nonce")  # RFC 5802 §7: nonce is printable
    return value


def parse_client_first(text: str) -> Tuple[str, str, str, str, str]:
    """client-first-message (RFC 5802 §7) → (gs2_header, authzid, username, c_nonce, bare).

    The gs2-cbind-flag must be "n" or "y": we never advertise -PLUS, so "y"
    is acceptable (RFC 5802 §6) and "p" MUST fail (RFC 5802 §6).
    """
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise SaslError("malformed gs2 header")
    flag, authz, bare = parts
    if flag.startswith("p="):
        raise SaslError("channel binding not supported")
    if flag not in ("n", "y"):
        raise SaslError("malformed gs2 header")  # RFC 5802 §5: must start n, y or p
    authzid = ""
    if authz:
        if not authz.startswith("a=") or len(authz) == 2:
            raise SaslError("malformed authzid")
        authzid = scram_unescape(authz[2:])
    pairs = _split_attrs(bare)
    if pairs and pairs[0][0] == "m":
        raise SaslError("extensions not supported")  # RFC 5802 §5.1 "m"
    username = scram_unescape(_expect(pairs, 0, "n"))
    c_nonce = _nonce_attr(_expect(pairs, 1, "r"))
    # pairs[2:] are optional extensions: ignored (RFC 5802 §5.1).
    return flag + "," + authz + ",", authzid, username, c_nonce, bare


def parse_client_final(text: str) -> Tuple[bytes, str, bytes, str]:
    """client-final-message (RFC 5802 §7) → (cbind_input, nonce, proof, without_proof)."""
    head, sep, proof_part = text.rpartition(",")
    if not sep or not proof_part.startswith("p="):
        raise SaslError("missing attribute p")
    pairs = _split_attrs(head)
    cbind = _b64_attr(_expect(pairs, 0, "c"))
    nonce = _nonce_attr(_expect(pairs, 1, "r"))
    proof = _b64_attr(proof_part[2:])
    return cbind, nonce, proof, head


def _check_size(data: bytes, limit: int, what: str) -> None:
    if len(data) > limit:
        raise SaslError(what + " too long")


# ---------------------------------------------------------------------------
# The server


class SaslServer:
    """One server-side SASL exchange, driven by ``step``.

    ``step(response)`` takes the decoded client data (``None`` when the
    command carried no initial response) and returns ``(challenge, None)``
    while the exchange goes on, or ``(None, outcome)`` when it is finished.
    Malformed data raises ``SaslError`` and ends the exchange.

    ``scram_lookup(username)`` must return credentials for every name (fake,
    stable ones for unknown users), so an unknown user is indistinguishable
    from a wrong password.  ``nonce()`` returns the server's printable nonce
    part (RFC 5802 §7 ``s-nonce``); the default is base64 of random octets.

    ``hold_server_final=True`` (what the protocol sessions use): a verified
    SCRAM proof does not produce the server-final-message as a challenge at
    once (that would tell a guesser the proof was right before the lockout and
    the account penalty had a say); ``step`` returns the outcome with
    ``outcome.server_final`` set, the session asks the backend, and only if it
    accepts sends ``server_final`` as a challenge and notes the user in
    ``approved``; the client's (empty) response to it is stepped as usual and
    returns the same outcome again, now to be answered with success.
    """

    def __init__(self, mechanism: str,
                 scram_lookup: Callable[[str], ScramCredentials],
                 nonce: Callable[[], bytes] = _default_nonce, hold_server_final: bool = False):
        self.hold_server_final = hold_server_final
        self.approved: Optional[str] = None     # set by the session once the backend accepted
        self.mechanism = mechanism.upper()  # RFC 4954 §4: AUTH plain == AUTH PLAIN
        steps: Dict[str, Callable] = {
            PLAIN: self._plain,
            LOGIN: self._login_username,
            SCRAM_SHA_256: self._scram_first,
        }
        if self.mechanism not in steps:
            raise SaslError("unsupported mechanism")
        self._next: Optional[Callable] = steps[self.mechanism]
        self._lookup = scram_lookup
        self._nonce = nonce
        self._started = False
        self._state: Dict[str, object] = {}

    @property
    def finished(self) -> bool:
        return self._next is None

    def step(self, response: Optional[bytes]) -> Tuple[Optional[bytes], Optional[SaslOutcome]]:
        """Feed one client response; see the class docstring."""
        if self._next is None:
            raise SaslError("exchange finished")
        first, self._started = not self._started, True
        if response is None:
            if not first:
                raise SaslError("missing response")
            # RFC 4422 §5 item 2a: client-first mechanism without an
            # initial response → the first challenge is empty.
            # LOGIN is server-first: its first challenge is the prompt.
            return (b"Username:" if self.mechanism == LOGIN else b""), None
        handler, self._next = self._next, None  # an error ends the exchange
        _check_size(response, MAX_RESPONSE_OCTETS, "response")
        return handler(bytes(response))

    # -- PLAIN (RFC 4616 §2) ----------------------------------------------

    def _plain(self, message: bytes) -> Tuple[None, SaslOutcome]:
        """message = [authzid] UTF8NUL authcid UTF8NUL passwd (RFC 4616 §2)."""
        parts = message.split(b"\x00")
        if len(parts) != 3:
            raise SaslError("malformed PLAIN message")  # NUL MUST NOT appear in the fields
        authz, authc, passwd = parts
        if not authc or not passwd:
            raise SaslError("malformed PLAIN message")  # authcid, passwd = 1*SAFE
        _check_size(authz, MAX_ID_OCTETS, "authzid")
        _check_size(authc, MAX_ID_OCTETS, "authcid")
        _check_size(passwd, MAX_PASSWORD_OCTETS, "password")
        authcid = _prepared_id(authc)
        return None, SaslOutcome(PLAIN, authcid, _prepared_id(authz) if authz else "",
                                 password=_utf8(passwd))

    # -- LOGIN (draft-murchison-sasl-login-00 §2) -------------------------

    def _login_username(self, data: bytes) -> Tuple[bytes, None]:
        """The username, as answer to "Username:" or as an initial response.

        DEVIATION(draft-murchison-sasl-login-00 §2): the draft has no initial
        response; deployed clients (Outlook, others) send the username there,
        so it is accepted like every widespread server does.
        """
        if not data:
            raise SaslError("empty username")
        _check_size(data, MAX_ID_OCTETS, "username")
        self._state["authcid"] = _prepared_id(data)
        self._next = self._login_password
        return b"Password:", None

    def _login_password(self, data: bytes) -> Tuple[None, SaslOutcome]:
        if not data:
            raise SaslError("empty password")
        _check_size(data, MAX_PASSWORD_OCTETS, "password")
        return None, SaslOutcome(LOGIN, str(self._state["authcid"]), "", password=_utf8(data))

    # -- SCRAM-SHA-256 (RFC 5802 §5, RFC 7677 §3) -------------------------

    def _scram_first(self, data: bytes) -> Tuple[bytes, None]:
        """client-first-message → server-first-message (RFC 5802 §5, §7)."""
        gs2, authzid, username, c_nonce, bare = parse_client_first(_utf8(data))
        _check_size(username.encode("utf-8"), MAX_ID_OCTETS, "username")
        authcid = saslprep(username)  # RFC 5802 §5.1 "n": the server MUST prepare it
        if not authcid:
            raise SaslError("empty username")  # RFC 5802 §5.1 "n": SHOULD abort
        s_nonce = self._nonce().decode("ascii")
        if not _PRINTABLE_RE.fullmatch(s_nonce):
            raise ValueError("server nonce must be printable (RFC 5802 §7)")
        creds = self._lookup(authcid)
        nonce = c_nonce + s_nonce
        server_first = "r=%s,s=%s,i=%d" % (
            nonce, base64.b64encode(creds.salt).decode("ascii"), creds.iterations)
        self._state.update(gs2=gs2, authzid=saslprep(authzid), authcid=authcid, nonce=nonce,
                           creds=creds, bare=bare, server_first=server_first)
        self._next = self._scram_final
        return server_first.encode("ascii"), None

    def _scram_final(self, data: bytes):
        """client-final-message → server-final-message or a failed outcome (RFC 5802 §5)."""
        cbind, nonce, proof, without_proof = parse_client_final(_utf8(data))
        st = self._state
        # RFC 5802 §6: the server MUST validate "c=": for "n"/"y" it is the gs2 header alone.
        if cbind != str(st["gs2"]).encode("utf-8"):
            raise SaslError("channel bindings don't match")
        # RFC 5802 §5.1 "r": the nonce MUST be the one the server sent.
        if not hmac.compare_digest(nonce.encode("ascii"), str(st["nonce"]).encode("ascii")):
            raise SaslError("nonce mismatch")
        if len(proof) != _DIGEST_OCTETS:
            raise SaslError("invalid proof length")
        creds: ScramCredentials = st["creds"]  # type: ignore[assignment]
        auth_message = ",".join((str(st["bare"]), str(st["server_first"]), without_proof))
        auth_message_b = auth_message.encode("utf-8")
        client_key = _xor(proof, _hmac(creds.stored_key, auth_message_b))  # RFC 5802 §3
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key)
        outcome = SaslOutcome(SCRAM_SHA_256, str(st["authcid"]), str(st["authzid"]),
                              scram_verified=ok)
        if not ok:
            # RFC 5802 §5.1 "e": the server-final-message is OPTIONAL on failure.
            return None, outcome
        signature = _hmac(creds.server_key, auth_message_b)
        st["outcome"] = outcome
        self._next = self._scram_done
        if self.hold_server_final:
            outcome.server_final = b"v=" + base64.b64encode(signature)
            return None, outcome
        return b"v=" + base64.b64encode(signature), None

    def _scram_done(self, data: bytes) -> Tuple[None, SaslOutcome]:
        """RFC 4422 §5 item 2b: additional data with success is answered empty."""
        if data:
            raise SaslError("expected empty response")
        return None, self._state["outcome"]  # type: ignore[return-value]


def _prepared_id(data: bytes) -> str:
    """An identity decoded from UTF-8 and SASLprep'd (RFC 4616 §2, RFC 4954 §4)."""
    text = saslprep(_utf8(data))
    if not text:
        raise SaslError("empty identity")  # RFC 4616 §2: empty after preparation fails
    return text


# ---------------------------------------------------------------------------
# Client helpers (for tests of the protocol sessions and the SMTP client)


def plain_response(authcid: str, password: str, authzid: str = "") -> bytes:
    """The PLAIN client message (RFC 4616 §2), not yet base64-encoded."""
    return b"\x00".join(s.encode("utf-8") for s in (authzid, authcid, password))


class ScramClient:
    """A minimal SCRAM-SHA-256 client without channel binding (RFC 5802 §5).

    ``first()`` → client-first-message; ``final(server_first)`` →
    client-final-message; ``verify(server_final)`` → whether the server
    proved knowledge of the ServerKey.  Raises ``SaslError`` on a malformed
    or dishonest server-first-message.  ``nonce`` is the printable client
    nonce (default: base64 of random octets).
    """

    def __init__(self, username: str, password: str, nonce: Optional[bytes] = None,
                 authzid: str = ""):
        self.username = username
        self.password = password
        self.authzid = authzid
        self.nonce = (nonce if nonce is not None else _default_nonce()).decode("ascii")
        if not _PRINTABLE_RE.fullmatch(self.nonce):
            raise ValueError("client nonce must be printable (RFC 5802 §7)")
        authz = "a=" + scram_escape(authzid) if authzid else ""
        self._gs2 = "n," + authz + ","
        self._bare = "n=%s,r=%s" % (scram_escape(username), self.nonce)
        self._server_signature: Optional[bytes] = None

    def first(self) -> bytes:
        """client-first-message = gs2-header client-first-message-bare (RFC 5802 §7)."""
        return (self._gs2 + self._bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        """client-final-message for ``server_first`` (RFC 5802 §3, §7)."""
        text = _utf8(server_first)
        pairs = _split_attrs(text)
        if pairs and pairs[0][0] == "m":
            raise SaslError("extensions not supported")
        nonce = _nonce_attr(_expect(pairs, 0, "r"))
        salt = _b64_attr(_expect(pairs, 1, "s"))
        iter_text = _expect(pairs, 2, "i")
        if not _POSIT_RE.fullmatch(iter_text) or int(iter_text) > MAX_CLIENT_ITERATIONS:
            raise SaslError("invalid iteration count")
        # RFC 5802 §5.1 "r": the client MUST verify its nonce is the prefix.
        if not nonce.startswith(self.nonce) or nonce == self.nonce:
            raise SaslError("nonce mismatch")
        salted = _salted_password(self.password, salt, int(iter_text))
        client_key = _hmac(salted, b"Client Key")
        cbind = base64.b64encode(self._gs2.encode("utf-8")).decode("ascii")
        without_proof = "c=%s,r=%s" % (cbind, nonce)
        auth_message = ",".join((self._bare, text, without_proof)).encode("utf-8")
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        proof = base64.b64encode(_xor(client_key, signature)).decode("ascii")
        return (without_proof + ",p=" + proof).encode("ascii")

    def verify(self, server_final: bytes) -> bool:
        """True iff server-final-message carries the expected "v=" (RFC 5802 §5)."""
        if self._server_signature is None:
            return False
        try:
            pairs = _split_attrs(_utf8(server_final))
            if pairs[0][0] != "v":  # "e=..." or anything else: failure
                return False
            signature = _b64_attr(pairs[0][1])
        except SaslError:
            return False
        return hmac.compare_digest(signature, self._server_signature)
