"""IMAP METADATA and METADATA-SERVER (RFC 5464): GETMETADATA (with MAXSIZE
and DEPTH) and SETMETADATA, a mixin of protocols/imap/session.py's
ImapSession; the grammar of both commands and the METADATA response.

Annotations on a mailbox (a non-empty mailbox argument) and on the server
(``""``), ``/private`` and ``/shared`` alike (§3.3: without ACL the user is
the only one to see either; both are kept per user, as Dovecot keeps its
server annotations per user); stored by the backend (``ImapAccount.metadata``
/ ``set_metadata``, protocols/backend/imapmetadata.py, store/metadata.py).

Choices where the RFC leaves room:
* an entry asked for that has no value is answered ``entry NIL`` (§4.2:
  "required METADATA response", and the grammar needs one entry at least),
  unless DEPTH found entries below it (§4.2.2's example lists only those);
* GETMETADATA options are taken before the mailbox (§5's ABNF) and after it
  (§4.2.1's example), and several bare entries without parentheses (§4.4.1's
  example) as well as the parenthesised list;
* ``/shared/admin`` on the server is read-only (§3.2.1.1) and has no value
  here: SETMETADATA on it is ``NO [NOPERM]``;
* no unsolicited METADATA responses (§4.4.2 is for clients that ENABLE it;
  ENABLE METADATA changes nothing, so it is not listed as ENABLED);
* LIST-METADATA (RFC 9590, ``LIST ... RETURN (METADATA ...)``) is not offered:
  no client we know sends it (MailKit's issue #1835 and go-imap's pull
  request #636 for it are open) and Dovecot 2.3, mox and Stalwart do not
  announce it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from protocols.backend.contracts import SHARED_PREFIX
from protocols.imap import grammar as g
from protocols.imap import wire
from protocols.imap.session_base import NO, OK, Refusal, check_name

# LIST-METADATA: RFC 9590 §3; METADATA, METADATA-SERVER: RFC 5464 §1, §5
METADATA_CAPABILITIES = [b"METADATA", b"METADATA-SERVER", b"LIST-METADATA"]
# Ours: an entry name's octets (names are paths like "/private/vendor/x/y";
# the RFC sets no bound, Cyrus and Dovecot use a few hundred at most).
MAX_ENTRY_NAME = 1024
READ_ONLY = ("/shared/admin",)          # §3.2.1.1: server entry set by the server only
# The store's limit on a value (store/metadata.py MAX_VALUE, which says where it
# comes from; tests/test_imap_metadata.py checks the two agree): a larger
# synchronizing literal in SETMETADATA is refused before its "+".
MAX_VALUE = 64 * 1024
_SCOPES = ("private", "shared")


def entry_name(raw: bytes, setting: bool) -> str:
    """entry = astring, a slash-separated path (RFC 5464 §3.2, §5), lower case
    (names are case-insensitive); ImapParseError (BAD) when it breaks §3.2."""
    shown = raw[:60].decode("ascii", "replace")
    if len(raw) > MAX_ENTRY_NAME:
        raise g.ImapParseError("entry name over %d octets" % MAX_ENTRY_NAME)
    if any(b < 0x20 or b > 0x7E or b in b"*%" for b in raw):
        raise g.ImapParseError("entry name %r has a character RFC 5464 §3.2 refuses" % shown)
    name = raw.decode("ascii").lower()
    parts = name.split("/")
    if not name.startswith("/") or "" in parts[1:]:
        raise g.ImapParseError("entry name %r is not a /-separated path (RFC 5464 §3.2)" % shown)
    if parts[1] not in _SCOPES:
        raise g.ImapParseError("entry name %r is not under /private or /shared (RFC 5464 §3.2)" % shown)
    if setting and (len(parts) < 3 or (parts[2] == "vendor" and len(parts) < 5)):
        raise g.ImapParseError("entry name %r is too short (RFC 5464 §3.2)" % shown)
    return name


def _entry(buf: memoryview, setting: bool = False) -> Tuple[str, memoryview]:
    raw, rest = g.astring(buf)
    return entry_name(bytes(raw), setting), rest


def list_entries(buf: memoryview) -> Tuple[List[str], memoryview]:
    """LIST's ``METADATA (entry *(SP entry))`` (RFC 9590 §5): the entries, a list
    (each an entry of RFC 5464 §3.2)."""
    entries, rest = g.paren_list(buf, _entry, allow_empty=False)
    return list(entries), rest


def _option(buf: memoryview) -> Tuple[Tuple[str, Optional[int]], memoryview]:
    """maxsize-opt = "MAXSIZE" SP number; scope-opt = "DEPTH" SP ("0" / "1" /
    "infinity") (§5); other getmetadata-options are BAD."""
    label, rest = g.atom(buf)
    label = bytes(label).upper()
    if label == b"MAXSIZE":
        value, rest = g.number(g.sp(rest))
        return ("MAXSIZE", value), rest
    if label == b"DEPTH":
        word, rest = g.atom(g.sp(rest))
        depth = {b"0": 0, b"1": 1, b"INFINITY": None}.get(bytes(word).upper(), -1)
        if depth == -1:
            raise g.fail('"0", "1" or "infinity"', buf)
        return ("DEPTH", depth), rest
    raise g.ImapParseError("unknown GETMETADATA option %r" % bytes(label[:30]).decode("ascii", "replace"))


def getmetadata(buf: g.Buf, utf8: bool = False):
    """getmetadata = "GETMETADATA" [SP getmetadata-options] SP mailbox SP entries
    (§5; options after the mailbox too, as §4.2.1's example): (mailbox,
    entries, maxsize or None, depth: 0, 1 or None for infinity)."""
    buf = g.sp(buf)
    options: List[Tuple[str, Optional[int]]] = []
    if bytes(buf[:1]) == b"(":
        options, buf = g.paren_list(buf, _option, allow_empty=False)
        buf = g.sp(buf)
    name, buf = g.mailbox(buf, utf8)
    buf = g.sp(buf)
    if bytes(buf[:1]) == b"(" and not g.peek(buf, b"(/") and not g.peek(buf, b'("/'):
        more, buf = g.paren_list(buf, _option, allow_empty=False)
        options += more
        buf = g.sp(buf)
    if bytes(buf[:1]) == b"(":
        entries, buf = g.paren_list(buf, _entry, allow_empty=False)
    else:
        entries = []
        while True:
            entry, buf = _entry(buf)
            entries.append(entry)
            if bytes(buf[:1]) != b" ":
                break
            buf = buf[1:]
    g.end(buf)
    opts: Dict[str, Optional[int]] = dict(options)
    return name, list(dict.fromkeys(entries)), opts.get("MAXSIZE"), opts.get("DEPTH", 0)


def _entry_value(buf: memoryview) -> Tuple[Tuple[str, Optional[bytes]], memoryview]:
    """entry-value = entry SP value; value = nstring / literal8 (§5)."""
    entry, rest = _entry(buf, setting=True)
    rest = g.sp(rest)
    if g.peek(rest, b"~{"):
        value, rest = g.literal(rest, binary=True)
        return (entry, value), rest
    value, rest = g.nstring(rest)
    return (entry, value), rest


def setmetadata(buf: g.Buf, utf8: bool = False):
    """setmetadata = "SETMETADATA" SP mailbox SP entry-values (§5): (mailbox, [(entry, value or None)])."""
    name, rest = g.mailbox(g.sp(buf), utf8)
    pairs, rest = g.paren_list(g.sp(rest), _entry_value, allow_empty=False)
    g.end(rest)
    last: Dict[str, Optional[bytes]] = {}
    for entry, value in pairs:
        last[entry] = value               # a name twice: the last value counts
    return name, list(last.items())


def value_item(value: Optional[bytes], utf8: bool) -> bytes:
    """value = nstring / literal8 (§5): literal8 only for a value holding NUL."""
    if value is not None and b"\x00" in value:
        return wire.literal(value, binary=True)
    return wire.nstring(value, utf8)


def metadata_response(name: str, items: Sequence[Tuple[str, Optional[bytes]]], utf8: bool) -> bytes:
    """metadata-resp = "METADATA" SP mailbox SP entry-values (§4.4.1)."""
    mailbox = wire.quoted(b"") if name == "" else wire.mailbox(name, utf8)
    values = b" ".join(entry.encode("ascii") + b" " + value_item(value, utf8) for entry, value in items)
    return wire.untagged(b"METADATA " + mailbox + b" (" + values + b")")


def select_values(asked: Sequence[str], found: Dict[str, bytes], depth: Optional[int],
                  maxsize: Optional[int]) -> Tuple[List[Tuple[str, Optional[bytes]]], int]:
    """What GETMETADATA answers (module docstring): the items in order, and the
    largest size left out by MAXSIZE (§4.2.1 LONGENTRIES; 0: none)."""
    items: List[Tuple[str, Optional[bytes]]] = []
    seen, longest = set(), 0
    for entry in asked:
        children = [] if depth == 0 else _below(found, entry, depth)
        names = ([entry] if entry in found or not children else []) + children
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            value = found.get(name)
            if value is not None and maxsize is not None and len(value) > maxsize:
                longest = max(longest, len(value))
                continue
            items.append((name, value))
    return items, longest


def _below(entries, name: str, depth: Optional[int]) -> List[str]:
    """The names among ``entries`` below ``name`` within ``depth`` levels (None:
    all), sorted (§4.2.2: DEPTH 1 is the children, infinity every descendant)."""
    prefix = name.rstrip("/") + "/"
    return sorted(e for e in entries
                  if e.startswith(prefix) and (depth is None or e[len(prefix):].count("/") < depth))


def _not_shared(name: str) -> None:
    """DEVIATION(RFC 5464 §3.3): annotations only on the user's own folders;
    another user's folder (the shared namespace, RFC 4314) is refused, its
    owner's entries neither read nor changed, whatever the rights."""
    if name.startswith(SHARED_PREFIX):
        raise Refusal(NO, "Annotations of another user's folder are not supported", "CANNOT")


class MetadataCommands:
    """GETMETADATA and SETMETADATA (see the module docstring)."""

    def _list_metadata(self, name: str, entries: Sequence[str]):
        """RFC 9590 §3: after a LIST line, ``* METADATA name (entry value ...)``
        with NIL for an entry without a value (its §4 example).  Dropped, as §3
        allows, where the annotations cannot be looked up: no METADATA for the
        account, another user's folder (DEVIATION above), a folder gone.  The
        line is RFC 5464 §4.4.1's."""
        if getattr(self._account, "metadata", None) is None or name.startswith(SHARED_PREFIX):
            return
        found = yield lambda done: self._account.metadata(name, entries, 0, done)
        if isinstance(found, BaseException):
            return
        self._emit(metadata_response(name, [(e, found.get(e)) for e in entries], self.utf8))

    def _metadata_account(self):
        if getattr(self._account, "metadata", None) is None:
            raise Refusal(NO, "METADATA is not available for this account", "CANNOT")
        return self._account

    def _refuse_metadata_literal(self, need) -> bool:
        """A synchronizing literal over MAX_VALUE in SETMETADATA: the tagged
        ``NO [METADATA MAXSIZE n]`` (RFC 5464 §4.3) instead of ``+`` (RFC 9051 §7.5), so
        the client does not send octets that would be refused; True if so."""
        if need.size <= MAX_VALUE:
            return False
        words = bytes(self._reader._cmd[:80]).split(None, 2)
        if len(words) < 2 or words[1].upper() != b"SETMETADATA":
            return False
        self._reader.refuse_literal()
        self._emit(wire.status_line(need.tag, b"NO", "Value of %d octets over the limit of %d" % (need.size, MAX_VALUE),
                                    b"[METADATA MAXSIZE %d]" % MAX_VALUE))
        return True

    def _cmd_getmetadata(self, head):
        """GETMETADATA (RFC 5464 §4.2, §4.2.1 MAXSIZE, §4.2.2 DEPTH)."""
        name, entries, maxsize, depth = getmetadata(head.rest, self.utf8)
        if name:
            check_name(name)
            _not_shared(name)
        account = self._metadata_account()
        found = yield from self._ask(account.metadata, name, entries, depth)
        items, longest = select_values(entries, found, depth, maxsize)
        if items:
            self._emit(metadata_response(name, items, self.utf8))
        code = b"[METADATA LONGENTRIES %d]" % longest if longest else None
        return (OK, "GETMETADATA completed", code)

    def _cmd_setmetadata(self, head):
        """SETMETADATA (RFC 5464 §4.3): all entries or none."""
        name, changes = setmetadata(head.rest, self.utf8)
        if name:
            check_name(name)
            _not_shared(name)
        elif any(entry in READ_ONLY for entry, _v in changes):
            return (NO, "/shared/admin is set by the server only (RFC 5464 §3.2.1.1)", wire.response_code("NOPERM"))
        account = self._metadata_account()
        yield from self._ask(account.set_metadata, name, changes)
        return None
