"""store/folder.py: the one module a mailbox changes through, on Dovecot's files."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from store import dovecot_files as dv
from store.folder import Folder, open_folder
from store.maildrop import open_maildrop
from store.modseq import MODSEQ_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MSG = b"Subject: hi\r\n\r\nbody\r\n"


def make_folder(parent, name="box"):
    path = os.path.join(parent, name)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub))
    return path


def put(box, name, data, sub="new"):
    with open(os.path.join(box, sub, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class FolderTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="folder-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.box = make_folder(self.tmp)

    def uidlist(self):
        return read(os.path.join(self.box, dv.UIDLIST)).decode()


class UidTests(FolderTestCase):
    def test_uids_follow_delivery_order_in_a_dovecot_uidlist(self):
        put(self.box, "1001.M2P1.host", MSG)
        put(self.box, "1000.M5P1.host", MSG)
        snap = Folder(self.box).snapshot()
        self.assertEqual([(m.uid, m.key) for m in snap.messages], [(1, "1000.M5P1.host"), (2, "1001.M2P1.host")])
        header, records, _n = dv.parse_uidlist(self.uidlist())
        self.assertEqual(header.uidvalidity, snap.uidvalidity)
        self.assertEqual(len(header.guid), 32)
        self.assertEqual([r.uid for r in records], [1, 2])

    def test_new_messages_append_a_line_instead_of_rewriting(self):
        folder = Folder(self.box)
        put(self.box, "1000.M1P1.host", MSG)
        folder.sync()
        before, ino = self.uidlist(), os.stat(os.path.join(self.box, dv.UIDLIST)).st_ino
        put(self.box, "1001.M1P1.host", MSG)
        self.assertEqual(folder.sync().new, (2,))
        after = self.uidlist()
        self.assertTrue(after.startswith(before), "appended, not rewritten")
        self.assertEqual(after[len(before):], "2 W%d :1001.M1P1.host\n" % len(MSG))
        self.assertEqual(os.stat(os.path.join(self.box, dv.UIDLIST)).st_ino, ino)

    def test_a_dovecot_uidlist_with_stale_names_keeps_every_uid_and_field(self):
        with open(os.path.join(self.box, dv.UIDLIST), "w") as f:
            f.write("3 V777 N40 G0123456789abcdef0123456789abcdef\n"
                    "30 Pold-uidl :1000.M1P1.host:2,\n"          # stale: now seen and flagged
                    "31 Gabcd :1001.M1P1.host,S=5\n")              # stale: no size in the record
        put(self.box, "1000.M1P1.host:2,FS", b"a\nb\n", "cur")
        put(self.box, "1001.M1P1.host,S=5", b"a\nbc\n")
        snap = Folder(self.box).snapshot()
        self.assertEqual((snap.uidvalidity, snap.uidnext), (777, 40))
        self.assertEqual([(m.uid, m.flags, m.size) for m in snap.messages], [(30, "FS", 6), (31, "", 7)])
        _h, records, _n = dv.parse_uidlist(self.uidlist())   # rewritten once to cache the sizes (W)
        self.assertEqual([r.ext for r in records], [(("P", "old-uidl"), ("W", "6")), (("G", "abcd"), ("W", "7"))])
        self.assertEqual(records[0].name, "1000.M1P1.host:2,FS")

    def test_dot_files_and_directories_are_not_messages(self):
        put(self.box, ".hidden", MSG)
        os.mkdir(os.path.join(self.box, "cur", "subdir"))
        put(self.box, "1000.M1P1.host", MSG)
        self.assertEqual([m.key for m in Folder(self.box).snapshot().messages], ["1000.M1P1.host"])

    def test_records_appended_by_another_process_are_read_from_the_tail(self):
        folder = Folder(self.box)
        put(self.box, "1000.M1P1.host", MSG)
        folder.sync()
        put(self.box, "1001.M1P1.host", MSG)
        Folder(self.box).sync()                        # another process gives it UID 2
        put(self.box, "1002.M1P1.host", MSG)
        self.assertEqual([m.uid for m in folder.snapshot().messages], [1, 2, 3])

    def test_a_siblings_appends_cost_their_own_octets_not_the_whole_file(self):
        # Two workers delivering to one mailbox (issue 14): each note of one re-read
        # the whole uidlist, ever larger, that the other had appended to.
        name = "1000.M1P1.hóst"                # UTF-8 in a name: the offset counts octets
        put(self.box, name, MSG)
        a, b = Folder(self.box), Folder(self.box)
        a.sync()
        put(self.box, "1001.M1P1.host", MSG)
        self.assertEqual(b.note_delivered(["1001.M1P1.host"]), {"1001.M1P1.host": 2})
        put(self.box, "1002.M1P1.host", MSG)
        size = os.path.getsize(os.path.join(self.box, dv.UIDLIST))
        reads, real_open = [], open

        def counting_open(path, mode="r", *args, **kw):
            f = real_open(path, mode, *args, **kw)
            if str(path).endswith(dv.UIDLIST) and "b" in mode:
                real_read = f.read
                f.read = lambda *n: reads.append(real_read(*n)) or reads[-1]
            return f
        with mock.patch("builtins.open", counting_open), \
                mock.patch.object(dv, "parse_uidlist", side_effect=AssertionError("whole file parsed")):
            self.assertEqual(a.note_delivered(["1002.M1P1.host"]), {"1002.M1P1.host": 3})
        self.assertLess(sum(map(len, reads)), size / 2, reads)
        self.assertEqual([(m.uid, m.key) for m in Folder(self.box).snapshot().messages],
                         [(1, name), (2, "1001.M1P1.host"), (3, "1002.M1P1.host")])

    def test_a_torn_line_left_by_a_dead_writer_is_dropped_before_appending(self):
        folder = Folder(self.box)
        put(self.box, "1000.M1P1.host", MSG)
        folder.sync()
        with open(os.path.join(self.box, dv.UIDLIST), "a") as f:
            f.write("2 W12 :1001.M")                                  # crashed mid-append
        put(self.box, "1002.M1P1.host", MSG)
        folder.sync()
        header, records, parsed = dv.parse_uidlist(self.uidlist())
        self.assertEqual([(r.uid, r.key) for r in records], [(1, "1000.M1P1.host"), (2, "1002.M1P1.host")])
        self.assertEqual(parsed, len(self.uidlist()))

    def test_a_lost_uidlist_gives_a_greater_uidvalidity(self):
        put(self.box, "1000.M1P1.host", MSG)
        old = Folder(self.box).snapshot().uidvalidity
        os.unlink(os.path.join(self.box, dv.UIDLIST))
        self.assertGreater(Folder(self.box).snapshot().uidvalidity, old)   # RFC 3501 §2.3.1.1, same second too


class SizeTests(FolderTestCase):
    def test_lf_file_named_with_only_s_is_counted_in_crlf(self):
        """Courier/maildrop/procmail write LF files with ,S=: LIST must say what RETR sends."""
        data = b"Subject: x\n\nline1\nline2\n"
        put(self.box, "1000.M1P1.host,S=%d" % len(data), data)
        with open_maildrop(self.box) as drop:
            self.assertEqual(drop.messages[0].size, len(data.replace(b"\n", b"\r\n")))
        self.assertIn(" W%d :" % len(data.replace(b"\n", b"\r\n")), self.uidlist())

    def test_w_in_the_name_is_trusted_without_reading(self):
        put(self.box, "1000.M1P1.host,S=3,W=99", b"abc")
        self.assertEqual(Folder(self.box).snapshot().messages[0].size, 99)


class CrlfTests(unittest.TestCase):
    def test_to_crlf_is_the_bare_lf_rule(self):
        """read_crlf's conversion: every LF not after a CR becomes CRLF, any
        other octet (a CR alone, CR CR LF) stays; checked against the
        look-behind regex it replaces, over every string of CR, LF, "a" up to 7."""
        import itertools
        import re
        from store.folder_imap import to_crlf
        bare_lf = re.compile(rb"(?<!\r)\n")
        for n in range(8):
            for combo in itertools.product(b"\r\na", repeat=n):
                data = bytes(combo)
                self.assertEqual(to_crlf(data), bare_lf.sub(b"\r\n", data), data)


class FlagTests(FolderTestCase):
    def setUp(self):
        super().setUp()
        put(self.box, "1000.M1P1.host,S=4,W=4", b"a\r\n\r")
        put(self.box, "1001.M1P1.host,S=4,W=4", b"b\r\n\r")
        self.folder = Folder(self.box)
        self.folder.sync()

    def test_flags_add_remove_replace(self):
        res = self.folder.set_flags([1, 2], "FS")
        self.assertEqual([(c.uid, c.flags) for c in res.changed], [(1, "FS"), (2, "FS")])
        self.assertEqual(res.changed[0].modseq, res.changed[1].modseq)
        self.folder.set_flags([1], "S", "remove")
        self.folder.set_flags([2], "D", "replace")
        self.assertEqual(sorted(os.listdir(os.path.join(self.box, "cur"))),
                         ["1000.M1P1.host,S=4,W=4:2,F", "1001.M1P1.host,S=4,W=4:2,D"])

    def test_keywords_go_to_dovecot_keywords_and_letters(self):
        self.folder.set_keywords([1], ["$Junk", "work"])
        res = self.folder.set_keywords([2], ["work"])
        self.assertEqual(res.changed[0].keywords, frozenset({"work"}))
        self.assertEqual(read(os.path.join(self.box, dv.KEYWORDS)), b"0 $Junk\n1 work\n")
        self.assertEqual(sorted(os.listdir(os.path.join(self.box, "cur"))),
                         ["1000.M1P1.host,S=4,W=4:2,ab", "1001.M1P1.host,S=4,W=4:2,b"])
        self.folder.set_keywords([1], ["work"], "remove")
        self.assertEqual(self.folder.snapshot().by_uid(1).keywords, frozenset({"$Junk"}))

    def test_keywords_written_by_dovecot_are_read(self):
        with open(os.path.join(self.box, dv.KEYWORDS), "w") as f:
            f.write("0 $Junk\n1 $NonJunk\n")
        os.rename(os.path.join(self.box, "new", "1000.M1P1.host,S=4,W=4"),
                  os.path.join(self.box, "cur", "1000.M1P1.host,S=4,W=4:2,Sb"))
        msg = Folder(self.box).snapshot().by_uid(1)
        self.assertEqual((msg.flags, msg.keywords), ("S", frozenset({"$NonJunk"})))

    def test_a_27th_keyword_is_refused(self):
        self.folder.set_keywords([1], ["k%d" % i for i in range(26)])
        with self.assertRaises(ValueError):
            self.folder.set_keywords([2], ["one-too-many"])

    def test_unchanged_since_reports_modified(self):
        modseq = self.folder.snapshot().highestmodseq
        self.folder.set_flags([1], "F")
        res = self.folder.set_flags([1, 2], "S", unchanged_since=modseq)
        self.assertEqual(res.modified, (1,))              # RFC 7162 §3.1.3
        self.assertEqual([c.uid for c in res.changed], [2])


class ModseqTests(FolderTestCase):
    def test_highestmodseq_of_an_empty_folder_is_not_zero(self):
        self.assertGreater(Folder(self.box).snapshot().highestmodseq, 0)

    def test_modseq_grows_with_each_change_and_across_restarts(self):
        folder = Folder(self.box)
        seen = [folder.snapshot().highestmodseq]
        seen.append(folder.append(MSG).modseq)
        seen.append(folder.set_flags([1], "S").changed[0].modseq)
        seen.append(Folder(self.box).snapshot().highestmodseq)       # "restart": a new object
        seen.append(Folder(self.box).set_flags([1], "F").changed[0].modseq)
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(set(seen)), 4, seen)                   # the restart itself changes nothing

    def test_two_writers_modseqs_interleave_and_only_grow(self):
        a, b = Folder(self.box), Folder(self.box)          # as two processes would hold them
        a.append(MSG)
        a.append(MSG)
        seen = []
        for i in range(6):
            writer, uid = (a, 1) if i % 2 else (b, 2)
            seen.append(writer.set_flags([uid], "FS"[(i // 2) % 2], "replace").changed[0].modseq)
            other = b if writer is a else a
            self.assertEqual(other.snapshot().highestmodseq, seen[-1])
        self.assertEqual(seen, sorted(set(seen)))

    def test_after_a_reboot_modseq_jumps_past_what_an_unsynced_tail_held(self):
        folder = Folder(self.box)
        folder.append(MSG)
        before = folder.set_flags([1], "S").changed[0].modseq
        with mock.patch("store.modseq.BOOT_ID", "another-boot"):
            after = Folder(self.box).set_flags([1], "F").changed[0].modseq
        self.assertGreater(after, max(before, int(time.time() * 1000000) - 10 ** 7))
        later = Folder(self.box).set_flags([1], "R").changed[0].modseq       # back in this boot
        self.assertGreater(later, after)

    def test_flags_changed_behind_our_back_get_a_new_modseq(self):
        folder = Folder(self.box)
        uid = folder.append(MSG).uid
        msg = folder.snapshot().by_uid(uid)
        os.rename(msg.path, msg.path.rsplit(":2,", 1)[0] + ":2,R")   # mutt, or Dovecot
        after = Folder(self.box).snapshot().by_uid(uid)
        self.assertEqual(after.flags, "R")
        self.assertGreater(after.modseq, msg.modseq)

    def test_a_lost_journal_keeps_uidvalidity_and_raises_modseq(self):
        folder = Folder(self.box)
        folder.append(MSG)
        before = folder.snapshot()
        os.unlink(os.path.join(self.box, MODSEQ_FILE))
        after = Folder(self.box).snapshot()
        self.assertEqual(after.uidvalidity, before.uidvalidity)
        self.assertGreater(after.highestmodseq, before.highestmodseq)
        uids, complete = Folder(self.box).expunged_since(before.highestmodseq)
        self.assertFalse(complete, "clients must resync")

    def test_expunge_log_answers_vanished(self):
        folder = Folder(self.box)
        for _ in range(3):
            folder.append(MSG)
        mark = folder.snapshot().highestmodseq
        result = folder.expunge([2])
        self.assertEqual(result.uids, (2,))
        self.assertGreater(result.modseq, mark)
        os.unlink(folder.snapshot().by_uid(3).path)                  # expunged by someone else
        self.assertEqual(Folder(self.box).expunged_since(mark), ([2, 3], True))
        self.assertEqual(Folder(self.box).expunged_since(result.modseq)[0], [3])


class AppendCopyMoveTests(FolderTestCase):
    def test_append_is_stored_with_flags_keywords_and_date(self):
        folder = Folder(self.box)
        res = folder.append(MSG, "S", ["$Forwarded"], internaldate=1000000000)
        msg = folder.snapshot().by_uid(res.uid)
        self.assertEqual((msg.flags, msg.keywords, msg.size), ("S", frozenset({"$Forwarded"}), len(MSG)))
        self.assertEqual(read(msg.path), MSG.replace(b"\r\n", b"\n"))
        self.assertEqual(os.stat(msg.path).st_mtime, 1000000000)
        self.assertEqual(os.listdir(os.path.join(self.box, "tmp")), [])

    def test_append_keeps_bytes_that_lf_could_not_rebuild(self):
        folder = Folder(self.box)
        odd = b"Subject: x\r\n\r\nbare\nlf\r\n"
        msg = folder.snapshot() and folder.append(odd)
        self.assertEqual(read(folder.snapshot().by_uid(msg.uid).path), odd)

    def test_copy_and_move_keep_flags_keywords_and_date(self):
        src, dst = Folder(self.box), Folder(make_folder(self.tmp, ".Archive"))
        a = src.append(MSG, "F", ["$Label1"], internaldate=1000000000).uid
        b = src.append(b"Subject: two\r\n\r\n").uid
        copied = src.copy([a], dst)
        self.assertEqual(copied.uid_map, ((a, 1),))
        self.assertEqual(copied.uidvalidity, dst.snapshot().uidvalidity)
        moved, expunged = src.move([b], dst)
        self.assertEqual(moved.uid_map, ((b, 2),))
        self.assertEqual(expunged.uids, (b,))
        self.assertEqual([m.uid for m in src.snapshot().messages], [a])
        first = dst.snapshot().by_uid(1)
        self.assertEqual((first.flags, first.keywords), ("F", frozenset({"$Label1"})))
        self.assertEqual(os.stat(first.path).st_mtime, 1000000000)
        self.assertEqual(read(first.path), read(src.snapshot().by_uid(a).path))


class ConversionTests(FolderTestCase):
    def test_mailsrv_uidlist_and_keywords_are_converted_once(self):
        put(self.box, "1000.M1P1.host", MSG)
        put(self.box, "1001.M1P1.host", b"a\nb\n", "cur")
        os.rename(os.path.join(self.box, "cur", "1001.M1P1.host"), os.path.join(self.box, "cur", "1001.M1P1.host:2,S"))
        with open(os.path.join(self.box, "mailsrv-uidlist"), "w") as f:
            f.write("3 V1234 N17\n5 W%d :1000.M1P1.host\n9 W6 :1001.M1P1.host\n" % len(MSG))
        with open(os.path.join(self.box, "mailsrv-keywords"), "w") as f:
            json.dump({"version": 1, "keywords": {"1001.M1P1.host": ["$Junk"]}}, f)
        snap = Folder(self.box).snapshot()
        self.assertEqual((snap.uidvalidity, snap.uidnext), (1234, 17))
        self.assertEqual([(m.uid, m.flags, m.keywords) for m in snap.messages],
                         [(5, "", frozenset()), (9, "S", frozenset({"$Junk"}))])
        self.assertFalse(os.path.exists(os.path.join(self.box, "mailsrv-uidlist")))
        self.assertTrue(os.path.exists(os.path.join(self.box, "mailsrv-uidlist.converted")))
        os.unlink(os.path.join(self.box, dv.UIDLIST))    # never converted again: a new UIDVALIDITY instead
        self.assertNotEqual(Folder(self.box).snapshot().uidvalidity, 1234)


class OldUidlistParseTests(unittest.TestCase):
    """The old mailsrv-uidlist, read once to convert it (store/folder_convert.py)."""

    def test_rows_with_and_without_a_cached_size(self):
        from store.folder_convert import parse_uidlist
        text = "3 V99 N8\n1 :1.a.host,S=5\n7 W12 :2.b host\n"
        self.assertEqual(parse_uidlist(text), (99, 8, [(1, "1.a.host,S=5", None), (7, "2.b host", 12)]))

    def test_rejects_what_breaks_the_uid_invariants(self):
        from store.folder_convert import CorruptIndex, parse_uidlist
        for text in ("", "2 V1 N2\n", "3 V0 N2\n", "3 V1 N2\n2 :a\n", "3 V1 N5\n1 :a\n2 :a\n",
                     "3 V1 N5\n1 a\n", "3 V1 N5\nx :a\n", "3 N5\n"):
            with self.subTest(text=text), self.assertRaises(CorruptIndex):
                parse_uidlist(text)


class DeliveryTests(FolderTestCase):
    def test_note_delivered_appends_the_uid_line_without_a_scan(self):
        folder = Folder(self.box)
        folder.append(MSG)
        name = "2000.M1P9Q1.host,S=%d,W=%d" % (len(MSG), len(MSG))
        put(self.box, name, MSG)
        self.assertEqual(folder.note_delivered([name]), {name: 2})
        self.assertTrue(self.uidlist().endswith("2 :%s\n" % name))
        self.assertEqual(folder.note_delivered([name]), {name: 2})       # idempotent
        snap = Folder(self.box).snapshot()
        self.assertEqual([m.uid for m in snap.messages], [1, 2])
        self.assertGreater(snap.by_uid(2).modseq, snap.by_uid(1).modseq)


class ChangeDetectionTests(FolderTestCase):
    def test_changed_since_sees_a_delivery_by_another_writer(self):
        folder = open_folder(self.box)
        self.assertIs(folder, open_folder(self.box + "/"))
        folder.sync()
        token = folder.token()
        put(self.box, "1000.M1P1.host", MSG)
        self.assertTrue(folder.changed_since(token))


CHILD = r"""
import sys
from store.folder import Folder
folder = Folder(sys.argv[1])
for i in range(int(sys.argv[2])):
    folder.append(b"Subject: %s %d\r\n\r\nx\r\n" % (sys.argv[3].encode(), i))
"""


class ConcurrencyTests(FolderTestCase):
    def test_threads_appending_and_flagging_at_once(self):
        shared, other = open_folder(self.box), Folder(self.box)    # one object per folder, and a second
        errors = []

        def work(folder, tag):
            try:
                for i in range(15):
                    uid = folder.append(b"Subject: %s %d\r\n\r\n" % (tag, i)).uid
                    folder.set_flags([uid], "S")
            except Exception as e:                                   # pragma: no cover (reported below)
                errors.append(e)
        threads = [threading.Thread(target=work, args=(f, t)) for f, t in
                   ((shared, b"a"), (shared, b"b"), (other, b"c"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        snap = Folder(self.box).snapshot()
        self.assertEqual([m.uid for m in snap.messages], list(range(1, 46)))
        self.assertEqual({m.flags for m in snap.messages}, {"S"})

    def test_two_processes_appending_never_share_a_uid(self):
        env = dict(os.environ, PYTHONPATH=ROOT)
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, self.box, "40", tag], env=env)
                 for tag in ("one", "two")]
        for p in procs:
            self.assertEqual(p.wait(timeout=120), 0)
        snap = Folder(self.box).snapshot()
        uids = [m.uid for m in snap.messages]
        self.assertEqual(len(uids), 80)
        self.assertEqual(sorted(set(uids)), uids)
        _h, records, _n = dv.parse_uidlist(self.uidlist())
        self.assertEqual(len({r.uid for r in records}), len(records))
        self.assertEqual(len({r.key for r in records}), len(records))


if __name__ == "__main__":
    unittest.main()
