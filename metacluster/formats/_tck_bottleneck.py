"""torch-conv-kan's `BottleNeckKAGNConv2DLayer`, read and written for its format.

Per layer prefix p (g groups, I' = I/g, O' = O/g, D inner channels, degree n):
`poly_weights` (g, D, D(n+1), kh, kw) with channel k·D + i (Gram degree-major),
`beta_weights` (n+1,), `base_conv.{j}.weight` (O', I', kh, kw), `inner_proj.{j}.weight`
(D, I', 1, 1), `out_proj.{j}.weight` (O', D, 1, 1). Its InstanceNorm2d has no tensors
(an affine one would, and is refused as not understood).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import _tck_conv, _tck_poly
from metacluster.formats._registry import KeyTracker, float_dtype
from metacluster.kan.bottleneck import GramBottleneckKANConv2d

MARKER = "inner_proj.0.weight"
LAYOUT = (("poly_weights", 5), ("inner_proj.0.weight", 4), ("out_proj.0.weight", 4))


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
