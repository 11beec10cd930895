"""Dovecot's Maildir control files, read and written the way Dovecot does.

So one Maildir can move between Dovecot and mailsrv, or be served by both at
once, without any client seeing a UIDVALIDITY change (RFC 3501 §2.3.1.1).
The formats are those of Dovecot's documentation ("Maildir Mailbox Format",
doc.dovecot.org admin_manual/mailbox_formats/maildir) and of
src/lib-storage/index/maildir/maildir-uidlist.c, maildir-keywords.c and
src/lib-storage/list/subscription-file.c (read, not copied):

* ``dovecot-uidlist`` version 3.  Header ``3 V<uidvalidity> N<nextuid>
  G<128-bit mailbox GUID in hex>``; "there may be other fields, and the order
  isn't important", so unknown header fields are kept.  Then one record a
  line: ``<uid> [<key><value> ...] :<filename>``: the extension fields are a
  letter and a value (Dovecot: ``W`` CRLF size, ``S`` file size, ``G`` GUID,
  ``P`` POP3 UIDL, ``O`` POP3 order); unknown ones are kept as they are.  The
  file name is "the last known filename" and may be stale (flags change the
  name): records are matched on the base name, up to the first ``:``.
  "New lines can be appended to the end of file, but existing data must never
  be directly modified; it can only be replaced with rename()".
* ``dovecot-uidlist.lock``: the dotlock taken for every uidlist (and keywords)
  change; created with O_EXCL, "stale" when untouched for 120 s
  (MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT) or at once when it names a process of
  this host that is gone (we write ``<pid>:<host>`` into ours); a rewrite is written into the lock
  file itself and renamed over ``dovecot-uidlist``, as file_dotlock_replace()
  does, which also releases the lock.
* ``dovecot-keywords``: ``<index> <keyword>`` lines; index 0 is letter ``a``
  in a file name's ``:2,`` flags, up to 25 = ``z`` (26 keywords per folder).
  Written under the uidlist lock, replaced with rename().
* ``subscriptions`` version 2: the header ``V\\t2\\n\\n``, then one mailbox a
  line, its hierarchy levels separated by TAB and each level tab-escaped
  (``\\x01`` → ``\\x011``, TAB → ``\\x01t``, CR → ``\\x01r``, LF → ``\\x01n``).
  A file without the header is version 1: one name a line.
"""

from __future__ import annotations

import binascii
import errno
import os
import socket
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from store.fsutil import write_all, write_atomic

UIDLIST = "dovecot-uidlist"
UIDLIST_LOCK = "dovecot-uidlist.lock"
KEYWORDS = "dovecot-keywords"
SUBSCRIPTIONS = "subscriptions"
UIDLIST_VERSION = 3
# Dovecot maildir-uidlist.h MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT (60*2 seconds).
LOCK_STALE_S = 120
# How long to wait for the dotlock before giving up: Dovecot waits
# stale timeout + 2 s for the same lock (maildir-uidlist.c dotlock settings).
LOCK_TIMEOUT_S = LOCK_STALE_S + 2
# Dovecot's keyword letters: "a".."z" (maildir-keywords.h MAILDIR_MAX_KEYWORDS 26).
MAX_KEYWORDS = 26
# RFC 3501 §9 uniqueid: non-zero unsigned 32-bit integer.
MAX_UID = 0xFFFFFFFF
SUBSCRIPTIONS_V2_HEADER = "V\t2\n\n"
_HOST = socket.gethostname() or "localhost"


class UidlistError(ValueError):
    """The uidlist cannot be used; ``validity`` is its old UIDVALIDITY when readable."""

    def __init__(self, why: str, validity: int = 0):
        super().__init__(why)
        self.validity = validity


class Header(NamedTuple):
    uidvalidity: int
    nextuid: int
    guid: str
    extra: Tuple[Tuple[str, str], ...] = ()   # unknown header fields, kept


class Record(NamedTuple):
    uid: int
    name: str                                 # last known file name (may be stale)
    ext: Tuple[Tuple[str, str], ...] = ()     # extension fields in file order

    @property
    def key(self) -> str:
        """The base file name (up to the first ``:``) records are matched on."""
        return self.name.partition(":")[0]

    def field(self, letter: str) -> Optional[str]:
        for k, v in self.ext:
            if k == letter:
                return v
        return None


def new_guid() -> str:
    """A 128-bit mailbox GUID in hex, as Dovecot writes in the header."""
    return binascii.hexlify(os.urandom(16)).decode("ascii")


def parse_header(line: str) -> Header:
    fields = line.split()
    if not fields or fields[0] != str(UIDLIST_VERSION):
        raise UidlistError("uidlist version is not 3")
    values: Dict[str, str] = {}
    extra = []
    for f in fields[1:]:
        if f[0] in "VNG" and f[0] not in values:
            values[f[0]] = f[1:]
        else:
            extra.append((f[0], f[1:]))
    try:
        validity, nextuid = int(values["V"]), int(values["N"])
    except (KeyError, ValueError):
        raise UidlistError("uidlist header lacks V or N")
    if not (0 < validity <= MAX_UID and 0 < nextuid <= MAX_UID + 1):
        raise UidlistError("uidlist header out of range", validity)
    return Header(validity, nextuid, values.get("G", ""), tuple(extra))


def parse_record(line: str) -> Record:
    """``<uid> [<letter><value> ...] :<filename>`` → Record (ValueError when malformed)."""
    head, sep, name = line.partition(" :")
    if not sep:                                   # "<uid> :name" has the space; be lenient
        head, sep, name = line.partition(":")
    parts = head.split()
    if not sep or not name or not parts or "/" in name:
        raise ValueError("bad uidlist record")
    uid = int(parts[0])
    if not 0 < uid <= MAX_UID:
        raise ValueError("uid out of range")
    return Record(uid, name, tuple((p[0], p[1:]) for p in parts[1:]))


def parse_uidlist(text: str) -> Tuple[Header, List[Record], int]:
    """The file → (header, records, octets parsed).

    A last line without its LF (a writer died mid-append) is not parsed and
    not counted, so an appender can start from the returned offset.  Raises
    UidlistError when the header is bad or a record breaks RFC 3501
    §2.3.1.1's invariants (UIDs ascending and below N).
    """
    lines = text.split("\n")
    complete = lines[:-1]                     # the part after the last LF is incomplete
    if not complete:
        raise UidlistError("uidlist is empty")
    header = parse_header(complete[0])
    records: List[Record] = []
    last = 0
    for line in complete[1:]:
        if not line:
            continue
        try:
            rec = parse_record(line)
        except ValueError:
            raise UidlistError("bad uidlist line", header.uidvalidity)
        if rec.uid <= last:
            raise UidlistError("uidlist UIDs not ascending", header.uidvalidity)
        last = rec.uid
        records.append(rec)
    if last >= header.nextuid:
        # Dovecot appends records before it rewrites N: the highest UID wins.
        header = header._replace(nextuid=last + 1)
    parsed = len(text) - len(lines[-1])
    return header, records, parsed


def format_header(h: Header) -> str:
    out = "%d V%d N%d" % (UIDLIST_VERSION, h.uidvalidity, h.nextuid)
    if h.guid:
        out += " G" + h.guid
    return out + "".join(" %s%s" % kv for kv in h.extra) + "\n"


def format_record(r: Record) -> str:
    return "%d%s :%s\n" % (r.uid, "".join(" %s%s" % kv for kv in r.ext), r.name)


def format_uidlist(h: Header, records: Iterable[Record]) -> bytes:
    text = format_header(h) + "".join(format_record(r) for r in records)
    return text.encode("utf-8", "surrogateescape")


# -- dovecot-keywords --------------------------------------------------------------
def parse_keywords(text: str) -> Dict[int, str]:
    """``<index> <keyword>`` lines → {index: keyword}; bad lines are skipped
    (Dovecot ignores them too)."""
    table: Dict[int, str] = {}
    for line in text.split("\n"):
        idx, sep, word = line.partition(" ")
        if sep and idx.isdigit() and word and int(idx) < MAX_KEYWORDS:
            table[int(idx)] = word
    return table


def format_keywords(table: Dict[int, str]) -> bytes:
    return "".join("%d %s\n" % (i, table[i]) for i in sorted(table)).encode("utf-8", "surrogateescape")


def keyword_letter(index: int) -> str:
    return chr(ord("a") + index)


def letter_index(letter: str) -> int:
    return ord(letter) - ord("a")


# -- subscriptions ----------------------------------------------------------------
_TAB_ESCAPES = (("\x01", "\x011"), ("\t", "\x01t"), ("\r", "\x01r"), ("\n", "\x01n"))


def _tab_escape(s: str) -> str:
    for raw, esc in _TAB_ESCAPES:
        s = s.replace(raw, esc)
    return s


def _tab_unescape(s: str) -> str:
    out, i = [], 0
    back = {esc[1]: raw for raw, esc in _TAB_ESCAPES}
    while i < len(s):
        if s[i] == "\x01" and i + 1 < len(s):
            out.append(back.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_subscriptions(text: str, sep: str = ".") -> List[str]:
    """Mailbox names of a version 1 or 2 subscriptions file (levels joined by ``sep``)."""
    if text.startswith(SUBSCRIPTIONS_V2_HEADER):
        body = text[len(SUBSCRIPTIONS_V2_HEADER):]
        return [sep.join(_tab_unescape(p) for p in line.split("\t"))
                for line in body.split("\n") if line]
    return [line for line in text.split("\n") if line.strip()]


def format_subscriptions(names: Iterable[str], sep: str = ".") -> bytes:
    body = "".join("\t".join(_tab_escape(p) for p in n.split(sep)) + "\n" for n in names)
    return (SUBSCRIPTIONS_V2_HEADER + body).encode("utf-8", "surrogateescape")


# -- the dotlock -------------------------------------------------------------------
class LockTimeout(OSError):
    """The dotlock stayed taken for LOCK_TIMEOUT_S (a live holder)."""


class Dotlock:
    """``<file>.lock`` made with O_EXCL, as Dovecot's file_dotlock (use_excl_lock).

    A lock untouched for ``stale_s`` is taken to be left by a dead holder and
    removed.  ``replace(data)`` writes ``data`` into the lock file and renames
    it over the locked file (released by the rename); ``release()`` removes it.
    """

    def __init__(self, path: str, stale_s: float = LOCK_STALE_S, timeout_s: float = LOCK_TIMEOUT_S):
        self.target = path
        self.path = path + ".lock"
        self.stale_s = stale_s
        self.timeout_s = timeout_s
        self.fd: Optional[int] = None

    def acquire(self) -> "Dotlock":
        deadline = time.monotonic() + self.timeout_s
        pause = 0.001
        while True:
            if self._take():
                return self
            self._remove_if_stale()
            if time.monotonic() >= deadline:
                raise LockTimeout(errno.EAGAIN, "lock held for %ds" % self.timeout_s, self.path)
            time.sleep(pause)              # a holder in another process: poll, as Dovecot does
            pause = min(pause * 2, 0.05)

    def _take(self) -> bool:
        """Create the lock with its ``<pid>:<host>`` already inside: written to a private
        file, then hard-linked to the lock name (Dovecot's file_dotlock link method), so
        a holder killed at any instant never leaves an empty lock that only the 120 s
        rule could clear.  The private file stays open as our handle."""
        tmp = "%s.%s.tmp" % (self.path, os.urandom(6).hex())
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, ("%d:%s" % (os.getpid(), _HOST)).encode("utf-8", "replace"))
            os.link(tmp, self.path)
        except FileExistsError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        self.fd = fd
        return True

    def _remove_if_stale(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if time.time() - st.st_mtime > self.stale_s or self._holder_died():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _holder_died(self) -> bool:
        """The lock says ``<pid>:<host>`` (ours, as Dovecot's dotlocks do), the host is this
        one and the process is gone: stale at once, not after 120 s."""
        try:
            with open(self.path, "rb") as f:
                pid_s, _, host = f.read(256).decode("utf-8", "replace").partition(":")
            if host != _HOST or not pid_s.isdigit() or int(pid_s) == os.getpid():
                return False
            os.kill(int(pid_s), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def replace(self, data: bytes) -> None:
        """The new content of the locked file, durable, in place; releases the lock.

        Written to a file of its own and renamed over the target, then the lock is
        removed: the lock keeps naming its holder to the end (Dovecot renames the lock
        file itself, but a lock holding half a uidlist cannot say who left it)."""
        tmp = "%s.%s.new" % (self.path, os.urandom(6).hex())
        try:
            write_atomic(self.target, data, tmp=tmp)
        finally:
            self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self._unlink()

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Dotlock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()



# Dovecot subscription-file.c: SUBSCRIPTION_FILE_LOCK_TIMEOUT 120, SUBSCRIPTION_FILE_CHANGE_TIMEOUT 30.
SUBSCRIPTIONS_LOCK_TIMEOUT_S = 120
SUBSCRIPTIONS_STALE_S = 30


def read_subscriptions(root: str) -> List[str]:
    """The subscribed mailbox names of the Maildir at ``root`` ([] when there is no file)."""
    try:
        with open(os.path.join(root, SUBSCRIPTIONS), "rb") as f:
            return parse_subscriptions(f.read().decode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        return []


def update_subscriptions(root: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> List[str]:
    """Subscribe ``add`` and unsubscribe ``remove`` (RFC 3501 §6.3.6-7) under the file's
    dotlock, as Dovecot does; the file is written (version 2) only when it changes."""
    lock = Dotlock(os.path.join(root, SUBSCRIPTIONS), SUBSCRIPTIONS_STALE_S, SUBSCRIPTIONS_LOCK_TIMEOUT_S)
    lock.acquire()
    try:
        names = read_subscriptions(root)
        gone = set(remove)
        new = [n for n in names if n not in gone]
        new += [n for n in dict.fromkeys(add) if n not in new]
        if new != names:
            lock.replace(format_subscriptions(new))
        return new
    finally:
        lock.release()
