"""Method options are checked by the plan, before anything runs: what the plan (and so
the service's dry run) accepts runs, and what it refuses fails as `invalid_config` /
`error:` before any training, never inside faiss (`internal`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metacluster.cli import cli
from metacluster.compress import MetaClusterConfig, compress, plan
from metacluster.compress.methods.baselines import pq_codebooks
from metacluster.compress.pipeline.context import prepare
from metacluster.compress.spec.hooks import StageHooks
from metacluster.data import Dataset, load_dataset
from metacluster.errors import ConfigError
from metacluster.formats import save_model
from metacluster.kan import KANModel, build_kan, describe_model

# layers.0: 64 x 3 = 192 edges, layers.1: 3 x 10 = 30 edges; vectors of length 9.
WIDTHS = [64, 3, 10]
QUICK: dict[str, Any] = {
    "finetune_epochs": 0,
    "baselines": False,
    "device": "cpu",
    "kmeans_iters": 5,
    "kmeans_restarts": 1,
}


@pytest.fixture(scope="module")
def model() -> KANModel:
    import torch

    torch.manual_seed(0)
    return build_kan("bspline", WIDTHS)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _config(**overrides: Any) -> MetaClusterConfig:
    return MetaClusterConfig.from_dict({**QUICK, "method": "pq", **overrides})


@pytest.mark.parametrize(
    ("scope", "m", "bits"),
    [
        ("per_layer", 3, 4),  # fits: 16 centroids, 30 vectors in the smallest layer
        ("per_layer", 9, 5),  # 32 centroids > 30 vectors of layers.1
        ("per_layer", 1, 16),  # the probe's bits=16: faiss "training points < clusters"
        ("per_layer", 64, 4),  # the probe's m=64: 9 is not divisible by 64
        ("per_layer", 2, 1),  # 2 does not divide 9
        ("global", 3, 7),  # 128 centroids <= 222 vectors across both layers
        ("global", 3, 8),  # 256 > 222
    ],
)
def test_the_plan_accepts_exactly_what_runs(
    model: KANModel, digits: Dataset, scope: str, m: int, bits: int
) -> None:
    config = _config(scope=scope, method_options={"m": m, "bits": bits})
    the_plan = plan(describe_model(model), digits.meta(), config)
    stages: list[str] = []
    if the_plan.ok:
        _, report = compress(model, config, digits)
        assert report.method == "pq" and report.k == 1 << bits
    else:
        failed = [c for c in the_plan.checks if not c.ok]
        assert [c.name for c in failed] == ["method"] and the_plan.config_problem
        assert ("must divide" in failed[0].detail) == bool(9 % m)
        with pytest.raises(ConfigError, match="pq: "):
            compress(model, config, digits, progress=lambda s, *_: stages.append(s))
        assert stages == []  # refused before any stage ran


def test_the_run_checks_faiss_preconditions_itself(model: KANModel, digits: Dataset) -> None:
    """Groups the plan cannot see (grid_policy separate) are checked again by the run,
    before faiss is called: a ConfigError, not faiss's RuntimeError."""
    ctx = prepare(model, _config(), digits, StageHooks(), None)
    with pytest.raises(ConfigError, match=r"bits=6 means 64 centroids.*layers\.1 has only 30"):
        pq_codebooks(ctx, 3, 6)
    with pytest.raises(ConfigError, match="m=4 must divide the vector length 9"):
        pq_codebooks(ctx, 4, 2)


@pytest.mark.parametrize(
    ("option", "message"),
    [("bits=16", "65536 centroids"), ("m=64", "m=64 must divide the vector length 9")],
)
def test_cli_compress_refuses_before_training(
    model: KANModel, tmp_path: Path, option: str, message: str
) -> None:
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    out = tmp_path / "m.mcz"
    args = ["compress", str(path), "--data", "digits", "--method", "pq", "--out", str(out)]
    result = CliRunner().invoke(
        cli, [*args, "--method-option", option, "--json"], env={"OMP_NUM_THREADS": "1"}
    )
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()  # one line: no stage's progress came first
    assert len(lines) == 1 and lines[0].startswith("error: pq: "), result.stderr
    assert message in lines[0] and "internal" not in lines[0]
    assert not out.exists()
