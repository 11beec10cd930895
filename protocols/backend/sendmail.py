"""The ``sendmail`` command's grammar: options, message framing, -t recipients.

The subset of Postfix's sendmail(1) that cron, PHP's mail(), git send-email
and monitoring tools use, as pure functions, and at the end the command
itself (``main``: reads stdin, writes the postdrop file, signals the server
and picks the exit code):

    -t           recipients from To:, Cc:, Bcc: (added to those on the command
                 line, as Postfix does); Bcc: and Resent-Bcc: are removed
    -f SENDER    envelope sender (also -fSENDER, and the old -r); "<>" or "" is
                 the null sender
    -F NAME      full name for the From: added when the message has none
    -i, -oi      a line with a lone "." does not end the message
    -bm          read mail from stdin (the default mode)
    -C FILE      mailsrv configuration file (like --config)
    ignored:     -o7 -o8 -om -oXvalue, -o x value, -B type, -N dsn, -R ret,
                 -V envid, -X log, -L label, -U, -v, -odi -odb (Postfix ignores these too)

Exit codes are sysexits.h's (the contract every caller of sendmail checks).
Headers the message lacks (From:, Date:, Message-ID:) are added at the end of
its header section, as Postfix's cleanup(8) does for local submissions
(RFC 5322 §3.6: Date and From are required; RFC 6409 §8 lets an MSA add them).
"""

from __future__ import annotations

import argparse
import email.utils
import errno
import getpass
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from protocols.base import new_id
from protocols.config import Config, ConfigError, load_config
from protocols.message import add_fields, field_value, parse_header, remove_fields
from protocols.smtp.address import AddressError, parse_forward_path, parse_reverse_path
from store import postdrop
from store.datadir import lock_holder, pid_name
from store.users import AliasDB, Directory, UserDB

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

# options followed by a value we accept and ignore (Postfix sendmail(1))
_IGNORED_WITH_VALUE = set("BNRVXLOh")
_IGNORED_FLAGS = set("Uvm")
# RFC 5322 §3.6.3: the destination fields -t reads, and the blind ones it removes
_RCPT_FIELDS = (b"to", b"cc", b"bcc")
_BLIND_FIELDS = (b"bcc", b"resent-bcc")


class SendmailError(Exception):
    """A refusal with its sysexits.h code; the text is one line for stderr."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code


@dataclass
class Options:
    extract: bool = False            # -t
    ignore_dots: bool = False        # -i / -oi
    sender: Optional[str] = None     # -f / -r
    full_name: Optional[str] = None  # -F
    config: Optional[str] = None     # -C / --config
    data: Optional[str] = None       # --data
    recipients: List[str] = field(default_factory=list)


def parse_args(argv: List[str]) -> Options:
    """sendmail's command line; SendmailError(EX_USAGE) for what we do not do."""
    opts = Options()
    i = 0

    def value(rest: str, what: str) -> str:
        nonlocal i
        if rest:
            return rest
        i += 1
        if i >= len(argv):
            raise SendmailError(EX_USAGE, "option %s needs a value" % what)
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg in ("--data", "--config") or arg.startswith(("--data=", "--config=")):
            name, _, rest = arg.partition("=")
            setattr(opts, name[2:], value(rest, name))
        elif not arg.startswith("-") or arg == "-":
            break
        else:
            _option(opts, arg[1], arg[2:], value)
        i += 1
    for arg in argv[i:]:
        opts.recipients.extend(a.strip() for a in arg.split(",") if a.strip())
    return opts


def _option(opts: Options, letter: str, rest: str, value) -> None:
    if letter == "t" and not rest:
        opts.extract = True
    elif letter == "i" and not rest:
        opts.ignore_dots = True
    elif letter in "fr":
        opts.sender = value(rest, "-" + letter)
    elif letter == "F":
        opts.full_name = value(rest, "-F")
    elif letter == "C":
        opts.config = value(rest, "-C")
    elif letter == "b":
        if rest != "m":
            raise SendmailError(EX_USAGE, "-b%s is not supported (only -bm: read a message from stdin)" % rest)
    elif letter == "o":
        if rest == "i":
            opts.ignore_dots = True
        elif not rest:
            value("", "-o")       # "-o x value" (Postfix): the option name...
            value("", "-o x")     # ...and its value, both ignored
    elif letter == "d" or letter in _IGNORED_FLAGS:
        pass                      # -odi/-odb delivery mode, -U, -v, -m
    elif letter in _IGNORED_WITH_VALUE:
        value(rest, "-" + letter)
    else:
        raise SendmailError(EX_USAGE, "unknown option -%s" % letter)


def frame(raw: bytes, ignore_dots: bool) -> bytes:
    """stdin to the message: CRLF line ends; without -i a line with a lone "."
    ends it (traditional sendmail); a last line without newline is completed."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: List[bytes] = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not ignore_dots and line == b".":
            break
        out.append(line)
    return b"".join(line + b"\r\n" for line in out)


def extract(message: bytes) -> Tuple[List[str], bytes]:
    """-t: the addresses in To:, Cc:, Bcc: and the message without Bcc:."""
    head = parse_header(message)
    values = [field_value(raw).decode("utf-8", "replace") for name, raw in head.fields if name in _RCPT_FIELDS]
    addrs = [a for _n, a in email.utils.getaddresses(values) if a]
    return addrs, remove_fields(message, _BLIND_FIELDS, head)


def complete(message: bytes, sender: str, full_name: Optional[str], date: str, msgid: str) -> bytes:
    """Add From:, Date:, Message-ID: where missing, after the last field."""
    head = parse_header(message)
    names = head.names()
    extra: List[bytes] = []
    if b"from" not in names:
        shown = sender or "MAILER-DAEMON"
        extra.append(b"From: " + email.utils.formataddr((full_name or "", shown)).encode("utf-8"))
    if b"date" not in names:
        extra.append(b"Date: " + date.encode("ascii"))
    if b"message-id" not in names:
        extra.append(b"Message-ID: " + msgid.encode("utf-8"))
    return add_fields(message, extra, head)


def address(text: str, default_domain: str, sender: bool = False) -> str:
    """One address in canonical form; a bare name gets ``default_domain``
    (Postfix appends $myorigin); SendmailError(EX_DATAERR) if it is not one."""
    text = text.strip()
    if sender and text in ("", "<>"):
        return ""
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if "@" not in text:
        text = text + "@" + default_domain
    try:
        if sender:
            addr, params = parse_reverse_path("<%s>" % text, smtputf8=True)
        else:
            addr, params = parse_forward_path("<%s>" % text, smtputf8=True)
    except AddressError as e:
        raise SendmailError(EX_DATAERR, "bad address %r: %s" % (text, e.reply_tuple[2])) from None
    if params.strip() or addr is None:
        raise SendmailError(EX_DATAERR, "bad address %r" % text)
    return addr.text


def prepare(opts: Options, raw: bytes, hostname: str, unix_user: str, max_size: int,
            date: str, msgid: str) -> Tuple[str, List[str], bytes]:
    """(sender, recipients, message) from the options and stdin's ``raw`` bytes
    (read up to ``max_size + 1``); SendmailError for what cannot be sent."""
    sender = address(opts.sender if opts.sender is not None else unix_user, hostname, sender=True)
    message = frame(raw, opts.ignore_dots)
    if len(raw) > max_size or len(message) > max_size:
        raise SendmailError(EX_DATAERR, "message larger than max_message_size (%d octets)" % max_size)
    rcpts = list(opts.recipients)
    if opts.extract:
        found, message = extract(message)
        rcpts += found
    rcpts = list(dict.fromkeys(address(r, hostname) for r in rcpts))
    if not rcpts:
        raise SendmailError(EX_USAGE, "no recipients (give them as arguments, or -t to read To/Cc/Bcc)")
    return sender, rcpts, complete(message, sender, opts.full_name, date, msgid)


def exit_code(err: Optional[int]) -> int:
    """sysexits.h for a failed write of the postdrop file.  A full disk is
    EX_CANTCREAT, not EX_TEMPFAIL: PHP's mail() counts 75 as accepted, and the
    message is not."""
    if err in (errno.EACCES, errno.EPERM):
        return EX_NOPERM
    if err in (errno.EAGAIN, errno.EINTR, errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return EX_TEMPFAIL
    if err in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return EX_CANTCREAT
    return EX_OSERR


# -- the command: stdin -> DATA/postdrop/ -> a signal to the running server ----

def main(argv: List[str], clock: Callable[[], float]) -> int:
    """`sendmail [-t] [-f sender] [-i] [-F name] [rcpt...] < message`: into
    DATA/postdrop/ (durably), then a signal to the running server's pick-up;
    with no server running, the server picks it up when it starts.  Exit codes
    of sysexits.h; one line on stderr when not 0.  ``clock`` (time.time, from
    mailsrv.py) names the postdrop file."""
    try:
        return _submit(argv, clock)
    except SendmailError as e:
        print(f"sendmail: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"sendmail: {e}", file=sys.stderr)
        return EX_CONFIG
    except Exception as e:  # a bug: still a sysexits code, never a silent loss
        print(f"sendmail: internal error: {e!r}", file=sys.stderr)
        return EX_SOFTWARE


def _submit(argv: List[str], clock: Callable[[], float]) -> int:
    opts = parse_args(argv)
    cfg = load_config(argparse.Namespace(config=opts.config, data=opts.data))
    data = os.path.abspath(cfg.data_dir)
    if not os.path.isdir(data):
        raise ConfigError(f"no data folder {data} (give --data DIR, or -C FILE with data_dir)")
    raw = sys.stdin.buffer.read(cfg.max_message_size + 1)
    sender, rcpts, message = prepare(opts, raw, cfg.hostname, _unix_user(), cfg.max_message_size,
                                     email.utils.formatdate(localtime=True),
                                     email.utils.make_msgid(domain=cfg.hostname))
    _check_users(cfg, rcpts)
    name = "%d.%d.%s" % (clock(), os.getpid(), new_id(5))
    try:
        postdrop.write(data, name, sender, rcpts, message)
    except OSError as e:
        raise SendmailError(exit_code(e.errno),
                            f"cannot write to {postdrop.drop_dir(data)}: {e.strerror or e}") from None
    pid = lock_holder(data, pid_name(cfg.shared_data, cfg.hostname))   # only the lock's holder
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


def _check_users(cfg: Config, rcpts: List[str]) -> None:
    """EX_NOUSER now for a local address nobody has (when we may read the users)."""
    try:
        directory = Directory(UserDB(cfg.data_dir), AliasDB(cfg.data_dir), cfg.local_domains(),
                              cfg.postmaster or f"postmaster@{cfg.hostname.lower()}")
        for r in rcpts:
            local, _, domain = r.rpartition("@")
            if directory.is_local_domain(domain) and directory.resolve(local, domain) is None:
                raise SendmailError(EX_NOUSER, f"<{r}>: no such user or alias here")
    except OSError:
        pass               # the server checks (and bounces) at pick-up
