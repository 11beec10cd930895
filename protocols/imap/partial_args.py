"""partial-range of PARTIAL (RFC 9394 §4), for search.py and fetch_args.py
(grammar only; the rest of PARTIAL is in partial.py)."""

from __future__ import annotations

from typing import Tuple

from protocols.imap import grammar as g

Range = Tuple[int, int]     # as the client wrote it: both positive or both negative


def partial_range(buf: g.Buf) -> Tuple[Range, memoryview]:
    """partial-range = partial-range-first / partial-range-last (RFC 9394 §4):
    nz-number ":" nz-number, or "-" nz-number ":" "-" nz-number."""
    buf = g._mv(buf)
    last = bytes(buf[:1]) == b"-"
    first, rest = g.nz_number(buf[1:] if last else buf)
    rest = g.expect(b":-" if last else b":", rest)
    second, rest = g.nz_number(rest)
    return ((-first, -second) if last else (first, second)), rest
