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


if __name__ == "__main__":
    unittest.main()
