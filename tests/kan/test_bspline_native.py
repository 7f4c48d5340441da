"""The dense B-spline layer's fast kernels: the C features (metacluster/kan/native.py)
and the oneDNN products give the outputs and gradients of the torch closed form and of
Cox-de Boor, and the layer falls back to torch where either is unavailable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import metacluster.kan.bspline as bspline
from metacluster.kan import BSplineKANLayer, PyKANLayer, native

HAS_CC = shutil.which("cc") is not None or shutil.which("gcc") is not None


@pytest.fixture(autouse=True)
def _fresh_kernel() -> Iterator[None]:
    native.reset()
    yield
    native.reset()


def _grads(layer: BSplineKANLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    layer.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    weights = torch.linspace(-1.0, 1.0, y.shape[-1])
    (y.square() * weights).sum().backward()
    assert xg.grad is not None and layer.coef.grad is not None
    return y.detach(), xg.grad, layer.coef.grad.clone()


def _close(a: Tensor, b: Tensor, rtol: float = 1e-5) -> None:
    scale = max(float(b.abs().max()), 1.0) if b.numel() else 1.0
    assert float((a - b).abs().max()) <= rtol * scale if a.numel() else True


LAYERS = {
    "odd": lambda: BSplineKANLayer(33, 19),
    "nobase_wide": lambda: BSplineKANLayer(
        9, 5, grid_size=7, grid_range=(-2.0, 3.0), base_activation="zero"
    ),
    "pykan": lambda: PyKANLayer(6, 4, grid_size=4),
}


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("batch", [0, 1, 2, 70])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_native_features_equal_torch_and_cox_de_boor(name: str, batch: int) -> None:
    torch.manual_seed(0)
    layer = LAYERS[name]()
    with torch.no_grad():
        layer.coef.normal_()
    x = torch.randn(batch, layer.in_features) * 1.6  # beyond the grid too
    assert bspline._native_kernel(x, 3, "silu") is not None
    fast = _grads(layer, x)
    layer.use_native = False
    closed = _grads(layer, x)
    layer.use_fast_path = False
    general = _grads(layer, x)
    for got, want, other in zip(fast, closed, general, strict=True):
        assert got.shape == want.shape
        _close(got, want)
        _close(got, other, 1e-4)


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_native_features_values_at_knots_and_non_finite() -> None:
    layer = BSplineKANLayer(3, 2)
    knots = layer.grid[0]
    x = torch.stack([knots, knots.flip(0), knots * 0.5]).t().contiguous()  # on every knot
    x = torch.cat([x, torch.tensor([[float("nan"), 1e30, -1e30]])])
    lib = native.kernel()
    assert lib is not None
    params = layer.uniform_params()
    assert params is not None
    t0, inv_h = (p.float() for p in params)
    got = native.bspline_features(lib, x, t0, inv_h, layer.n_basis, True)
    want = bspline.uniform_bspline_bases(x, params[0], params[1], 3, layer.n_basis, "silu")
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    assert float((got[finite] - want[finite]).abs().max()) <= 1e-6


def test_without_the_kernels_the_layer_runs_on_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    layer = BSplineKANLayer(10, 7)
    x = torch.randn(40, 10)
    fast = _grads(layer, x)
    monkeypatch.setenv("METACLUSTER_NATIVE", "0")
    monkeypatch.setattr(bspline, "onednn_linear", lambda: None)
    native.reset()
    assert native.kernel() is None
    assert bspline._native_kernel(x, 3, "silu") is None
    slow = _grads(layer, x)
    for got, want in zip(fast, slow, strict=True):
        _close(got, want)


def test_onednn_products_equal_f_linear() -> None:
    if bspline.onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN matmul")
    torch.manual_seed(0)
    feats = torch.randn(13, 5, 9, requires_grad=True)
    coef = torch.randn(6, 5, 9, requires_grad=True)
    for use in (True, False):
        y = bspline.features_linear(feats, coef, use_onednn=use)
        gf, gc = torch.autograd.grad(y.square().sum(), (feats, coef))
        if use:
            assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__
            first = (y.detach(), gf, gc)
        else:
            for got, want in zip(first, (y.detach(), gf, gc), strict=True):
                _close(got, want)
    empty = bspline.features_linear(torch.zeros(0, 5, 9), coef.detach())
    assert empty.shape == (0, 6)


def test_other_dtypes_and_orders_keep_the_torch_paths() -> None:
    x = torch.randn(4, 3)
    assert bspline._native_kernel(x.double(), 3, "silu") is None
    assert bspline._native_kernel(x, 2, "silu") is None
    assert bspline._native_kernel(x, 3, "gelu") is None
    layer = BSplineKANLayer(3, 2).double()
    y = layer(x.double())
    assert y.dtype == torch.float64
