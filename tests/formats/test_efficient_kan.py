"""efficient-kan import/export against the reference KANLinear/KAN (tests/formats/reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs, inputs
from reference.efficient_kan import KAN, KANLinear
from reference.lkan import LKAN
from safetensors.torch import save_file

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import detect_format, export_model, inspect_model, load_model
from metacluster.kan import BSplineKANLayer, build_kan


def _trained_like(widths: list[int], seed: int = 0, **kw: object) -> KAN:
    torch.manual_seed(seed)
    ref = KAN(widths, **kw)
    with torch.no_grad():
        # a grid update moved the knots of input 1 (non-uniform, per-input)
        grid = ref.layers[0].grid
        grid[1] = grid[1] * torch.linspace(0.9, 1.3, grid.shape[1])
        grid[1] = torch.sort(grid[1]).values
    return ref


@pytest.mark.parametrize("scaler", [True, False])
def test_import_reproduces_outputs(tmp_path: Path, scaler: bool) -> None:
    ref = _trained_like([3, 4, 2], enable_standalone_scale_spline=scaler)
    path = tmp_path / "kan.pt"
    torch.save(ref.state_dict(), path)
    assert detect_format(path) == "efficient-kan"
    model = load_model(path)
    assert model.meta["format"] == "efficient-kan"
    assert_same_outputs(ref, model, inputs(64, 3), fmt="efficient-kan")


def test_custom_grid_and_order_and_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = KAN([2, 3], grid_size=7, spline_order=2, grid_range=(-2.0, 3.0))
    path = tmp_path / "kan.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = load_model(path)
    layer = next(model.kan_layers())[1]
    assert isinstance(layer, BSplineKANLayer)
    assert (layer.grid_size, layer.spline_order, layer.coef_dim) == (7, 2, 10)
    assert_same_outputs(ref, model, inputs(64, 2, scale=2.5), fmt="efficient-kan")


def test_single_layer_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(2)
    ref = KANLinear(4, 2)
    torch.save(ref.state_dict(), tmp_path / "layer.pth")
    assert_same_outputs(ref, load_model(tmp_path / "layer.pth"), inputs(32, 4), fmt="efficient-kan")


def test_many_layers_keep_numeric_order(tmp_path: Path) -> None:
    widths = [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2]  # layers.10 must follow layers.9
    ref = _trained_like(widths)
    path = tmp_path / "deep.safetensors"  # safetensors stores keys sorted as strings
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    assert_same_outputs(ref, load_model(path), inputs(16, 2), fmt="efficient-kan")


def test_unknown_extra_module_is_reported(tmp_path: Path) -> None:
    sd = _trained_like([2, 2]).state_dict()
    sd["head.weight"] = torch.zeros(3, 2)
    torch.save(sd, tmp_path / "x.pt")
    with pytest.raises(FormatError, match=r"head\.weight"):
        load_model(tmp_path / "x.pt")


def test_export_loads_in_reference_with_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_kan("bspline", [3, 5, 2])
    out = tmp_path / "export.pt"
    export_model(model, "efficient-kan", out)
    ref = KAN([3, 5, 2])
    ref.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert_same_outputs(ref, model.eval(), inputs(64, 3), fmt="efficient-kan")
    again = load_model(out)
    assert torch.equal(
        next(again.kan_layers())[1].coef_param, next(model.kan_layers())[1].coef_param
    )


def test_export_refuses_other_families(tmp_path: Path) -> None:
    with pytest.raises(IncompatibleError):
        export_model(build_kan("chebyshev", [2, 2]), "efficient-kan", tmp_path / "x.pt")


def test_inspect_counts(tmp_path: Path) -> None:
    ref = _trained_like([3, 4, 2])
    path = tmp_path / "kan.pt"
    torch.save(ref.state_dict(), path)
    info = inspect_model(path)
    assert info["format"] == "efficient-kan"
    assert info["family"] == "bspline"
    assert info["layers"] == [
        {"name": "layers.0", "in": 3, "out": 4, "edges": 12, "coef_dim": 9},
        {"name": "layers.1", "in": 4, "out": 2, "edges": 8, "coef_dim": 9},
    ]
    assert info["edges"] == 20
    # efficient-kan's learned tensors: base_weight, spline_weight, spline_scaler (grid is a buffer)
    learned = sum(p.numel() for p in ref.parameters())
    assert info["params"] == learned == 20 * (1 + 8 + 1)
    assert info["bytes"] == path.stat().st_size


@pytest.mark.parametrize(("scale_spline", "bias"), [(None, False), (0.7, True)])
def test_lkan_variant(tmp_path: Path, scale_spline: float | None, bias: bool) -> None:
    torch.manual_seed(4)
    ref = LKAN([3, 4, 2], scale_spline=scale_spline, bias=bias)
    if scale_spline is not None:
        with torch.no_grad():
            for layer in ref.layers:
                layer.scale_spline.uniform_(0.5, 1.5)
    torch.save(ref.state_dict(), tmp_path / "lkan.pt")
    assert detect_format(tmp_path / "lkan.pt") == "efficient-kan"
    model = load_model(tmp_path / "lkan.pt")
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == (["BSplineKANLayer", "Affine"] * 2 if bias else ["BSplineKANLayer"] * 2)
    assert_same_outputs(ref, model, inputs(64, 3), fmt="efficient-kan")
