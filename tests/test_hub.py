"""The change hub (protocols/backend/hub.py, issue 9 §2): announcements from
local delivery and POP3's expunge reach subscribers at once; the stat poll
finds files another process dropped into the Maildir."""

import os
import poplib
import smtplib
import threading
import unittest

from tests.helpers import ServerTestCase, wait_for

MSG = b"From: carol@elsewhere.test\r\nSubject: news\r\n\r\nHello.\r\n"
USER = "bob@example.test"


class HubTest(ServerTestCase):
    tls = False
    extra_config = {"allow_plaintext_auth": "yes"}

    def on_loop(self, fn):
        box, ready = [], threading.Event()
        self.server.loop.call_soon_threadsafe(lambda: (box.append(fn()), ready.set()))
        self.assertTrue(ready.wait(10), "the loop did not run the call")
        return box[0]

    def subscribe(self, user=USER, folder="INBOX"):
        """A subscriber whose callback sets an Event; unsubscribed at cleanup."""
        hub = self.server.backend.mail.hub
        heard = threading.Event()
        calls = []

        def callback(u, f):
            calls.append((u, f))
            heard.set()
        handle = self.on_loop(lambda: hub.subscribe(user, folder, callback))
        self.addCleanup(lambda: self.on_loop(handle.cancel))
        return hub, heard, calls

    def test_smtp_delivery_is_announced_before_the_250(self):
        hub, heard, calls = self.subscribe()
        hub.poll_interval = 3600.0          # only the delivery itself can tell
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            self.assertEqual(s.sendmail("carol@elsewhere.test", [USER], MSG), {})
            # the announcement ran on the loop before the 250 was queued
            self.assertTrue(heard.is_set(), "the subscriber did not hear of the delivery")
        self.assertIn((USER, "INBOX"), calls)
        other = self.subscribe("alice@example.test")[2]
        self.assertEqual(other, [])         # nobody else is told

    def test_unsubscribed_callback_hears_nothing(self):
        hub, heard, calls = self.subscribe()
        self.on_loop(lambda: [hub.unsubscribe(h) for h in list(hub._subs.get((USER, "INBOX"), []))])
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("carol@elsewhere.test", [USER], MSG)
        self.assertEqual(calls, [])

    def test_pop3_quit_expunge_is_announced(self):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("carol@elsewhere.test", [USER], MSG)
        hub, heard, calls = self.subscribe()
        hub.poll_interval = 3600.0
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        try:
            p.user(USER)
            p.pass_("bob-secret")
            p.dele(1)
            self.assertFalse(heard.is_set())        # DELE only marks (RFC 1939 §6)
            p.quit()
        finally:
            p.close()
        self.assertTrue(heard.wait(10))

    def test_poll_announces_a_file_dropped_by_another_process(self):
        hub = self.server.backend.mail.hub
        hub.poll_interval = 0.05
        self.addCleanup(setattr, hub, "poll_interval", 5.0)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("carol@elsewhere.test", ["alice@example.test"], MSG)   # the Maildir exists
        # the delivery's UID is noted just after its 250 (store/deliver.py): wait for that write,
        # or the poll's baseline may be taken before it and see our own uidlist change
        self.server.backend.delivery.deliverer.flush_uids()
        _, heard, calls = self.subscribe("alice@example.test")
        key = ("alice@example.test", "INBOX")
        wait_for(lambda: self.on_loop(lambda: key in hub._tokens), "the poll's baseline")
        self.assertFalse(heard.is_set())
        # another writer (mutt, Dovecot): tmp/ then a rename into new/
        base = self.maildir("alice@example.test")
        tmp = os.path.join(base, "tmp", "1700000000.outside.host")
        with open(tmp, "wb") as f:
            f.write(b"Subject: from outside\n\nhi\n")
        os.rename(tmp, os.path.join(base, "new", "1700000000.outside.host"))
        self.assertTrue(heard.wait(10), "the poll did not announce the outside change")
        self.assertEqual(calls[0], key)


if __name__ == "__main__":
    unittest.main()
