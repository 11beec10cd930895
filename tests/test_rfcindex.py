"""The RFC index (issue 9 §5): citations found in the code, their places,
their form, and that each cited section exists in the RFC's text."""

import os
import subprocess
import sys
import unittest

from mailsrv import source_citations
from protocols import rfcindex

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# ../shared/rfc from the repository root (a worktree sits one level deeper).
RFC_DIRS = [os.path.join(ROOT, "..", "shared", "rfc"), os.path.join(ROOT, "..", "..", "shared", "rfc")]
RFC_DIR = next((d for d in RFC_DIRS if os.path.isfile(os.path.join(d, "rfc5321.txt"))), None)

SOURCE = '''"""Module docstring: RFC 5321 \u00a74.1.1 and RFC 1939."""
X = 1   # RFC 5321
        # \u00a74.5.3.1.4 (wrapped: the same RFC as the line above)


class Session:
    """RFC 1939 \u00a75."""

    @staticmethod
    def quit(self):
        """QUIT (\u00a76)."""
        return "RFC 9999 \u00a71"     # a string counts too

    def stat(self):
        # nested def: the innermost encloser wins
        def inner():
            pass   # RFC 3207 \u00a74.2
        return inner
'''


def tree_files(*tops):
    for top in tops:
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            for f in files:
                if f.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, f), ROOT)


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


class CitationParsingTest(unittest.TestCase):
    def test_places_are_the_innermost_def_or_class_or_the_module(self):
        got = [(c.rfc, c.section, c.line, c.place) for c in rfcindex.citations(SOURCE, "protocols/pop3/x.py")]
        self.assertEqual(got, [
            (5321, "4.1.1", 1, "protocols.pop3.x"),
            (1939, "", 1, "protocols.pop3.x"),
            (5321, "4.5.3.1.4", 3, "protocols.pop3.x"),
            (1939, "5", 7, "protocols.pop3.x:Session"),
            (1939, "6", 11, "protocols.pop3.x:Session.quit"),
            (9999, "1", 12, "protocols.pop3.x:Session.quit"),
            (3207, "4.2", 17, "protocols.pop3.x:Session.stat.inner"),
        ])

    def test_a_section_of_one_of_our_issues_is_not_an_rfc_citation(self):
        source = '"""RFC 1939 §5 says so; issue 9 §2 asks for it; Issue 7, §3 too."""\n'
        got = [(c.rfc, c.section) for c in rfcindex.citations(source, "protocols/x.py")]
        self.assertEqual(got, [(1939, "5")])
        self.assertEqual(rfcindex.malformed('"""issue 9 §2: no RFC here"""\n', "protocols/x.py"), [])

    def test_package_init_is_named_after_the_package(self):
        self.assertEqual(rfcindex.module_name("protocols/smtp/__init__.py"), "protocols.smtp")
        self.assertEqual(rfcindex.module_name("mailsrv.py"), "mailsrv")

    def test_malformed_citations_are_reported(self):
        bad = {
            "# see RFC5321": "no space",
            "# RFC 5321 \u00a7 4.5.2": "no space after",
            "# RFC 5321 section 4.5.2": "not 'section",
            "# RFC 5321, Section 4.5.2": "not 'section",
            "# RFC 5321 4.5.2": "missing before",
            "# \u00a74.5 with no RFC before": "no RFC cited before",
        }
        for src, why in bad.items():
            with self.subTest(src=src):
                found = rfcindex.malformed(src + "\n", "x.py")
                self.assertEqual(len(found), 1, found)
                self.assertIn(why, found[0])
        for good in ("# RFC 5321 \u00a74.5.2's rule\n", "# RFC822.SIZE and message/rfc822\n",
                     "# RFC 5321 \u00a73.1-\u00a73.3 / \u00a74.1.4, RFC 3463 X.5.3\n"):
            self.assertEqual(rfcindex.malformed(good, "x.py"), [], good)

    def test_sections_of_reads_headings_of_each_rfc_style(self):
        text = ("Table of Contents\n   1.  Introduction ....... 3\n\n"
                "4.5.2.  Transparency\n\n      1.2.2  Robustness Principle\n\n"
                "6.1.1. Control\n\nAppendix B.  Generating SMTP Commands\n"
                "   the 2008 text says 7.10 things\n")
        got = rfcindex.sections_of(text)
        for s in ("1", "4", "4.5", "4.5.2", "1.2", "1.2.2", "6.1.1", "B"):
            self.assertIn(s, got)
        self.assertNotIn("7.10", got)


class TreeCitationsTest(unittest.TestCase):
    def test_every_citation_in_the_tree_is_well_formed(self):
        bad = []
        for rel in sorted(tree_files("protocols", "store", "tests")) + ["mailsrv.py"]:
            if rel != os.path.join("tests", "test_rfcindex.py"):     # its bad examples are on purpose
                bad += rfcindex.malformed(read(rel), rel)
        self.assertEqual(bad, [], "write citations as RFC 5321 \u00a74.5.2")

    @unittest.skipIf(RFC_DIR is None, "no ../shared/rfc beside the repository")
    def test_every_cited_section_exists_in_the_rfc_text(self):
        cites = []
        for rel in sorted(tree_files("protocols", "store", "tests")) + ["mailsrv.py"]:
            if rel != os.path.join("tests", "test_rfcindex.py"):
                cites += rfcindex.citations(read(rel), rel)
        sections, missing = {}, []
        for c in cites:
            path = os.path.join(RFC_DIR, "rfc%d.txt" % c.rfc)
            if not c.section or not os.path.isfile(path):
                continue
            if c.rfc not in sections:
                with open(path, encoding="utf-8", errors="replace") as f:
                    sections[c.rfc] = rfcindex.sections_of(f.read())
            if c.section not in sections[c.rfc]:
                missing.append(f"{c.path}:{c.line}: RFC {c.rfc} \u00a7{c.section}")
        self.assertEqual(missing, [])

    def test_index_covers_the_product_code_only(self):
        paths = {c.path.split("/")[0] for c in source_citations()}
        self.assertEqual(paths, {"protocols", "store", "mailsrv.py"})


class RfcCommandTest(unittest.TestCase):
    def run_rfc(self, *args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "mailsrv.py"), "rfc", *args],
                              capture_output=True, text=True, timeout=60)

    def test_whole_index_lists_sections_with_their_functions(self):
        r = self.run_rfc()
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        at = lines.index("RFC 5321 \u00a74.5.2")
        self.assertIn("    protocols.smtp.data:DotStuffer", lines[at + 1:at + 20])
        self.assertIn("RFC 1939", [line.split(" \u00a7")[0] for line in lines])

    def test_one_section_shows_its_places_and_subsections(self):
        r = self.run_rfc("5321", "4.5.3")
        self.assertEqual(r.returncode, 0, r.stderr)
        heads = [line for line in r.stdout.splitlines() if not line.startswith("    ")]
        self.assertTrue(heads and all(h == "RFC 5321 \u00a74.5.3" or h.startswith("RFC 5321 \u00a74.5.3.")
                                      for h in heads), heads)
        self.assertIn("RFC 5321 \u00a74.5.3.1.4", heads)
        self.assertNotIn("RFC 5321 \u00a74.5.2", r.stdout)

    def test_uncited_section_is_one_line_on_stderr(self):
        r = self.run_rfc("5321", "99.9")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)


if __name__ == "__main__":
    unittest.main()
