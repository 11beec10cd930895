"""The README's embedding example, run exactly as printed there."""

import glob
import os
import re
import unittest

from tests.helpers import ROOT, read_stored


def readme_example() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Embedding", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class EmbeddingExampleTest(unittest.TestCase):
    def test_readme_example_runs_and_delivers(self):
        code = readme_example()
        self.assertLessEqual(len([l for l in code.splitlines() if l.strip()]), 12)
        scope = {}
        exec(compile(code, "README.md", "exec"), scope)
        server = scope["server"]
        self.addCleanup(__import__("shutil").rmtree, server.config.data_dir, True)
        self.assertFalse(server._thread.is_alive(), "stop() must end the loop thread")
        # and release the loop's own sockets (a ResourceWarning per server otherwise)
        self.assertEqual((server.loop._wake_r.fileno(), server.loop._wake_w.fileno()), (-1, -1))
        files = glob.glob(os.path.join(server.config.data_dir, "mail", "example.test", "alice", "new", "*"))
        self.assertEqual(len(files), 1)
        self.assertTrue(read_stored(files[0]).endswith(b"Subject: hi\r\n\r\nhello\r\n"))


class EmbeddingLeavesTheProcessAloneTest(unittest.TestCase):
    """A MailServer started and stopped inside a host program changes nothing
    process-wide: the file descriptor limit is the command line's business
    (mailsrv.py serve), the root logger the host's."""

    def test_start_and_stop_leave_rlimit_and_root_logger_as_they_were(self):
        import logging
        import resource
        import tempfile
        import mailsrv
        from tests.helpers import free_ports
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowered = min(soft, 4096) if hard == resource.RLIM_INFINITY else min(soft, hard - 1, 4096)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))    # below the hard limit: room to raise
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        root = logging.getLogger()
        before = (resource.getrlimit(resource.RLIMIT_NOFILE), root.level, list(root.handlers))
        d = tempfile.mkdtemp(prefix="mailsrv-embed-")
        self.addCleanup(__import__("shutil").rmtree, d, True)
        server = mailsrv.MailServer(mailsrv.Config(free_ports(data_dir=d, imap_port="off", imaps_port="off",
                                                              log_level="CRITICAL")))
        server.start()
        self.addCleanup(logging.getLogger("mailsrv").setLevel, logging.NOTSET)
        server.loop.call_soon_threadsafe(lambda: server.reload(mailsrv.Config(dict(server.config.values))))
        server.stop(grace=1)
        self.assertFalse(server._thread.is_alive())
        self.assertEqual((resource.getrlimit(resource.RLIMIT_NOFILE), root.level, list(root.handlers)), before)


class FailedStartTest(unittest.TestCase):
    def test_a_port_in_use_closes_what_start_opened(self):
        """A listener that cannot bind: the error names it, and the loop's wake-up pair, the
        listeners already bound and the workers are released (no descriptor left behind)."""
        import socket
        import tempfile
        import mailsrv
        from tests.helpers import free_ports
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        d = tempfile.mkdtemp(prefix="mailsrv-embed-")
        self.addCleanup(__import__("shutil").rmtree, d, True)
        before = len(os.listdir("/proc/self/fd"))
        server = mailsrv.MailServer(mailsrv.Config(free_ports(data_dir=d, log_level="CRITICAL",
                                                              pop3_port=str(taken.getsockname()[1]))))
        with self.assertRaises(mailsrv.ConfigError) as cm:
            server.start()
        self.assertIn("pop3", str(cm.exception))
        self.assertLessEqual(len(os.listdir("/proc/self/fd")), before)


if __name__ == "__main__":
    unittest.main()
