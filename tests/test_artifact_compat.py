"""Artifacts written by earlier releases (formats v1 and v2, committed fixtures) still load.

The fixtures were written by the release before format v2 (tests/fixtures/: a B-spline
KAN with default grids, and a pykan-layout KAN whose inputs each have their own grid,
with fp16 codebooks and rANS indices); their outputs on 16 digits were saved with them.
The v2 fixture was written by the release before format v3 (gain codebooks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metacluster.artifact import load_artifact, read_manifest, verify_artifact

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["bspline_v1", "pykan_moved_grid_v1"])
def test_a_v1_artifact_loads_and_gives_the_saved_outputs(name: str) -> None:
    path = FIXTURES / f"{name}.mcz"
    manifest, _ = read_manifest(path)
    assert manifest["v"] == 1
    verify_artifact(path)
    model = load_artifact(path)
    saved = np.load(FIXTURES / "artifact_v1_outputs.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(saved["x"])).numpy()
    assert np.abs(out - saved[name]).max() <= 1e-5


def test_a_v2_artifact_loads_after_format_v3() -> None:
    """Written by the release before gain codebooks (format v3): a B-spline KAN with fp16
    residual codebooks (K=8 + 4) and rANS indices, with its outputs on 16 digits."""
    path = FIXTURES / "bspline_residual_v2.mcz"
    manifest, _ = read_manifest(path)
    assert manifest["v"] == 2
    assert any(e.get("r") for e in manifest["cb"])
    verify_artifact(path)
    saved = np.load(FIXTURES / "artifact_v2_outputs.npz")
    x = torch.from_numpy(saved["x"])
    for runtime in ("dense", "compressed"):
        model = load_artifact(path, runtime=runtime)
        with torch.no_grad():
            out = model(x).numpy()
        assert np.abs(out - saved["bspline_residual_v2"]).max() <= 1e-5
