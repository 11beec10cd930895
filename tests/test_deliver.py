"""store/deliver.py: durable Maildir delivery, failure cleanup, batching."""

import errno
import os
import shutil
import tempfile
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from store.deliver import (Deliverer, DeliveryJob, DeliveryResult, FileOps, deliver_batch,
                           message_bytes)
from store.maildir import MailStore

DATA = b"Received: from x\r\nSubject: test\r\n\r\nHello\r\n"


class CountingFS(FileOps):
    """FileOps that counts calls and raises injected errors.

    ``fail[op]`` is a predicate over the call's path (or fd) returning an
    errno to raise, or None."""

    def __init__(self):
        self.calls = {}
        self.fail = {}
        self.paths = {}
        self._mutex = threading.Lock()

    def _hit(self, op, arg):
        with self._mutex:
            self.calls[op] = self.calls.get(op, 0) + 1
        check = self.fail.get(op)
        code = check(arg) if check else None
        if code:
            raise OSError(code, os.strerror(code))

    def create(self, path):
        self._hit("create", path)
        fd = super().create(path)
        self.paths[fd] = path
        return fd

    def write_all(self, fd, data):
        self._hit("write", self.paths.get(fd))
        super().write_all(fd, data)

    def fsync(self, fd):
        self._hit("fsync", self.paths.get(fd))
        super().fsync(fd)

    def link(self, src, dst):
        self._hit("link", dst)
        super().link(src, dst)

    def rename(self, src, dst):         # the last recipient's way into new/: counted as one
        self._hit("link", dst)
        self._hit("rename", dst)
        super().rename(src, dst)

    def unlink(self, path):
        self._hit("unlink", path)
        super().unlink(path)

    def fsync_dir(self, path):
        self._hit("fsync_dir", path)
        super().fsync_dir(path)


class _StoreCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-deliver-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = MailStore(self.dir, "mx.test")
        for u in ("alice@example.org", "bob@example.org", "carol@other.example"):
            self.store.create_mailbox(u)

    def files(self, user, sub="new"):
        return sorted(os.listdir(os.path.join(self.store.maildir_path(user), sub)))

    def read(self, path):
        with open(path, "rb") as fh:
            return fh.read()

    def assertNothingLeft(self, *users):
        for u in users:
            self.assertEqual(self.files(u, "new"), [], u)
            self.assertEqual(self.files(u, "tmp"), [], u)


class DeliverBatchTest(_StoreCase):
    def test_single_user_bytes_exact(self):
        job = DeliveryJob(DATA, "sender@remote.example", ["alice@example.org"], "Q1")
        [res] = deliver_batch(self.store, [job])
        self.assertTrue(res.ok, res.error)
        wire = (b"Return-Path: <sender@remote.example>\r\n"
                b"Delivered-To: alice@example.org\r\n" + DATA)
        expect = wire.replace(b"\r\n", b"\n")     # stored with LF line ends
        [name] = self.files("alice@example.org")
        self.assertEqual(res.paths, [os.path.join(self.store.maildir_path("alice@example.org"),
                                                  "new", name)])
        self.assertEqual(self.read(res.paths[0]), expect)
        # Dovecot's names: S= the file's size, W= the CRLF size POP3/IMAP count
        self.assertTrue(name.endswith(",S=%d,W=%d" % (len(expect), len(wire))))
        self.assertEqual(self.files("alice@example.org", "tmp"), [])

    def test_null_reverse_path(self):
        [res] = deliver_batch(self.store, [DeliveryJob(DATA, "", ["alice@example.org"], "Q")])
        self.assertTrue(self.read(res.paths[0]).startswith(b"Return-Path: <>\n"))

    def test_multi_user_hard_links_without_delivered_to(self):
        users = ["alice@example.org", "bob@example.org", "carol@other.example"]
        [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r.example", users, "Q")])
        self.assertTrue(res.ok, res.error)
        self.assertEqual(len(res.paths), 3)
        inodes = {os.stat(p).st_ino for p in res.paths}
        self.assertEqual(len(inodes), 1)
        self.assertEqual(os.stat(res.paths[0]).st_nlink, 3)   # tmp name is gone
        self.assertEqual(self.read(res.paths[1]), (b"Return-Path: <s@r.example>\r\n" + DATA).replace(b"\r\n", b"\n"))
        for u in users:
            self.assertEqual(self.files(u, "tmp"), [])

    def test_duplicate_recipients_delivered_once(self):
        job = DeliveryJob(DATA, "s@r", ["alice@example.org", "alice@example.org"], "Q")
        [res] = deliver_batch(self.store, [job])
        self.assertTrue(res.ok)
        self.assertEqual(len(self.files("alice@example.org")), 1)

    def test_missing_mailbox_is_created(self):
        job = DeliveryJob(DATA, "s@r", ["new@example.org", "alice@example.org"], "Q")
        [res] = deliver_batch(self.store, [job])
        self.assertTrue(res.ok, res.error)
        self.assertEqual(len(self.files("new@example.org")), 1)
        self.assertTrue(os.path.isdir(os.path.join(self.store.maildir_path("new@example.org"),
                                                   ".Sent")))
        job = DeliveryJob(DATA, "s@r", ["alice@example.org", "second@example.org"], "Q")
        self.assertTrue(deliver_batch(self.store, [job])[0].ok)
        self.assertEqual(len(self.files("second@example.org")), 1)

    def test_fsync_error_leaves_nothing(self):
        fs = CountingFS()
        fs.fail["fsync"] = lambda path: errno.EIO
        with self.assertLogs("mailsrv.store", "ERROR") as logs:
            [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"],
                                                           "QERR")], fs)
        self.assertFalse(res.ok)
        self.assertIn("EIO", res.error)
        self.assertIn("QERR", logs.output[0])
        self.assertNotIn("Hello", "".join(logs.output))    # never the message
        self.assertNothingLeft("alice@example.org")

    def test_enospc_on_write_leaves_nothing(self):
        fs = CountingFS()
        fs.fail["write"] = lambda path: errno.ENOSPC
        with self.assertLogs("mailsrv.store", "ERROR"):
            [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"],
                                                           "Q")], fs)
        self.assertFalse(res.ok)
        self.assertIn("ENOSPC", res.error)
        self.assertNothingLeft("alice@example.org")

    def test_link_failure_for_second_user_removes_first_link(self):
        fs = CountingFS()
        fs.fail["link"] = lambda dst: errno.ENOSPC if "/bob/" in dst else None
        job = DeliveryJob(DATA, "s@r", ["alice@example.org", "bob@example.org"], "Q")
        with self.assertLogs("mailsrv.store", "ERROR"):
            [res] = deliver_batch(self.store, [job], fs)
        self.assertFalse(res.ok)
        self.assertNothingLeft("alice@example.org", "bob@example.org")

    def test_directory_fsync_failure_fails_every_job_in_that_dir(self):
        fs = CountingFS()
        fs.fail["fsync_dir"] = lambda path: errno.EIO if "/bob/" in path else None
        jobs = [DeliveryJob(DATA, "s@r", ["alice@example.org", "bob@example.org"], "Q1"),
                DeliveryJob(DATA, "s@r", ["bob@example.org"], "Q2"),
                DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q3")]
        with self.assertLogs("mailsrv.store", "ERROR"):
            results = deliver_batch(self.store, jobs, fs)
        self.assertEqual([r.ok for r in results], [False, False, True])
        self.assertEqual(self.files("bob@example.org"), [])
        self.assertEqual(self.files("alice@example.org"),
                         [os.path.basename(results[2].paths[0])])
        self.assertEqual(self.files("alice@example.org", "tmp"), [])

    def test_one_bad_job_does_not_spoil_the_batch(self):
        jobs = [DeliveryJob(DATA, "s@r\r\nX-Injected: 1", ["alice@example.org"], "Q1"),
                DeliveryJob(DATA, "s@r", ["../etc@example.org"], "Q2"),
                DeliveryJob(DATA, "s@r", [], "Q3"),
                DeliveryJob(DATA, "s@r", ["bob@example.org"], "Q4")]
        with self.assertLogs("mailsrv.store", "ERROR"):
            results = deliver_batch(self.store, jobs)
        self.assertEqual([r.ok for r in results], [False, False, False, True])
        self.assertEqual(self.files("alice@example.org"), [])
        self.assertEqual(len(self.files("bob@example.org")), 1)

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root ignores permissions")
    def test_unwritable_new_dir(self):
        new = os.path.join(self.store.maildir_path("alice@example.org"), "new")
        os.chmod(new, 0o500)
        self.addCleanup(os.chmod, new, 0o700)
        with self.assertLogs("mailsrv.store", "ERROR"):
            [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"],
                                                           "Q")])
        self.assertFalse(res.ok)
        self.assertNothingLeft("alice@example.org")

    def test_permission_error_simulated(self):
        # the same failure as an unwritable directory, also when running as root
        fs = CountingFS()
        fs.fail["link"] = lambda dst: errno.EACCES
        with self.assertLogs("mailsrv.store", "ERROR"):
            [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"],
                                                           "Q")], fs)
        self.assertFalse(res.ok)
        self.assertIn("EACCES", res.error)
        self.assertNothingLeft("alice@example.org")

    def test_the_last_recipient_gets_the_file_by_rename(self):
        # one directory change and one system call fewer than link + unlink
        fs = CountingFS()
        [one] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q1")], fs)
        self.assertEqual((fs.calls.get("rename"), fs.calls.get("unlink")), (1, None))
        [two] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org", "bob@example.org"],
                                                       "Q2")], fs)
        self.assertEqual((fs.calls.get("rename"), fs.calls["link"], fs.calls.get("unlink")), (2, 3, None))
        self.assertEqual(os.stat(two.paths[0]).st_ino, os.stat(two.paths[1]).st_ino)     # one file
        for u in ("alice@example.org", "bob@example.org"):
            self.assertEqual(self.files(u, "tmp"), [])
        self.assertTrue(one.ok and two.ok)

    def test_exdev_falls_back_to_fsynced_copy(self):
        fs = CountingFS()
        fs.fail["link"] = lambda dst: (errno.EXDEV if "/bob/new/" in dst
                                       and fs.calls["link"] == 2 else None)
        job = DeliveryJob(DATA, "s@r", ["alice@example.org", "bob@example.org"], "Q")
        [res] = deliver_batch(self.store, [job], fs)
        self.assertTrue(res.ok, res.error)
        a, b = res.paths
        self.assertEqual(self.read(a), self.read(b))
        self.assertNotEqual(os.stat(a).st_ino, os.stat(b).st_ino)
        self.assertEqual(fs.calls["fsync"], 2)   # the original and the copy
        for u in ("alice@example.org", "bob@example.org"):
            self.assertEqual(self.files(u, "tmp"), [])

    def test_one_directory_fsync_per_distinct_new_dir(self):
        fs = CountingFS()
        jobs = [DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q%d" % i) for i in range(10)]
        jobs.append(DeliveryJob(DATA, "s@r", ["alice@example.org", "bob@example.org"], "QM"))
        results = deliver_batch(self.store, jobs, fs)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(fs.calls["fsync"], 11)       # every file is fsync'd
        self.assertEqual(fs.calls["fsync_dir"], 2)    # alice/new and bob/new, once each
        self.assertEqual(len(self.files("alice@example.org")), 11)

    def test_chunked_source_is_stored_like_bytes(self):
        # a queued message is read in pieces (store.queue.StoredMessage), a CRLF
        # split between two pieces included; never joined whole
        from store.queue import MemoryMessage
        data = DATA + b"line\r\n" * 1000
        [a] = deliver_batch(self.store, [DeliveryJob(data, "s@r", ["alice@example.org"], "QA")])
        for piece in (1, 2, 7, 4096):
            [b] = deliver_batch(self.store, [DeliveryJob(MemoryMessage(data, piece), "s@r",
                                                         ["alice@example.org"], "QB")])
            self.assertEqual(self.read(b.paths[0]), self.read(a.paths[0]), piece)
            self.assertEqual(b.paths[0].split(",", 1)[1], a.paths[0].split(",", 1)[1])  # S= and W=
        self.assertEqual(self.files("alice@example.org", "tmp"), [])

    def test_streamed_message_is_stored_like_bytes(self):
        # store/incoming.py: written as it arrives (a CRLF split between two
        # writes included), then fsync'd and linked by the batch
        from store.incoming import IncomingMessage
        data = DATA + b"line\r\n" * 30000
        [a] = deliver_batch(self.store, [DeliveryJob(data, "s@r", ["alice@example.org"], "QA",
                                                     delivered_to="alice+tag@example.org")])
        msg = IncomingMessage(self.store, None, "QB", "s@r", ["alice@example.org"], False,
                              delivered_to="alice+tag@example.org")
        for i in range(0, len(data), 4097):
            msg.write(data[i:i + 4097])
        self.assertEqual(self.files("alice@example.org", "tmp"), [msg.local.path and os.path.basename(msg.local.path)])
        [b] = deliver_batch(self.store, [msg.local_job()])
        self.assertTrue(b.ok, b.error)
        self.assertEqual(self.read(b.paths[0]), self.read(a.paths[0]))
        self.assertIn(b"Delivered-To: alice+tag@example.org\n", self.read(b.paths[0]))
        self.assertEqual(b.paths[0].split(",", 1)[1], a.paths[0].split(",", 1)[1])  # S= and W=
        self.assertEqual(self.files("alice@example.org", "tmp"), [])

    def test_message_bytes(self):
        one = DeliveryJob(b"x", "a@b", ["u@d"], "Q")
        self.assertEqual(message_bytes(one), b"Return-Path: <a@b>\r\nDelivered-To: u@d\r\nx")
        two = DeliveryJob(b"x", "", ["u@d", "v@d"], "Q")
        self.assertEqual(message_bytes(two), b"Return-Path: <>\r\nx")


class InvariantFS(CountingFS):
    """Checks the crash-safety invariant at every step: a name only appears
    in new/ for a file that is complete (size matches ``,S=``) and fsync'd."""

    def __init__(self, test, roots):
        super().__init__()
        self.test, self.roots = test, roots
        self.synced = set()
        self.steps = 0

    def _check(self):
        self.steps += 1
        for root in self.roots:
            new = os.path.join(root, "new")
            for name in os.listdir(new):
                size = int(name.rsplit(",S=", 1)[1].split(",", 1)[0])
                self.test.assertEqual(os.path.getsize(os.path.join(new, name)), size)

    def fsync(self, fd):
        super().fsync(fd)
        self.synced.add(self.paths[fd])
        self._check()

    def write_all(self, fd, data):
        self._check()
        super().write_all(fd, data)
        self._check()

    def link(self, src, dst):
        self.test.assertIn(src, self.synced, "linked before fsync")
        self._check()
        super().link(src, dst)
        self._check()

    def rename(self, src, dst):
        self.test.assertIn(src, self.synced, "renamed before fsync")
        self._check()
        super().rename(src, dst)
        self._check()


class CrashSafetyTest(_StoreCase):
    def test_only_complete_fsynced_files_ever_appear_in_new(self):
        users = ["alice@example.org", "bob@example.org"]
        fs = InvariantFS(self, [self.store.maildir_path(u) for u in users])
        jobs = [DeliveryJob(DATA * (i + 1), "s@r", users[: 1 + i % 2], "Q%d" % i)
                for i in range(6)]
        with ThreadPoolExecutor(4) as pool:
            results = deliver_batch(self.store, jobs, fs, pool)
        self.assertTrue(all(r.ok for r in results))
        self.assertGreater(fs.steps, 20)
        self.assertEqual(len(self.files("alice@example.org")), 6)
        self.assertEqual(len(self.files("bob@example.org")), 3)

    def test_executor_path_isolates_failures(self):
        fs = CountingFS()
        fs.fail["fsync"] = lambda path: errno.EIO if "/bob/" in path else None
        jobs = [DeliveryJob(DATA, "s@r", [u], "Q%d" % i)
                for i, u in enumerate(["alice@example.org", "bob@example.org"] * 4)]
        with self.assertLogs("mailsrv.store", "ERROR"), ThreadPoolExecutor(4) as pool:
            results = deliver_batch(self.store, jobs, fs, pool)
        self.assertEqual([r.ok for r in results], [True, False] * 4)
        self.assertEqual(len(self.files("alice@example.org")), 4)
        self.assertNothingLeft("bob@example.org")
        self.assertEqual(self.files("alice@example.org", "tmp"), [])


class GatedFS(CountingFS):
    """Blocks the first file fsync until the test opens the gate."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def fsync(self, fd):
        if not self.entered.is_set():
            self.entered.set()
            if not self.gate.wait(10):
                raise OSError(errno.ETIMEDOUT, "test gate never opened")
        super().fsync(fd)


class DelivererTest(_StoreCase):
    def test_batches_jobs_from_many_threads(self):
        fs = GatedFS()
        deliverer = Deliverer(self.store, fs)
        self.addCleanup(deliverer.close)
        results, done = [], threading.Event()
        lock = threading.Lock()
        users = ["alice@example.org", "bob@example.org"]

        def callback(res):
            with lock:
                results.append(res)
                if len(results) == 50:
                    done.set()

        deliverer.submit(DeliveryJob(DATA, "s@r", [users[0]], "first"), callback)
        self.assertTrue(fs.entered.wait(10))       # the worker is inside batch 1
        threads = [threading.Thread(target=deliverer.submit, args=(
            DeliveryJob(DATA, "s@r", [users[i % 2]], "Q%d" % i), callback)) for i in range(49)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        fs.gate.set()
        self.assertTrue(done.wait(10))
        self.assertEqual(len(results), 50)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(deliverer.batches, 2)
        self.assertEqual(fs.calls["fsync"], 50)
        # batch 1 (alice) waits for batch 2's files, then both commit: alice, bob
        self.assertEqual(fs.calls["fsync_dir"], 2)
        self.assertEqual(len(self.files("alice@example.org")), 26)   # "first" + 25
        self.assertEqual(len(self.files("bob@example.org")), 24)
        for u in users:
            self.assertEqual(self.files(u, "tmp"), [])

    def test_under_load_a_batch_commits_after_the_next_batchs_file_fsyncs(self):
        """Two batches share a journal commit: batch 1's directory fsync waits for batch
        2's file fsyncs when batch 2 is already waiting, and still comes before any
        result (no 250 before the directory fsync)."""
        events, lock = [], threading.Lock()

        class Recording(GatedFS):
            def _hit(self, op, arg):
                with lock:
                    events.append(op)
                super()._hit(op, arg)
        fs = Recording()
        deliverer = Deliverer(self.store, fs)
        self.addCleanup(deliverer.close)
        done = threading.Event()

        def callback(name):
            def cb(res):
                self.assertTrue(res.ok, res.error)
                with lock:
                    events.append("result " + name)
                    if sum(e.startswith("result") for e in events) == 4:
                        done.set()
            return cb
        deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "first"), callback("1"))
        self.assertTrue(fs.entered.wait(10))          # batch 1 is being staged
        for i in range(3):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q%d" % i), callback("2"))
        fs.gate.set()
        self.assertTrue(done.wait(10))
        ops = [e for e in events if e in ("fsync", "fsync_dir") or e.startswith("result")]
        # nothing waits after batch 2: both commit in one directory fsync, batch 1 first
        self.assertEqual(ops, ["fsync"] * 4 + ["fsync_dir", "result 1"] + ["result 2"] * 3)
        self.assertEqual((deliverer.batches, len(self.files("alice@example.org"))), (2, 4))

    def test_failure_reported_through_callback(self):
        fs = CountingFS()
        fs.fail["fsync"] = lambda path: errno.EIO
        deliverer = Deliverer(self.store, fs)
        got, done = [], threading.Event()
        with self.assertLogs("mailsrv.store", "ERROR"):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q"),
                             lambda r: (got.append(r), done.set()))
            self.assertTrue(done.wait(10))
            deliverer.close()
        self.assertIsInstance(got[0], DeliveryResult)
        self.assertFalse(got[0].ok)
        self.assertNothingLeft("alice@example.org")

    def test_callback_exception_does_not_stop_worker(self):
        deliverer = Deliverer(self.store)
        done = threading.Event()

        def bad(_res):
            raise RuntimeError("callback bug")
        with self.assertLogs("mailsrv.store", "ERROR"):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q1"), bad)
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q2"),
                             lambda r: done.set())
            self.assertTrue(done.wait(10))
        deliverer.close()
        self.assertEqual(len(self.files("alice@example.org")), 2)

    def test_close_drains_queue_then_refuses(self):
        deliverer = Deliverer(self.store)
        got = []
        for i in range(20):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["bob@example.org"], "Q%d" % i),
                             got.append)
        deliverer.close()
        self.assertEqual(len(got), 20)
        self.assertTrue(all(r.ok for r in got))
        with self.assertRaises(RuntimeError):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["bob@example.org"], "Q"), got.append)


class UidAtDeliveryTest(_StoreCase):
    """Issue 9 §2: the Deliverer gives each delivered file its UID at once
    (store/folder.py note_delivered), appended to dovecot-uidlist."""

    def uidlist(self, user):
        with open(os.path.join(self.store.maildir_path(user), "dovecot-uidlist"), "rb") as fh:
            return fh.read().decode()

    def test_each_recipient_folder_gets_a_uid_line_without_a_sync(self):
        users = ["alice@example.org", "bob@example.org"]
        [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", users, "Q")])
        self.assertTrue(res.ok, res.error)
        for user, path in zip(users, res.paths):
            key = os.path.basename(path).split(":")[0]
            lines = self.uidlist(user).splitlines()
            self.assertTrue(lines[0].startswith("3 V"), lines)       # Dovecot's version 3 header
            self.assertEqual([l.split()[0] for l in lines[1:] if l.endswith(key)], ["1"])

    def test_a_uid_failure_does_not_fail_the_delivery(self):
        from unittest import mock
        from store.folder import Folder
        with mock.patch.object(Folder, "note_delivered", side_effect=OSError(errno.EACCES, "denied")):
            with self.assertLogs("mailsrv.store", "ERROR") as logs:
                [res] = deliver_batch(self.store, [DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q")])
        self.assertTrue(res.ok, res.error)
        self.assertEqual(len(self.files("alice@example.org")), 1)         # the message is there
        self.assertIn("cannot assign UIDs", logs.output[0])


class UidsAfterTheReplyTest(_StoreCase):
    """The Deliverer reports a delivery (SMTP's 250) once the message is durable,
    without waiting for the uidlist's dotlock and fdatasync (step 4), and writes
    the UIDs of many deliveries in one note."""

    def uidlist_uids(self, user):
        path = os.path.join(self.store.maildir_path(user), "dovecot-uidlist")
        with open(path, "rb") as fh:
            return [int(l.split()[0]) for l in fh.read().decode().splitlines()[1:]]

    def test_the_result_does_not_wait_for_the_uid(self):
        from unittest import mock
        from store.folder import Folder
        gate, entered = threading.Event(), threading.Event()
        real = Folder.note_delivered

        def slow_note(folder, names):
            entered.set()
            self.assertTrue(gate.wait(10))
            return real(folder, names)
        deliverer = Deliverer(self.store)
        got = threading.Event()
        with mock.patch.object(Folder, "note_delivered", slow_note), \
                mock.patch("store.deliver.UID_NOTE_DELAY_S", 0):
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q"), lambda r: got.set())
            self.assertTrue(entered.wait(10))
            self.assertTrue(got.wait(10), "the result waited for the uidlist")
            gate.set()
            deliverer.flush_uids()
        deliverer.close()
        self.assertEqual(self.uidlist_uids("alice@example.org"), [1])

    def test_deliveries_one_after_another_get_their_uids_in_one_note(self):
        from unittest import mock
        from store.folder import Folder
        calls = []
        real = Folder.note_delivered

        def counting(folder, names):
            calls.append(list(names))
            return real(folder, names)
        deliverer = Deliverer(self.store)
        with mock.patch.object(Folder, "note_delivered", counting), \
                mock.patch("store.deliver.UID_NOTE_DELAY_S", 60):
            for i in range(5):                          # one sender: each waits for its result
                done = threading.Event()
                deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q%d" % i),
                                 lambda r: done.set())
                self.assertTrue(done.wait(10))
            self.assertEqual(calls, [])                 # gathered, not yet written
            deliverer.flush_uids()                      # cuts the wait short
            self.assertEqual([len(c) for c in calls], [5])
            deliverer.submit(DeliveryJob(DATA, "s@r", ["alice@example.org"], "Q5"), lambda r: None)
            deliverer.close()                           # writes what waits, at once
        self.assertEqual(self.uidlist_uids("alice@example.org"), [1, 2, 3, 4, 5, 6])


if __name__ == "__main__":
    unittest.main()
