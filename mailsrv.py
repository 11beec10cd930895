#!/usr/bin/env python3
"""mailsrv: a complete mail server in pure Python standard library.

This file is the composition root: the table of listeners, ``MailServer`` (the
wiring that connects the sans-I/O sessions in ``protocols/`` to the event loop
and to the disk in ``store/``) and the command line: its parser and the
dispatch to the subcommands (serve, user, alias, dns, queue, tls, rfc, test-server:
protocols/commands.py; check: protocols/check.py; sendmail:
protocols/backend/sendmail.py), each handed what only this file knows (the
server, the listeners, the clock, /etc/resolv.conf).  The configuration (its table of keys, the typed ``Config``, the
INI file and the flags on top) is protocols/config.py.  Importing this file
starts nothing; embedders use :class:`MailServer` (see README "Embedding").

    python3 mailsrv.py                       # serve in the foreground
    python3 mailsrv.py user add alice@localhost < password-file
    python3 mailsrv.py --help
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from protocols import logtarget, selfsigned, testserver
from protocols.backend.wiring import Backend
from protocols.commands import (dns_main, dns_parser, queue_main, rfc_main, serve, server_pid_name, source_citations,  # noqa: F401 (serve, source_citations: for tests)
                                 serve_processes, test_server_main, test_server_parser, tls_main, tls_parser, user_alias_main, user_quota_parser)
from protocols.config import KEYS, Config, ConfigError, config_example, load_config, read_config_file  # noqa: F401 (KEYS, read_config_file: for tests and embedders)
from protocols.loop import EventLoop
from protocols.loop_tls import client_tls_context
from protocols.startup import bind_error as _bind_error, listener_plan, listening_line
from protocols.supervisor import AUTH_KEY, tune_process
from store.datadir import DataDirError, ServerLock, open_data_dir, open_for_command, os_reason

log = logging.getLogger("mailsrv")

# The listeners: one table, read by bind, the --NAME-port flags and `check`; ports are config keys.

STARTTLS = "starttls"   # plaintext; STARTTLS (RFC 3207) / STLS (RFC 2595) offered once a certificate is set
IMPLICIT = "implicit"   # TLS from the first octet (RFC 8314 §3.3); only opened with a certificate
SMTP_BUSY = b"421 4.7.0 Too many connections, try later\r\n"    # RFC 5321 §3.8; 4.7.0: RFC 3463 §3.8
POP3_BUSY = b"-ERR [SYS/TEMP] too many connections\r\n"          # RFC 3206 §4: SYS/TEMP
IMAP_BUSY = b"* BYE [UNAVAILABLE] Too many connections, try later\r\n"   # RFC 9051 §7.1.5, RFC 5530 §3
PLAIN = "plain"         # no TLS at all (the HTTP listener: loopback only unless http_address says otherwise)
HTTP_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"   # RFC 9110 §15.6.4


@dataclass(frozen=True)
class Listener:
    """One kind of listener: its name (in logs, ``server.ports`` and start-up lines),
    the configuration key of its port (and so its ``--NAME-port`` flag), its TLS
    mode, how the backend makes its sessions (None: reserved, not built yet),
    and the reply to a connection over the limits (not sent under implicit TLS)."""

    name: str
    port_key: str
    tls: str
    factory: Optional[Callable[[Backend], Callable]]
    busy: bytes = b""
    address_key: str = ""     # a config key of addresses that replaces ``listen`` for this listener


LISTENERS = (
    Listener("smtp", "smtp_port", STARTTLS, lambda b: b.smtp_factory("smtp"), SMTP_BUSY),
    Listener("submission", "submission_port", STARTTLS, lambda b: b.smtp_factory("submission"), SMTP_BUSY),
    Listener("smtps", "smtps_port", IMPLICIT, lambda b: b.smtp_factory("smtps"), SMTP_BUSY),
    Listener("pop3", "pop3_port", STARTTLS, lambda b: b.pop3_factory(), POP3_BUSY),
    Listener("pop3s", "pop3s_port", IMPLICIT, lambda b: b.pop3_factory(), POP3_BUSY),
    Listener("imap", "imap_port", STARTTLS, lambda b: b.imap_factory(), IMAP_BUSY),
    Listener("imaps", "imaps_port", IMPLICIT, lambda b: b.imap_factory(), IMAP_BUSY),
    Listener("http", "http_port", PLAIN, lambda b: b.http_factory(), HTTP_BUSY, address_key="http_address"),
    Listener("https", "https_port", IMPLICIT, lambda b: b.http_factory(), HTTP_BUSY, address_key="http_address"),  # MTA-STS
)


# ---------------------------------------------------------------------------
# The server: listeners, sessions, backends.  Usable in-process.
# ---------------------------------------------------------------------------

class MailServer:
    """The whole server, startable in-process (see README "Embedding").

    ``start()`` binds every listener (port 0 = any free port) and runs the
    event loop in a background thread; ``ports`` maps listener names to the
    bound ports; ``stop()`` shuts down gracefully and joins the thread.
    ``serve_forever()`` runs the loop in the calling thread instead.
    """

    def __init__(self, config: Optional[Config] = None, **values):
        self.config = config if config is not None else Config(values)
        self.loop = EventLoop()
        # catch-all mode never relays: no client TLS context (loading the CA store is most of a start)
        client_tls = None if self.config.catch_all else client_tls_context(self.config.tls_verify)
        self.backend = Backend(self.config, self.loop, tls_client_context=client_tls, resolv_conf=_read_resolv_conf())
        self.addresses: Dict[str, List[Tuple[str, int]]] = {}
        self._thread: Optional[threading.Thread] = None
        self._tls = None
        self.sockets: Dict[Tuple[str, str, int], object] = {}   # (name, host, port): a supervisor's bound socket
        self.tls_preset: Optional[ssl.SSLContext] = None
        self.shared_counts = None   # a worker's (index, supervisor's SharedTable): protocols/loop_connlimits.py

    @property
    def ports(self) -> Dict[str, int]:
        return {name: addrs[0][1] for name, addrs in self.addresses.items()}

    # -- users, for embedders and tests --------------------------------
    def add_user(self, address: str, password: str) -> None:
        self.backend.add_user(address, password)

    # -- listeners -----------------------------------------------------
    def _tls_context(self) -> Optional[ssl.SSLContext]:
        return selfsigned.server_context(self.config, time.time)   # tls_cert/tls_key, or the self-signed pair in DATA/tls/

    def bind(self) -> None:
        """Bind every configured listener (in a worker: on the supervisor's ``sockets``,
        protocols/supervisor.py); raises ConfigError with a readable message."""
        cfg = self.config
        # a worker starts on its supervisor's context (protocols/supervisor.py tls_context); SIGHUP reads the files
        self._tls = self.tls_preset if self.tls_preset is not None else self._tls_context()
        self.backend.start()
        self.backend.start_pickup()
        factories: Dict[str, Callable] = {}
        for lst, host, port in listener_plan(cfg, LISTENERS, self._tls is not None):
            name, implicit = lst.name, lst.tls == IMPLICIT
            factory = factories[name] = factories.get(name) or lst.factory(self.backend)
            shared = self.shared_counts     # the connection limits held across workers (README "Workers")
            counts = shared[1].counts(shared[0], (name, host, port), cfg.max_connections,
                                      cfg.max_connections_per_ip) if shared else None
            try:
                bound = self.loop.listen(
                    name, host, port, factory,
                    ssl_context=self._tls if implicit else None,
                    starttls_context=None if implicit or lst.tls == PLAIN else self._tls,
                    max_connections=cfg.max_connections, max_per_ip=cfg.max_connections_per_ip,
                    busy_reply=lst.busy, sock=self.sockets.get((name, host, port)), counts=counts,
                    shared=bool(shared))
            except OSError as e:
                raise ConfigError(_bind_error(name, host, port, e)) from None
            self.addresses.setdefault(name, []).append(bound)
            log.debug("%s", listening_line(name, *bound))   # serve_main prints it once
        if self.shared_counts:          # workers > 1: the login attempts in flight count across them too
            index, table = self.shared_counts
            self.backend.auth.share_inflight(table.counts(index, AUTH_KEY, 1 << 31, cfg.auth_max_failures))

    def listening_lines(self) -> List[str]:
        return [listening_line(name, host, port) for name, addrs in self.addresses.items() for host, port in addrs]

    def start(self) -> "MailServer":
        """Bind and run the loop in a background thread (embedding, tests); a bind error closes all first."""
        try:
            self.bind()
        except BaseException:
            self.backend.close()
            self.loop.close(wait=True)
            raise
        self._thread = threading.Thread(target=self.loop.run, name="mailsrv-loop", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.loop.run()
        self.backend.close()
        self.loop.close(wait=True)      # no worker still writing once this returns

    def shutdown(self, grace: Optional[float] = None) -> None:
        """Threadsafe: stop accepting, 421 idle sessions, let DATA in flight finish."""
        g = self.config.shutdown_grace if grace is None else grace
        self.loop.call_soon_threadsafe(lambda: self.loop.begin_shutdown(g))

    def stop(self, grace: float = 5.0) -> None:
        self.shutdown(grace)
        if self._thread is not None:
            self._thread.join(grace + 10)
            if self._thread.is_alive():
                self.loop.stop()
                self._thread.join(10)
        self.backend.close()
        if self._thread is None or not self._thread.is_alive():
            self.loop.close(wait=True)  # its wake-up socket pair, selector, and the workers' last jobs

    def reload(self, config: Optional[Config] = None) -> None:
        """SIGHUP: re-read users, aliases and the live configuration keys.

        Keys that are not live (ports, addresses, data_dir) keep their running
        values until a restart, and a WARNING names each changed one.  The TLS
        certificate and key are loaded again (renewals need no restart)."""
        running_tls = (self.config.tls_cert, self.config.tls_key)
        if config is not None:
            restart = self._restart_keys(config)
            if restart:
                log.warning("reload: changed keys need a restart to take effect: %s", "; ".join(restart))
            merged = dict(self.config.values)
            for k, (_kind, _d, live, _c) in KEYS.items():
                if live or (k in ("tls_cert", "tls_key") and self._tls is not None and config.tls_cert):
                    merged[k] = config.values[k]
            self.config = Config(merged, names=self.config.names)
        self.backend.reload(self.config if config is not None else None)
        if not self.reload_tls():
            self.config.tls_cert, self.config.tls_key = running_tls

    def _restart_keys(self, config: Config) -> List[str]:
        """Changed keys SIGHUP cannot apply (turning TLS on or off is one)."""
        out = []
        for k, (_kind, _d, live, _c) in KEYS.items():
            if live or (k in ("tls_cert", "tls_key") and self._tls is not None and config.tls_cert):
                continue
            if config.values[k] != self.config.values[k]:
                out.append(f"{k} (running {self.config.values[k]!r}, configured {config.values[k]!r})")
        return out

    def reload_tls(self) -> bool:
        """Load tls_cert/tls_key again for new connections and their STARTTLS;
        open sessions keep theirs.  A pair that does not load is refused with
        one ERROR line naming the file, and the running one stays in use."""
        if self._tls is None:          # TLS off; turning it on needs a restart
            return True
        try:
            ctx = self._tls_context()
        except ConfigError as e:
            log.error("TLS certificate not reloaded, the running one stays in use: %s", e)
            return False
        self._tls = ctx
        count = self.loop.set_tls_context(ctx)
        log.info("TLS certificate reloaded from %s (%d listeners)", self.config.tls_cert or "DATA/tls (self-signed)", count)
        return True

    def queue_control(self) -> None:
        """SIGUSR1: apply requests left by `mailsrv.py queue ...` (loop thread)."""
        self.backend.queue_control()


class TestServer(testserver.TestServer):
    """The in-process test mail server (protocols/testserver.py, README "Test server")."""
    __test__, server_class, clock = False, MailServer, staticmethod(time.time)      # pytest: not a test class


def _read_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# -- command line -------------------------------------------------------------

def _global_options(p: argparse.ArgumentParser, suppress: bool = False) -> argparse.ArgumentParser:
    """The options every command takes, before or after the subcommand: on a
    subcommand they default to SUPPRESS, so they never undo the same option
    given before the subcommand."""
    def opt(*names, **kw):
        if suppress:
            kw["default"] = argparse.SUPPRESS
        p.add_argument(*names, **kw)
    opt("--config", metavar="FILE", help="INI configuration file ([mailsrv] section)")
    opt("--data", metavar="DIR", help="data directory (default ./maildata)")
    opt("--listen", metavar="ADDR", action="append", help="address to listen on (repeatable)")
    opt("--hostname", metavar="NAME")
    opt("--domain", metavar="NAME", action="append", help="local mail domain (repeatable)")
    for lst in LISTENERS:
        opt("--" + lst.port_key.replace("_", "-"), metavar="N", help="port number, 0 for any, off to disable")
    opt("--tls-cert", metavar="FILE")
    opt("--tls-key", metavar="FILE")
    opt("--tls-self-signed", metavar="yes|no", help="with no --tls-cert: a self-signed certificate (default yes)")
    opt("--log-level", metavar="LEVEL")
    opt("--workers", metavar="N", help="serving processes: auto (one per core, the default) or a number")
    opt("--dns-server", metavar="HOST:PORT", action="append", help="DNS server for MX lookups (repeatable)")
    opt("--relay-port", metavar="N", help="destination port for outbound SMTP (default 25)")
    opt("--relayhost", metavar="HOST:PORT", help="smarthost for all outbound mail")
    opt("--trusted-networks", metavar="CIDR[,CIDR...]", help="clients allowed to relay; 'none' for nobody")
    return p


def _admin_parser() -> argparse.ArgumentParser:
    """The whole command line: no subcommand serves; global options go
    before or after the subcommand."""
    common = _global_options(argparse.ArgumentParser(add_help=False), suppress=True)
    p = _global_options(argparse.ArgumentParser(
        prog="mailsrv.py", description="mailsrv: SMTP, POP3 and Maildir in pure Python. "
        "Without a subcommand it serves in the foreground."))
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND")
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    for action in ("add", "passwd", "del", "disable", "enable", "show"):
        user.add_parser(action, parents=[common]).add_argument("address")
    user.add_parser("list", parents=[common])
    user_quota_parser(user, common)
    alias = sub.add_parser("alias", help="manage aliases").add_subparsers(dest="action", required=True)
    aa = alias.add_parser("add", parents=[common])
    aa.add_argument("alias")
    aa.add_argument("targets", nargs="+")
    alias.add_parser("del", parents=[common]).add_argument("alias")
    alias.add_parser("list", parents=[common])
    queue = sub.add_parser("queue", parents=[common], help="list the outbound queue, or flush/delete/bounce")
    queue.add_argument("action", nargs="?", default="list", choices=("list", "flush", "delete", "bounce"))
    queue.add_argument("id", nargs="?")
    dns_parser(sub, common)
    tls_parser(sub, common)
    sub.add_parser("check", parents=[common], help="check the configuration, files and DNS; print what the server would do")
    sub.add_parser("config-example", help="print a commented configuration file with every key")
    test_server_parser(sub, common)
    rfc = sub.add_parser("rfc", help="the code's RFC citations: rfc [NUMBER [SECTION]]")
    rfc.add_argument("number", nargs="?", type=int)
    rfc.add_argument("section", nargs="?", default="")
    return p


def admin_main(argv: List[str]) -> int:
    args = _admin_parser().parse_args(argv)
    if args.cmd == "config-example":
        sys.stdout.write(config_example())
        return 0
    if args.cmd == "rfc":       # reads our own source only: no configuration
        return rfc_main(args.number, args.section)
    if args.cmd == "test-server":   # its own defaults under the configuration (protocols/commands.py)
        return test_server_main(args, MailServer)
    cfg = load_config(args)
    if args.cmd == "check":
        return check_main(cfg)
    if args.cmd == "dns":        # asks DNS only: needs no data folder
        return dns_main(cfg, args.qtype, args.name, _read_resolv_conf(), args.ip, args.sender, args.helo)
    data = cfg.data_dir = open_for_command(cfg.data_dir, args.cmd, getattr(args, "action", None))
    if args.cmd in ("user", "alias"):
        # Skipped lines of the users/aliases files (store/users.py) say so on stderr.
        logging.basicConfig(level=logging.WARNING, format="mailsrv: %(levelname)s: %(message)s")
        return user_alias_main(args, data, cfg)
    if args.cmd == "queue":
        return queue_main(cfg, args.action, args.id, MailServer)
    if args.cmd == "tls":
        return tls_main(cfg, args.days, args.host, args.ip, time.time)
    return args.run(cfg, args) if getattr(args, "run", None) else 2     # dkim (protocols/dkim_command.py)


def check_main(cfg: Config) -> int:
    """`mailsrv.py check` (protocols/check.py): exit 0, or 2 on any problem."""
    from protocols.check import run_check
    return run_check(cfg, EventLoop(), _read_resolv_conf(), LISTENERS)


def sendmail_main(argv: List[str]) -> int:
    """`sendmail [options] [rcpt...] < message` (protocols/backend/sendmail.py)."""
    from protocols.backend import sendmail
    return sendmail.main(argv, time.time)


def serve_main(argv: List[str]) -> int:
    args = _admin_parser().parse_args(argv)
    cfg = load_config(args)
    try:
        log_handler = logtarget.install(cfg.log_target, str(cfg.log_level))
    except OSError as e:
        raise ConfigError(f"cannot open log_target {e.filename or cfg.log_target}: {e.strerror or e}") from None
    tune_process()      # process-wide, so here and not in EventLoop: embedders keep theirs
    cfg.data_dir = open_data_dir(cfg.data_dir, create=True)
    lock = ServerLock(cfg.data_dir, server_pid_name(cfg)).acquire()   # a second server here stops
    try:
        return serve_processes(cfg, MailServer, LISTENERS, lambda: load_config(args), log_handler)   # protocols/supervisor.py
    finally:
        lock.release()


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sendmail":
        return sendmail_main(argv[1:])
    try:
        if _admin_parser().parse_args(argv).cmd is not None:
            return admin_main(argv)
        return serve_main(argv)
    except (ConfigError, DataDirError) as e:
        print(f"mailsrv: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not e.filename:
            raise
        print(f"mailsrv: {e.filename}: {os_reason(e)}", file=sys.stderr)   # one line, naming the file
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
