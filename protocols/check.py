"""``mailsrv.py check``: what would stop the server, and what it would do.

Validates, without creating or changing anything: the configuration (already
parsed by the caller), the data folder (or whether it could be made), the TLS
certificate and key, the users and aliases files line by line, and that a DNS
server answers our resolver (RFC 1035 §4.2; needed for MX delivery, RFC 5321
§5.1).  Then prints what the server would do: host name, local domains,
postmaster, relay mode and listeners.  Exit status 0, or 2 on any problem.
"""

from __future__ import annotations

import os
from typing import Callable, List

from protocols.startup import describe, make_resolver, planned_listeners, probe_dns
from store.datadir import DataDirError, check_data_dir, check_record_file, lock_holder, pid_name
from store.tlsfiles import check_tls_files, tls_folder
from store.users import AliasDB, Directory, UserDB


def _check_self_signed(folder: str, problems: List[str], found: List[str]) -> None:
    """No tls_cert: the self-signed pair the server makes in ``folder`` (protocols/selfsigned.py)."""
    from protocols.selfsigned import CERT_FILE, KEY_FILE
    cert, key = os.path.join(folder, CERT_FILE), os.path.join(folder, KEY_FILE)
    if not os.path.exists(cert) or not os.path.exists(key):
        found.append(f"TLS with a self-signed certificate, made at first start in {os.path.dirname(cert)} "
                     f"(tls_self_signed = no: no TLS without tls_cert)")
        return
    try:
        check_tls_files(cert, key)
        found.append(f"TLS with the self-signed certificate {cert} (set tls_cert/tls_key for a real one)")
    except DataDirError as e:
        problems.append(str(e))


def _check_acme(cfg, data: str, problems: List[str], found: List[str]) -> None:
    """acme_email: the ACME pair the server prefers once it has one (this host's with shared_data)."""
    import datetime
    from protocols.acme import service
    from store import acmefiles
    host = service.host_of(cfg)
    try:
        info, why = service.read_pair(data, service.names_of(cfg), datetime.datetime.now().timestamp(), host)
    except DataDirError as e:
        problems.append(str(e))
        return
    cert = acmefiles.path(data, acmefiles.CERT, host)
    found.append(f"TLS with the ACME certificate {cert} (renewed by the server)" if info is not None and not why
                 else f"ACME certificate {cert}: {why}; the server orders one from {cfg.acme_directory}")


def _check_files(cfg, data: str, problems: List[str], found: List[str]) -> Directory:
    if cfg.acme_email and not cfg.catch_all:
        _check_acme(cfg, data, problems, found)
    if cfg.tls_cert:
        try:
            check_tls_files(cfg.tls_cert, cfg.tls_key)
            found.append(f"TLS certificate {cfg.tls_cert} and key {cfg.tls_key} load")
        except DataDirError as e:
            problems.append(str(e))
    elif cfg.tls_self_signed:
        _check_self_signed(tls_folder(data, cfg.shared_data, cfg.hostname), problems, found)
    else:
        found.append("TLS off (no tls_cert/tls_key): no STARTTLS, no smtps/pop3s")
    for name, key in (("users", "address"), ("aliases", "alias")):
        problems += check_record_file(os.path.join(data, name), key)
    users, aliases = UserDB(data), AliasDB(data)
    found.append(f"{len(users.list())} user(s), {len(aliases.list())} alias(es)")
    holder = lock_holder(data, pid_name(cfg.shared_data, cfg.hostname)) if os.path.isdir(data) else None
    if holder:
        found.append(f"a server runs on this data folder (pid {holder})")
    return Directory(users, aliases, cfg.local_domains(), cfg.postmaster or None)


def run_check(cfg, loop, resolv_conf: str, listeners,
              out: Callable[[str], None] = print) -> int:
    """Print the checks (``ok:`` / ``error:`` lines) and the plan; 0 or 2."""
    data = os.path.abspath(cfg.data_dir)
    problems, note = check_data_dir(data)
    found = [note] if note else []
    directory = _check_files(cfg, data, problems, found)
    resolver, servers = make_resolver(loop, cfg.dns_servers, resolv_conf, quick=True)
    try:
        dns_ok, dns_text = probe_dns(loop, resolver, servers)
    finally:
        loop.close()
    (found if dns_ok else problems).append(dns_text)
    for line in found:
        out(f"ok: {line}")
    for line in problems:
        out(f"error: {line}")
    out("the server would use:")
    for line in describe(cfg, directory, data)[1:] + planned_listeners(cfg, listeners):
        out(f"  {line}")
    out(f"{len(problems)} problem(s)" if problems else "configuration OK")
    return 2 if problems else 0
