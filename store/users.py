"""Users, aliases and recipient resolution (the "directory" of local mail).

Files (in the data folder):

``DATA/users``
    one JSON object per line: ``{"address", "scrypt", "scram": {...}}``.
    Mode 0600: it holds password hashes.  ``scrypt`` is
    ``"scrypt$<n>$<r>$<p>$<salt b64>$<key b64>"`` so the parameters can change
    without breaking old entries.  ``scram`` holds the SCRAM-SHA-256 server
    secrets of RFC 5802 §3 / RFC 7677 §3 (salt, iteration count, StoredKey,
    ServerKey); the password itself is never stored.  ``"disabled": true``
    refuses logins (``user disable``) while mail is still accepted.
``DATA/aliases``
    one JSON object per line: ``{"alias", "targets": [...]}``.

A bad line (not UTF-8, not JSON, or a record that does not check out) is
skipped with one WARNING naming the file and line, once per change of the
file; every other line keeps working, and rewrites keep the bad line as it
is so the operator can still fix it.

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

The password math (scrypt, SCRAM secrets, SASLprep-lite) is in
store/passwords.py; its names are re-exported here.
"""

from __future__ import annotations

import functools
import fcntl
import json
import logging
import os
import threading
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple
from store.fsutil import write_atomic
from store.folder_types import stat_sig
from store.passwords import (SCRAM_ITERATIONS, SCRAM_SALT_LEN, SCRYPT_DKLEN,  # noqa: F401 (re-exported)
                             SCRYPT_MAXMEM, SCRYPT_N, SCRYPT_P, SCRYPT_R, SCRYPT_SALT_LEN,
                             ScramKeys, dummy_hash, _b64, _scram_from, saslprep, scram_keys,
                             scrypt_check, scrypt_hash)

log = logging.getLogger("mailsrv.store")
# path -> (signature, problems) last warned about in this process: a file read again
# unchanged (another UserDB, or a worker forked after the supervisor read it) is quiet.
_WARNED: Dict[str, tuple] = {}

# RFC 5321 §4.5.3.1.1: maximum local-part length, octets.
MAX_LOCALPART = 64
# RFC 5321 §4.5.3.1.2: maximum domain length, octets.
MAX_DOMAIN = 255
# RFC 1035 §2.3.4: a label is at most 63 octets.
MAX_LABEL = 63
# Not an RFC number: bound on alias expansion so loops and fan-out bombs stop.
MAX_ALIAS_DEPTH = 10

_FORBIDDEN_LOCAL = set('/\\%!"@')


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


@functools.lru_cache(maxsize=4096)      # pure, and asked three times per RCPT
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
        self.problems: List[str] = []       # "file:line: why; line skipped" of the last load
        self._bad_lines: List[bytes] = []
        self._unreadable = False
        self._load()

    def _stat_signature(self) -> Optional[Tuple[int, int, int]]:
        return stat_sig(self.path)

    def _load(self, strict: bool = False) -> None:
        """Read the file (missing = empty).  A bad line (not UTF-8, not JSON, or
        not a valid record: ``_check``) is skipped with one WARNING naming the
        file and line; the lines are kept in ``problems`` for the command line
        and kept verbatim by the next rewrite, so a hand-edited typo is never
        lost.  An unreadable file keeps the records already loaded (logged
        once per change); ``strict`` (before a rewrite) raises ValueError."""
        sig = self._stat_signature()
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            msg = "%s: cannot read: %s" % (self.path, exc.strerror or exc)
            if strict:
                raise ValueError(msg) from None
            log.error("%s; keeping the %d entries read before", msg, len(self._records))
            with self._mutex:
                self.problems, self._signature, self._unreadable = [msg], sig, True
            return
        records: Dict[str, dict] = {}
        problems: List[str] = []
        bad: List[bytes] = []
        for lineno, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rec = self._check(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError:
                why = "not UTF-8"
            except json.JSONDecodeError:
                why = "not JSON"
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                why = str(exc) if isinstance(exc, ValueError) else "malformed record"
            else:
                records[rec[self._key]] = rec
                continue
            bad.append(line)
            problems.append("%s:%d: %s; line skipped" % (self.path, lineno, why))
        if (sig, problems) != _WARNED.get(self.path):
            for problem in problems:
                log.warning("%s", problem)
            _WARNED[self.path] = (sig, problems)
        with self._mutex:
            self._set(records, sig)
            self.problems, self._bad_lines, self._unreadable = problems, bad, False

    def _check(self, rec: object) -> dict:
        """A valid record, canonicalised; raises ValueError saying what is wrong."""
        raise NotImplementedError

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
                self._load(strict=True)     # an unchanged file is not warned about twice
                records = dict(self._records)
                change(records)
                self._write(records)
                self._set(records, self._stat_signature())
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _write(self, records: Dict[str, dict]) -> None:
        data = "".join(json.dumps(records[k], sort_keys=True) + "\n"
                       for k in sorted(records)).encode("utf-8")
        data += b"".join(line + b"\n" for line in self._bad_lines)   # kept for the operator
        write_atomic(self.path, data)   # one writer at a time: we hold the flock


class UserDB(_RecordFile):
    """Local users: DATA/users (see module docstring)."""

    def __init__(self, data_dir: str):
        super().__init__(os.path.join(data_dir, "users"), "address")

    def _check(self, rec: object) -> dict:
        """``address`` a valid address, ``scrypt`` a string, ``scram`` (if there)
        decodable secrets, ``disabled`` (if there) true or false."""
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
        addr = rec.get("address")
        if not isinstance(addr, str):
            raise ValueError('"address" missing or not text')
        try:
            addr = normalize_address(addr)
        except ValueError as exc:
            raise ValueError('"address" %r: %s' % (addr[:80], exc)) from None
        if not isinstance(rec.get("scrypt"), str):
            raise ValueError('%s: "scrypt" missing or not text' % addr)
        if "scram" in rec:
            try:
                _scram_from(rec["scram"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ValueError('%s: "scram" is not a valid SCRAM record' % addr) from None
        if not isinstance(rec.get("disabled", False), bool):
            raise ValueError('%s: "disabled" must be true or false' % addr)
        return dict(rec, address=addr)

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

    def set_disabled(self, address: str, disabled: bool) -> bool:
        """Disable (or enable) logins; mail is still accepted.  Returns whether
        it changed; ValueError if unknown."""
        addr = normalize_address(address)
        changed = []

        def change(records: Dict[str, dict]) -> None:
            rec = records.get(addr)
            if rec is None:
                raise ValueError("no such user: %s" % addr)
            changed.append(bool(rec.get("disabled")) != disabled)
            records[addr] = dict(rec, disabled=True) if disabled else \
                {k: v for k, v in rec.items() if k != "disabled"}
        self._modify(change)
        return changed[0]

    def is_disabled(self, address: str) -> bool:
        """True for a user whose logins are refused (``user disable``)."""
        addr = self.canonical(address)
        return bool(addr and self._records[addr].get("disabled"))

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
        (a dummy hash is checked) so timing does not reveal who exists.  A
        disabled user gets False too (after the same work), and the refusal
        is logged as such: the client sees a wrong password, the log why."""
        addr = self.canonical(address)
        rec = self._records.get(addr) if addr else None
        stored = rec.get("scrypt", "") if rec else ""
        ok = scrypt_check(password, stored or dummy_hash())
        if ok and rec and rec.get("disabled"):
            log.warning("login refused for %s: user is disabled (user enable %s)", addr, addr)
            return False
        return bool(ok and rec and stored)

    def scram_credentials(self, address: str) -> Optional[ScramKeys]:
        """The SCRAM-SHA-256 secrets (RFC 5802 §3), None if unknown or disabled."""
        addr = self.canonical(address)
        rec = self._records.get(addr) if addr else None
        if not rec or "scram" not in rec:
            return None
        if rec.get("disabled"):
            log.warning("login refused for %s: user is disabled (user enable %s)", addr, addr)
            return None
        return _scram_from(rec["scram"])

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

    def _check(self, rec: object) -> dict:
        """``alias`` an address or ``*@domain``; ``targets`` a non-empty list of addresses."""
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
        name, targets = rec.get("alias"), rec.get("targets")
        if not isinstance(name, str):
            raise ValueError('"alias" missing or not text')
        try:
            name = _normalize_alias(name)
        except ValueError as exc:
            raise ValueError('"alias" %r: %s' % (name[:80], exc)) from None
        if not isinstance(targets, list) or not targets:
            raise ValueError('%s: "targets" must be a non-empty list' % name)
        try:
            canon = [normalize_address(t) for t in targets]
        except ValueError as exc:
            raise ValueError("%s: a target is not a valid address (%s)" % (name, exc)) from None
        return dict(rec, alias=name, targets=list(dict.fromkeys(canon)))

    def add(self, alias: str, targets: List[str], users: Optional["UserDB"] = None) -> str:
        """Set ``alias`` → ``targets`` (replacing earlier targets).  With ``users``
        (the command line passes them) an alias that is a user's address is
        refused (the user always wins, so it would never take effect), and so
        is a change that makes a loop (the expansion would skip it silently)."""
        key = _normalize_alias(alias)
        canon = [normalize_address(t) for t in targets]
        if not canon:
            raise ValueError("alias needs at least one target")
        canon = list(dict.fromkeys(canon))
        if users is not None and users.exists(key):
            raise ValueError("%s is a user, and a user's mail never goes through an alias; "
                             "choose another name, or `user del` it first" % key)

        def change(records: Dict[str, dict]) -> None:
            records[key] = {"alias": key, "targets": canon}
            if users is not None:
                cycle = _alias_cycle(key, records, users.exists)
                if cycle:
                    raise ValueError("alias loop: %s" % " -> ".join(cycle))
        self._modify(change)
        return key

    def pointing_at(self, address: str) -> List[str]:
        """Aliases that list ``address`` as a target (sorted)."""
        return sorted(k for k, v in self._records.items() if address in v["targets"])

    def delete(self, alias: str) -> str:
        key = _normalize_alias(alias)

        def change(records: Dict[str, dict]) -> None:
            if records.pop(key, None) is None:
                raise ValueError("no such alias: %s" % key)
        self._modify(change)
        return key

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


def _alias_cycle(start: str, records: Dict[str, dict],
                 is_user: Callable[[str], bool]) -> Optional[List[str]]:
    """A path start -> ... -> start through the alias records, following the
    steps Directory._expand takes (user: stop; alias: its targets; "a+tag":
    "a"; else the domain's ``*@`` catch-all), or None."""
    def hops(addr: str) -> List[str]:
        if not is_user(addr):
            rec = records.get(addr)
            if rec is not None:
                return rec["targets"]
            local, domain = addr.split("@", 1)
            if "+" in local and local.split("+", 1)[0]:
                return [local.split("+", 1)[0] + "@" + domain]
            if "*@" + domain in records and local != "postmaster":
                return ["*@" + domain]
        return []

    stack, seen = [(start, [start])], set()
    while stack:
        addr, path = stack.pop()
        for nxt in hops(addr):
            if nxt == start:
                return path + [nxt]
            if nxt not in seen and len(path) <= MAX_ALIAS_DEPTH * 10:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


# ---------------------------------------------------------------- resolution

class Directory:
    """Recipient resolution over UserDB + AliasDB.

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

    def _expand(self, addr: str, depth: int, seen: Set[str], out: List[str]) -> bool:
        """Append what ``addr`` delivers to; False if it led nowhere.  A target of
        an alias that leads nowhere (a deleted user) is logged at WARNING: once
        per resolution, that is once per recipient of a message."""
        if addr in seen:
            return True                 # already expanded on this path or another
        if depth > MAX_ALIAS_DEPTH:
            log.warning("alias nesting deeper than %d at %s; skipped", MAX_ALIAS_DEPTH, addr)
            return True                 # logged here, not again as a dead target
        seen.add(addr)
        local, domain = addr.split("@", 1)
        if not self.is_local_domain(domain) or self.users.canonical(addr):
            _append(out, addr)          # a user, or a remote alias target as-is
            return True
        if self.aliases.targets(addr) is not None:
            return self._expand_alias(addr, addr, depth, seen, out)
        if "+" in local and local.split("+", 1)[0]:
            return self._expand(local.split("+", 1)[0] + "@" + domain, depth + 1, seen, out)
        if local == "postmaster":
            # RFC 5321 §4.5.1: postmaster must always be accepted.  If the
            # target resolves to nothing, its own mailbox (made on delivery)
            # gets the mail rather than refusing it.
            target = self._postmaster_for(domain)
            before = len(out)
            if target != addr:
                self._expand(target, depth + 1, seen, out)
            if len(out) == before:
                _append(out, target)
            return True
        if self.aliases.targets("*@" + domain) is not None:
            return self._expand_alias("*@" + domain, addr, depth, seen, out)
        return False

    def _expand_alias(self, key: str, addr: str, depth: int, seen: Set[str], out: List[str]) -> bool:
        found = False
        for target in self.aliases.targets(key):
            if self._expand(target, depth + 1, seen, out):
                found = True
            else:
                log.warning("alias %s: target %s is not a user or alias, skipped (mail for %s)",
                            key, target, addr)
        return found

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
