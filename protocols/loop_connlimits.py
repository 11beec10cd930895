"""Connection limits at accept: ``max_connections`` and ``max_connections_per_ip``,
per listener, held across the workers of one supervisor (README "Workers").

The event loop (protocols/loop.py) asks a listener's counts ``admit(ip)`` for
each accepted connection and calls ``release(ip)`` when it closes
(protocols/loop_transport.py).  One process (``workers = 1``, an embedded or
test server) counts in ``LocalCounts``: two plain dictionaries, exact.  With
``workers = N`` one client address could otherwise hold N times the limit
(each worker counting alone); Postfix keeps such counts across its smtpd
processes in one anvil(8) server.  Here the supervisor makes a ``SharedTable``
before it forks, and every worker counts in it.

Design (chosen over messages on the sibling channel, protocols/loop_siblings.py,
which would be asynchronous: an answer from a peer process cannot arrive
between accept and the decision without blocking the loop, so those counts
would lag and need refreshing; shared memory is read at once).  The same table
has one more block that is not a listener: the login attempts in flight per
address group (protocols/supervisor.py ``AUTH_KEY``, protocols/backend/auth.py
``share_inflight``), admitted with a limit given per call (``admit(ip, per_ip)``).
The table:

* One anonymous shared ``mmap`` (``MAP_SHARED``; the forked workers inherit
  it), one *region* per worker, written only by that worker's loop thread:
  one writer per word, no lock, no lost update.  A lock shared between
  processes would be held by a worker killed while holding it forever.
* A region holds, per listener, a block of 4-byte counters: the connections
  the worker holds on that listener, then ``ROWS`` rows of ``slots`` counters
  indexed by a keyed hash of the client address (a counting filter, as a
  count-min sketch: no keys are stored, so there is no table to fill, no key
  to tear, nothing to delete).  A worker admitting a connection adds one to
  its total and to the address's counter in each row, *then* sums every
  region; the address's count is the smaller of the rows' sums.  Another
  address hashed to the same counter in every row only adds to it: the count
  is never below the truth, so a collision can refuse, never admit, one too
  many (conservative).  The hash is keyed with a secret drawn at start, so a
  client cannot aim at another address's counters; with ``slots`` at least
  ``SLOTS_PER_CONNECTION`` times ``max_connections`` a listener half full of
  connections (each at its address's limit) leaves an address a chance of
  about 1/256 of finding both its counters full (1/16 per row, squared).
* Bounded size: ``slots`` is a power of two between ``SLOTS_MIN`` and
  ``SLOTS_MAX``; the map is workers x listeners x (1 + ROWS x slots) x 4
  octets (8 workers, 7 listeners, the default max_connections = 1000: 3.7 MB
  mapped, pages only as touched).
* A worker that dies, SIGKILL included, has lost its connections with it:
  the supervisor zeroes its region when it reaps it (``clear``), before it
  starts its replacement.  Meanwhile the dead worker's counts only refuse.

Two workers admitting the same address at the same instant: each publishes
its addition before it sums, so the later of the two to sum sees both, as in
Dekker's mutual exclusion; the total then never passes the limit, and at worst
both refuse (conservative).  Python has no memory fence: the argument holds
where a worker's store is visible to the others before its own later loads
(x86-64's TSO, where a store waits only in the core's store buffer, which the
interpreter's many later stores drain long before it sums).  On weaker orders
(ARM) two workers racing inside those few nanoseconds could each admit one:
at most workers - 1 over, while those connections last; never N times.

Reads are not torn: a ``memoryview`` cast to ``"I"`` moves each counter with
one fixed-size 4-octet copy at a 4-aligned offset (a single load or store);
and a counter read while its writer changes it is the old or the new value,
both of which the argument above allows.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from typing import Dict, Hashable, List, Optional, Sequence

ROWS = 2                    # ours: two hashes; a false refusal needs a collision in both (squares its chance)
SLOTS_PER_CONNECTION = 8    # ours: counters a row per max_connections (held connections fill at most 1/8 of a row)
SLOTS_MIN = 1024            # ours: a small max_connections still spreads addresses
SLOTS_MAX = 1 << 15         # ours: 32,768 counters a row, 256 KiB per worker and listener at most
SECRET_SIZE = 16            # BLAKE2b key octets (RFC 7693 §2.5: up to 64); 128 bits of secret
WORD = 4                    # octets of a counter: the "I" item of a memoryview


class LocalCounts:
    """One process's counts for one listener (exact, two dictionaries)."""

    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.count = 0
        self.per_ip: Dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """One more connection from ``ip``, or False when a limit is reached."""
        if self.count >= self.max_total or self.per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        self.count += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.count -= 1
        left = self.per_ip[ip] - 1
        if left:
            self.per_ip[ip] = left
        else:
            del self.per_ip[ip]


def slots_for(max_connections: int) -> int:
    """Counters a row: a power of two, SLOTS_PER_CONNECTION per connection, within bounds."""
    want = max(SLOTS_MIN, min(SLOTS_MAX, SLOTS_PER_CONNECTION * max(1, max_connections)))
    return 1 << (want - 1).bit_length()


class SharedTable:
    """The counters of every worker of one supervisor for ``listeners`` (their
    keys, in one order for all); made before the fork, see the module docstring."""

    def __init__(self, workers: int, listeners: Sequence[Hashable], slots: int, secret: Optional[bytes] = None):
        if slots & (slots - 1) or slots <= 0:
            raise ValueError("slots must be a power of two: %r" % slots)
        self.workers, self.slots = workers, slots
        self.index = {key: n for n, key in enumerate(listeners)}
        self.block = 1 + ROWS * slots                       # counters per worker and listener
        self.region = self.block * len(self.index)          # counters per worker
        self.secret = secret if secret is not None else os.urandom(SECRET_SIZE)
        self._map = mmap.mmap(-1, max(WORD, workers * self.region * WORD))     # anonymous, MAP_SHARED
        self.words = memoryview(self._map).cast("I")
        assert self.words.itemsize == WORD

    def counts(self, worker: int, key: Hashable, max_total: int, max_per_ip: int) -> Optional["SharedCounts"]:
        """Worker ``worker``'s counts on listener ``key`` (None: not a listener of the table)."""
        listener = self.index.get(key)
        if listener is None or not 0 <= worker < self.workers:
            return None
        blocks = [self.words[start:start + self.block]
                  for start in (w * self.region + listener * self.block for w in range(self.workers))]
        return SharedCounts(self, blocks, worker, max_total, max_per_ip)

    def clear(self, worker: int) -> None:
        """Forget a dead worker's counts (supervisor, before starting its replacement)."""
        start = worker * self.region
        self.words[start:start + self.region] = memoryview(bytes(self.region * WORD)).cast("I")

    def slots_of(self, ip: str) -> List[int]:
        """The address's counter in each row (offsets into a block)."""
        digest = hashlib.blake2b(ip.encode("utf-8", "surrogateescape"), key=self.secret,
                                 digest_size=WORD * ROWS).digest()
        bits, mask = int.from_bytes(digest, "little"), self.slots - 1
        return [1 + row * self.slots + ((bits >> (8 * WORD * row)) & mask) for row in range(ROWS)]


class SharedCounts:
    """One worker's view of one listener's counts: ``admit``/``release`` as LocalCounts."""

    def __init__(self, table: SharedTable, blocks: List[memoryview], worker: int, max_total: int, max_per_ip: int):
        self.table, self.blocks, self.own = table, blocks, blocks[worker]
        self.max_total, self.max_per_ip = max_total, max_per_ip

    def admit(self, ip: str, per_ip: Optional[int] = None) -> bool:
        """Publish the connection in our region, then sum all regions; undo it when
        over (``per_ip``: this call's limit for the address, else ``max_per_ip``)."""
        where = [0] + self.table.slots_of(ip)
        self._add(where, 1)
        if self._over(where, self.max_per_ip if per_ip is None else per_ip):
            self._add(where, -1)
            return False
        return True

    def release(self, ip: str) -> None:
        self._add([0] + self.table.slots_of(ip), -1)

    def _add(self, where: List[int], step: int) -> None:
        own = self.own
        for i in where:
            own[i] = max(0, own[i] + step)      # never below 0, should a release ever outlive a clear

    def _over(self, where: List[int], per_ip: int) -> bool:
        """Sums including our own addition: the total, and the address's smallest row."""
        sums = [sum(block[i] for block in self.blocks) for i in where]
        return sums[0] > self.max_total or min(sums[1:]) > per_ip
