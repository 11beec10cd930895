"""Injected faults in the SMTP session (issue 11; the rules: protocols/faults.py).

A mixin of SmtpSession: ``_command`` calls ``_fault`` for a command allowed
in the current state, only while the backend's ``faults.active`` holds a
rule (one attribute check: nothing else runs on a server without faults).
The backend's ``fault`` answers None (run the command) or a
``protocols.base.FaultAction`` carried out here: its reply instead of the
command's, the command run after a delay (input held meanwhile, so
pipelined commands are answered in order, RFC 2920 §3), or the connection
dropped (DATA and BDAT: once the message is read, before the reply, with
nothing stored: transfer.py's ``_finish_message``).
"""

from __future__ import annotations

import re

from protocols.base import FaultAction, FaultView
from protocols.smtp.state import BDAT_RE, Chunk, State

_PATH_RE = re.compile(r"<([^>]*)>")


def _path(arg: str) -> str:
    """The address in ``FROM:<...>`` / ``TO:<...>`` for the view (the handler checks the syntax)."""
    m = _PATH_RE.search(arg)
    return m.group(1) if m else arg.partition(":")[2].strip()


class FaultHooks:
    """``_fault`` (see SmtpSession for the attributes)."""

    def _fault(self, verb: str, arg: str, handler) -> bool:
        """Ask the backend about this command; True when a fault took it."""
        txn = self._txn
        mail_from, rcpts = (txn.mail_from, tuple(txn.rcpts)) if txn is not None else ("", ())
        if verb == "MAIL":
            mail_from = _path(arg)
        elif verb == "RCPT":
            rcpts += (_path(arg),)
        view = FaultView("smtp", verb, arg, self.ctx.peer_ip, mail_from, rcpts,
                         self._auth_user, self.ctx.tls_active)
        action = self.backend.fault("smtp", verb, view)
        if action is None:
            return False
        if action.kind == "fail":
            self._fault_reply(verb, arg, action)
        elif action.kind == "delay":
            self._await(lambda done: self.backend.fault_delay(action.seconds, done),
                        lambda _: None if self.closed else self._run(handler, arg))
        elif verb in ("DATA", "BDAT"):
            self._drop_after_data = True    # the message is read, then the connection drops
            return False
        else:
            self.closed = True
        return True

    def _fault_reply(self, verb: str, arg: str, action: FaultAction) -> None:
        m = BDAT_RE.match(arg) if verb == "BDAT" else None
        if m is not None:
            # RFC 3030 §2: a refused BDAT's chunk is still read (and discarded),
            # then the reply; the transaction has failed.
            line = action.reply.decode("ascii").rstrip("\r\n")
            if self.state in (State.RCPT, State.BDAT):
                self._reset_transaction(State.READY)
            self._chunk = Chunk(int(m.group(1)), bool(m.group(2)), (int(line[:3]), "", line[4:]))
            if self._chunk.remaining == 0:
                self._chunk_done()
            return
        self._send(action.reply)
        if action.close:            # 421 (RFC 5321 §3.8)
            self.closed = True
