"""A fake resolver for the SPF tests: a zone in a dict, answers given at once
(or queued, ``deferred=True``, and delivered by ``flush``), every question
recorded.  Names absent from the zone are NXDOMAIN; present names without
the asked type are "no records" (RFC 2308 NODATA); a name listed in
``temporary`` answers as a server failure (RCODE 2)."""

from protocols.dns import codec as dns
from protocols.dns.resolver import Answer, DnsError

TYPES = {"A": dns.TYPE_A, "AAAA": dns.TYPE_AAAA, "MX": dns.TYPE_MX, "PTR": dns.TYPE_PTR, "TXT": dns.TYPE_TXT}


class FakeResolver:
    def __init__(self, deferred=False):
        self.zone = {}
        self.temporary = set()
        self.queries = []
        self.deferred = deferred
        self.waiting = []

    def add(self, name, qtype, *values):
        """add("example.com", "TXT", "v=spf1 -all"); MX values as (pref, host)."""
        t = TYPES[qtype]
        out = self.zone.setdefault((name.lower().rstrip("."), t), [])
        for v in values:
            if t == dns.TYPE_TXT:
                v = tuple(s.encode() for s in v) if isinstance(v, tuple) else (v.encode(),)
            elif t == dns.TYPE_MX:
                v = dns.MX(*v)
            out.append(v)
        return self

    def answer(self, name, qtype):
        name = name.lower().rstrip(".")
        if name in self.temporary:
            return DnsError("temporary", "SERVFAIL from fake")
        try:
            dns.normalize_name(name)
        except dns.DnsNameError as exc:
            return DnsError("nxdomain", "invalid domain name %r: %s" % (name, exc))
        records = self.zone.get((name, qtype))
        if records:
            return Answer(list(records), 300, name)
        if any(n == name for n, _ in self.zone):
            return DnsError("nodata", "no records")
        return DnsError("nxdomain", "NXDOMAIN")

    def resolve(self, name, qtype, done):
        self.queries.append((name.lower().rstrip("."), qtype))
        result = self.answer(name, qtype)
        if self.deferred:
            self.waiting.append(lambda: done(result))
        else:
            done(result)

    def flush(self):
        while self.waiting:
            self.waiting.pop(0)()
