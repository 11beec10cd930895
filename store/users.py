"""Users, aliases and recipient resolution (the "directory" of local mail).

Files (design.md, Store):

``DATA/users``
    one JSON object per line: ``{"address", "scrypt", "scram": {...}}``.
    Mode 0600: it holds password hashes.  ``scrypt`` is
    ``"scrypt$<n>$<r>$<p>$<salt b64>$<key b64>"`` so the parameters can change
    without breaking old entries.  ``scram`` holds the SCRAM-SHA-256 server
    secrets of RFC 5802 §3 / RFC 7677 §3 (salt, iteration count, StoredKey,
    ServerKey); the password itself is never stored.
``DATA/aliases``
    one JSON object per line: ``{"alias", "targets": [...]}``.

Both are rewritten atomically (tmp file, fsync, ``os.replace``, fsync of the
directory) under an ``fcntl`` lock on ``<file>.lock``, and every change
re-reads the file under that lock first, so the CLI and a running server never
lose each other's updates.  Readers use ``reload_if_changed()``.

Addresses (``normalize_address``):
- exactly one ``@``, both parts non-empty, no whitespace or control
  characters; local part at most 64 octets (RFC 5321 §4.5.3.1.1), domain at
  most 255 octets (RFC 5321 §4.5.3.1.2), labels 1-63 octets (RFC 1035 §2.3.4).
- DEVIATION(RFC 5321 §2.4): local parts are case-insensitive here (lowercased),
  although §2.4 leaves their case to the receiving server; every common
  mail server does the same and users expect it.
- Domains are stored as lowercase U-labels (RFC 5890 terms); an A-label
  ("xn--...") given on lookup is converted with the stdlib ``idna`` codec
  (IDNA 2003, RFC 3490 ToUnicode), so both spellings find the same user.
- A trailing-dot domain ("example.org.") is rejected: it never names a local
  domain (no "open relay through the root label" trick).
- Characters that could be read as routing or that are unsafe in a file name
  are refused in local parts: ``/ \\ % ! " @`` and a leading ``.``
  (DEVIATION(RFC 5322 §3.2.3): atext allows "/", "%" and "!"; the "%" hack
  and "!" UUCP paths are old relay routes, RFC 5321 §3.6.1 / Appendix C, and
  "/" would escape the Maildir path).  SMTPUTF8 local parts (RFC 6531 §3.3)
  are allowed.

Passwords are prepared with the same "SASLprep-lite" as protocols/sasl.py
(RFC 4013 §2.1 mapping + §2.2 NFKC) before both scrypt and the SCRAM Hi() of
RFC 5802 §2.2, as RFC 4616 §2 (PLAIN) and RFC 5802 §2.2 ask.
DEVIATION(RFC 4013 §2.3-§2.5): prohibited-output, bidi and unassigned checks
are not done (same as protocols/sasl.py, which store/ must not import).
"""

from __future__ import annotations

import functools
import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import stringprep
import threading
import unicodedata
from collections import namedtuple
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple
from store.fsutil import write_atomic

log = logging.getLogger("mailsrv.store")

# RFC 5321 §4.5.3.1.1: maximum local-part length, octets.
MAX_LOCALPART = 64
# RFC 5321 §4.5.3.1.2: maximum domain length, octets.
MAX_DOMAIN = 255
# RFC 1035 §2.3.4: a label is at most 63 octets.
MAX_LABEL = 63
# Not an RFC number: bound on alias expansion so loops and fan-out bombs stop.
MAX_ALIAS_DEPTH = 10

# Password hashing: scrypt (RFC 7914 §2 parameters): N=2**14, r=8, p=1;
# 16-byte salt, 64-byte derived key.
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_LEN = 16
SCRYPT_DKLEN = 64
# 128 * r * N octets are needed; leave headroom for larger parameters.
SCRYPT_MAXMEM = 256 * 1024 * 1024
# RFC 7677 §4: SCRAM-SHA-256 iteration count should be at least 4096.
SCRAM_ITERATIONS = 4096
SCRAM_SALT_LEN = 16

_FORBIDDEN_LOCAL = set('/\\%!"@')

ScramKeys = namedtuple("ScramKeys", "salt iterations stored_key server_key")
ScramKeys.__doc__ = "SCRAM server secrets (RFC 5802 §3): salt, i, StoredKey, ServerKey."


# ---------------------------------------------------------------- addresses

def _has_bad_char(text: str) -> bool:
    """Whitespace or control characters (C0, DEL, C1) anywhere."""
    return any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


@functools.lru_cache(maxsize=4096)      # pure, and asked several times per RCPT
def normalize_domain(domain: str) -> str:
    """Canonical domain: lowercase U-labels; raises ValueError.

    "xn--" labels are turned into U-labels (RFC 3490 §4.2 ToUnicode via the
    stdlib codec); the result must encode back to ASCII (RFC 3490 §4.1
    ToASCII) within the length limits of RFC 1035 §2.3.4 / RFC 5321 §4.5.3.1.2.
    """
    if not domain or _has_bad_char(domain) or domain.endswith(".") or "/" in domain:
        raise ValueError("invalid domain")
    if domain.startswith("[") or domain.startswith("."):
        raise ValueError("address literals and empty labels are not local domains")
    labels = domain.split(".")
    out = []
    for label in labels:
        if not label:
            raise ValueError("empty label")
        if label.lower().startswith("xn--"):
            try:
                label = label.lower().encode("ascii").decode("idna")
            except (UnicodeError, IndexError, OverflowError) as exc:  # bad punycode
                raise ValueError("invalid A-label") from exc
        out.append(label.lower())
    canon = ".".join(out)
    try:
        ace = canon.encode("idna")
    except UnicodeError as exc:
        raise ValueError("invalid domain") from exc
    if len(ace) > MAX_DOMAIN or any(len(l) > MAX_LABEL for l in ace.split(b".")):
        raise ValueError("domain too long")
    return canon


def normalize_localpart(local: str) -> str:
    """Canonical (lowercased) local part; raises ValueError (see module doc)."""
    if not local or _has_bad_char(local) or local.startswith("."):
        raise ValueError("invalid local part")
    if any(c in _FORBIDDEN_LOCAL for c in local):
        raise ValueError("forbidden character in local part")
    local = local.lower()
    if len(local.encode("utf-8")) > MAX_LOCALPART:
        raise ValueError("local part too long")
    return local


def normalize_address(address: str) -> str:
    """``" User@Example.ORG "`` → ``"user@example.org"``; raises ValueError."""
    if not isinstance(address, str):
        raise ValueError("address must be text")
    address = address.strip()
    if address.count("@") != 1:
        raise ValueError("address needs exactly one @")
    local, domain = address.split("@")
    return normalize_localpart(local) + "@" + normalize_domain(domain)


# ------------------------------------------------------------ password math

def saslprep(text: str) -> str:
    """SASLprep-lite: RFC 4013 §2.1 mapping (B.1 characters map to nothing,
    C.1.2 spaces to " ") plus §2.2 NFKC normalisation.  protocols/sasl.py uses
    this same function, so stored SCRAM keys and logins always agree.

    DEVIATION(RFC 4013 §2.3, §2.4, §2.5): the prohibited-output, bidi and
    unassigned-code-point checks are not done, and NFKC uses the running
    Python's Unicode version instead of Unicode 3.2.  A string a full
    SASLprep would reject is hashed as mapped here; strings it accepts map
    to the same result, so clients with a full SASLprep still interoperate.
    """
    mapped = []
    for ch in text:
        if stringprep.in_table_b1(ch):
            continue
        if stringprep.in_table_c12(ch):
            ch = " "
        mapped.append(ch)
    return unicodedata.normalize("NFKC", "".join(mapped))


def scrypt_hash(password: str, salt: Optional[bytes] = None) -> str:
    """The stored scrypt string for ``password`` (parameters kept inside)."""
    salt = os.urandom(SCRYPT_SALT_LEN) if salt is None else salt
    key = hashlib.scrypt(saslprep(password).encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                         p=SCRYPT_P, dklen=SCRYPT_DKLEN, maxmem=SCRYPT_MAXMEM)
    return "scrypt$%d$%d$%d$%s$%s" % (SCRYPT_N, SCRYPT_R, SCRYPT_P,
                                      _b64(salt), _b64(key))


def scrypt_check(password: str, stored: str) -> bool:
    """Recompute with the stored parameters; compare in constant time."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(saslprep(password).encode("utf-8"), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=len(want),
                             maxmem=SCRYPT_MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def scram_keys(password: str, salt: Optional[bytes] = None,
               iterations: int = SCRAM_ITERATIONS) -> ScramKeys:
    """RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i) (PBKDF2, §2.2);
    ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
    ServerKey = HMAC(SaltedPassword, "Server Key"); H = SHA-256 (RFC 7677 §3)."""
    salt = os.urandom(SCRAM_SALT_LEN) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt,
                                 iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return ScramKeys(salt, iterations, stored_key, server_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# A fixed hash to burn the same scrypt time for unknown users.
_DUMMY_HASH = scrypt_hash("\x00mailsrv-no-such-user", salt=b"\x00" * SCRYPT_SALT_LEN)


# ------------------------------------------------------ atomic record files

class _RecordFile:
    """A JSON-lines file rewritten atomically under an fcntl lock file."""

    def __init__(self, path: str, key: str):
        self.path = path
        self._key = key
        self._lock_path = path + ".lock"
        self._mutex = threading.RLock()
        self._records: Dict[str, dict] = {}
        self._domains: frozenset = frozenset()
        self._signature: Optional[Tuple[int, int, int]] = None
        self._load()

    def _stat_signature(self) -> Optional[Tuple[int, int, int]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        """Read the file (missing = empty); malformed lines are logged and skipped."""
        records: Dict[str, dict] = {}
        sig = self._stat_signature()
        try:
            with open(self.path, "r", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        records[rec[self._key]] = rec
                    except (ValueError, KeyError, TypeError):
                        log.error("%s:%d: malformed line skipped", self.path, lineno)
        except FileNotFoundError:
            pass
        with self._mutex:
            self._set(records, sig)

    def _set(self, records: Dict[str, dict], sig) -> None:
        self._records = records
        self._domains = frozenset(a.split("@", 1)[1] for a in records)
        self._signature = sig

    def domains(self) -> Set[str]:
        """Domains of all records (cached per load)."""
        return set(self._domains)

    def has_domain(self, domain: str) -> bool:
        return domain in self._domains

    def reload_if_changed(self) -> bool:
        """Re-read when mtime_ns, size or inode changed; True if re-read."""
        if self._stat_signature() == self._signature:
            return False
        self._load()
        return True

    def _modify(self, change: Callable[[Dict[str, dict]], None]) -> None:
        """Lock, re-read, apply ``change`` to a copy, write it atomically."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            with self._mutex:
                self._load()
                records = dict(self._records)
                change(records)
                self._write(records)
                self._set(records, self._stat_signature())
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _write(self, records: Dict[str, dict]) -> None:
        data = "".join(json.dumps(records[k], sort_keys=True) + "\n"
                       for k in sorted(records)).encode("utf-8")
        write_atomic(self.path, data)   # one writer at a time: we hold the flock


class UserDB(_RecordFile):
    """Local users: DATA/users (see module docstring)."""

    def __init__(self, data_dir: str):
        super().__init__(os.path.join(data_dir, "users"), "address")

    def add(self, address: str, password: str) -> None:
        """Create a user; ValueError if the address is invalid or taken."""
        addr = normalize_address(address)
        rec = self._new_record(addr, password)

        def change(records: Dict[str, dict]) -> None:
            if addr in records:
                raise ValueError("user exists: %s" % addr)
            records[addr] = rec
        self._modify(change)

    def set_password(self, address: str, password: str) -> None:
        """Replace scrypt hash and SCRAM keys; ValueError if unknown."""
        addr = normalize_address(address)
        rec = self._new_record(addr, password)

        def change(records: Dict[str, dict]) -> None:
            if addr not in records:
                raise ValueError("no such user: %s" % addr)
            records[addr] = rec
        self._modify(change)

    def delete(self, address: str) -> None:
        """Remove a user; ValueError if unknown.  The mailbox is MailStore's."""
        addr = normalize_address(address)

        def change(records: Dict[str, dict]) -> None:
            if records.pop(addr, None) is None:
                raise ValueError("no such user: %s" % addr)
        self._modify(change)

    def list(self) -> List[str]:
        return sorted(self._records)

    def canonical(self, address: str) -> Optional[str]:
        """The stored form of ``address`` if it is a user, else None."""
        try:
            addr = normalize_address(address)
        except ValueError:
            return None
        return addr if addr in self._records else None

    def exists(self, address: str) -> bool:
        return self.canonical(address) is not None

    def verify_password(self, address: str, password: str) -> bool:
        """scrypt + hmac.compare_digest.  Unknown users cost the same time
        (a dummy hash is checked) so timing does not reveal who exists."""
        addr = self.canonical(address)
        rec = self._records.get(addr) if addr else None
        stored = rec.get("scrypt", "") if rec else ""
        ok = scrypt_check(password, stored or _DUMMY_HASH)
        return bool(ok and rec and stored)

    def scram_credentials(self, address: str) -> Optional[ScramKeys]:
        """The SCRAM-SHA-256 secrets (RFC 5802 §3), None if unknown."""
        addr = self.canonical(address)
        rec = self._records.get(addr) if addr else None
        if not rec or "scram" not in rec:
            return None
        s = rec["scram"]
        return ScramKeys(base64.b64decode(s["salt"]), int(s["iterations"]),
                         base64.b64decode(s["stored_key"]), base64.b64decode(s["server_key"]))


    @staticmethod
    def _new_record(addr: str, password: str) -> dict:
        if not isinstance(password, str) or not password:
            raise ValueError("empty password")
        keys = scram_keys(password)
        return {"address": addr, "scrypt": scrypt_hash(password),
                "scram": {"salt": _b64(keys.salt), "iterations": keys.iterations,
                          "stored_key": _b64(keys.stored_key),
                          "server_key": _b64(keys.server_key)}}


class AliasDB(_RecordFile):
    """Aliases: DATA/aliases.  ``*@domain`` is a catch-all for that domain."""

    def __init__(self, data_dir: str):
        super().__init__(os.path.join(data_dir, "aliases"), "alias")

    def add(self, alias: str, targets: List[str]) -> None:
        """Set ``alias`` → ``targets`` (replacing earlier targets)."""
        key = _normalize_alias(alias)
        canon = [normalize_address(t) for t in targets]
        if not canon:
            raise ValueError("alias needs at least one target")
        canon = list(dict.fromkeys(canon))

        def change(records: Dict[str, dict]) -> None:
            records[key] = {"alias": key, "targets": canon}
        self._modify(change)

    def delete(self, alias: str) -> None:
        key = _normalize_alias(alias)

        def change(records: Dict[str, dict]) -> None:
            if records.pop(key, None) is None:
                raise ValueError("no such alias: %s" % key)
        self._modify(change)

    def list(self) -> Dict[str, List[str]]:
        return {k: list(v["targets"]) for k, v in sorted(self._records.items())}

    def targets(self, address: str) -> Optional[List[str]]:
        rec = self._records.get(address)
        return list(rec["targets"]) if rec else None


def _normalize_alias(alias: str) -> str:
    alias = alias.strip()
    if alias.startswith("*@"):
        return "*@" + normalize_domain(alias[2:])
    return normalize_address(alias)


# ---------------------------------------------------------------- resolution

class Directory:
    """Recipient resolution over UserDB + AliasDB (design.md, Store).

    Order for ``local@domain`` (domain must be local): exact user; alias
    (targets expanded recursively, remote targets returned as-is); plus
    addressing "user+tag" → "user"; "postmaster" (RFC 5321 §4.5.1: every
    domain must accept it) → the configured postmaster; ``*@domain``
    catch-all alias.  If no postmaster is configured (``postmaster`` None),
    postmaster mail goes to the first user (sorted) of that domain, else the
    first user of all, else to the mailbox "postmaster@<domain>" itself
    (created on delivery); a configured postmaster that resolves to nothing
    gets its own mailbox.  So postmaster is always accepted.
    ``postmaster_target`` says where, for the server's start-up lines.
    """

    def __init__(self, users: UserDB, aliases: AliasDB, local_domains: Iterable[str],
                 postmaster: Optional[str] = None):
        self.users = users
        self.aliases = aliases
        self.local_domains = {normalize_domain(d.strip()) for d in local_domains}
        self.postmaster = normalize_address(postmaster) if postmaster else None

    def is_local_domain(self, domain: str) -> bool:
        """Configured ∪ user ∪ alias domains; case-insensitive; "a.b." is not local."""
        try:
            dom = normalize_domain(domain.strip())
        except (ValueError, AttributeError):
            return False
        return (dom in self.local_domains or self.users.has_domain(dom)
                or self.aliases.has_domain(dom))

    def resolve(self, localpart: str, domain: str) -> Optional[List[str]]:
        """Canonical delivery addresses for ``localpart@domain``; None if unknown."""
        try:
            addr = normalize_localpart(localpart) + "@" + normalize_domain(domain.strip())
        except (ValueError, AttributeError):
            return None
        if not self.is_local_domain(addr.split("@", 1)[1]):
            return None
        out: List[str] = []
        self._expand(addr, 0, set(), out)
        return out or None

    def _expand(self, addr: str, depth: int, seen: Set[str], out: List[str]) -> None:
        if addr in seen or depth > MAX_ALIAS_DEPTH:
            return
        seen.add(addr)
        local, domain = addr.split("@", 1)
        if not self.is_local_domain(domain):
            _append(out, addr)          # remote alias target, as-is
        elif self.users.canonical(addr):
            _append(out, addr)
        elif self.aliases.targets(addr) is not None:
            for target in self.aliases.targets(addr):
                self._expand(target, depth + 1, seen, out)
        elif "+" in local and local.split("+", 1)[0]:
            self._expand(local.split("+", 1)[0] + "@" + domain, depth + 1, seen, out)
        elif local == "postmaster":
            # RFC 5321 §4.5.1: postmaster must always be accepted.  If the
            # target resolves to nothing, its own mailbox (made on delivery)
            # gets the mail rather than refusing it.
            target = self._postmaster_for(domain)
            before = len(out)
            if target != addr:
                self._expand(target, depth + 1, seen, out)
            if len(out) == before:
                _append(out, target)
        elif self.aliases.targets("*@" + domain) is not None:
            for target in self.aliases.targets("*@" + domain):
                self._expand(target, depth + 1, seen, out)

    def postmaster_target(self, domain: str) -> str:
        """The address that gets mail to postmaster@``domain`` (before alias expansion)."""
        return self._postmaster_for(normalize_domain(domain))

    def _postmaster_for(self, domain: str) -> str:
        if self.postmaster:
            return self.postmaster
        users = self.users.list()
        same = [u for u in users if u.endswith("@" + domain)]
        if same or users:
            return (same or users)[0]
        return "postmaster@" + domain


def _append(out: List[str], addr: str) -> None:
    if addr not in out:
        out.append(addr)
