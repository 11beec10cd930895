"""The subcommands of ``mailsrv.py``: serve's signals and start-up lines, user,
alias, queue, dns, tls, rfc, test-server (dkim: protocols/dkim_command.py; acme: protocols/acme/command.py).

mailsrv.py parses the command line and hands each subcommand its part here,
with what only the entry point knows: the server it built (``MailServer``),
or how to build one for ``queue``, and the contents of /etc/resolv.conf.
``check`` is protocols/check.py, ``sendmail`` protocols/backend/sendmail.py.
Output goes to stdout, warnings to stderr; a refusal is a ``ConfigError``
whose one line mailsrv.py prints.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import signal
import tempfile
import sys
from datetime import datetime
from typing import Callable, List, Optional

from protocols.config import Config, ConfigError, load_config
from protocols.loop import EventLoop
from protocols import logtarget
from protocols.startup import describe, make_resolver, stop_line
from store.datadir import ServerLock, lock_or_holder, open_data_dir, pid_name
from store.users import AliasDB, UserDB, normalize_address

log = logging.getLogger("mailsrv")


# -- serve: the server mailsrv.py built, its signals, its start-up lines --------

def server_pid_name(cfg: Config) -> str:
    """The data folder's pid file of this server (per host with shared_data)."""
    return pid_name(cfg.shared_data, cfg.hostname)


def serve_processes(cfg: Config, make_server: Callable[[Config], object], listeners, reread: Callable[[], Config],
                    log_handler) -> int:
    """`python3 mailsrv.py`: ``serve`` in this process (workers = 1), or a supervisor
    that binds the listeners, prints the start-up lines and runs N workers on
    them (protocols/supervisor.py, README "Workers")."""
    from protocols import supervisor
    from protocols.backend.wiring import make_directory
    count = supervisor.worker_count(cfg)
    if count == 1:
        return serve(make_server(cfg), reread, log_handler)
    tls = supervisor.tls_context(cfg)     # once: a worker started later keeps it if the files went bad
    sockets = supervisor.bind_listeners(cfg, listeners, tls is not None)
    counts = supervisor.shared_counts(cfg, count, sockets)

    def worker(index: int, again: bool) -> int:
        server = make_server(cfg)
        server.backend.worker, server.sockets, server.tls_preset = index, sockets, tls
        server.shared_counts = (index, counts)
        return serve(server, reread, log_handler, announce=False, reload_now=again)
    try:
        directory = make_directory(cfg, UserDB(cfg.data_dir), AliasDB(cfg.data_dir))
        lines = supervisor.listening_lines(sockets) + describe(cfg, directory, cfg.data_dir)
        # the start-up lines once the supervisor handles the signals: a script may send one at once
        return supervisor.Supervisor(count, worker, cfg.shutdown_grace, lambda: logtarget.reopen(log_handler),
                                     log_handler, counts).run(ready=lambda: _announce(cfg, lines))
    finally:
        supervisor.close_all(sockets)


def _announce(cfg: Config, lines: List[str]) -> None:
    """Once, on stdout: listeners first (scripts wait for them), then the rest, then how to stop."""
    for line in lines:
        print(line, flush=True)
        if cfg.log_target != "stderr":       # on a terminal they would show twice; a log file wants them
            log.info("%s", line)
    print(stop_line(os.getpid()), flush=True)


def serve(server, reread: Callable[[], Config], log_handler, announce: bool = True, reload_now: bool = False) -> int:
    """Bind, handle the signals, print the start-up lines (unless a supervisor
    did: ``announce``), run until SIGTERM/SIGINT.  ``reread`` loads the
    configuration again for SIGHUP, and at once with ``reload_now`` (a worker
    started again: there may have been one since the supervisor started)."""
    cfg = server.config
    server.bind()

    def on_term(signum, _frame):
        log.info("signal %d: shutting down (grace %.0fs)", signum, cfg.shutdown_grace)
        server.shutdown()

    def reload():
        logtarget.reopen(log_handler)     # logrotate renamed the file: start a new one
        try:
            server.reload(reread())
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)

    def kick_pickup():
        if server.backend.delivery.pickup is not None:     # None in workers but the first
            server.backend.delivery.pickup.kick()

    # a signal the kernel gives another thread (the main one blocks it a moment, or has one
    # pending) must still wake the loop, or its handler waits for the next event (a minute)
    server.loop.wake_on_signals()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, lambda _s, _f: server.loop.call_soon_threadsafe(reload))
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))
    signal.signal(signal.SIGUSR2, lambda _s, _f: server.loop.call_soon_threadsafe(kick_pickup))
    # a worker of a supervisor starts with them blocked, so none came before its handler (protocols/supervisor.py)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2))
    if announce:     # once, now that signals are handled
        _announce(cfg, server.listening_lines() + describe(cfg, server.backend.directory, cfg.data_dir))
    if reload_now:
        server.loop.call_soon(reload)
    server.serve_forever()
    log.info("stopped")
    return 0


# -- test-server: serve in catch-all mode (protocols/testserver.py, README "Test server") --

def test_server_parser(sub, common: argparse.ArgumentParser) -> None:
    """`test-server`'s own options (mailsrv.py's parser; the global ones come with ``common``)."""
    ts = sub.add_parser("test-server", parents=[common], help="a test mail server: every address caught, nothing "
                        "relayed, any address logs in (README \"Test server\")")
    ts.add_argument("--password", metavar="P", default="", help="password of every address (default: the address itself)")
    ts.add_argument("--any-password", action="store_true", help="any password logs in any address")
    ts.add_argument("--ports-base", metavar="N", type=int, default=3000,
                    help="GreenMail's ports: N+25 smtp, N+110 pop3, N+143 imap, N+465 smtps, N+995 pop3s, "
                    "N+993 imaps, N+587 submission (default 3000; 0: free ports)")


def test_server_main(args: argparse.Namespace, make_server: Callable[[Config], object]) -> int:
    """`test-server`: its defaults (catch-all, GreenMail's ports from --ports-base,
    a temporary data folder removed at exit unless --data), the configuration
    file and flags on top; then as `serve`."""
    from protocols.testserver import TEST_SERVER_VALUES, ports_from_base
    try:
        base: dict = dict(TEST_SERVER_VALUES, **ports_from_base(args.ports_base))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    base.update(catch_all_password=args.password, catch_all_any_password=args.any_password)
    tmp = None if getattr(args, "data", None) else tempfile.mkdtemp(prefix="mailsrv-test-server-")
    if tmp:
        base["data_dir"] = tmp
    try:
        cfg = load_config(args, base=base)
        try:
            log_handler = logtarget.install(cfg.log_target, str(cfg.log_level))
        except OSError as e:
            raise ConfigError(f"cannot open log_target {e.filename or cfg.log_target}: {e.strerror or e}") from None
        cfg.data_dir = open_data_dir(cfg.data_dir, create=True)
        lock = ServerLock(cfg.data_dir, server_pid_name(cfg)).acquire()
        try:
            return serve(make_server(cfg), lambda: load_config(args, base=base), log_handler)
        finally:
            lock.release()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def read_password(prompt: str) -> str:
    """A new password: asked twice on a terminal, else stdin's first line."""
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


# -- user, alias (store/users.py does the checking) ----------------------------

def user_alias_main(args: argparse.Namespace, data: str, cfg: Config) -> int:
    """`user ...` and `alias ...`."""
    from store.maildir import MailStore
    users, aliases = UserDB(data), AliasDB(data)
    try:
        if args.cmd == "alias":
            return _alias_action(args, users, aliases)
        store = MailStore(data, cfg.hostname)
        addr = normalize_address(args.address) if args.action != "list" else ""
        if args.action == "add":
            users.add(args.address, read_password("password: "))
            store.create_mailbox(addr)
            print(f"added {addr}")
            if aliases.targets(addr) is not None:
                print(f"mailsrv: warning: {addr} is also an alias; mail to it now goes to the user "
                      f"(`alias del {addr}` to tidy up)", file=sys.stderr)
        elif args.action == "passwd":
            users.set_password(args.address, read_password("new password: "))
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
        elif args.action == "quota":     # store/quota.py: DATA/quotas and maildirsize
            from store.quota import quota_command
            if not users.exists(addr):
                raise ValueError(f"no such user: {addr}")
            print("\n".join(quota_command(data, store.maildir_path(addr), addr, args.size, args.messages,
                                           cfg.default_quota)))
        elif args.action == "show":
            from store.usershow import show_user
            print("\n".join(show_user(users, aliases, store, addr)))
        else:
            print("\n".join(users.list()) if users.list() else "no users")
    except (KeyError, ValueError) as e:
        raise ConfigError(str(e).strip("'\"")) from None
    if args.cmd == "alias" and args.action != "list" or args.action in ("passwd", "del", "disable", "enable"):
        _tell_servers(cfg, data)
    return 0


def _tell_servers(cfg: Config, data: str) -> None:
    """The running processes of this host drop their login cache and read the
    users and aliases files now (protocols/loop_siblings.py), not at their next
    check of the files (within a second)."""
    from protocols.loop_siblings import tell_siblings
    from store.datadir import run_folder
    tell_siblings(run_folder(data, cfg.shared_data, cfg.hostname), "users")


def user_quota_parser(user, common) -> None:
    """`user quota ADDRESS [SIZE] [--messages N]` (store/quota.py quota_command)."""
    uq = user.add_parser("quota", parents=[common], help="show a user's quota, or set it: SIZE like 2G, 500M (0 or none removes)")
    uq.add_argument("address")
    uq.add_argument("size", nargs="?")
    uq.add_argument("--messages", type=int, metavar="N", help="most messages the user may keep (0: no limit)")


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


# -- queue ---------------------------------------------------------------------

def queue_main(cfg: Config, action: str, qid: Optional[str], make_server: Callable[[Config], object]) -> int:
    """`queue` lists; flush/delete/bounce are applied by the running server
    (SIGUSR1), or here, by a server started just for them (``make_server``,
    mailsrv.py's MailServer), when none runs."""
    from store.queue import Queue
    queue = Queue(cfg.data_dir, recover=False)   # a running server may be writing it
    if action == "list":
        entries = queue.list()
        for e in entries:
            nxt = datetime.fromtimestamp(int(e.next_try)).strftime("%Y-%m-%d %H:%M:%S")   # local time
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
    lock, pid = lock_or_holder(cfg.data_dir, server_pid_name(cfg))   # signal only the lock's holder
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        print(f"{what}: handed to the running server (pid {pid})")
        return 0
    try:
        return _queue_offline(make_server(cfg), what)
    finally:
        lock.release()


def _queue_offline(server, what: str) -> int:
    """No server runs: apply the request here, holding the lock (protocols/outbound/queue_admin.py)."""
    from protocols.outbound.queue_admin import OFFLINE_LIMIT_SECONDS, apply_offline
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))  # we hold the lock
    outcome = apply_offline(server.backend, server.loop) or f"not finished within {OFFLINE_LIMIT_SECONDS:.0f} s (see the log)"
    print(f"{what}: {outcome}")
    return 0 if outcome in ("done", "deleted", "bounced") else 1


# -- dns -----------------------------------------------------------------------

def dns_main(cfg: Config, qtype: str, name: str, resolv_conf: str, ip: Optional[str] = None,
             sender: Optional[str] = None, helo: Optional[str] = None) -> int:
    """`dns MX example.org`: what our own resolver finds (RFC 1035, RFC 5321 §5.1),
    failures in DNS terms naming the server (protocols.dns.mx.describe);
    `dns SPF example.org IP`: spf_main."""
    import ipaddress
    from protocols.dns import codec as dnsproto
    from protocols.dns.mx import describe
    from protocols.dns.resolver import DnsError
    ips = ip if isinstance(ip, list) else [ip] if ip else []     # --ip and the positional (_Addresses)
    if qtype == "CHECK" and not (sender or helo):
        return dns_check_main(cfg, name, ips, resolv_conf)
    ip = ips[0] if len(ips) == 1 else " ".join(ips) or None
    if qtype == "SPF":
        return spf_main(cfg, name, ip, sender, helo, resolv_conf)
    if qtype == "DMARC" and not (ip or sender or helo):
        return dmarc_main(cfg, name, resolv_conf)
    if ip or sender or helo:
        raise ConfigError(f"dns {qtype} takes one name; an IP address, --sender and --helo are for dns SPF")
    if qtype == "PTR" and _is_ip(name):
        name = ipaddress.ip_address(name).reverse_pointer    # RFC 1035 §3.5, RFC 3596 §2.5
    if qtype == "MX":
        answer = _ask_once(cfg, resolv_conf, lambda resolver, done: resolver.lookup_mx_hosts(name, done), 60)
    else:
        answer = _ask_once(cfg, resolv_conf, lambda resolver, done:
                           resolver.resolve(name, getattr(dnsproto, "TYPE_" + qtype), done), 60)
    if answer is None:
        print(f"{name} {qtype}: no answer from the resolver within 60 s")
        return 1
    if qtype == "TXT" and not isinstance(answer, DnsError):    # RFC 1035 §3.3.14: its strings, quoted
        print("\n".join(" ".join('"%s"' % s.decode("ascii", "backslashreplace").replace('"', '\\"')
                                 for s in rec) for rec in answer.records))
        return 0
    lines, ok = describe(name, qtype, answer)
    print("\n".join(lines))
    return 0 if ok else 1


def _is_ip(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Addresses(argparse.Action):
    """`dns SPF DOMAIN IP` and `dns check DOMAIN --ip A --ip B` share ``args.ip``:
    a list of what was given (an absent positional leaves --ip's alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is not None:
            setattr(namespace, self.dest, (getattr(namespace, self.dest, None) or []) + [values])


def dns_parser(sub, common: argparse.ArgumentParser) -> None:
    """`dns`'s arguments (mailsrv.py's parser; the global options come with ``common``)."""
    dns = sub.add_parser("dns", parents=[common], help="ask our resolver: dns MX|A|AAAA|TXT|PTR NAME; "
                         "dns SPF DOMAIN IP [--sender S] [--helo H]; dns DMARC DOMAIN; "
                         "dns check DOMAIN [--ip ADDR ...]")
    dns.add_argument("qtype", type=str.upper, choices=("MX", "A", "AAAA", "TXT", "PTR", "SPF", "DMARC", "CHECK"))
    dns.add_argument("name")
    dns.add_argument("ip", nargs="?", action=_Addresses, help="SPF: the SMTP client's address (RFC 7208 §4.1 <ip>)")
    dns.add_argument("--ip", dest="ip", action=_Addresses, metavar="ADDR",
                     help="check: this server's public address (repeatable; default: what the hostname resolves to)")
    dns.add_argument("--sender", help="SPF: the MAIL FROM address (default postmaster@DOMAIN)")
    dns.add_argument("--helo", help="SPF: the HELO/EHLO name (for %%{h})")


def dns_check_main(cfg: Config, domain: str, given: List[str], resolv_conf: str) -> int:
    """`dns check DOMAIN [--ip ADDR ...]`: the records DOMAIN should publish
    for this server, what DNS has, what differs (protocols/dnscheck.py).
    Exit 0 when every required record is ok."""
    from protocols import dnscheck
    from protocols.dns.resolver import Answer
    from store.datadir import DataDirError
    from store.dkimkeys import list_keys, valid_name
    domain = domain.lower().rstrip(".")
    if not valid_name(domain) or "." not in domain:
        raise ConfigError(f"dns check {domain!r}: not a domain name")
    try:
        ips = dnscheck.server_ips(given, cfg.listen)
    except ValueError as e:
        raise ConfigError(f"dns check --ip: {e}") from None
    try:
        held = dnscheck.dkim_keys(list_keys(cfg.data_dir).get(domain, []))
    except DataDirError as e:   # names the file
        raise ConfigError(str(e)) from None
    loop = EventLoop()
    resolver = make_resolver(loop, cfg.dns_servers, resolv_conf)[0]
    hostname = cfg.hostname.lower().rstrip(".")
    answers = _ask_all(loop, resolver, dnscheck.queries(domain, hostname, [k[0] for k in held]))
    seen = ips or dnscheck.addresses(hostname, answers)
    answers.update(_ask_all(loop, resolver, dnscheck.ptr_queries(seen)))
    served = dnscheck.served_policy(cfg)
    sts_txt = answers.get(("_mta-sts." + domain, "TXT"))
    published = isinstance(sts_txt, Answer) and any(b"".join(r).startswith(b"v=STSv1") for r in sts_txt.records)
    live = dnscheck.fetch_policy(domain, cfg.mta_sts_cafile or None) if served is not None or published else None
    lines, ok = dnscheck.report(domain, hostname, ips, held, answers,
                                dnscheck.sts_id_for(served, datetime.now().strftime("%Y%m%d")), seen, (served, live))
    print(f"{domain} served by {hostname}: status, record, what DNS has now (publish: the line to add)")
    print("\n".join(lines))
    return 0 if ok else 1


def _ask_all(loop: EventLoop, resolver, questions) -> dict:
    """Ask every (name, type) at once; what came back within 60 s (a missing one reads as 'no answer')."""
    from protocols.dns import codec as dnsproto
    answers: dict = {}
    if not questions:
        return answers

    def asked(key):
        def done(result):
            answers[key] = result
            if len(answers) == len(questions):
                loop.stop()
        return done
    for key in questions:
        resolver.resolve(key[0], getattr(dnsproto, "TYPE_" + key[1]), asked(key))
    if len(answers) < len(questions):
        timer = loop.call_later(60, loop.stop)
        loop.run()
        timer.cancel()
    return answers


def _ask_once(cfg: Config, resolv_conf: str, ask: Callable, limit: Optional[float] = None):
    """``ask(resolver, done)`` on an event loop of its own (not a MailServer: that would
    create the data folder); the result, or None when none came within ``limit`` seconds."""
    loop = EventLoop()
    resolver = make_resolver(loop, cfg.dns_servers, resolv_conf)[0]
    out: List[object] = []

    def done(result):
        out.append(result)
        loop.stop()
    ask(resolver, done)
    if not out:
        if limit is not None:
            loop.call_later(limit, loop.stop)
        loop.run()
    return out[0] if out else None


def dmarc_main(cfg: Config, domain: str, resolv_conf: str) -> int:
    """`dns DMARC DOMAIN`: the DMARC record that applies to mail from DOMAIN
    (RFC 7489 §6.6.3), where it was found, and the organizational domain of
    the DNS tree walk (protocols/dmarc.py).  Exit 0 when a usable record applies."""
    from protocols import dmarc
    found = _ask_once(cfg, resolv_conf, lambda resolver, done: dmarc.DmarcCheck(dmarc.discover(domain), resolver, done).start())
    lines, ok = dmarc.describe(domain, found)
    print("\n".join(lines))
    return 0 if ok else 1


def spf_main(cfg: Config, domain: str, ip: Optional[str], sender: Optional[str], helo: Optional[str],
             resolv_conf: str) -> int:
    """`dns SPF DOMAIN IP [--sender S] [--helo H]`: check_host() of RFC 7208
    §4 through our resolver; prints the result, the matching mechanism, the
    explanation (§6.2) or the problem, and the Received-SPF field (§9.1).
    Exit 0 when a result was found (whatever it is), 2 on bad arguments."""
    from protocols import spf
    from protocols.spf_header import received_spf
    if not ip or not _is_ip(ip.strip("[]")):
        raise ConfigError(f"dns SPF {domain}: give the client's IP address after the domain, not {ip!r}")
    receiver = cfg.hostname or "unknown"
    res = _ask_once(cfg, resolv_conf, lambda resolver, done: spf.check_host(
        ip, domain, sender or "postmaster@" + domain, helo or "", resolver, done, receiver=receiver))
    print(f"{domain} SPF for {ip}: {res.result}")
    if res.mechanism:
        print(f"mechanism: {res.mechanism}")
    if res.explanation:
        print(f"explanation: {res.explanation}")
    if res.problem:
        print(f"problem: {res.problem}")
    print(received_spf(res, receiver).decode("ascii").rstrip("\r\n").replace("\r\n", "\n"))
    return 0


# -- tls -----------------------------------------------------------------------

def tls_parser(sub, common: argparse.ArgumentParser) -> None:
    """`tls selfsigned`'s options and `dkim`'s subcommands (mailsrv.py's parser; the global ones come with ``common``)."""
    tls_self = sub.add_parser("tls", help="tls selfsigned: make a new self-signed certificate and key in DATA/tls/") \
        .add_subparsers(dest="action", required=True).add_parser("selfsigned", parents=[common])
    tls_self.add_argument("--days", type=int, metavar="N", help="validity in days (default 3650)")
    tls_self.add_argument("--host", metavar="NAME", help="the name in the certificate (default: the host name)")
    tls_self.add_argument("--ip", metavar="ADDR", action="append", default=[], help="an IP address in it too (repeatable)")
    # dkim's keys ride here (protocols/dkim_command.py): mailsrv.py stays under 400 lines
    from protocols.dkim_command import dkim_parser
    dkim_parser(sub, common)
    from protocols.acl_command import acl_parser     # `acl set|get|delete` (RFC 4314), the same way
    acl_parser(sub, common)
    from protocols.acme.command import acme_parser      # ACME's too (protocols/acme/command.py)
    acme_parser(sub, common)


def tls_main(cfg: Config, days: Optional[int], host: Optional[str], ips: List[str], clock: Callable[[], float]) -> int:
    """`tls selfsigned [--days N] [--host NAME] [--ip ADDR]`: a new key and
    self-signed certificate in DATA/tls/ (DATA/tls/<host>/ with shared_data;
    protocols/selfsigned.py); a running server takes it on SIGHUP."""
    from protocols import selfsigned
    from store.tlsfiles import tls_folder
    from protocols.crypto.x509 import DEFAULT_DAYS
    if days is not None and not 1 <= days <= 36500:
        raise ConfigError(f"--days {days}: give a number of days from 1 to 36500")
    directory = tls_folder(cfg.data_dir, cfg.shared_data, cfg.hostname)     # the server's (per host: shared_data)
    made = selfsigned.ensure(host or cfg.hostname, directory, clock, days=days or DEFAULT_DAYS, ips=ips, force=True,
                             names=[cfg.hostname])     # the server makes it again at start if its name is not in it
    print(f"certificate {made.cert}\nkey {made.key}\nvalid until {made.not_after:%Y-%m-%d %H:%M} UTC"
          f"\nSHA-256 fingerprint {made.fingerprint}")
    if cfg.tls_cert:
        print(f"mailsrv: note: tls_cert is set ({cfg.tls_cert}): the server uses that one, not this", file=sys.stderr)
    return 0


# -- rfc -----------------------------------------------------------------------

def source_citations() -> list:
    """Every RFC citation in the code (protocols/, store/, mailsrv.py), for
    `rfc` and its test; protocols/rfcindex.py does the reading of the text."""
    from protocols import rfcindex
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
