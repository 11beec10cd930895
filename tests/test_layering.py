"""The design card's layering rules, read from the AST of every module.

mailsrv.py (config, CLI, wiring) -> protocols/ -> store/.  Inside protocols/
only the event loop's three modules (loop.py: selector, timers, threads;
loop_transport.py: connections; loop_tls.py: TLS over MemoryBIO) touch
sockets, selectors, TLS, threads or the clock; store/ never imports the
protocol layer; the protocol sessions (protocols/smtp, pop3, imap, dns, and
what they share: sasl.py, auth_exchange.py, base.py, the backend contracts)
import nothing from store/ but store/scram.py's pure SASLprep and SCRAM key
math (one definition for the users file and the exchange) and open no file;
nothing imports a package outside the standard library.
"""

import ast
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = {"mailsrv", "protocols", "store", "tests"}
# The one store module the sessions may import: pure functions, no I/O, no state.
PURE_STORE = {"store.scram"}
# The sans-I/O sessions and what they share (issue 9, sections 2 and 3): they reach the disk
# only through the backend contracts (protocols/backend/contracts.py).
SESSION_PACKAGES = ("protocols/smtp", "protocols/pop3", "protocols/imap", "protocols/dns", "protocols/http")
SESSION_MODULES = ("protocols/sasl.py", "protocols/auth_exchange.py", "protocols/base.py",
                   "protocols/backend/contracts.py")   # the sessions import the contracts
# Modules whose only use is the file system.
FILE_MODULES = {"fcntl", "shutil", "tempfile", "pathlib", "glob", "mmap", "fileinput"}
# os.* a session may use: randomness, nothing that touches a file.
OS_ALLOWED = {"urandom"}
IO_MODULES = {"socket", "selectors", "ssl", "time", "threading", "asyncio", "select"}
LOOP_MODULES = {"protocols/loop.py", "protocols/loop_transport.py", "protocols/loop_tls.py",
                "protocols/loop_sync.py", "protocols/loop_https.py",
                "protocols/loop_siblings.py", "protocols/loop_connlimits.py",   # loop_connlimits: the connection limits' counters in memory shared by the workers; loop_siblings: the Unix datagram channel between sibling processes; loop_https: blocking HTTPS on workers; loop_sync: a test's thread waits for the loop's answer (TestServer)
                "protocols/supervisor.py"}   # workers = N: the listening sockets, fork, signals, waiting for the workers


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


def session_files():
    for top in SESSION_PACKAGES:
        yield from python_files(top)
    for rel in SESSION_MODULES:
        if os.path.exists(os.path.join(ROOT, rel)):
            yield rel


def file_calls(path):
    """``open(...)``, ``io.open``/``os.*`` uses other than os.urandom, in ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            yield "open(", node.lineno
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr not in OS_ALLOWED:
                yield "os." + node.attr, node.lineno
            elif node.value.id == "io" and node.attr in ("open", "FileIO"):
                yield "io." + node.attr, node.lineno


class LayeringTest(unittest.TestCase):
    def test_sessions_import_nothing_from_store(self):
        bad = [f"{rel}:{line} imports {name}" for rel in session_files()
               for name, line in imports_of(os.path.join(ROOT, rel))
               if name.split(".")[0] == "store" and name not in PURE_STORE]
        self.assertEqual(bad, [], "sessions reach the store only through protocols/backend/contracts.py")

    def test_no_session_opens_a_file(self):
        bad = []
        for rel in session_files():
            bad += [f"{rel}:{line} uses {what}" for what, line in file_calls(os.path.join(ROOT, rel))]
            bad += [f"{rel}:{line} imports {name}" for name, line in imports_of(os.path.join(ROOT, rel))
                    if name.split(".")[0] in FILE_MODULES]
        self.assertEqual(bad, [], "no protocol session touches a file: the store does, through the backend")

    def test_pure_store_modules_import_only_the_standard_library(self):
        bad = [f"{mod}:{line} imports {name}" for mod in PURE_STORE
               for name, line in imports_of(os.path.join(ROOT, mod.replace(".", "/") + ".py"))
               if name.split(".")[0] in LOCAL]
        self.assertEqual(bad, [], "what the sessions may import from store/ stays pure")

    def test_the_rules_see_a_violation(self):
        """The checks above are not vacuous: they find what they look for."""
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write("import os\nfrom store.maildrop import MaildropLocked\nopen('x')\nos.unlink('x')\nos.urandom(1)\n")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual([n for n, _ in imports_of(f.name)], ["os", "store.maildrop"])
        self.assertEqual([w for w, _ in file_calls(f.name)], ["open(", "os.unlink"])

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
