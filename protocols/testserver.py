"""The in-process test mail server (issue 11): ``from mailsrv import TestServer``.

::

    with TestServer() as mail:          # free ports on 127.0.0.1, a temporary folder, its own thread
        send_with_my_app(host="127.0.0.1", port=mail.smtp_port)
        msg = mail.wait_for(to="bob@example.org", subject="Welcome", timeout=5)
        assert "activate" in msg.get_body(("plain",)).get_content()

A ``MailServer`` (mailsrv.py; handed in as ``server_class`` by the subclass
mailsrv.py exports, since protocols/ never imports the entry point) in
catch-all mode (protocols/backend/catchall.py) on free ports, its event loop
in its own thread.  Every method is called from the test's thread: it asks the
loop thread (``call_soon_threadsafe``, protocols/loop_sync.py) and waits for
the answer; what was caught comes from the catalog (protocols/backend/
caught.py).  Messages come back as ``email.message.EmailMessage``
(``email.policy.default``), oldest first.

Filters, all optional and ANDed: ``to`` -- the message was delivered to this
address (its mailbox, case-insensitive; text without "@" is a substring of the
mailbox, "example.org" finds that domain's); ``from_`` and ``subject`` --
case-insensitive substrings of the envelope sender or From field, and of the
Subject field.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
import shutil
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from protocols import selfsigned
from protocols.backend.caught import matches
from protocols.backend.contracts import CaughtMessage
from protocols.base import new_id
from protocols.config import KEYS, Config
from protocols.loop_sync import call_and_wait, monotonic
from protocols.smtp.state import Envelope
from store.users import normalize_address

# Seconds a call into the server waits for its event loop before it gives up
# (ours: a listing of a few thousand messages takes well under a second).
CALL_TIMEOUT = 30.0
# Seconds ``stop`` lets open connections finish (their sessions are told to end at once);
# ours: a test's client is on loopback, a second is plenty.
STOP_GRACE = 1.0
# Messages named in a wait_for failure, the newest (the rest are counted); ours: a screenful.
SHOWN_IN_FAILURE = 10

# What catch-all mode changes from the product's defaults, for `test-server` and TestServer.
TEST_SERVER_VALUES: Dict[str, str] = {
    "catch_all": "yes",
    "hostname": "localhost",            # GreenMail's; --hostname changes it
    "sender_login_match": "no",         # an app logs in as one address and sends as another
    # A test suite tries wrong passwords on purpose: no delay, no lockout of 127.0.0.1.
    "auth_failure_delay": "0",
    "auth_max_failures": "1000000",
    "auth_account_max_failures": "1000000",
}
# The in-process server's self-signed certificate: Ed25519, made in milliseconds, so a
# test process starts its first TestServer well under a second (an RSA key takes about one);
# TLS 1.3 clients (Python's ssl, OpenSSL, Go, Java 15+) take it.  `test-server` on the
# command line keeps RSA, for desktop clients.  tls_self_signed_type="rsa" changes it.
IN_PROCESS_VALUES: Dict[str, str] = {"tls_self_signed_type": "ed25519"}

# GreenMail's port layout for `test-server --ports-base N` (3000: 3025 smtp, 3110 pop3,
# 3143 imap, 3465 smtps, 3995 pop3s, 3993 imaps); submission (GreenMail has none)
# gets N+587 and the web page (protocols/http/, when present) N+80.
PORT_OFFSETS = {"smtp_port": 25, "pop3_port": 110, "imap_port": 143, "smtps_port": 465,
                "pop3s_port": 995, "imaps_port": 993, "submission_port": 587, "http_port": 80}


def ports_from_base(base: int) -> Dict[str, str]:
    """Every listener's port key for ``--ports-base`` (0: free ports; a listener
    without an offset here gets a free port too); ValueError beyond 65535."""
    out = {}
    for key, (kind, _d, _l, _c) in KEYS.items():
        if kind == "port":
            port = base + PORT_OFFSETS[key] if base and key in PORT_OFFSETS else 0
            if not 0 <= port <= 65535:
                raise ValueError(f"--ports-base {base} gives {key} the port {port}, beyond 65535")
            out[key] = str(port)
    return out


class WaitTimeout(TimeoutError, AssertionError):
    """``wait_for`` did not see what it waited for (a test failure, not an error)."""


@dataclass(frozen=True)
class Submitted:
    """One message a program submitted (SMTP, submission, SMTPS or sendmail), as ``sent()`` lists it."""
    mail_from: str
    rcpt_to: Tuple[str, ...]
    auth_user: Optional[str]
    tls: bool
    helo: str
    listener: str
    size: int           # octets as stored in the first mailbox (with Return-Path)
    subject: str
    peer_ip: str
    queue_id: str
    received: float


def _summary(msg: CaughtMessage) -> str:
    return "  to %s from <%s> subject %r" % (msg.mailbox, msg.mail_from or msg.header_from, msg.subject)


class TestServer:
    """The test mail server in this process (module docstring)."""

    __test__ = False        # pytest: not a test class
    server_class = None     # mailsrv.MailServer (mailsrv.TestServer sets it)
    clock = None            # time.time, for the self-signed certificate's validity (mailsrv.TestServer sets it)

    def __init__(self, password: str = "", any_password: bool = False, data_dir: Optional[str] = None,
                 host: str = "127.0.0.1", tls_cert: str = "", tls_key: str = "", **config: object):
        """``password``: of every address (default: the address itself);
        ``any_password``: any; ``data_dir``: kept (default: a temporary folder
        removed by ``stop``); ``config``: more configuration keys."""
        values: Dict[str, object] = dict(TEST_SERVER_VALUES, **IN_PROCESS_VALUES)
        values.update(ports_from_base(0))
        values.update(listen=host, catch_all_password=password, catch_all_any_password=any_password,
                      tls_cert=tls_cert, tls_key=tls_key)
        values.update(config)
        self._values = values
        self._data_dir = data_dir
        self._tmp: Optional[str] = None
        self.host = host
        self.server = None
        self.ports: Dict[str, int] = {}

    # -- life cycle ------------------------------------------------------------
    def start(self) -> "TestServer":
        if self.server_class is None:
            raise TypeError("use mailsrv.TestServer (it knows the MailServer to run)")
        if self._data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="mailsrv-testserver-")
        values = dict(self._values, data_dir=self._data_dir or self._tmp)
        try:
            # no lookup of this machine's names: the host name is given, and starting stays fast
            config = Config(values, names=(lambda: "localhost", lambda: "localhost"))
            if not config.tls_cert and config.tls_self_signed and self.clock is not None:
                # one self-signed pair per process and host name, not one per data folder:
                # a start stays a few milliseconds (protocols/selfsigned.py self_signed)
                cert, key = selfsigned.self_signed(config.hostname, None, self.clock,
                                                   key_type=config.tls_self_signed_type)
                config = Config(dict(values, tls_cert=cert, tls_key=key), names=(lambda: "localhost", lambda: "localhost"))
            self.server = self.server_class(config)
            self.server.start()
        except BaseException:
            self._cleanup()
            raise
        self.ports = dict(self.server.ports)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=STOP_GRACE)
            self.server = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0)
            self.server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def data_dir(self) -> str:
        return self._data_dir or self._tmp or ""

    @property
    def backend(self):
        return self.server.backend

    # the listeners' ports (None: not listening)
    smtp_port = property(lambda self: self.ports.get("smtp"))
    submission_port = property(lambda self: self.ports.get("submission"))
    smtps_port = property(lambda self: self.ports.get("smtps"))
    pop3_port = property(lambda self: self.ports.get("pop3"))
    pop3s_port = property(lambda self: self.ports.get("pop3s"))
    imap_port = property(lambda self: self.ports.get("imap"))
    imaps_port = property(lambda self: self.ports.get("imaps"))
    http_port = property(lambda self: self.ports.get("http"))

    # -- calls into the loop thread --------------------------------------------
    def _call(self, start, timeout: float = CALL_TIMEOUT):
        if self.server is None:
            raise RuntimeError("the TestServer is not running (use it in a with block, or call start())")
        return call_and_wait(self.server.loop, start, timeout)

    @staticmethod
    def _filters(to, from_, subject) -> Tuple[Dict[str, str], Callable[[CaughtMessage], bool]]:
        """The catalog's query (from, subject) and the test of the mailbox (``to``):
        an address names one mailbox; text without "@" ("example.org") is a substring."""
        query = {k: v for k, v in (("from", from_), ("subject", subject)) if v}
        if not to:
            return query, lambda msg: True
        if "@" not in to:
            return query, lambda msg: to.lower() in msg.mailbox
        try:
            mailbox = normalize_address(to)
        except ValueError:
            raise ValueError(f"to= is not an address a mailbox can have: {to!r}") from None
        return query, lambda msg: msg.mailbox == mailbox

    def caught(self, to: Optional[str] = None, from_: Optional[str] = None,
               subject: Optional[str] = None) -> List[CaughtMessage]:
        """What was caught (the catalog's records, with the envelope), oldest first."""
        query, in_mailbox = self._filters(to, from_, subject)
        found = self._call(lambda done: self.backend.caught.list_caught(query, 0, done))
        return [m for m in reversed(found) if in_mailbox(m)]

    def _parsed(self, found: Sequence[CaughtMessage]) -> List[EmailMessage]:
        raws = self._call(lambda done: self.backend.caught.read_many([m.id for m in found], done))
        return [email.message_from_bytes(raw, policy=email.policy.default) for raw in raws if raw is not None]

    def messages(self, to: Optional[str] = None, from_: Optional[str] = None,
                 subject: Optional[str] = None) -> List[EmailMessage]:
        """The caught messages that match, oldest first."""
        return self._parsed(self.caught(to, from_, subject))

    def raw(self, to: Optional[str] = None, from_: Optional[str] = None, subject: Optional[str] = None) -> bytes:
        """The newest matching message as stored, in CRLF form; AssertionError if none."""
        found = self.caught(to, from_, subject)
        if found:
            raws = self._call(lambda done: self.backend.caught.read_many([found[-1].id], done))
            if raws[0] is not None:
                return raws[0]
        raise AssertionError("no caught message matches %s" % self._describe(to, from_, subject))

    @staticmethod
    def _describe(to, from_, subject) -> str:
        parts = ["%s=%r" % (n, v) for n, v in (("to", to), ("from_", from_), ("subject", subject)) if v]
        return " ".join(parts) or "(any)"

    def wait_for(self, count: int = 1, timeout: float = 5.0, to: Optional[str] = None,
                 from_: Optional[str] = None, subject: Optional[str] = None):
        """Wait (on the catalog's news, not a poll) until ``count`` matching messages
        were caught: the newest of them when ``count`` is 1, else all of them oldest
        first.  ``WaitTimeout`` (an AssertionError and a TimeoutError) names what was
        expected and what was caught."""
        if count < 1:
            raise ValueError(f"wait_for: count must be 1 or more, not {count!r}")
        query, in_mailbox = self._filters(to, from_, subject)
        catalog = self.backend.caught
        state: Dict[str, object] = {"cancel": None}

        def give_up() -> None:      # on the loop thread, after start (both come in order)
            state["answered"] = True
            if state["cancel"] is not None:
                state["cancel"]()

        def start(done) -> None:
            seen: Dict[str, CaughtMessage] = {}

            def consider(msg: CaughtMessage) -> None:
                if state.get("answered") or not in_mailbox(msg) or not matches(msg, query):
                    return
                seen[msg.id] = msg
                if len(seen) >= count:
                    state["answered"] = True
                    state["cancel"]()
                    done(sorted(seen.values(), key=lambda m: (m.received, m.id)))

            def listed(result) -> None:
                if isinstance(result, BaseException):
                    state["cancel"]()
                    done(result)
                    return
                for msg in result:
                    consider(msg)
            state["cancel"] = catalog.watch_caught(consider)     # first: nothing slips between
            catalog.list_caught(query, 0, listed)

        began = monotonic()
        try:
            found = self._call(start, timeout)
        except TimeoutError:
            self.server.loop.call_soon_threadsafe(give_up)
            raise WaitTimeout(self._timeout_text(count, timeout, to, from_, subject)) from None
        messages = self._parsed(found)
        if len(messages) < count:      # deleted between the news and the read: look again
            return self.wait_for(count, max(0.0, timeout - (monotonic() - began)), to, from_, subject)
        return messages[-1] if count == 1 else messages

    def _timeout_text(self, count, timeout, to, from_, subject) -> str:
        everything = self.caught()
        lines = ["waited %.1f s for %d message(s) with %s; caught %d:" % (
            timeout, count, self._describe(to, from_, subject), len(everything))]
        lines += [_summary(m) for m in everything[-SHOWN_IN_FAILURE:]]
        if len(everything) > SHOWN_IN_FAILURE:
            lines.append("  (%d older not shown)" % (len(everything) - SHOWN_IN_FAILURE))
        return "\n".join(lines)

    def sent(self) -> List[Submitted]:
        """What programs submitted over SMTP (or sendmail), with the envelope, oldest first."""
        records = self._call(lambda done: self.backend.caught.submitted(done))
        return [Submitted(mail_from=r.get("mail_from") or "", rcpt_to=tuple(r.get("rcpt_to") or ()),
                          auth_user=r.get("auth_user"), tls=bool(r.get("tls")), helo=r.get("helo") or "",
                          listener=r.get("listener") or "", size=int(r.get("size") or 0),
                          subject=r.get("subject") or "", peer_ip=r.get("peer_ip") or "",
                          queue_id=r.get("queue_id") or "", received=float(r.get("received") or 0))
                for r in records]

    # -- injected faults (protocols/faults.py, README "Fault injection"): thread-safe, here as
    # on ``backend.faults``; each returns the rule it added, ``reset()`` clears them all
    @property
    def faults(self):
        faults = getattr(self.backend, "faults", None)
        if faults is None:
            raise RuntimeError("this server has no fault injection (protocols/faults.py)")
        return faults

    def fail(self, command: str, **rule) -> Dict[str, object]:
        """``fail("RCPT", code=451, times=2)``, ``fail("MAIL", code=550, when=lambda env: ...)``."""
        return self.faults.fail(command, **rule)

    def delay(self, command: str, seconds: float, **rule) -> Dict[str, object]:
        return self.faults.delay(command, seconds, **rule)

    def disconnect(self, command: str, **rule) -> Dict[str, object]:
        return self.faults.disconnect(command, **rule)

    def greylist(self, **rule) -> Dict[str, object]:
        return self.faults.greylist(**rule)

    def tls_required(self, **rule) -> Dict[str, object]:
        return self.faults.tls_required(**rule)

    # -- changing what the server holds ----------------------------------------
    def reset(self) -> int:
        """Delete every caught message and every record of what was sent (and the
        injected faults, when the server has them); returns how many messages went."""
        count = self._call(lambda done: self.backend.caught.delete_all_caught(done))
        faults = getattr(self.backend, "faults", None)
        if faults is not None:
            self._call(lambda done: done(faults.reset()))
        return count

    def add_user(self, address: str, password: str) -> None:
        """A user with its own password (other addresses keep the mode's password)."""
        backend = self.backend

        def start(done) -> None:
            def added(result) -> None:
                backend.auth.users_changed()
                done(result)
            backend.loop.run_in_thread(lambda: backend.add_user(address, password), added)
        self._call(start)

    def deliver(self, raw: Union[bytes, str, EmailMessage], to: Union[str, Sequence[str], None] = None) -> None:
        """Store a message without SMTP (listener "deliver"), in the mailbox of each of
        ``to`` (default: the To, Cc and Bcc fields); readable over POP3 and IMAP at once."""
        data = _wire_form(raw)
        if to is None:
            msg = email.message_from_bytes(data, policy=email.policy.default)
            fields = [str(v) for name in ("to", "cc", "bcc") for v in msg.get_all(name, [])]
            to = [addr for _name, addr in email.utils.getaddresses(fields) if addr]
        rcpts = [to] if isinstance(to, str) else list(to)
        if not rcpts:
            raise ValueError("deliver: no recipient (give to=, or a To field)")
        backend = self.backend
        targets = []
        for rcpt in rcpts:
            local, _, domain = rcpt.rpartition("@")
            resolved = backend.directory.resolve(local, domain) if local else None
            if not resolved:
                raise ValueError(f"deliver: not an address a mailbox can have: {rcpt!r}")
            targets.append((resolved, []))
        env = Envelope(mail_from="", rcpt_to=rcpts, targets=targets, body="8BITMIME", smtputf8=False,
                       helo="", peer_ip="", auth_user=None, tls=False, listener="deliver", queue_id=new_id())
        reply = self._call(lambda done: backend.deliver(env, data, done))
        if reply[0] != 250:
            raise RuntimeError("deliver: %d %s %s" % reply)


def _wire_form(raw: Union[bytes, str, EmailMessage]) -> bytes:
    """The message with CRLF line ends, as SMTP would carry it."""
    if isinstance(raw, EmailMessage):
        raw = raw.as_bytes(policy=email.policy.SMTP)
    elif isinstance(raw, str):
        raw = raw.encode("utf-8")
    data = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"
