"""FastKAN, ChebyKAN and FourierKAN: import, export back, inspect, against references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from formats_helpers import assert_same_outputs, inputs
from reference.chebykan import ChebyKANLayer as RefCheby
from reference.chebykan import MNISTChebyKAN
from reference.fastkan import FastKAN
from reference.fourierkan import FourierKAN
from safetensors.torch import save_file
from torch import nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import detect_format, export_model, inspect_model, load_model
from metacluster.kan import FourierKANLayer, build_kan


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def _perturb(module: nn.Module, seed: int) -> None:
    """Trained-looking weights: LayerNorm affines and biases away from their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in module.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


# -- FastKAN ------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("base", [True, False])
def test_fastkan_import(tmp_path: Path, suffix: str, base: bool) -> None:
    torch.manual_seed(0)
    ref = FastKAN([3, 5, 2], grid_min=-1.5, grid_max=2.5, num_grids=6, use_base_update=base)
    _perturb(ref, 0)
    path = _save(ref.state_dict(), tmp_path / f"fast{suffix}")
    assert detect_format(path) == "fastkan"
    model = load_model(path)
    assert model.layers[0].coef_dim == 6 + int(base)
    assert_same_outputs(ref, model, inputs(64, 3, scale=2.0), fmt="fastkan")


def test_fastkan_export_and_inspect(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_kan("rbf", [4, 3, 2])
    _perturb(model, 1)
    out = export_model(model, "fastkan", tmp_path / "fast.pt")[0]
    ref = FastKAN([4, 3, 2])
    ref.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert_same_outputs(ref, model.eval(), inputs(32, 4), fmt="fastkan")
    info = inspect_model(out)
    assert info["edges"] == 4 * 3 + 3 * 2
    assert [ly["coef_dim"] for ly in info["layers"]] == [9, 9]
    # learned: layernorm (2I), spline (O*I*G), base_linear (O*I + O); rbf.grid is frozen
    expected = sum(p.numel() for p in ref.parameters() if p.requires_grad)
    assert info["params"] == expected
    assert info["bytes"] == out.stat().st_size


# -- ChebyKAN -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("with_arange", [True, False])
def test_chebykan_readme_model_with_layernorms(
    tmp_path: Path, suffix: str, with_arange: bool
) -> None:
    torch.manual_seed(2)
    ref = MNISTChebyKAN([6, 5, 4, 3], degree=4, with_arange=with_arange)
    _perturb(ref, 2)
    path = _save(ref.state_dict(), tmp_path / f"cheby{suffix}")
    assert detect_format(path) == "chebykan"
    model = load_model(path)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["ChebyKANLayer", "LayerNorm", "ChebyKANLayer", "LayerNorm", "ChebyKANLayer"]
    assert_same_outputs(ref, model, inputs(64, 6, scale=2.0), fmt="chebykan")


def test_chebykan_export_and_inspect(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_kan("chebyshev", [4, 3, 2])
    out = export_model(model, "chebykan", tmp_path / "cheby.pt")[0]

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                RefCheby(m.in_features, m.out_features, m.degree) for m in model.layers
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    ref = Stack()
    ref.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert_same_outputs(ref, model.eval(), inputs(32, 4, scale=2.0), fmt="chebykan")
    info = inspect_model(out)
    assert info["family"] == "chebyshev"
    assert info["edges"] == sum(m.n_edges for _, m in model.kan_layers())
    assert info["params"] == sum(p.numel() for p in model.parameters())


# -- FourierKAN ---------------------------------------------------------------
@pytest.mark.parametrize("addbias", [True, False])
def test_fourierkan_import(tmp_path: Path, addbias: bool) -> None:
    torch.manual_seed(4)
    ref = FourierKAN([3, 4, 2], gridsize=5, addbias=addbias)
    _perturb(ref, 4)
    path = _save(ref.state_dict(), tmp_path / "fourier.pt")
    assert detect_format(path) == "fourierkan"
    model = load_model(path)
    assert model.layers[0].coef_dim == 10
    assert_same_outputs(ref, model, inputs(64, 3, scale=3.0), fmt="fourierkan")


def test_fourierkan_export_and_inspect(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = build_kan("fourier", [3, 4, 2])
    _perturb(model, 5)
    out = export_model(model, "fourierkan", tmp_path / "fourier.pt")[0]
    first = model.layers[0]
    assert isinstance(first, FourierKANLayer)
    g = first.grid_size
    ref = FourierKAN([3, 4, 2], gridsize=g)
    ref.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert_same_outputs(ref, model.eval(), inputs(32, 3, scale=3.0), fmt="fourierkan")
    info = inspect_model(out)
    assert info["params"] == sum(p.numel() for p in ref.parameters())
    assert info["layers"][0] == {
        "name": "layers.0",
        "in": 3,
        "out": 4,
        "edges": 12,
        "coef_dim": 2 * g,
    }


def test_export_refuses_wrong_family(tmp_path: Path) -> None:
    with pytest.raises(IncompatibleError):
        export_model(build_kan("bspline", [2, 2]), "fourierkan", tmp_path / "x.pt")


def test_layers_that_do_not_chain_are_reported(tmp_path: Path) -> None:
    sd = {"a.cheby_coeffs": torch.zeros(3, 4, 3), "b.cheby_coeffs": torch.zeros(5, 2, 3)}
    torch.save(sd, tmp_path / "x.pt")
    with pytest.raises(FormatError, match="do not chain"):
        load_model(tmp_path / "x.pt")


def test_unknown_and_ambiguous_checkpoints(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "mlp.pt")
    with pytest.raises(FormatError, match=r"supported formats: .*efficient-kan"):
        load_model(tmp_path / "mlp.pt")
    both = {"a.cheby_coeffs": torch.zeros(2, 2, 3), "b.fouriercoeffs": torch.zeros(2, 2, 2, 3)}
    torch.save(both, tmp_path / "both.pt")
    with pytest.raises(FormatError, match=r"ambiguous.*chebykan.*fourierkan"):
        load_model(tmp_path / "both.pt")
    # an explicit format settles it (and then reports what it does not understand)
    with pytest.raises(FormatError, match="does not understand"):
        load_model(tmp_path / "both.pt", format="chebykan")
    with pytest.raises(FormatError, match="unknown format"):
        load_model(tmp_path / "both.pt", format="keras")
