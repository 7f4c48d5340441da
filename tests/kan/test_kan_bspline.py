"""B-spline layers against a plain-Python Cox-de Boor reference, fast path vs general path,
grid caching and grouping, and pykan's own KANLayer/MultKAN where pykan is installed."""

from __future__ import annotations

import pytest
import torch
from kan_reference import F64, inputs, layer_ref, random_coef_

from metacluster.errors import ConfigError, InputError
from metacluster.kan import BSplineKANLayer, PyKANLayer
from metacluster.kan.bspline import (
    cardinal_bspline_derivatives,
    cardinal_bspline_values,
    cox_de_boor_bases,
    efficient_kan_grid,
    pykan_grid,
    uniform_bspline_bases,
    uniform_grid_params,
)


def double_layer(layer: BSplineKANLayer) -> BSplineKANLayer:
    """The layer in float64 with its default knots computed in float64 (a cast keeps the
    fp32-rounded knots, which are uniform only to fp32 precision)."""
    layer = layer.double()
    layer.set_grid(
        efficient_kan_grid(
            layer.in_features, layer.grid_size, layer.spline_order, layer.grid_range, F64
        )
    )
    return layer


@pytest.mark.parametrize("base", ["silu", "identity", "zero"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("fast", [True, False])
def test_forward_matches_loop_reference(base: str, order: int, fast: bool) -> None:
    layer = BSplineKANLayer(3, 2, grid_size=4, spline_order=order, base_activation=base)
    layer = double_layer(layer)
    random_coef_(layer)
    layer.use_fast_path = fast
    x = inputs(9, 3)
    assert layer.uniform_params() is not None
    torch.testing.assert_close(layer(x), layer_ref(layer, x), atol=1e-10, rtol=0)
    assert layer.coef.shape == (2, 3, 4 + order + (0 if base == "zero" else 1))


def test_fp32_forward_matches_reference_and_leading_dims() -> None:
    layer = BSplineKANLayer(4, 3, grid_size=5, spline_order=3, grid_range=(-2.0, 1.0))
    random_coef_(layer, seed=3)
    x = inputs(12, 4, -2.5, 1.5).float()
    y = layer(x)
    assert y.dtype == torch.float32
    assert (y.double() - layer_ref(layer, x.double())).abs().max() <= 1e-5
    y3 = layer(x.reshape(3, 4, 4))
    assert y3.shape == (3, 4, 3)
    torch.testing.assert_close(y3.reshape(12, 3), y)


def test_outside_extended_grid_gives_zero_spline() -> None:
    layer = BSplineKANLayer(1, 1, base_activation="zero").double()
    random_coef_(layer)
    knots = layer.grid[0]
    x = torch.tensor([[knots[0] - 0.3], [knots[-1]], [knots[-1] + 5.0], [1e6]], dtype=F64)
    assert torch.equal(layer(x), torch.zeros(4, 1, dtype=F64))
    layer.use_fast_path = False
    assert torch.equal(layer(x), torch.zeros(4, 1, dtype=F64))


def _count_paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count calls of the closed-form and the Cox-de Boor basis functions."""
    import metacluster.kan.bspline as bspline

    calls = {"fast": 0, "general": 0}
    for name, key in (("uniform_bspline_bases", "fast"), ("cox_de_boor_bases", "general")):
        real = getattr(bspline, name)

        def counted(*args: object, _real: object = real, _key: str = key, **kw: object) -> object:
            calls[_key] += 1
            return _real(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(bspline, name, counted)
    real_native = bspline._native_kernel

    def native(*args: object) -> object:  # the C kernel computes the same closed form
        lib = real_native(*args)  # type: ignore[arg-type]
        calls["fast"] += lib is not None
        return lib

    monkeypatch.setattr(bspline, "_native_kernel", native)
    return calls


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_fast_path_equals_cox_de_boor_values_and_grads(
    order: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = BSplineKANLayer(5, 4, grid_size=6, spline_order=order, grid_range=(-1.5, 0.5))
    random_coef_(layer, seed=order)
    x = inputs(64, 5, -3.0, 2.0).float().requires_grad_(True)
    calls = _count_paths(monkeypatch)
    y_fast = layer(x)
    # the comparison means something only if each side took its own path
    assert calls == {"fast": 1, "general": 0}
    gx_fast, gc_fast = torch.autograd.grad(y_fast.square().sum(), (x, layer.coef))
    layer.use_fast_path = False
    y_gen = layer(x)
    assert calls == {"fast": 1, "general": 1}
    gx_gen, gc_gen = torch.autograd.grad(y_gen.square().sum(), (x, layer.coef))
    assert (y_fast - y_gen).detach().abs().max() <= 1e-6 * max(
        1.0, float(y_gen.detach().abs().max())
    )
    torch.testing.assert_close(gc_fast, gc_gen, atol=1e-4, rtol=1e-5)
    if order > 0:  # order 0 splines are piecewise constant: no x-gradient in either path
        torch.testing.assert_close(gx_fast, gx_gen, atol=1e-4, rtol=1e-5)


def test_fast_path_bases_match_recursion_on_shifted_per_input_grids() -> None:
    # Uniform rows with different origin and spacing per input still take the fast path.
    grid = torch.stack(
        [torch.arange(-3, 9, dtype=F64) * h + t0 for t0, h in [(-1.0, 0.3), (0.5, 0.05)]]
    )
    params = uniform_grid_params(grid)
    assert params is not None
    x = torch.stack([inputs(200, 1, -2.5, 3.0)[:, 0], inputs(200, 1, 0.2, 1.2)[:, 0]], dim=1)
    fast = uniform_bspline_bases(x, params[0], params[1], order=3, n_basis=8)
    torch.testing.assert_close(fast, cox_de_boor_bases(x, grid, 3), atol=1e-12, rtol=0)


@pytest.mark.parametrize("base", [None, "silu", "identity", "gelu", "tanh"])
@pytest.mark.parametrize("order", [2, 3])
def test_custom_backward_passes_gradcheck(base: str | None, order: int) -> None:
    grid = torch.arange(-order, 6 + order, dtype=F64)[None].expand(2, -1) * 0.25 - 1.0
    t0, inv_h = uniform_grid_params(grid)  # type: ignore[misc]
    # Points away from knots (the spline is only C^{k-1} there), one outside the grid.
    x = torch.tensor([[-0.93, 0.41], [0.12, -0.61], [0.77, 1.9]], dtype=F64).requires_grad_()
    n_basis = grid.shape[1] - order - 1
    torch.autograd.gradcheck(
        lambda x_: uniform_bspline_bases(x_, t0, inv_h, order, n_basis, base), (x,)
    )


def test_unknown_base_activation_is_refused() -> None:
    t0, inv_h = torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)
    with pytest.raises(ConfigError, match="activation"):
        uniform_bspline_bases(torch.zeros(1, 1), t0, inv_h, 3, 4, "swish")


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_cardinal_values_partition_unity_and_derivatives(order: int) -> None:
    t = torch.linspace(0, 0.999, 50, dtype=F64, requires_grad=True)
    vals = cardinal_bspline_values(t, order)
    torch.testing.assert_close(vals.sum(-1), torch.ones(50, dtype=F64))
    if order == 0:
        assert torch.equal(cardinal_bspline_derivatives(t, 0), torch.zeros(50, 1, dtype=F64))
        return
    auto = torch.stack(
        [torch.autograd.grad(vals[:, r].sum(), t, retain_graph=True)[0] for r in range(order + 1)],
        -1,
    )
    torch.testing.assert_close(cardinal_bspline_derivatives(t.detach(), order), auto)


def test_non_uniform_grid_uses_general_path_and_matches_reference() -> None:
    layer = BSplineKANLayer(2, 3, grid_size=3, spline_order=2).double()
    random_coef_(layer, seed=5)
    knots = torch.tensor([-2.0, -1.4, -1.0, -0.2, 0.1, 0.9, 1.2, 2.0], dtype=F64)
    layer.set_grid(torch.stack([knots, knots * 0.5 + 0.1]))
    assert layer.uniform_params() is None
    x = inputs(8, 2, -2.2, 2.2)
    torch.testing.assert_close(layer(x), layer_ref(layer, x), atol=1e-10, rtol=0)
    x.requires_grad_(True)
    layer(x).sum().backward()  # the general path is differentiable in x
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_uniform_cache_invalidated_by_load_state_dict_and_set_grid() -> None:
    layer = BSplineKANLayer(2, 1, grid_size=3, spline_order=1)
    assert layer.uniform_params() is not None
    warped = layer.grid.clone()
    warped[1, 2] += 0.05
    state = {**layer.state_dict(), "grid": warped}
    layer.load_state_dict(state)
    assert layer.uniform_params() is None
    other = BSplineKANLayer(2, 1, grid_size=3, spline_order=1)
    layer.set_grid(other.grid)
    assert layer.uniform_params() is not None
    with torch.no_grad():
        layer.grid[0, 0] -= 0.5  # in-place writes bump the version counter too
    assert layer.uniform_params() is None
    layer.grid = other.grid.clone()  # a new buffer object
    assert layer.uniform_params() is not None
    layer.grid = warped.clone()
    assert layer.uniform_params() is None


def test_set_grid_rejects_bad_knots() -> None:
    layer = BSplineKANLayer(2, 1, grid_size=3, spline_order=1)
    with pytest.raises(ConfigError, match="shape"):
        layer.set_grid(torch.zeros(3, 6))
    with pytest.raises(ConfigError, match="nondecreasing"):
        layer.set_grid(torch.flip(layer.grid, dims=[1]))


def test_edge_groups_follow_distinct_grid_rows() -> None:
    layer = BSplineKANLayer(3, 2, grid_size=3, spline_order=1)
    groups, keys = layer.edge_groups()
    assert groups.tolist() == [0] * 6 and len(keys) == 1
    grid = layer.grid.clone()
    grid[2] = grid[2] * 2.0  # input 2 gets its own (still uniform) knots
    layer.set_grid(grid)
    view = layer.edge_view("l0")
    assert len(view.group_keys) == 2 and len(set(view.group_keys)) == 2
    by_input = view.groups.reshape(2, 3)
    assert by_input[:, 0].tolist() == by_input[:, 1].tolist()
    assert (by_input[:, 2] != by_input[:, 0]).all()
    assert view.index[:, 1].tolist() == [0, 1, 2, 0, 1, 2]


def test_edge_functions_are_the_single_edge_layer() -> None:
    layer = BSplineKANLayer(2, 2, grid_size=4, spline_order=3, grid_range=(-1.0, 2.0)).double()
    random_coef_(layer, seed=7)
    f = layer.edge_functions(layer.edge_view().coefficients, n_points=11)
    assert f.shape == (4, 11)
    xs = torch.linspace(-1.0, 2.0, 11, dtype=F64)
    for e, (o, i) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        single = BSplineKANLayer(1, 1, grid_size=4, spline_order=3, grid_range=(-1.0, 2.0))
        single = single.double()
        with torch.no_grad():
            single.coef.copy_(layer.coef[o, i].reshape(1, 1, -1))
        torch.testing.assert_close(f[e], single(xs[:, None])[:, 0])
    centroids = torch.randn(3, layer.coef_dim, dtype=F64)
    assert layer.edge_functions(centroids, 5).shape == (3, 5)


def test_bad_input_and_config_errors() -> None:
    layer = BSplineKANLayer(3, 2)
    with pytest.raises(InputError, match=r"\(\.\.\., 3\)"):
        layer(torch.zeros(4, 5))
    with pytest.raises(InputError, match="floating"):
        layer(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ConfigError):
        BSplineKANLayer(3, 2, grid_range=(1.0, -1.0))
    with pytest.raises(ConfigError):
        BSplineKANLayer(3, 2, base_activation="swish")
    with pytest.raises(ConfigError):
        BSplineKANLayer(0, 2)


# -- pykan ----------------------------------------------------------------


def pykan_ref(layer: PyKANLayer, x: torch.Tensor) -> torch.Tensor:
    y = layer_ref(layer, x)
    y = layer.subnode_scale.detach().double() * y + layer.subnode_bias.detach().double()
    return layer.node_scale.detach().double() * y + layer.node_bias.detach().double()


def test_pykan_layer_matches_reference_in_float64() -> None:
    layer = PyKANLayer(3, 2, grid_size=3, spline_order=3).to(F64)
    # fp32-born knots are not uniform at fp64 precision: the exact general path runs.
    assert layer.uniform_params() is None
    random_coef_(layer, seed=2)
    with torch.no_grad():
        for p in (layer.subnode_scale, layer.subnode_bias, layer.node_scale, layer.node_bias):
            p.copy_(torch.randn(2, dtype=F64))
    x = inputs(10, 3)
    y = layer(x)
    assert y.dtype == F64
    torch.testing.assert_close(y, pykan_ref(layer, x), atol=1e-10, rtol=0)
    layer.set_grid(pykan_grid(3, 3, 3, (-1.0, 1.0), F64))
    assert layer.uniform_params() is not None
    torch.testing.assert_close(layer(x), pykan_ref(layer, x), atol=1e-10, rtol=0)


def test_pykan_layer_equals_pykan_multkan() -> None:
    kan = pytest.importorskip("kan")
    torch.manual_seed(0)
    model = kan.MultKAN(width=[3, 4, 2], grid=5, k=3, seed=0, auto_save=False, save_act=False)
    model = model.to(F64)
    with torch.no_grad():  # non-trivial affines and masks, as after training / pruning
        for li in range(2):
            model.node_scale[li].uniform_(0.5, 1.5)
            model.node_bias[li].uniform_(-0.3, 0.3)
            model.subnode_scale[li].uniform_(0.5, 1.5)
            model.subnode_bias[li].uniform_(-0.3, 0.3)
        model.act_fun[0].mask[1, 2] = 0.0
    model.symbolic_enabled = False
    ours = []
    for li, width_in, width_out in [(0, 3, 4), (1, 4, 2)]:
        act = model.act_fun[li]
        layer = PyKANLayer(width_in, width_out, grid_size=5, spline_order=3).to(F64)
        assert torch.equal(layer.grid, act.grid)  # our default grid is pykan's
        with torch.no_grad():
            mask = act.mask.T  # pykan (I, O) -> ours (O, I)
            layer.coef[..., :-1] = (mask * act.scale_sp.T)[..., None] * act.coef.permute(1, 0, 2)
            layer.coef[..., -1] = mask * act.scale_base.T
            layer.set_grid(act.grid)
            layer.subnode_scale.copy_(model.subnode_scale[li])
            layer.subnode_bias.copy_(model.subnode_bias[li])
            layer.node_scale.copy_(model.node_scale[li])
            layer.node_bias.copy_(model.node_bias[li])
        ours.append(layer)
    x = inputs(16, 3, -1.2, 1.2)
    y = ours[1](ours[0](x))
    torch.testing.assert_close(y, model(x), atol=1e-10, rtol=0)


def test_fast_path_refuses_double_backward_instead_of_wrong_values() -> None:
    layer = BSplineKANLayer(2, 1)
    x = torch.rand(4, 2, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        g.sum().backward()  # type: ignore[no-untyped-call]
