"""kaconv's FastKANConvLayer (XiangboGaoBarry/KA-Conv, vendored verbatim: the PyPI wheel
0.1.0 is empty): its train_cifar10.py networks written by its own classes, imported,
exported back with a strict load, refusals, and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs
from kaconv.kaconv import FastKANConvLayer
from test_tck_polynomial import compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, load_model

SPEC_TAIL = [{"kind": "global_avg_pool"}, {"kind": "flatten"}]


def _small(seed: int = 0, in_ch: int = 3, kan_type: str = "RBF") -> nn.Sequential:
    """train_cifar10.py's "kaconv_small" (narrower), with trained-like BatchNorms and
    biases."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        FastKANConvLayer(in_ch, 4, padding=1, kernel_size=3, stride=1, kan_type=kan_type),
        nn.BatchNorm2d(4),
        FastKANConvLayer(4, 6, padding=1, kernel_size=3, stride=2, kan_type=kan_type),
        nn.BatchNorm2d(6),
        FastKANConvLayer(6, 10, padding=1, kernel_size=3, stride=2, kan_type=kan_type),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not name.endswith("rbf.grid"):
                t.add_(torch.randn(t.shape, generator=gen) * 0.1)
            if name.endswith("running_var"):
                t.abs_().add_(0.5)
    return model.eval()


CONFIG = {"layers": [{"padding": 1, "stride": s} for s in (1, 2, 2)]}


def _images(seed: int = 1, in_ch: int = 3) -> torch.Tensor:
    return torch.randn(4, in_ch, 11, 11, generator=torch.Generator().manual_seed(seed))


def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path) -> None:
    ref = _small()
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert detect_format(tmp_path) == "kaconv"
    convs = load_model(tmp_path)
    assert [type(m).__name__ for m in convs.layers] == ["RBFKANConv2d"] * 3
    assert [m.norm for m in convs.layers] == ["batch", "batch", "none"]
    assert convs.layers[0].coef_dim == 4 + 1 and convs.layers[0].n_edges == 4 * 3 * 9
    spec = {"layers": [{"kind": "kaconv", "options": CONFIG}, *SPEC_TAIL]}
    torch.save(state, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", spec=spec)
    x = _images()
    assert_same_outputs(ref, model, x, fmt="kaconv")
    files = export_model(model, "kaconv", tmp_path / "out" / "m.pt")
    assert json.loads(files[1].read_text())["layers"][1]["stride"] == [2, 2]
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        if key.endswith("_conv.bias"):  # exported as their sum in spline_conv.bias
            continue
        assert torch.equal(back[key], value), key
    for i in (0, 2, 4):
        total = state[f"{i}.spline_conv.bias"] + state[f"{i}.base_conv.bias"]
        assert torch.equal(back[f"{i}.spline_conv.bias"], total)
    again = fresh_outputs(lambda: _small(seed=3), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt="kaconv")


def test_other_kan_types_groups_and_bad_shapes_are_refused(tmp_path: Path) -> None:
    for kan_type, what in (("Fourier", "Fourier"), ("Chebyshev", "Poly/Chebyshev/BSpline")):
        torch.save(_small(kan_type=kan_type).state_dict(), tmp_path / "m.pt")
        with pytest.raises(FormatError, match=rf"0\.has no rbf\.grid: a kaconv kan_type {what}"):
            load_model(tmp_path / "m.pt")
    state = dict(_small().state_dict())
    state["2.spline_conv.weight"] = state["2.spline_conv.weight"][:, :-1]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(
        FormatError, match=r"2\.spline_conv\.weight has shape \(6, 15, 3, 3\), expected \(6, 4\*4"
    ):
        load_model(tmp_path / "m.pt")
    torch.save(_small().state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"grid_size": 8}))
    with pytest.raises(FormatError, match=r"0\.rbf\.grid has 4 centres, but the config declares"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"groups": 2}))
    with pytest.raises(FormatError, match=r"groups 2 is not supported"):
        load_model(tmp_path)


def test_compresses_through_the_engine_and_exports_back(tmp_path: Path) -> None:
    spec = {
        "layers": [
            {"kind": "reshape", "options": {"shape": [1, 8, 8]}},
            {"kind": "kaconv", "options": CONFIG},
            *SPEC_TAIL,
        ]
    }
    compress_and_reload(tmp_path, lambda: _small(in_ch=1), spec, "kaconv")
