"""torch-conv-kan's Gram bottleneck layers, read and written for its format.

`BottleNeckKAGNConv2DLayer`:
Per layer prefix p (g groups, I' = I/g, O' = O/g, D inner channels, degree n):
`poly_weights` (g, D, D(n+1), kh, kw) with channel k·D + i (Gram degree-major),
`beta_weights` (n+1,), `base_conv.{j}.weight` (O', I', kh, kw), `inner_proj.{j}.weight`
(D, I', 1, 1), `out_proj.{j}.weight` (O', D, 1, 1). Its InstanceNorm2d has no tensors
(an affine one would, and is refused as not understood).

`BottleNeckGRAMLayer` (dense, `kans/layers.py`), per layer prefix p (I inputs, O outputs,
D inner features, degree n): `grams_basis_weights` (D, D, n+1) indexed (inner in, inner
out, k), `beta_weights` (n+1,), `base_weights` (O, I), `inner_proj.weight` (D, I) and
`.bias` (D,), `outer_proj.weight` (O, D) and `.bias` (O,), `norm.weight` / `.bias` (O,)
(its LayerNorm, then a SiLU: glue modules after our layer).

`BottleNeckReLUKANConv2DLayer` (g groups, D inner channels, L = G + k ReLU-KAN phases):
`relukan_conv.{j}.weight` (D, D·L, kh, kw), channel i·L + c; `phase_low`, `phase_high`
(1, D, L, 1, 1), shared by the groups; `base_conv.{j}.weight`, `inner_proj.{j}.weight`,
`out_proj.{j}.weight` as the KAGN bottleneck's. G and k are not in the tensors (only
their sum): config.json's "g" and "k", default upstream's 5 and 3.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import _tck_conv, _tck_poly
from metacluster.formats._registry import KeyTracker, float_dtype, layernorm_from
from metacluster.kan import SiLU
from metacluster.kan.bottleneck import (
    GramBottleneckKANConv2d,
    GramBottleneckKANLayer,
    ReLUBottleneckKANConv2d,
)

MARKER = "inner_proj.0.weight"
LAYOUT = (("poly_weights", 5), ("inner_proj.0.weight", 4), ("out_proj.0.weight", 4))
DENSE_MARKER = "inner_proj.weight"
DENSE_LAYOUT = (
    ("grams_basis_weights", 3),
    ("inner_proj.weight", 2),
    ("outer_proj.weight", 2),
    ("norm.weight", 1),
)


def is_bottleneck(tensors: dict[str, Tensor], p: str) -> bool:
    poly = tensors.get(p + "poly_weights")
    return (
        poly is not None
        and poly.dim() == 5
        and p + MARKER in tensors
        and p + "out_proj.0.weight" in tensors
    )


def load(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    poly = keys.get(p + "poly_weights", 5)
    beta = keys.get(p + "beta_weights", 1)
    bases = keys.numbered(p, "base_conv", 4)
    inners = keys.numbered(p, "inner_proj", 4)
    outs = keys.numbered(p, "out_proj", 4)
    groups, d, channels, kh, kw = (int(v) for v in poly.shape)
    n_poly = int(beta.shape[0])
    if not bases or not len(bases) == len(inners) == len(outs) == groups:
        raise FormatError(
            f"{p}: {len(bases)} base_conv, {len(inners)} inner_proj and {len(outs)} out_proj "
            f"convs, but poly_weights has {groups} group(s)"
        )
    if channels != d * n_poly:
        raise FormatError(
            f"{p}poly_weights has shape {tuple(poly.shape)}, expected ({groups}, {d}, "
            f"{d}*{n_poly}, {kh}, {kw}) from {p}beta_weights (degree {n_poly - 1})"
        )
    out_g, in_g = (int(v) for v in bases[0].shape[:2])
    expected = {
        "base_conv": (bases, (out_g, in_g, kh, kw)),
        "inner_proj": (inners, (d, in_g, 1, 1)),
        "out_proj": (outs, (out_g, d, 1, 1)),
    }
    for name, (tensors, shape) in expected.items():
        for j, t in enumerate(tensors):
            if tuple(t.shape) != shape:
                raise FormatError(
                    f"{p}{name}.{j}.weight has shape {tuple(t.shape)}, expected {shape} from "
                    f"{p}poly_weights {tuple(poly.shape)} and {p}base_conv.0.weight"
                )
    _tck_poly.declared(opts, "degree", n_poly - 1, f"{p}beta_weights")
    _tck_poly.declared(opts, "groups", groups, f"{p}poly_weights")
    layer = GramBottleneckKANConv2d(
        in_g * groups,
        out_g * groups,
        (kh, kw),
        degree=n_poly - 1,
        inner_dim=d,
        **_tck_conv.geometry(opts, groups),
    )
    layer.to(float_dtype(poly, *bases))
    # (g, D, (n+1)·D, kh, kw), channel k·D + i  ->  (g·D, D, kh, kw, n+1)
    coef = poly.reshape(groups * d, n_poly, d, kh, kw).permute(0, 2, 3, 4, 1)
    layer.set_edge_coefficients(coef.reshape(-1, n_poly))
    with torch.no_grad():
        layer.beta.copy_(beta)
        layer.base_weight.copy_(torch.cat(bases))
        layer.inner_proj.copy_(torch.stack([t.reshape(d, in_g) for t in inners]))
        layer.out_proj.copy_(torch.stack([t.reshape(out_g, d) for t in outs]))
    return [layer]


def export(
    layer: GramBottleneckKANConv2d, pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    if layer.norm != "instance":
        raise IncompatibleError(f"layer {pos}: BottleNeckKAGNConv2DLayer has an InstanceNorm2d")
    g, d, n_poly = layer.groups, layer.inner_dim, layer.degree + 1
    out_g, in_g = layer.out_channels // g, layer.in_channels // g
    kh, kw = layer.kernel_size
    coef = layer.coef.detach().permute(0, 4, 1, 2, 3)  # (g·D, n+1, D, kh, kw)
    state[prefix + "poly_weights"] = coef.reshape(g, d, n_poly * d, kh, kw).contiguous()
    state[prefix + "beta_weights"] = layer.beta.detach().clone()
    for j in range(g):
        base = layer.base_weight.detach()[j * out_g : (j + 1) * out_g]
        state[f"{prefix}base_conv.{j}.weight"] = base.contiguous()
        inner = layer.inner_proj.detach()[j].reshape(d, in_g, 1, 1)
        state[f"{prefix}inner_proj.{j}.weight"] = inner.contiguous()
        state[f"{prefix}out_proj.{j}.weight"] = layer.out_proj.detach()[j].reshape(out_g, d, 1, 1)
    return {
        "layer_class": "BottleNeckKAGNConv2DLayer",
        **_tck_conv.entry_shape(layer),
        "degree": layer.degree,
        "inner_dim": d,
        **_tck_conv.entry_geometry(layer),
    }


def is_dense_bottleneck(tensors: dict[str, Tensor], p: str) -> bool:
    """A BottleNeckGRAMLayer: GRAMLayer's `grams_basis_weights` with the two projections
    (it overrides the plain dense Gram detection)."""
    return all(p + leaf in tensors for leaf, _ in DENSE_LAYOUT)


def load_dense(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    """[layer, LayerNorm, SiLU] of one BottleNeckGRAMLayer."""
    coef = keys.get(p + "grams_basis_weights", 3)
    beta = keys.get(p + "beta_weights", 1)
    base = keys.get(p + "base_weights", 2)
    inner_w, inner_b = keys.get(p + "inner_proj.weight", 2), keys.get(p + "inner_proj.bias", 1)
    outer_w, outer_b = keys.get(p + "outer_proj.weight", 2), keys.get(p + "outer_proj.bias", 1)
    norm_w, norm_b = keys.get(p + "norm.weight", 1), keys.get(p + "norm.bias", 1)
    n_out, n_in = (int(v) for v in base.shape)
    d, n_poly = int(inner_w.shape[0]), int(beta.shape[0])
    expected = {
        "grams_basis_weights": (coef, (d, d, n_poly)),
        "inner_proj.weight": (inner_w, (d, n_in)),
        "inner_proj.bias": (inner_b, (d,)),
        "outer_proj.weight": (outer_w, (n_out, d)),
        "outer_proj.bias": (outer_b, (n_out,)),
        "norm.weight": (norm_w, (n_out,)),
        "norm.bias": (norm_b, (n_out,)),
    }
    for leaf, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise FormatError(
                f"{p}{leaf} has shape {tuple(tensor.shape)}, expected {shape} from "
                f"{p}base_weights {tuple(base.shape)}, {p}inner_proj.weight "
                f"{tuple(inner_w.shape)} and {p}beta_weights (degree {n_poly - 1})"
            )
    _tck_poly.declared(opts, "degree", n_poly - 1, f"{p}beta_weights")
    layer = GramBottleneckKANLayer(n_in, n_out, degree=n_poly - 1, inner_dim=d)
    layer.to(float_dtype(coef, base, inner_w, outer_w))
    # (inner in, inner out, k) -> (inner out, inner in, k)
    layer.set_edge_coefficients(coef.transpose(0, 1).reshape(-1, n_poly))
    with torch.no_grad():
        layer.beta.copy_(beta)
        layer.base_weight.copy_(base)
        layer.inner_weight.copy_(inner_w)
        layer.inner_bias.copy_(inner_b)
        layer.outer_weight.copy_(outer_w)
        layer.outer_bias.copy_(outer_b)
    return [layer, layernorm_from(norm_w, norm_b), SiLU()]


def export_dense(
    modules: list[nn.Module], pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    """Write the BottleNeckGRAMLayer modules[pos] (and its LayerNorm) under `prefix`."""
    layer = modules[pos]
    assert isinstance(layer, GramBottleneckKANLayer)
    follow = modules[pos + 1 : pos + 3]
    if not (
        len(follow) == 2 and isinstance(follow[0], nn.LayerNorm) and isinstance(follow[1], SiLU)
    ):
        raise IncompatibleError(
            f"layer {pos}: a BottleNeckGRAMLayer is followed by LayerNorm and SiLU"
        )
    norm = follow[0]
    state[prefix + "inner_proj.weight"] = layer.inner_weight.detach().clone()
    state[prefix + "inner_proj.bias"] = layer.inner_bias.detach().clone()
    state[prefix + "outer_proj.weight"] = layer.outer_weight.detach().clone()
    state[prefix + "outer_proj.bias"] = layer.outer_bias.detach().clone()
    state[prefix + "norm.weight"] = norm.weight.detach().clone()
    state[prefix + "norm.bias"] = norm.bias.detach().clone()
    state[prefix + "beta_weights"] = layer.beta.detach().clone()
    state[prefix + "grams_basis_weights"] = layer.coef.detach().transpose(0, 1).contiguous()
    state[prefix + "base_weights"] = layer.base_weight.detach().clone()
    return {
        "layer_class": "BottleNeckGRAMLayer",
        "input_dim": layer.in_features,
        "output_dim": layer.out_features,
        "degree": layer.degree,
        "inner_dim": layer.inner_dim,
    }


RELU_MARKER = "relukan_conv.0.weight"
RELU_LAYOUT = (
    ("relukan_conv.0.weight", 4),
    ("phase_low", 5),
    ("inner_proj.0.weight", 4),
    ("out_proj.0.weight", 4),
)


def is_relu_bottleneck(tensors: dict[str, Tensor], p: str) -> bool:
    return all(p + leaf in tensors for leaf, _ in RELU_LAYOUT)


def _grid_and_k(opts: dict[str, Any], p: str, n_basis: int) -> tuple[int, int]:
    """ReLU-KAN's (g, k): not in the tensors (only g + k is), so from config.json,
    default upstream's 5 and 3."""
    g, k = opts.get("g"), opts.get("k")
    g = 5 if g is None else g
    k = 3 if k is None else k
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (g, k)) or not (
        1 <= g <= 1024 and 0 <= k <= 64
    ):
        raise FormatError(f"config.json ({p}): g must be an integer >= 1 and k >= 0")
    if g + k != n_basis:
        raise FormatError(
            f"{p}phase_low has {n_basis} phases per channel, but g {g} + k {k} = {g + k} "
            '(name the layer\'s "g" and "k" in config.json)'
        )
    return g, k


def load_relu(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    """One BottleNeckReLUKANConv2DLayer (its InstanceNorm2d and SiLU inside)."""
    convs = keys.numbered(p, "relukan_conv", 4)
    low, high = keys.get(p + "phase_low", 5), keys.get(p + "phase_high", 5)
    bases = keys.numbered(p, "base_conv", 4)
    inners = keys.numbered(p, "inner_proj", 4)
    outs = keys.numbered(p, "out_proj", 4)
    groups = len(convs)
    if not len(bases) == len(inners) == len(outs) == groups:
        raise FormatError(
            f"{p}: {len(bases)} base_conv, {len(inners)} inner_proj and {len(outs)} out_proj "
            f"convs, but {groups} relukan_conv group(s)"
        )
    d, n_basis = int(low.shape[1]), int(low.shape[2])
    if tuple(low.shape) != (1, d, n_basis, 1, 1) or tuple(high.shape) != tuple(low.shape):
        raise FormatError(
            f"{p}phase_low {tuple(low.shape)} and phase_high {tuple(high.shape)} must both "
            "be (1, D, g+k, 1, 1)"
        )
    g, k = _grid_and_k(opts, p, n_basis)
    out_g, in_g, kh, kw = (int(v) for v in bases[0].shape)
    expected = {
        "relukan_conv": (convs, (d, d * n_basis, kh, kw)),
        "base_conv": (bases, (out_g, in_g, kh, kw)),
        "inner_proj": (inners, (d, in_g, 1, 1)),
        "out_proj": (outs, (out_g, d, 1, 1)),
    }
    for name, (tensors, shape) in expected.items():
        for j, t in enumerate(tensors):
            if tuple(t.shape) != shape:
                raise FormatError(
                    f"{p}{name}.{j}.weight has shape {tuple(t.shape)}, expected {shape} from "
                    f"{p}phase_low {tuple(low.shape)} and {p}base_conv.0.weight"
                )
    _tck_poly.declared(opts, "groups", groups, f"{p}relukan_conv")
    layer = ReLUBottleneckKANConv2d(
        in_g * groups,
        out_g * groups,
        (kh, kw),
        grid_size=g,
        k=k,
        inner_dim=d,
        **_tck_conv.geometry(opts, groups),
    )
    layer.to(float_dtype(*convs, *bases))
    # (D, L·D, kh, kw), channel i·L + c, per group  ->  (g·D, D, kh, kw, L)
    coef = torch.cat([c.reshape(d, d, n_basis, kh, kw) for c in convs]).permute(0, 1, 3, 4, 2)
    layer.set_edge_coefficients(coef.reshape(-1, n_basis))
    with torch.no_grad():
        layer.phase_low.copy_(low.reshape(d, n_basis))
        layer.phase_high.copy_(high.reshape(d, n_basis))
        layer.base_weight.copy_(torch.cat(bases))
        layer.inner_proj.copy_(torch.stack([t.reshape(d, in_g) for t in inners]))
        layer.out_proj.copy_(torch.stack([t.reshape(out_g, d) for t in outs]))
    return [layer]


def export_relu(
    layer: ReLUBottleneckKANConv2d, pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    if layer.norm != "instance":
        raise IncompatibleError(f"layer {pos}: BottleNeckReLUKANConv2DLayer has an InstanceNorm2d")
    g, d, n_basis = layer.groups, layer.inner_dim, layer.grid_size + layer.k
    out_g, in_g = layer.out_channels // g, layer.in_channels // g
    kh, kw = layer.kernel_size
    coef = layer.coef.detach().permute(0, 1, 4, 2, 3)  # (g·D, D, L, kh, kw)
    for j in range(g):
        block = coef[j * d : (j + 1) * d].reshape(d, d * n_basis, kh, kw)
        state[f"{prefix}base_conv.{j}.weight"] = layer.base_weight.detach()[
            j * out_g : (j + 1) * out_g
        ].contiguous()
        state[f"{prefix}relukan_conv.{j}.weight"] = block.contiguous()
        inner = layer.inner_proj.detach()[j].reshape(d, in_g, 1, 1)
        state[f"{prefix}inner_proj.{j}.weight"] = inner.contiguous()
        state[f"{prefix}out_proj.{j}.weight"] = layer.out_proj.detach()[j].reshape(out_g, d, 1, 1)
    state[prefix + "phase_low"] = layer.phase_low.detach().reshape(1, d, n_basis, 1, 1).clone()
    state[prefix + "phase_high"] = layer.phase_high.detach().reshape(1, d, n_basis, 1, 1).clone()
    return {
        "layer_class": "BottleNeckReLUKANConv2DLayer",
        **_tck_conv.entry_shape(layer),
        "g": layer.grid_size,
        "k": layer.k,
        "inner_dim": d,
        **_tck_conv.entry_geometry(layer),
    }
