"""README.md's five-minute tour, run as written against a live `metacluster serve` (SQLite).

The fenced blocks are taken from README.md and run unchanged (bash blocks with bash,
Python blocks with this interpreter), in a scratch folder where `.venv` is this
environment; the only thing the test supplies is what the tour tells the user to
export (METACLUSTER_URL, METACLUSTER_API_KEY), read from the tour's own export line.
`make run`'s printed lines (scripts/quickstart.py) must use the same names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._serve import serve_sqlite
from ._stack import REPO, child_env

README = REPO / "README.md"
FENCE = re.compile(r"```(bash|python)\n(.*?)```", re.S)
EXPORT = re.compile(r"^\s*export ((?:[A-Z_]+=\S+ ?)+)$", re.M)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    ends = [text.find(h, start + len(heading)) for h in ("\n## ", "\n### ")]
    return text[start : min([e for e in ends if e > 0], default=len(text))]


def tour_blocks() -> list[tuple[str, str]]:
    return FENCE.findall(_section(README.read_text(encoding="utf-8"), "## Five-minute tour"))


def library_block() -> str:
    python = _section(README.read_text(encoding="utf-8"), "### Python")
    (block,) = FENCE.findall(python)
    assert block[0] == "python"
    return block[1]


def exported_names(text: str) -> list[str]:
    (line,) = EXPORT.findall(text)
    return [pair.split("=", 1)[0] for pair in line.split()]


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Z][A-Z_]+)", text))


def file_names(text: str) -> set[str]:
    return set(re.findall(r"[\w.-]+\.(?:safetensors|mcz|pt)\b", text))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `metacluster serve` and a key: the values of the names the tour exports."""
    with serve_sqlite(tmp_path_factory.mktemp("serve")) as exported:
        yield exported


def _run(kind: str, code: str, cwd: Path, env: dict[str, str]) -> str:
    args = (
        ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    )
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{kind} block failed:\n{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_quickstart_prints_the_tour_names() -> None:
    """What `make run` prints: the tour's export line and file names, and no variable
    the export does not set."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from quickstart import QUICKSTART
    finally:
        sys.path.remove(str(REPO / "scripts"))
    printed = QUICKSTART.format(
        api="http://127.0.0.1:8000",
        key="mck_x",
        key_state="new",
        data_dir="data",
        cli=".venv/bin/metacluster",
        bin_dir=".venv/bin",
        activate=".venv/bin/activate",
    )
    blocks = tour_blocks()
    tour = "\n".join(code for _, code in blocks)
    assert exported_names(printed) == exported_names(blocks[0][1])
    assert used_names(printed) <= set(exported_names(printed)), printed
    assert file_names(printed) and file_names(printed) <= file_names(tour)


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="the tour needs curl and jq"
)
def test_the_readme_tour_runs_as_written(server: dict[str, str], tmp_path: Path) -> None:
    blocks = tour_blocks()
    kinds = [kind for kind, _ in blocks]
    assert kinds == ["bash", "bash", "bash", "python", "bash"], kinds  # steps 1-5
    # Step 1 starts the server (`make run`) and exports: supplied by the fixture.
    assert exported_names(blocks[0][1]) == sorted(server, reverse=True)
    assert used_names("".join(code for _, code in blocks[1:])) - set(server) <= {
        "H",
        "API",
        "MODEL",
        "JOB",
        "RANDOM",
    }
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = child_env(server)

    _run(*blocks[1], tmp_path, env)  # 2: train
    assert (tmp_path / "kan.safetensors").is_file()

    out = _run(*blocks[2], tmp_path, env)  # 3: curl
    assert "event: status" in out and '"succeeded"' in out
    assert (tmp_path / "model.mcz").stat().st_size > 0
    assert "<html" in (tmp_path / "report.html").read_text()

    out = _run(*blocks[3], tmp_path, env)  # 4: the Python client
    ratio, before, after = map(float, out.split())
    assert ratio > 20 and after >= before - 0.01
    assert (tmp_path / "kan.mcz").stat().st_size > 0

    out = _run(*blocks[4], tmp_path, env)  # 5: the pipeline, its gates and out/
    assert json.loads(out)["job"]["status"] == "succeeded"
    assert (tmp_path / "out").is_dir() and (tmp_path / "out" / "model.mcz").is_file()

    _run("python", library_block(), tmp_path, env)  # the library, on the tour's model


def test_an_unreadable_upload_says_what_it_is(server: dict[str, str], tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {server['METACLUSTER_API_KEY']}"}
    r = httpx.post(
        f"{server['METACLUSTER_URL']}/v1/models",
        headers=auth,
        files={"file": ("notes.txt", b"my notes\n", "text/plain")},
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["code"] == "unsupported_format"
    assert r.json()["detail"].startswith("notes.txt is not a readable model checkpoint: a text")
