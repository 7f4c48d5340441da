"""Artifacts written by the last release (format v1, committed fixtures) still load.

The fixtures were written by the release before format v2 (tests/fixtures/: a B-spline
KAN with default grids, and a pykan-layout KAN whose inputs each have their own grid,
with fp16 codebooks and rANS indices); their outputs on 16 digits were saved with them.
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
