"""torch-conv-kan's FastKANConv2DLayer (RBF conv), written by the upstream class itself
(vendored verbatim in reference/torch_conv_kan_upstream), imported and exported back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kan_convs.fast_kan_conv import FastKANConv2DLayer
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

FMT = "torch-conv-kan"


def _stack(seed: int = 0, **kw: object) -> Stack:
    torch.manual_seed(seed)
    layers = [
        FastKANConv2DLayer(4, 6, 3, groups=2, padding=1, **kw),
        FastKANConv2DLayer(6, 2, 3, grid_size=5, grid_range=[-1.5, 1.0]),
    ]
    return Stack(layers).eval()


def _images(seed: int) -> torch.Tensor:
    return torch.randn(3, 4, 7, 7, generator=torch.Generator().manual_seed(seed))


def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path) -> None:
    ref = _stack()
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"layers": [{"padding": 1}, {}]}))
    assert detect_format(tmp_path) == FMT
    model = load_model(tmp_path)
    assert [type(m).__name__ for m in model.layers] == ["RBFKANConv2d", "RBFKANConv2d"]
    assert model.layers[1].coef_dim == 5 + 1 and model.layers[1].grid_range == (-1.5, 1.0)
    assert_same_outputs(ref, model, _images(1), fmt=FMT)
    files = export_model(model, FMT, tmp_path / "out" / "model.pt")
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _stack(seed=5), back, _images(2))
    assert_same_outputs(lambda _: again, model, _images(2), fmt=FMT)


def test_spline_conv_that_does_not_fit_the_grid_is_refused(tmp_path: Path) -> None:
    state = dict(_stack().state_dict())
    state["layers.1.rbf.grid"] = torch.linspace(-1.5, 1.0, 4)
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(
        FormatError, match=r"layers\.1\.spline_conv\.0\.weight has shape \(2, 30, 3, 3\)"
    ):
        load_model(tmp_path / "m.pt")


def test_compresses_through_the_engine(tmp_path: Path) -> None:
    spec = {
        "layers": [
            {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
            {"kind": FMT, "prefix": "layers.0.", "options": {"padding": 1}},
            {"kind": "flatten"},
            {"kind": "linear", "prefix": "layers.2."},
        ]
    }
    compress_and_reload(
        tmp_path,
        lambda: Stack(
            [FastKANConv2DLayer(1, 4, 3, padding=1, grid_size=4), nn.Flatten(), nn.Linear(256, 10)]
        ),
        spec,
    )
