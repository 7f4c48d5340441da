"""build_kan for every family, glue modules in JSON specs, and the public surface of metacluster.kan."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import metacluster.kan as kan_pkg
from metacluster.errors import ConfigError, InputError
from metacluster.kan import (
    MODULE_TYPES,
    Affine,
    KANConv2d,
    KANModel,
    Linear,
    Reshape,
    build_kan,
    build_module,
    family_names,
    get_family,
    module_config,
)

DENSE = [
    "bspline",
    "pykan_bspline",
    "rbf",
    "chebyshev",
    "fourier",
    "gram",
    "legendre",
    "jacobi",
    "bernstein",
    "wavelet",
    "rational",
    "rkan_jacobi",
    "rkan_pade",
    "gram_bottleneck",
]
CONV = [
    "conv_bspline",
    "conv_chebyshev",
    "conv_gram",
    "conv_legendre",
    "conv_jacobi",
    "conv_bernstein",
    "conv_rbf",
    "conv_wavelet",
    "conv_gram_bottleneck",
    "conv_relukan_bottleneck",
]


def test_families_listed() -> None:
    assert sorted(DENSE + CONV) == family_names()
    assert family_names("conv") == sorted(CONV)
    assert all(get_family(name).kind == "dense" for name in DENSE)


def test_a_registered_family_is_built_without_touching_build() -> None:
    """Adding a family is one decorated class: build_kan and the kind come from the registry."""
    from metacluster.kan import ChebyKANLayer, register_family

    @register_family("test_cheby_copy", kind="dense", train_defaults={"degree": 2})
    class CopyLayer(ChebyKANLayer):
        pass

    try:
        model = build_kan("test_cheby_copy", [3, 2], degree=2)
        assert isinstance(model.layers[0], CopyLayer)
        assert get_family("test_cheby_copy").train_defaults == {"degree": 2}
        assert "test_cheby_copy" in family_names("dense")
    finally:
        from metacluster.kan import families
        from metacluster.kan import model as model_mod

        families._FAMILIES._items.pop("test_cheby_copy")
        model_mod.MODULE_TYPES.pop("test_cheby_copy")


@pytest.mark.parametrize("family", DENSE)
def test_dense_build_forward_rebuild(family: str) -> None:
    torch.manual_seed(0)
    model = build_kan(family, [6, 5, 3])
    x = torch.randn(4, 6)
    y = model(x)
    assert y.shape == (4, 3) and torch.isfinite(y).all()
    layers = list(model.kan_layers())
    assert [(layer.in_features, layer.out_features) for _, layer in layers] == [(6, 5), (5, 3)]
    if family == "gram_bottleneck":  # the inner KAN's edges: widths min(16, I, O)
        assert model.n_edges() == 5 * 5 + 3 * 3
    else:
        assert model.n_edges() == 6 * 5 + 5 * 3
    assert model.meta["family"] == family
    spec = json.loads(json.dumps(model.config()))
    rebuilt = KANModel.from_config(spec)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(x), y)
    y.sum().backward()
    assert all(p.grad is not None for _, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("family", DENSE + CONV)
def test_build_is_seedable(family: str) -> None:
    opts = {"input_shape": (1, 6, 6), "channels": [3]} if family in CONV else {}
    torch.manual_seed(7)
    a = build_kan(family, [36, 4], **opts)
    torch.manual_seed(7)
    b = build_kan(family, [36, 4], **opts)
    torch.manual_seed(8)
    c = build_kan(family, [36, 4], **opts)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_dense_options_reach_layers_and_input_shape_flattens() -> None:
    model = build_kan("bspline", [16, 3], grid_size=7, spline_order=2, input_shape=(1, 4, 4))
    assert module_config(model.layers[0]) == {"type": "flatten", "start_dim": 1, "end_dim": -1}
    layer = model.layers[1]
    assert layer.coef.shape == (3, 16, 7 + 2 + 1)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(ConfigError, match="flattens to 16"):
        build_kan("bspline", [15, 3], input_shape=(1, 4, 4))


@pytest.mark.parametrize("family", CONV)
def test_conv_classifier(family: str) -> None:
    torch.manual_seed(0)
    model = build_kan(family, [64, 10], input_shape=(1, 8, 8), channels=[4, 6])
    names = [module_config(m)["type"] for m in model.layers]
    assert names == [
        "reshape",
        family,
        "maxpool2d",
        family,
        "maxpool2d",
        "global_avg_pool",
        "linear",
    ]
    assert model.meta["widths"] == [10]  # a dense-style list drops its input size
    flat, image = torch.randn(3, 64), torch.randn(3, 1, 8, 8)
    assert model(flat).shape == (3, 10) and model(image).shape == (3, 10)
    views = model.edge_views()
    kk = 1 if family == "conv_wavelet" else 9  # a wavelet conv edge holds its kernel
    if family in ("conv_gram_bottleneck", "conv_relukan_bottleneck"):  # the inner conv's
        # edges: widths min(16, I, O)
        assert [v.n_edges for v in views] == [1 * 1 * 9, 4 * 4 * 9]
    else:
        assert [v.n_edges for v in views] == [4 * 1 * kk, 6 * 4 * kk]
    rebuilt = KANModel.from_config(json.loads(json.dumps(model.config())))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(flat), model(flat))
    head = build_kan(family, [32, 10], input_shape=(8, 8), channels=[2])
    assert [type(m).__name__ for m in head.layers[-3:]] == ["Linear", "SiLU", "Linear"]


def test_conv_options_reach_layers() -> None:
    model = build_kan(
        "conv_bspline", [5], input_shape=(2, 6, 6), channels=[4], grid_size=3, norm="none"
    )
    conv = model.layers[1]
    assert isinstance(conv, KANConv2d)
    assert conv.coef.shape == (4, 2, 3, 3, 3 + 3 + 1) and conv.norm == "none"


def test_build_errors() -> None:
    with pytest.raises(ConfigError, match="unknown KAN family"):
        build_kan("mlp", [3, 2])
    with pytest.raises(ConfigError, match="widths"):
        build_kan("bspline", [3])
    with pytest.raises(ConfigError, match="widths"):
        build_kan("bspline", [3, 0])
    with pytest.raises(ConfigError, match="bad option"):
        build_kan("chebyshev", [3, 2], grid_size=4)
    with pytest.raises(ConfigError, match="input_shape"):
        build_kan("conv_bspline", [10])
    with pytest.raises(ConfigError, match="kernel_size"):
        build_kan("conv_chebyshev", [10], input_shape=(1, 8, 8), kernel_size=2)


def test_glue_modules_round_trip_through_json() -> None:
    torch.manual_seed(0)
    specs: list[dict[str, Any]] = [
        {"type": "reshape", "shape": [2, 4, 4]},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "avgpool2d", "kernel_size": [1, 2], "stride": 1},
        {"type": "global_avg_pool"},
        {"type": "layernorm", "normalized_shape": 2},
        {"type": "affine", "features": 2},
        {"type": "silu"},
        {"type": "linear", "in_features": 2, "out_features": 3},
        {"type": "flatten"},
    ]
    model = KANModel([build_module(s) for s in specs])
    with torch.no_grad():
        affine = model.layers[5]
        assert isinstance(affine, Affine)
        affine.scale.copy_(torch.tensor([2.0, -1.0]))
    x = torch.randn(3, 32)
    y = model(x)
    assert y.shape == (3, 3)
    rebuilt = KANModel.from_config(json.loads(json.dumps(model.config())))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(x), y)
    assert model.kan_layers is not None and model.n_edges() == 0
    for name in ["layernorm", "flatten", "affine", "maxpool2d", "avgpool2d", "global_avg_pool"]:
        assert name in MODULE_TYPES
    for name in ["linear", "silu", "reshape", *family_names()]:
        assert name in MODULE_TYPES


def test_glue_modules_reject_bad_input() -> None:
    with pytest.raises(InputError):
        Reshape([2, 4])(torch.randn(3, 9))
    with pytest.raises(InputError):
        Linear(4, 2)(torch.randn(3, 5))
    with pytest.raises(InputError):
        build_module({"type": "global_avg_pool"})(torch.randn(3, 5))


def test_public_surface() -> None:
    for name in kan_pkg.__all__:
        assert hasattr(kan_pkg, name), name
    assert {"build_kan", "KANModel", "KANLayer", "BSplineKANLayer", "EdgeView"} <= set(
        kan_pkg.__all__
    )
