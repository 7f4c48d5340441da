"""RBF, Chebyshev, Fourier and conv KAN layers against loop references, and the edge-view
contract (round trip, functional_call, config rebuild, index, groups, errors) for every family."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
from kan_reference import (
    F64,
    basis_ref,
    cheby_ref,
    conv_ref,
    fourier_ref,
    gelu,
    inputs,
    rbf_ref,
)
from torch import nn
from torch.func import functional_call

from metacluster.errors import ConfigError, InputError
from metacluster.kan import (
    BernsteinKANConv2d,
    BernsteinKANLayer,
    BSplineKANLayer,
    ChebyKANConv2d,
    ChebyKANLayer,
    FourierKANLayer,
    GramBottleneckKANConv2d,
    GramBottleneckKANLayer,
    GramKANConv2d,
    GramKANLayer,
    GroupRationalKANLayer,
    JacobiKANConv2d,
    JacobiKANLayer,
    JacobiRKANLayer,
    KANConv2d,
    KANLayer,
    LegendreKANConv2d,
    LegendreKANLayer,
    PadeRKANLayer,
    PyKANLayer,
    RBFKANConv2d,
    RBFKANLayer,
    ReLUBottleneckKANConv2d,
    WaveletKANConv2d,
    WaveletKANLayer,
    build_module,
    module_config,
)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def randomize_(module: ModuleT, seed: int = 0) -> ModuleT:
    """Every parameter random (LayerNorm / affines included), so tests see all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module


# -- forward against references ---------------------------------------------


@pytest.mark.parametrize("use_layernorm", [True, False])
@pytest.mark.parametrize("use_base_update", [True, False])
def test_rbf_matches_fastkan_reference(use_layernorm: bool, use_base_update: bool) -> None:
    layer = RBFKANLayer(
        4, 3, grid_size=5, use_layernorm=use_layernorm, use_base_update=use_base_update
    )
    layer = randomize_(layer.double())
    x = inputs(7, 4, -2.5, 2.5)
    torch.testing.assert_close(layer(x), rbf_ref(layer, x), atol=1e-10, rtol=0)
    assert layer.coef.shape == (3, 4, 5 + use_base_update)


def test_rbf_default_hyperparameters_are_fastkans() -> None:
    layer = RBFKANLayer(3, 2)
    assert layer.grid.tolist() == torch.linspace(-2.0, 2.0, 8).tolist()
    assert layer.denominator == pytest.approx(4.0 / 7.0)
    assert layer.bias is not None and layer.layernorm is not None


def test_chebyshev_matches_acos_reference() -> None:
    layer = randomize_(ChebyKANLayer(3, 2, degree=5).double())
    x = inputs(8, 3, -3.0, 3.0)
    torch.testing.assert_close(layer(x), cheby_ref(layer.coef.detach(), x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_fourier_matches_series_reference(bias: bool) -> None:
    layer = randomize_(FourierKANLayer(3, 2, grid_size=4, bias=bias).double())
    x = inputs(6, 3, -4.0, 4.0)
    expected = fourier_ref(layer.coef.detach(), layer.bias, x)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


def bspline_gelu_edge(grid: list[float], order: int, n_basis: int) -> Callable[..., float]:
    def fn(vec: torch.Tensor, v: float) -> float:
        spline = sum(float(vec[c]) * basis_ref(c, order, v, grid) for c in range(n_basis))
        return spline + float(vec[-1]) * gelu(v)

    return fn


def cheby_edge(vec: torch.Tensor, v: float) -> float:
    t = min(max(math.tanh(v), -1 + 1e-7), 1 - 1e-7)
    return sum(float(c) * math.cos(d * math.acos(t)) for d, c in enumerate(vec.tolist()))


CONV_GEOMETRIES = [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (2, 3), "stride": 2, "padding": (1, 0), "dilation": (2, 1), "groups": 2},
]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_bspline_matches_per_edge_reference(geometry: dict[str, object]) -> None:
    layer = KANConv2d(4, 2, norm="none", prelu=False, **geometry)  # type: ignore[arg-type]
    layer = randomize_(layer.double())
    layer.grid.copy_(torch.linspace(-1.0 - 0.4 * 3, 1.0 + 0.4 * 3, 12, dtype=F64))
    x = inputs(2 * 4 * 5 * 5, 1, -1.8, 1.8).reshape(2, 4, 5, 5)
    edge = bspline_gelu_edge(layer.grid.tolist(), 3, 8)
    torch.testing.assert_close(layer(x), conv_ref(layer, x, edge), atol=1e-10, rtol=0)
    layer.use_fast_path = False
    torch.testing.assert_close(layer(x), conv_ref(layer, x, edge), atol=1e-10, rtol=0)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_chebyshev_matches_per_edge_reference(geometry: dict[str, object]) -> None:
    layer = ChebyKANConv2d(4, 2, degree=3, norm="none", **geometry)  # type: ignore[arg-type]
    layer = randomize_(layer.double())
    x = inputs(2 * 4 * 5 * 5, 1, -2.0, 2.0).reshape(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), conv_ref(layer, x, cheby_edge), atol=1e-10, rtol=0)


def test_conv_norm_and_prelu_follow_torch_conv_kan_order() -> None:
    layer = randomize_(KANConv2d(2, 4, 3, padding=1, groups=2, norm="instance", prelu=True))
    layer = layer.double()
    with torch.no_grad():
        layer.prelu_weight.copy_(torch.tensor([0.1, 0.7], dtype=F64))  # type: ignore[union-attr]
    x = inputs(2 * 2 * 4 * 4, 1, -1.0, 1.0).reshape(2, 2, 4, 4)
    plain = copy.deepcopy(layer)
    plain.norm, plain.prelu_weight = "none", None
    z = plain(x)
    mean = z.mean(dim=(2, 3), keepdim=True)
    var = z.var(dim=(2, 3), unbiased=False, keepdim=True)
    z = (z - mean) / torch.sqrt(var + 1e-5)
    slope = torch.tensor([0.1, 0.1, 0.7, 0.7], dtype=F64).view(1, 4, 1, 1)
    expected = torch.where(z >= 0, z, slope * z)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


def test_conv_edge_index_resolves_groups() -> None:
    layer = ChebyKANConv2d(4, 6, 3, groups=2)
    index = layer.edge_index()
    assert index.shape == (6 * 2 * 3 * 3, 4)
    view = index.reshape(6, 2, 3, 3, 4)
    assert view[0, :, 0, 0, 1].tolist() == [0, 1]  # out 0 is in group 0: inputs 0, 1
    assert view[5, :, 0, 0, 1].tolist() == [2, 3]  # out 5 is in group 1: inputs 2, 3
    assert view[4, 1, 2, 1].tolist() == [4, 3, 2, 1]


def test_conv_rejects_bad_geometry_and_input() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        KANConv2d(3, 4, 3, groups=2)
    with pytest.raises(ConfigError, match="norm"):
        KANConv2d(2, 4, 3, norm="group")
    with pytest.raises(InputError, match=r"\(N, 2, H, W\)"):
        KANConv2d(2, 4, 3)(torch.zeros(1, 3, 5, 5))


# -- the edge-view contract, every family -------------------------------------

FACTORIES: dict[str, Callable[[], KANLayer]] = {
    "bspline": lambda: BSplineKANLayer(3, 2, grid_size=4),
    "bspline_nobase": lambda: BSplineKANLayer(3, 2, base_activation="zero"),
    "pykan": lambda: PyKANLayer(3, 2, grid_size=3),
    "rbf": lambda: RBFKANLayer(3, 2, grid_size=6),
    "chebyshev": lambda: ChebyKANLayer(3, 2, degree=3),
    "fourier": lambda: FourierKANLayer(3, 2, grid_size=3),
    "conv_bspline": lambda: KANConv2d(4, 2, 3, padding=1, groups=2),
    "conv_chebyshev": lambda: ChebyKANConv2d(2, 4, (3, 2), stride=2, degree=4),
    "gram": lambda: GramKANLayer(3, 2, degree=3),
    "legendre": lambda: LegendreKANLayer(3, 2, degree=2),
    "jacobi": lambda: JacobiKANLayer(3, 2, degree=3, a=0.5, b=2.0),
    "bernstein": lambda: BernsteinKANLayer(3, 2, degree=4),
    "conv_gram": lambda: GramKANConv2d(4, 2, 3, padding=1, groups=2, degree=2),
    "conv_legendre": lambda: LegendreKANConv2d(4, 2, 3, groups=2, degree=3),
    "conv_jacobi": lambda: JacobiKANConv2d(2, 4, (3, 2), stride=2, degree=2),
    "conv_bernstein": lambda: BernsteinKANConv2d(2, 2, 3, degree=3),
    "wavelet": lambda: WaveletKANLayer(3, 2, wavelet_type="morlet"),
    "conv_rbf": lambda: RBFKANConv2d(4, 2, 3, padding=1, groups=2, grid_size=4),
    "rational": lambda: GroupRationalKANLayer(4, 3, num_groups=2, shared_numerator=False),
    "rkan_jacobi": lambda: JacobiRKANLayer(3, 2, degree=4),
    "rkan_pade": lambda: PadeRKANLayer(3, 2, degree_p=3, degree_q=3),
    "conv_wavelet": lambda: WaveletKANConv2d(4, 2, (3, 2), padding=1, groups=2, norm="none"),
    "conv_gram_bottleneck": lambda: GramBottleneckKANConv2d(4, 6, 3, padding=1, groups=2),
    "gram_bottleneck": lambda: GramBottleneckKANLayer(5, 3, degree=2, inner_dim=4),
    "conv_relukan_bottleneck": lambda: ReLUBottleneckKANConv2d(
        4, 6, 3, padding=1, groups=2, grid_size=3, k=2
    ),
}


def make(name: str) -> tuple[KANLayer, torch.Tensor]:
    torch.manual_seed(0)
    layer = randomize_(FACTORIES[name]())
    layer.eval()
    if hasattr(layer, "in_channels"):
        x = torch.randn(2, layer.in_channels, 5, 6)
    else:
        x = torch.randn(5, layer.in_features)
    return layer, x


@pytest.fixture(params=sorted(FACTORIES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_edge_view_round_trip(family: str) -> None:
    layer, x = make(family)
    y0 = layer(x)
    view = layer.edge_view("layers.0")
    assert view.coefficients.shape == (layer.n_edges, layer.coef_dim)
    assert view.basis.coef_dim == layer.coef_dim and view.layer == "layers.0"
    saved = view.coefficients.clone()
    layer.set_edge_coefficients(torch.randn_like(saved))
    assert not torch.allclose(layer(x), y0)
    layer.set_edge_coefficients(saved)
    assert torch.equal(layer(x), y0)
    with pytest.raises(ValueError):
        layer.set_edge_coefficients(saved[:-1])


def test_functional_call_matches_set_edge_coefficients(family: str) -> None:
    layer, x = make(family)
    gen = torch.randn(layer.n_edges, layer.coef_dim, requires_grad=True)
    y = functional_call(layer, {"coef": layer.unflatten_coefficients(gen)}, (x,))
    y.square().sum().backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    other = copy.deepcopy(layer)
    other.set_edge_coefficients(gen.detach())
    torch.testing.assert_close(other(x), y.detach(), atol=1e-6, rtol=1e-6)


def test_config_rebuild_load_state_same_outputs(family: str) -> None:
    layer, x = make(family)
    spec = json.loads(json.dumps(module_config(layer)))
    rebuilt = build_module(spec)
    assert type(rebuilt) is type(layer)
    rebuilt.load_state_dict(layer.state_dict())
    rebuilt.eval()
    assert torch.equal(rebuilt(x), layer(x))


def test_edge_index_groups_and_functions(family: str) -> None:
    layer, _ = make(family)
    index = layer.edge_index()
    assert index.shape == (layer.n_edges, 4) and index.dtype == torch.long
    dims = layer.coef_shape[:-1]
    assert index[-1, 0] == dims[0] - 1
    groups, keys = layer.edge_groups()
    assert groups.shape == (layer.n_edges,) and len(keys) == int(groups.max()) + 1
    assert all(k.startswith(layer.basis().key()) for k in keys)
    f = layer.edge_functions(layer.edge_view().coefficients, n_points=17)
    assert f.shape == (layer.n_edges, 17) and torch.isfinite(f).all()
    if "wavelet" not in family:  # scale and shift are in a wavelet's vector, so not linear
        # Linear in the coefficients: the zero vector is the zero function.
        zero = layer.edge_functions(torch.zeros(2, layer.coef_dim), n_points=5)
        assert torch.equal(zero, torch.zeros(2, 5))


def test_float64_and_wrong_shapes(family: str) -> None:
    layer, x = make(family)
    assert layer.double()(x.double()).dtype == F64
    bad = x[..., :-1] if x.dim() == 2 else x[:, :-1]
    with pytest.raises(InputError):
        layer(bad)


def test_edge_functions_match_formulas() -> None:
    cheb = ChebyKANLayer(1, 1, degree=3)
    vec = torch.tensor([[0.5, -1.0, 0.25, 2.0]], dtype=F64)
    t = torch.linspace(-1, 1, 9, dtype=F64)
    expected = 0.5 - t + 0.25 * (2 * t**2 - 1) + 2.0 * (4 * t**3 - 3 * t)
    torch.testing.assert_close(cheb.edge_functions(vec, 9)[0], expected)
    four = FourierKANLayer(1, 1, grid_size=2)
    vec = torch.tensor([[1.0, 0.0, 0.0, -2.0]], dtype=F64)
    xs = torch.linspace(-math.pi, math.pi, 7, dtype=F64)
    torch.testing.assert_close(
        four.edge_functions(vec, 7)[0], torch.cos(xs) - 2 * torch.sin(2 * xs)
    )
    rbf = RBFKANLayer(1, 1, grid_size=3, grid_range=(-1.0, 1.0), use_base_update=False)
    vec = torch.tensor([[0.0, 1.0, 0.0]], dtype=F64)
    u = torch.linspace(-1, 1, 5, dtype=F64)
    torch.testing.assert_close(rbf.edge_functions(vec, 5)[0], torch.exp(-(u**2)))
    conv = KANConv2d(1, 1, 1, norm="none", prelu=False, base_activation="silu")
    single = BSplineKANLayer(1, 1)
    with torch.no_grad():
        single.coef.copy_(conv.coef.reshape(1, 1, -1))
    torch.testing.assert_close(
        conv.edge_functions(conv.edge_view().coefficients, 9),
        single.edge_functions(single.edge_view().coefficients, 9),
    )
