"""INPROGRESS (RFC 9585): progress of a long command in untagged OK responses,
a mixin of protocols/imap/session.py's ImapSession.

While a command waits for the backend (a SEARCH over a big folder, a FETCH of
many messages, a COPY / MOVE, an ESEARCH over many folders) the session asks
the loop to call it back after ``inprogress_interval`` seconds without
traffic (``idle_timeout``), and the loop's ``keepalive()`` call is what tells
it that the time has passed: the session never reads a clock.  Each such call
sends ``* OK [INPROGRESS ("tag" done goal)] ...`` (§4) and counts: after as
many as the idle timeout allows, the command is taken as stuck and the
session times out, as it did before.

Progress is counted by the commands as their worker steps come back
(``_work_goal`` once the number of items is known, ``_work_step`` per item or
batch done): SEARCH counts messages evaluated (selected.py), FETCH messages
sent (fetching.py), ESEARCH folders searched (multisearch.py).  A command
that does not count (COPY / MOVE: one worker step, all or nothing) sends
``("tag" NIL NIL)``, a keepalive with its tag (§4).  A FETCH whose output
flows needs none: the loop's idle clock restarts whenever output is sent.
No notification while the client is not reading (the output waits), and
none that would claim PROGRESS = GOAL (§4: the tagged reply says that).
"""

from __future__ import annotations

from typing import Optional

from protocols.imap import wire

# RFC 9585 §4: "it is RECOMMENDED that these are sent every 10-15 seconds".
INPROGRESS_INTERVAL = 10.0


class ProgressCommands:
    """The running command's progress (see the module docstring)."""

    inprogress_interval = INPROGRESS_INTERVAL
    _work_tag: Optional[bytes] = None
    _work_name = ""                           # the running command's name
    _work_done = 0
    _work_total: Optional[int] = None
    _work_beats = 0

    def _work_begin(self, tag: bytes, name: str = "") -> None:
        self._work_tag, self._work_done, self._work_total, self._work_beats = tag, 0, None, 0
        self._work_name = name

    def _work_end(self) -> None:
        self._work_tag = None

    def _work_goal(self, total: int) -> None:
        """The number of items the command will process (RFC 9585 §4 GOAL)."""
        self._work_done, self._work_total = 0, total if total > 0 else None

    def _work_step(self, n: int = 1) -> None:
        self._work_done += n

    def _progress_due(self) -> bool:
        """A command waits for the backend and the client reads: report on a deadline."""
        return (self._work_tag is not None and self.busy and self._drain_waiter is None
                and self._account is not None and not self._closing)

    def _progress_keepalive(self) -> bool:
        """The loop's deadline passed while a command works: one INPROGRESS
        response, True; False (the loop times the session out) once the
        command has been silent for the idle timeout."""
        if not self._progress_due():
            return False
        self._work_beats += 1
        if self._work_beats * self.inprogress_interval > self.config.idle_timeout:
            return False
        self._emit(progress_response(self._work_tag, self._work_done, self._work_total))
        return True


def progress_response(tag: bytes, done: int, total: Optional[int]) -> bytes:
    """``* OK [INPROGRESS ("tag" done goal)] text`` (RFC 9585 §4, §5): a tag
    with "]" is NIL; PROGRESS and GOAL NIL when not counted; GOAL NIL when
    unknown; never PROGRESS >= GOAL."""
    shown_tag = b"NIL" if b"]" in tag else wire.quoted(tag)
    if total is not None and done < total:
        state, text = b"%d %d" % (done, total), "Processed %d of %d" % (done, total)
    elif total is None and done > 0:
        state, text = b"%d NIL" % done, "Processed %d so far" % done
    else:
        state, text = b"NIL NIL", "Still working"
    return wire.untagged(b"OK [INPROGRESS (" + shown_tag + b" " + state + b")] " + text.encode("ascii"))
