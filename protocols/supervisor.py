"""Several serving processes on one machine: ``workers = N`` (README "Workers").

``python3 mailsrv.py`` with more than one worker runs as a supervisor: it
binds every listener once (:func:`bind_listeners`: the listeners, addresses
and error lines of mailsrv.py's ``MailServer.bind``, from protocols/startup.py's
plan), prints the start-up lines, and forks N workers before any thread
exists in it.  Each worker builds its own event loop, ``MailServer`` and
backend on the inherited listening sockets and serves as one process does
(protocols/commands.py ``serve``); a worker whose supervisor is gone (even
killed with SIGKILL) shuts down as on SIGTERM.

The listeners are shared accepting sockets, not one ``SO_REUSEPORT`` socket
per worker: that works on every platform, and a connection waits in the one
backlog until some worker accepts it, so a worker that dies loses none (with
``SO_REUSEPORT`` each socket has its own backlog, and the connections queued
in a dead worker's are reset).  The supervisor keeps its copies open, so a
port is never closed while a worker starts again.

The supervisor starts again a worker that dies (one log line with its pid
and its exit status or signal; after a death within STABLE_AFTER seconds of
its start it waits BACKOFF_FIRST seconds, doubling to BACKOFF_MAX, so a worker
that cannot start does not spin), passes SIGTERM and SIGINT on as SIGTERM
(graceful shutdown; a worker still there shutdown_grace + KILL_MARGIN seconds
later gets SIGKILL) and SIGHUP, SIGUSR1 and SIGUSR2 to every worker.  It
waits in ``select`` on the pipe of ``signal.set_wakeup_fd``: no thread, no
polling.  What runs once among the workers (the backend's ``worker`` index,
protocols/backend/wiring.py): pick-up of the sendmail command's postdrop/ and
TLS-RPT reports in worker 0; ACME's orders (and its tls-alpn-01 listener) in
worker 0, which tells the others of a new certificate (protocols/acme/service.py,
the http-01 answers are files every worker serves); the queue in every worker,
each entry leased (store/queue_lease.py) by the one delivering it.  What all
count together: the connection limits and the login attempts in flight
(``AUTH_KEY``), in memory made before the fork
(:func:`shared_counts`, protocols/loop_connlimits.py); a dead worker's counts
are zeroed when it is reaped.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from protocols import logtarget, selfsigned
from protocols.config import ConfigError
from protocols.loop import listening_socket
from protocols.loop_connlimits import SharedTable, slots_for
from protocols.startup import bind_error, listener_plan, listening_line

log = logging.getLogger("mailsrv")

BACKOFF_FIRST = 1.0     # ours: seconds before starting again a worker that died young, doubling
BACKOFF_MAX = 60.0      # ours: at most a minute between attempts of a worker that cannot start
STABLE_AFTER = 10.0     # ours: a worker that served this long died of something else than its start
KILL_MARGIN = 10.0      # ours, as MailServer.stop: seconds past shutdown_grace before SIGKILL
STOPPING = (signal.SIGTERM, signal.SIGINT)
FORWARDED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
HANDLED = STOPPING + FORWARDED + (signal.SIGCHLD,)
EXIT_SOFTWARE = 70      # sysexits.h EX_SOFTWARE: a worker ended by an unexpected exception

Key = Tuple[str, str, int]      # (listener name, host, configured port)
# Not a listener: the block of the table where the workers count the login
# attempts in flight per client address group (protocols/backend/auth.py).
AUTH_KEY: Key = ("auth", "", 0)

# Ours: seconds a thread may hold the GIL while another waits for it (CPython's
# default is 5 ms).  The loop thread gives the GIL up at every send, recv and
# select and must take it back from the store's threads; at 5 ms a busy store
# delayed replies by that much, and SMTP under 32 sessions went ~9% faster at
# 0.5 ms (README "SMTP beside aiosmtpd and Postfix"; 0.1 ms did no better).
SWITCH_INTERVAL = 0.0005


def tune_process() -> None:
    """What the command-line server sets for its whole process (mailsrv.py's
    ``serve_main``, before any fork; an embedding host keeps its own): the GIL's
    switch interval, and RLIMIT_NOFILE's soft limit raised to the hard limit
    (1,000+ connections need that many descriptors)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # pragma: no cover - depends on the host
        log.debug("could not raise RLIMIT_NOFILE: %s", exc)


def worker_count(cfg, cpu_count: Callable[[], Optional[int]] = os.cpu_count) -> int:
    """The serving processes ``workers`` asks for (auto: the number of cores).
    The test server (catch_all) is one process."""
    if cfg.catch_all:
        return 1
    return (cpu_count() or 1) if cfg.workers == "auto" else int(cfg.workers)


def tls_context(cfg):
    """The server's TLS context (or None), made once here and inherited by every
    worker: one started again after the files went bad still serves (SIGHUP
    then reloads, keeping it on an error, as one process does)."""
    return selfsigned.server_context(cfg, time.time)


def bind_listeners(cfg, listeners, tls: bool) -> Dict[Key, socket.socket]:
    """Bind what ``MailServer.bind`` would (the implicit-TLS listeners only with
    a certificate, which this makes if it is the self-signed one); ConfigError
    with bind's one line, every socket closed."""
    sockets: Dict[Key, socket.socket] = {}
    try:
        for lst, host, port in listener_plan(cfg, listeners, tls):
            try:
                sockets[(lst.name, host, port)] = listening_socket(host, port)
            except OSError as e:
                raise ConfigError(bind_error(lst.name, host, port, e)) from None
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def shared_counts(cfg, count: int, sockets: Dict[Key, socket.socket]) -> SharedTable:
    """The counters of the connection limits, in memory every worker shares
    (made before the fork; protocols/loop_connlimits.py): ``max_connections``
    and ``max_connections_per_ip`` hold across the workers, not per worker; and
    the login attempts in flight (``AUTH_KEY``), so that ``auth_max_failures``
    holds across them too."""
    return SharedTable(count, list(sockets) + [AUTH_KEY], slots_for(cfg.max_connections))


def listening_lines(sockets: Dict[Key, socket.socket]) -> List[str]:
    return [listening_line(name, *sock.getsockname()[:2]) for (name, _h, _p), sock in sockets.items()]


def close_all(sockets: Dict[Key, socket.socket]) -> None:
    for sock in sockets.values():
        sock.close()


def name_process(handler: Optional[logging.Handler]) -> None:
    """Each log line says which process wrote it: the pid after the logger's
    name (syslog: in the tag, ``mailsrv[pid]``)."""
    if isinstance(handler, logging.handlers.SysLogHandler):
        handler.ident = "mailsrv[%d]: " % os.getpid()
    elif handler is not None:
        handler.setFormatter(logging.Formatter(logtarget.FORMAT.replace("%(name)s:", "%(name)s[%(process)d]:")))


def status_text(status: int) -> str:
    """A wait status in words: 'killed by signal 9 (SIGKILL)', 'exited with status 2'."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return "killed by signal %d (%s)" % (number, signal.Signals(number).name)
        except ValueError:
            return "killed by signal %d" % number
    return "exited with status %d" % os.WEXITSTATUS(status)


def _end_with_supervisor(fd: int) -> None:
    """A worker's thread: the read end of a pipe whose write end only the
    supervisor holds reads EOF once the supervisor is gone, SIGKILL included;
    then the worker shuts down as on SIGTERM rather than serve unsupervised."""
    while os.read(fd, 1):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _noted(_signum, _frame) -> None:
    """The signal's number is in the wake-up pipe already (signal.set_wakeup_fd)."""


class Supervisor:
    """Runs ``run_worker(index, again)`` in ``count`` forked processes until
    SIGTERM/SIGINT; ``again`` is true for a worker started after a death.
    ``on_hup`` runs in the supervisor before SIGHUP goes on (its log file);
    ``counts``: the workers' connection counts, a dead worker's zeroed when it is reaped."""

    def __init__(self, count: int, run_worker: Callable[[int, bool], int], grace: float,
                 on_hup: Callable[[], None] = lambda: None, log_handler: Optional[logging.Handler] = None,
                 counts: Optional[SharedTable] = None):
        self.count, self.run_worker, self.grace, self.on_hup = count, run_worker, grace, on_hup
        self.log_handler, self.counts = log_handler, counts
        self.pids: Dict[int, Tuple[int, float]] = {}      # pid -> (index, time.monotonic() at start)
        self.failures = [0] * count                       # deaths in a row soon after start, per index
        self.restart_at: Dict[int, float] = {}            # index -> when to start it again
        self.kill_at: Optional[float] = None              # set by SIGTERM: when the rest get SIGKILL
        self.killed = False
        self._pipe = self._life = (-1, -1)
        self._sel: Optional[selectors.BaseSelector] = None

    def run(self, ready: Callable[[], None] = lambda: None) -> int:
        """Serve until stopped; ``ready`` runs once the signals are handled,
        before the first fork (the start-up lines: a signal sent when they
        appear is forwarded to the workers, never the default action here)."""
        if threading.active_count() > 1:    # fork copies only the calling thread: locks held elsewhere stay held
            log.warning("supervisor: %d threads before fork", threading.active_count())
        name_process(self.log_handler)
        r, w = self._pipe = os.pipe()
        self._life = os.pipe()          # the workers see EOF on it when this process ends
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        old_fd = signal.set_wakeup_fd(w)
        old = {s: signal.signal(s, _noted) for s in HANDLED}
        self._sel = selectors.DefaultSelector()
        self._sel.register(r, selectors.EVENT_READ)
        try:
            ready()
            for index in range(self.count):
                self._start(index, again=False)
            while self.pids or (self.kill_at is None and self.restart_at):
                self._sel.select(self._timeout())
                self._signals()
                self._reap()
                self._due()
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, handler in old.items():
                signal.signal(s, handler)
            self._sel.close()
            for fd in (r, w) + self._life:
                os.close(fd)
        log.info("stopped")
        return 0

    # -- the workers ------------------------------------------------------------
    def _start(self, index: int, again: bool) -> None:
        """fork with the handled signals blocked: the child keeps them blocked until
        ``serve`` has its handlers (one sent meanwhile waits for them)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            log.error("worker %d: cannot fork: %s; trying again in %.0f s", index, e, BACKOFF_MAX)
            self.restart_at[index] = time.monotonic() + BACKOFF_MAX
            return
        if pid == 0:
            self._child(index, again)       # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        self.pids[pid] = (index, time.monotonic())
        log.debug("worker %d started: pid %d", index, pid)

    def _child(self, index: int, again: bool) -> None:
        code = EXIT_SOFTWARE
        try:
            signal.set_wakeup_fd(-1)
            self._sel.close()
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            for s in HANDLED:       # STOPPING and FORWARDED stay blocked until serve's handlers are in place
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGCHLD,))
            os.close(self._life[1])
            threading.Thread(target=_end_with_supervisor, args=(self._life[0],), name="mailsrv-supervised",
                             daemon=True).start()
            name_process(self.log_handler)
            code = self.run_worker(index, again)
        except ConfigError as e:
            log.error("worker %d: %s", index, e)
            code = 2
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            logging.shutdown()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.pids:
                continue
            index, started = self.pids.pop(pid)
            if self.counts is not None:     # its connections died with it: so do its counts
                self.counts.clear(index)
            if self.kill_at is not None:
                log.info("worker %d (pid %d) %s", index, pid, status_text(status))
                continue
            lived = time.monotonic() - started
            self.failures[index] = self.failures[index] + 1 if lived < STABLE_AFTER else 0
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures[index] - 1)) if self.failures[index] else 0.0
            log.warning("worker %d (pid %d) %s after %.1f s; starting it again in %.0f s",
                        index, pid, status_text(status), lived, delay)
            self.restart_at[index] = time.monotonic() + delay

    def _due(self) -> None:
        now = time.monotonic()
        for index, when in sorted(self.restart_at.items()):
            if when <= now and self.kill_at is None:
                del self.restart_at[index]
                self._start(index, again=True)
        if self.kill_at is not None and now >= self.kill_at and not self.killed and self.pids:
            self.killed = True
            log.warning("workers still running %.0f s after SIGTERM, killing: %s", self.grace + KILL_MARGIN,
                        ", ".join(str(pid) for pid in self.pids))
            self._send(signal.SIGKILL)

    def _timeout(self) -> Optional[float]:
        times = ([] if self.kill_at is not None else list(self.restart_at.values())) + \
            ([self.kill_at] if self.kill_at is not None and not self.killed else [])
        return max(0.0, min(times) - time.monotonic()) if times else None

    # -- signals ------------------------------------------------------------------
    def _signals(self) -> None:
        numbers = b""
        while True:
            try:
                chunk = os.read(self._pipe[0], 512)
            except BlockingIOError:
                break
            numbers += chunk
            if not chunk:
                break
        for number in numbers:
            if number in STOPPING:
                self._stop(number)
            elif number in FORWARDED:
                if number == signal.SIGHUP:
                    self.on_hup()
                self._send(number)

    def _stop(self, number: int) -> None:
        if self.kill_at is not None:
            return
        log.info("signal %d: shutting down (grace %.0fs)", number, self.grace)
        self.kill_at = time.monotonic() + self.grace + KILL_MARGIN
        self.restart_at.clear()
        self._send(signal.SIGTERM)

    def _send(self, number: int) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, number)
            except ProcessLookupError:      # died; _reap hears of it
                pass
