"""efficient-kan (Blealtan) checkpoints: `layers.{l}.base_weight/spline_weight/grid`.

Imports into `BSplineKANLayer` (spline_weight * spline_scaler and base_weight
folded into one vector per edge) and exports back as a plain state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint, module_order, module_prefixes
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    float_dtype,
    layers_of,
    register,
)
from metacluster.kan import Affine, BSplineKANLayer, KANModel, PyKANLayer


def bspline_shape(spline_width: int, grid_width: int, where: str) -> tuple[int, int]:
    """(G, k) from the coefficient count G+k and the knot count G+2k+1."""
    order = grid_width - spline_width - 1
    grid_size = spline_width - order
    if order < 0 or grid_size < 1:
        raise FormatError(
            f"{where}: {spline_width} spline coefficients do not fit {grid_width} knots"
        )
    return grid_size, order


def knot_range(grid: torch.Tensor, order: int) -> tuple[float, float]:
    """The un-extended grid range of the first input's knots."""
    return float(grid[0, order]), float(grid[0, grid.shape[1] - order - 1])


class EfficientKANFormat(FormatHandler):
    name = "efficient-kan"
    layouts = (
        (("spline_weight", 3), ("base_weight", 2), ("grid", 2)),
        (("coeff", 3), ("scale_base", 2), ("grid", 2)),
    )

    def _modules(self, ckpt: Checkpoint) -> list[tuple[str, str]]:
        """(variant, prefix) of every KANLinear in forward order: efficient-kan's own
        keys, or LKAN's (`coeff`, `scale_base`, `scale_spline`, optional `bias`)."""
        t = ckpt.tensors
        found = {
            p: "efficient-kan"
            for p in module_prefixes(ckpt, "spline_weight")
            if t[p + "spline_weight"].dim() == 3 and p + "base_weight" in t and p + "grid" in t
        }
        found |= {
            p: "lkan"
            for p in module_prefixes(ckpt, "coeff")
            if t[p + "coeff"].dim() == 3 and p + "scale_base" in t and p + "grid" in t
        }
        return [(found[p], p) for p in module_order(ckpt, list(found))]

    def matches(self, ckpt: Checkpoint) -> bool:
        return ckpt.pykan_config is None and bool(self._modules(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[nn.Module] = []
        base_act = str(ckpt.options.get("base_activation", "silu"))
        for variant, p in self._modules(ckpt):
            if variant == "lkan":
                spline, base = keys.get(p + "coeff", 3), keys.get(p + "scale_base", 2)
                scaler = keys.optional(p + "scale_spline")
                bias = keys.optional(p + "bias")
            else:
                spline, base = keys.get(p + "spline_weight", 3), keys.get(p + "base_weight", 2)
                scaler = keys.optional(p + "spline_scaler")
                bias = None
            grid = keys.get(p + "grid", 2)
            n_out, n_in, width = spline.shape
            if tuple(base.shape) != (n_out, n_in) or grid.shape[0] != n_in:
                raise FormatError(f"{p}*: base weight / grid shapes do not match the spline weight")
            grid_size, order = bspline_shape(width, grid.shape[1], p.rstrip(".") or "layer")
            layer = BSplineKANLayer(
                n_in, n_out, grid_size, order, knot_range(grid, order), base_act
            )
            layer.to(float_dtype(spline, base))
            # LKAN keeps scale_spline as a (1,) buffer when it is not learned.
            if scaler is None:
                scaled = spline
            elif tuple(scaler.shape) == (n_out, n_in):
                scaled = spline * scaler.unsqueeze(-1)
            elif scaler.numel() == 1:  # LKAN's fixed (1,) scale_spline buffer
                scaled = spline * scaler.reshape(())
            else:
                raise FormatError(f"{p}: spline scale of shape {tuple(scaler.shape)} does not fit")
            layer.set_grid(grid.to(layer.grid.dtype))
            layer.set_edge_coefficients(
                torch.cat([scaled, base.unsqueeze(-1)], dim=-1).reshape(-1, width + 1)
            )
            layers.append(layer)
            if bias is not None:
                layers.append(_bias_glue(bias))
        return self.assemble(keys, layers, "bspline")

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, torch.Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (BSplineKANLayer,))):
            assert isinstance(layer, BSplineKANLayer)
            if layer.base_activation != "silu":
                raise IncompatibleError(
                    f"layer {pos}: efficient-kan holds B-spline layers with a SiLU base only"
                )
            if isinstance(layer, PyKANLayer) and not _identity_affines(layer):
                raise IncompatibleError(
                    f"layer {pos}: pykan node/subnode scales and biases have no efficient-kan "
                    "equivalent (they are not identity)"
                )
            coef = layer.coef.detach()
            # efficient-kan's own layout; spline_scaler = 1 keeps the product exact.
            state[f"layers.{pos}.base_weight"] = coef[..., -1].clone()
            state[f"layers.{pos}.spline_weight"] = coef[..., :-1].clone()
            state[f"layers.{pos}.spline_scaler"] = torch.ones_like(coef[..., -1])
            state[f"layers.{pos}.grid"] = layer.grid.detach().clone()
        save_torch_state(state, path)
        return [path]


def _identity_affines(layer: PyKANLayer) -> bool:
    return all(
        bool(torch.all(getattr(layer, name) == value))
        for name, value in (
            ("node_scale", 1.0),
            ("node_bias", 0.0),
            ("subnode_scale", 1.0),
            ("subnode_bias", 0.0),
        )
    )


def _bias_glue(bias: torch.Tensor) -> Affine:
    """LKAN's per-output bias as a fixed-scale affine after the layer."""
    glue = Affine(int(bias.shape[0]))
    glue.to(float_dtype(bias))
    with torch.no_grad():
        glue.bias.copy_(bias)
    return glue


register(EfficientKANFormat())
