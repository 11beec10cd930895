"""A few threads that run one function over a list together (store/deliver.py's
staging step: every job of a batch written and fsync'd at once, so the file
system folds their fsyncs into few journal commits).

``concurrent.futures``' ``Executor.map`` does the same with a Future, a work item,
a lock and a hand-off per item: about 25 us of Python each, time the event
loop's thread may wait for the GIL.  Here a batch costs one notify to wake as
many threads as it has items (but one), the caller's thread takes items too,
and the last item done wakes the caller.
"""

import threading
from typing import Callable, Optional


class Gang:
    """Threads that run one function over a batch together, the caller's thread
    too: what ``executor.map`` does for the staging step, without a Future, a work
    item and a hand-off per job (about 25 us of Python each, all of it time the
    event loop's thread may wait for the GIL).  One ``map`` at a time."""

    def __init__(self, threads: int, name: str):
        lock = threading.Lock()
        self._ready = threading.Condition(lock)     # work to take, or closed
        self._finished = threading.Condition(lock)  # the last item of a map is done
        self._fn: Optional[Callable] = None
        self._items: list = []
        self._left = 0
        self._error: Optional[BaseException] = None
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name="%s_%d" % (name, i), daemon=True)
                         for i in range(max(0, threads))]
        for thread in self._threads:
            thread.start()

    def map(self, fn: Callable, items: list) -> None:
        """``fn(item)`` for every item, some on the gang's threads; the first
        exception is raised here once all are done."""
        if len(items) < 2 or not self._threads:
            for item in items:
                fn(item)
            return
        with self._ready:
            self._fn, self._items, self._left, self._error = fn, list(items), len(items), None
            self._ready.notify(min(len(items) - 1, len(self._threads)))
        self._take()
        with self._finished:
            while self._left:
                self._finished.wait()
            error, self._fn, self._error = self._error, None, None
        if error is not None:
            raise error

    def _take(self) -> None:
        while True:
            with self._ready:
                if not self._items:
                    return
                item, fn = self._items.pop(), self._fn
            error = None
            try:
                fn(item)
            except BaseException as exc:    # raised in the caller of map
                error = exc
            with self._finished:
                if error is not None and self._error is None:
                    self._error = error
                self._left -= 1
                if not self._left:
                    self._finished.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
            self._take()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
