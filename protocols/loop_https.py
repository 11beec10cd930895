"""A small blocking HTTP/1.1 client (HTTPS by default), run on a worker thread.

Part of the event loop (tests/test_layering.py lets it touch sockets and TLS):
MTA-STS policy fetches (RFC 8461 §3.3) and ACME (RFC 8555 §6) need an HTTPS
client, and the standard library has one, ``http.client``.  Callers run
``request`` on one of the loop's worker threads (``ThreadedWork.submit``), never
on the loop thread itself.

What it adds to ``http.client``: a bound on the body read (``max_body``, RFC 8461
§3.3 puts 64 KiB on a policy), a time limit on the whole exchange, an optional
``connect_to`` that dials another address while SNI and certificate checks still
use the URL's host name (tests on loopback, ``dnsmasq``-free), a CA file for
test authorities such as pebble's, and one exception type whose message is one
line naming the URL.  Redirects are not followed: RFC 8461 §3.3 forbids it for
policies, and RFC 8555 uses none.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

# RFC 8461 §3.3 suggests a policy fetch time out in a minute at most; ACME
# servers answer in well under that.  Local policy for a default.
DEFAULT_TIMEOUT = 30.0
# RFC 8461 §3.3: "policy bodies ... SHOULD be limited to 64 kilobytes"; ACME
# certificates chains are a few KiB.  Callers pass their own bound.
DEFAULT_MAX_BODY = 1024 * 1024


class HttpsError(Exception):
    """One line: the URL and what went wrong (connect, TLS, timeout, size)."""


@dataclass
class HttpsReply:
    status: int
    headers: Dict[str, str] = field(default_factory=dict)   # lower-case names; repeated ones joined with ", "
    body: bytes = b""
    url: str = ""


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that may dial ``connect_to`` instead of the URL's host."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float,
                 connect_to: Optional[Tuple[str, int]]):
        super().__init__(host, port, context=context, timeout=timeout)
        self._dial = connect_to
        self._ctx = context

    def connect(self) -> None:
        if self._dial is None:
            super().connect()
            return
        raw = socket.create_connection(self._dial, self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self.host)


class _PlainConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, connect_to: Optional[Tuple[str, int]]):
        super().__init__(host, port, timeout=timeout)
        self._dial = connect_to

    def connect(self) -> None:
        if self._dial is None:
            super().connect()
            return
        self.sock = socket.create_connection(self._dial, self.timeout)


def client_context(cafile: Optional[str] = None, verify: bool = True) -> ssl.SSLContext:
    """TLS 1.2 or newer, the system's CAs or ``cafile``; host names checked."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(url: str, method: str = "GET", body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None, *, cafile: Optional[str] = None,
            verify: bool = True, timeout: float = DEFAULT_TIMEOUT, max_body: int = DEFAULT_MAX_BODY,
            connect_to: Optional[Tuple[str, int]] = None,
            context: Optional[ssl.SSLContext] = None) -> HttpsReply:
    """One request, blocking (a worker thread's call).  Raises HttpsError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise HttpsError("%s: not an http(s) URL" % url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    deadline = time.monotonic() + timeout
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = _Connection(
            parts.hostname, port, context or client_context(cafile, verify), timeout, connect_to)
    else:
        conn = _PlainConnection(parts.hostname, port, timeout, connect_to)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = _read_bounded(resp, max_body, deadline, url)
        joined: Dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            joined[key] = joined[key] + ", " + value if key in joined else value
        return HttpsReply(resp.status, joined, data, url)
    except HttpsError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise HttpsError("%s: certificate not trusted: %s" % (url, exc.verify_message or exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise HttpsError("%s: %s" % (url, str(exc) or type(exc).__name__)) from None
    finally:
        conn.close()


def _read_bounded(resp: http.client.HTTPResponse, max_body: int, deadline: float, url: str) -> bytes:
    """The body, refused past ``max_body`` octets or past the deadline."""
    length = resp.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_body:
        raise HttpsError("%s: body of %s octets is over the limit of %d" % (url, length.strip(), max_body))
    chunks = []
    got = 0
    while True:
        if time.monotonic() > deadline:
            raise HttpsError("%s: timed out reading the body" % url)
        chunk = resp.read(min(65536, max_body + 1 - got))
        if not chunk:
            return b"".join(chunks)
        got += len(chunk)
        if got > max_body:
            raise HttpsError("%s: body over the limit of %d octets" % (url, max_body))
        chunks.append(chunk)
