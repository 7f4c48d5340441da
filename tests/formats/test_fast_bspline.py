"""flashkan 0.2.0 and inkan 0.5.2 (PyPI): checkpoints written by the installed packages'
own KANLayer, imported into BSplineKANLayer, exported back with a strict load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import flashkan.basis
import flashkan.layer
import inkan
import pytest
import torch
from formats_helpers import assert_same_outputs
from test_tck_polynomial import Stack, compress_and_reload, fresh_outputs
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats import detect_format, export_model, inspect_model, load_model


@pytest.fixture(autouse=True)
def _eager_flashkan(monkeypatch: pytest.MonkeyPatch) -> None:
    """flashkan wraps its basis in torch.compile (a minute of C++ compiling on a CPU);
    the package exports the same function uncompiled, which its layer then calls."""
    monkeypatch.setattr(flashkan.layer, "bspline_basis", flashkan.basis.bspline_basis_eager)


BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "flashkan": lambda i, o: flashkan.KANLayer(i, o, grid_size=6, grid_range=(-1.5, 2.0)),
    "inkan": lambda i, o: inkan.KANLayer(
        i, o, grid_size=6, grid_range=(-1.5, 2.0), compile_basis=False
    ),
    "inkan-direct": lambda i, o: inkan.KANLayer(
        i, o, grid_size=6, grid_range=(-1.5, 2.0), compile_basis=False, contraction="direct"
    ),
}


# flashkan's truncated power form in fp32 is not exact B-spline arithmetic (its docs:
# "max diff < 5e-5" against Cox-de Boor; measured here 8.9e-5 with inputs 0.7 past the
# grid, where the cancelling cubes grow); in fp64 both agree within 1e-5 (the tests).
FLASHKAN_FP32 = 2e-4


def _stack(
    name: str,
    seed: int = 0,
    widths: tuple[int, int, int] = (5, 4, 3),
    dtype: torch.dtype = torch.float64,
) -> nn.Module:
    torch.manual_seed(seed)
    ref = Stack(
        [
            BUILDERS[name](widths[0], widths[1]),
            nn.LayerNorm(widths[1]),
            BUILDERS[name](widths[1], widths[2]),
        ]
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return ref.to(dtype).eval()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_upstream_checkpoint_loads_and_exports_back(tmp_path: Path, name: str) -> None:
    fmt = name.split("-")[0]
    ref = _stack(name)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    assert detect_format(tmp_path / "m.pt") == fmt
    model = load_model(tmp_path / "m.pt")
    assert [type(m).__name__ for m in model.layers] == [
        "BSplineKANLayer",
        "LayerNorm",
        "BSplineKANLayer",
    ]
    assert model.layers[0].grid_size == 6 and model.layers[0].grid_range == pytest.approx(
        (-1.5, 2.0)
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 5, generator=gen, dtype=torch.float64) * 4.4 - 2.2  # beyond the grid
    assert_same_outputs(ref, model, x, fmt="fast-bspline")
    assert inspect_model(tmp_path / "m.pt")["params"] == sum(p.numel() for p in ref.parameters())
    files = export_model(model, fmt, tmp_path / "out.pt")
    back = torch.load(files[0], weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    again = fresh_outputs(lambda: _stack(name, seed=3), back, x)
    assert_same_outputs(lambda _: again, model, x, fmt="fast-bspline")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_float32_checkpoints(tmp_path: Path, name: str) -> None:
    ref = _stack(name, dtype=torch.float32)
    torch.save(ref.state_dict(), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    x = torch.rand(256, 5, generator=torch.Generator().manual_seed(2)) * 4.4 - 2.2
    with torch.no_grad():
        diff = float((ref(x) - model(x)).abs().max())
    assert diff <= (FLASHKAN_FP32 if name == "flashkan" else 1e-5), diff


def test_inkan_weight_that_does_not_fit_the_bases_is_refused(tmp_path: Path) -> None:
    state = dict(_stack("inkan").state_dict())
    state["layers.0.weight"] = state["layers.0.weight"][:, :-1]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(
        FormatError, match=r"layers\.0\.weight has 49 columns, not I\*\(K\+1\) for K = 9"
    ):
        load_model(tmp_path / "m.pt")


def test_uneven_grid_starts_are_refused(tmp_path: Path) -> None:
    state = dict(_stack("flashkan").state_dict())
    state["layers.2.grid_starts"] = state["layers.2.grid_starts"] ** 3
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(FormatError, match=r"layers\.2\.grid_starts is not evenly spaced"):
        load_model(tmp_path / "m.pt")


@pytest.mark.parametrize("name", ["flashkan", "inkan"])
def test_compresses_through_the_engine(tmp_path: Path, name: str) -> None:
    build = lambda: _stack(name, widths=(64, 8, 10), dtype=torch.float32)  # noqa: E731
    compress_and_reload(tmp_path, build, None, name, FLASHKAN_FP32 if name == "flashkan" else 1e-5)
