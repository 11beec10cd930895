"""Issue 7 item 3: a message is never held whole in memory, over real sockets.

The server's session, its DATA reader, its content checks and the files it
appends to are instrumented (their buffer sizes after every call), not the
process RSS: a large message over DATA and over BDAT must never make any of
them hold more than a small constant.  Also: the budget for message bytes in
flight (``max_inflight_message_bytes``: a new DATA/BDAT beyond it gets
``452 4.3.1``), and the fake MessageSink of the session tests and the real
one storing the same bytes (one contract).
"""

import os
import smtplib
import socket
import unittest
from unittest import mock

from protocols.smtp.server import SmtpSession
from store.fsutil import AppendFile
from tests.helpers import ServerTestCase, strip_trace, wait_for
from tests.test_smtp_session import FakeBackend, in_rcpt, send

MiB = 1024 * 1024
# What one session may hold at any time, all buffers together: two 64 KiB
# reads plus a 64 KiB header and the few octets the DATA reader keeps.  The
# messages below are 100 to 300 times larger.
SESSION_BOUND = 256 * 1024
FILE_BOUND = 2 * 64 * 1024          # an AppendFile: its 64 KiB buffer plus one read


def big_message(size, tag=b"big"):
    line = b"0123456789" * 7 + b"abcdef\r\n"
    head = b"From: a@elsewhere.test\r\nSubject: " + tag + b"\r\n\r\n"
    body = (b"." + line[1:]) + line * ((size - len(head)) // len(line) - 1)
    return head + body


class Peaks:
    """Largest buffers seen while the patches are active."""

    def __init__(self, test):
        self.session = 0
        self.file = 0
        orig_receive, orig_write = SmtpSession.receive_data, AppendFile.write
        peaks = self

        def receive_data(session, data):
            orig_receive(session, data)
            held = len(session._reader.buf) + len(session._out)
            if session._data is not None:
                held += len(session._data.buf)
            txn = session._txn
            if txn is not None and txn.check is not None:
                held += len(txn.check._head)
            if txn is not None and txn.sink is not None and getattr(txn.sink, "head", None):
                held += len(txn.sink.head)
            peaks.session = max(peaks.session, held)

        def write(f, data):
            orig_write(f, data)
            peaks.file = max(peaks.file, len(f._buf))

        for target, name, fn in ((SmtpSession, "receive_data", receive_data),
                                 (AppendFile, "write", write)):
            p = mock.patch.object(target, name, fn)
            p.start()
            test.addCleanup(p.stop)


class LargeMessageTest(ServerTestCase):
    tls = False
    extra_config = {"max_message_size": str(40 * MiB)}

    def setUp(self):
        self.clear_mailbox("bob@example.test")

    def test_20_mib_over_data_is_streamed(self):
        peaks = Peaks(self)
        msg = big_message(20 * MiB)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=60) as s:
            self.assertEqual(s.sendmail("a@elsewhere.test", ["bob@example.test"], msg), {})
        [stored] = self.new_messages("bob@example.test")
        self.assertEqual(strip_trace(stored), msg)
        self.assertLess(peaks.session, SESSION_BOUND)
        self.assertLess(peaks.file, FILE_BOUND)
        self.assertGreater(peaks.file, 0)
        self.assertEqual(os.listdir(self.maildir("bob@example.test", "tmp")), [])

    def test_20_mib_over_bdat_is_streamed(self):
        peaks = Peaks(self)
        msg = big_message(20 * MiB, b"bdat")
        half = len(msg) // 2
        with socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=60) as c:
            f = c.makefile("rb")
            f.readline()
            c.sendall(b"EHLO client.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            c.sendall(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\n")
            self.assertEqual([f.readline()[:3], f.readline()[:3]], [b"250", b"250"])
            c.sendall(b"BDAT %d\r\n" % half + msg[:half])
            self.assertEqual(f.readline()[:3], b"250")
            c.sendall(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
            self.assertEqual(f.readline()[:3], b"250")
        [stored] = self.new_messages("bob@example.test")
        self.assertEqual(strip_trace(stored), msg)
        self.assertLess(peaks.session, SESSION_BOUND)
        self.assertLess(peaks.file, FILE_BOUND)

    def test_refused_message_leaves_no_file(self):
        msg = big_message(MiB) + b"bare\nLF\r\n"
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=60) as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@elsewhere.test", ["bob@example.test"], msg)
        self.assertEqual(cm.exception.smtp_code, 550)
        self.assertEqual(os.listdir(self.maildir("bob@example.test", "tmp")), [])
        self.assertEqual(self.new_messages("bob@example.test"), [])
        self.assertEqual(self.server.backend.delivery.inflight_bytes, 0)

    def test_fake_and_real_sink_store_the_same_message(self):
        """One contract: what the session tests' FakeSink records is what the
        real sink stores (after the trace fields each adds)."""
        msg = (b"Subject: contract\r\n\r\n..stuffed\r\n.\r\nmiddle\r\n" + big_message(200 * 1024))
        wire = msg.replace(b"\r\n.", b"\r\n..")
        s, fake = in_rcpt(backend=FakeBackend())
        send(s, b"DATA\r\n" + wire + b"\r\n.\r\n")
        [(_env, faked)] = fake.deliveries
        with socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=30) as c:
            f = c.makefile("rb")
            f.readline()
            c.sendall(b"HELO client.test\r\nMAIL FROM:<a@elsewhere.test>\r\n"
                      b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
            self.assertEqual([f.readline()[:3] for _ in range(4)], [b"250", b"250", b"250", b"354"])
            c.sendall(wire + b"\r\n.\r\n")
            self.assertEqual(f.readline()[:3], b"250")
        [stored] = self.new_messages("bob@example.test")
        self.assertEqual(strip_trace(stored), msg + b"\r\n")
        self.assertEqual(faked[faked.index(b"Subject: contract"):], msg + b"\r\n")


class LargeRemoteAndSubmissionTest(ServerTestCase):
    """The other two ways a large message streams: into the queue (a remote
    recipient) and through submission's Date/Message-ID fixups."""

    tls = False
    extra_config = {"trusted_networks": "127.0.0.0/8", "relayhost": "127.0.0.1:9",
                    "retry_schedule": "3600"}

    def test_large_message_for_a_remote_recipient_is_queued_whole(self):
        peaks = Peaks(self)
        msg = big_message(5 * MiB, b"remote")
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=60) as s:
            self.assertEqual(s.sendmail("a@elsewhere.test", ["x@remote.example"], msg), {})
        qdir = os.path.join(self.tmp, "queue")
        [name] = [n for n in os.listdir(qdir) if n.endswith(".msg")]
        with open(os.path.join(qdir, name), "rb") as f:
            queued = f.read()
        self.assertTrue(queued.startswith(b"Received: "))
        self.assertEqual(queued[queued.index(b"From: a@elsewhere.test"):], msg)
        self.assertLess(peaks.session, SESSION_BOUND)
        self.assertLess(peaks.file, FILE_BOUND)
        # no message file left being written (the relay may be rewriting the envelope)
        self.assertEqual([n for n in os.listdir(qdir) if n.startswith("tmp-") and n.endswith(".msg")], [])

    def test_large_submission_gets_date_and_message_id(self):
        body = big_message(3 * MiB, b"submitted").replace(b"From: a@elsewhere.test\r\n",
                                                          b"From: alice@example.test\r\n")
        self.clear_mailbox("bob@example.test")
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=60) as s:
            s.login("alice@example.test", "alice-secret")
            self.assertEqual(s.sendmail("alice@example.test", ["bob@example.test"], body), {})
        [stored] = self.new_messages("bob@example.test")
        head, _, rest = strip_trace(stored).partition(b"\r\n\r\n")
        self.assertIn(b"\r\nDate: ", head)
        self.assertIn(b"\r\nMessage-ID: <", head)
        self.assertEqual(rest, body.partition(b"\r\n\r\n")[2])


    def test_backend_deliver_takes_a_message_in_hand_the_same_way(self):
        """Backend.deliver (bytes in hand, e.g. a local submission) goes through
        the same sink: into the Maildir, and the budget is released."""
        from protocols.smtp.state import Envelope
        self.clear_mailbox("bob@example.test")
        backend, got = self.server.backend, []
        msg = big_message(300 * 1024, b"in hand")
        env = Envelope("a@elsewhere.test", ["bob@example.test"], [(["bob@example.test"], [])], "7BIT",
                       False, "", "", None, False, "local", "HANDQID1")
        self.server.loop.call_soon_threadsafe(lambda: backend.deliver(env, msg, got.append))
        wait_for(lambda: got, "the delivery")
        self.assertEqual(got, [(250, "2.0.0", "Ok: queued as HANDQID1")])
        [stored] = self.new_messages("bob@example.test")
        self.assertTrue(stored.endswith(msg))
        self.assertEqual(backend.delivery.inflight_bytes, 0)


class InflightBudgetTest(ServerTestCase):
    tls = False
    extra_config = {"max_inflight_message_bytes": "300000"}

    def open_data(self, command=b"DATA"):
        c = socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=30)
        self.addCleanup(c.close)
        f = c.makefile("rb")
        f.readline()
        c.sendall(b"HELO client.test\r\nMAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\n")
        self.assertEqual([f.readline()[:3] for _ in range(3)], [b"250"] * 3)
        if command:
            c.sendall(command + b"\r\n")
        return c, f

    def test_new_data_and_bdat_get_452_beyond_the_budget(self):
        backend = self.server.backend
        a, fa = self.open_data()
        self.assertEqual(fa.readline()[:3], b"354")
        part = big_message(400 * 1024)
        a.sendall(part)                     # no end of data yet: in flight
        wait_for(lambda: backend.delivery.inflight_bytes >= 300000, "the first message in flight")
        b, fb = self.open_data()
        self.assertEqual(fb.readline(), b"452 4.3.1 Insufficient system storage: "
                                        b"too much mail in flight, try again later\r\n")
        c, fc = self.open_data(b"")
        c.sendall(b"BDAT 5 LAST\r\nab\r\nc")
        self.assertEqual(fc.readline()[:9], b"452 4.3.1")
        a.sendall(b".\r\n")
        self.assertEqual(fa.readline()[:3], b"250")
        self.assertEqual(backend.delivery.inflight_bytes, 0)
        b.sendall(b"DATA\r\n")              # the transaction was kept: DATA again
        self.assertEqual(fb.readline()[:3], b"354")
        b.sendall(b"Subject: later\r\n\r\nok\r\n.\r\n")
        self.assertEqual(fb.readline()[:3], b"250")


if __name__ == "__main__":
    unittest.main()
