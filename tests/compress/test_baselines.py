"""Baselines share the pipeline's accounting: artifact round trip, bytes, sane accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.helpers import fast_config
from metacluster.artifact import load_artifact, write_artifact
from metacluster.compress import ArtifactSizer, MetaClusterConfig, compress
from metacluster.compress.numeric.codebook import CompressedKAN
from metacluster.compress.pipeline.report import CompressionReport
from metacluster.data import Dataset
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel


def run_baseline(
    method: str, model: KANModel, config: MetaClusterConfig, data: Dataset, **options: int
) -> tuple[CompressedKAN, CompressionReport]:
    """A baseline is a registered method: chosen by config.method, options checked there."""
    cfg = config.replace(method=method, method_options=options)
    return compress(model, cfg, data, sizer=ArtifactSizer())


@pytest.mark.parametrize(
    ("method", "kwargs", "distinct_max"),
    [
        ("scalar", {"bits": 2}, 4),
        ("int8", {}, 255),
        ("int4", {}, 15),
        ("pq", {"m": 3, "bits": 2}, 4),
    ],
)
def test_baseline_round_trip_and_quantization_levels(
    small_model: KANModel,
    digits: Dataset,
    tmp_path: Path,
    method: str,
    kwargs: dict[str, int],
    distinct_max: int,
) -> None:
    compressed, report = run_baseline(method, small_model, fast_config(), digits, **kwargs)
    path = tmp_path / f"{method}.mcz"
    write_artifact(compressed, path, report)
    assert path.stat().st_size == report.bytes_after
    loaded = load_artifact(path)
    with torch.no_grad():
        assert (loaded(digits.x_test) - compressed(digits.x_test)).abs().max().item() <= 1e-5
    for name, layer in compressed.kan_layers():
        coef = layer.edge_view(name).coefficients
        if method in ("int8", "int4"):
            # per output row the values are integer multiples of one scale
            uq = next(u for u in compressed.quantized.uniform if u.layer == name)
            assert int(uq.codes.abs().max()) <= (distinct_max - 1) // 2 + (distinct_max % 2 == 0)
            rel = (uq.vectors() - coef).abs().max()
            assert rel < 1e-6
        elif method == "scalar":
            assert torch.unique(coef).numel() <= distinct_max
        else:  # PQ: each third of the vector takes one of 4 sub-vectors
            assert torch.unique(coef[:, :3], dim=0).shape[0] <= distinct_max
    assert report.method == method and report.before > 0.5
    if method == "int8":  # int8 is near-lossless
        assert report.after >= report.before - 0.02


def test_int8_error_is_below_int4(small_model: KANModel, digits: Dataset) -> None:
    _, r8 = run_baseline("int8", small_model, fast_config(), digits)
    _, r4 = run_baseline("int4", small_model, fast_config(), digits)
    e8 = sum(layer["coef_rel_error"] for layer in r8.layers)
    e4 = sum(layer["coef_rel_error"] for layer in r4.layers)
    assert e8 < e4 / 4 and r8.bytes_after > r4.bytes_after


def test_unknown_baseline_and_bad_pq(small_model: KANModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown compression method 'magic'"):
        run_baseline("magic", small_model, fast_config(), digits)
    with pytest.raises(ConfigError, match="pq: m=2 must divide the vector length"):
        run_baseline("pq", small_model, fast_config(), digits, m=2)
