"""The postdrop directory: mail from the local ``sendmail`` command waiting for the server.

Postfix's model: postdrop(1) writes a file into the maildrop queue, pickup(8)
feeds it into the normal delivery path.  (Here the directory is called
``postdrop/`` because "maildrop" is the POP3 mailbox, store/maildrop.py.)

    DATA/postdrop/.tmp-<name>   being written; the pick-up ignores it
    DATA/postdrop/<name>        complete: written, fsync'd, renamed, directory fsync'd

So a file without a dot is always whole, whatever moment a crash hits.

With shared_data (several hosts on one data folder, issue 14) a host first
claims a file by renaming it to ``.claim-<host>-<name>`` (a rename: exactly
one host wins), then reads and removes the claimed name; its own claims left
by a crash are taken up again at its next round, another host's once they
are CLAIM_STALE old (that host died).  The
pick-up (protocols/backend/pickup.py) removes a file only after its message is in
the Maildirs or the queue (durably), so a crash in between delivers it twice
rather than never (at-least-once, like Postfix).

File format: one JSON line ``{"v": 1, "sender": ..., "recipients": [...]}``,
then the message exactly as submitted (CRLF line ends).

The directory may be writable by other local users (README: "sendmail for
other users"), so a file's content is untrusted: it is opened with
O_NOFOLLOW, must be a regular file with one link (no symlink or hard-link
trick makes the server mail out a file it can read), and the submitter is
the file's owner (``st_uid``), not anything the file says.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from typing import List

from store.fsutil import fsync_dir, write_all

DIRNAME = "postdrop"
# The JSON envelope line: 100 recipients (RFC 5321 §4.5.3.1.8) of 256 octets
# (§4.5.3.1.3) fit with room to spare.
MAX_ENVELOPE_LINE = 64 * 1024
# Readable by the directory's group: with a shared postdrop/ (README: "sendmail for
# other users", a setgid directory of the server's group) the server reads
# another user's file through the group, as Postfix's pickup does.
FILE_MODE = 0o640
_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass
class Dropped:
    """One message left by ``sendmail``."""

    name: str
    sender: str
    recipients: List[str]
    message: bytes
    uid: int             # the submitting user: the file's owner


def drop_dir(data_dir: str) -> str:
    return os.path.join(data_dir, DIRNAME)


def write(data_dir: str, name: str, sender: str, recipients: List[str], message: bytes) -> str:
    """Store one message durably (tmp + fsync + rename + directory fsync); returns its path.

    ``data_dir`` must exist (FileNotFoundError otherwise: only the server and
    ``user add`` create a data folder); OSError is left to the caller."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(errno.ENOENT, "no such data folder", data_dir)
    if name.startswith(".") or "/" in name:
        raise ValueError("bad postdrop file name %r" % name)
    folder = drop_dir(data_dir)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    head = json.dumps({"v": 1, "sender": sender, "recipients": recipients}).encode("utf-8") + b"\n"
    if len(head) > MAX_ENVELOPE_LINE:
        raise ValueError("too many recipients")
    tmp = os.path.join(folder, ".tmp-" + name)
    fd = os.open(tmp, _OPEN_WRITE, FILE_MODE)
    try:
        write_all(fd, head + message)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    final = os.path.join(folder, name)
    try:
        os.rename(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    try:
        fsync_dir(folder)
    except PermissionError:
        # A shared postdrop/ (mode 1730, README) may be written but not opened
        # by the submitting user: sync(2) makes the rename durable instead.
        os.sync()
    except BaseException:
        _unlink_quietly(final)        # not known to be durable: the caller reports failure
        raise
    return final


def pending(data_dir: str) -> List[str]:
    """Complete files, oldest name first (names start with the time)."""
    try:
        names = os.listdir(drop_dir(data_dir))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith("."))


# Another host's claim untouched this long is its dead host's: taken over.
# An hour: a pick-up round takes seconds (local policy).
CLAIM_STALE = 3600.0
CLAIM = ".claim-"


def claim_prefix(host: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in host) or "localhost"
    return "%s%s-" % (CLAIM, safe)


def pending_shared(data_dir: str, host: str, now: float) -> List[str]:
    """shared_data: the names to claim, then the claims to take (again):
    complete files, this host's own claims, other hosts' claims CLAIM_STALE old."""
    folder = drop_dir(data_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    mine = claim_prefix(host)
    out = sorted(n for n in names if not n.startswith("."))
    out += sorted(n for n in names if n.startswith(mine))
    for n in sorted(n for n in names if n.startswith(CLAIM) and not n.startswith(mine)):
        try:
            if now - os.stat(os.path.join(folder, n)).st_mtime > CLAIM_STALE:
                out.append(n)
        except OSError:
            continue
    return out


def claim(data_dir: str, name: str, host: str) -> str:
    """Take ``name`` for this host (a rename, so one host only); its claimed
    name.  FileNotFoundError when another host took it first."""
    mine = claim_prefix(host)
    if name.startswith(mine):
        return name
    base = name[len(CLAIM):].split("-", 1)[1] if name.startswith(CLAIM) else name
    folder = drop_dir(data_dir)
    os.rename(os.path.join(folder, name), os.path.join(folder, mine + base))
    return mine + base


def read(data_dir: str, name: str, max_size: int) -> Dropped:
    """Read and check one file; ValueError (with the reason) if it is not a
    well-formed drop file we may trust to read."""
    fd = os.open(os.path.join(drop_dir(data_dir), name), _OPEN_READ)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ValueError("not a regular file with one link")
        limit = max_size + MAX_ENVELOPE_LINE
        chunks, size = [], 0
        while size <= limit:           # bounded even if the owner appends meanwhile
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError("larger than max_message_size")
    finally:
        os.close(fd)
    content = b"".join(chunks)
    head, sep, message = content.partition(b"\n")
    try:
        env = json.loads(head.decode("utf-8")) if sep else None
    except (UnicodeDecodeError, ValueError):
        env = None
    if not isinstance(env, dict) or env.get("v") != 1 or not isinstance(env.get("sender"), str) \
            or not isinstance(env.get("recipients"), list) or not env["recipients"] \
            or not all(isinstance(r, str) for r in env["recipients"]):
        raise ValueError("bad envelope line")
    return Dropped(name, env["sender"], list(env["recipients"]), message, st.st_uid)


def remove(data_dir: str, name: str) -> None:
    """Forget a file whose message is delivered or queued (durably)."""
    folder = drop_dir(data_dir)
    os.unlink(os.path.join(folder, name))
    fsync_dir(folder)


def set_aside(data_dir: str, name: str) -> str:
    """Move a bad file out of the way (kept for the operator, never retried)."""
    folder = drop_dir(data_dir)
    aside = ".bad-" + name
    os.rename(os.path.join(folder, name), os.path.join(folder, aside))
    return os.path.join(folder, aside)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
