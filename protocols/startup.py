"""What the server says about itself at start and in ``mailsrv.py check``.

Plain text from the configuration and the recipient directory (no I/O
here): the data folder, the host name and where it came from, the local
domains, who reads postmaster mail (RFC 5321 §4.5.1: every domain must
accept it), the relay mode, the listeners, and how to stop the server.
``probe_dns`` asks our own resolver one question, for ``check``.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import List, Tuple

from protocols.dns import codec as dns
from protocols.dns.resolver import DnsError, Resolver, parse_resolv_conf
from protocols.outbound.relay import parse_relayhost

# `check` asks one question, once, per server: a DNS server on a working
# network answers within a second; 3 s is resolv.conf(5)'s spirit, not its 5.
DNS_QUICK_TIMEOUT = 3.0
# and the whole probe, whatever the number of servers, ends within this.
DNS_PROBE_SECONDS = 12.0


def describe(cfg, directory, data: str) -> List[str]:
    """The lines that say what this server does with mail (no listeners)."""
    if getattr(cfg, "catch_all", False):
        return [f"data folder {data}", catch_all_line(cfg)]
    return [
        f"data folder {data}",
        f"host name {cfg.hostname} (from {cfg.hostname_source}; set hostname = NAME to change)",
        "local domains " + ", ".join(cfg.local_domains()) + " (and the domains of users and aliases)",
        postmaster_line(cfg, directory),
        relay_line(cfg),
    ]


def catch_all_line(cfg) -> str:
    """Catch-all mode (protocols/backend/catchall.py): what it accepts, who logs in."""
    if cfg.catch_all_any_password:
        rule = "any password"
    elif cfg.catch_all_password:
        rule = "the catch_all_password setting (--password)"
    else:
        rule = "the address itself as password"
    return ("catch-all: mail to every address of every domain is kept in a mailbox of its own, nothing is "
            f"relayed; any address logs in (POP3, IMAP, SMTP AUTH) with {rule}")


def postmaster_line(cfg, directory) -> str:
    """Who reads mail to postmaster@ (see store.users.Directory)."""
    target = directory.postmaster_target(cfg.hostname.lower())
    if cfg.postmaster:
        if _readable(directory, target):
            return f"postmaster mail goes to {target} (the postmaster setting)"
        return (f"postmaster mail goes to {target} (the postmaster setting), which is not a user: "
                f"add it with `user add {target}`, or its mail waits in a Maildir nobody can log in to")
    if _readable(directory, target):
        return (f"postmaster mail goes to {target} (no postmaster set: the first user of the domain, "
                f"else the first user; set postmaster = ADDRESS to choose)")
    return (f"postmaster mail waits in the Maildir of {target}: there are no users yet "
            f"(the first user added gets it; or set postmaster = ADDRESS)")


def _readable(directory, target: str) -> bool:
    """A user, an alias or a remote address: a person reads it."""
    domain = target.rpartition("@")[2]
    return (not directory.is_local_domain(domain) or directory.users.canonical(target) is not None
            or directory.aliases.targets(target) is not None)


def relay_line(cfg) -> str:
    if cfg.relayhost:
        auth = " with AUTH" if cfg.relay_auth_user else ""
        return f"outbound mail goes to the smarthost {cfg.relayhost}{auth} (relay_tls {cfg.relay_tls})"
    dns_text = ", ".join(cfg.dns_servers) or "the servers in /etc/resolv.conf"
    return (f"outbound mail goes to each domain's MX on port {cfg.relay_port} (relay_tls {cfg.relay_tls}), "
            f"looked up through {dns_text}")


def planned_listeners(cfg, listeners) -> List[str]:
    """The listeners ``bind`` would open, as ``listen NAME HOST:PORT`` lines
    (``listeners``: mailsrv.py's table, each with name, port_key, tls, factory)."""
    out = []
    for lst in listeners:
        name, port = lst.name, getattr(cfg, lst.port_key)
        if port is None or lst.factory is None:
            continue
        if lst.tls == "implicit" and not cfg.tls_cert and not cfg.tls_self_signed:
            out.append(f"{name}: off (needs tls_cert and tls_key, or tls_self_signed)")
            continue
        address_key = getattr(lst, "address_key", "")
        for host in getattr(cfg, address_key) if address_key else cfg.listen:
            host_text = f"[{host}]" if ":" in host else host
            out.append(f"listen {name} {host_text}:{port if port else 'any free port'}")
    return out


def listener_plan(cfg, listeners, tls: bool):
    """(listener, host, port) of each listener ``bind`` opens (``listeners``:
    mailsrv.py's table; ``tls``: a certificate is loaded, so the implicit-TLS ones too)."""
    for lst in listeners:
        port = getattr(cfg, lst.port_key)
        if lst.factory is None or port is None or (lst.tls == "implicit" and not tls):
            continue
        for host in getattr(cfg, lst.address_key) if lst.address_key else cfg.listen:
            yield lst, host, port


def listening_line(name: str, host: str, port: int) -> str:
    """``listening NAME HOST:PORT``, the start-up line scripts wait for."""
    return f"listening {name} [{host}]:{port}" if ":" in host else f"listening {name} {host}:{port}"


def bind_error(name: str, host: str, port: int, e: OSError) -> str:
    """One line for a listener that cannot be bound, with the fix."""
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


def stop_line(pid: int) -> str:
    return f"running as pid {pid}: stop with Ctrl-C or `kill {pid}` (SIGTERM); reload with `kill -HUP {pid}`"


def make_resolver(loop, dns_servers: List[str], resolv_conf: str, quick: bool = False) -> Tuple[Resolver, str]:
    """Our resolver as the server builds it (``dns_servers``, else
    resolv.conf), and the servers it asks as text for messages; ``quick``:
    one attempt of at most DNS_QUICK_TIMEOUT seconds per server."""
    # "host", "host:port", "[v6]:port"; RFC 1035 §4.2: port 53 by default
    servers = [parse_relayhost(spec, 53) for spec in dns_servers]
    if servers:
        timeout, attempts = 5.0, 2       # Resolver's defaults, resolv.conf(5)'s
    else:
        servers, timeout, attempts = parse_resolv_conf(resolv_conf)
    if quick:
        timeout, attempts = min(timeout, DNS_QUICK_TIMEOUT), 1
    text = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)
    return Resolver(loop, servers, timeout=timeout, attempts=attempts), text


def probe_dns(loop, resolver, servers_text: str) -> Tuple[bool, str]:
    """Ask our resolver for the root's NS records (RFC 1035 §3.3.11): any
    answer, even an error code, shows a server that answers; a timeout or
    SERVFAIL does not.  Runs ``loop`` until the answer comes."""
    out: List[object] = []

    def done(result) -> None:
        out.append(result)
        loop.stop()
    resolver.resolve(".", dns.TYPE_NS, done)
    loop.call_later(DNS_PROBE_SECONDS, loop.stop)
    loop.run()
    if not out:
        return False, f"DNS: no answer from {servers_text} within {DNS_PROBE_SECONDS:.0f} s"
    result = out[0]
    if isinstance(result, DnsError) and result.kind == "temporary":
        return False, f"DNS: {servers_text} failed: {result.message}".rstrip(": ")
    return True, f"DNS: {servers_text} answers"
