"""A stub resolver driven by the event loop, and MX host selection.

Implements
  * stub resolution against the recursive servers of resolv.conf(5):
    UDP first (RFC 1035 §4.2.1), the same query again over TCP when the
    reply is truncated (RFC 7766 §5, two-octet length prefix per RFC 1035
    §4.2.2), per-server timeouts and ``attempts`` rounds over the server list;
  * forgery resistance (RFC 5452 §9.1): a random 16-bit ID per query from
    ``secrets``; a reply counts only if it comes from the server's address
    and port and repeats our ID, name (case-insensitively), type and class.
    The source port is random because every query gets a fresh datagram
    endpoint from ``loop.open_datagram``, which binds port 0: the OS picks an
    ephemeral port, randomised on Linux (RFC 5452 §9.2, RFC 6056 §3.2);
  * CNAME chains, followed within a reply and across queries, at most
    ``MAX_CNAME_CHAIN`` links (RFC 1034 §3.6.2);
  * a cache of positive answers for the smallest TTL seen (RFC 2181 §5.2)
    and of negative answers for min(SOA MINIMUM, SOA TTL) (RFC 2308 §5),
    timed with the loop clock;
  * MX selection for delivery (RFC 5321 §5.1, RFC 7505 null MX) is in
    ``protocols/dns/mx.py``, reached through ``lookup_mx_hosts``.

Errors are values, not exceptions: ``done`` receives ``Answer`` or
``DnsError(kind)`` with kind ``nxdomain`` (permanent), ``nodata`` or
``temporary`` (SERVFAIL, REFUSED, timeouts, malformed chains).  The error's
``message`` says what DNS said in DNS terms (RCODE names of RFC 1035 §4.1.1,
"timeout", "no records") and names the server that said it, for `mailsrv.py
dns` and the logs.

At most ``max_in_flight`` exchanges are in flight at once, resolver-wide
(each holds a socket); further questions wait in a FIFO of at most
``MAX_WAITING``, beyond which they fail at once as temporary: a domain with
thousands of MX hosts, or many messages at once, cannot exhaust the
process's descriptors (issue 7 item 5).

Left out: DNSSEC validation, EDNS fallback probing (EDNS is off unless
``edns_payload`` is given; a FORMERR answer then retries that server
without it, RFC 6891 §7), search domains and ``ndots`` (RFC 5321 §5.1:
relays MUST NOT infer FQDNs), TCP connection reuse (RFC 7766 §6.2.1).
"""

import ipaddress
import secrets
import struct
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, FrozenSet, List, Optional, Tuple, Union

from protocols.dns import codec as dns
from protocols.dns.codec import DnsFormatError, DnsNameError, Message

MAX_CNAME_CHAIN = 8          # RFC 1034 §3.6.2 sets no number; 8 links, as Postfix and the brief use
MAX_POSITIVE_TTL = 604800    # RFC 8767 §4 suggests capping cached TTLs at 7 days
MAX_NEGATIVE_TTL = 10800     # RFC 2308 §5 defers to §4/§9: 1-3 hours "have been found to work well"
TTL_SIGN_BIT = 0x80000000    # RFC 2181 §8: a TTL with the top bit set is treated as zero
MAX_CACHE_ENTRIES = 10000    # our own bound on memory
DNS_PORT = 53                # RFC 1035 §4.2.1
RESOLV_CONF_MAX_TRIES = 5    # resolv.conf(5): attempts is capped at 5
RESOLV_CONF_MAX_TIMEOUT = 30 # resolv.conf(5): timeout is capped at 30 seconds
# Not RFC numbers: bounds on descriptors and memory.  One exchange holds one
# socket (UDP, or TCP after TC); 32 is above what one MX delivery needs at once
# (1 MX query, then A and AAAA for MAX_MX_HOSTS = 5 hosts: 10) and well below
# the 1024 descriptors of a default `ulimit -n`.
MAX_IN_FLIGHT = 32
MAX_WAITING = 4096           # questions queued behind them; more fail as temporary
# RFC 1035 §4.1.1 RCODE names, and the types `mailsrv.py dns` shows.
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}

Reply = Tuple[int, str, str]


@dataclass
class Answer:
    """A positive answer: the RDATA values of the RRset, the smallest TTL of
    the RRset and any CNAMEs on the way (RFC 2181 §5.2), the final name."""
    records: List[object]
    ttl: int
    name: str = ""


@dataclass
class DnsError:
    """A failed lookup: kind is "nxdomain", "nodata" or "temporary"; the
    message in DNS terms, naming the server (see the module docstring)."""
    kind: str
    message: str = ""


def server_text(server: Tuple[str, int]) -> str:
    """"127.0.0.1:53", "[::1]:53": a name server as the logs and the CLI show it."""
    host = "[%s]" % server[0] if ":" in server[0] else server[0]
    return "%s:%d" % (host, server[1])


def rcode_text(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, "RCODE %d" % rcode)


Result = Union[Answer, DnsError]


def _normalize_ttl(ttl: int) -> int:
    return 0 if ttl & TTL_SIGN_BIT else ttl  # RFC 2181 §8


def _negative_ttl(msg: Message) -> int:
    """RFC 2308 §5: min(SOA MINIMUM, SOA TTL); 0 (not cached) without an SOA."""
    for rec in msg.authority:
        if rec.rtype == dns.TYPE_SOA and isinstance(rec.data, dns.SOA):
            return min(_normalize_ttl(rec.ttl), rec.data.minimum, MAX_NEGATIVE_TTL)
    return 0


def interpret(qname: str, qtype: int, msg: Message, links_left: int = MAX_CNAME_CHAIN
              ) -> Tuple[Optional[Result], int, Optional[str], int]:
    """Turn a NOERROR/NXDOMAIN reply into (result, cache_ttl, restart_name, links_used).

    Follows CNAMEs inside the answer section (RFC 1034 §3.6.2).  When the chain
    ends without data and without an SOA, the answer is incomplete: the caller
    asks again for ``restart_name``, and cache_ttl is then the smallest TTL of
    the CNAMEs seen, a ceiling for whatever the restart finds."""
    cur, ttls, links = qname, [], 0
    while True:
        owned = [r for r in msg.answers if r.name == cur and r.rclass == dns.CLASS_IN]
        data = [r for r in owned if r.rtype == qtype]
        if data:
            ttl = min(_normalize_ttl(r.ttl) for r in data + ttls)
            return Answer([r.data for r in data], ttl, cur), min(ttl, MAX_POSITIVE_TTL), None, links
        cnames = [r for r in owned if r.rtype == dns.TYPE_CNAME]
        if not cnames or qtype == dns.TYPE_CNAME:
            break
        links += 1
        if links > links_left:
            return DnsError("temporary", "CNAME chain of %s too long" % qname), 0, None, links
        ttls.append(cnames[0])
        cur = cnames[0].data
    if msg.rcode == dns.RCODE_NXDOMAIN:
        return DnsError("nxdomain", "NXDOMAIN: %s does not exist" % cur), _negative_ttl(msg), None, links
    if cur != qname and not any(r.rtype == dns.TYPE_SOA for r in msg.authority):
        return None, min(_normalize_ttl(r.ttl) for r in ttls), cur, links
    what = TYPE_NAMES.get(qtype, "type %d" % qtype)
    return DnsError("nodata", "no records: %s has no %s records" % (cur, what)), _negative_ttl(msg), None, links


def parse_resolv_conf(text: str) -> Tuple[List[Tuple[str, int]], float, int]:
    """resolv.conf(5): ``nameserver IP`` lines and ``options timeout:N attempts:N``.

    Returns (servers, timeout, attempts); no servers → [("127.0.0.1", 53)],
    the default of resolv.conf(5).  Unknown lines and options are ignored."""
    servers: List[Tuple[str, int]] = []
    timeout, attempts = 5.0, 2
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            host = words[1].split("%", 1)[0]
            try:
                servers.append((str(ipaddress.ip_address(host)), DNS_PORT))
            except ValueError:
                continue
        elif words and words[0] == "options":
            for opt in words[1:]:
                key, _, value = opt.partition(":")
                if key in ("timeout", "attempts") and value.isdigit():
                    if key == "timeout":
                        timeout = float(max(1, min(int(value), RESOLV_CONF_MAX_TIMEOUT)))
                    else:
                        attempts = max(1, min(int(value), RESOLV_CONF_MAX_TRIES))
    return servers or [("127.0.0.1", DNS_PORT)], timeout, attempts


class TcpQuerySession:
    """One query over TCP, as a sans-I/O client session for ``loop.connect``:
    RFC 7766 §5 / RFC 1035 §4.2.2, each message prefixed by its length in two
    octets.  ``on_reply(bytes)`` gets the reply, or ``None`` on EOF/timeout."""

    want_tls = False
    busy = False

    def __init__(self, ctx, packet: bytes, on_reply: Callable[[Optional[bytes]], None], timeout: float):
        self.ctx = ctx
        self.closed = False
        self.idle_timeout = timeout
        self._out = struct.pack("!H", len(packet)) + packet
        self._in = bytearray()
        self._on_reply = on_reply

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            return self._finish(None)
        self._in += data
        if len(self._in) >= 2:
            length = struct.unpack("!H", self._in[:2])[0]
            if len(self._in) >= 2 + length:
                self._finish(bytes(self._in[2:2 + length]))

    def _finish(self, reply: Optional[bytes]) -> None:
        if not self.closed:
            self.closed = True
            self._on_reply(reply)

    def timeout(self) -> None:
        self._finish(None)

    def shutdown(self) -> None:
        self._finish(None)

    def tls_started(self, info: dict) -> None:  # pragma: no cover - never asks for TLS
        pass


# loop.open_datagram wants a socket address family and only loop.py may import
# socket: EventLoop publishes AF_INET / AF_INET6; the Linux values are only a
# fallback for stand-in loops without them.
_LINUX_AF = {4: 2, 6: 10}


def _address_family(loop, host: str) -> int:
    version = 6 if ":" in host else 4
    return getattr(loop, "AF_INET6" if version == 6 else "AF_INET", _LINUX_AF[version])


def _same_address(addr, server: Tuple[str, int]) -> bool:
    """RFC 5452 §9.1: the reply's source must be the query's destination."""
    try:
        return (ipaddress.ip_address(str(addr[0]).split("%", 1)[0]) == ipaddress.ip_address(server[0])
                and int(addr[1]) == int(server[1]))
    except (ValueError, TypeError, IndexError):
        return False


class _Exchange:
    """One question asked of the server list until a usable reply arrives.

    ``try_no`` walks ``attempts`` rounds over the servers (resolv.conf(5));
    ``gen`` numbers every packet sent, and a callback (datagram, timer, TCP
    reply) whose generation is not the current one is ignored."""

    def __init__(self, resolver: "Resolver", name: str, qtype: int, done: Callable[[Message], None],
                 fail: Callable[[str], None]):
        self.r, self.name, self.qtype = resolver, name, qtype
        self.done, self.fail = done, fail
        self.try_no = -1
        self.gen = 0
        self.finished = False
        self.timer = None
        self.dgram = None
        self.conn = None
        self.edns = resolver.edns_payload
        self.errors: List[str] = []     # what each server said, in DNS terms, in order

    def start(self) -> None:
        self._next_try()

    def _next_try(self, same_server: bool = False) -> None:
        self.gen += 1
        self._cleanup()
        if not same_server:
            self.try_no += 1
        servers = self.r.servers
        if self.try_no >= len(servers) * self.r.attempts:
            return self._finish_fail("; ".join(self.errors) or "no reply from any name server")
        self._send_udp(servers[self.try_no % len(servers)], self.gen)

    def _packet(self) -> Tuple[int, bytes]:
        qid = secrets.randbelow(0x10000)  # RFC 5452 §9.2 / §4.3: unpredictable ID
        return qid, dns.encode_query(self.name, self.qtype, qid, edns_payload=self.edns)

    def _current(self, gen: int) -> bool:
        return not self.finished and self.gen == gen

    def _send_udp(self, server: Tuple[str, int], gen: int) -> None:
        qid, packet = self._packet()
        family = _address_family(self.r.loop, server[0])
        try:
            self.dgram = self.r.loop.open_datagram(
                family, lambda data, addr: self._on_datagram(gen, server, qid, data, addr))
            self.dgram.sendto(packet, server)
        except OSError as exc:
            self._failed("cannot query %s: %s" % (server_text(server), exc))
            return self.r.loop.call_soon(lambda: self._current(gen) and self._next_try())
        self.timer = self.r.loop.call_later(self.r.timeout, lambda: self._on_timeout(gen, server))

    def _on_timeout(self, gen: int, server) -> None:
        if self._current(gen):
            self._failed("timeout: no reply from %s within %g s" % (server_text(server), self.r.timeout))
            self._next_try()

    def _matches(self, qid: int, msg: Message) -> bool:
        """RFC 5452 §9.1: ID, name, class and type must repeat the query's."""
        if not msg.qr or msg.id != qid or len(msg.questions) != 1:
            return False
        q = msg.questions[0]
        return q.name == self.name and q.qtype == self.qtype and q.qclass == dns.CLASS_IN

    def _on_datagram(self, gen: int, server, qid: int, data: bytes, addr) -> None:
        if not self._current(gen) or not _same_address(addr, server):
            return
        try:
            msg = dns.decode_message(data)
        except DnsFormatError:
            return  # a forged or garbled datagram: keep waiting (RFC 5452 §9.1)
        if not self._matches(qid, msg):
            return
        if msg.tc:
            return self._send_tcp(server)  # RFC 7766 §5: retry the query over TCP
        self._on_reply(server, msg)

    def _send_tcp(self, server: Tuple[str, int]) -> None:
        self.gen += 1
        gen = self.gen
        self._cleanup()
        qid, packet = self._packet()

        def on_reply(data: Optional[bytes]) -> None:
            if not self._current(gen):
                return
            self.conn = None  # the session is closed; the loop closes the connection
            try:
                msg = dns.decode_message(data) if data is not None else None
            except DnsFormatError:
                msg = None
            if msg is None or not self._matches(qid, msg):
                self._failed("no usable TCP reply from %s" % (server_text(server),))
                return self._next_try()
            self._on_reply(server, msg)

        def on_error(exc) -> None:
            if self._current(gen):
                self.conn = None
                self._failed("TCP to %s failed: %s" % (server_text(server), exc))
                self._next_try()

        self.timer = self.r.loop.call_later(self.r.timeout, lambda: self._on_timeout(gen, server))
        self.conn = self.r.loop.connect(
            server[0], server[1], lambda ctx: TcpQuerySession(ctx, packet, on_reply, self.r.timeout),
            self.r.timeout, on_error)

    def _on_reply(self, server, msg: Message) -> None:
        if msg.rcode in (dns.RCODE_NOERROR, dns.RCODE_NXDOMAIN):
            self.finished = True
            self._cleanup()
            return self.done(msg, server)
        if msg.rcode == dns.RCODE_FORMERR and self.edns is not None:
            self.edns = None  # RFC 6891 §7: a server without EDNS answers FORMERR; ask again plainly
            return self._next_try(same_server=True)
        # SERVFAIL, REFUSED, NOTIMP...: this server cannot help; try the next (RFC 1035 §7.3)
        self._failed("%s from %s" % (rcode_text(msg.rcode), server_text(server)))
        self._next_try()

    def _failed(self, what: str) -> None:
        if what not in self.errors:
            self.errors.append(what)

    def _finish_fail(self, why: str) -> None:
        self.finished = True
        self._cleanup()
        self.fail(why)

    def _cleanup(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.dgram is not None:
            self.dgram.close()
            self.dgram = None
        conn, self.conn = self.conn, None
        if conn is not None and not getattr(conn, "closed", True):
            conn.close()  # a TCP query we gave up on; its session's EOF is ignored (old gen)


class Resolver:
    """Stub resolver: ``resolve(name, qtype, done)`` → ``done(Answer | DnsError)``.

    ``done`` is always called later from the loop (``call_soon`` for cache
    hits and immediate failures), never from inside ``resolve``."""

    def __init__(self, loop, servers: List[Tuple[str, int]], timeout: float = 5.0, attempts: int = 2,
                 clock: Optional[Callable[[], float]] = None, rng=None,
                 edns_payload: Optional[int] = None, max_in_flight: int = MAX_IN_FLIGHT):
        if not servers:
            raise ValueError("no name servers")
        self.loop = loop
        self.servers = list(servers)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.clock = clock or getattr(loop, "time", None) or getattr(loop, "clock", None)
        self.rng = rng if rng is not None else secrets.SystemRandom()
        self.edns_payload = edns_payload
        self.cache: Dict[Tuple[str, int], Tuple[float, Result]] = {}
        self.queries_sent = 0  # exchanges started (tests check cache hits with it)
        self.max_in_flight = max(1, max_in_flight)
        self.in_flight = 0
        self.peak_in_flight = 0  # the most ever in flight at once (tests check the bound)
        self._waiting: Deque["_Exchange"] = deque()

    @classmethod
    def from_resolv_conf(cls, loop, text: str, **kw) -> "Resolver":
        """A resolver for the servers and options of a resolv.conf(5) text
        (the wiring reads /etc/resolv.conf; protocols/ opens no files)."""
        servers, timeout, attempts = parse_resolv_conf(text)
        return cls(loop, servers, timeout=timeout, attempts=attempts, **kw)

    # -- cache (RFC 2308 §5, RFC 2181 §5.2) --
    def _cached(self, key: Tuple[str, int]) -> Optional[Result]:
        entry = self.cache.get(key)
        if entry is None or self.clock is None:
            return None
        if self.clock() >= entry[0]:
            del self.cache[key]
            return None
        return entry[1]

    def _store(self, key: Tuple[str, int], result: Result, ttl: int) -> None:
        if ttl <= 0 or self.clock is None:
            return
        now = self.clock()
        if len(self.cache) >= MAX_CACHE_ENTRIES:
            self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
            if len(self.cache) >= MAX_CACHE_ENTRIES:
                self.cache.clear()
        self.cache[key] = (now + ttl, result)

    def resolve(self, name: str, qtype: int, done: Callable[[Result], None]) -> None:
        """Look up ``name``/``qtype`` (class IN), following CNAMEs."""
        try:
            qname = dns.normalize_name(name)
        except DnsNameError as exc:
            err = DnsError("nxdomain", "invalid domain name %r: %s" % (name, exc))
            return self.loop.call_soon(lambda: done(err))
        hit = self._cached((qname, qtype))
        if hit is not None:
            return self.loop.call_soon(lambda: done(hit))
        self._ask(qname, qtype, qname, MAX_CNAME_CHAIN, None, done)

    def _ask(self, orig: str, qtype: int, qname: str, links_left: int, ttl_cap: Optional[int],
             done: Callable[[Result], None]) -> None:
        """Query ``qname``; ``orig`` is the name asked for (the cache key) and
        ``ttl_cap`` the smallest TTL of the CNAMEs that led from it to here."""
        def on_msg(msg: Message, server: Tuple[str, int]) -> None:
            result, ttl, restart, used = interpret(qname, qtype, msg, links_left)
            if ttl_cap is not None:
                ttl = min(ttl, ttl_cap)
            if restart is not None:
                return self._ask(orig, qtype, restart, links_left - used, ttl, done)
            if isinstance(result, Answer):
                result.ttl = min(result.ttl, ttl)
            if isinstance(result, DnsError) and result.kind == "temporary":
                ttl = 0
            if isinstance(result, DnsError):
                result.message += " (from %s)" % server_text(server)
            self._store((orig, qtype), result, ttl)
            done(result)

        def on_fail(why: str) -> None:
            done(DnsError("temporary", why))

        self._admit(_Exchange(self, qname, qtype, on_msg, on_fail))

    # -- the in-flight bound (module docstring) --
    def _admit(self, exchange: "_Exchange") -> None:
        if self.in_flight < self.max_in_flight:
            return self._begin(exchange)
        if len(self._waiting) >= MAX_WAITING:
            why = "resolver busy: %d queries waiting" % len(self._waiting)
            return self.loop.call_soon(lambda: exchange.fail(why))
        self._waiting.append(exchange)

    def _begin(self, exchange: "_Exchange") -> None:
        """Start it; its slot is freed just before its own callback runs."""
        done, fail = exchange.done, exchange.fail

        def done_released(msg: Message, server: Tuple[str, int]) -> None:
            self._release()
            done(msg, server)

        def fail_released(why: str) -> None:
            self._release()
            fail(why)
        exchange.done, exchange.fail = done_released, fail_released
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.queries_sent += 1
        exchange.start()

    def _release(self) -> None:
        self.in_flight -= 1
        while self._waiting and self.in_flight < self.max_in_flight:
            self._begin(self._waiting.popleft())

    def lookup_mx_hosts(self, domain: str, done: Callable[[object], None],
                        local_names: FrozenSet[str] = frozenset()) -> None:
        """RFC 5321 §5.1 delivery targets of ``domain``: ``protocols.dns.mx.MxLookup``."""
        from protocols.dns.mx import MxLookup     # dns_mx imports this module
        MxLookup(self, domain, done, local_names).start()
