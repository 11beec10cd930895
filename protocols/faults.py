"""Fault injection for the test server (issue 11): the rules and the decision.

A developer's tests ask the server to misbehave on purpose, per protocol and
command, the way real servers do: ``fail("RCPT", code=451, times=2)``,
``delay("DATA", seconds=3)``, ``disconnect("DATA")``, ``greylist()``,
``tls_required()``.  ``Faults`` keeps the rules (the ``FaultControl``
contract of protocols/backend/contracts.py, used by the in-process API and
the HTTP API) and answers the sessions: at each command the SMTP, POP3 and
IMAP sessions ask their backend ``fault(protocol, command, view)``, which is
``decide`` here, and get ``None`` (no rule fires: the command runs as usual)
or a ``protocols.base.FaultAction`` for the session to carry out:

``fail``        the reply in the rule's place, the command is not run
                (SMTP ``451 4.3.0`` unless a code is given; POP3
                ``-ERR [SYS/TEMP]``; IMAP ``NO [UNAVAILABLE]``);
``delay``       the command runs ``seconds`` later; meanwhile the session
                holds its input (pipelined commands stay in order) and the
                loop serves every other connection;
``disconnect``  the connection drops without a reply; for SMTP DATA and BDAT
                once the client has sent the whole message, before the
                reply, and nothing is stored (the sink is aborted).

Threads: the rules in force are one immutable tuple (``active``), replaced
whole by ``add_rule`` / ``remove_rule`` / ``reset`` from any thread (a test's
thread, or the HTTP session on the loop thread), never mutated in place; the
loop thread, the only caller of ``decide``, reads whichever tuple is current.
What changes as rules fire (hits, the count of ``times`` left, greylist
triples) lives in each rule and is written by the loop thread alone; a rule
whose count reached 0 is skipped at once and dropped from the tuple at the
next change.  Two control calls racing on two threads is the one case left
unordered: each is atomic, the later replaces the tuple (protocols/ may not
import threading, tests/test_layering.py).

Pure: no clock but the one injected, no I/O; each fault that fires logs one
line on ``mailsrv.faults`` (never the command's arguments: a password may
be among them).
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from protocols.base import FaultAction, FaultView

log = logging.getLogger("mailsrv.faults")

PROTOCOLS = ("smtp", "pop3", "imap")
ACTIONS = ("fail", "delay", "disconnect", "greylist", "tls_required")
RULE_KEYS = frozenset(["id", "protocol", "command", "action", "code", "text", "seconds",
                       "times", "hits", "when"])
# "LOGIN" means every way to log in with a protocol (IMAP's own LOGIN command too).
# (POP3: where the password is checked; USER never fails, RFC 1939 §7.)
LOGIN_COMMANDS = {"smtp": frozenset(["AUTH"]), "pop3": frozenset(["PASS", "AUTH"]),
                  "imap": frozenset(["LOGIN", "AUTHENTICATE"])}
# tls_required refuses: SMTP every command but NOOP, EHLO, STARTTLS, QUIT (RFC 3207 §4);
# POP3 and IMAP the commands that send a name or password (RFC 2595 §2.3, RFC 9051 §6.2.3).
TLS_FREE_SMTP = frozenset(["NOOP", "EHLO", "STARTTLS", "QUIT"])
# DEVIATION(RFC 9051 §6.2.3): CAPABILITY still lists no LOGINDISABLED (nor CAPA
# drops USER) under tls_required: the rule plays a server that refuses at the
# command, which clients must handle anyway; the capability lists stay the sessions'.
TLS_COMMANDS = {"pop3": frozenset(["USER", "PASS", "AUTH"]), "imap": LOGIN_COMMANDS["imap"]}
# Longest delay a rule may ask: ten minutes, the shortest idle timeout of the
# three protocols (RFC 1939 §3); longer and the client's own timer decides.
MAX_DELAY_SECONDS = 600.0
# Greylist triples remembered per rule (postgrey keeps a database; a test
# server needs no more; the oldest are forgotten first, local policy).
MAX_GREYLIST_TRIPLES = 10000
# Reply text: printable ASCII, short enough for any reply line (RFC 5321
# §4.5.3.1.5: 512 octets with the code; local policy below it).
MAX_TEXT = 200
_TEXT_RE = re.compile(r"[\x20-\x7e]*\Z")
_ENHANCED_RE = re.compile(r"([245])\.\d{1,3}\.\d{1,3} ")       # RFC 3463 §2
_RESP_CODE_RE = re.compile(r"[A-Z][A-Z0-9/-]{0,39}\Z")          # RFC 2449 §8, RFC 9051 §7.1
# RFC 5321 §4.2.3 (and RFC 4954 §6 for AUTH) texts for the usual codes.
SMTP_TEXTS = {421: "Service not available, closing transmission channel",
              450: "Requested mail action not taken: mailbox unavailable",
              451: "Requested action aborted: local error in processing",
              452: "Requested action not taken: insufficient system storage",
              454: "Temporary authentication failure",
              535: "Authentication credentials invalid",
              550: "Requested action not taken: mailbox unavailable",
              552: "Requested mail action aborted: exceeded storage allocation",
              553: "Requested action not taken: mailbox name not allowed",
              554: "Transaction failed"}


def _verbs() -> Dict[str, FrozenSet[str]]:
    """Every command of each protocol, from the sessions' own tables (read
    when a rule is added, so importing this module loads no session)."""
    from protocols.imap.session import COMMANDS as IMAP
    from protocols.pop3.server import COMMANDS as POP3
    from protocols.smtp.server import COMMANDS as SMTP
    return {"smtp": frozenset(SMTP), "pop3": frozenset(v.decode("ascii") for v in POP3),
            "imap": frozenset(IMAP)}


class _Rule:
    """One rule: what the caller set (fixed), and what firing changes (the
    loop thread's: ``hits``, ``left``, ``seen``)."""

    def __init__(self, rule_id: str, fields: dict, commands: Optional[FrozenSet[str]]):
        self.id = rule_id
        self.protocol: Optional[str] = fields["protocol"]
        self.command: str = fields["command"]
        self.action: str = fields["action"]
        self.code = fields["code"]
        self.text: Optional[str] = fields["text"]
        self.seconds: float = fields["seconds"]
        self.when: Optional[Callable[[FaultView], object]] = fields["when"]
        self.commands = commands          # None: tls_required's per-protocol set
        self.left: Optional[int] = fields["times"]
        self.hits = 0
        self.seen: Dict[Tuple[str, str, str], float] = {}

    def applies(self, protocol: str, command: str) -> bool:
        if self.left == 0 or (self.protocol is not None and self.protocol != protocol):
            return False
        if self.commands is not None:
            return command in self.commands
        if protocol == "smtp":
            return command not in TLS_FREE_SMTP
        return command in TLS_COMMANDS[protocol]

    def as_dict(self) -> Dict[str, object]:
        when = None if self.when is None else getattr(self.when, "__qualname__", repr(self.when))
        return {"id": self.id, "protocol": self.protocol, "command": self.command,
                "action": self.action, "code": self.code, "text": self.text,
                "seconds": self.seconds, "times": self.left, "hits": self.hits, "when": when}


class Faults:
    """The injected faults of one server (``FaultControl``), and ``decide``."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0):
        self.active: Tuple[_Rule, ...] = ()   # the sessions' one check: empty is falsy
        self._clock = clock
        self._ids = itertools.count(1)

    # -- FaultControl (any thread) -------------------------------------------

    def rules(self) -> List[Dict[str, object]]:
        return [r.as_dict() for r in self.active if r.left != 0]

    def add_rule(self, rule: Dict[str, object]) -> Dict[str, object]:
        fields, commands = _validate(rule)
        new = _Rule(str(next(self._ids)), fields, commands)
        self.active = tuple(r for r in self.active if r.left != 0) + (new,)
        return new.as_dict()

    def remove_rule(self, rule_id: str) -> bool:
        before = self.active
        self.active = tuple(r for r in before if r.id != str(rule_id) and r.left != 0)
        return any(r.id == str(rule_id) and r.left != 0 for r in before)

    def reset(self) -> None:
        self.active = ()

    # -- the friendly forms (the in-process API) ---------------------------------

    def fail(self, command: str, code=None, text: Optional[str] = None, times: Optional[int] = None,
             when=None, protocol: Optional[str] = None) -> Dict[str, object]:
        """``command`` answered with an error instead of being run."""
        return self.add_rule({"action": "fail", "command": command, "code": code, "text": text,
                              "times": times, "when": when, "protocol": protocol})

    def delay(self, command: str, seconds: float, times: Optional[int] = None, when=None,
              protocol: Optional[str] = None) -> Dict[str, object]:
        """``command`` run ``seconds`` late; other connections are served meanwhile."""
        return self.add_rule({"action": "delay", "command": command, "seconds": seconds,
                              "times": times, "when": when, "protocol": protocol})

    def disconnect(self, command: str, times: Optional[int] = None, when=None,
                   protocol: Optional[str] = None) -> Dict[str, object]:
        """The connection drops at ``command`` (DATA/BDAT: after the message, before the reply)."""
        return self.add_rule({"action": "disconnect", "command": command, "times": times,
                              "when": when, "protocol": protocol})

    def greylist(self, seconds: float = 0.0, code=None, text: Optional[str] = None,
                 times: Optional[int] = None, when=None) -> Dict[str, object]:
        """The first RCPT of each (client address, MAIL FROM, RCPT TO) gets
        451 4.7.1; a retry ``seconds`` or more later is accepted (postgrey)."""
        return self.add_rule({"action": "greylist", "command": "RCPT", "protocol": "smtp",
                              "seconds": seconds, "code": code, "text": text, "times": times,
                              "when": when})

    def tls_required(self, protocol: Optional[str] = None, times: Optional[int] = None,
                     when=None) -> Dict[str, object]:
        """Mail and logins refused until STARTTLS/STLS (every protocol unless ``protocol``)."""
        return self.add_rule({"action": "tls_required", "command": "", "protocol": protocol,
                              "times": times, "when": when})

    # -- the sessions' question (loop thread) --------------------------------------

    def decide(self, protocol: str, command: str, view: FaultView) -> Optional[FaultAction]:
        """The first rule (oldest first) that fires on this command, as an action."""
        for rule in self.active:
            if not rule.applies(protocol, command) or not _holds(rule, view):
                continue
            action = _fire(rule, protocol, command, view, self._clock())
            if action is None:
                continue
            rule.hits += 1
            if rule.left is not None:
                rule.left -= 1
            log.info("fault %s %s %s%s client=%s rule=%s", protocol, command, rule.action,
                     _shown(action), view.client_ip, rule.id)
            return action
        return None


def _holds(rule: _Rule, view: FaultView) -> bool:
    if rule.when is None:
        return True
    try:
        return bool(rule.when(view))
    except Exception as exc:    # the test's own function: its error is not the session's
        log.warning("fault rule %s: when(...) raised %r; rule not applied", rule.id, exc)
        return False


def _shown(action: FaultAction) -> str:
    if action.kind == "fail":
        return " " + action.reply.decode("ascii").rstrip("\r\n")
    return " %gs" % action.seconds if action.kind == "delay" else ""


def _fire(rule: _Rule, protocol: str, command: str, view: FaultView, now: float) -> Optional[FaultAction]:
    """What the rule does to this command, or None when it lets it through."""
    if rule.action == "delay":
        return FaultAction("delay", seconds=rule.seconds)
    if rule.action == "disconnect":
        return FaultAction("disconnect")
    if rule.action == "tls_required" and view.tls:
        return None
    if rule.action == "greylist" and not _greylisted(rule, view, now):
        return None
    return _reply(rule, protocol, command)


def _greylisted(rule: _Rule, view: FaultView, now: float) -> bool:
    """RFC 6647 (greylisting): the first attempt of a triple, and any retry
    sooner than ``seconds`` after it, is refused; later ones pass."""
    key = (view.client_ip, view.mail_from.lower(), (view.rcpt_to[-1] if view.rcpt_to else "").lower())
    first = rule.seen.get(key)
    if first is None:
        if len(rule.seen) >= MAX_GREYLIST_TRIPLES:
            del rule.seen[next(iter(rule.seen))]
        rule.seen[key] = now
        return True
    return now - first < rule.seconds


def _reply(rule: _Rule, protocol: str, command: str) -> FaultAction:
    if protocol == "smtp":
        return _smtp_reply(rule, command)
    if protocol == "pop3":
        return _pop3_reply(rule, command)
    return _imap_reply(rule, command)


def _smtp_reply(rule: _Rule, command: str) -> FaultAction:
    """A complete SMTP reply line; an enhanced code (RFC 3463 §2) unless the
    text starts with one; 421 closes the connection (RFC 5321 §3.8)."""
    defaults = {"greylist": (451, "4.7.1", "Greylisted, try again later"),
                # RFC 3207 §4: 530, and 5.7.0 with ENHANCEDSTATUSCODES
                "tls_required": (530, "5.7.0", "Must issue a STARTTLS command first")}
    code, enh, text = defaults.get(rule.action, (451, "", ""))
    code = rule.code if isinstance(rule.code, int) else code
    if rule.action == "fail" and rule.code is None and command == "AUTH":
        code = 454                  # RFC 4954 §6: temporary authentication failure
    cls = str(code)[0]
    if rule.action == "fail" or rule.code is not None:
        if command == "AUTH":       # RFC 4954 §6: 454 4.7.0 / 535 5.7.8
            enh = "4.7.0" if cls == "4" else "5.7.8"
        else:                       # RFC 3463 §3.4: X.3.0 other mail system status
            enh = cls + ".3.0"
    text = rule.text or text or SMTP_TEXTS.get(code, "Injected failure")
    m = _ENHANCED_RE.match(text)
    line = "%d %s\r\n" % (code, text) if m and m.group(1) == cls else "%d %s %s\r\n" % (code, enh, text)
    return FaultAction("fail", line.encode("ascii"), close=code == 421)


def _pop3_reply(rule: _Rule, command: str) -> FaultAction:
    """``-ERR [code] text`` (RFC 2449 §8, RFC 3206): SYS/TEMP, SYS/PERM, AUTH."""
    if rule.action == "tls_required":
        # RFC 2595 §4 names no response code for it: plain -ERR.
        return FaultAction("fail", b"-ERR %s\r\n" % (rule.text or "Must issue a STLS command first").encode("ascii"))
    code = rule.code
    if code is None or isinstance(code, int):
        permanent = isinstance(code, int) and code >= 500
        code = ("AUTH" if command in LOGIN_COMMANDS["pop3"] else "SYS/PERM") if permanent else "SYS/TEMP"
    texts = {"SYS/TEMP": "Temporary failure, try again later", "SYS/PERM": "Permanent failure",
             "AUTH": "Authentication failed"}
    text = rule.text or texts.get(code, "Failed")
    return FaultAction("fail", ("-ERR [%s] %s\r\n" % (code, text)).encode("ascii"))


def _imap_reply(rule: _Rule, command: str) -> FaultAction:
    """The tagged reply without its tag (RFC 9051 §7.1; codes of RFC 5530 §3)."""
    status, code = "NO", rule.code
    if rule.action == "tls_required":
        code = "PRIVACYREQUIRED"
    elif code == "BAD":
        status, code = "BAD", None
    elif code is None or code == "NO" or isinstance(code, int):
        permanent = isinstance(code, int) and code >= 500
        code = ("AUTHENTICATIONFAILED" if command in LOGIN_COMMANDS["imap"] else "CANNOT") \
            if permanent else "UNAVAILABLE"
    texts = {"UNAVAILABLE": "Temporarily unavailable, try again later", "CANNOT": "Operation failed",
             "AUTHENTICATIONFAILED": "Authentication failed",
             "PRIVACYREQUIRED": "Must issue a STARTTLS command first", None: "Command refused"}
    text = rule.text or texts.get(code, "Command refused")
    middle = " [%s]" % code if code else ""
    return FaultAction("fail", ("%s%s %s\r\n" % (status, middle, text)).encode("ascii"))


# -- validation: one ValueError naming the key --------------------------------------

def _validate(rule: Dict[str, object]) -> Tuple[dict, Optional[FrozenSet[str]]]:
    if not isinstance(rule, dict):
        raise ValueError("a fault rule is a dict, not %s" % type(rule).__name__)
    unknown = sorted(str(k) for k in rule if k not in RULE_KEYS)
    if unknown:
        raise ValueError("fault rule: unknown key %r (known: %s)" % (unknown[0], ", ".join(sorted(RULE_KEYS))))
    action = rule.get("action")
    if action not in ACTIONS:
        raise ValueError("fault rule: action %r is not one of %s" % (action, ", ".join(ACTIONS)))
    protocol = rule.get("protocol")
    if protocol is not None:
        protocol = str(protocol).lower()
        if protocol not in PROTOCOLS:
            raise ValueError("fault rule: protocol %r is not one of smtp, pop3, imap" % rule.get("protocol"))
    fields = {"action": action, "protocol": protocol, "command": "", "code": None, "text": None,
              "seconds": 0.0, "times": _times(rule.get("times")), "when": rule.get("when")}
    if fields["when"] is not None and not callable(fields["when"]):
        raise ValueError("fault rule: when must be a function of the command's view")
    commands = None
    if action == "greylist":
        if protocol not in (None, "smtp"):
            raise ValueError("fault rule: greylist is SMTP's (RCPT), not %s" % protocol)
        fields.update(protocol="smtp", command="RCPT")
        commands = frozenset(["RCPT"])
    elif action != "tls_required":
        fields["command"], fields["protocol"], commands = _command(rule.get("command"), protocol)
    if action in ("delay", "greylist"):
        fields["seconds"] = _seconds(rule.get("seconds", 0.0 if action == "greylist" else None))
    if action in ("fail", "greylist", "tls_required"):
        fields["code"] = _code(rule.get("code"), fields["protocol"])
        fields["text"] = _text(rule.get("text"))
    else:
        for key in ("code", "text"):
            if rule.get(key) is not None:
                raise ValueError("fault rule: %s applies to fail, greylist and tls_required, not %s" % (key, action))
    return fields, commands


def _command(command, protocol: Optional[str]) -> Tuple[str, str, FrozenSet[str]]:
    """The verb, its protocol (inferred when only one protocol has it), the verbs it covers."""
    if not isinstance(command, str) or not command.strip():
        raise ValueError("fault rule: command is missing (a verb such as RCPT, RETR, FETCH)")
    verb = command.strip().upper()
    if verb == "LOGIN":
        protocol = protocol or "imap"
        return verb, protocol, LOGIN_COMMANDS[protocol]
    verbs = _verbs()
    having = [p for p in PROTOCOLS if verb in verbs[p]]
    if not having:
        raise ValueError("fault rule: command %r is not an SMTP, POP3 or IMAP command" % command)
    if protocol is None:
        if len(having) > 1:
            raise ValueError("fault rule: command %s exists in %s: say which with protocol="
                             % (verb, " and ".join(having)))
        protocol = having[0]
    elif protocol not in having:
        raise ValueError("fault rule: %s has no command %s (%s has)" % (protocol, verb, ", ".join(having)))
    return verb, protocol, frozenset([verb])


def _times(times) -> Optional[int]:
    if times is None:
        return None
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError("fault rule: times must be a whole number of at least 1 (or None: every time), not %r" % (times,))
    return times


def _seconds(seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise ValueError("fault rule: seconds must be a number from 0 to %g, not %r" % (MAX_DELAY_SECONDS, seconds))
    return float(seconds)


def _code(code, protocol: Optional[str]):
    """SMTP: a reply code 400-599 (RFC 5321 §4.2.1); POP3 and IMAP take one too
    (4xx temporary, 5xx permanent), or their own response code ("SYS/PERM",
    "ALERT"; IMAP also "BAD")."""
    if code is None:
        return None
    if isinstance(code, int) and not isinstance(code, bool):
        if not 400 <= code <= 599:
            raise ValueError("fault rule: code %d is not a failure (400-599)" % code)
        return code
    if isinstance(code, str) and protocol in ("pop3", "imap") and _RESP_CODE_RE.match(code.upper()):
        return code.upper()
    if isinstance(code, str) and code.isdigit():
        return _code(int(code), protocol)
    raise ValueError("fault rule: code %r is not a reply code 400-599%s" % (
        code, "" if protocol == "smtp" else " or a response code such as SYS/PERM"))


def _text(text) -> Optional[str]:
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > MAX_TEXT or not _TEXT_RE.match(text):
        raise ValueError("fault rule: text must be printable ASCII of at most %d characters" % MAX_TEXT)
    return text
