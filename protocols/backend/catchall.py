"""Catch-all mode (issue 11, ``catch_all = yes``; ``mailsrv.py test-server``):
the directory and the authentication of a test mail server.

Two variants, chosen by the ``Backend`` (protocols/backend/wiring.py) and
nowhere else:

* ``CatchAllDirectory``: every domain is local and every address resolves to
  a mailbox of its own (created by the first delivery), so the policy accepts
  every recipient (RFC 5321 §3.6.2 then never refuses one) and nothing is
  ever relayed: no recipient is remote, and the outbound relay is not started
  (wiring.py).  DEVIATION(RFC 5321 §3.6.1): mail for other domains is
  accepted and kept here instead of relayed or refused; that is the mode's
  purpose, and it is why the mode is off unless asked for.  No aliases, no
  plus-addressing: ``bob+tag@x`` has its own mailbox, as GreenMail does.
  Address literals (``bob@[192.0.2.1]``) and local parts the store refuses
  as file names (store/users.py) are still refused.
* ``CatchAllAuth``: a user of the users file (``add_user``) logs in with its
  own password; any other address with ``catch_all_password`` (empty: the
  address itself, as GreenMail does), or with any password when
  ``catch_all_any_password`` is set.  SCRAM-SHA-256 works with the
  mode's password (its keys are derived at each lookup), not with "any
  password" (RFC 5802 §5: the server must know the salted password).  The
  failure delay and lockouts of the AuthService stay.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import List, Optional

from protocols.backend.auth import AuthService, canonical
from protocols.sasl import ScramCredentials
from store.scram import SCRAM_ITERATIONS, SCRAM_SALT_LEN, scram_keys
from store.users import Directory, normalize_domain, normalize_localpart


class CatchAllDirectory(Directory):
    """Every domain local, every address its own mailbox (module docstring)."""

    def is_local_domain(self, domain: str) -> bool:
        try:
            normalize_domain(domain.strip())
        except (ValueError, AttributeError):
            return False
        return True

    def resolve(self, localpart: str, domain: str) -> Optional[List[str]]:
        try:
            return [normalize_localpart(localpart) + "@" + normalize_domain(domain.strip())]
        except (ValueError, AttributeError):
            return None


class CatchAllAuth(AuthService):
    """Any address logs in with the mode's password (module docstring)."""

    def has_account(self, user: str) -> bool:
        return True

    def _mode_password(self, user: str) -> str:
        return self.config.catch_all_password or user

    def check_password(self, user: str, password: str) -> bool:
        if self.users.exists(user):
            return super().check_password(user, password)
        if self.config.catch_all_any_password:
            return True
        if not self.config.catch_all_password:
            return canonical(password) == user      # the address, in any spelling of it
        return hmac.compare_digest(password.encode("utf-8", "surrogatepass"),
                                   self.config.catch_all_password.encode("utf-8", "surrogatepass"))

    def scram_lookup(self, username: str) -> ScramCredentials:
        user = canonical(username)
        if user is None or self.config.catch_all_any_password or self.users.exists(user):
            return super().scram_lookup(username)
        salt = hmac.new(self._key, b"catch-all\0" + user.encode("utf-8"), hashlib.sha256).digest()[:SCRAM_SALT_LEN]
        keys = scram_keys(self._mode_password(user), salt, SCRAM_ITERATIONS)
        return ScramCredentials(salt=keys.salt, iterations=keys.iterations,
                                stored_key=keys.stored_key, server_key=keys.server_key)
