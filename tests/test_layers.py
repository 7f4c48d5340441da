"""The import rules that keep the layers from doubling back (docs/architecture.md).

Each unit (a package of the library, or core, service, worker) has an ALLOW-list: the
units its modules may import, taken from the "may import" column of docs/architecture.md.
Anything else of the project is refused, so a new edge must be added to the map first.
Every import counts, also the lazy ones inside functions (a lazy import is still a
dependency) and those under ``if TYPE_CHECKING:``. A second check: inside each package
named in `ACYCLIC`, no module imports its way back to itself (here the `TYPE_CHECKING`
imports are left out: they never run). compress/ has one unit per layer (a ladder:
each layer may import the ones below it) and is checked with its `TYPE_CHECKING` imports
too: no circle between its layers, and no module circle but the one known inside
pipeline/ (`KNOWN_TYPE_CIRCLES`). Third-party rules stay deny-lists (the library
never imports the service stack, ...).

The checker reads the source with `ast` (nothing is imported); the second half of this
file shows that each kind of rule bites.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("metacluster", "core", "service", "worker")

SERVICE_STACK = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "celery", "kombu")
HTTP_SERVER = ("fastapi", "starlette", "uvicorn")


@dataclass(frozen=True)
class Unit:
    """Modules named `name` or under it may import their own unit, the units nested in
    it, the `FLOOR`, and the units in `may_import` (each with what is under it); of
    third-party packages, nothing under `never`."""

    name: str
    may_import: tuple[str, ...]
    why: str
    never: tuple[str, ...] = ()
    only_itself: bool = False  # the unit is the one module, not what is under it


# The library's bottom floor: modules that import nothing of the project, usable by all.
FLOOR = ("metacluster.errors", "metacluster.filenames")
LIBRARY = ("metacluster",)  # "all of the library": every unit under metacluster
NOT_THE_SERVICE = (*SERVICE_STACK, "pydantic_settings", "core", "service", "worker")

UNITS = (
    Unit(
        "metacluster",
        (),
        "the package root: the version and the lazy public names",
        only_itself=True,
    ),
    Unit("metacluster.errors", (), "the error hierarchy is the bottom floor"),
    Unit("metacluster.filenames", (), "file names are constants"),
    Unit("metacluster.device", (), "resolve_device needs torch only"),
    Unit("metacluster.registry", (), "the one registry type"),
    Unit(
        "metacluster.kan",
        ("metacluster.registry",),
        "layers and the edge view are the bottom floor",
    ),
    Unit("metacluster.data", (), "data sets know nothing of models"),
    Unit(
        "metacluster.formats",
        ("metacluster.kan", "metacluster.registry"),
        "importers only read and write checkpoints",
    ),
    Unit(
        "metacluster.training",
        ("metacluster.kan", "metacluster.data", "metacluster.device"),
        "training is below compression",
    ),
    Unit(
        "metacluster.compress",
        (
            "metacluster.kan",
            "metacluster.data",
            "metacluster.training",
            "metacluster.device",
            "metacluster.registry",
        ),
        "the engine's front (its __init__): imports its layers, which registers the "
        "methods; the engine never reads or writes the user's files: workflow does",
    ),
    # compress/, layer by layer from the bottom: each may import the layers below it.
    Unit(
        "metacluster.compress.spec",
        ("metacluster.registry",),
        "the spec of a run is compress's floor (methods register their option types in it)",
    ),
    Unit(
        "metacluster.compress.numeric",
        ("metacluster.compress.spec", "metacluster.kan"),
        "k-means, codebooks and packing know no stage",
    ),
    Unit(
        "metacluster.compress.sizing",
        ("metacluster.compress.spec", "metacluster.compress.numeric", "metacluster.kan"),
        "every byte estimate, from the numeric pieces alone",
    ),
    Unit(
        "metacluster.compress.container",
        (
            "metacluster.compress.spec",
            "metacluster.compress.numeric",
            "metacluster.compress.sizing",
            "metacluster.kan",
            "metacluster.formats",
        ),
        "the artifact's bytes, built once, and the exact sizer (a source measured in "
        "its own format's layout)",
    ),
    Unit(
        "metacluster.compress.stages",
        (
            "metacluster.compress.spec",
            "metacluster.compress.numeric",
            "metacluster.compress.sizing",
            "metacluster.compress.container",
            "metacluster.kan",
            "metacluster.data",
            "metacluster.training",
        ),
        "a stage takes what it reads of a run (a Protocol), never the run itself",
    ),
    Unit(
        "metacluster.compress.pipeline",
        (
            "metacluster.compress.spec",
            "metacluster.compress.numeric",
            "metacluster.compress.sizing",
            "metacluster.compress.container",
            "metacluster.compress.stages",
            "metacluster.kan",
            "metacluster.data",
            "metacluster.training",
            "metacluster.device",
            "metacluster.registry",
        ),
        "the run (registry, plan, context, report, dispatch) imports no method: "
        "methods register with it",
    ),
    Unit(
        "metacluster.compress.methods",
        (
            "metacluster.compress.spec",
            "metacluster.compress.numeric",
            "metacluster.compress.sizing",
            "metacluster.compress.container",
            "metacluster.compress.stages",
            "metacluster.compress.pipeline",
            "metacluster.kan",
            "metacluster.data",
            "metacluster.training",
            "metacluster.device",
        ),
        "a method is a plug-in on the run's interfaces",
    ),
    Unit(
        "metacluster.artifact",
        ("metacluster.compress", "metacluster.kan", "metacluster.runtime"),
        "the artifact format needs only the engine's types; it loads into a runtime",
    ),
    Unit(
        "metacluster.runtime",
        ("metacluster.compress", "metacluster.kan"),
        "the codebook runtime runs decoded codebooks; it never reads files",
    ),
    Unit("metacluster.workflow", LIBRARY, "the one use case, on the whole library"),
    Unit("metacluster.cli", LIBRARY, "the command line, on the whole library"),
    Unit("metacluster._output", (), "the CLI's printing helpers"),
    Unit(
        "metacluster.client",
        ("metacluster.tracking",),
        "the service's client needs neither torch nor the engine",
    ),
    Unit(
        "metacluster.remote",
        (
            "metacluster.client",
            "metacluster._output",
            "metacluster.tracking",
            "metacluster.compress",
        ),
        "`metacluster remote` is the client's command line; it checks a config with the "
        "engine's own MetaClusterConfig before uploading anything",
    ),
    Unit(
        "metacluster.reporting",
        ("metacluster.artifact", "metacluster.compress"),
        "a report is drawn from a report or an artifact",
    ),
    Unit("metacluster.webhooks", (), "Standard Webhooks signing is stdlib"),
    Unit("metacluster.tracking", (), "MLflow logging takes a job's JSON and files"),
    Unit("core", LIBRARY, "both sides import core", never=HTTP_SERVER),
    Unit("service", ("core", *LIBRARY), "the API sends work through core.producer", ("celery",)),
    Unit("worker", ("core", *LIBRARY), "workers serve no HTTP", never=HTTP_SERVER),
)
# Third-party rules of the whole library (its units add their own `never`).
LIBRARY_NEVER = NOT_THE_SERVICE
# compress/'s front and layers (docs/architecture.md, "The engine room").
COMPRESS_LAYERS = tuple(
    u.name
    for u in UNITS
    if u.name == "metacluster.compress" or u.name.startswith("metacluster.compress.")
)

# Imports the map refuses that wait for a change in flight (module, imported module) ->
# why; `test_each_pending_import_is_still_there` fails once one is gone, so the entry
# goes with it. None today: spec.config checks `method_options` against spec.options,
# where the methods register their option types (it no longer asks the registry).
PENDING: dict[tuple[str, str], str] = {}

# Packages whose modules import no circle (`TYPE_CHECKING` imports aside). Not core/:
# core.storage imports its backends to register them and they import its
# `register_backend` (a plug-in registry). compress/'s layers (the Units above) draw
# no circle even with their `TYPE_CHECKING` imports (`COMPRESS_LAYERS`).
ACYCLIC = (
    "metacluster.kan",
    "metacluster.data",
    "metacluster.formats",
    "metacluster.training",
    "metacluster.compress",
    "metacluster.runtime",
    "metacluster.client",
    "core.db",
    "service",
    "worker",
)


# -- reading the imports ---------------------------------------------------------------------
def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _root_exports(root: Path) -> dict[str, str]:
    """The lazy public names of `metacluster/__init__.py` (name -> defining module)."""
    tree = ast.parse((root / "metacluster" / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "_EXPORTS":
                return {
                    k.value: v.value
                    for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                }
    return {}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:``."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                found.update(id(n) for n in ast.walk(child))
    return found


@dataclass(frozen=True)
class Edge:
    module: str
    line: int
    imported: str
    type_only: bool


@functools.cache
def _statements(text: str) -> tuple[tuple[int, str, int, tuple[str, ...], bool], ...]:
    """(line, module, level, names, under TYPE_CHECKING) of each import statement of a
    source text (`names` empty for ``import m``); cached: the copies the negative tests
    make share all but one file with the real tree."""
    tree = ast.parse(text)
    typing_only = _type_checking_nodes(tree)
    out = []
    for node in ast.walk(tree):
        hidden = id(node) in typing_only
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, 0, (), hidden) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names)
            out.append((node.lineno, node.module or "", node.level, names, hidden))
    return tuple(out)


def imports_of(root: Path, path: Path, exports: Mapping[str, str] | None = None) -> list[Edge]:
    """Every import statement of the file, relative ones resolved: ``from p import x`` is
    an edge to the module p.x when there is one, else to p (a name of the lazy package
    root is an edge to the module that defines it)."""
    exports = _root_exports(root) if exports is None else exports
    name = _module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Edge] = []
    for line, base, level, names, hidden in _statements(path.read_text()):
        if not names:
            out.append(Edge(name, line, base, hidden))
            continue
        if level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in names:
            target = f"{base}.{alias}"
            if not _is_module(root, target):
                target = exports.get(alias, base) if base == "metacluster" else base
            out.append(Edge(name, line, target, hidden))
    return out


def import_graph(root: Path) -> list[Edge]:
    exports = _root_exports(root)
    return [
        edge
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        for edge in imports_of(root, path, exports)
    ]


# -- the rules ---------------------------------------------------------------------------------
def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def unit_of(name: str, units: Iterable[Unit] = UNITS) -> Unit | None:
    """The most specific unit a project module belongs to (None: a third-party one)."""
    found = [u for u in units if name == u.name or (_under(name, u.name) and not u.only_itself)]
    return max(found, key=lambda u: len(u.name)) if found else None


def _allowed(unit: Unit, target: Unit) -> bool:
    if target.name == "metacluster":  # the root itself: __version__ (its lazy names
        return True  # are edges to the modules that define them)
    return any(_under(target.name, allowed) for allowed in (unit.name, *FLOOR, *unit.may_import))


def violations(edges: Iterable[Edge], units: tuple[Unit, ...] = UNITS) -> list[str]:
    """One line per import that an allow-list (project modules) or a `never` list
    (third-party ones) refuses."""
    out = []
    for edge in edges:
        if (edge.module, edge.imported) in PENDING:
            continue
        unit = unit_of(edge.module, units)
        if unit is None:
            out.append(f"{edge.module}: no unit in docs/architecture.md's map")
            continue
        target = unit_of(edge.imported, units)
        top = edge.imported.split(".")[0]
        never = (*unit.never, *(LIBRARY_NEVER if _under(unit.name, "metacluster") else ()))
        if target is not None and not _allowed(unit, target):
            why = f"{unit.name} may import {', '.join(unit.may_import) or 'only the floor'}"
        elif top in never and not (target is not None and _allowed(unit, target)):
            why = f"{unit.name} never imports {top}: {unit.why}"
        else:
            continue
        out.append(f"{edge.module}:{edge.line}: {edge.module} imports {edge.imported} ({why})")
    return sorted(set(out))


def cycles(edges: Iterable[Edge], package: str, *, type_only: bool = False) -> list[list[str]]:
    """The import circles among the modules of `package` (each a strongly connected
    component of two or more modules, or one importing itself), `TYPE_CHECKING` aside
    unless `type_only`."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if (e.type_only and not type_only) or not _under(e.module, package):
            continue
        graph.setdefault(e.module, set())
        if _under(e.imported, package):
            graph[e.module].add(e.imported)
    return _strongly_connected(graph)


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; the components that are circles, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def unit_edges(edges: Iterable[Edge], units: tuple[Unit, ...] = UNITS) -> list[Edge]:
    """The edges between units, as edges of a graph whose nodes are the units."""
    out = []
    for e in edges:
        if (e.module, e.imported) in PENDING:
            continue
        a, b = unit_of(e.module, units), unit_of(e.imported, units)
        if a is not None and b is not None and a != b and b.name != "metacluster":
            out.append(Edge(a.name, e.line, b.name, e.type_only))
    return out


# -- the real code -----------------------------------------------------------------------------
def test_every_import_is_allowed_by_the_map() -> None:
    assert violations(import_graph(REPO)) == []


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_circle_inside_the_package(package: str) -> None:
    assert cycles(import_graph(REPO), package) == []


def test_no_import_circle_between_the_units() -> None:
    """Units with "all of the library" (workflow, cli) may not close a circle."""
    edges = [e for e in unit_edges(import_graph(REPO)) if e.module.startswith("metacluster")]
    assert cycles(edges, "metacluster") == []


def _compress_layer_edges(edges: Iterable[Edge]) -> list[Edge]:
    """The edges between compress/'s layers (`unit_edges` leaves the pending out)."""
    return [e for e in unit_edges(edges) if e.module in COMPRESS_LAYERS]


def test_no_circle_between_the_layers_of_compress_type_checking_included() -> None:
    """compress/'s layers import one way, also with their `TYPE_CHECKING` imports (the
    allow-lists imply it; this says it of the code)."""
    edges = _compress_layer_edges(import_graph(REPO))
    assert edges  # the layers do import each other
    assert cycles(edges, "metacluster.compress", type_only=True) == []


# The one circle compress/'s modules draw with their `TYPE_CHECKING` imports (the pending
# import aside): the registry names `Context` and the plan's types for its callables'
# signatures, and the plan and the run look methods up in it. It stays inside pipeline/
# and never runs; the registry's types are issue 17's part 3.
KNOWN_TYPE_CIRCLES = [
    [
        "metacluster.compress.pipeline.context",
        "metacluster.compress.pipeline.plan",
        "metacluster.compress.pipeline.registry",
    ]
]


def type_circles(edges: Iterable[Edge]) -> list[list[str]]:
    """compress/'s module circles, `TYPE_CHECKING` imports included, pending ones out."""
    kept = [e for e in edges if (e.module, e.imported) not in PENDING]
    return cycles(kept, "metacluster.compress", type_only=True)


def test_compress_modules_draw_no_other_circle_type_checking_included() -> None:
    assert type_circles(import_graph(REPO)) == KNOWN_TYPE_CIRCLES


def test_a_new_type_checking_circle_in_compress_is_reported(tree: Path) -> None:
    _break(
        tree,
        "metacluster/compress/stages/meta.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from metacluster.compress.stages.runners import run_meta_stage",
    )
    edges = import_graph(tree)
    assert cycles(edges, "metacluster.compress") == []  # it never runs
    found = type_circles(edges)
    assert (
        len(found) == 2
        and ["metacluster.compress.stages.meta", "metacluster.compress.stages.runners"] in found
    )


def allowed_cycles(units: tuple[Unit, ...] = UNITS) -> list[list[str]]:
    """Circles of the "may import" lists among compress/'s layers (none: an order)."""
    graph = {
        u.name: {m for m in u.may_import if m in COMPRESS_LAYERS}
        for u in units
        if u.name in COMPRESS_LAYERS
    }
    return _strongly_connected(graph)


def test_the_layers_of_compress_are_ordered() -> None:
    """No layer may import one that may import it back: the allow-lists are a ladder,
    and each layer may import every layer below it."""
    assert allowed_cycles() == []
    units = [u for u in UNITS if u.name in COMPRESS_LAYERS[1:]]  # the front aside
    ladder = sorted(units, key=lambda u: len([m for m in u.may_import if m in COMPRESS_LAYERS]))
    for i, unit in enumerate(ladder):
        assert {m for m in unit.may_import if m in COMPRESS_LAYERS} == {
            u.name for u in ladder[:i]
        }, unit.name


def test_each_pending_import_is_still_there() -> None:
    """A pending exception leaves the map with the import it excuses."""
    edges = {(e.module, e.imported) for e in import_graph(REPO)}
    assert set(PENDING) <= edges, set(PENDING) - edges


def _documented_units(cell: str) -> list[str]:
    """Unit names of a first cell: `metacluster/kan/`, `core/`, `metacluster/errors.py`,
    `filenames.py` (a bare file is in the folder of the one before it)."""
    out, folder = [], ""
    for item in re.findall(r"`([^`]+)`", cell):
        folder, _, leaf = item.rstrip("/").rpartition("/") if "/" in item else (folder, "", item)
        name = leaf.removesuffix(".py")
        out.append(folder if name == "__init__" else ".".join(filter(None, (folder, name))))
    return [n.replace("/", ".") for n in out]


def documented_allow_lists(doc: str) -> dict[str, set[str]]:
    """unit -> the project units its "may import" cell names (third-party names and the
    floor left out; "all of the library" is `metacluster`)."""
    short = {u.name.removeprefix("metacluster."): u.name for u in UNITS}
    # compress/'s layers by their own names (spec, numeric, ..., methods)
    short.update({u.name.rpartition(".")[2]: u.name for u in UNITS if u.name in COMPRESS_LAYERS})
    short["all of the library"] = "metacluster"
    out = {}
    for first, allowed in re.findall(r"^\| (`[^|]+) \| [^|]* \| ([^|]*) \|$", doc, re.M):
        tokens = (re.sub(r"\(.*?\)", "", t).strip() for t in re.split(r"[,;]", allowed))
        names = {short[t] for t in tokens if t in short} - set(FLOOR)
        out.update(dict.fromkeys(_documented_units(first), names))
    return out


def test_the_allow_lists_are_the_documented_ones() -> None:
    documented = documented_allow_lists((REPO / "docs" / "architecture.md").read_text())
    coded = {u.name: set(u.may_import) - set(FLOOR) for u in UNITS}
    assert documented == coded


def test_the_documented_table_is_read_as_written() -> None:
    doc = """
| package | owns | may import |
|---|---|---|
| `metacluster/errors.py`, `filenames.py` | the floor | nothing of the project |
| `metacluster/kan/` | layers | errors, registry |
| `metacluster/client/` | the client | errors, tracking (lazily) |
| `core/` | tables | all of the library; sqlalchemy, celery (producer) |
"""
    assert documented_allow_lists(doc) == {
        "metacluster.errors": set(),
        "metacluster.filenames": set(),
        "metacluster.kan": {"metacluster.registry"},
        "metacluster.client": {"metacluster.tracking"},
        "core": {"metacluster"},
    }


def test_the_import_graph_is_read_from_the_real_code() -> None:
    """The checker sees real edges (lazy imports too), so a clean result means something."""
    edges = {(e.module, e.imported) for e in import_graph(REPO)}
    assert ("worker.runner", "metacluster.workflow") in edges  # a lazy import in a function
    assert ("service.job_requests", "core.jobs") in edges
    assert ("metacluster.workflow", "metacluster.artifact") in edges
    assert ("metacluster.client.transport", "metacluster") in edges  # __version__
    typed = {(e.module, e.imported) for e in import_graph(REPO) if e.type_only}
    assert ("metacluster.client.errors", "metacluster.client.records") in typed


# -- each kind of rule bites -------------------------------------------------------------------
def _not_python(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".py") and not (Path(folder) / n).is_dir()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the four packages to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=_not_python)
    return tmp_path


def _break(tree: Path, file: str, line: str) -> None:
    target = tree / file
    if line.startswith("    "):  # lazy, inside a function
        target.write_text(target.read_text() + f"\n\ndef _broken() -> None:\n{line}\n")
    else:
        target.write_text(target.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        # allow-lists: what no deny-list named before
        (
            "metacluster/kan/model.py",
            "    from metacluster import reporting",
            "metacluster.kan.model imports metacluster.reporting",
        ),
        (
            "metacluster/compress/pipeline/plan.py",
            "    from metacluster.remote import submit",
            "metacluster.compress.pipeline.plan imports metacluster.remote",
        ),
        (
            "metacluster/data/dataset.py",
            "from metacluster.tracking import log_job",
            "metacluster.data.dataset imports metacluster.tracking",
        ),
        (
            "metacluster/client/records.py",
            "from metacluster.kan import build_kan",
            "metacluster.client.records imports metacluster.kan",
        ),
        (
            "metacluster/kan/model.py",
            "from metacluster import load_model",  # a lazy name of the root
            "metacluster.kan.model imports metacluster.formats",
        ),
        (
            "metacluster/kan/model.py",
            "from ..training import train_model",
            "imports metacluster.training",
        ),
        (
            "metacluster/compress/methods/metacluster.py",
            "from metacluster.artifact import artifact_bytes",
            "metacluster.compress.methods.metacluster imports metacluster.artifact",
        ),
        (
            "metacluster/cli.py",
            "import service.commands",
            "metacluster.cli imports service.commands",
        ),
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
        # compress/'s layers: nothing imports upward
        (
            "metacluster/compress/numeric/packing.py",
            "    from metacluster.compress.stages.meta import MetaLearner",
            "metacluster.compress.numeric.packing imports metacluster.compress.stages.meta",
        ),
        (
            "metacluster/compress/spec/effort.py",
            "from metacluster.compress.numeric.packing import bits_for",
            "metacluster.compress.spec.effort imports metacluster.compress.numeric.packing",
        ),
        (
            "metacluster/compress/sizing.py",
            "    from metacluster.compress.container import build_artifact",
            "metacluster.compress.sizing imports metacluster.compress.container",
        ),
        (
            "metacluster/compress/pipeline/plan.py",
            "    from metacluster.compress.methods.baselines import pq_checks",
            "metacluster.compress.pipeline.plan imports metacluster.compress.methods.baselines",
        ),
        (
            "metacluster/compress/stages/soft.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from metacluster.compress.pipeline.context import Context",
            "metacluster.compress.stages.soft imports metacluster.compress.pipeline.context",
        ),
        (
            "metacluster/compress/stages/meta.py",
            "from metacluster.compress import compress",  # the front, from below
            "metacluster.compress.stages.meta imports metacluster.compress ",
        ),
        # third-party deny-lists
        ("service/deps.py", "from celery import Celery", "service.deps imports celery"),
        ("metacluster/kan/base.py", "import sqlalchemy", "metacluster.kan.base imports sqlalchemy"),
        ("worker/tasks.py", "    import fastapi", "worker.tasks imports fastapi"),
        # type-only imports are still dependencies
        (
            "metacluster/data/dataset.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from metacluster.kan import KANModel",
            "metacluster.data.dataset imports metacluster.kan",
        ),
    ],
)
def test_a_refused_import_is_reported(tree: Path, file: str, line: str, expected: str) -> None:
    assert violations(import_graph(tree)) == []
    _break(tree, file, line)
    found = violations(import_graph(tree))
    assert len(found) == 1 and expected in found[0], found


def test_a_module_outside_the_map_is_reported(tree: Path) -> None:
    (tree / "metacluster" / "newthing.py").write_text("from metacluster import errors\n")
    assert violations(import_graph(tree)) == [
        "metacluster.newthing: no unit in docs/architecture.md's map"
    ]


@pytest.mark.parametrize(
    ("file", "line", "package", "circle"),
    [
        (
            "metacluster/kan/base.py",
            "    from metacluster.kan.model import KANModel",
            "metacluster.kan",
            "metacluster.kan.base",
        ),
        ("core/db/base.py", "    from core.db.models import Job", "core.db", "core.db.base"),
        (
            "metacluster/data/dataset.py",
            "    from metacluster.data.loading import load_dataset",
            "metacluster.data",
            "metacluster.data.loading",
        ),
        (
            "metacluster/compress/stages/meta.py",
            "    from metacluster.compress.stages.runners import run_meta_stage",
            "metacluster.compress",
            "metacluster.compress.stages.meta",
        ),
    ],
)
def test_an_import_circle_is_reported(
    tree: Path, file: str, line: str, package: str, circle: str
) -> None:
    assert cycles(import_graph(tree), package) == []
    _break(tree, file, line)
    found = cycles(import_graph(tree), package)
    assert len(found) == 1 and circle in found[0], found


def test_a_type_checking_import_closes_no_circle(tree: Path) -> None:
    _break(
        tree,
        "metacluster/kan/base.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from metacluster.kan.model import KANModel",
    )
    assert cycles(import_graph(tree), "metacluster.kan") == []


def test_a_circle_between_units_is_reported() -> None:
    """workflow and cli may import the whole library, but not each other both ways."""
    edges = [
        Edge("metacluster.workflow", 1, "metacluster.cli", False),
        Edge("metacluster.cli", 1, "metacluster.workflow", False),
        Edge("metacluster.cli", 2, "metacluster.kan", False),
    ]
    assert violations(edges) == []
    assert cycles(unit_edges(edges), "metacluster") == [["metacluster.cli", "metacluster.workflow"]]


def test_a_type_checking_circle_between_compress_layers_is_reported() -> None:
    """The layer check counts `TYPE_CHECKING` imports, which the module check leaves out."""
    edges = [
        Edge("metacluster.compress.stages.soft", 1, "metacluster.compress.pipeline.context", True),
        Edge("metacluster.compress.pipeline.context", 2, "metacluster.compress.stages.soft", False),
    ]
    assert cycles(edges, "metacluster.compress") == []
    assert cycles(_compress_layer_edges(edges), "metacluster.compress", type_only=True) == [
        ["metacluster.compress.pipeline", "metacluster.compress.stages"]
    ]


def test_allow_lists_that_go_both_ways_are_reported() -> None:
    """A layer that may import one above it breaks the ladder."""
    spec = next(u for u in UNITS if u.name == "metacluster.compress.spec")
    bent = Unit(spec.name, ("metacluster.compress.methods",), spec.why)
    units = tuple(bent if u is spec else u for u in UNITS)
    assert allowed_cycles() == []
    assert any("metacluster.compress.spec" in c for c in allowed_cycles(units))


def test_a_pending_import_is_let_through_and_only_it(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending import is not reported; the same module importing another upward is."""
    config = "metacluster/compress/spec/config.py"
    _break(tree, config, "    from metacluster.compress.pipeline import registry")
    found = violations(import_graph(tree))
    assert len(found) == 1 and "imports metacluster.compress.pipeline.registry" in found[0]
    monkeypatch.setitem(
        PENDING,
        ("metacluster.compress.spec.config", "metacluster.compress.pipeline.registry"),
        "a change in flight",
    )
    assert violations(import_graph(tree)) == []
    _break(tree, config, "    from metacluster.compress.pipeline import plan")
    found = violations(import_graph(tree))
    assert len(found) == 1 and "spec.config imports metacluster.compress.pipeline.plan" in found[0]
