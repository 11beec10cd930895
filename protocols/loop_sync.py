"""Blocking calls into a running event loop from another thread.

For the in-process test server (protocols/testserver.py): a test's thread asks
the loop thread for something (``call_soon_threadsafe``) and waits for the
answer, with a bound.  Part of the event loop (tests/test_layering.py lets
this module use threads and the clock): nothing else in protocols/ waits.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

Done = Callable[[object], None]


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def monotonic() -> float:
    return time.monotonic()


def call_and_wait(loop, start: Callable[[Done], None], timeout: float):
    """Run ``start(done)`` on the loop thread and block until ``done(value)``;
    returns the value (an exception value is raised).  ``TimeoutError`` when no
    answer comes within ``timeout`` seconds (the call may still finish later).
    Must not be called from the loop thread itself (it would wait for itself)."""
    if loop._thread_id == threading.get_ident():
        raise RuntimeError("call_and_wait from the event loop's own thread")
    answered = threading.Event()
    box = []

    def done(value: object) -> None:
        if not answered.is_set():
            box.append(value)
            answered.set()

    def run() -> None:
        try:
            start(done)
        except BaseException as exc:    # handed to the caller, not lost in the loop's log
            done(_Raised(exc))
    loop.call_soon_threadsafe(run)
    if not answered.wait(timeout):
        raise TimeoutError("no answer from the server's event loop within %.1f s" % timeout)
    value = box[0]
    if isinstance(value, _Raised):
        raise value.exc
    if isinstance(value, BaseException):
        raise value
    return value
