"""INPROGRESS (RFC 9585, protocols/imap/inprogress.py): a fake clock (the test
plays the loop: it reads ``idle_timeout`` and calls ``keepalive()`` when the
deadline would pass) shows the progress of SEARCH, FETCH, COPY and ESEARCH
as their worker steps come back; then the real event loop on loopback
sends them by itself while a slow backend works."""

import re
import socket
import threading
import unittest

from protocols.imap.inprogress import INPROGRESS_INTERVAL, progress_response
from protocols.imap.session import ImapConfig, ImapSession
from protocols.loop import EventLoop
from tests.imap_fake import FakeImapBackend, drain, feed, login, make_session

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nsome text\r\n"


def big_session(messages=600):
    backend = FakeImapBackend()
    for i in range(messages):
        backend.deliver("fred", MSG if i != 7 else MSG.replace(b"some", b"needle"))
    backend.mailboxes("fred")["Other"] = backend.folder("Other")
    s, _ = make_session(backend)
    login(s)
    feed(s, b"s SELECT INBOX\r\n")
    backend.deferred = True
    return s, backend


def answer(backend, n):
    """``n`` of the backend's waiting answers, oldest first (the workers finishing)."""
    for _ in range(n):
        if backend.pending:
            backend.pending.pop(0)()


class FakeClockTest(unittest.TestCase):
    def test_search_reports_messages_evaluated_rfc9585_4(self):
        s, backend = big_session()
        self.assertEqual(s.idle_timeout, 1800.0)
        self.assertEqual(feed(s, b"a SEARCH TEXT needle\r\n"), b"")
        self.assertEqual(s.idle_timeout, INPROGRESS_INTERVAL)      # the loop comes back in 10 s
        self.assertTrue(s.keepalive())                               # ... and it did: nothing done yet
        self.assertEqual(drain(s), b'* OK [INPROGRESS ("a" 0 600)] Processed 0 of 600\r\n')
        answer(backend, 300)                                          # one batch of 256 evaluated
        self.assertTrue(s.keepalive())
        self.assertEqual(drain(s), b'* OK [INPROGRESS ("a" 256 600)] Processed 256 of 600\r\n')
        answer(backend, 1000)
        self.assertEqual(drain(s), b"* SEARCH 8\r\na OK SEARCH completed\r\n")
        self.assertEqual(s.idle_timeout, 1800.0)
        self.assertFalse(s.keepalive())                               # nothing runs: the usual timeout

    def test_fetch_counts_messages_and_copy_is_a_tagged_keepalive(self):
        s, backend = big_session(40)
        feed(s, b"f] FETCH 1:40 BODY.PEEK[]\r\n")
        answer(backend, 10)
        drain(s)
        self.assertTrue(s.keepalive())
        self.assertEqual(drain(s), b'* OK [INPROGRESS (NIL 10 40)] Processed 10 of 40\r\n')   # "]": NIL (§4)
        answer(backend, 100)
        self.assertTrue(drain(s).endswith(b"f] OK FETCH completed\r\n"))
        feed(s, b"c COPY 1:40 Other\r\n")                             # one worker step: no count
        self.assertTrue(s.keepalive())
        self.assertEqual(drain(s), b'* OK [INPROGRESS ("c" NIL NIL)] Still working\r\n')
        answer(backend, 10)
        self.assertIn(b"c OK [COPYUID", drain(s))

    def test_esearch_counts_mailboxes(self):
        s, backend = big_session(10)
        feed(s, b"e ESEARCH IN (personal) TEXT needle\r\n")
        answer(backend, 1)                                            # the LIST
        self.assertTrue(s.keepalive())
        self.assertEqual(drain(s), b'* OK [INPROGRESS ("e" 0 7)] Processed 0 of 7\r\n')
        answer(backend, 100)
        self.assertIn(b"e OK ESEARCH completed", drain(s))

    def test_a_stuck_command_still_times_out_and_a_client_not_reading_gets_none(self):
        s, backend = big_session(10)
        feed(s, b"a SEARCH TEXT needle\r\n")
        beats = 0
        while s.keepalive():
            beats += 1
        self.assertEqual(beats, int(1800.0 / INPROGRESS_INTERVAL))  # then the idle timeout as before
        s._drain_waiter = lambda _v: None                           # output waits for the client
        self.assertEqual(s.idle_timeout, 1800.0)
        self.assertFalse(s.keepalive())

    def test_response_forms_rfc9585_5(self):
        self.assertEqual(progress_response(b"A001", 454, 1000),
                         b'* OK [INPROGRESS ("A001" 454 1000)] Processed 454 of 1000\r\n')
        self.assertEqual(progress_response(b"t", 175, None), b'* OK [INPROGRESS ("t" 175 NIL)] Processed 175 so far\r\n')
        self.assertEqual(progress_response(b"t", 5, 5), b'* OK [INPROGRESS ("t" NIL NIL)] Still working\r\n')
        s, _ = make_session()
        login(s)
        self.assertIn(b" INPROGRESS", feed(s, b"c CAPABILITY\r\n"))


class QuickProgress(ImapSession):
    inprogress_interval = 0.2


class LoopTest(unittest.TestCase):
    """The real loop asks for progress by itself while a slow backend works."""

    def test_inprogress_lines_arrive_before_the_tagged_reply(self):
        backend = FakeImapBackend()
        for _ in range(40):
            backend.deliver("fred", MSG)
        loop = EventLoop()
        config = ImapConfig(hostname="imap.test")
        addr = loop.listen("imap", "127.0.0.1", 0, lambda ctx: QuickProgress(ctx, config, backend))
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        stop = threading.Event()

        def workers():            # one backend answer every 25 ms, on the loop thread
            while not stop.wait(0.025):
                loop.call_soon_threadsafe(lambda: answer(backend, 1))
        ticker = threading.Thread(target=workers, daemon=True)
        ticker.start()
        sock = socket.create_connection(addr, timeout=10)
        try:
            sock.sendall(b"a LOGIN fred secret\r\nb SELECT INBOX\r\n")
            got = b""
            while b"b OK" not in got:
                got += sock.recv(65536)
            slow = threading.Event()
            loop.call_soon_threadsafe(lambda: (setattr(backend, "deferred", True), slow.set()))
            self.assertTrue(slow.wait(10))
            sock.sendall(b"c SEARCH TEXT needle\r\n")
            got = b""
            while b"c OK" not in got:
                got += sock.recv(65536)
            lines = got.split(b"\r\n")
            progress = [l for l in lines if l.startswith(b'* OK [INPROGRESS ("c" ')]
            self.assertGreaterEqual(len(progress), 2, got)
            self.assertTrue(all(re.match(rb'\* OK \[INPROGRESS \("c" 0 40\)\]', l) for l in progress), got)
            self.assertLess(lines.index(progress[-1]), lines.index(b"c OK SEARCH completed"))
        finally:
            stop.set()
            sock.close()
            loop.stop()
            thread.join(10)
            ticker.join(10)
            loop.close()


if __name__ == "__main__":
    unittest.main()
