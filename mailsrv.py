#!/usr/bin/env python3
"""mailsrv: a complete mail server in pure Python standard library.

This file is the composition root: configuration (INI through configparser,
flags on top), the command line (serve, user, alias, dns, queue, check), and the
wiring that connects the sans-I/O sessions in ``protocols/`` to the event
loop and to the disk in ``store/``.  Importing it starts nothing; embedders
use :class:`MailServer` (see the README's "Embedding" section).

    python3 mailsrv.py                       # serve in the foreground
    python3 mailsrv.py user add alice@localhost < password-file
    python3 mailsrv.py --help
"""

from __future__ import annotations

import argparse
import configparser
import getpass
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from protocols import logtarget
from protocols.hostnames import NameFunc, choose_hostname, machine_names
from protocols.backend.wiring import Backend
from protocols.loop import EventLoop
from protocols.startup import bind_error as _bind_error, describe, make_resolver, stop_line
from store.datadir import DataDirError, ServerLock, lock_holder, lock_or_holder, open_data_dir, open_for_command, os_reason
from store.tlsfiles import check_tls_files
from store.users import AliasDB, UserDB, normalize_address

log = logging.getLogger("mailsrv")

# ---------------------------------------------------------------------------
# Configuration.  One table is the single source of truth: the parser, the
# generated example file (`python3 mailsrv.py config-example`), the README's
# key list and SIGHUP's live reload all read it.
# ---------------------------------------------------------------------------

# name: (type, default, live-reloadable on SIGHUP, comment)
KEYS: Dict[str, Tuple[str, object, bool, str]] = {
    "data_dir": ("str", "./maildata", False, "where users, aliases, Maildirs and the queue live"),
    "listen": ("list", "127.0.0.1", False, "addresses to listen on, comma separated (IPv4 and/or IPv6; 0.0.0.0 and :: for all)"),
    "hostname": ("str", "", False, "this server's name in greetings and Received: (empty: the machine's FQDN if it has a dot, else its host name)"),
    "domains": ("list", "", True, "local mail domains besides the hostname and localhost (domains of users are local too)"),
    "smtp_port": ("port", "2525", False, "SMTP for other servers (real servers use 25); off disables, 0 picks a free port"),
    "submission_port": ("port", "2587", False, "message submission for mail clients, AUTH required (RFC 6409; real: 587)"),
    "smtps_port": ("port", "2465", False, "submission over implicit TLS (RFC 8314; real: 465); only with a certificate"),
    "pop3_port": ("port", "2110", False, "POP3 (real: 110)"),
    "pop3s_port": ("port", "2995", False, "POP3 over implicit TLS (real: 995); only with a certificate"),
    "imap_port": ("port", "2143", False, "IMAP (real: 143); not built yet"),
    "imaps_port": ("port", "2993", False, "IMAP over implicit TLS (real: 993); not built yet"),
    "tls_cert": ("str", "", False, "PEM certificate chain; enables STARTTLS/STLS and the implicit-TLS ports; SIGHUP reloads it"),
    "tls_key": ("str", "", False, "PEM private key for tls_cert; SIGHUP reloads it"),
    "log_level": ("str", "INFO", True, "DEBUG, INFO, WARNING or ERROR"),
    "log_target": ("str", "stderr", False, "where the log goes: stderr, file:/path (reopened on SIGHUP, for logrotate) or syslog (facility mail)"),
    "max_message_size": ("int", "26214400", True, "largest message accepted, in octets (announced in EHLO SIZE)"),
    "max_recipients": ("int", "100", True, "recipients per message (RFC 5321 §4.5.3.1.8 minimum is 100)"),
    "max_inflight_message_bytes": ("int", "1073741824", True, "octets of messages being received at once, all clients; beyond it a new DATA/BDAT gets 452 4.3.1"),
    "max_received_headers": ("int", "30", True, "more Received: headers than this is a mail loop: 554 5.4.6 (RFC 5321 §6.3)"),
    "max_connections": ("int", "1000", False, "simultaneous connections per listener"),
    "max_connections_per_ip": ("int", "50", False, "simultaneous connections per client address per listener"),
    "smtp_idle_timeout": ("float", "300", True, "seconds an SMTP client may take to complete a command line (RFC 5321 §4.5.3.2.7: at least 5 minutes)"),
    "pop3_idle_timeout": ("float", "600", True, "seconds a POP3 client may take to complete a command line (RFC 1939 §3: at least 10 minutes)"),
    "allow_plaintext_auth": ("bool", "no", True, "allow PLAIN/LOGIN/USER over unencrypted non-loopback connections"),
    "plaintext_auth_loopback": ("bool", "yes", True, "allow PLAIN/LOGIN/USER over unencrypted loopback connections"),
    "auth_failure_delay": ("float", "2", True, "seconds before answering a failed authentication"),
    "auth_max_failures": ("int", "10", True, "failed authentications from one address before it is locked out"),
    "auth_cache_ttl": ("float", "3600", True, "seconds a successful password check is remembered (0: never; Dovecot's auth_cache_ttl)"),
    "auth_lockout_seconds": ("float", "300", True, "how long a locked-out address stays locked out"),
    "auth_account_max_failures": ("int", "10", True, "failed logins for one account (from any address) before its further attempts are spaced"),
    "auth_account_delay": ("float", "2", True, "first spacing of a penalised account's attempts, doubling per failure (Dovecot's auth penalty)"),
    "auth_account_delay_max": ("float", "60", True, "largest spacing of a penalised account's attempts, in seconds"),
    "auth_hash_threads": ("int", "2", False, "threads for password hashing (scrypt), apart from all other work"),
    "auth_hash_queue": ("int", "32", True, "password checks that may wait for a hashing thread; beyond it a temporary refusal"),
    "auth_hash_per_address": ("int", "4", True, "password checks running or waiting per client address (IPv6: per /64)"),
    "postmaster": ("str", "", True, "user that receives postmaster@ of every local domain (empty: the domain's first user, else the first user; printed at start)"),
    "shutdown_grace": ("float", "30", False, "seconds SIGTERM waits for messages in flight before closing"),
    "trusted_networks": ("list", "127.0.0.0/8,::1/128", True, "clients that may relay without AUTH (CIDRs; 'none' for nobody)"),
    "sender_login_match": ("bool", "yes", True, "an authenticated user may send only as their own addresses and aliases"),
    "relayhost": ("str", "", True, "smarthost host:port for all outbound mail (empty: deliver by MX)"),
    "relay_port": ("int", "25", True, "destination port for MX delivery"),
    "relay_tls": ("str", "may", True, "outbound TLS: may, require, never, or implicit (smarthost on 465)"),
    "relay_auth_user": ("str", "", True, "user name for AUTH at the smarthost"),
    "relay_auth_password": ("str", "", True, "password for AUTH at the smarthost"),
    "tls_verify": ("bool", "no", True, "verify remote certificates on outbound TLS (Postfix 'may' does not)"),
    "dns_servers": ("list", "", True, "DNS servers host[:port] for MX lookups (empty: /etc/resolv.conf)"),
    "retry_schedule": ("list", "300,600,1200,1800", True, "seconds between delivery attempts; the last repeats (RFC 5321 §4.5.4.1)"),
    "queue_interval": ("float", "60", True, "seconds between runs over the queue for due retries"),
    "max_queue_age": ("float", "432000", True, "give up and bounce after this many seconds (5 days, RFC 5321 §4.5.4.1)"),
}

PORT_KEYS = {
    "smtp": "smtp_port", "submission": "submission_port", "smtps": "smtps_port",
    "pop3": "pop3_port", "pop3s": "pop3s_port", "imap": "imap_port", "imaps": "imaps_port",
}
TLS_ONLY = {"smtps", "pop3s", "imaps"}


class ConfigError(Exception):
    """A configuration or command-line problem; the CLI prints it on one line."""


def _convert(name: str, kind: str, raw: object):
    text = raw if isinstance(raw, str) else None
    try:
        if kind == "str":
            return str(raw)
        if kind == "list":
            if text is None:
                return list(raw)
            return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            v = text.strip().lower()
            if v in ("1", "yes", "true", "on"):
                return True
            if v in ("0", "no", "false", "off"):
                return False
            raise ValueError(raw)
        if kind == "port":
            if raw is None or (text is not None and text.strip().lower() == "off"):
                return None
            port = int(raw)
            if not 0 <= port <= 65535:
                raise ValueError(raw)
            return port
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {name}: {raw!r} (expected {kind})") from None
    raise AssertionError(kind)


@dataclass
class Config:
    """Every setting, typed.  Build with :func:`load_config` or directly."""

    values: Dict[str, object] = field(default_factory=dict)
    # (getfqdn, gethostname): injected by tests so they never depend on this machine's name
    names: Tuple[NameFunc, NameFunc] = field(default=(socket.getfqdn, socket.gethostname), repr=False)

    def __post_init__(self):
        merged = {k: _convert(k, kind, default) for k, (kind, default, _l, _c) in KEYS.items()}
        for k, v in self.values.items():
            if k not in KEYS:
                raise ConfigError(f"unknown configuration key: {k}")
            merged[k] = _convert(k, KEYS[k][0], v)
        self.values = merged
        self.values["hostname"], self.hostname_source = choose_hostname(self.values["hostname"], *self.names)
        self.machine_names = machine_names(*self.names)
        if self.values["hostname"].lower() == "localhost.localdomain":
            self.values["hostname"] = "localhost"
        if bool(self.values["tls_cert"]) != bool(self.values["tls_key"]):
            raise ConfigError("tls_cert and tls_key must be given together")
        for addr in self.values["listen"]:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(f"bad listen address: {addr!r} (give an IPv4 or IPv6 address)") from None
        if logtarget.check(self.values["log_target"]):
            raise ConfigError(logtarget.check(self.values["log_target"]))
        if self.values["relay_tls"] not in ("may", "require", "never", "implicit"):
            raise ConfigError("relay_tls must be may, require, never or implicit")
        self.trusted_networks()  # validate now

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def local_domains(self) -> List[str]:
        return sorted({self.hostname.lower(), "localhost", *self.machine_names,
                       *(d.lower().rstrip(".") for d in self.domains)})

    def trusted_networks(self) -> List[ipaddress._BaseNetwork]:
        nets = self.values["trusted_networks"]
        if [n.lower() for n in nets] == ["none"]:
            return []
        try:
            return [ipaddress.ip_network(n, strict=False) for n in nets]
        except ValueError as e:
            raise ConfigError(f"bad trusted_networks entry: {e}") from None


def config_example() -> str:
    """The commented example configuration, every key with its default."""
    out = ["# mailsrv configuration (INI).  Every key, with its default.",
           "# Flags on the command line override these.  Keys marked [live] change on SIGHUP.",
           "[mailsrv]"]
    for k, (_kind, default, live, comment) in KEYS.items():
        out.append(f"# {comment}{' [live]' if live else ''}")
        out.append(f"{k} = {default}")
    return "\n".join(out) + "\n"


def read_config_file(path: str) -> Dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(f"bad config file {path}: {e}") from None
    values: Dict[str, str] = {}
    for section in parser.sections():
        if section != "mailsrv":
            raise ConfigError(f"{path}: unknown section [{section}] (use [mailsrv])")
        for k, v in parser.items(section):
            if k not in KEYS:
                raise ConfigError(f"{path}: unknown configuration key: {k}")
            values[k] = v
    return values


FLAG_KEYS = {  # argparse dest -> config key
    "data": "data_dir", "hostname": "hostname", "smtp_port": "smtp_port",
    "submission_port": "submission_port", "smtps_port": "smtps_port", "pop3_port": "pop3_port",
    "pop3s_port": "pop3s_port", "imap_port": "imap_port", "imaps_port": "imaps_port",
    "tls_cert": "tls_cert", "tls_key": "tls_key", "log_level": "log_level",
    "relay_port": "relay_port", "relayhost": "relayhost",
}


def load_config(args: argparse.Namespace) -> Config:
    values: Dict[str, object] = {}
    if getattr(args, "config", None):
        values.update(read_config_file(args.config))
    for dest, key in FLAG_KEYS.items():
        v = getattr(args, dest, None)
        if v is not None:
            values[key] = v
    if getattr(args, "listen", None):
        values["listen"] = ",".join(args.listen)
    if getattr(args, "domain", None):
        values["domains"] = ",".join(args.domain)
    if getattr(args, "dns_server", None):
        values["dns_servers"] = ",".join(args.dns_server)
    if getattr(args, "trusted_networks", None):
        values["trusted_networks"] = args.trusted_networks
    return Config(values)


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
        self.backend = Backend(self.config, self.loop, tls_client_context=client_tls_context(self.config),
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
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8314 §4.1 / RFC 7525
        try:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except FileNotFoundError as e:
            raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: {e.strerror}") from None
        except PermissionError as e:
            raise ConfigError(f"cannot read TLS certificate or key: {e.filename}: permission denied") from None
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"cannot load TLS certificate {cfg.tls_cert} / key {cfg.tls_key}: {e}") from None
        return ctx

    def _factories(self):
        b = self.backend
        return {
            "smtp": (b.smtp_factory("smtp"), b"421 4.7.0 Too many connections, try later\r\n"),
            "submission": (b.smtp_factory("submission"), b"421 4.7.0 Too many connections, try later\r\n"),
            "smtps": (b.smtp_factory("smtps"), b"421 4.7.0 Too many connections, try later\r\n"),
            "pop3": (b.pop3_factory(), b"-ERR [SYS/TEMP] too many connections\r\n"),
            "pop3s": (b.pop3_factory(), b"-ERR [SYS/TEMP] too many connections\r\n"),
        }

    def bind(self) -> None:
        """Bind every configured listener; raises ConfigError with a readable message."""
        cfg = self.config
        self._tls = self._tls_context()
        self.backend.start()
        self.backend.start_pickup()
        for name, (factory, busy) in self._factories().items():
            port = cfg.values[PORT_KEYS[name]]
            if port is None or (name in TLS_ONLY and self._tls is None):
                continue
            for host in cfg.listen:
                try:
                    bound = self.loop.listen(
                        name, host, port, factory,
                        ssl_context=self._tls if name in TLS_ONLY else None,
                        starttls_context=None if name in TLS_ONLY else self._tls,
                        max_connections=cfg.max_connections,
                        max_per_ip=cfg.max_connections_per_ip, busy_reply=busy)
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
            self.config.values["tls_cert"], self.config.values["tls_key"] = running_tls

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


def client_tls_context(config: Config) -> ssl.SSLContext:
    """Outbound TLS (RFC 3207): opportunistic and unverified by default, like
    Postfix's ``smtp_tls_security_level = may``; verified with tls_verify."""
    ctx = ssl.create_default_context()
    if not config.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


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
    for proto in ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps"):
        opt(f"--{proto}-port", metavar="N", help="port number, 0 for any, off to disable")
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
    data = cfg.values["data_dir"] = open_for_command(cfg.data_dir, args.cmd, getattr(args, "action", None))
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
    return run_check(cfg, EventLoop(), _read_resolv_conf(), PORT_KEYS, TLS_ONLY)


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
    cfg.values["data_dir"] = open_data_dir(cfg.data_dir, create=True)
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
