"""The disk side of the catch-all catalog (issue 11): the envelope log, and
every message of every mailbox of the data folder.

``DATA/caught-envelopes.jsonl``
    one JSON object per line, one line per message the catch-all server
    delivered: the SMTP envelope it came with (MAIL FROM, RCPT TO, AUTH
    identity, TLS, HELO, peer, listener, queue id, arrival, size, subject)
    and ``files``: the Maildir key of its copy in each mailbox
    (``{"bob@example.org": "1764...,S=...,W=..."}``).  Appended and fsync'd
    after the message's own fsync and before its ``250`` (the Deliverer's
    worker calls ``append``); a bad line (not UTF-8, not JSON, not an object
    with ``files``) is skipped with one WARNING naming the file and the line.

Messages are read through the store's folder module (store/folder.py:
``snapshot`` to list, ``expunge`` to delete), so POP3 and IMAP sessions see
the same UIDs and a deletion the way they see an EXPUNGE of another session.
Everything here blocks on the disk: worker threads only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

from store.folder import open_folder
from store.fsutil import fsync_dir, write_all, write_atomic

log = logging.getLogger("mailsrv.store")

ENVELOPE_LOG = "caught-envelopes.jsonl"
# Octets read from the top of a message for its header block (the list's
# From/To/Subject/Date); ours: a header block longer than this is cut there.
HEAD_READ = 64 * 1024


class Found(NamedTuple):
    """One message on disk."""
    mailbox: str        # the address whose mailbox holds it
    folder: str         # "INBOX", or the Maildir++ name ("Sent", "a.b")
    key: str            # Maildir unique name without flags (stable, store/folder.py)
    path: str
    size: int           # octets as stored
    mtime: float


class EnvelopeLog:
    """``DATA/caught-envelopes.jsonl`` (module docstring); thread-safe."""

    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, ENVELOPE_LOG)
        self._lock = threading.Lock()

    def load(self) -> List[dict]:
        """Every good record, oldest first (a missing file: none)."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
                if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
                    raise ValueError("not an envelope record")
            except ValueError as e:     # UnicodeDecodeError and JSONDecodeError are ValueErrors
                log.warning("%s line %d skipped: %s", self.path, number, str(e)[:200])
                continue
            out.append(rec)
        return out

    def append(self, record: dict) -> None:
        """One line, written and fsync'd (the directory too when the file is new)."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
        with self._lock:
            new = not os.path.exists(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                fsync_dir(os.path.dirname(self.path))

    def clear(self) -> None:
        with self._lock:
            write_atomic(self.path, b"")


def mailboxes(mail_root: str) -> Iterator[Tuple[str, str]]:
    """(address, Maildir path) of every mailbox under ``DATA/mail`` (store/maildir.py's layout)."""
    for domain in _names(mail_root):
        for local in _names(os.path.join(mail_root, domain)):
            path = os.path.join(mail_root, domain, local)
            if os.path.isdir(os.path.join(path, "cur")):
                yield local + "@" + domain, path


def folders(root: str) -> Iterator[Tuple[str, str]]:
    """("INBOX", root), then each Maildir++ folder (``.Sent`` → "Sent")."""
    yield "INBOX", root
    for name in _names(root, dotted=True):
        path = os.path.join(root, name)
        if os.path.isdir(os.path.join(path, "cur")):
            yield name[1:], path


def _names(path: str, dotted: bool = False) -> List[str]:
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [n for n in names if n.startswith(".") == dotted and n not in (".", "..")]


def scan(mail_root: str) -> List[Found]:
    """Every message of every folder of every mailbox (a folder that cannot be read is logged and skipped)."""
    out: List[Found] = []
    for address, root in mailboxes(mail_root):
        for folder, path in folders(root):
            if not (_names(os.path.join(path, "new")) or _names(os.path.join(path, "cur"))):
                continue        # empty: no snapshot, which would write the folder's UID list
            try:
                snap = open_folder(path).snapshot()
            except (OSError, ValueError) as e:
                log.warning("catch-all list: cannot read %s: %s", path, e)
                continue
            for msg in snap.messages:
                try:
                    st = os.stat(msg.path)
                except FileNotFoundError:
                    continue        # removed since the snapshot
                out.append(Found(address, folder, msg.key, msg.path, st.st_size, st.st_mtime))
    return out


def read_head(path: str) -> bytes:
    """The top of a message file (HEAD_READ octets at most), b"" if it is gone."""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_READ)
    except FileNotFoundError:
        return b""


def read_message(found: Found) -> Optional[bytes]:
    """The message in CRLF form (as POP3 and IMAP send it), None if it is gone."""
    path = _current_path(found)
    if path is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _current_path(found: Found) -> Optional[str]:
    """The file may have moved from new/ to cur/ or changed flags since the scan."""
    if os.path.exists(found.path):
        return found.path
    folder_path = os.path.dirname(os.path.dirname(found.path))
    for sub in ("new", "cur"):
        for name in _names(os.path.join(folder_path, sub)):
            if name == found.key or name.startswith(found.key + ":"):
                return os.path.join(folder_path, sub, name)
    return None


def remove(items: List[Found]) -> int:
    """Expunge these messages through their folders; how many were removed."""
    by_folder: Dict[str, List[str]] = {}
    for f in items:
        by_folder.setdefault(os.path.dirname(os.path.dirname(f.path)), []).append(f.key)
    count = 0
    for path, keys in by_folder.items():
        folder = open_folder(path)
        wanted = set(keys)
        uids = [m.uid for m in folder.snapshot().messages if m.key in wanted]
        if uids:
            count += len(folder.expunge(uids).uids)
    return count
