"""`metacluster eval --runtime`: the compressed runtime scores what the dense one does;
bad runtime names and non-artifacts get one `error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from runtime_helpers import artifact

from metacluster.cli import cli
from metacluster.kan import build_kan


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def mcz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_kan("bspline", [64, 12, 10])
    model.meta["task"] = "classification"
    return artifact(model, "vq", tmp_path_factory.mktemp("a") / "m.mcz", k=6)


def test_eval_compressed_runtime_scores_as_dense(mcz: Path) -> None:
    scores = {}
    for runtime in ("dense", "compressed"):
        result = _run("eval", str(mcz), "--data", "digits", "--runtime", runtime, "--json")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["runtime"] == runtime and out["kind"] == "artifact"
        scores[runtime] = out["value"]
    assert scores["compressed"] == scores["dense"]


def test_eval_unknown_runtime_lists_runtimes(mcz: Path) -> None:
    result = _run("eval", str(mcz), "--data", "digits", "--runtime", "lut")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unknown runtime 'lut'; expected one of: dense, compressed"
    )


def test_eval_compressed_runtime_needs_an_artifact(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not an artifact")
    result = _run("eval", str(path), "--data", "digits", "--runtime", "compressed")
    assert result.exit_code == 1
    assert "needs an artifact" in result.stderr and result.stderr.count("\n") == 1
