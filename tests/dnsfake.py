"""A tiny authoritative DNS server for tests, on 127.0.0.1, UDP and TCP.

Built on protocols/dns/codec.py.  It runs in its own thread (tests may use sockets
and threads) and serves a dict zone; per (name, type) it can be told to
truncate over UDP (TC, RFC 1035 §4.1.1), answer SERVFAIL or REFUSED, drop the
query (the client times out), or send forged replies first (a wrong ID, the
right ID from another port, or another name) to test RFC 5452 §9.1 matching.
Behaviours: "drop", "servfail", "refused", "truncate", "truncate-tcpdrop"
(TC over UDP, then the TCP connection is closed unanswered), "formerr-edns"
(FORMERR to queries carrying an OPT RR), "spoof-id", "spoof-port", "spoof-name",
"spoof-garbage" (a malformed datagram first).

    srv = FakeDnsServer(); srv.start()
    srv.add("example.org", TYPE_MX, MX(10, "mx.example.org"))
    srv.behaviour[("example.org", TYPE_MX)] = "truncate"
    ... srv.address ...; srv.stop()
"""

import selectors
import socket
import struct
import threading
from typing import Dict, List, Tuple

from protocols.dns import codec as dns
from protocols.dns.codec import Message, Question, Record

SOA_RECORD = dns.SOA("ns.test", "hostmaster.test", 1, 3600, 600, 86400, 300)


class FakeDnsServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.zone: Dict[Tuple[str, int], List[Tuple[int, object]]] = {}
        self.behaviour: Dict[Tuple[str, int], str] = {}
        self.queries: List[Tuple[str, str, int]] = []   # (proto, name, qtype), in arrival order
        self.udp_origins: List[Tuple[int, int]] = []    # (query ID, client source port) per UDP query
        self.soa_ttl = 300
        self.chase_cnames = True
        self.lock = threading.Lock()
        self.udp, self.tcp = self._bind_pair(host, self.family)
        self.address = self.udp.getsockname()[:2]
        self.other = socket.socket(self.family, socket.SOCK_DGRAM)  # for forged replies
        self.other.bind((host, 0))
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="dnsfake", daemon=True)
        self._stopping = False

    @staticmethod
    def _bind_pair(host: str, family: int, tries: int = 50):
        """UDP and TCP sockets on the same ephemeral port (the TCP port may be taken)."""
        for _ in range(tries):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.bind(udp.getsockname())
                tcp.listen(16)
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
        raise OSError("no free port pair on %s" % host)

    # -- zone --
    def add(self, name: str, rtype: int, data, ttl: int = 300) -> None:
        with self.lock:
            self.zone.setdefault((dns.normalize_name(name), rtype), []).append((ttl, data))

    def count(self, name: str, qtype: int) -> int:
        with self.lock:
            return sum(1 for _, n, t in self.queries if n == name and t == qtype)

    # -- lifecycle --
    def start(self) -> "FakeDnsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        for s in (self.udp, self.tcp, self.other, self._wake_r, self._wake_w):
            s.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, self._on_udp)
        sel.register(self.tcp, selectors.EVENT_READ, self._on_tcp)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        while not self._stopping:
            for key, _ in sel.select():
                if key.data is not None and not self._stopping:
                    key.data()
        sel.close()

    # -- answering --
    def answer(self, query: Message) -> Message:
        """An authoritative answer (RFC 1034 §4.3.2, with CNAME chasing)."""
        q = query.questions[0]
        reply = Message(id=query.id, qr=True, aa=True, rd=query.rd, questions=[q])
        name, seen = q.name, 0
        with self.lock:
            zone = dict(self.zone)
        while seen < 20:
            data = zone.get((name, q.qtype))
            if data:
                reply.answers += [Record(name, q.qtype, dns.CLASS_IN, ttl, d) for ttl, d in data]
                return reply
            cname = zone.get((name, dns.TYPE_CNAME))
            if not cname or q.qtype == dns.TYPE_CNAME:
                break
            reply.answers.append(Record(name, dns.TYPE_CNAME, dns.CLASS_IN, cname[0][0], cname[0][1]))
            name, seen = dns.normalize_name(cname[0][1]), seen + 1
            if not self.chase_cnames:
                return reply
        if not any(n == name for n, _ in zone):
            reply.rcode = dns.RCODE_NXDOMAIN
        reply.authority.append(Record("test", dns.TYPE_SOA, dns.CLASS_IN, self.soa_ttl, SOA_RECORD))
        return reply

    def _reply_for(self, data: bytes, proto: str):
        try:
            query = dns.decode_message(data)
        except dns.DnsFormatError:
            return None, None
        if len(query.questions) != 1:
            return None, None
        q = query.questions[0]
        with self.lock:
            self.queries.append((proto, q.name, q.qtype))
            how = self.behaviour.get((q.name, q.qtype), "")
        if how == "drop" or (how == "truncate-tcpdrop" and proto == "tcp"):
            return None, how
        if how == "formerr-edns" and any(r.rtype == dns.TYPE_OPT for r in query.additional):
            return Message(id=query.id, qr=True, rcode=dns.RCODE_FORMERR, questions=[q]), how
        if how in ("servfail", "refused"):
            rcode = dns.RCODE_SERVFAIL if how == "servfail" else dns.RCODE_REFUSED
            return Message(id=query.id, qr=True, rcode=rcode, questions=[q]), how
        return self.answer(query), how

    def _on_udp(self) -> None:
        data, addr = self.udp.recvfrom(65535)
        if len(data) >= 2:
            with self.lock:
                self.udp_origins.append((struct.unpack("!H", data[:2])[0], addr[1]))
        reply, how = self._reply_for(data, "udp")
        if reply is None:
            return
        if how.startswith("truncate"):
            reply.tc, reply.answers, reply.authority = True, [], []
        if how.startswith("spoof"):
            forged = Message(id=reply.id, qr=True, questions=reply.questions,
                             answers=[Record(reply.questions[0].name, dns.TYPE_A, 1, 300, "6.6.6.6")])
            if how == "spoof-id":
                forged.id ^= 0x5A5A
                self.udp.sendto(dns.encode_message(forged), addr)
            elif how == "spoof-port":
                self.other.sendto(dns.encode_message(forged), addr)
            elif how == "spoof-garbage":
                self.udp.sendto(dns.encode_message(reply)[:-3], addr)  # truncated: DnsFormatError
            elif how == "spoof-name":
                forged.questions = [Question("evil.test", reply.questions[0].qtype)]
                self.udp.sendto(dns.encode_message(forged), addr)
        self.udp.sendto(dns.encode_message(reply), addr)

    def _on_tcp(self) -> None:
        conn, _ = self.tcp.accept()
        conn.settimeout(5)
        with conn:
            try:
                while True:
                    head = self._recv_exact(conn, 2)
                    if head is None:
                        return
                    data = self._recv_exact(conn, struct.unpack("!H", head)[0])
                    reply, _ = self._reply_for(data or b"", "tcp")
                    if reply is None:
                        return
                    out = dns.encode_message(reply)
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
