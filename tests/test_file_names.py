"""A job's file names (``model.mcz``, ``report.json``, ``report.html``) are written once, in
`metacluster.filenames`: the library, the service, the worker and the client use its
constants. The check reads the code with `ast` (docstrings and comments may name them)."""

from __future__ import annotations

import ast
from pathlib import Path

from metacluster import filenames

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("metacluster", "core", "service", "worker")
NAMES = {filenames.MODEL_FILE, filenames.REPORT_JSON, filenames.REPORT_HTML}
HOME = "metacluster/filenames.py"


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, class or function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literal_file_names(root: Path) -> list[str]:
    """`path:line: "name"` for each string literal (not a docstring) that is a file name."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            if where == HOME:
                continue
            tree = ast.parse(path.read_text(), filename=where)
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in docs:
                    out.append(f"{where}:{node.lineno}: {node.value!r}")
    return out


def test_the_file_names_are_written_only_in_the_constants_module() -> None:
    assert literal_file_names(REPO) == []
    assert sorted(NAMES) == ["model.mcz", "report.html", "report.json"]


def test_the_check_finds_a_literal_but_not_a_docstring(tmp_path: Path) -> None:
    pkg = tmp_path / "worker"
    pkg.mkdir()
    (pkg / "x.py").write_text(
        '"""Writes model.mcz."""\n\n\ndef f() -> str:\n    """report.html"""\n'
        '    return "report.json"\n\n\nNAMES = ("model.mcz",)\n'
    )
    assert literal_file_names(tmp_path) == [
        "worker/x.py:6: 'report.json'",
        "worker/x.py:9: 'model.mcz'",
    ]
