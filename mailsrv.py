#!/usr/bin/env python3
"""mailsrv: a complete mail server in pure Python standard library.

This file is the composition root: the command line (serve, user, alias, dns,
queue, check, sendmail), the table of listeners, and the wiring that connects
the sans-I/O sessions in ``protocols/`` to the event loop and to the disk in
``store/``.  The configuration (its table of keys, the typed ``Config``, the
INI file and the flags on top) is protocols/config.py.  Importing this file
starts nothing; embedders use :class:`MailServer` (see README "Embedding").

    python3 mailsrv.py                       # serve in the foreground
    python3 mailsrv.py user add alice@localhost < password-file
    python3 mailsrv.py --help
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from protocols import logtarget
from protocols.backend.wiring import Backend
from protocols.config import KEYS, Config, ConfigError, config_example, load_config, read_config_file  # noqa: F401 (KEYS, read_config_file: for tests and embedders)
from protocols.loop import EventLoop, raise_fd_limit
from protocols.loop_tls import client_tls_context, server_tls_context
from protocols.startup import bind_error as _bind_error, describe, make_resolver, stop_line
from store.datadir import DataDirError, ServerLock, lock_holder, lock_or_holder, open_data_dir, open_for_command, os_reason
from store.tlsfiles import check_tls_files
from store.users import AliasDB, UserDB, normalize_address

log = logging.getLogger("mailsrv")

# The listeners: one table, read by bind, the --NAME-port flags and `check`; ports are config keys.

STARTTLS = "starttls"   # plaintext; STARTTLS (RFC 3207) / STLS (RFC 2595) offered once a certificate is set
IMPLICIT = "implicit"   # TLS from the first octet (RFC 8314 §3.3); only opened with a certificate
SMTP_BUSY = b"421 4.7.0 Too many connections, try later\r\n"    # RFC 5321 §3.8; 4.7.0: RFC 3463 §3.8
POP3_BUSY = b"-ERR [SYS/TEMP] too many connections\r\n"          # RFC 3206 §4: SYS/TEMP
IMAP_BUSY = b"* BYE [UNAVAILABLE] Too many connections, try later\r\n"   # RFC 9051 §7.1.5, RFC 5530 §3


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


LISTENERS = (
    Listener("smtp", "smtp_port", STARTTLS, lambda b: b.smtp_factory("smtp"), SMTP_BUSY),
    Listener("submission", "submission_port", STARTTLS, lambda b: b.smtp_factory("submission"), SMTP_BUSY),
    Listener("smtps", "smtps_port", IMPLICIT, lambda b: b.smtp_factory("smtps"), SMTP_BUSY),
    Listener("pop3", "pop3_port", STARTTLS, lambda b: b.pop3_factory(), POP3_BUSY),
    Listener("pop3s", "pop3s_port", IMPLICIT, lambda b: b.pop3_factory(), POP3_BUSY),
    Listener("imap", "imap_port", STARTTLS, lambda b: b.imap_factory(), IMAP_BUSY),
    Listener("imaps", "imaps_port", IMPLICIT, lambda b: b.imap_factory(), IMAP_BUSY),
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
        self.backend = Backend(self.config, self.loop, tls_client_context=client_tls_context(self.config.tls_verify),
                               resolv_conf=_read_resolv_conf())
        self.addresses: Dict[str, List[Tuple[str, int]]] = {}
        self._thread: Optional[threading.Thread] = None
        self._tls = None

    @property
    def ports(self) -> Dict[str, int]:
        return {name: addrs[0][1] for name, addrs in self.addresses.items()}

    # -- users, for embedders and tests --------------------------------
    def add_user(self, address: str, password: str) -> None:
        self.backend.add_user(address, password)

    # -- listeners -----------------------------------------------------
    def _tls_context(self) -> Optional[ssl.SSLContext]:
        cfg = self.config
        if not cfg.tls_cert:
            return None
        try:
            check_tls_files(cfg.tls_cert, cfg.tls_key)   # one line naming the file, not ssl's "PEM lib"
        except DataDirError as e:
            raise ConfigError(str(e)) from None
        try:
            return server_tls_context(cfg.tls_cert, cfg.tls_key)
        except FileNotFoundError as e:
            raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: {e.strerror}") from None
        except PermissionError as e:
            raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: permission denied") from None
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"cannot load TLS certificate {cfg.tls_cert} / key {cfg.tls_key}: {e}") from None

    def bind(self) -> None:
        """Bind every configured listener; raises ConfigError with a readable message."""
        cfg = self.config
        self._tls = self._tls_context()
        self.backend.start()
        self.backend.start_pickup()
        for lst in LISTENERS:
            port = getattr(cfg, lst.port_key)
            implicit = lst.tls == IMPLICIT
            if lst.factory is None or port is None or (implicit and self._tls is None):
                continue
            name, factory = lst.name, lst.factory(self.backend)
            for host in cfg.listen:
                try:
                    bound = self.loop.listen(
                        name, host, port, factory,
                        ssl_context=self._tls if implicit else None,
                        starttls_context=None if implicit else self._tls,
                        max_connections=cfg.max_connections,
                        max_per_ip=cfg.max_connections_per_ip, busy_reply=lst.busy)
                except OSError as e:
                    raise ConfigError(_bind_error(name, host, port, e)) from None
                self.addresses.setdefault(name, []).append(bound)
                host_text = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                log.debug("listening %s %s:%d", name, host_text, bound[1])   # serve_main prints it once

    def listening_lines(self) -> List[str]:
        out = []
        for name, addrs in self.addresses.items():
            for host, port in addrs:
                host_text = f"[{host}]" if ":" in host else host
                out.append(f"listening {name} {host_text}:{port}")
        return out

    def start(self) -> "MailServer":
        """Bind and run the loop in a background thread (for embedding and tests)."""
        self.bind()
        self._thread = threading.Thread(target=self.loop.run, name="mailsrv-loop", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.loop.run()
        self.backend.close()
        self.loop.close()

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
            self.loop.close()           # its wake-up socket pair and selector

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
        if self._tls is None or not self.config.tls_cert:
            return True
        try:
            ctx = self._tls_context()
        except ConfigError as e:
            log.error("TLS certificate not reloaded, the running one stays in use: %s", e)
            return False
        self._tls = ctx
        count = self.loop.set_tls_context(ctx)
        log.info("TLS certificate reloaded from %s (%d listeners)", self.config.tls_cert, count)
        return True

    def queue_control(self) -> None:
        """SIGUSR1: apply requests left by `mailsrv.py queue ...` (loop thread)."""
        self.backend.queue_control()


def _read_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

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
    opt("--log-level", metavar="LEVEL")
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
    alias = sub.add_parser("alias", help="manage aliases").add_subparsers(dest="action", required=True)
    aa = alias.add_parser("add", parents=[common])
    aa.add_argument("alias")
    aa.add_argument("targets", nargs="+")
    alias.add_parser("del", parents=[common]).add_argument("alias")
    alias.add_parser("list", parents=[common])
    queue = sub.add_parser("queue", parents=[common], help="list the outbound queue, or flush/delete/bounce")
    queue.add_argument("action", nargs="?", default="list", choices=("list", "flush", "delete", "bounce"))
    queue.add_argument("id", nargs="?")
    dns = sub.add_parser("dns", parents=[common], help="ask our resolver: dns MX|A|AAAA NAME")
    dns.add_argument("qtype", type=str.upper, choices=("MX", "A", "AAAA"))
    dns.add_argument("name")
    sub.add_parser("check", parents=[common], help="check the configuration, files and DNS; print what the server would do")
    sub.add_parser("config-example", help="print a commented configuration file with every key")
    rfc = sub.add_parser("rfc", help="the code's RFC citations: rfc [NUMBER [SECTION]]")
    rfc.add_argument("number", nargs="?", type=int)
    rfc.add_argument("section", nargs="?", default="")
    return p


def _read_password(prompt: str) -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("again: ") != first:
            raise ConfigError("passwords do not match")
        pw = first
    else:
        pw = (sys.stdin.readline() if sys.stdin else "").rstrip("\r\n")
    if not pw:
        raise ConfigError("empty password")
    return pw


def admin_main(argv: List[str]) -> int:
    args = _admin_parser().parse_args(argv)
    if args.cmd == "config-example":
        sys.stdout.write(config_example())
        return 0
    if args.cmd == "rfc":       # reads our own source only: no configuration
        return rfc_main(args.number, args.section)
    cfg = load_config(args)
    if args.cmd == "check":
        return check_main(cfg)
    if args.cmd == "dns":        # asks DNS only: needs no data folder
        return dns_main(cfg, args.qtype, args.name)
    data = cfg.data_dir = open_for_command(cfg.data_dir, args.cmd, getattr(args, "action", None))
    if args.cmd in ("user", "alias"):
        # Skipped lines of the users/aliases files (store/users.py) say so on stderr.
        logging.basicConfig(level=logging.WARNING, format="mailsrv: %(levelname)s: %(message)s")
        return _user_alias_main(args, data, cfg)
    if args.cmd == "queue":
        return queue_main(cfg, args.action, args.id)
    return 2


def _user_alias_main(args: argparse.Namespace, data: str, cfg: Config) -> int:
    """`user ...` and `alias ...` (store/users.py does the checking)."""
    from store.maildir import MailStore
    users, aliases = UserDB(data), AliasDB(data)
    try:
        if args.cmd == "alias":
            return _alias_action(args, users, aliases)
        store = MailStore(data, cfg.hostname)
        addr = normalize_address(args.address) if args.action != "list" else ""
        if args.action == "add":
            users.add(args.address, _read_password("password: "))
            store.create_mailbox(addr)
            print(f"added {addr}")
            if aliases.targets(addr) is not None:
                print(f"mailsrv: warning: {addr} is also an alias; mail to it now goes to the user "
                      f"(`alias del {addr}` to tidy up)", file=sys.stderr)
        elif args.action == "passwd":
            users.set_password(args.address, _read_password("new password: "))
            print(f"password changed for {addr}")
        elif args.action == "del":
            users.delete(args.address)
            print(f"deleted {addr} (its Maildir was moved under {os.path.join(data, 'mail', '.deleted')})")
            store.delete_mailbox(addr)
            pointing = aliases.pointing_at(addr)
            if pointing:
                print(f"mailsrv: warning: alias(es) {', '.join(pointing)} still list {addr}; mail to them "
                      f"skips it (change them with `alias add`)", file=sys.stderr)
        elif args.action in ("disable", "enable"):
            changed = users.set_disabled(args.address, args.action == "disable")
            state = "disabled: logins refused, mail still accepted" if args.action == "disable" else "enabled"
            print(f"{addr} {state}" if changed else f"{addr} was already {args.action}d")
        elif args.action == "show":
            from store.usershow import show_user
            print("\n".join(show_user(users, aliases, store, addr)))
        else:
            print("\n".join(users.list()) if users.list() else "no users")
    except (KeyError, ValueError) as e:
        raise ConfigError(str(e).strip("'\"")) from None
    return 0


def _alias_action(args: argparse.Namespace, users: UserDB, aliases: AliasDB) -> int:
    if args.action == "add":
        name = aliases.add(args.alias, args.targets, users=users)
        print(f"alias {name} -> {', '.join(aliases.targets(name) or [])}")
    elif args.action == "del":
        print(f"deleted alias {aliases.delete(args.alias)}")
    else:
        entries = sorted(aliases.list().items())
        for name, targets in entries:
            print(f"{name}: {', '.join(targets)}")
        if not entries:
            print("no aliases")
    return 0


def queue_main(cfg: Config, action: str, qid: Optional[str]) -> int:
    """`queue` lists; flush/delete/bounce are applied by the running server
    (SIGUSR1), or here, by a server started just for them, when none runs."""
    from store.queue import Queue
    queue = Queue(cfg.data_dir, recover=False)   # a running server may be writing it
    if action == "list":
        import time
        entries = queue.list()
        for e in entries:
            nxt = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.next_try))
            print(f"{e.id}  <{e.sender}>  size={e.size}  attempts={e.attempts}  next={nxt}")
            for r in e.recipients:
                print(f"    {r.state:9s} <{r.address}>  {r.last_error}")
        print(f"{len(entries)} message(s) in the queue")
        return 0
    if action in ("delete", "bounce"):
        if not qid:
            raise ConfigError(f"queue {action} needs a queue id (see `python3 mailsrv.py queue`)")
        if queue.get(qid) is None:
            raise ConfigError(f"no queue entry {qid}")
    queue.request(action, qid or "")
    what = f"queue {action} {qid}" if qid else f"queue {action}"
    lock, pid = lock_or_holder(cfg.data_dir)   # signal only the process holding the lock
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        print(f"{what}: handed to the running server (pid {pid})")
        return 0
    try:
        return _queue_offline(cfg, what)
    finally:
        lock.release()


def _queue_offline(cfg: Config, what: str) -> int:
    """No server runs: apply the request here, holding the lock (protocols/outbound/queue_admin.py)."""
    from protocols.outbound.queue_admin import OFFLINE_LIMIT_SECONDS, apply_offline
    server = MailServer(cfg)
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))  # we hold the lock
    outcome = apply_offline(server.backend, server.loop) or f"not finished within {OFFLINE_LIMIT_SECONDS:.0f} s (see the log)"
    print(f"{what}: {outcome}")
    return 0 if outcome in ("done", "deleted", "bounced") else 1


def dns_main(cfg: Config, qtype: str, name: str) -> int:
    """`dns MX example.org`: what our own resolver finds (RFC 1035, RFC 5321 §5.1),
    failures in DNS terms naming the server (protocols.dns.mx.describe)."""
    from protocols.dns import codec as dnsproto
    from protocols.dns.mx import describe
    loop = EventLoop()          # not a MailServer: that would create the data folder
    resolver = make_resolver(loop, cfg.dns_servers, _read_resolv_conf())[0]
    out: List[object] = []

    def done(result):
        out.append(result)
        loop.stop()
    if qtype == "MX":
        resolver.lookup_mx_hosts(name, done)
    else:
        resolver.resolve(name, dnsproto.TYPE_A if qtype == "A" else dnsproto.TYPE_AAAA, done)
    loop.call_later(60, loop.stop)
    loop.run()
    if not out:
        print(f"{name} {qtype}: no answer from the resolver within 60 s")
        return 1
    lines, ok = describe(name, qtype, out[0])
    print("\n".join(lines))
    return 0 if ok else 1


def check_main(cfg: Config) -> int:
    """`mailsrv.py check` (protocols/check.py): exit 0, or 2 on any problem."""
    from protocols.check import run_check
    return run_check(cfg, EventLoop(), _read_resolv_conf(), LISTENERS)


def sendmail_main(argv: List[str]) -> int:
    """`sendmail [-t] [-f sender] [-i] [-F name] [rcpt...] < message`: into
    DATA/postdrop/ (durably), then a signal to the running server's pick-up;
    with no server running, the server picks it up when it starts.  Exit codes
    of sysexits.h (protocols/backend/sendmail.py); one line on stderr when not 0."""
    from protocols.backend import sendmail as sm
    try:
        return _sendmail(sm, argv)
    except sm.SendmailError as e:
        print(f"sendmail: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"sendmail: {e}", file=sys.stderr)
        return sm.EX_CONFIG
    except Exception as e:  # a bug: still a sysexits code, never a silent loss
        print(f"sendmail: internal error: {e!r}", file=sys.stderr)
        return sm.EX_SOFTWARE


def _sendmail(sm, argv: List[str]) -> int:
    import time
    from email.utils import formatdate, make_msgid
    from protocols.base import new_id
    from store import postdrop
    opts = sm.parse_args(argv)
    cfg = load_config(argparse.Namespace(config=opts.config, data=opts.data))
    data = os.path.abspath(cfg.data_dir)
    if not os.path.isdir(data):
        raise ConfigError(f"no data folder {data} (give --data DIR, or -C FILE with data_dir)")
    raw = sys.stdin.buffer.read(cfg.max_message_size + 1)
    sender, rcpts, message = sm.prepare(opts, raw, cfg.hostname, _unix_user(), cfg.max_message_size,
                                        formatdate(localtime=True), make_msgid(domain=cfg.hostname))
    _sendmail_check_users(sm, cfg, rcpts)
    name = "%d.%d.%s" % (time.time(), os.getpid(), new_id(5))
    try:
        postdrop.write(data, name, sender, rcpts, message)
    except OSError as e:
        raise sm.SendmailError(sm.exit_code(e.errno),
                               f"cannot write to {postdrop.drop_dir(data)}: {e.strerror or e}") from None
    pid = lock_holder(data)          # only the server holding the data folder's lock
    if pid is not None:
        try:
            os.kill(pid, signal.SIGUSR2)
        except OSError:
            pass           # picked up by the next round or the next start
    return 0


def _unix_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):       # a uid without a passwd entry (containers)
        return f"uid{os.getuid()}"


def _sendmail_check_users(sm, cfg: Config, rcpts: List[str]) -> None:
    """EX_NOUSER now for a local address nobody has (when we may read the users)."""
    from store.users import Directory
    try:
        directory = Directory(UserDB(cfg.data_dir), AliasDB(cfg.data_dir), cfg.local_domains(),
                              cfg.postmaster or f"postmaster@{cfg.hostname.lower()}")
        for r in rcpts:
            local, _, domain = r.rpartition("@")
            if directory.is_local_domain(domain) and directory.resolve(local, domain) is None:
                raise sm.SendmailError(sm.EX_NOUSER, f"<{r}>: no such user or alias here")
    except OSError:
        pass               # the server checks (and bounces) at pick-up


def serve_main(argv: List[str]) -> int:
    args = _admin_parser().parse_args(argv)
    cfg = load_config(args)
    try:
        log_handler = logtarget.install(cfg.log_target, str(cfg.log_level))
    except OSError as e:
        raise ConfigError(f"cannot open log_target {e.filename or cfg.log_target}: {e.strerror or e}") from None
    raise_fd_limit()        # process-wide, so here and not in EventLoop: embedders keep theirs
    cfg.data_dir = open_data_dir(cfg.data_dir, create=True)
    lock = ServerLock(cfg.data_dir).acquire()   # a second server on this folder stops here
    try:
        return _serve(args, cfg, log_handler)
    finally:
        lock.release()


def _serve(args: argparse.Namespace, cfg: Config, log_handler) -> int:
    server = MailServer(cfg)
    server.bind()

    def on_term(signum, _frame):
        log.info("signal %d: shutting down (grace %.0fs)", signum, cfg.shutdown_grace)
        server.shutdown()

    def reload():
        logtarget.reopen(log_handler)     # logrotate renamed the file: start a new one
        try:
            server.reload(load_config(args))
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, lambda _s, _f: server.loop.call_soon_threadsafe(reload))
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))
    signal.signal(signal.SIGUSR2, lambda _s, _f: server.loop.call_soon_threadsafe(server.backend.pickup.kick))
    # once, on stdout, now that signals are handled: listeners first (scripts wait for them), then the rest
    for line in server.listening_lines() + describe(cfg, server.backend.directory, cfg.data_dir):
        print(line, flush=True)
        if cfg.log_target != "stderr":       # on a terminal they would show twice; a log file wants them
            log.info("%s", line)
    print(stop_line(os.getpid()), flush=True)
    server.serve_forever()
    log.info("stopped")
    return 0


def source_citations() -> list:
    """Every RFC citation in the code (protocols/, store/, this file), for
    `rfc` and its test; protocols/rfcindex.py does the reading of the text."""
    from protocols import rfcindex
    root = os.path.dirname(os.path.abspath(__file__))
    paths = ["mailsrv.py"]
    for top in ("protocols", "store"):
        for dirpath, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            paths += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(files) if f.endswith(".py")]
    out = []
    for rel in paths:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            out += rfcindex.citations(f.read(), rel.replace(os.sep, "/"))
    return out


def rfc_main(number: Optional[int], section: str) -> int:
    """`rfc [NUMBER [SECTION]]`: which functions cite which RFC sections."""
    from protocols import rfcindex
    lines = rfcindex.format_index(rfcindex.index(source_citations()), number, section.lstrip("\u00a7"))
    if not lines:
        print(f"mailsrv: no citation of RFC {number}" + (f" \u00a7{section}" if section else ""), file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


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
