"""torchkan (1ssb/torchkan; the PyPI wheel TorchKAN 0.1.1 is empty): its `KAN` and
`KAL_Net` models, each one module holding every layer in ParameterLists.

- `KAN`: `base_weights.{i}` (O, I), `spline_weights.{i}` (O, I, G+k), buffer `grid_{i}`
  (I, G+2k+1), `layer_norms.{i}.*`, `prelus.{i}.weight`; per layer
  `prelu(LayerNorm(gelu(x) W_b + splines))`: a GELU-based `BSplineKANLayer`, then
  LayerNorm and PReLU glue.
- `KAL_Net`: `base_weights.{i}`, `poly_weights.{i}` (O, I(D+1)), column i(D+1) + d,
  `layer_norms.{i}.*`; per layer `silu(LayerNorm(...))` of torch-conv-kan's KALNLayer
  arithmetic (Legendre of the batch's min/max-normalised input, SiLU base): a
  `LegendreKANLayer`, then LayerNorm and SiLU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    float_dtype,
    layernorm_from,
    layers_of,
    register,
)
from metacluster.formats.efficient_kan import bspline_shape, knot_range
from metacluster.kan import BSplineKANLayer, KANModel, LayerNorm, LegendreKANLayer, PReLU, SiLU
from metacluster.kan.polynomial import _PolyKANLayer


def _count(ckpt: Checkpoint) -> int:
    n = 0
    while f"base_weights.{n}" in ckpt.tensors:
        n += 1
    return n


def _norm(keys: KeyTracker, i: int, n_out: int) -> LayerNorm:
    weight, bias = keys.get(f"layer_norms.{i}.weight", 1), keys.get(f"layer_norms.{i}.bias", 1)
    if weight.shape[0] != n_out or bias.shape[0] != n_out:
        raise FormatError(f"layer_norms.{i}.weight does not have layer {i}'s {n_out} outputs")
    return layernorm_from(weight, bias)


class TorchKANFormat(FormatHandler):
    name = "torchkan"
    layouts = (
        (("base_weights.0", 2), ("spline_weights.0", 3), ("grid_0", 2)),
        (("base_weights.0", 2), ("poly_weights.0", 2)),
    )

    def matches(self, ckpt: Checkpoint) -> bool:
        t = ckpt.tensors
        return "base_weights.0" in t and ("poly_weights.0" in t or "spline_weights.0" in t)

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        legendre = "poly_weights.0" in ckpt.tensors
        layers: list[nn.Module] = []
        for i in range(_count(ckpt)):
            base = keys.get(f"base_weights.{i}", 2)
            n_out = int(base.shape[0])
            if legendre:
                layers += [_legendre(keys, i, base), _norm(keys, i, n_out), SiLU()]
            else:
                prelu = PReLU(1)
                with torch.no_grad():
                    prelu.weight.copy_(keys.get(f"prelus.{i}.weight", 1))
                layers += [_bspline(keys, i, base), _norm(keys, i, n_out), prelu]
        return self.assemble(keys, layers, "legendre" if legendre else "bspline")

    def export(self, model: KANModel, path: Path) -> list[Path]:
        modules = layers_of(
            model, self.name, (BSplineKANLayer, LegendreKANLayer, nn.LayerNorm, PReLU, SiLU)
        )
        state: dict[str, Tensor] = {}
        if len(modules) % 3:
            raise IncompatibleError(
                "torchkan models are (KAN layer, LayerNorm, PReLU or SiLU) triples"
            )
        for i in range(len(modules) // 3):
            layer, norm, act = modules[3 * i : 3 * i + 3]
            fits = isinstance(norm, nn.LayerNorm) and (
                (
                    type(layer) is BSplineKANLayer
                    and isinstance(act, PReLU)
                    and layer.base_activation == "gelu"
                )
                or (
                    isinstance(layer, LegendreKANLayer)
                    and isinstance(act, SiLU)
                    and layer.base_activation == "silu"
                )
            )
            if not fits:
                raise IncompatibleError(
                    f"layer {3 * i}: torchkan holds KAN (GELU B-spline, LayerNorm, PReLU) or "
                    "KAL_Net (Legendre, LayerNorm, SiLU) layers"
                )
            assert isinstance(norm, nn.LayerNorm) and isinstance(
                layer, (BSplineKANLayer, LegendreKANLayer)
            )
            coef = layer.coef.detach()
            state[f"base_weights.{i}"] = coef[..., -1].clone()
            if isinstance(layer, BSplineKANLayer):
                assert isinstance(act, PReLU)
                state[f"spline_weights.{i}"] = coef[..., :-1].contiguous()
                state[f"grid_{i}"] = layer.grid.detach().clone()
                state[f"prelus.{i}.weight"] = act.weight.detach().clone()
            else:
                state[f"poly_weights.{i}"] = coef[..., :-1].reshape(layer.out_features, -1).clone()
            state[f"layer_norms.{i}.weight"] = norm.weight.detach().clone()
            state[f"layer_norms.{i}.bias"] = norm.bias.detach().clone()
        save_torch_state(state, path)
        return [path]


def _legendre(keys: KeyTracker, i: int, base: Tensor) -> _PolyKANLayer:
    n_out, n_in = (int(v) for v in base.shape)
    poly = keys.get(f"poly_weights.{i}", 2)
    n_poly, rem = divmod(int(poly.shape[1]), n_in)
    if poly.shape[0] != n_out or rem or n_poly < 1:
        raise FormatError(
            f"poly_weights.{i} has shape {tuple(poly.shape)}, which does not fit "
            f"base_weights.{i} {tuple(base.shape)} (expected ({n_out}, {n_in}*(degree+1)))"
        )
    layer = LegendreKANLayer(n_in, n_out, degree=n_poly - 1)
    layer.to(float_dtype(poly, base))
    edges = torch.cat([poly.reshape(n_out, n_in, n_poly), base.unsqueeze(-1)], dim=-1)
    layer.set_edge_coefficients(edges.reshape(-1, n_poly + 1))
    return layer


def _bspline(keys: KeyTracker, i: int, base: Tensor) -> BSplineKANLayer:
    n_out, n_in = (int(v) for v in base.shape)
    spline = keys.get(f"spline_weights.{i}", 3)
    grid = keys.get(f"grid_{i}", 2)
    if tuple(spline.shape[:2]) != (n_out, n_in) or grid.shape[0] != n_in:
        raise FormatError(
            f"spline_weights.{i} {tuple(spline.shape)} and grid_{i} {tuple(grid.shape)} do "
            f"not fit base_weights.{i} {tuple(base.shape)}"
        )
    grid_size, order = bspline_shape(
        int(spline.shape[2]), int(grid.shape[1]), f"spline_weights.{i}"
    )
    layer = BSplineKANLayer(
        n_in,
        n_out,
        grid_size=grid_size,
        spline_order=order,
        grid_range=knot_range(grid, order),
        base_activation="gelu",
    )
    layer.to(float_dtype(spline, base))
    layer.set_grid(grid.to(layer.grid.dtype))
    layer.set_edge_coefficients(
        torch.cat([spline, base.unsqueeze(-1)], dim=-1).reshape(-1, spline.shape[2] + 1)
    )
    return layer


register(TorchKANFormat())
