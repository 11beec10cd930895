"""The one place where RFC 4314 rights are checked.

The access layer (protocols/backend/acl.py, acl_shared.py) asks ``require``
before every operation on a folder of another user, with the operation's
name from ``NEEDS`` (RFC 4314 §4, the table and the text under it; RFC 6851
§4.2 for MOVE), and ``flags_allowed`` for flags (STORE, APPEND, COPY, and
FETCH's implicit \\Seen).  Handlers never test a right themselves.

Refusals (RFC 4314 §6: never reveal a mailbox the user may not look up):
a missing right answers ``NO [NOPERM]`` when the user holds ``l`` or ``r``
on the folder (either shows that it exists), else ``NO [NONEXISTENT]``
worded exactly as for a folder that does not exist.
"""

from __future__ import annotations

from typing import Iterable, List, Tuple

from protocols.backend.contracts import MailboxError

ALL = "lrswipkxtea"               # RFC 4314 §2.1
# RFC 4314 §5.1.1: RIGHTS= lists the rights beyond RFC 2086's, and MUST include t, e, x, k
RIGHTS_CAPABILITY = "texk"

# RFC 4314 §4 (UID forms the same); RFC 6851 §4.2: MOVE is STORE \Deleted + COPY + EXPUNGE.
NEEDS = {
    "LIST": "l",                  # not a NO: LIST just leaves the folder out
    "SUBSCRIBE": "l",             # we check existence at SUBSCRIBE
    "SELECT": "r", "EXAMINE": "r", "STATUS": "r",
    "APPEND": "i", "COPY-INTO": "i",
    "CREATE": "k",                # on the nearest existing parent
    "DELETE": "x",
    "RENAME": "x", "RENAME-INTO": "k",
    "SETACL": "a", "DELETEACL": "a", "GETACL": "a", "LISTRIGHTS": "a",
    "EXPUNGE": "e",
    "MOVE-FROM": "te",
    # RFC 8508 §4.1: UID STORE (\Deleted: t) and UID EXPUNGE (e) here, APPEND (i) in the target
    "REPLACE-SAME": "tei",
}
# RFC 4314 §4: MYRIGHTS needs any one of these.
ANY_OF = {"MYRIGHTS": "lrikxa"}


def missing(rights: str, op: str) -> str:
    """The rights ``op`` needs that ``rights`` lacks ("" when allowed)."""
    if op in ANY_OF:
        return "" if any(r in rights for r in ANY_OF[op]) else ANY_OF[op]
    return "".join(r for r in NEEDS[op] if r not in rights)


def refusal(rights: str, name: str, lacking: str) -> MailboxError:
    """RFC 4314 §6: without ``l`` or ``r`` the folder does not exist for this user
    (with ``r`` alone SELECT shows it exists: NOPERM tells no more)."""
    if "l" not in rights and "r" not in rights:
        return MailboxError("NONEXISTENT", "mailbox %s does not exist" % name)
    return MailboxError("NOPERM", "no permission on %s: right %s needed (RFC 4314)" % (name, lacking))


def require(rights: str, op: str, name: str) -> None:
    """Raise the refusal unless ``rights`` allow ``op`` on the folder ``name``."""
    lacking = missing(rights, op)
    if lacking:
        raise refusal(rights, name, lacking)


def flag_right(flag: str) -> str:
    """RFC 4314 §4 (STORE, APPEND, COPY): \\Seen needs s, \\Deleted t, every other flag w."""
    if flag.lower() == "\\seen":
        return "s"
    if flag.lower() == "\\deleted":
        return "t"
    return "w"


def may_change(rights: str, flag: str) -> bool:
    """Whether ``rights`` let the user set or clear ``flag`` (RFC 4314 §4)."""
    return flag_right(flag) in rights


def flags_allowed(rights: str, flags: Iterable[str]) -> List[str]:
    """The flags ``rights`` let the user set or clear (APPEND/COPY drop the others, §4)."""
    return [f for f in flags if flag_right(f) in rights]


def store_plan(rights: str, flags: Iterable[str], mode: str, name: str) -> Tuple[List[str], str]:
    """STORE (RFC 4314 §4): (the flags to apply, the flag rights the user holds).
    Flags without their right are left out, as the RFC's SHOULD NOT fail asks;
    a STORE none of whose flags may change is ``NO [NOPERM]``.  FLAGS (replace)
    changes only the kinds of flags the user holds rights for."""
    flags = list(flags)
    held = "".join(r for r in "swt" if r in rights)
    kept = flags_allowed(rights, flags)
    if mode == "replace":
        if not held:
            raise refusal(rights, name, "s, w or t")
        return kept, held
    if flags and not kept:
        raise refusal(rights, name, "".join(sorted(set(flag_right(f) for f in flags))))
    return kept, held


def read_only(rights: str) -> bool:
    """RFC 4314 §5.2: READ-ONLY unless one of i, e or the shared flag rights (w, t; s
    is private here, but changes what the user sees, so it counts too)."""
    return not any(r in rights for r in "iewts")
