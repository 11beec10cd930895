"""HTTP/1.1 responses: status line, fields, body (RFC 9112 §4, §6; RFC 9110 §15).

Every response carries ``Date`` (RFC 9110 §6.6.1: an origin server with a clock MUST
send it; the clock is the loop's, through ``ctx.clock``), ``Content-Length`` (RFC 9112
§6.2) except the event stream, which ends with the connection (RFC 9112 §6.3 item 8),
and the security fields: ``Content-Security-Policy`` (CSP Level 3),
``X-Content-Type-Options: nosniff`` (WHATWG Fetch 3.7), ``Referrer-Policy:
no-referrer`` and ``X-Frame-Options`` (RFC 7034) so that no other site frames our page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import List, Optional, Tuple

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# JSON and downloads: nothing in them may run or load anything, nor be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# A caught message's HTML part (the brief of issue 11): a sandbox (no script, no
# forms, opaque origin), no remote content; only inline style and data: images;
# framed only by our own page.
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: List[Tuple[str, str]] = field(default_factory=list)
    csp: str = API_CSP
    frame_options: str = "DENY"
    stream: bool = False          # an event stream: no Content-Length, the connection stays open


def json_response(status: int, obj: object, **kw) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8") + b"\n"
    return Response(status, body, "application/json; charset=utf-8", **kw)


def error(status: int, message: str, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    """The one-line JSON error every failure answers: {"error": "..."}."""
    return json_response(status, {"error": message}, headers=list(headers or []))


def http_date(clock: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7)."""
    return formatdate(clock, usegmt=True)


def render(resp: Response, clock: float, head_only: bool, close: bool) -> bytes:
    """The response's octets; ``head_only`` for HEAD (RFC 9110 §9.3.2: same fields, no body)."""
    lines = ["HTTP/1.1 %d %s" % (resp.status, REASONS.get(resp.status, "Status")),
             "Date: " + http_date(clock),
             "Server: mailsrv",
             "Content-Type: " + resp.content_type,
             "Content-Security-Policy: " + resp.csp,
             "X-Content-Type-Options: nosniff",
             "Referrer-Policy: no-referrer",
             "X-Frame-Options: " + resp.frame_options,
             "Cache-Control: no-store"]
    if not resp.stream:
        lines.append("Content-Length: %d" % len(resp.body))
    lines.extend("%s: %s" % (k, v) for k, v in resp.headers)
    if close or resp.stream:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + resp.body
