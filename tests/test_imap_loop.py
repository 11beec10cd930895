"""ImapSession under the real event loop (protocols/loop.py) on loopback: the
greeting, a login, IDLE hearing a delivery pushed from the loop thread, the
keep-alive ``* OK Still here`` the loop asks for (``keepalive()``) and the
autologout once IDLE has lasted the idle timeout."""

import imaplib
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

from protocols.imap.session import ImapConfig, ImapSession
from protocols.loop import EventLoop
from tests.imap_fake import FakeImapBackend

WAIT = 10.0


class QuickKeepalive(ImapSession):
    """KEEPALIVE of 0.3 s instead of 120 s, so the test runs in a second."""

    @property
    def idle_timeout(self):
        return 0.3 if self._idling else super().idle_timeout


class ImapOverLoopTest(unittest.TestCase):
    def setUp(self):
        self.loop = EventLoop()
        self.backend = FakeImapBackend()
        config = ImapConfig(hostname="imap.test", idle_timeout=1.0)
        addr = self.loop.listen("imap", "127.0.0.1", 0,
                                lambda ctx: QuickKeepalive(ctx, config, self.backend))
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.buf = b""

    def tearDown(self):
        self.sock.close()
        self.loop.stop()
        self.thread.join(WAIT)
        self.loop.close()

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def test_idle_push_keepalive_and_autologout(self):
        self.assertTrue(self.line().startswith(b"* OK [CAPABILITY IMAP4rev2"))
        self.sock.sendall(b"a LOGIN fred secret\r\nb SELECT INBOX\r\nc IDLE\r\n")
        while not self.line().startswith(b"b OK"):
            pass
        self.assertEqual(self.line(), b"+ idling")
        self.loop.call_soon_threadsafe(lambda: self.backend.deliver("fred", b"Subject: x\r\n\r\ny\r\n"))
        self.assertEqual(self.line(), b"* 1 EXISTS")
        self.assertEqual(self.line(), b"* 1 RECENT")
        self.assertEqual(self.line(), b"* OK Still here")
        self.assertEqual(self.line(), b"* OK Still here")
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(b"* BYE"):
                break
        self.assertEqual(lines[-1], b"* BYE Autologout; idle for too long")
        self.assertTrue(set(lines[:-1]) <= {b"* OK Still here"}, lines)
        self.assertEqual(self.sock.recv(100), b"")


class ImaplibTest(unittest.TestCase):
    """Python's imaplib (one of the clients of issue 10) against the session."""

    def setUp(self):
        self.loop = EventLoop()
        self.backend = FakeImapBackend()
        self.backend.deliver("fred", b"From: a@example.test\r\nSubject: hello\r\n\r\nbody\r\n")
        config = ImapConfig(hostname="imap.test")
        self.addr = self.loop.listen("imap", "127.0.0.1", 0,
                                     lambda ctx: ImapSession(ctx, config, self.backend))
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def tearDown(self):
        self.loop.stop()
        self.thread.join(WAIT)
        self.loop.close()

    def test_imaplib_session(self):
        m = imaplib.IMAP4(*self.addr, timeout=WAIT)
        self.assertIn("IMAP4REV1", m.capabilities)
        self.assertEqual(m.login("fred", "secret")[0], "OK")
        typ, data = m.list()
        self.assertIn(b'(\\HasNoChildren \\Sent) "/" Sent', data)
        self.assertEqual(m.select("INBOX"), ("OK", [b"1"]))
        typ, data = m.fetch("1", "(FLAGS BODY.PEEK[])")
        self.assertEqual(data[0][1], b"From: a@example.test\r\nSubject: hello\r\n\r\nbody\r\n")
        typ, data = m.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1700000000),
                             b"Subject: two\r\n\r\nx\r\n")
        self.assertEqual(typ, "OK")
        self.assertIn(b"APPENDUID", data[0])
        self.assertEqual(m.search(None, "UNSEEN"), ("OK", [b"1"]))
        self.assertEqual(m.uid("SEARCH", "SEEN"), ("OK", [b"2"]))
        self.assertEqual(m.store("1", "+FLAGS", "(\\Deleted)")[0], "OK")
        self.assertEqual(m.expunge(), ("OK", [b"1"]))
        self.assertEqual(m.uid("COPY", "2", "Archive")[0], "OK")
        self.assertEqual(m.status("Archive", "(MESSAGES UIDNEXT)"),
                         ("OK", [b"Archive (MESSAGES 1 UIDNEXT 2)"]))
        self.assertEqual(m.create("Lists/python")[0], "OK")
        self.assertEqual(m.rename("Lists/python", "Lists/py")[0], "OK")
        self.assertEqual(m.namespace(), ("OK", [b'(("" "/")) NIL NIL']))
        self.assertEqual(m.close()[0], "OK")
        self.assertEqual(m.logout()[0], "BYE")

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed (apt-get install curl)")
    def test_curl_lists_fetches_and_appends(self):
        url = "imap://%s:%d/" % self.addr

        def curl(*args):
            return subprocess.run(["curl", "-s", "--max-time", "10", "-u", "fred:secret"] + list(args),
                                  capture_output=True, timeout=WAIT * 2, check=True).stdout
        self.assertIn(b'* LIST (\\HasNoChildren \\Junk) "/" Junk', curl(url))
        self.assertEqual(curl(url + "INBOX;UID=1"), b"From: a@example.test\r\nSubject: hello\r\n\r\nbody\r\n")
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"Subject: up\r\n\r\nloaded\r\n")
            f.flush()
            curl(url + "Drafts", "-T", f.name)
        self.assertEqual([m.data for m in self.backend.boxes["fred"]["Drafts"].messages.values()],
                         [b"Subject: up\r\n\r\nloaded\r\n"])


if __name__ == "__main__":
    unittest.main()
