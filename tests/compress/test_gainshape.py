"""Gain-shape vector quantization (the `gainshape` method) and its artifact (format v3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compress.helpers import fast_config
from metacluster.artifact import build_artifact, load_artifact, read_manifest, write_artifact
from metacluster.compress import compress, plan
from metacluster.compress.container import ArtifactSizer
from metacluster.compress.methods.gainshape import gain_shape
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.data import Dataset
from metacluster.errors import ArtifactError, ConfigError
from metacluster.kan import describe_model
from metacluster.kan.model import KANModel


def _gain_shape_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are exactly one of 4 gains times one of 4 unit shapes (16 vectors)."""
    rng = np.random.default_rng(seed)
    shapes = rng.normal(size=(4, 9))
    shapes /= np.linalg.norm(shapes, axis=1, keepdims=True)
    gains = np.array([0.05, 0.2, 0.6, 1.5])
    rows = gains[rng.integers(4, size=n)][:, None] * shapes[rng.integers(4, size=n)]
    return rows.astype(np.float32), shapes


def test_gain_shape_codes_gains_times_shapes_that_plain_kmeans_cannot() -> None:
    x, _ = _gain_shape_data()
    code = gain_shape(x, 4, 4, seed=0, iters=50, restarts=3)
    err = np.abs(code.vectors() - x).max()
    assert err < 1e-4
    plain = kmeans(x, 4, seed=0, iters=50, restarts=3)
    assert np.abs(plain.centroids[plain.assignment] - x).max() > 0.1  # 4 vectors for 16
    assert code.shapes.shape == (4, 9) and code.gains.shape == (4,)
    assert code.shape_idx.shape == code.gain_idx.shape == (3000,)


def test_gain_shape_handles_sign_flips_and_zero_rows() -> None:
    x, _ = _gain_shape_data(seed=1)
    x[::2] *= -1  # the negated shape is the same shape with a negative gain
    x[:5] = 0.0
    code = gain_shape(x, 4, 9, seed=0, iters=50, restarts=3)  # +-4 gains and 0
    assert np.isfinite(code.vectors()).all()
    assert np.abs(code.vectors() - x).max() < 1e-3


def _check_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def test_the_gainshape_method_writes_a_v3_artifact_that_loads_exactly(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    cfg = fast_config(method="gainshape", k=8, method_options={"gain_k": 8})
    compressed, report = compress(small_model, cfg, digits, sizer=ArtifactSizer())
    assert [la["k"] for la in report.layers] == [[8], [8]]  # the gain K is not a layer K
    gains = [cb for cb in compressed.quantized.codebooks if cb.gain]
    assert len(gains) == 2 and all(cb.k == 8 and cb.sub == 1 for cb in gains)
    info = write_artifact(compressed, tmp_path / "gs.mcz", report)
    assert info.bytes == report.bytes_after
    manifest, _ = read_manifest(tmp_path / "gs.mcz")
    assert manifest["v"] == 3
    assert [e.get("m") for e in manifest["cb"]] == [None, "gain", None, "gain"]
    x = digits.x_test[:64].reshape(64, -1)
    assert _check_outputs(load_artifact(tmp_path / "gs.mcz"), compressed, x) == 0.0
    runtime = load_artifact(tmp_path / "gs.mcz", runtime="compressed")
    assert runtime.dense_layers == ["layers.0", "layers.1"]  # no codebook-domain form yet
    assert _check_outputs(runtime, compressed, x) < 1e-5
    assert report.after > 0.5  # it still classifies (the source is about 0.95)


def test_the_gainshape_method_meets_a_byte_budget(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    cfg = fast_config(method="gainshape", target_ratio=20)
    compressed, report = compress(small_model, cfg, digits, sizer=ArtifactSizer())
    assert report.budget_bytes is not None and report.bytes_after <= report.budget_bytes
    info = write_artifact(compressed, tmp_path / "b.mcz", report)
    assert info.bytes == report.bytes_after
    steps = [s.name for s in plan(describe_model(small_model), None, cfg).stages]
    assert steps == ["allocate", "kmeans", "finetune"]


def test_gainshape_options_are_checked(small_model: KANModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="gain_k"):
        compress(small_model, fast_config(method="gainshape", method_options={"gain_k": 1}), digits)
    with pytest.raises(ConfigError, match="gain_k"):
        compress(
            small_model, fast_config(method="gainshape", method_options={"gain_k": "8"}), digits
        )


def test_files_without_gain_codebooks_stay_version_2(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    compressed, report = compress(small_model, fast_config(method="kmeans"), digits)
    write_artifact(compressed, tmp_path / "v2.mcz", report)
    assert read_manifest(tmp_path / "v2.mcz")[0]["v"] == 2


def test_a_gain_codebook_without_a_shape_before_it_is_refused(
    small_model: KANModel, digits: Dataset, tmp_path: Path
) -> None:
    cfg = fast_config(method="gainshape", k=4, finetune_epochs=0)
    compressed, _ = compress(small_model, cfg, digits)
    quant = compressed.quantized
    quant.codebooks = [quant.codebooks[1], quant.codebooks[0], *quant.codebooks[2:]]
    (tmp_path / "bad.mcz").write_bytes(build_artifact(compressed).data)
    with pytest.raises(ArtifactError, match="gain codebook"):
        load_artifact(tmp_path / "bad.mcz")
