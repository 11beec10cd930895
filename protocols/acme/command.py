"""`mailsrv.py acme status` and `mailsrv.py acme renew` (README "ACME certificates").

``status`` prints the configured directory and names, the certificate's names
and dates, when the renewal is due, the next attempt and the last error (from
DATA/tls/acme/, with shared_data this host's DATA/tls/<host>/acme/).  ``renew``
marks an attempt as wanted now and sends the running server a SIGHUP (the
server's service reads the mark then; with shared_data this host's server, by
its pid file); with no server running, the next start makes the attempt.
"""

from __future__ import annotations

import datetime
import os
import signal

from protocols.acme import service
from protocols.config import Config, ConfigError
from store.datadir import lock_holder, pid_name


def acme_parser(sub, common) -> None:
    """The `acme` subcommands (mailsrv.py's parser; the global options come with ``common``)."""
    acme = sub.add_parser("acme", help="ACME certificates (RFC 8555): acme status | acme renew") \
        .add_subparsers(dest="action", required=True)
    acme.add_parser("status", parents=[common], help="the certificate's names, dates and the next attempt") \
        .set_defaults(run=lambda cfg, args: status_main(cfg))
    acme.add_parser("renew", parents=[common], help="ask the running server for a new certificate now") \
        .set_defaults(run=lambda cfg, args: renew_main(cfg))


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def status_main(cfg: Config) -> int:
    if not cfg.acme_email:
        print("ACME is off (acme_email is not set)")
        return 0
    print("\n".join(service.describe(cfg, _now())))
    return 0


def renew_main(cfg: Config) -> int:
    if not cfg.acme_email:
        raise ConfigError("acme renew: ACME is off (set acme_email and acme_directory first)")
    service.request_renewal(cfg.data_dir, service.host_of(cfg))
    pid = lock_holder(cfg.data_dir, pid_name(cfg.shared_data, cfg.hostname))
    if pid is None:
        print("no server is running on %s: the attempt starts at its next start" % cfg.data_dir)
        return 0
    os.kill(pid, signal.SIGHUP)
    print("asked the server (pid %d) for a new certificate from %s; `mailsrv.py acme status` shows the outcome"
          % (pid, cfg.acme_directory))
    return 0
