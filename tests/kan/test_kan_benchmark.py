"""The layer benchmark's correctness half on tiny shapes: its efficient-kan reference and
our layer hold the same function (no timing assertions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kan_layers_bench", ROOT / "benchmarks" / "kan_layers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("n_in", "n_out", "grid_size", "order"), [(5, 3, 5, 3), (4, 2, 3, 2)])
def test_reference_and_ours_agree(
    bench: ModuleType, n_in: int, n_out: int, grid_size: int, order: int
) -> None:
    diffs = bench.compare(n_in, n_out, batch=64, grid_size=grid_size, spline_order=order)
    assert diffs["scale"] > 0.1  # a non-trivial function
    assert diffs["forward"] <= 1e-5 and diffs["input_grad"] <= 1e-5


def test_folded_parameter_gradients_agree(bench: ModuleType) -> None:
    ours, ref = bench.make_pair(6, 4, seed=3)
    x = torch.rand(32, 6) * 2.4 - 1.2
    ours(x).square().sum().backward()
    ref(x).square().sum().backward()
    assert ours.coef.grad is not None and ref.base_weight.grad is not None
    torch.testing.assert_close(ours.coef.grad[..., -1], ref.base_weight.grad, atol=1e-5, rtol=1e-4)
    # d/d(spline_weight) = d/d(folded) * scaler
    folded = ours.coef.grad[..., :-1] * ref.spline_scaler.detach().unsqueeze(-1)
    torch.testing.assert_close(folded, ref.spline_weight.grad, atol=1e-5, rtol=1e-4)


def test_quick_run_produces_rows(bench: ModuleType) -> None:
    rows = bench.run([(4, 3)], batch=16, threads=[1], repeats=1, with_flashkan=False)
    assert [r[2] for r in rows] == ["forward", "forward+backward"]
    assert all(float(str(r[8])) <= 1e-5 for r in rows)


def test_flashkan_contender_holds_our_function(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    flashkan_layer = pytest.importorskip("flashkan.layer")
    import flashkan.basis

    # its eager basis: the compiled one is the same arithmetic after a minute of C++
    monkeypatch.setattr(flashkan_layer, "bspline_basis", flashkan.basis.bspline_basis_eager)
    ours, _ = bench.make_pair(6, 4, seed=2)
    fk = bench.flashkan_layer(ours)
    x = torch.rand(50, 6) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fk(x), ours(x), atol=5e-5, rtol=1e-4)
