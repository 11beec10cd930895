"""PARTIAL (RFC 9394): paged SEARCH results and the PARTIAL modifier of UID FETCH.

``partial_args.partial_range`` parses partial-range (§4), used by search.py for the
``RETURN (PARTIAL 1:500)`` option and by fetch_args.py for
``UID FETCH ... (PARTIAL -1:-50)``; ``pick`` takes that window of results in
mailbox order (§3.1: 1 is the lowest UID, -1 the highest; "500:400" is
"400:500"); ``PartialCommands._partial_answer`` sends the ESEARCH with
``PARTIAL (range set)`` (or ``NIL`` when no result falls in the range, §3.1)
and keeps ``$`` as §3.2's Table 1 says for SAVE.
"""

from __future__ import annotations

from typing import List, Sequence

from protocols.imap import grammar as g
from protocols.imap import search_eval, wire

from protocols.imap.partial_args import Range, partial_range  # noqa: F401


def pick(items: Sequence[int], rng: Range) -> List[int]:
    """The results ``rng`` names among ``items`` (ascending, mailbox order);
    positions past either end are simply absent (§3.1)."""
    lo, hi = sorted((abs(rng[0]), abs(rng[1])))
    n = len(items)
    if rng[0] > 0:
        return list(items[lo - 1:hi])
    return list(items[max(n - hi, 0):max(n - lo + 1, 0)])


def fetch_window(uids: Sequence[int], rng: Range, uid_command: bool) -> List[int]:
    """RFC 9394 §3.3: the PARTIAL modifier extends UID FETCH only; the window
    of the UIDs the set names that exist, in UID order."""
    if not uid_command:
        raise g.ImapParseError("PARTIAL is a UID FETCH modifier (RFC 9394 §3.3)")
    return pick(uids, rng)


def range_text(rng: Range) -> bytes:
    return b"%d:%d" % rng


def ret_data(rng: Range, numbers: Sequence[int]) -> bytes:
    """ret-data-partial = "PARTIAL" SP "(" partial-range SP partial-results ")" (§4)."""
    return b"PARTIAL (" + range_text(rng) + b" " + (wire.sequence_set(numbers) if numbers else b"NIL") + b")"


class PartialCommands:
    """The ESEARCH answer of a SEARCH with RETURN (PARTIAL ...) (RFC 9394 §3.1, §3.2)."""

    def _partial_answer(self, head, returns, rng: Range, hits, modseq=None) -> None:
        """``hits``: the matching UIDs ascending; ``returns`` the other options;
        ``modseq``: the hits' highest MODSEQ for a search with a MODSEQ key
        (RFC 7162 §3.1.10), or None."""
        view = self._view
        window = pick(hits, rng)
        others = tuple(r for r in returns if r not in ("PARTIAL", "SAVE"))
        if "SAVE" in returns:       # §3.2 Table 1
            if "COUNT" in returns:
                saved = list(hits)
            else:
                saved = set(window)
                if hits and "MIN" in returns:
                    saved.add(hits[0])
                if hits and "MAX" in returns:
                    saved.add(hits[-1])
            self._saved = tuple(sorted(saved))
        numbers = hits if head.uid else [view.seq(u) for u in hits]
        shown = window if head.uid else [view.seq(u) for u in window]
        if others:
            line = search_eval.esearch(head.tag, head.uid, numbers, others)[:-2]
        else:
            line = b"* ESEARCH (TAG " + wire.quoted(head.tag) + b")" + (b" UID" if head.uid else b"")
        tail = b" MODSEQ %d" % modseq if modseq is not None else b""
        self._emit(line + b" " + ret_data(rng, shown) + tail + b"\r\n")
