#!/usr/bin/env python3
"""mailsrv: a complete mail server in pure Python standard library.

This file is the composition root: configuration (INI through configparser,
flags on top), the command line (serve, user, alias, dns, queue), and the
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
import errno
import getpass
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

from protocols.wiring import Backend
from protocols.loop import EventLoop
from protocols.smtp_server import SmtpConfig, SmtpSession
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
    "hostname": ("str", "", False, "this server's name in greetings and Received: (empty: the machine's FQDN)"),
    "domains": ("list", "", True, "local mail domains besides the hostname and localhost (domains of users are local too)"),
    "smtp_port": ("port", "2525", False, "SMTP for other servers (real servers use 25); off disables, 0 picks a free port"),
    "submission_port": ("port", "2587", False, "message submission for mail clients, AUTH required (RFC 6409; real: 587)"),
    "smtps_port": ("port", "2465", False, "submission over implicit TLS (RFC 8314; real: 465); only with a certificate"),
    "pop3_port": ("port", "2110", False, "POP3 (real: 110)"),
    "pop3s_port": ("port", "2995", False, "POP3 over implicit TLS (real: 995); only with a certificate"),
    "imap_port": ("port", "2143", False, "IMAP (real: 143); not built yet"),
    "imaps_port": ("port", "2993", False, "IMAP over implicit TLS (real: 993); not built yet"),
    "tls_cert": ("str", "", False, "PEM certificate chain; enables STARTTLS/STLS and the implicit-TLS ports"),
    "tls_key": ("str", "", False, "PEM private key for tls_cert"),
    "log_level": ("str", "INFO", True, "DEBUG, INFO, WARNING or ERROR"),
    "max_message_size": ("int", "26214400", True, "largest message accepted, in octets (announced in EHLO SIZE)"),
    "max_recipients": ("int", "100", True, "recipients per message (RFC 5321 §4.5.3.1.8 minimum is 100)"),
    "max_inflight_message_bytes": ("int", "1073741824", True, "octets of messages being received at once, all clients; beyond it a new DATA/BDAT gets 452 4.3.1"),
    "max_received_headers": ("int", "30", True, "more Received: headers than this is a mail loop: 554 5.4.6 (RFC 5321 §6.3)"),
    "max_connections": ("int", "1000", False, "simultaneous connections per listener"),
    "max_connections_per_ip": ("int", "50", False, "simultaneous connections per client address per listener"),
    "smtp_idle_timeout": ("float", "300", True, "seconds an SMTP client may stay silent (RFC 5321 §4.5.3.2.7: at least 5 minutes)"),
    "pop3_idle_timeout": ("float", "600", True, "seconds a POP3 client may stay silent (RFC 1939 §3: at least 10 minutes)"),
    "allow_plaintext_auth": ("bool", "no", True, "allow PLAIN/LOGIN/USER over unencrypted non-loopback connections"),
    "plaintext_auth_loopback": ("bool", "yes", True, "allow PLAIN/LOGIN/USER over unencrypted loopback connections"),
    "auth_failure_delay": ("float", "2", True, "seconds before answering a failed authentication"),
    "auth_max_failures": ("int", "10", True, "failed authentications from one address before it is locked out"),
    "auth_cache_ttl": ("float", "3600", True, "seconds a successful password check is remembered (0: never; Dovecot's auth_cache_ttl)"),
    "auth_lockout_seconds": ("float", "300", True, "how long a locked-out address stays locked out"),
    "postmaster": ("str", "", True, "user that receives postmaster@ of every local domain (empty: postmaster@hostname)"),
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

    def __post_init__(self):
        merged = {k: _convert(k, kind, default) for k, (kind, default, _l, _c) in KEYS.items()}
        for k, v in self.values.items():
            if k not in KEYS:
                raise ConfigError(f"unknown configuration key: {k}")
            merged[k] = _convert(k, KEYS[k][0], v)
        self.values = merged
        if not self.values["hostname"]:
            self.values["hostname"] = socket.getfqdn() or "localhost"
        if self.values["hostname"].lower() == "localhost.localdomain":
            self.values["hostname"] = "localhost"
        if bool(self.values["tls_cert"]) != bool(self.values["tls_key"]):
            raise ConfigError("tls_cert and tls_key must be given together")
        for addr in self.values["listen"]:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(f"bad listen address: {addr!r} (give an IPv4 or IPv6 address)") from None
        if self.values["relay_tls"] not in ("may", "require", "never", "implicit"):
            raise ConfigError("relay_tls must be may, require, never or implicit")
        self.trusted_networks()  # validate now

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def local_domains(self) -> List[str]:
        return sorted({self.hostname.lower(), "localhost", *(d.lower().rstrip(".") for d in self.domains)})

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
        from protocols import pop3_server
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
                log.info("listening %s %s:%d", name, host_text, bound[1])

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

    def reload(self, config: Optional[Config] = None) -> None:
        """SIGHUP: re-read users, aliases and the live configuration keys.

        Keys that are not live (ports, addresses, certificates, data_dir)
        keep their running values until a restart."""
        if config is not None:
            merged = dict(self.config.values)
            for k, (_kind, _d, live, _c) in KEYS.items():
                if live:
                    merged[k] = config.values[k]
            self.config = Config(merged)
        self.backend.reload(self.config if config is not None else None)

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


def _bind_error(name: str, host: str, port: int, e: OSError) -> str:
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if e.errno == errno.EADDRINUSE:
        return (f"cannot listen for {name} on {where}: address already in use "
                f"(another server runs there; pick another port with --{name}-port, or 'off')")
    if e.errno == errno.EACCES:
        return (f"cannot listen for {name} on {where}: permission denied; ports below 1024 need root, "
                f"or `setcap cap_net_bind_service=+ep {os.path.realpath(sys.executable)}`, "
                f"or a systemd unit with AmbientCapabilities=CAP_NET_BIND_SERVICE (see README)")
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen for {name} on {where}: no such local address"
    return f"cannot listen for {name} on {where}: {e.strerror or e}"


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailsrv.py", description="mailsrv: SMTP, POP3 and Maildir in pure Python.",
                                epilog="Subcommands: user, alias, dns, queue, config-example (python3 mailsrv.py user --help).")
    p.add_argument("--config", metavar="FILE", help="INI configuration file ([mailsrv] section)")
    p.add_argument("--data", metavar="DIR", help="data directory (default ./maildata)")
    p.add_argument("--listen", metavar="ADDR", action="append", help="address to listen on (repeatable)")
    p.add_argument("--hostname", metavar="NAME")
    p.add_argument("--domain", metavar="NAME", action="append", help="local mail domain (repeatable)")
    for proto in ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps"):
        p.add_argument(f"--{proto}-port", metavar="N", help="port number, 0 for any, off to disable")
    p.add_argument("--tls-cert", metavar="FILE")
    p.add_argument("--tls-key", metavar="FILE")
    p.add_argument("--log-level", metavar="LEVEL")
    p.add_argument("--dns-server", metavar="HOST:PORT", action="append", help="DNS server for MX lookups (repeatable)")
    p.add_argument("--relay-port", metavar="N", help="destination port for outbound SMTP (default 25)")
    p.add_argument("--relayhost", metavar="HOST:PORT", help="smarthost for all outbound mail")
    p.add_argument("--trusted-networks", metavar="CIDR[,CIDR...]", help="clients allowed to relay; 'none' for nobody")
    return p


def _admin_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="INI configuration file")
    common.add_argument("--data", metavar="DIR", help="data directory (default ./maildata)")
    p = argparse.ArgumentParser(prog="mailsrv.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    for action in ("add", "passwd", "del"):
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
    dns.add_argument("--dns-server", metavar="HOST:PORT", action="append")
    sub.add_parser("config-example", help="print a commented configuration file with every key")
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
    cfg = load_config(args)
    data = cfg.data_dir
    os.makedirs(data, mode=0o700, exist_ok=True)
    if args.cmd == "user":
        from store.maildir import MailStore
        users = UserDB(data)
        store = MailStore(data, cfg.hostname)
        try:
            if args.action == "add":
                users.add(args.address, _read_password("password: "))
                store.create_mailbox(normalize_address(args.address))
                print(f"added {normalize_address(args.address)}")
            elif args.action == "passwd":
                users.set_password(args.address, _read_password("new password: "))
                print(f"password changed for {normalize_address(args.address)}")
            elif args.action == "del":
                users.delete(args.address)
                print(f"deleted {args.address} (its Maildir was moved under {os.path.join(data, 'mail', '.deleted')})")
                store.delete_mailbox(normalize_address(args.address))
            else:
                for u in users.list():
                    print(u)
        except (KeyError, ValueError) as e:
            raise ConfigError(str(e).strip("'\"")) from None
        return 0
    if args.cmd == "alias":
        aliases = AliasDB(data)
        try:
            if args.action == "add":
                aliases.add(args.alias, args.targets)
            elif args.action == "del":
                aliases.delete(args.alias)
            else:
                for name, targets in sorted(aliases.list().items()):
                    print(f"{name}: {', '.join(targets)}")
        except (KeyError, ValueError) as e:
            raise ConfigError(str(e).strip("'\"")) from None
        return 0
    if args.cmd == "queue":
        return queue_main(cfg, args.action, args.id)
    if args.cmd == "dns":
        return dns_main(cfg, args.qtype, args.name)
    return 2


def _running_pid(data: str) -> Optional[int]:
    try:
        with open(os.path.join(data, "mailsrv.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


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
    pid = _running_pid(cfg.data_dir)
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        print(f"{what}: handed to the running server (pid {pid})")
        return 0
    # No server runs: start one without listeners; the relay applies the request
    # (it owns the entries) and works until it is idle (bounded), then we stop.
    server = MailServer(cfg)
    server.backend.start()
    loop, relay = server.loop, server.backend.relay
    outcomes: List[str] = []
    loop.call_soon(lambda: server.backend.queue_control(lambda c, q, outcome: outcomes.append(outcome)))
    deadline = [60.0]

    def stop_when_idle():
        deadline[0] -= 0.1
        if (outcomes and relay.in_flight == 0) or deadline[0] <= 0:
            loop.stop()
        else:
            loop.call_later(0.1, stop_when_idle)
    loop.call_later(0.1, stop_when_idle)
    loop.run()
    server.backend.close()
    outcome = outcomes[0] if outcomes else "not finished within 60 s (see the log)"
    print(f"{what}: {outcome}")
    return 0 if outcome in ("done", "deleted", "bounced") else 1


def dns_main(cfg: Config, qtype: str, name: str) -> int:
    """`dns MX example.org`: what our own resolver finds (RFC 1035, RFC 5321 §5.1)."""
    from protocols import dns as dnsproto
    server = MailServer(cfg)
    resolver = server.backend._make_resolver()
    out: List[object] = []

    def done(result):
        out.append(result)
        server.loop.stop()
    if qtype == "MX":
        resolver.lookup_mx_hosts(name, done)
    else:
        resolver.resolve(name, dnsproto.TYPE_A if qtype == "A" else dnsproto.TYPE_AAAA, done)
    server.loop.call_later(60, server.loop.stop)
    server.loop.run()
    if not out:
        print(f"{name}: no answer (timeout)")
        return 1
    result = out[0]
    if qtype == "MX":
        if not result.ok:
            code, enhanced, text = result.reply
            print(f"{name}: {code} {enhanced} {text}")
            return 1
        for pref, host, addrs in result.hosts:
            print(f"{pref} {host} {' '.join(addrs)}{'  (implicit MX)' if result.implicit else ''}")
        return 0
    records = getattr(result, "records", None)
    if records is None:
        print(f"{name}: {result.kind} {result.message}".rstrip())
        return 1
    for r in records:
        print(r)
    return 0


def serve_main(argv: List[str]) -> int:
    args = _serve_parser().parse_args(argv)
    cfg = load_config(args)
    logging.basicConfig(level=getattr(logging, str(cfg.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = MailServer(cfg)
    server.bind()
    for line in server.listening_lines():
        print(line, flush=True)

    def on_term(signum, _frame):
        log.info("signal %d: shutting down (grace %.0fs)", signum, cfg.shutdown_grace)
        server.shutdown()

    def reload():
        try:
            server.reload(load_config(args))
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, lambda _s, _f: server.loop.call_soon_threadsafe(reload))
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))
    pidfile = os.path.join(cfg.data_dir, "mailsrv.pid")
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        server.serve_forever()
    finally:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
    log.info("stopped")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in ("user", "alias", "queue", "dns", "config-example"):
            return admin_main(argv)
        return serve_main(argv)
    except ConfigError as e:
        print(f"mailsrv: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
