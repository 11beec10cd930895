"""OBJECTID (RFC 8474) for the IMAP mail access: MAILBOXID and EMAILID from
the GUIDs Dovecot keeps in ``dovecot-uidlist`` (store/folder_uidlist.py).
Runs on the workers (imapaccess.py's steps).

* MAILBOXID (§4) is ``F`` and the folder's GUID, the uidlist header's ``G``
  field (32 hex digits, Dovecot's mailbox GUID).  The uidlist moves with the
  directory on RENAME, so the id is kept (§4); a folder deleted and made again
  gets a new uidlist and a new id; RENAME INBOX makes a new folder (a new id)
  and INBOX keeps its own (§4, RFC 3501 §6.3.5).
* EMAILID (§5.1) is ``M`` and 24 hex digits of a BLAKE2b hash of the
  message's GUID: the uidlist record's ``G`` field, else its Maildir base name
  (Dovecot's maildir GUID rule).  Nothing is written for it: a first sync of
  10,000 messages writes the same uidlist as before.  COPY and MOVE (hard
  link under a new unique name) write the source's GUID into the target
  record's ``G`` field (store/folder_convert.py), so the copy keeps the id;
  two messages delivered apart never share a base name, so never an id.
  Hashed because a base name holds ``.``, ``,`` and ``=``, which an objectid
  may not (§7: ALPHA / DIGIT / "_" / "-"), and to a fixed length; 96 bits
  make a collision within one account negligible.
* THREADID (§5.2) is not computed: NIL for every message, and SEARCH THREADID
  matches nothing (§5.2: "MUST return NIL ... MUST NOT match").
"""

from __future__ import annotations

import hashlib
import re
from typing import Dict, Sequence

# RFC 8474 §7: objectid = 1*255(ALPHA / DIGIT / "_" / "-").
_SAFE_GUID = re.compile(r"[0-9A-Za-z_-]{1,254}\Z")
# Ours: 12 octets (24 hex digits) of hash, about the length of the RFC's examples.
EMAILID_OCTETS = 12


def mailbox_id(folder) -> str:
    """The folder's MAILBOXID (§4): ``F`` + its uidlist GUID (one written when missing)."""
    guid = folder.mailbox_guid()
    if not _SAFE_GUID.match(guid):          # a hand-edited header: still a valid, stable id
        guid = hashlib.blake2b(guid.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
    return "F" + guid


def email_id(guid: str) -> str:
    """EMAILID (§5.1) of the message whose GUID is ``guid``."""
    digest = hashlib.blake2b(guid.encode("utf-8", "surrogateescape"), digest_size=EMAILID_OCTETS)
    return "M" + digest.hexdigest()


def email_ids(folder, uids: Sequence[int]) -> Dict[int, str]:
    """``{uid: EMAILID}`` of the folder's messages; UIDs gone are left out."""
    snap = folder.knowing(uids)
    keys = {}
    for uid in uids:
        msg = snap.by_uid(uid)
        if msg is not None:
            keys[uid] = msg.key
    guids = folder.message_guids(keys.values())
    return {uid: email_id(guids[key]) for uid, key in keys.items() if key in guids}
