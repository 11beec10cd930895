"""Which keys sign outgoing mail (RFC 6376 §5), from the files of store/dkimkeys.py.

Per domain, at most one key of each type signs: the newest file (by mtime)
of ``<selector>.rsa.pem`` and of ``<selector>.ed25519.pem``, so a domain with
both gets two signatures (RFC 8463 §6 suggests signing with both while
verifiers learn Ed25519).  Rotation: make a key with a new selector, publish
its record, then reload (keys are read at start and on SIGHUP): the new file
is the newest and signs; the old record stays published a while for mail in
flight, then the old file and record go.

The signing domain is the From address's domain (RFC 6376 §6.1.1 ties d= to
nothing, but DMARC's alignment, RFC 7489 §3.1.1, wants it to be From's).
"""

from __future__ import annotations

import email.utils
import logging
from typing import Dict, List, Optional, Tuple

from protocols import dkim, dkim_canon
from protocols.crypto import keys
from store.dkimkeys import KeyFile

log = logging.getLogger("mailsrv.dkim")


class DkimSigner:
    """The chosen keys by domain; ``sign(data, now)`` adds their signatures."""

    def __init__(self, files: Dict[str, List[KeyFile]]):
        self.keys: Dict[str, List[Tuple[str, object]]] = {}
        for domain, found in files.items():
            newest: Dict[str, KeyFile] = {}
            for kf in found:
                if kf.key_type not in newest or (kf.mtime, kf.selector) > (newest[kf.key_type].mtime,
                                                                           newest[kf.key_type].selector):
                    newest[kf.key_type] = kf
            chosen = []
            for key_type in ("rsa", "ed25519"):
                kf = newest.get(key_type)
                if kf is not None:
                    chosen.append((kf.selector, self._load(kf)))
            self.keys[domain] = chosen

    @staticmethod
    def _load(kf: KeyFile):
        try:
            key = keys.load_private_key(kf.pem)
        except keys.KeyFileError as e:
            raise ValueError("DKIM key %s: %s" % (kf.path, e)) from None
        want = "ed25519" if dkim.key_algorithm(key) == dkim.ED25519_SHA256 else "rsa"
        if want != kf.key_type:
            raise ValueError("DKIM key %s: holds an %s key, the name says %s" % (kf.path, want, kf.key_type))
        return key

    def __bool__(self) -> bool:
        return bool(self.keys)

    def selectors(self, domain: str) -> List[str]:
        return [s for s, _ in self.keys.get(domain.lower(), [])]

    def signing_domain(self, data: bytes) -> Optional[str]:
        """The domain of the (single) From address, when we hold keys for it."""
        fields, _ = dkim_canon.split_message(data[:dkim_canon_head_limit(data)])
        froms = [dkim_canon.field_value(raw) for name, raw in fields if name == b"from"]
        if len(froms) != 1:
            return None
        addrs = email.utils.getaddresses([froms[0] or ""])
        if len(addrs) != 1 or "@" not in addrs[0][1]:
            return None
        domain = addrs[0][1].rpartition("@")[2].lower().rstrip(".")
        return domain if domain in self.keys else None

    def sign(self, data: bytes, now: int) -> bytes:
        """``data`` with a DKIM-Signature per chosen key of its From domain
        on top; unchanged when there is none.  Costs ~12 ms for RSA-2048:
        call on a worker thread."""
        domain = self.signing_domain(data)
        if domain is None:
            return data
        return dkim.sign_message(data, [(domain, sel, key) for sel, key in self.keys[domain]], now)


def dkim_canon_head_limit(data: bytes) -> int:
    """Where the header block ends (the body is not needed to find From)."""
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 4
