"""The configuration: one table of keys, the typed ``Config`` built from it, and its parsing.

``KEYS`` is the single source of truth: the parser, the generated example
file (``python3 mailsrv.py config-example``), the README's key list, the typed
fields of :class:`Config` and SIGHUP's live reload all read it.  The file is
INI (``configparser``, one ``[mailsrv]`` section); command-line flags go on
top (:func:`load_config`).  Every problem is a :class:`ConfigError`: one line
naming the key, the value or the file.

The protocol layer may import this module; store/ may not (it takes plain
values).
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import ipaddress
import re
from typing import Dict, List, Optional, Tuple

from protocols import logtarget
from protocols.hostnames import NameFunc, choose_hostname, machine_names
from protocols.loop import machine_name_lookups

# name: (type, default, live-reloadable on SIGHUP, comment)
KEYS: Dict[str, Tuple[str, object, bool, str]] = {
    "data_dir": ("str", "./maildata", False, "where users, aliases, Maildirs and the queue live"),
    "listen": ("list", "127.0.0.1", False, "addresses to listen on, comma separated (IPv4 and/or IPv6; 0.0.0.0 and :: for all)"),
    "hostname": ("str", "", False, "this server's name in greetings and Received: (empty: the machine's FQDN if it has a dot, else its host name)"),
    "domains": ("list", "", True, "local mail domains besides the hostname and localhost (domains of users are local too)"),
    "smtp_port": ("port", "2525", False, "SMTP for other servers (real servers use 25); off disables, 0 picks a free port"),
    "submission_port": ("port", "2587", False, "message submission for mail clients, AUTH required (RFC 6409; real: 587)"),
    "smtps_port": ("port", "2465", False, "submission over implicit TLS (RFC 8314; real: 465); tls_cert, or the self-signed one (tls_self_signed)"),
    "pop3_port": ("port", "2110", False, "POP3 (real: 110)"),
    "pop3s_port": ("port", "2995", False, "POP3 over implicit TLS (real: 995); tls_cert, or the self-signed one (tls_self_signed)"),
    "imap_port": ("port", "2143", False, "IMAP (real: 143), with STARTTLS"),
    "imaps_port": ("port", "2993", False, "IMAP over implicit TLS (real: 993); tls_cert, or the self-signed one (tls_self_signed)"),
    "http_port": ("port", "off", False, "the web page and JSON API of caught mail (README \"Web page and HTTP API\"); off unless set (the test server turns it on)"),
    "http_address": ("list", "127.0.0.1", False, "addresses the HTTP listener binds, whatever listen says (loopback only unless told otherwise)"),
    "https_port": ("port", "off", False, "the HTTP routes over implicit TLS (tls_cert, or the self-signed one) on http_address; serves our MTA-STS policy (real: 443)"),
    "http_idle_timeout": ("float", "60", True, "seconds an idle HTTP keep-alive connection stays open (RFC 9112 §9.5)"),
    "tls_cert": ("str", "", False, "PEM certificate chain; enables STARTTLS/STLS and the implicit-TLS ports; SIGHUP reloads it"),
    "tls_key": ("str", "", False, "PEM private key for tls_cert; SIGHUP reloads it"),
    "tls_self_signed": ("bool", "yes", False, "with no tls_cert: make a self-signed certificate at first start (DATA/tls/), so TLS works at once; no: no TLS without tls_cert"),
    "tls_self_signed_type": ("str", "rsa", False, "key of a self-signed certificate made at start: rsa (2048 bits, every client; about a second to make) or ed25519 (milliseconds; TLS 1.3 clients such as Python's ssl)"),
    "acme_email": ("str", "", False, "ACME (RFC 8555): with an address here mailsrv gets and renews its certificate from acme_directory (you agree to the CA's terms of service); README \"ACME certificates\""),
    "acme_directory": ("str", "https://acme-v02.api.letsencrypt.org/directory", False, "the ACME CA's directory URL: Let's Encrypt's production one by default; its staging CA is https://acme-staging-v02.api.letsencrypt.org/directory"),
    "acme_ca_file": ("str", "", False, "PEM CA bundle trusted for the ACME directory's HTTPS (a test CA such as pebble's); empty: the system's CAs"),
    "acme_challenge": ("str", "http-01", False, "how the CA checks the names: http-01, answered by the HTTP listener (needs http_port = 80 and http_address a public address), or tls-alpn-01 (RFC 8737), answered on acme_tls_port"),
    "acme_tls_port": ("int", "443", False, "acme_challenge = tls-alpn-01: the port of the challenge listener on the listen addresses (the CA connects to 443; only the challenge is served there)"),
    "acme_key_type": ("str", "ec", False, "the ACME account key made at the first order: ec (ECDSA P-256, JWS ES256; milliseconds) or rsa (RSA-2048, RS256); a key already in DATA/tls/acme/ (DATA/tls/<hostname>/acme/ with shared_data) is kept"),
    "acme_names": ("list", "", False, "DNS names in the ACME certificate besides hostname, comma separated (e.g. mta-sts.example.org)"),
    "log_level": ("str", "INFO", True, "DEBUG, INFO, WARNING or ERROR"),
    "log_target": ("str", "stderr", False, "where the log goes: stderr, file:/path (reopened on SIGHUP, for logrotate) or syslog (facility mail)"),
    "max_message_size": ("int", "26214400", True, "largest message accepted, in octets (announced in EHLO SIZE)"),
    "max_recipients": ("int", "100", True, "recipients per message (RFC 5321 §4.5.3.1.8 minimum is 100)"),
    "max_inflight_message_bytes": ("int", "1073741824", True, "octets of messages being received at once, all clients; beyond it a new DATA/BDAT gets 452 4.3.1"),
    "max_received_headers": ("int", "30", True, "more Received: headers than this is a mail loop: 554 5.4.6 (RFC 5321 §6.3)"),
    "max_connections": ("int", "1000", False, "simultaneous connections per listener, all workers together"),
    "max_connections_per_ip": ("int", "50", False, "simultaneous connections per client address per listener, all workers together"),
    "smtp_idle_timeout": ("float", "300", True, "seconds an SMTP client may take to complete a command line (RFC 5321 §4.5.3.2.7: at least 5 minutes)"),
    "pop3_idle_timeout": ("float", "600", True, "seconds a POP3 client may take to complete a command line (RFC 1939 §3: at least 10 minutes)"),
    "imap_idle_timeout": ("float", "1800", True, "seconds an IMAP client may stay silent, IDLE included (RFC 9051 §5.4: at least 30 minutes)"),
    "imap_append_limit": ("int", "26214400", True, "largest message APPEND accepts, in octets (announced as APPENDLIMIT, RFC 7889)"),
    "imap_max_userip_connections": ("int", "10", True, "IMAP sessions of one user from one address (Dovecot's mail_max_userip_connections)"),
    "imap_referral": ("str", "", True, "the server users' mail moved to, host[:port] (RFC 2221 login referral): a correct IMAP login answers NO [REFERRAL imap://user@host/] and stays logged out; empty: none"),
    "default_quota": ("str", "0", True, "storage limit of a user without one of their own (`mailsrv.py user quota`): 0 for none, or a size like 2G, 500M (1024-based)"),
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
    "workers": ("str", "auto", False, "serving processes sharing the listeners: auto (one per core) or a number; 1: one process, as embedded servers are (README \"Workers\")"),
    "shutdown_grace": ("float", "30", False, "seconds SIGTERM waits for messages in flight before closing"),
    "trusted_networks": ("list", "127.0.0.0/8,::1/128", True, "clients that may relay without AUTH (CIDRs; 'none' for nobody)"),
    "sender_login_match": ("bool", "yes", True, "an authenticated user may send only as their own addresses and aliases"),
    "dkim_sign": ("bool", "yes", True, "sign mail that leaves from our domains with the DKIM keys of DATA/dkim/<domain>/<selector>.<rsa|ed25519>.pem (RFC 6376; README \"DKIM\"; mailsrv.py dkim keygen makes them)"),
    "dkim_verify": ("str", "off", True, "DKIM (RFC 6376) on mail received over SMTP from unauthenticated clients: off, or header (an Authentication-Results: field with each signature's result; nothing is refused)"),
    "spf_check": ("str", "off", True, "SPF (RFC 7208) on mail from unauthenticated clients: off, or header (a Received-SPF: field on accepted mail; nothing is refused)"),
    "dmarc_check": ("str", "off", True, "DMARC (RFC 7489) on mail received over SMTP from unauthenticated clients outside trusted_networks: off; header (the dmarc= result in Authentication-Results, SPF and DKIM computed for it); or enforce (also act on a failing message per its domain's policy and dmarc_reject_action)"),
    "dmarc_reject_action": ("str", "reject", True, "dmarc_check = enforce, for a failing message whose policy is p=reject: reject (550 5.7.1 at the end of DATA), junk (into each local recipient's Junk folder) or mark (the header only); p=quarantine goes to Junk unless this is mark"),
    "relayhost": ("str", "", True, "smarthost host:port for all outbound mail (empty: deliver by MX)"),
    "relay_port": ("int", "25", True, "destination port for MX delivery"),
    "relay_tls": ("str", "may", True, "outbound TLS: may, require, never, or implicit (smarthost on 465)"),
    "relay_auth_user": ("str", "", True, "user name for AUTH at the smarthost"),
    "relay_auth_password": ("str", "", True, "password for AUTH at the smarthost"),
    "tls_verify": ("bool", "no", True, "verify remote certificates on outbound TLS (Postfix 'may' does not)"),
    "mta_sts": ("bool", "yes", True, "apply the MTA-STS policies of recipient domains to MX delivery (RFC 8461; README \"MTA-STS and TLS-RPT\")"),
    "mta_sts_cafile": ("str", "", True, "PEM file of the CAs trusted for MTA-STS policy hosts and enforced MX certificates (empty: the system's)"),
    "mta_sts_mode": ("str", "none", True, "our own MTA-STS policy, served at https://mta-sts.<domain>/.well-known/mta-sts.txt: none (not served), testing or enforce"),
    "mta_sts_mx": ("list", "", True, "the mx: patterns of our policy (empty: the hostname)"),
    "mta_sts_max_age": ("int", "604800", True, "max_age of our policy in seconds (RFC 8461 §3.2: at most 31557600; weeks are usual)"),
    "tls_rpt": ("bool", "no", True, "send daily TLS-RPT reports (RFC 8460) of our outbound TLS to domains that publish _smtp._tls"),
    "dns_servers": ("list", "", True, "DNS servers host[:port] for MX lookups (empty: /etc/resolv.conf)"),
    "retry_schedule": ("list", "300,600,1200,1800", True, "seconds between delivery attempts; the last repeats (RFC 5321 §4.5.4.1)"),
    "queue_interval": ("float", "60", True, "seconds between runs over the queue for due retries"),
    "max_queue_age": ("float", "432000", True, "give up and bounce after this many seconds (5 days, RFC 5321 §4.5.4.1)"),
    "shared_data": ("bool", "no", False, "several mailsrv hosts use this data folder at once (an NFS export; README \"Several hosts\"): a pid file and a TLS certificate (self-signed or ACME) per host name, queue entries leased"),
    "queue_lease": ("float", "600", True, "with shared_data: seconds a host's claim on a queue entry lasts unrenewed; another host takes over an entry whose deliverer died after this (renewed every queue_interval)"),
    "catch_all": ("bool", "no", False, "test mail server: accept every address of every domain into a mailbox of its own, relay nothing, any address logs in (`mailsrv.py test-server` sets it; README \"Test server\")"),
    "catch_all_password": ("str", "", True, "catch-all mode: the password of every address that is not a user (empty: the address itself, as GreenMail)"),
    "catch_all_any_password": ("bool", "no", True, "catch-all mode: any password logs in any address that is not a user"),
}

# The Python type of each kind of value in KEYS ("port": a number, or None for off).
KIND_TYPES = {"str": str, "list": List[str], "int": int, "float": float, "bool": bool, "port": Optional[int]}


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


class CidrList(list):
    """``trusted_networks`` as configured (CIDRs as text, or ``["none"]``);
    :meth:`networks` gives the parsed networks (``none``: an empty list)."""

    def networks(self) -> List[ipaddress._BaseNetwork]:
        if [n.lower() for n in self] == ["none"]:
            return []
        try:
            return [ipaddress.ip_network(n, strict=False) for n in self]
        except ValueError as e:
            raise ConfigError(f"bad trusted_networks entry: {e}") from None


class _ConfigBase:
    """What every :class:`Config` has besides its typed fields (one per KEYS entry)."""

    def __init__(self, values: Optional[Dict[str, object]] = None,
                 names: Optional[Tuple[NameFunc, NameFunc]] = None):
        """``values``: raw (text from a file or a flag) or typed values by key; a
        missing key gets its default.  ``names`` = (getfqdn, gethostname), injected
        by tests so they never depend on this machine's name."""
        merged = {k: _convert(k, kind, default) for k, (kind, default, _l, _c) in KEYS.items()}
        for k, v in (values or {}).items():
            if k not in KEYS:
                raise ConfigError(f"unknown configuration key: {k}")
            merged[k] = _convert(k, KEYS[k][0], v)
        merged["trusted_networks"] = CidrList(merged["trusted_networks"])
        for k, v in merged.items():
            setattr(self, k, v)
        self.names = names or machine_name_lookups()
        self.hostname, self.hostname_source = choose_hostname(self.hostname, *self.names)
        self.machine_names = machine_names(*self.names)
        if self.hostname.lower() == "localhost.localdomain":
            self.hostname = "localhost"
        self._validate()

    def _validate(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key must be given together")
        for key in ("listen", "http_address"):
            for addr in getattr(self, key):
                try:
                    ipaddress.ip_address(addr)
                except ValueError:
                    raise ConfigError(f"bad {key} address: {addr!r} (give an IPv4 or IPv6 address)") from None
        if logtarget.check(self.log_target):
            raise ConfigError(logtarget.check(self.log_target))
        if self.relay_tls not in ("may", "require", "never", "implicit"):
            raise ConfigError("relay_tls must be may, require, never or implicit")
        if self.tls_self_signed_type not in ("rsa", "ed25519"):
            raise ConfigError(f"tls_self_signed_type must be rsa or ed25519, not {self.tls_self_signed_type!r}")
        if self.acme_challenge not in ("http-01", "tls-alpn-01"):
            raise ConfigError(f"acme_challenge must be http-01 or tls-alpn-01, not {self.acme_challenge!r}")
        if self.acme_key_type not in ("ec", "rsa"):
            raise ConfigError(f"acme_key_type must be ec or rsa, not {self.acme_key_type!r}")
        if self.acme_email and self.tls_cert:
            raise ConfigError("acme_email and tls_cert are both set: ACME makes its own certificate; remove one")
        if not 0 <= self.acme_tls_port <= 65535:
            raise ConfigError(f"acme_tls_port {self.acme_tls_port}: not a port number (443 for a real CA)")
        if self.acme_email and self.acme_challenge == "http-01" and self.http_port is None and not self.catch_all:
            raise ConfigError("acme_email needs the HTTP listener for http-01: set http_port (80 for a real CA) and http_address")
        if self.dkim_verify not in ("off", "header"):
            raise ConfigError(f"dkim_verify must be off or header, not {self.dkim_verify!r}")
        if self.spf_check not in ("off", "header"):
            raise ConfigError(f"spf_check must be off or header, not {self.spf_check!r}")
        if self.dmarc_check not in ("off", "header", "enforce"):
            raise ConfigError(f"dmarc_check must be off, header or enforce, not {self.dmarc_check!r}")
        if self.dmarc_reject_action not in ("reject", "junk", "mark"):
            raise ConfigError(f"dmarc_reject_action must be reject, junk or mark, not {self.dmarc_reject_action!r}")
        if self.mta_sts_mode not in ("none", "testing", "enforce"):
            raise ConfigError(f"mta_sts_mode must be none, testing or enforce, not {self.mta_sts_mode!r}")
        if not 0 <= self.mta_sts_max_age <= 31557600:     # RFC 8461 §3.2
            raise ConfigError(f"mta_sts_max_age must be 0 to 31557600 seconds, not {self.mta_sts_max_age}")
        from protocols.outbound.mtasts import valid_pattern
        for pattern in self.mta_sts_mx:
            if not valid_pattern(pattern):
                raise ConfigError(f"bad mta_sts_mx pattern: {pattern!r} (a host name or *.domain, RFC 8461 §3.2)")
        from store.quota import parse_size
        try:
            parse_size(self.default_quota)
        except ValueError as exc:
            raise ConfigError(f"default_quota: {exc}") from None
        self.trusted_networks.networks()  # validate now
        if self.workers != "auto" and not re.fullmatch(r"[1-9][0-9]{0,2}", self.workers):
            raise ConfigError(f"bad value for workers: {self.workers!r} (auto, or a number of processes from 1 to 999)")
        if self.imap_referral and not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?",
                                                   self.imap_referral):
            raise ConfigError(f"imap_referral must be host[:port] (RFC 5092 §3), not {self.imap_referral!r}")

    @property
    def values(self) -> Dict[str, object]:
        """Every key with its typed value, as a new dict (set a key through its attribute)."""
        return {k: getattr(self, k) for k in KEYS}

    def local_domains(self) -> List[str]:
        return sorted({self.hostname.lower(), "localhost", *self.machine_names,
                       *(d.lower().rstrip(".") for d in self.domains)})


def _field(key: str, kind: str):
    """One typed field of Config; a password never shows in its repr."""
    kind_type = CidrList if key == "trusted_networks" else KIND_TYPES[kind]
    return (key, kind_type, dataclasses.field(repr="password" not in key))


# Every setting, typed: one field per KEYS entry (``cfg.smtp_port`` is an int or None,
# ``cfg.listen`` a list of str, ...).  Build with ``Config({key: value, ...})`` or
# :func:`load_config`; a key added to KEYS is a field at once.
Config = dataclasses.make_dataclass(
    "Config", [_field(k, kind) for k, (kind, _d, _l, _c) in KEYS.items()],
    bases=(_ConfigBase,), init=False)
Config.__module__ = __name__
Config.__doc__ = ("Every setting, typed, one field per KEYS entry; ``Config({key: value})``, "
                  "or :func:`load_config` from a file and flags.")


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


# argparse dest -> configuration key, for the global options (mailsrv.py); the
# --NAME-port flags of the listeners have their key as dest and are added here.
FLAG_KEYS = {"data": "data_dir", "hostname": "hostname", "tls_cert": "tls_cert", "tls_key": "tls_key",
             "tls_self_signed": "tls_self_signed",
             "log_level": "log_level", "relay_port": "relay_port", "relayhost": "relayhost", "workers": "workers"}
FLAG_KEYS.update({k: k for k, (kind, _d, _l, _c) in KEYS.items() if kind == "port"})


def load_config(args: argparse.Namespace, base: Optional[Dict[str, object]] = None) -> "Config":
    """The configuration file named by ``args.config`` (if any), the flags on top;
    ``base`` under both (the defaults of `test-server`)."""
    values: Dict[str, object] = dict(base or {})
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
