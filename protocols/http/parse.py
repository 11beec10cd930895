"""HTTP/1.1 request parsing, sans-I/O (RFC 9112 §2-§3, §5, §6; RFC 9110 for the semantics).

``RequestReader.feed(data)`` buffers octets; ``next()`` returns the next complete
``Request`` (head and body), ``None`` while more octets are needed, or raises
``HttpError`` carrying the status to answer.  Requests are returned one at a time in
the order they arrived, so pipelining (RFC 9112 §9.3.2) is answered in order.

Left out, on purpose:

* request bodies in the chunked transfer coding (RFC 9112 §7.1).
  DEVIATION(RFC 9112 §7.1): "A recipient MUST be able to parse the chunked transfer
  coding"; our only bodies are small JSON documents that every client sends with
  Content-Length, so a request with Transfer-Encoding gets 501 (RFC 9112 §6.1: "a
  transfer coding it does not understand SHOULD respond with 501") and the connection
  closes, since its framing cannot be followed.  A POST without Content-Length gets
  411 (RFC 9110 §15.5.12).
* obs-fold (RFC 9112 §5.2): rejected with 400, as that section allows.
* HTTP/2 upgrade, Expect: 100-continue (RFC 9110 §10.1.1: a server may ignore it and
  simply read the body, which clients send after a short wait).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote

# RFC 9112 §3: "It is RECOMMENDED that all HTTP senders and recipients support, at a
# minimum, request-line lengths of 8000 octets"; we take 8 KiB, longer gets 414.
MAX_REQUEST_LINE = 8192
# RFC 6585 §5 (431): no number given; 64 KiB and 100 fields are Apache's
# LimitRequestFieldSize x8 and LimitRequestFields defaults.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
# RFC 9110 §15.5.14 (413): the limit is the server's; our API takes small JSON rules.
MAX_BODY = 1024 * 1024
# RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request
# line; we ignore up to this many, then treat the input as garbage.
MAX_LEADING_EMPTY = 8

# RFC 9110 §5.6.2: token = 1*tchar.
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT.
VERSION = re.compile(rb"^HTTP/([0-9])\.([0-9])$")
# RFC 9110 §5.5: field-value octets: VCHAR, obs-text, SP, HTAB (no CTL).
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 3986 §2: request-target characters (visible ASCII, no space).
TARGET = re.compile(rb"^[\x21-\x7e]+$")


class HttpError(Exception):
    """A request that gets an error status; ``close``: the connection ends after it."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


@dataclass
class Request:
    """One parsed request (RFC 9112 §3), its fields decoded as Latin-1 (RFC 9110 §5.5)."""

    method: str
    target: str
    version: Tuple[int, int]
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    path: str = "/"
    query: Dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> Optional[str]:
        """The value of the field ``name`` (case-insensitive), the first if repeated."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def values(self, name: str) -> List[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 closes unless "keep-alive"."""
        tokens = {t.strip().lower() for v in self.values("connection") for t in v.split(",")}
        if "close" in tokens:
            return False
        return self.version >= (1, 1) or "keep-alive" in tokens


def parse_request_line(line: bytes) -> Request:
    """request-line = method SP request-target SP HTTP-version (RFC 9112 §3)."""
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]) or not TARGET.match(parts[1]):
        raise HttpError(400, "bad request line", close=True)
    m = VERSION.match(parts[2])
    if not m:
        raise HttpError(400, "bad HTTP version", close=True)
    version = (int(m.group(1)), int(m.group(2)))
    if version[0] != 1:
        raise HttpError(505, "only HTTP/1.x is supported", close=True)   # RFC 9110 §15.6.6
    req = Request(method=parts[0].decode("ascii"), target=parts[1].decode("ascii"), version=version)
    split_target(req)
    return req


def split_target(req: Request) -> None:
    """origin-form, or absolute-form which a server MUST accept (RFC 9112 §3.2.2)."""
    target = req.target
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", target)
    if m:
        target = target[m.end():] or "/"
    elif req.method == "OPTIONS" and target == "*":     # asterisk-form, RFC 9112 §3.2.4
        req.path = "*"
        return
    if not target.startswith("/"):
        raise HttpError(400, "bad request target", close=True)
    path, _, query = target.partition("?")
    try:
        req.path = unquote(path.partition("#")[0], errors="strict")
        req.query = dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "bad percent-encoding in the request target") from None


def parse_field(line: bytes) -> Tuple[str, str]:
    """field-line = field-name ":" OWS field-value OWS (RFC 9112 §5)."""
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding is not accepted", close=True)   # RFC 9112 §5.2
    name, colon, value = line.partition(b":")
    # RFC 9112 §5.1: no whitespace between the name and the colon: 400.
    if not colon or not TOKEN.match(name):
        raise HttpError(400, "bad header field", close=True)
    value = value.strip(b" \t")
    if BAD_VALUE.search(value):
        raise HttpError(400, "bad header field value", close=True)
    return name.decode("ascii"), value.decode("latin-1")


def body_length(req: Request) -> int:
    """RFC 9112 §6.3: the length of the request body (0 if none)."""
    if req.values("transfer-encoding"):
        if req.values("content-length"):    # RFC 9112 §6.3 item 3: a smuggling attempt
            raise HttpError(400, "both Transfer-Encoding and Content-Length", close=True)
        if req.version < (1, 1):             # RFC 9112 §6.1: HTTP/1.0 with TE is faulty
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request", close=True)
        raise HttpError(501, "request bodies must have a Content-Length (no Transfer-Encoding)", close=True)
    lengths = {v.strip() for vs in req.values("content-length") for v in vs.split(",")}
    if not lengths:
        return 0
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():   # RFC 9112 §6.3 item 5
        raise HttpError(400, "bad Content-Length", close=True)
    n = int(next(iter(lengths)))
    if n > MAX_BODY:
        raise HttpError(413, "request body over %d octets" % MAX_BODY, close=True)
    return n


class RequestReader:
    """Buffers input and returns complete requests in order (see the module docstring)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.lines = 0              # line ends fed: the session's progress (protocols/base.py)
        self._req: Optional[Request] = None
        self._fields = 0
        self._head_bytes = 0
        self._empty = 0
        self._need: Optional[int] = None     # body octets still expected

    def feed(self, data: bytes) -> None:
        self.lines += data.count(b"\n")
        self.buf += data

    def __len__(self) -> int:
        return len(self.buf)

    def next(self) -> Optional[Request]:
        while self._need is None:
            nl = self.buf.find(b"\n")
            if nl < 0:
                self._check_partial()
                return None
            line = bytes(self.buf[:nl])
            del self.buf[:nl + 1]
            self._line(line[:-1] if line.endswith(b"\r") else line, nl + 1)   # RFC 9112 §2.2: bare LF ok
        if len(self.buf) < self._need:
            return None
        req, self._req = self._req, None
        req.body = bytes(self.buf[:self._need])
        del self.buf[:self._need]
        self._need = None
        self._fields = self._head_bytes = self._empty = 0
        return req

    def _check_partial(self) -> None:
        if self._req is None and len(self.buf) > MAX_REQUEST_LINE:
            raise HttpError(414, "request line over %d octets" % MAX_REQUEST_LINE, close=True)
        if self._req is not None and self._head_bytes + len(self.buf) > MAX_HEADER_BYTES:
            raise HttpError(431, "header section over %d octets" % MAX_HEADER_BYTES, close=True)

    def _line(self, line: bytes, size: int) -> None:
        if self._req is None:
            if not line:
                self._empty += 1
                if self._empty > MAX_LEADING_EMPTY:
                    raise HttpError(400, "empty lines instead of a request", close=True)
                return
            if size > MAX_REQUEST_LINE:
                raise HttpError(414, "request line over %d octets" % MAX_REQUEST_LINE, close=True)
            self._req = parse_request_line(line)
            return
        self._head_bytes += size
        if self._head_bytes > MAX_HEADER_BYTES:
            raise HttpError(431, "header section over %d octets" % MAX_HEADER_BYTES, close=True)
        if line:
            self._fields += 1
            if self._fields > MAX_HEADER_FIELDS:
                raise HttpError(431, "more than %d header fields" % MAX_HEADER_FIELDS, close=True)
            self._req.headers.append(parse_field(line))
            return
        req = self._req
        hosts = req.values("host")
        if req.version >= (1, 1) and len(hosts) != 1:   # RFC 9112 §3.2: MUST 400
            raise HttpError(400, "an HTTP/1.1 request needs exactly one Host field", close=True)
        self._need = body_length(req)
