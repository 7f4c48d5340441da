"""efficient-kan (Blealtan) checkpoints: `layers.{l}.base_weight/spline_weight/grid`.

Imports into `BSplineKANLayer` (spline_weight * spline_scaler and base_weight
folded into one vector per edge) and exports back as a plain state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint, module_prefixes
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    check_chain,
    float_dtype,
    layers_of,
    register,
)
from metacluster.kan import BSplineKANLayer, KANModel


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

    def _prefixes(self, ckpt: Checkpoint) -> list[str]:
        return [
            p
            for p in module_prefixes(ckpt, "spline_weight")
            if ckpt.tensors[p + "spline_weight"].dim() == 3
            and p + "base_weight" in ckpt.tensors
            and p + "grid" in ckpt.tensors
        ]

    def matches(self, ckpt: Checkpoint) -> bool:
        return ckpt.pykan_config is None and bool(self._prefixes(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[BSplineKANLayer] = []
        for p in self._prefixes(ckpt):
            spline = keys.get(p + "spline_weight", 3)
            base = keys.get(p + "base_weight", 2)
            grid = keys.get(p + "grid", 2)
            scaler = keys.optional(p + "spline_scaler")
            n_out, n_in, width = spline.shape
            if tuple(base.shape) != (n_out, n_in) or grid.shape[0] != n_in:
                raise FormatError(f"{p}*: base_weight/grid shapes do not match spline_weight")
            grid_size, order = bspline_shape(width, grid.shape[1], p + "spline_weight")
            base_act = str(ckpt.options.get("base_activation", "silu"))
            layer = BSplineKANLayer(
                n_in, n_out, grid_size, order, knot_range(grid, order), base_act
            )
            layer.to(float_dtype(spline, base))
            scaled = spline if scaler is None else spline * scaler.unsqueeze(-1)
            layer.set_grid(grid.to(layer.grid.dtype))
            layer.set_edge_coefficients(
                torch.cat([scaled, base.unsqueeze(-1)], dim=-1).reshape(-1, width + 1)
            )
            layers.append(layer)
        keys.check_all_used(self.name)
        check_chain([(ly.in_features, ly.out_features) for ly in layers], self.name)
        return KANModel(list(layers), meta={"family": "bspline", "format": self.name})

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, torch.Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (BSplineKANLayer,))):
            assert isinstance(layer, BSplineKANLayer)
            if type(layer) is not BSplineKANLayer or layer.base_activation != "silu":
                raise IncompatibleError(
                    f"layer {pos}: efficient-kan holds B-spline layers with a SiLU base only"
                )
            coef = layer.coef.detach()
            # efficient-kan's own layout; spline_scaler = 1 keeps the product exact.
            state[f"layers.{pos}.base_weight"] = coef[..., -1].clone()
            state[f"layers.{pos}.spline_weight"] = coef[..., :-1].clone()
            state[f"layers.{pos}.spline_scaler"] = torch.ones_like(coef[..., -1])
            state[f"layers.{pos}.grid"] = layer.grid.detach().clone()
        save_torch_state(state, path)
        return [path]


register(EfficientKANFormat())
