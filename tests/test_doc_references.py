"""The project is readable on its own: no file names a document that is not in the
repository (the notes it was first written from), and every ``docs/*.md`` a file names
exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"KAN_FORMATS|ARCHITECTURE\.md|STYLE\.md|\bARCHITECTURE\b")
DOC = re.compile(r"\bdocs/([a-z_]+\.md)\b")


def _project_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [root / name for name in listed if (root / name).is_file()]


def outside_references(root: Path) -> dict[str, list[str]]:
    """file -> the names of outside documents it mentions (this test aside)."""
    found = {}
    for path in _project_files(root):
        if path.name == Path(__file__).name:
            continue
        names = sorted(set(OUTSIDE.findall(path.read_text(errors="replace"))))
        if names:
            found[path.relative_to(root).as_posix()] = names
    return found


def test_no_file_names_a_document_outside_the_repository() -> None:
    found = outside_references(REPO)
    assert found == {}, found


def test_every_named_doc_exists() -> None:
    missing = {
        f"{path.relative_to(REPO)}: docs/{name}"
        for path in _project_files(REPO)
        for name in DOC.findall(path.read_text(errors="replace"))
        if not (REPO / "docs" / name).is_file()
    }
    assert missing == set()


def test_the_check_finds_a_reference(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.py").write_text('"""See KAN_FORMATS.md and the ARCHITECTURE notes."""\n')
    (tmp_path / "b.md").write_text("See docs/formats.md.\n")
    assert outside_references(tmp_path) == {"a.py": ["ARCHITECTURE", "KAN_FORMATS"]}
