"""The routes of the web page and the JSON API (README "Web page and HTTP API").

One table: path pattern, the handler of each method, whether a login is needed (normal
mode only; the test server needs none).  A path that matches with a method it does
not serve gets 405 with ``Allow`` (RFC 9110 §15.5.6); HEAD is served wherever GET is
(RFC 9110 §9.3.2); a method we do not implement at all gets 501 (RFC 9110 §9.1).

Every handler answers through ``s.reply(...)``, at once or from a backend callback
(wrapped in ``s.guard`` so that an ``HttpError`` raised there becomes its response).
The catalog (``CaughtMail``), the faults (``FaultControl``) and the MIME parsing on a
worker are the service's (protocols/http/service.py).  A logged-in user (normal mode)
sees and deletes only the messages of their own mailbox; the faults are the test
server's alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable, Dict, List, Optional, Tuple

from protocols.http import page
from protocols.http.parse import HttpError, Request
from protocols.http.response import SANDBOX_CSP, Response, error, json_response

# Messages one list answers at most (and the default): a page of a test inbox.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# The methods this server implements (RFC 9110 §9.3); others known to RFC 9110 get 405.
IMPLEMENTED = ("GET", "HEAD", "POST", "DELETE")
STANDARD = IMPLEMENTED + ("PUT", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ID = r"(?P<id>[A-Za-z0-9._~-]{1,200})"   # CaughtMessage.id is URL-safe (contracts.py)

Handler = Callable[["object", Request, Dict[str, str]], None]


def _catalog(s):
    caught = s.service.caught
    if caught is None:
        raise HttpError(503, "no catalog of caught mail on this server (it is the test server's: "
                             "python3 mailsrv.py test-server)")
    return caught


def _faults(s):
    if s.config.require_login:
        raise HttpError(403, "faults can be set only on the test server (python3 mailsrv.py test-server)")
    faults = s.service.faults
    if faults is None:
        raise HttpError(503, "no fault control on this server")
    return faults


def _failed(result: object, what: str) -> None:
    if isinstance(result, BaseException):
        raise HttpError(500, "%s failed: %s" % (what, type(result).__name__))


def summary(m) -> Dict[str, object]:
    """A CaughtMessage as JSON (contracts.py's fields)."""
    d = dataclasses.asdict(m)
    d["rcpt_to"] = list(m.rcpt_to)
    return d


def _owned(s, m) -> bool:
    return s.user is None or m.mailbox.lower() == s.user.lower()


def _with_message(s, message_id: str, then: Callable[[object, bytes], None]) -> None:
    """Fetch (CaughtMessage, raw) and call ``then``, or answer 404."""
    def done(result: object) -> None:
        _failed(result, "reading the message")
        if result is None or not _owned(s, result[0]):
            raise HttpError(404, "no message %s" % message_id)
        then(*result)
    _catalog(s).caught_raw(message_id, lambda r: s.guard(lambda: done(r)))


# -- the page and health -----------------------------------------------------
def get_page(s, req: Request, p) -> None:
    s.reply(Response(200, page.PAGE, "text/html; charset=utf-8", csp=page.CSP))


def get_health(s, req: Request, p) -> None:
    s.reply(json_response(200, {"status": "ok", "catalog": s.service.caught is not None,
                                "faults": s.service.faults is not None}))


def get_acme_challenge(s, req: Request, p) -> None:
    """RFC 8555 §8.3: the key authorization for the token, as
    application/octet-stream; 404 for a token we did not publish.  Any worker
    process answers: the answer is a file (protocols/acme/service.py)."""
    def done(answer: object) -> None:
        _failed(answer, "reading the ACME answer")
        if answer is None:
            raise HttpError(404, "no ACME challenge %s" % p["token"])
        s.reply(Response(200, answer.encode("ascii"), "application/octet-stream"))
    s.service.acme_challenge(p["token"], lambda r: s.guard(lambda: done(r)))


# -- messages ------------------------------------------------------------------
def list_messages(s, req: Request, p) -> None:
    """GET /api/messages?to=&from=&subject=&q=&limit=: newest first."""
    q = req.query
    query = {k: q[k] for k in ("to", "from", "subject") if q.get(k)}
    if q.get("q"):
        query["text"] = q["q"]
    try:
        limit = int(q.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise HttpError(400, "limit must be a number from 1 to %d" % MAX_LIMIT) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, "limit must be a number from 1 to %d" % MAX_LIMIT)

    def done(result: object) -> None:
        _failed(result, "listing")
        mine = [summary(m) for m in result if _owned(s, m)]
        s.reply(json_response(200, mine[:limit]))
    # a user's own messages are a filter of the whole list: ask for the most
    _catalog(s).list_caught(query, MAX_LIMIT if s.user else limit, lambda r: s.guard(lambda: done(r)))


def get_message(s, req: Request, p) -> None:
    """GET /api/messages/{id}: envelope, header fields, text, attachments."""
    def parsed(m, result: object) -> None:
        _failed(result, "parsing the message")
        s.reply(json_response(200, dict(summary(m), **result)))
    _with_message(s, p["id"], lambda m, raw: s.service.parse_message(
        raw, lambda r: s.guard(lambda: parsed(m, r))))


def get_raw(s, req: Request, p) -> None:
    """GET /api/messages/{id}/raw: the message as stored (RFC 5322), as text."""
    disposition = [("Content-Disposition", 'attachment; filename="%s.eml"' % p["id"])]
    _with_message(s, p["id"], lambda m, raw: s.reply(
        Response(200, raw, "text/plain; charset=utf-8", headers=disposition)))


def get_html(s, req: Request, p) -> None:
    """GET /api/messages/{id}/html: the HTML part, sandboxed by its CSP (no script,
    no remote content) and framed only by our page."""
    def done(result: object) -> None:
        _failed(result, "parsing the message")
        if result is None:
            raise HttpError(404, "message %s has no HTML part" % p["id"])
        s.reply(Response(200, result.encode("utf-8"), "text/html; charset=utf-8",
                         csp=SANDBOX_CSP, frame_options="SAMEORIGIN"))
    _with_message(s, p["id"], lambda m, raw: s.service.html_part(raw, lambda r: s.guard(lambda: done(r))))


def get_attachment(s, req: Request, p) -> None:
    """GET /api/messages/{id}/attachments/{n}: a download (RFC 6266) with a safe name."""
    def done(result: object) -> None:
        _failed(result, "parsing the message")
        if result is None:
            raise HttpError(404, "message %s has no attachment %s" % (p["id"], p["n"]))
        name, data = result
        s.reply(Response(200, data, "application/octet-stream",
                         headers=[("Content-Disposition", 'attachment; filename="%s"' % name)]))
    _with_message(s, p["id"], lambda m, raw: s.service.attachment(
        raw, int(p["n"]), lambda r: s.guard(lambda: done(r))))


def delete_message(s, req: Request, p) -> None:
    def done(result: object) -> None:
        _failed(result, "deleting")
        if not result:
            raise HttpError(404, "no message %s" % p["id"])
        s.reply(json_response(200, {"deleted": p["id"]}))
    _with_message(s, p["id"], lambda m, raw: _catalog(s).delete_caught(
        p["id"], lambda r: s.guard(lambda: done(r))))


def delete_all(s, req: Request, p) -> None:
    catalog = _catalog(s)
    if s.user is None:
        catalog.delete_all_caught(lambda r: s.guard(lambda: (
            _failed(r, "deleting"), s.reply(json_response(200, {"deleted": r})))))
        return

    def listed(result: object) -> None:     # a user: their own messages, one by one
        _failed(result, "listing")
        ids = [m.id for m in result if _owned(s, m)]
        _delete_each(s, catalog, ids, 0)
    catalog.list_caught({}, MAX_LIMIT, lambda r: s.guard(lambda: listed(r)))


def _delete_each(s, catalog, ids: List[str], count: int) -> None:
    if not ids:
        s.reply(json_response(200, {"deleted": count}))
        return
    catalog.delete_caught(ids[0], lambda r: s.guard(
        lambda: (_failed(r, "deleting"), _delete_each(s, catalog, ids[1:], count + bool(r)))))


# -- faults ----------------------------------------------------------------------
def list_faults(s, req: Request, p) -> None:
    s.reply(json_response(200, _faults(s).rules()))


def add_fault(s, req: Request, p) -> None:
    """POST /api/faults: one rule as FaultControl.add_rule takes it, as JSON."""
    faults = _faults(s)
    if req.header("content-length") is None:
        raise HttpError(411, "POST needs a Content-Length")     # RFC 9110 §15.5.12
    ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":    # also keeps other sites' simple POSTs out (no CORS preflight)
        raise HttpError(415, "send the rule as application/json")
    try:
        rule = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(rule, dict):
        raise HttpError(400, "the body must be one JSON object (a fault rule)")
    try:
        added = faults.add_rule(rule)
    except (ValueError, TypeError) as e:
        raise HttpError(400, "bad fault rule: %s" % (str(e).splitlines() or [""])[0]) from None
    s.reply(json_response(200, added))


def delete_fault(s, req: Request, p) -> None:
    if not _faults(s).remove_rule(p["id"]):
        raise HttpError(404, "no fault rule %s" % p["id"])
    s.reply(json_response(200, {"deleted": p["id"]}))


def reset_faults(s, req: Request, p) -> None:
    _faults(s).reset()
    s.reply(json_response(200, {"reset": True}))


# -- MTA-STS (RFC 8461 §3.2) ------------------------------------------------------
MTA_STS_PATH = "/.well-known/mta-sts.txt"      # RFC 8461 §3.2


def get_mta_sts(s, req: Request, p) -> None:
    """GET /.well-known/mta-sts.txt: our policy (mta_sts_mode), text/plain (RFC 8461 §3.2);
    404 when none is configured.  Public: no login, any Host (the policy is published)."""
    policy = s.service.mta_sts_policy()
    if policy is None:
        raise HttpError(404, "no MTA-STS policy on this server (mta_sts_mode = none)")
    s.reply(Response(200, policy, "text/plain; charset=utf-8"))


# -- live updates ----------------------------------------------------------------
def events(s, req: Request, p) -> None:
    """GET /api/events: server-sent events, one ``message`` event per caught message."""
    catalog = _catalog(s)
    if req.method == "HEAD":
        s.reply(s.start_stream(lambda: None))
        return

    def caught(m) -> None:
        if _owned(s, m):
            s.push_event(summary(m))
    s.reply(s.start_stream(catalog.watch_caught(caught)))


# (pattern, {method: handler}, login needed in normal mode)
ROUTES: List[Tuple["re.Pattern", Dict[str, Handler], bool]] = [(re.compile("^%s$" % pat), methods, login)
    for pat, methods, login in [
        (r"/", {"GET": get_page}, True),
        (r"/api/health", {"GET": get_health}, False),
        (r"/\.well-known/acme-challenge/(?P<token>[A-Za-z0-9_-]{1,256})", {"GET": get_acme_challenge}, False),  # RFC 8555 §8.3: base64url
        (r"/api/messages", {"GET": list_messages, "DELETE": delete_all}, True),
        (r"/api/messages/" + ID, {"GET": get_message, "DELETE": delete_message}, True),
        (r"/api/messages/" + ID + r"/raw", {"GET": get_raw}, True),
        (r"/api/messages/" + ID + r"/html", {"GET": get_html}, True),
        (r"/api/messages/" + ID + r"/attachments/(?P<n>[0-9]{1,6})", {"GET": get_attachment}, True),
        (r"/api/faults", {"GET": list_faults, "POST": add_fault, "DELETE": reset_faults}, True),
        (r"/api/faults/(?P<rid>[A-Za-z0-9._~-]{1,100})", {"DELETE": delete_fault}, True),
        (r"/api/events", {"GET": events}, True),
        (r"/\.well-known/mta-sts\.txt", {"GET": get_mta_sts}, False),
    ]]


def route(method: str, path: str) -> Tuple[Optional[Handler], Dict[str, str], bool]:
    """(handler, path parameters, login needed); raises 404/405/501."""
    for pattern, methods, login in ROUTES:
        m = pattern.match(path)
        if not m:
            continue
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            raise HttpError(405, "%s is not allowed on %s" % (method, path)) if method in STANDARD \
                else HttpError(501, "method %s is not implemented" % method)
        params = m.groupdict()
        if "rid" in params:
            params["id"] = params.pop("rid")
        return handler, params, login
    if method not in STANDARD:
        raise HttpError(501, "method %s is not implemented" % method)
    raise HttpError(404, "no such page: %s" % path)


def _cross_site(req: Request) -> bool:
    """A state-changing request sent by a page of another origin (the Fetch
    standard's Origin field, RFC 6454 §7): refused."""
    origin = req.header("origin")
    if origin is None or req.method in ("GET", "HEAD"):
        return False
    return origin.split("://", 1)[-1].rstrip("/").lower() != (req.header("host") or "").lower()


def _foreign_host(s, req: Request) -> bool:
    """DNS rebinding (a site whose name comes to resolve to 127.0.0.1 reads our API as
    its own origin): without a login, the Host field (RFC 9110 §7.2) must be an IP
    literal, localhost or one of this server's names."""
    if s.config.require_login or req.path == MTA_STS_PATH:
        return False
    host = (req.header("host") or "").strip().lower()
    if host.startswith("["):
        return False                                  # an IPv6 literal
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if re.match(r"^[0-9.]+$", name) or name == "localhost" or name.endswith(".localhost"):
        return False
    return name not in {n.lower() for n in s.config.host_names}


def dispatch(s, req: Request) -> None:
    try:
        handler, params, login = route(req.method, req.path)
    except HttpError as e:
        if e.status == 405:
            _, methods, _ = next(r for r in ROUTES if r[0].match(req.path))
            allow = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            s.reply(error(405, e.message, [("Allow", ", ".join(allow))]))
            return
        raise
    if _foreign_host(s, req) and handler is not get_acme_challenge:    # the CA asks with our public name
        raise HttpError(403, "Host %s refused (DNS rebinding protection): use the address, "
                             "e.g. http://127.0.0.1:PORT/" % req.header("host"))
    if _cross_site(req):
        raise HttpError(403, "cross-site %s refused (Origin %s)" % (req.method, req.header("origin")))
    if login and s.config.require_login:
        s.login(req, lambda: handler(s, req, params))
    else:
        handler(s, req, params)
