"""store/folder.py's work on many messages at once, column by column.

The first sync of a folder nobody has indexed yet (a first login after
10,000 deliveries, a Maildir copied in, a lost uidlist) gives every file a
UID, a uidlist line, a MODSEQ journal line and a snapshot entry.  Done one
message at a time in Python that is ~40 µs a message; here each step is
one pass of C-level built-ins (``map``, ``zip``, ``dict``, one ``%`` over a
repeated format) over lists of names, and the per-message Python loop is
left for what is rare (a name without ``,W=``, odd names).  Every function
here gives exactly what its one-at-a-time counterpart in store/folder.py,
store/folder_uidlist.py and store/folder_types.py gives
(tests/test_folder_bulk.py compares them).

While such a build runs (``gc_paused``) the cyclic garbage collector waits:
the build makes ~60,000 container objects (tuples, dicts, lists) none of
which is part of a cycle, and each 700 of them would otherwise start a
collection that finds nothing (about 25 for 10,000 messages, some of them
over the older objects too); at the end they are handed to the oldest
generation at once instead of being looked at by one more young collection.
CPU time of the first SELECT's worker step on 10,000 messages: 0.106 s
without the pause, 0.094 s with it (medians of 8, alternating, same process).
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from itertools import repeat
from operator import itemgetter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from store import dovecot_files as dv
from store.folder_types import Message, normal_letters, split_name

_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)
_new = tuple.__new__            # a NamedTuple made from a tuple, without its Python-level __new__
# Distinct ``:2,`` info strings of one directory above which the scan goes name by
# name (ours: a folder uses a few dozen flag combinations; tails make more).
MAX_INFOS = 2000
# gc_paused hands what was made to the oldest generation only past this many new
# objects (ours: ~1,000 messages' objects, ten of CPython 3.9-3.12's young thresholds
# of 700; a count, not a multiple of the threshold, which 3.13 raised to 2,000; below it
# the one young collection the pause deferred is cheap, and a promotion also moves other
# threads' young objects, garbage included, to wait for the next full collection).
PROMOTE_AFTER_OBJECTS = 7000


@contextmanager
def gc_paused(pause: bool = True) -> Iterator[None]:
    """The cyclic GC off while many acyclic objects are made at once (``pause``
    False: nothing done), and, when many were made, what was made meanwhile
    moved to the oldest generation when it ends (``gc.freeze`` + ``gc.unfreeze``:
    two list splices, no traversal; the next full collection looks at those
    objects, as at every other one; mailsrv freezes nothing else, so the
    unfreeze undoes no freeze of its own).  Process-wide, so the state is put back only by the caller
    that found it on: with two threads pausing at once the collector may come
    back before the second one ends (that build is then only slower), and it
    never stays off after both ended unless it was off before."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] > PROMOTE_AFTER_OBJECTS:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def scan_dir(path: str, found: Dict[str, Tuple[str, str, str]]) -> None:
    """Add key → (path, flag letters, tail) for each message file of ``path`` (new/ or
    cur/) to ``found``, as folder_types.split_name splits each name; no file is opened.
    maildir-spec: names starting with "." are not messages; nor are directories, nor
    names with a line break (the uidlist could not hold them).  One listdir; a
    directory that may hold subdirectories (its link count, which POSIX file systems
    raise by one per subdirectory, is not 2; btrfs says 1), odd names or many
    different info parts go through scandir name by name.  A symbolic link to a
    directory does not raise the count and is taken for a message (maildir-spec
    puts none there)."""
    names = os.listdir(path)
    if not names:
        return
    joined = "\n".join(names)
    if (os.stat(path).st_nlink != 2 or "\r" in joined or joined.count("\n") != len(names) - 1
            or joined[0] == "." or "\n." in joined):
        _scan_slowly(path, found)
        return
    paths = map((path + os.sep).__add__, names)
    if ":" not in joined:                   # new/ as delivered: no info part
        found.update(zip(names, zip(paths, repeat(""), repeat(""))))
        return
    parts = list(map(str.partition, names, repeat(":")))
    infos = list(map(_third, parts))
    kinds = {}
    for info in set(infos):
        if info[:2] == "2,":
            letters, _, tail = info[2:].partition(",")
            kinds[info] = (normal_letters(letters), tail)
        else:
            kinds[info] = ("", "")
        if len(kinds) > MAX_INFOS:
            _scan_slowly(path, found)
            return
    split = list(map(kinds.__getitem__, infos))
    found.update(zip(map(_first, parts), zip(paths, map(_first, split), map(_second, split))))


def _scan_slowly(path: str, found: Dict[str, Tuple[str, str, str]]) -> None:
    with os.scandir(path) as it:
        for e in it:
            name = e.name
            if name[0] == "." or "\n" in name or "\r" in name or e.is_dir():
                continue
            key, letters, tail = split_name(name)
            found[key] = (e.path, letters, tail)


def uid_lines(first_uid: int, names: Sequence[str]) -> str:
    """``<uid> :<name>`` lines for consecutive UIDs (dovecot_files.format_record of
    records without fields), formatted by one ``%``."""
    n = len(names)
    args: list = [None] * (2 * n)
    args[0::2] = range(first_uid, first_uid + n)
    args[1::2] = names
    return ("%d :%s\n" * n) % tuple(args)


def name_sizes(keys: Sequence[str]) -> Optional[List[int]]:
    """Every key's ``,W=`` size (folder_types.name_size) when each key has exactly one
    ``,W=<digits>`` at its end, else None (then name_size key by key)."""
    rests = list(map(_third, map(str.partition, keys, repeat(",W="))))
    if not all(map(str.isdecimal, rests)):
        return None
    return list(map(int, rests))


def new_records(keys: Sequence[str], found, first_uid: int):
    """The records of new keys in this order, given consecutive UIDs from
    ``first_uid``, when every key carries its ``,W=`` size: (records, their
    uidlist lines, sizes); None when one does not (a file must be read)."""
    sizes = name_sizes(keys)
    if sizes is None:
        return None
    names = list(map(_third, map(str.rpartition, map(_first, map(found.__getitem__, keys)), repeat(os.sep))))
    records = list(map(_new, repeat(dv.Record), zip(range(first_uid, first_uid + len(keys)), names, repeat(()))))
    return records, uid_lines(first_uid, names), sizes


def journal_lines(items: Sequence[Tuple[int, Tuple[int, str]]]) -> str:
    """``<uid> <modseq> <letters>`` lines of store/modseq.py for (uid, (modseq, letters))."""
    values = list(map(_second, items))
    return journal_columns(list(map(_first, items)), list(map(_first, values)), list(map(_second, values)))


def journal_columns(uids: Sequence[int], modseqs: Sequence[int], letters: Sequence[str]) -> str:
    """The same lines from three columns, formatted by one ``%``."""
    n = len(uids)
    args: list = [None] * (3 * n)
    args[0::3] = uids
    args[1::3] = modseqs
    args[2::3] = letters
    return ("%d %d %s\n" * n) % tuple(args)


def messages_of(keys: List[str], uids: List[int], entries: List[Tuple[str, str, str]],
                sizes: List[int], modseqs, flags_of) -> List[Message]:
    """Snapshot messages from columns (entries: the scan's (path, letters, tail));
    ``flags_of(letters)`` → (flags, keywords) is asked once per distinct set."""
    letters = list(map(_second, entries))
    kinds = {l: flags_of(l) for l in set(letters)}
    kind = list(map(kinds.__getitem__, letters))
    return list(map(_new, repeat(Message), zip(uids, keys, map(_first, entries), map(_first, kind),
                                               map(_second, kind), sizes, modseqs)))
