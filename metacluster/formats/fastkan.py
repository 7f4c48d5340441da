"""FastKAN (ZiyaoLi) checkpoints: `layers.{l}.layernorm.*`, `rbf.grid` [G],
`spline_linear.weight` [O, I*G] and `base_linear.*`, imported into `RBFKANLayer`.
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
    float_dtype,
    layers_of,
    register,
)
from metacluster.kan import KANModel, RBFKANLayer

# Relative tolerance for "the grid is a linspace" (fp32 linspace rounding is ~1e-7).
_LINSPACE_RTOL = 1e-5


class FastKANFormat(FormatHandler):
    name = "fastkan"
    layouts = ((("spline_linear.weight", 2), ("rbf.grid", 1), ("layernorm.weight", 1)),)

    def _prefixes(self, ckpt: Checkpoint) -> list[str]:
        return [
            p
            for p in module_prefixes(ckpt, "spline_linear.weight")
            if p + "rbf.grid" in ckpt.tensors
        ]

    def matches(self, ckpt: Checkpoint) -> bool:
        return bool(self._prefixes(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[RBFKANLayer] = []
        for p in self._prefixes(ckpt):
            layers.append(self._layer(keys, p, ckpt.options.get("denominator")))
        return self.assemble(keys, layers, "rbf")

    def _layer(self, keys: KeyTracker, p: str, denominator: float | None) -> RBFKANLayer:
        weight = keys.get(p + "spline_linear.weight", 2)  # (O, I*G)
        grid = keys.get(p + "rbf.grid", 1)  # (G,)
        ln_w, ln_b = keys.get(p + "layernorm.weight", 1), keys.get(p + "layernorm.bias", 1)
        base_w = keys.optional(p + "base_linear.weight")
        base_b = keys.optional(p + "base_linear.bias")
        n_grid = int(grid.shape[0])
        n_in = int(ln_w.shape[0])
        n_out = int(weight.shape[0])
        if weight.shape[1] != n_in * n_grid:
            raise FormatError(
                f"{p}spline_linear.weight has {weight.shape[1]} columns, not I*G = {n_in * n_grid}"
            )
        lo, hi = float(grid[0]), float(grid[-1])
        expected = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
        if n_grid > 1 and not torch.allclose(
            grid.double(), expected, rtol=0, atol=_LINSPACE_RTOL * (hi - lo)
        ):
            raise FormatError(f"{p}rbf.grid is not evenly spaced, which FastKAN never makes")
        layer = RBFKANLayer(
            n_in,
            n_out,
            grid_size=n_grid,
            grid_range=(lo, hi),
            denominator=denominator,
            use_base_update=base_w is not None,
            bias=base_b is not None,
        )
        layer.to(float_dtype(weight))
        parts = [weight.reshape(n_out, n_in, n_grid)]
        if base_w is not None:
            parts.append(base_w.unsqueeze(-1))
        layer.set_edge_coefficients(torch.cat(parts, dim=-1).reshape(n_out * n_in, -1))
        with torch.no_grad():
            layer.grid.copy_(grid)
            assert layer.layernorm is not None
            layer.layernorm.weight.copy_(ln_w)
            layer.layernorm.bias.copy_(ln_b)
            if base_b is not None:
                assert layer.bias is not None
                layer.bias.copy_(base_b)
        return layer

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, torch.Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (RBFKANLayer,))):
            assert isinstance(layer, RBFKANLayer)
            default_h = (layer.grid_range[1] - layer.grid_range[0]) / max(layer.grid_size - 1, 1)
            if (
                layer.layernorm is None
                or layer.base_activation != "silu"
                or abs(layer.denominator - default_h) > 1e-12
            ):
                raise IncompatibleError(
                    f"layer {pos}: FastKAN layers have a LayerNorm, a SiLU base and the default RBF width"
                )
            if layer.use_base_update and layer.bias is None:
                raise IncompatibleError(f"layer {pos}: FastKAN's base_linear always has a bias")
            coef = layer.coef.detach()
            p = f"layers.{pos}."
            state[p + "layernorm.weight"] = layer.layernorm.weight.detach().clone()
            state[p + "layernorm.bias"] = layer.layernorm.bias.detach().clone()
            state[p + "rbf.grid"] = layer.grid.detach().clone()
            g = layer.grid_size
            state[p + "spline_linear.weight"] = (
                coef[..., :g].reshape(layer.out_features, -1).clone()
            )
            if layer.use_base_update:
                assert layer.bias is not None
                state[p + "base_linear.weight"] = coef[..., -1].clone()
                state[p + "base_linear.bias"] = layer.bias.detach().clone()
        save_torch_state(state, path)
        return [path]


register(FastKANFormat())
