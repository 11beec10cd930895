"""The RFC index: which code cites which RFC section, from the code itself.

Every rule in mailsrv cites its RFC section in a comment or docstring
(``RFC 5321 \u00a74.5.2``).  This module finds those citations in Python source
text and names the place that makes each one: ``module:qualname`` of the
innermost ``def``/``class`` enclosing the citation's line (read from the AST),
or the module itself.  ``python3 mailsrv.py rfc`` prints the index;
``python3 mailsrv.py rfc 5321 4.5.2`` the places for one section and its
subsections.  The index is generated, so it cannot go stale (mox keeps one by
hand).

Pure: source text in, records out.  The caller reads the files (protocols/
commands.py's source_citations, the tests).

The citation form: "RFC" and the number (the whole RFC), then optionally
the section sign and the section number, dotted digits or an appendix letter
(``RFC 5321 \u00a74.5.2``).  A section sign without an RFC before it refers to the
RFC cited last before it in the same file, as a reader of the comment would
take it.  :func:`malformed` lists the look-alikes that break the form (no
space after "RFC", a space after the section sign, the word "section", no
section sign before the number) so a test can keep them out.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

SECTION = r"(?:\d+(?:\.\d+)*|[A-Z](?:\.\d+)*)\b(?!\.\d)"
# "RFC 5321", optionally followed (across spaces or a line break) by "\u00a74.5.2";
# "RFC822" is the name of a format (message/rfc822, RFC822.SIZE), not a citation.
# "issue 9 §2" names a section of one of our issues, not of an RFC: matched first
# (group 4, at the number) so it is never read as a section of the RFC cited before it.
_CITE = re.compile(r"RFC (\d{1,5})\b(?:\s*\u00a7(" + SECTION + r"))?|\u00a7(" + SECTION + r")"
                   r"|(?<=[Ii]ssue )(\d+,? \u00a7" + SECTION + r")")
_MALFORMED = [
    (re.compile(r"\bRFC(?!822\b)-?\d+"), "no space between RFC and its number"),
    (re.compile(r"\bRFC\s{2,}\d|\bRFC\u00a0\d"), "one plain space between RFC and its number"),
    (re.compile(r"\u00a7\s+\S"), "no space after \u00a7"),
    (re.compile(r"\u00a7(?![\dA-Z])|\u00a7[A-Z][a-z]"), "\u00a7 without a section number"),
    (re.compile(r"\bRFC \d+\u00a7"), "a space before \u00a7"),
    (re.compile(r"\bRFC \d+,? (?:\u00a7 ?)?(?:[Ss]ection|[Ss]ect?\.|[Ss]\.|[Cc]hapter) ?\d"), "write \u00a7x.y, not 'section x.y'"),
    (re.compile(r"\b[Ss]ections? \d+\.\d"), "write \u00a7x.y, not 'section x.y'"),
    (re.compile(r"\bRFC \d+,? \d+\.\d"), "\u00a7 missing before the section number"),
    (re.compile(r"\u00a7\d+(?:\.\d+)*\.\d*[a-z]"), "a section number is digits and dots"),
]


@dataclass(frozen=True)
class Citation:
    rfc: int
    section: str          # "" for the whole RFC
    path: str             # as given by the caller, e.g. "protocols/smtp/server.py"
    line: int
    place: str            # "protocols.smtp.server:SmtpSession.smtp_MAIL" or the module


def module_name(path: str) -> str:
    """``protocols/smtp/server.py`` -> ``protocols.smtp.server``."""
    name = path[:-3] if path.endswith(".py") else path
    name = name.replace("\\", "/").replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


_BETWEEN_COMMENTS = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


def _texts(source: str) -> Iterator[Tuple[int, str]]:
    """(first line, text) of each comment block and string literal, in order.
    Consecutive comment lines form one block (a citation may wrap)."""
    block: List[str] = []
    start = last = 0
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    try:
        for tok in tokens:
            if tok.type == tokenize.COMMENT:
                if block and tok.start[0] != last + 1:
                    yield start, "\n".join(block)
                    block = []
                if not block:
                    start = tok.start[0]
                block.append(tok.string.lstrip("#"))
                last = tok.start[0]
                continue
            if block and tok.type not in _BETWEEN_COMMENTS:
                yield start, "\n".join(block)
                block = []
            if tok.type == tokenize.STRING:
                yield tok.start[0], tok.string
    except (tokenize.TokenError, SyntaxError):
        pass
    if block:
        yield start, "\n".join(block)


def _scopes(source: str, path: str) -> List[Tuple[int, int, str]]:
    """(first line, last line, qualname) of every def and class."""
    out: List[Tuple[int, int, str]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append((first, getattr(child, "end_lineno", child.lineno), name))
                walk(child, name + ".")
            else:
                walk(child, prefix)
    walk(ast.parse(source, path), "")
    return out


def _place(scopes: List[Tuple[int, int, str]], module: str, line: int) -> str:
    best: Optional[Tuple[int, int, str]] = None
    for first, last, name in scopes:
        if first <= line <= last and (best is None or first >= best[0]):
            best = (first, last, name)
    return f"{module}:{best[2]}" if best else module


def citations(source: str, path: str) -> List[Citation]:
    """Every citation in one file's source text (``path`` names it)."""
    module, scopes = module_name(path), _scopes(source, path)
    out: List[Citation] = []
    current: Optional[int] = None
    for first, text in _texts(source):
        for m in _CITE.finditer(text):
            if m.group(4):
                continue            # a section of one of our issues, not of an RFC
            line = first + text.count("\n", 0, m.start())
            if m.group(1):
                current = int(m.group(1))
                section = m.group(2) or ""
                line = first + text.count("\n", 0, m.end()) if section else line
            elif current is None:
                continue            # a bare \u00a7 with no RFC before it: malformed() reports it
            else:
                section = m.group(3)
            out.append(Citation(current, section, path, line, _place(scopes, module, line)))
    return out


def malformed(source: str, path: str) -> List[str]:
    """``path:line: text (why)`` for each citation that breaks the form."""
    out: List[str] = []
    seen_rfc = False
    for first, text in _texts(source):
        lines: Set[int] = set()
        for rx, why in _MALFORMED:
            for m in rx.finditer(text):
                line = first + text.count("\n", 0, m.start())
                if line not in lines:          # one report a line is enough to find it
                    lines.add(line)
                    out.append(f"{path}:{line}: {m.group(0)!r} ({why})")
        for m in _CITE.finditer(text):
            if m.group(4):
                continue
            if m.group(1):
                seen_rfc = True
            elif not seen_rfc:
                line = first + text.count("\n", 0, m.start())
                out.append(f"{path}:{line}: {m.group(0)!r} (no RFC cited before this \u00a7)")
    return out


# -- the RFC texts -------------------------------------------------------------

# "4.5.2.  Title" at the margin (most RFCs), "      1.2.2  Title" indented by
# depth (rfc1123.txt), "6.1.1. Title" (rfc1035.txt), "Appendix B.  Title".
_HEADING = re.compile(r"^(?: {0,3}(?:Appendix )?(\d+(?:\.\d+)*|[A-Z](?:\.\d+)*)\.?(?: +\S|$)"
                      r"| +(\d+(?:\.\d+)+)\.? {2,}[A-Z])", re.M)


def sections_of(rfc_text: str) -> Set[str]:
    """The section numbers an RFC's plain text has: its headings (``4.5.2.  Title``,
    ``Appendix B.  Title``) and the table of contents, with every parent."""
    found: Set[str] = set()
    for m in _HEADING.finditer(rfc_text):
        parts = (m.group(1) or m.group(2)).split(".")
        for i in range(1, len(parts) + 1):
            found.add(".".join(parts[:i]))
    return found


# -- the index -----------------------------------------------------------------

def _key(section: str) -> Tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in section.split(".")) if section else ()


def index(cites: Iterable[Citation]) -> Dict[int, Dict[str, List[str]]]:
    """rfc -> section -> sorted places (each once)."""
    out: Dict[int, Dict[str, Set[str]]] = {}
    for c in cites:
        out.setdefault(c.rfc, {}).setdefault(c.section, set()).add(c.place)
    return {rfc: {s: sorted(p) for s, p in secs.items()} for rfc, secs in out.items()}


def format_index(idx: Dict[int, Dict[str, List[str]]], rfc: Optional[int] = None,
                 section: str = "") -> List[str]:
    """The lines ``mailsrv.py rfc [NNNN [x.y]]`` prints: ``RFC 5321 \u00a74.5.2`` then
    the places indented; one section includes its subsections."""
    lines: List[str] = []
    for number in sorted(idx):
        if rfc is not None and number != rfc:
            continue
        for sec in sorted(idx[number], key=_key):
            if section and sec != section and not sec.startswith(section + "."):
                continue
            lines.append(f"RFC {number} \u00a7{sec}" if sec else f"RFC {number}")
            lines.extend("    " + p for p in idx[number][sec])
    return lines
