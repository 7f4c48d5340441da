"""Artifacts written by the real engine, one per method, run in the compressed runtime
with the dense decompression's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metacluster.artifact import load_artifact, write_artifact
from metacluster.compress import MetaClusterConfig, compress
from metacluster.data import Dataset, load_dataset
from metacluster.kan import build_kan
from metacluster.runtime import CodebookLayer

METHODS = {
    "kmeans": {},
    "scalar": {"bits": 3},
    "pq": {"m": 3, "bits": 3},
    "int4": {},
}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_engine_artifacts_run_compressed(method: str, digits: Dataset, tmp_path: Path) -> None:
    if method == "pq":
        pytest.importorskip("faiss")
    torch.manual_seed(0)
    model = build_kan("bspline", [64, 6, 10])
    config = MetaClusterConfig(
        method=method,
        k=4,
        method_options=METHODS[method],
        kmeans_iters=3,
        kmeans_restarts=1,
        finetune_epochs=0,
        device="cpu",
        baselines=False,
    )
    compressed, report = compress(model, config, digits)
    write_artifact(compressed, tmp_path / "m.mcz", report)
    dense = load_artifact(tmp_path / "m.mcz")
    fast = load_artifact(tmp_path / "m.mcz", runtime="compressed")
    x = digits.x_test[:40].reshape(40, -1)
    with torch.no_grad():
        want, got = dense(x), fast(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    has_codebooks = any(isinstance(m, CodebookLayer) for m in fast.layers)
    assert has_codebooks == (method != "int4")
