"""The design card's layering rules, read from the AST of every module.

mailsrv.py (config, CLI, wiring) -> protocols/ -> store/.  Inside protocols/
only the event loop's three modules (loop.py: selector, timers, threads;
loop_transport.py: connections; loop_tls.py: TLS over MemoryBIO) touch
sockets, selectors, TLS, threads or the clock; store/ never imports the protocol layer; nothing imports a package
outside the standard library.
"""

import ast
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = {"mailsrv", "protocols", "store", "tests"}
IO_MODULES = {"socket", "selectors", "ssl", "time", "threading", "asyncio", "select"}
LOOP_MODULES = {"protocols/loop.py", "protocols/loop_transport.py", "protocols/loop_tls.py"}


def imports_of(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def python_files(top):
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        for f in files:
            if f.endswith(".py"):
                yield os.path.relpath(os.path.join(dirpath, f), ROOT)


class LayeringTest(unittest.TestCase):
    def test_protocol_sessions_do_no_io(self):
        bad = []
        for rel in python_files("protocols"):
            if rel in LOOP_MODULES:
                continue
            for name, line in imports_of(os.path.join(ROOT, rel)):
                if name.split(".")[0] in IO_MODULES:
                    bad.append(f"{rel}:{line} imports {name}")
        self.assertEqual(bad, [], "only the event loop (%s) may touch sockets, TLS, threads or the clock" % ", ".join(sorted(LOOP_MODULES)))

    def test_the_event_loop_modules_exist(self):
        # a renamed loop module must not leave a stale name in the allowed set
        self.assertEqual([m for m in sorted(LOOP_MODULES) if not os.path.exists(os.path.join(ROOT, m))], [])

    def test_store_does_not_import_protocols_or_entry_point(self):
        bad = []
        for rel in python_files("store"):
            for name, line in imports_of(os.path.join(ROOT, rel)):
                if name.split(".")[0] in ("protocols", "mailsrv"):
                    bad.append(f"{rel}:{line} imports {name}")
        self.assertEqual(bad, [])

    def test_protocols_do_not_import_entry_point(self):
        bad = [f"{rel}:{line}" for rel in python_files("protocols")
               for name, line in imports_of(os.path.join(ROOT, rel)) if name.split(".")[0] == "mailsrv"]
        self.assertEqual(bad, [])

    @unittest.skipUnless(hasattr(sys, "stdlib_module_names"), "needs Python 3.10+ to list the stdlib")
    def test_only_standard_library_imports(self):
        std = set(sys.stdlib_module_names) | {"__future__"}
        bad = []
        for top in ("protocols", "store", "tests"):
            for rel in python_files(top):
                for name, line in imports_of(os.path.join(ROOT, rel)):
                    head = name.split(".")[0]
                    if head not in std and head not in LOCAL:
                        bad.append(f"{rel}:{line} imports {name}")
        for name, line in imports_of(os.path.join(ROOT, "mailsrv.py")):
            head = name.split(".")[0]
            if head not in std and head not in LOCAL:
                bad.append(f"mailsrv.py:{line} imports {name}")
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
