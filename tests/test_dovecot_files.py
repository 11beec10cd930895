"""Dovecot's control files (store/dovecot_files.py): parse/format round trips on
samples written the way Dovecot's documentation and source describe them."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from store import dovecot_files as dv

# As Dovecot 2.3 writes it: header with the mailbox GUID, a record whose name
# carries ,W= (no W field), one with a W field and a stale ":2,F" name, and
# records with extension fields we do not use (G guid, P POP3 UIDL, O order,
# and a letter Dovecot may add one day).
DOVECOT_UIDLIST = (
    "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
    "25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n"
    "25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n"
    "25018 G0123456789abcdef0123456789abcdef P0000abcd O3 :1276533074.M1P1.kurkku,S=10:2,Sab\n"
    "25019 Zfuture W12 :1276533075.M2P1.kurkku\n"
)


class UidlistTests(unittest.TestCase):
    def test_dovecot_sample_round_trips_byte_for_byte(self):
        header, records, parsed = dv.parse_uidlist(DOVECOT_UIDLIST)
        self.assertEqual((header.uidvalidity, header.nextuid), (1275660208, 25022))
        self.assertEqual(header.guid, "3085f01b7f11094c501100008c4a11c1")
        self.assertEqual([r.uid for r in records], [25006, 25017, 25018, 25019])
        self.assertEqual(parsed, len(DOVECOT_UIDLIST))
        self.assertEqual(dv.format_uidlist(header, records).decode(), DOVECOT_UIDLIST)

    def test_records_match_on_the_base_name_not_the_stale_flags(self):
        _h, records, _n = dv.parse_uidlist(DOVECOT_UIDLIST)
        self.assertEqual(records[1].key, "1276533073.M242911P3632.kurkku")
        self.assertEqual(records[1].name, "1276533073.M242911P3632.kurkku:2,F")
        self.assertEqual(records[1].field("W"), "2481")

    def test_unknown_extension_fields_are_kept(self):
        _h, records, _n = dv.parse_uidlist(DOVECOT_UIDLIST)
        self.assertEqual(records[2].ext, (("G", "0123456789abcdef0123456789abcdef"), ("P", "0000abcd"), ("O", "3")))
        self.assertEqual(records[3].ext, (("Z", "future"), ("W", "12")))
        self.assertIn("25019 Zfuture W12 :", dv.format_record(records[3]))

    def test_unknown_header_fields_are_kept(self):
        header = dv.parse_header("3 N7 V42 Xnew G00ff")
        self.assertEqual((header.uidvalidity, header.nextuid, header.guid), (42, 7, "00ff"))
        self.assertEqual(dv.format_header(header), "3 V42 N7 G00ff Xnew\n")

    def test_a_torn_last_line_is_not_parsed(self):
        text = DOVECOT_UIDLIST + "25020 :1276533076.M3P"
        header, records, parsed = dv.parse_uidlist(text)
        self.assertEqual(records[-1].uid, 25019)
        self.assertEqual(parsed, len(DOVECOT_UIDLIST))

    def test_appended_records_beyond_n_raise_uidnext(self):
        header, _r, _n = dv.parse_uidlist("3 V5 N2 G00\n1 :a\n2 :b\n7 :c\n")
        self.assertEqual(header.nextuid, 8)

    def test_broken_files_are_refused_with_the_old_validity(self):
        for text in ("", "1 V5 N2\n", "3 N2\n", "3 V5 N2\nx :a\n", "3 V5 N9\n2 :a\n1 :b\n"):
            with self.subTest(text=text), self.assertRaises(dv.UidlistError):
                dv.parse_uidlist(text)
        with self.assertRaises(dv.UidlistError) as cm:
            dv.parse_uidlist("3 V5 N9\n2 :a\n1 :b\n")
        self.assertEqual(cm.exception.validity, 5)


class KeywordsTests(unittest.TestCase):
    def test_round_trip_and_letters(self):
        text = "0 $Junk\n1 $NonJunk\n3 $Label1\n"
        table = dv.parse_keywords(text)
        self.assertEqual(table, {0: "$Junk", 1: "$NonJunk", 3: "$Label1"})
        self.assertEqual(dv.format_keywords(table).decode(), text)
        self.assertEqual([dv.keyword_letter(i) for i in (0, 1, 25)], ["a", "b", "z"])
        self.assertEqual(dv.letter_index("l"), 11)

    def test_bad_lines_and_indexes_past_z_are_skipped(self):
        self.assertEqual(dv.parse_keywords("x $a\n26 $b\n2\n2 $c\n"), {2: "$c"})


class SubscriptionsTests(unittest.TestCase):
    def test_version_2_round_trip_with_tab_escapes(self):
        names = ["INBOX", "Sent", "Work.2026", "odd\tname"]
        data = dv.format_subscriptions(names).decode()
        self.assertTrue(data.startswith("V\t2\n\n"))
        self.assertIn("Work\t2026\n", data)
        self.assertIn("odd\x01tname\n", data)
        self.assertEqual(dv.parse_subscriptions(data), names)

    def test_update_under_the_dotlock_keeps_a_version_1_list(self):
        tmp = tempfile.mkdtemp(prefix="subs-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(os.path.join(tmp, dv.SUBSCRIPTIONS), "w") as f:
            f.write("Sent\nLists.Work\n")                  # version 1, as older mailsrv wrote it
        self.assertEqual(dv.update_subscriptions(tmp, add=["Trash", "Sent"], remove=["Lists.Work"]),
                         ["Sent", "Trash"])
        with open(os.path.join(tmp, dv.SUBSCRIPTIONS)) as f:
            self.assertEqual(f.read(), "V\t2\n\nSent\nTrash\n")
        self.assertFalse(os.path.exists(os.path.join(tmp, dv.SUBSCRIPTIONS + ".lock")))

    def test_version_1_is_one_name_a_line(self):
        self.assertEqual(dv.parse_subscriptions("Sent\nTrash\n\n"), ["Sent", "Trash"])


class DotlockTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dotlock-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.target = os.path.join(self.tmp, dv.UIDLIST)

    def test_lock_is_exclusive_and_released(self):
        with dv.Dotlock(self.target):
            self.assertTrue(os.path.exists(self.target + ".lock"))
            with self.assertRaises(dv.LockTimeout):
                dv.Dotlock(self.target, timeout_s=0.05).acquire()
        self.assertFalse(os.path.exists(self.target + ".lock"))
        dv.Dotlock(self.target, timeout_s=0.05).acquire().release()

    def test_a_lock_untouched_for_120_seconds_is_stale(self):
        with open(self.target + ".lock", "w"):
            pass
        old = time.time() - dv.LOCK_STALE_S - 5
        os.utime(self.target + ".lock", (old, old))
        lock = dv.Dotlock(self.target, timeout_s=1).acquire()
        lock.release()

    def test_the_lock_of_a_dead_process_of_this_host_is_stale_at_once(self):
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                               stdout=subprocess.PIPE, check=True, timeout=30)
        with open(self.target + ".lock", "w") as f:
            f.write("%s:%s" % (child.stdout.decode().strip(), socket.gethostname()))
        dv.Dotlock(self.target, timeout_s=1).acquire().release()

    def test_a_holder_killed_in_any_step_leaves_a_lock_naming_it(self):
        """A holder killed while taking the lock or in the middle of replace() (before the
        rename that publishes the new list) leaves a lock that still names it, so the next
        taker removes it at once instead of waiting 120 s (found by tests/test_imap_kill.py)."""
        for step in ("link", "rename", "replace"):
            with self.subTest(killed_in=step):
                pid = os.fork()
                if pid == 0:                              # pragma: no cover (the child)
                    def die(*_a, **_k):
                        os._exit(0)                       # as SIGKILL: no cleanup runs
                    try:
                        if step == "link":
                            real_link = os.link
                            os.link = lambda a, b: (real_link(a, b), die())
                            dv.Dotlock(self.target).acquire()
                        else:
                            lock = dv.Dotlock(self.target).acquire()
                            os.rename = os.replace = die
                            lock.replace(b"3 V1 N2 G00\n1 :half-written\n")
                    finally:
                        os._exit(1)
                _, status = os.waitpid(pid, 0)
                self.assertEqual(os.waitstatus_to_exitcode(status), 0)
                self.assertTrue(os.path.exists(self.target + ".lock"), "the child died holding it")
                started = time.monotonic()
                dv.Dotlock(self.target, timeout_s=5).acquire().release()
                self.assertLess(time.monotonic() - started, 2.0)

    def test_replace_writes_through_the_lock_file(self):
        lock = dv.Dotlock(self.target).acquire()
        lock.replace(b"3 V1 N1 G00\n")
        self.assertFalse(os.path.exists(self.target + ".lock"))
        with open(self.target, "rb") as f:
            self.assertEqual(f.read(), b"3 V1 N1 G00\n")


if __name__ == "__main__":
    unittest.main()
