"""Starting and stopping 100 TestServers in one process leaves no thread,
socket or file descriptor, and no temporary folder (issue 11)."""

import os
import smtplib
import tempfile
import threading
import unittest

from mailsrv import TestServer
from tests.helpers import wait_for

CYCLES = 100      # the number


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def our_temp_dirs():
    return sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith("mailsrv-testserver-"))


@unittest.skipUnless(os.path.isdir("/proc/self/fd"), "needs /proc/self/fd to count descriptors")
class HundredServers(unittest.TestCase):
    def test_start_use_stop_a_hundred_times_leaks_nothing(self):
        with TestServer() as mail:       # the first start's imports and one-time caches
            mail.messages()
        threads_before = threading.active_count()
        fds_before = len(open_fds())
        made = []       # the data folders of these servers (other test processes make their own)
        for i in range(CYCLES):
            with TestServer() as mail:
                made.append(mail.data_dir)
                with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=10) as s:
                    s.sendmail("app@shop.test", ["bob@example.org"], b"Subject: n%d\r\n\r\nx\r\n" % i)
                self.assertEqual(mail.wait_for(to="bob@example.org", timeout=5)["Subject"], "n%d" % i)
        # worker pools end their threads just after stop returns (shutdown(wait=False)): bounded wait
        wait_for(lambda: threading.active_count() <= threads_before,
                 "threads back to %d" % threads_before, lambda: repr(threading.enumerate()), timeout=10)
        self.assertLessEqual(len(open_fds()), fds_before, open_fds())
        self.assertEqual(len(set(made)), CYCLES)
        self.assertTrue(all(os.path.basename(d).startswith("mailsrv-testserver-") for d in made), made[:3])
        self.assertEqual([d for d in made if os.path.exists(d)], [])


if __name__ == "__main__":
    unittest.main()
