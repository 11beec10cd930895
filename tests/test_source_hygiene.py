"""Loose ends that must not come back (issue 9, item 4): references to documents
the repository does not have, paths of a development machine, unused
imports, comments about code that is gone or about a storage form we no
longer use, and helpers written twice."""

import ast
import functools
import io
import os
import re
import tokenize
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def python_files(*tops):
    for top in tops:
        if top.endswith(".py"):
            yield top
            continue
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, f), ROOT)


@functools.lru_cache(maxsize=None)
def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=None)
def comments_and_strings(source):
    """(line, text) of every comment and string literal (each file tokenized
    once for all the tests here)."""
    return tuple((tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type in (tokenize.COMMENT, tokenize.STRING))


def unused_imports(source, rel):
    """Imported names never used in the module (an AST check: pyflakes is not
    a dependency).  A ``# noqa: F401`` on the import keeps a re-export."""
    tree = ast.parse(source, rel)
    lines = source.splitlines()
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            text = "\n".join(lines[node.lineno - 1:getattr(node, "end_lineno", node.lineno)])
            if "noqa: F401" in text:
                continue
            for alias in node.names:
                imported[(alias.asname or alias.name).split(".")[0]] = node.lineno
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    annotations = [getattr(n, "returns", None) or getattr(n, "annotation", None) for n in ast.walk(tree)
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.AnnAssign, ast.arg))]
    for n in ast.walk(tree):      # re-exports listed in __all__
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets):
            used.update(e.value for e in ast.walk(n.value) if isinstance(e, ast.Constant))
    for a in filter(None, annotations):         # names inside string annotations ("Part")
        for n in ast.walk(a):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                used.update(re.findall(r"[A-Za-z_]\w*", n.value))
    return [f"{rel}:{line}: {name}" for name, line in sorted(imported.items()) if name not in used]


class HygieneTest(unittest.TestCase):
    def test_no_reference_to_missing_documents_or_machine_paths(self):
        design, machine = "design" + ".md", re.compile("/" + "work/|/" + "home/")
        bad = []
        for rel in python_files("protocols", "store", "tests", "mailsrv.py"):
            if rel == SELF:
                continue
            for line, text in comments_and_strings(read(rel)):
                if design in text or machine.search(text):
                    bad.append(f"{rel}:{line}: {text.strip()[:80]}")
        self.assertEqual(bad, [])

    def test_no_unused_imports(self):
        bad = []
        for rel in python_files("protocols", "store", "tests", "mailsrv.py"):
            bad += unused_imports(read(rel), rel)
        self.assertEqual(bad, [])

    def test_comments_say_maildir_files_are_lf(self):
        # store/deliver.py writes LF (the Maildir form); a comment saying CRLF misleads.
        stale = re.compile(r"(?:[Mm]essages are stored|stored files are) (?:with )?CRLF")
        bad = [f"{rel}:{line}" for rel in python_files("protocols", "store")
               for line, text in comments_and_strings(read(rel)) if stale.search(text)]
        self.assertEqual(bad, [])

    def test_no_bug_comments_in_tests(self):
        # A test says what it guards; a bug it found is fixed (or filed), not left in a comment
        # that outlives the code it describes.
        bad = [f"{rel}:{line}" for rel in python_files("tests") if rel != SELF
               for line, text in comments_and_strings(read(rel))
               if text.startswith("#") and re.match(r"#\s*BUG\b", text)]
        self.assertEqual(bad, [])

    def test_unused_helpers_stay_removed(self):
        from protocols.outbound import dsn
        from protocols.backend import wiring
        from store import queue
        self.assertFalse(hasattr(dsn, "build_delay_notice"))          # build_report("delayed") remains
        self.assertFalse(hasattr(queue.QueueEntry, "state_of"))
        self.assertFalse(hasattr(wiring.Backend, "_on_bounce"))        # the relay logs bounces itself

    def test_one_smtp_test_sink(self):
        # the recording SMTP server of the relay tests lives in tests/smtpsink.py only
        bad = [rel for rel in python_files("tests") if rel != SELF
               and re.search(r"^class \w*Sink\w*\(", read(rel), re.M) and not rel.endswith("smtpsink.py")]
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
