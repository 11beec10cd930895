"""FolderView (protocols/imap/view.py) directly: sequence sets to UIDs, refresh
results recorded and announced in the order RFC 9051 §5.2 / §7.5.1 want, and
its size per message."""

import tracemalloc
import unittest

from protocols.backend.contracts import FolderChanges, FolderState, MessageMeta
from protocols.imap import grammar as g
from protocols.imap.view import BadSequence, FolderView


def meta(uid, flags=()):
    return MessageMeta(uid, frozenset(flags), 100, 1.0, uid)


def state(metas, recent=(), keywords=()):
    metas = tuple(metas)
    return FolderState(7, (metas[-1].uid + 1) if metas else 1, 1, metas, tuple(keywords), frozenset(recent))


def seqset(text):
    return g.sequence_set(text.encode())[0]


class ResolveTest(unittest.TestCase):
    def setUp(self):
        self.v = FolderView(state([meta(u) for u in (3, 5, 9, 20)]), rev2=False, readonly=False)

    def test_sequence_numbers(self):
        self.assertEqual(self.v.resolve(seqset("2:*"), False), [5, 9, 20])
        self.assertEqual(self.v.resolve(seqset("4:1"), False), [3, 5, 9, 20])
        self.assertEqual(self.v.resolve(seqset("1,1,3"), False), [3, 9])
        with self.assertRaises(BadSequence):
            self.v.resolve(seqset("5"), False)

    def test_uids(self):
        self.assertEqual(self.v.resolve(seqset("4:10"), True), [5, 9])
        self.assertEqual(self.v.resolve(seqset("21:*"), True), [20])     # * is the largest (RFC 9051 §6.4.9)
        self.assertEqual(self.v.resolve(seqset("100"), True), [])
        self.assertEqual([self.v.seq(u) for u in (3, 9, 4)], [1, 3, None])

    def test_saved_result(self):
        self.assertEqual(self.v.resolve(seqset("$"), False, saved=(20, 4, 3)), [3, 20])


class UpdatesTest(unittest.TestCase):
    def test_order_exists_never_lowers_and_expunge_waits(self):
        v = FolderView(state([meta(1), meta(2), meta(3)]), rev2=True, readonly=False)
        now = state([meta(1, ["\\Seen"]), meta(3), meta(4)], keywords=["$x"])
        v.apply(FolderChanges(now, new=(4,), expunged=(2,), changed=(1,)))
        self.assertEqual(v.flush(False), b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $x)\r\n"
                                         b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $x \\*)]"
                                         b" Flags permitted\r\n"
                                         b"* 4 EXISTS\r\n* 1 FETCH (FLAGS (\\Seen))\r\n")
        self.assertEqual(v.seq(4), 4)     # message 2 still holds its number
        self.assertEqual(v.flush(True), b"* 2 EXPUNGE\r\n")
        self.assertEqual((v.seq(4), len(v)), (3, 3))
        self.assertEqual(v.flush(True), b"")

    def test_expunges_highest_first_and_a_flag_change_back_is_not_sent(self):
        v = FolderView(state([meta(u) for u in range(1, 7)]), rev2=True, readonly=False)
        v.expunged([2, 5, 6])
        v.update(meta(3, ["\\Flagged"]))
        v.update(meta(3))
        self.assertEqual(v.flush(True), b"* 6 EXPUNGE\r\n* 5 EXPUNGE\r\n* 2 EXPUNGE\r\n")

    def test_recent_for_rev1_only(self):
        st = state([meta(1), meta(2)], recent=[2])
        rev1 = FolderView(st, rev2=False, readonly=False)
        rev2 = FolderView(st, rev2=True, readonly=False)
        self.assertEqual(rev1.flags_of(2), b"(\\Recent)")
        self.assertEqual(rev2.flags_of(2), b"()")
        rev1.apply(FolderChanges(state([meta(1), meta(2), meta(3)], recent=[2, 3]), new=(3,)))
        self.assertEqual(rev1.flush(False), b"* 3 EXISTS\r\n* 2 RECENT\r\n")

    def test_uids_below_the_last_are_never_inserted(self):
        v = FolderView(state([meta(5)]), rev2=True, readonly=False)
        v.apply(FolderChanges(state([meta(3), meta(5)]), new=(3,)))
        self.assertEqual(v.uids, [5])


class SizeTest(unittest.TestCase):
    def test_a_view_costs_little_per_message(self):
        """Every IDLE session holds a view (issue 10: memory of 1,000 IDLE
        connections): two list slots per message, no per-message dicts."""
        st = state([meta(u) for u in range(1, 10001)])
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            views = [FolderView(st, rev2=False, readonly=False) for _ in range(5)]
            per_message = (tracemalloc.get_traced_memory()[0] - before) / 5 / 10000
        finally:
            tracemalloc.stop()
        self.assertLess(per_message, 40, "%.1f bytes per message" % per_message)
        self.assertEqual(len(views[0]), 10000)


if __name__ == "__main__":
    unittest.main()
