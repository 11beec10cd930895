"""In-memory fakes of the test server's contracts (protocols/backend/contracts.py):
``CaughtMail`` and ``FaultControl``, and an HTTP service over them, for the HTTP
session and server tests while the real catalog is built elsewhere.

``FakeCaught`` answers at once, or, with ``deferred`` set, when ``run_pending`` is
called (to test a session waiting for the backend).
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Optional

from protocols import sasl
from protocols.backend.contracts import CaughtMessage
from protocols.http import mimeview

PLAIN = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Hello\r\n"
         b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\nHi Bob\r\n")
MULTI = (b"From: carol@example.org\r\nTo: dave@example.net\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
         b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
         b"--YY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n"
         b"--YY\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
         b"<p>html body</p><script>document.title='PWNED'</script>\r\n--YY--\r\n"
         b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../../etc/pa ss\\\"wd.pdf\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n")


class FakeCaught:
    """``CaughtMail`` over a list (newest last inside, newest first out)."""

    def __init__(self):
        self.items: List[tuple] = []        # (CaughtMessage, raw)
        self.watchers: List[Callable] = []
        self.deferred = False
        self.pending: List[Callable[[], None]] = []
        self._ids = itertools.count(1)

    def _later(self, fn: Callable[[], None]) -> None:
        if self.deferred:
            self.pending.append(fn)
        else:
            fn()

    def run_pending(self) -> None:
        batch, self.pending = self.pending, []
        for fn in batch:
            fn()

    def add(self, raw: bytes, mailbox="bob@example.org", mail_from="alice@example.org",
            rcpt_to=("bob@example.org",), **kw) -> CaughtMessage:
        msg = mimeview._message(raw)
        n = next(self._ids)
        m = CaughtMessage(id="m%04d" % n, mailbox=mailbox, mail_from=mail_from, rcpt_to=tuple(rcpt_to),
                          header_from=str(msg.get("From", "")), header_to=str(msg.get("To", "")),
                          subject=str(msg.get("Subject", "")), date=str(msg.get("Date", "")),
                          received=1796000000.0 + n, size=len(raw), **kw)
        self.items.append((m, raw))
        for w in list(self.watchers):
            w(m)
        return m

    def list_caught(self, query: Dict[str, str], limit: int, done) -> None:
        def match(m: CaughtMessage) -> bool:
            fields = {"to": " ".join(m.rcpt_to) + " " + m.header_to,
                      "from": m.mail_from + " " + m.header_from, "subject": m.subject}
            fields["text"] = " ".join(fields.values()) + " " + m.mailbox
            return all(v.lower() in fields[k].lower() for k, v in query.items())
        out = [m for m, _ in reversed(self.items) if match(m)][:limit]
        self._later(lambda: done(out))

    def caught_raw(self, message_id: str, done) -> None:
        found = next(((m, raw) for m, raw in self.items if m.id == message_id), None)
        self._later(lambda: done(found))

    def delete_caught(self, message_id: str, done) -> None:
        before = len(self.items)
        self.items = [(m, r) for m, r in self.items if m.id != message_id]
        self._later(lambda: done(len(self.items) != before))

    def delete_all_caught(self, done) -> None:
        n, self.items = len(self.items), []
        self._later(lambda: done(n))

    def watch_caught(self, callback) -> Callable[[], None]:
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback) if callback in self.watchers else None


class FakeFaults:
    """``FaultControl``: validates a little, as the real one (protocols/faults.py) does."""

    PROTOCOLS = ("smtp", "pop3", "imap")
    ACTIONS = ("fail", "delay", "disconnect", "greylist", "tls_required")

    def __init__(self):
        self._rules: List[Dict[str, object]] = []
        self._ids = itertools.count(1)

    def rules(self):
        return [dict(r) for r in self._rules]

    def add_rule(self, rule):
        if rule.get("protocol") not in self.PROTOCOLS:
            raise ValueError("protocol must be one of smtp, pop3, imap")
        if rule.get("action", "fail") not in self.ACTIONS:
            raise ValueError("unknown action %r" % rule.get("action"))
        unknown = set(rule) - {"protocol", "command", "action", "code", "text", "seconds", "times"}
        if unknown:
            raise ValueError("unknown key %s" % sorted(unknown)[0])
        r = dict({"action": "fail", "code": None, "text": "", "seconds": 0, "times": None}, **rule)
        r.update(id="f%d" % next(self._ids), hits=0, command=str(rule.get("command", "")).upper())
        self._rules.append(r)
        return dict(r)

    def remove_rule(self, rule_id):
        before = len(self._rules)
        self._rules = [r for r in self._rules if r["id"] != rule_id]
        return len(self._rules) != before

    def reset(self):
        self._rules = []


class FakeService:
    """The HttpService's methods (protocols/http/service.py) without a loop: MIME work
    runs at once; logins are checked against ``users``."""

    def __init__(self, caught: Optional[FakeCaught] = None, faults: Optional[FakeFaults] = None,
                 users: Optional[Dict[str, str]] = None):
        self.caught = caught
        self.faults = faults
        self.users = users or {}
        self.logins: List[str] = []
        self.temporary = False

    def authenticate(self, ctx, outcome, done) -> None:
        self.logins.append(outcome.authcid)
        if self.temporary:
            done(sasl.AuthTemporary("busy", "try again later"))
        elif self.users.get(outcome.authcid.lower()) == outcome.password:
            done(outcome.authcid.lower())
        else:
            done(None)

    def parse_message(self, raw, done):
        done(mimeview.parse_message(raw))

    def html_part(self, raw, done):
        done(mimeview.html_part(raw))

    def attachment(self, raw, index, done):
        done(mimeview.attachment(raw, index))
