"""The subcommands of ``mailsrv.py``: serve's signals and start-up lines, user,
alias, queue, dns, tls, rfc.

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
import signal
import sys
from datetime import datetime
from typing import Callable, List, Optional

from protocols.config import Config, ConfigError
from protocols.loop import EventLoop
from protocols import logtarget
from protocols.startup import describe, make_resolver, stop_line
from store.datadir import lock_or_holder
from store.users import AliasDB, UserDB, normalize_address

log = logging.getLogger("mailsrv")


# -- serve: the server mailsrv.py built, its signals, its start-up lines --------

def serve(server, reread: Callable[[], Config], log_handler) -> int:
    """Bind, handle the signals, print the start-up lines, run until SIGTERM/SIGINT.
    ``reread`` loads the configuration again for SIGHUP."""
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

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, lambda _s, _f: server.loop.call_soon_threadsafe(reload))
    signal.signal(signal.SIGUSR1, lambda _s, _f: server.loop.call_soon_threadsafe(server.queue_control))
    signal.signal(signal.SIGUSR2, lambda _s, _f: server.loop.call_soon_threadsafe(server.backend.delivery.pickup.kick))
    # once, on stdout, now that signals are handled: listeners first (scripts wait for them), then the rest
    for line in server.listening_lines() + describe(cfg, server.backend.directory, cfg.data_dir):
        print(line, flush=True)
        if cfg.log_target != "stderr":       # on a terminal they would show twice; a log file wants them
            log.info("%s", line)
    print(stop_line(os.getpid()), flush=True)
    server.serve_forever()
    log.info("stopped")
    return 0


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
    lock, pid = lock_or_holder(cfg.data_dir)   # signal only the process holding the lock
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

def dns_main(cfg: Config, qtype: str, name: str, resolv_conf: str) -> int:
    """`dns MX example.org`: what our own resolver finds (RFC 1035, RFC 5321 §5.1),
    failures in DNS terms naming the server (protocols.dns.mx.describe)."""
    from protocols.dns import codec as dnsproto
    from protocols.dns.mx import describe
    loop = EventLoop()          # not a MailServer: that would create the data folder
    resolver = make_resolver(loop, cfg.dns_servers, resolv_conf)[0]
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


# -- tls -----------------------------------------------------------------------

def tls_parser(sub, common: argparse.ArgumentParser) -> None:
    """`tls selfsigned`'s options (mailsrv.py's parser; the global ones come with ``common``)."""
    tls_self = sub.add_parser("tls", help="tls selfsigned: make a new self-signed certificate and key in DATA/tls/") \
        .add_subparsers(dest="action", required=True).add_parser("selfsigned", parents=[common])
    tls_self.add_argument("--days", type=int, metavar="N", help="validity in days (default 3650)")
    tls_self.add_argument("--host", metavar="NAME", help="the name in the certificate (default: the host name)")
    tls_self.add_argument("--ip", metavar="ADDR", action="append", default=[], help="an IP address in it too (repeatable)")


def tls_main(cfg: Config, days: Optional[int], host: Optional[str], ips: List[str], clock: Callable[[], float]) -> int:
    """`tls selfsigned [--days N] [--host NAME] [--ip ADDR]`: a new key and
    self-signed certificate in DATA/tls/ (protocols/selfsigned.py); a running
    server takes it on SIGHUP."""
    from protocols import selfsigned
    from protocols.crypto.x509 import DEFAULT_DAYS
    if days is not None and not 1 <= days <= 36500:
        raise ConfigError(f"--days {days}: give a number of days from 1 to 36500")
    directory = os.path.join(cfg.data_dir, selfsigned.TLS_DIR)
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
