"""The two slower paths of store/folder.py: converting mailsrv's old index, and COPY.

* Conversion, once per folder: ``mailsrv-uidlist`` (mailsrv before it wrote
  Dovecot's files; its format is parsed by parse_uidlist below) becomes
  ``dovecot-uidlist`` with the same UIDVALIDITY, UIDNEXT and every UID
  (RFC 3501 §2.3.1.1: a client must not see a UIDVALIDITY change), and
  ``mailsrv-keywords`` (JSON, key → keywords) becomes ``dovecot-keywords``
  plus the keyword letters in the file names.  The old files are renamed to
  ``*.converted`` so a later loss of the uidlist can never bring back their
  older UIDNEXT.  Dovecot's limit of 26 keywords a folder applies: the most
  used are kept, the others are logged.
* COPY (RFC 3501 §6.4.7, UIDPLUS RFC 4315 §3 COPYUID): each message is hard
  linked (Dovecot copies the same way; the file's mtime, the INTERNALDATE,
  stays), or copied and fsync'd where links fail (another file system), into
  the target's tmp/; then, under the target's locks, renamed into cur/ with
  its flags and the target's keyword letters, the directory fsync'd, and
  given UIDs by the target's sync.  The source's lock is never held while
  the target's is, so two copies in opposite directions cannot deadlock.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from store import dovecot_files as dv
from store.folder_types import Copied, split_name, unique_base
from store.fsutil import fsync_dir, write_atomic

if TYPE_CHECKING:
    from store.folder import Folder

log = logging.getLogger("mailsrv.store.folder")


def convert_old_index(path: str) -> Tuple[dv.Header, List[dv.Record]]:
    """``mailsrv-uidlist`` (+ ``mailsrv-keywords``) → Dovecot's header and records."""
    from store.folder_uidlist import OLD_KEYWORDS, OLD_UIDLIST
    with open(os.path.join(path, OLD_UIDLIST), "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    try:
        validity, uidnext, rows = parse_uidlist(text)
    except CorruptIndex as e:
        raise dv.UidlistError("%s: %s" % (OLD_UIDLIST, e), e.old_validity)
    records = [dv.Record(uid, key, (("W", str(size)),) if size is not None else ()) for uid, key, size in rows]
    kw_path = os.path.join(path, OLD_KEYWORDS)
    if os.path.exists(kw_path):
        _convert_keywords(path, kw_path)
    return dv.Header(validity, uidnext, dv.new_guid()), records


def _convert_keywords(path: str, kw_path: str) -> None:
    try:
        with open(kw_path, "rb") as f:
            table: Dict[str, List[str]] = json.loads(f.read().decode("utf-8")).get("keywords", {})
    except (OSError, ValueError, AttributeError) as e:
        log.warning("%s unusable (%s): keywords not converted", kw_path, e)
        return
    counts = collections.Counter(w for words in table.values() for w in words)
    kept = [w for w, _n in counts.most_common(dv.MAX_KEYWORDS)]
    if len(counts) > len(kept):
        log.warning("%s: only %d keywords fit Dovecot's letters; dropped %s", kw_path,
                    dv.MAX_KEYWORDS, ", ".join(sorted(set(counts) - set(kept))))
    letter = {w: dv.keyword_letter(i) for i, w in enumerate(sorted(kept))}
    write_atomic(os.path.join(path, dv.KEYWORDS), dv.format_keywords({i: w for i, w in enumerate(sorted(kept))}))
    files = {}
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(path, sub)):
            files[name.partition(":")[0]] = os.path.join(path, sub, name)
    for key, words in table.items():
        old = files.get(key)
        letters = "".join(letter[w] for w in words if w in letter)
        if old is None or not letters:
            continue
        _key, flags, tail = split_name(os.path.basename(old))
        info = "".join(sorted(set(flags + letters))) + ("," + tail if tail else "")
        os.rename(old, os.path.join(path, "cur", key + ":2," + info))
    fsync_dir(os.path.join(path, "cur"))
    os.replace(kw_path, kw_path + ".converted")


def copy_messages(source: "Folder", uids: Sequence[int], target: "Folder") -> Copied:
    snap = source.snapshot()
    staged = []                                   # (source uid, tmp base name, flags, keywords)
    for uid in uids:
        msg = snap.by_uid(uid)
        if msg is None:
            continue
        base = _link_into_tmp(source, msg, target)
        if base is not None:
            staged.append((uid, base, msg.flags, msg.keywords, msg.key))
    guids = source.message_guids([key for *_s, key in staged])     # RFC 8474 §5.1: kept by the copy
    with target._locked():
        found = {}
        for _uid, base, flags, keywords, _key in staged:
            letters = "".join(sorted(flags + target._letters_for(keywords)))
            path = os.path.join(target.path, "cur", base + ":2," + letters)
            os.rename(os.path.join(target.path, "tmp", base), path)
            found[base] = (path, letters, "")
        if staged:
            fsync_dir(os.path.join(target.path, "cur"))
            target.note_copies(found, {base: guids[key] for _u, base, _f, _k, key in staged if key in guids})
        tsnap = target._sync_locked().snapshot
    by_key = {m.key: m.uid for m in tsnap.messages}
    pairs = tuple((uid, by_key[base]) for uid, base, _f, _k, _key in staged if base in by_key)
    return Copied(pairs, tsnap.uidvalidity, tsnap.highestmodseq)


def _link_into_tmp(source: "Folder", msg, target: "Folder"):
    """Hard link (else copy + fsync) the message into target/tmp; its new base name, or
    None when the message vanished from the source meanwhile."""
    path = msg.path
    for _attempt in range(3):
        try:
            st = os.stat(path)
            base = unique_base(st.st_size, msg.size)
            tmp = os.path.join(target.path, "tmp", base)
            try:
                os.link(path, tmp)
            except OSError as e:
                if isinstance(e, FileNotFoundError):
                    raise
                _copy_file(path, tmp, st)
            return base
        except FileNotFoundError:
            again = source.sync(rescan=True).snapshot.by_uid(msg.uid)   # renamed by a flag change meanwhile
            if again is None:
                return None
            path = again.path
    return None


def _copy_file(src: str, dst: str, st: os.stat_result) -> None:
    """A real copy where a link is refused (EXDEV, EPERM): data fsync'd, mtime kept."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout)
        fout.flush()
        os.fsync(fout.fileno())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


class CorruptIndex(Exception):
    """The old uidlist could not be parsed; carries its UIDVALIDITY if readable."""

    def __init__(self, why: str, old_validity: int = 0):
        super().__init__(why)
        self.old_validity = old_validity


OLD_VERSION = "3"           # mailsrv-uidlist copied the shape of Dovecot's version 3 header
MAX_UID = 0xFFFFFFFF        # RFC 3501 §2.3.1.1: UIDs are 32-bit


def parse_uidlist(text: str) -> Tuple[int, int, List[Tuple[int, str, Optional[int]]]]:
    """The old ``mailsrv-uidlist`` → (uidvalidity, uidnext, [(uid, key, cached CRLF size)]).

    Its lines were ``3 V<uidvalidity> N<uidnext>`` then ``<uid> [W<size>] :<key>``.
    Raises CorruptIndex when anything breaks RFC 3501 §2.3.1.1's invariants
    (UIDs strictly ascending, all below UIDNEXT, keys unique)."""
    lines = text.split("\n")
    head = lines[0].split()
    fields = {f[0]: f[1:] for f in head[1:] if f}
    try:
        if head[0] != OLD_VERSION:
            raise ValueError("version")
        validity, uidnext = int(fields["V"]), int(fields["N"])
    except (IndexError, KeyError, ValueError):
        raise CorruptIndex("bad header")
    if not (0 < validity <= MAX_UID and 0 < uidnext <= MAX_UID + 1):
        raise CorruptIndex("header out of range", validity)
    rows: List[Tuple[int, str, Optional[int]]] = []
    seen, last = set(), 0
    for line in lines[1:]:
        if not line:
            continue
        rows.append(_parse_row(line, validity))
        uid, key = rows[-1][0], rows[-1][1]
        if uid <= last or uid >= uidnext or key in seen:
            raise CorruptIndex("UIDs not ascending or duplicate key", validity)
        last = uid
        seen.add(key)
    return validity, uidnext, rows


def _parse_row(line: str, validity: int) -> Tuple[int, str, Optional[int]]:
    head, sep, key = line.partition(" :")
    parts = head.split()
    if not sep or not key or not parts or "/" in key:
        raise CorruptIndex("bad line", validity)
    try:
        uid = int(parts[0])
        size = None
        for p in parts[1:]:
            if p[:1] == "W":
                size = int(p[1:])
    except ValueError:
        raise CorruptIndex("bad number", validity)
    return uid, key, size
