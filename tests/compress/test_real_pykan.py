"""Compression of checkpoints the real pykan 0.2.8 writes: after `fit` with grid updates
(every input its own non-uniform grid) and after `refine`.

Edges share their layer's codebook in coefficient space whatever their input's grid
(the paper's clustering; one codebook per grid compresses nothing), and each input's
grid is stored once, as its interior knots.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from compress.helpers import fast_config
from metacluster.artifact import load_artifact, read_manifest
from metacluster.workflow import compress_file

kan = pytest.importorskip("kan")


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(400, 5, generator=gen) * 2 - 1
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] ** 2 + 0.5 * x[:, 2:3] * x[:, 3:4] + 0.3 * x[:, 4:5]
    folder = tmp_path_factory.mktemp("pykan-data")
    np.savez(
        folder / "d.npz",
        x_train=x[:320].numpy(),
        y_train=y[:320].numpy(),
        x_test=x[320:].numpy(),
        y_test=y[320:].numpy(),
    )
    return {
        "path": str(folder / "d.npz"),
        "torch": {
            "train_input": x[:320],
            "train_label": y[:320],
            "test_input": x[320:],
            "test_label": y[320:],
        },
    }


def _fitted(folder: Path, data: dict[str, Any], refine: int | None = None) -> Path:
    model = _quiet(
        kan.KAN, width=[5, 8, 1], grid=5, k=3, seed=0, auto_save=False, ckpt_path=str(folder)
    )
    _quiet(
        model.fit, data["torch"], steps=30, update_grid=True, grid_update_num=3, opt="Adam", lr=0.02
    )
    if refine is not None:
        model = _quiet(model.refine, refine)
        _quiet(model.fit, data["torch"], steps=10, update_grid=False, opt="Adam", lr=0.01)
    model.saveckpt(str(folder / "m"))
    return folder / "m"


@pytest.mark.parametrize(("refine", "knots"), [(None, 12), (8, 15)])
def test_a_fitted_pykan_model_shares_one_codebook_per_layer(
    tmp_path: Path, data: dict[str, Any], refine: int | None, knots: int
) -> None:
    ckpt = _fitted(tmp_path, data, refine)
    cfg = fast_config(k=8, baselines=False)
    shared = compress_file(ckpt, data["path"], cfg, tmp_path / "shared.mcz")
    separate = compress_file(
        ckpt, data["path"], cfg.replace(grid_policy="separate"), tmp_path / "separate.mcz"
    )
    manifest, _ = read_manifest(tmp_path / "shared.mcz")
    assert len(manifest["cb"]) == 2  # one codebook per layer, across its inputs' grids
    assert len(read_manifest(tmp_path / "separate.mcz")[0]["cb"]) > 4  # one per distinct grid
    grids = {e[0]: e[1] for e in manifest["other"] if e[0].endswith(".grid")}
    assert set(grids) == {"layers.0.grid", "layers.1.grid"}
    for codes in grids.values():  # every input's grid moved, stored as its interior knots
        rows = codes[2:].split(",")
        assert rows and all(c == "p" for c in rows), codes
    interior = knots - 2 * 3
    assert shared.bytes_breakdown["grids"] == 4 * interior * (5 + 8)
    assert shared.param_ratio > 2 * separate.param_ratio and shared.ratio > separate.ratio
    # the artifact's model is the one the report measured (its grids included)
    loaded = load_artifact(tmp_path / "shared.mcz")
    x, y = data["torch"]["test_input"], data["torch"]["test_label"]
    with torch.no_grad():
        rmse = float(((loaded(x) - y) ** 2).mean().sqrt())
    assert rmse == pytest.approx(shared.after, rel=1e-5)
