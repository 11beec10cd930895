"""Where the command-line server's log goes: ``log_target = stderr | file:/path | syslog``.

Only ``mailsrv.py``'s command line calls :func:`install` (the root logger
belongs to the process: an embedding host keeps its own logging untouched).

* ``stderr``: as before, for a terminal, systemd's journal or a supervisor.
* ``file:/path``: appended to; SIGHUP reopens the path, so logrotate's default
  (rename, then ``postrotate``: ``kill -HUP``) starts a new file without
  losing a line.  Relative paths are taken from the directory the server
  starts in.
* ``syslog``: to the local syslog socket ``/dev/log`` (where present; UDP
  localhost:514 otherwise, the RFC 5426 port), facility ``mail`` as every MTA
  uses (RFC 5424 §6.2.1 table 1: facility 2, "mail system"), tagged
  ``mailsrv[pid]``, severities from the log levels.

The log never holds a password or a message body (see the README, "Logs").
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Optional, Tuple, Union

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "%(levelname)s %(name)s: %(message)s"   # syslog adds time and host
SYSLOG_SOCKET = "/dev/log"
SYSLOG_UDP = ("localhost", 514)                          # RFC 5426 §3.3


def check(target: str) -> Optional[str]:
    """None if ``target`` is a valid log_target, else the one-line reason."""
    if target in ("stderr", "syslog") or (target.startswith("file:") and target[5:].strip()):
        return None
    return "bad value for log_target: %r (stderr, file:/path/to/mailsrv.log or syslog)" % target


class ReopeningFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` opens anew under its name (after logrotate's rename)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            old, self.stream = self.stream, self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def make_handler(target: str, syslog_address: Union[str, Tuple[str, int], None] = None) -> logging.Handler:
    """The handler for a checked ``target``; OSError (with the file name) if the
    log file cannot be opened."""
    if target.startswith("file:"):
        handler: logging.Handler = ReopeningFileHandler(os.path.abspath(target[5:].strip()), encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    elif target == "syslog":
        address = syslog_address or (SYSLOG_SOCKET if os.path.exists(SYSLOG_SOCKET) else SYSLOG_UDP)
        handler = logging.handlers.SysLogHandler(address=address, facility=logging.handlers.SysLogHandler.LOG_MAIL)
        handler.ident = "mailsrv[%d]: " % os.getpid()
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def install(target: str, level: str) -> logging.Handler:
    """Send the root logger to ``target`` (the command line only); returns the handler."""
    handler = make_handler(target)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler


def reopen(handler: Optional[logging.Handler]) -> None:
    """SIGHUP: a log file is opened anew (logrotate); other targets need nothing."""
    if isinstance(handler, ReopeningFileHandler):
        handler.reopen()
