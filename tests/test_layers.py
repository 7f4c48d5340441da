"""The import rules that keep the layers from doubling back (docs/architecture.md).

Every import in every module counts, also the lazy ones inside functions: a lazy
import is still a dependency. The checker reads the source with `ast` (nothing is
imported), and the second half of this file shows it fails when a rule is broken.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("metacluster", "core", "service", "worker")

SERVICE_STACK = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "celery", "kombu")
LATER = ("metacluster.artifact", "metacluster.workflow", "metacluster.cli", "metacluster.client")


@dataclass(frozen=True)
class Rule:
    """Modules named `module` or under it must not import anything under `forbidden`."""

    module: str
    forbidden: tuple[str, ...]
    why: str


RULES = (
    Rule(
        "metacluster",
        (*SERVICE_STACK, "pydantic_settings", "core", "service", "worker"),
        "the library runs without the service",
    ),
    Rule(
        "metacluster.kan",
        (
            "metacluster.data",
            "metacluster.formats",
            "metacluster.training",
            "metacluster.compress",
            *LATER,
        ),
        "layers and the edge view are the bottom floor",
    ),
    Rule(
        "metacluster.data",
        (
            "metacluster.kan",
            "metacluster.formats",
            "metacluster.training",
            "metacluster.compress",
            *LATER,
        ),
        "data sets know nothing of models",
    ),
    Rule(
        "metacluster.formats",
        ("metacluster.training", "metacluster.compress", *LATER),
        "importers only read and write checkpoints",
    ),
    Rule(
        "metacluster.training",
        ("metacluster.formats", "metacluster.compress", *LATER),
        "training is below compression",
    ),
    Rule(
        "metacluster.compress",
        ("metacluster.formats", *LATER),
        "the engine never reads or writes files: workflow does, around it",
    ),
    Rule(
        "metacluster.artifact",
        ("metacluster.formats", "metacluster.workflow", "metacluster.cli", "metacluster.client"),
        "the artifact format needs only the engine's types",
    ),
    Rule(
        "core", ("service", "worker", "fastapi", "starlette", "uvicorn"), "both sides import core"
    ),
    Rule("service", ("worker", "celery"), "the API sends work through core.producer only"),
    Rule("worker", ("service", "fastapi", "starlette", "uvicorn"), "workers serve no HTTP"),
)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement in the file, relative ones resolved."""
    name = _module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            # `from metacluster import formats` imports the submodule metacluster.formats
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """One line per import statement that breaks a rule (naming the most specific module)."""
    found: dict[tuple[str, int, str], tuple[str, str]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(root, path)
            where = str(path.relative_to(root))
            for line, imported in imports_of(root, path):
                for rule in rules:
                    if not _under(module, rule.module):
                        continue
                    for bad in rule.forbidden:
                        # a module may import its own subpackages (metacluster.cli is
                        # under metacluster, and metacluster.compress under itself)
                        if _under(imported, bad) and not _under(module, bad):
                            key = (where, line, rule.module)
                            if len(imported) > len(found.get(key, ("", ""))[0]):
                                found[key] = (imported, rule.why)
    return sorted(
        f"{where}:{line}: {_module_name(root, root / where)} imports {imported} ({why})"
        for (where, line, _), (imported, why) in found.items()
    )


def test_the_layers_do_not_double_back() -> None:
    assert violations(REPO) == []


def test_the_import_graph_is_read_from_the_real_code() -> None:
    """The checker sees real edges (lazy imports too), so a clean result means something."""
    edges = {
        (_module_name(REPO, p), imported)
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        for _, imported in imports_of(REPO, p)
    }
    assert ("worker.runner", "metacluster.workflow") in edges  # a lazy import in a function
    assert ("service.job_requests", "core.jobs") in edges
    assert ("metacluster.workflow", "metacluster.artifact") in edges


# -- the checker fails when a rule is broken --------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the four packages to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        (
            "service/app.py",
            "from worker.runner import run_job",
            "service.app imports worker.runner",
        ),
        ("worker/tasks.py", "import service.app", "worker.tasks imports service.app"),
        (
            "core/jobs.py",
            "from service import job_requests",
            "core.jobs imports service.job_requests",
        ),
        (
            "metacluster/compress/pipeline.py",
            "from metacluster.artifact import artifact_bytes",
            "metacluster.compress.pipeline imports metacluster.artifact",
        ),
        (
            "metacluster/compress/report.py",
            "    from metacluster import formats",  # lazy, inside a function
            "metacluster.compress.report imports metacluster.formats",
        ),
        (
            "metacluster/cli.py",
            "import service.commands",
            "metacluster.cli imports service.commands",
        ),
        (
            "metacluster/kan/model.py",
            "from ..training import train_model",
            "imports metacluster.training",
        ),
        ("service/deps.py", "from celery import Celery", "service.deps imports celery"),
    ],
)
def test_a_broken_rule_is_reported(tree: Path, file: str, line: str, expected: str) -> None:
    assert violations(tree) == []
    target = tree / file
    if line.startswith("    "):
        target.write_text(target.read_text() + f"\n\ndef _broken() -> None:\n{line}\n")
    else:
        target.write_text(target.read_text() + f"\n{line}\n")
    found = violations(tree)
    assert len(found) == 1 and expected in found[0], found
