"""flashkan (PyPI 0.2.0) and inkan (PyPI 0.5.2): fast cubic B-spline layers, imported into
`BSplineKANLayer` (efficient-kan's arithmetic) and exported back.

Both store `grid_starts` (K,), the left end of each basis function's support, evenly
spaced by h, and evaluate the cubic B-spline by its truncated power form; `y =
spline(x) + base_weight silu(x)` as efficient-kan. The basis is cubic whatever
`spline_order` the user passed (inkan refuses other orders), so K = G + 3 and the knots
are grid_starts[0] + j h, j = 0..K+3.
- flashkan `KANLayer`: `spline_weight` (O, I, K), `base_weight` (O, I);
- inkan `KANLayer` (dim=1): one packed `weight` (O, I*K + I), spline columns i*K + c
  first, then the base weights. dim=2 (a 2-D tensor-product spline) is not a KAN edge
  layout and is refused.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint, module_prefixes
from metacluster.formats._registry import KeyTracker, float_dtype, register
from metacluster.formats._stack import LayerStackFormat
from metacluster.kan import BSplineKANLayer, KANLayer

ORDER = 3  # both libraries' basis is the cubic B-spline
_UNIFORM_RTOL = 1e-5  # fp32 rounding of arange * h + start


def _knots(starts: Tensor, prefix: str) -> tuple[Tensor, float, float]:
    """The cubic knot row that extends grid_starts, and its un-extended range."""
    n_bases = int(starts.shape[0])
    if n_bases < ORDER + 1:
        raise FormatError(f"{prefix}grid_starts has {n_bases} entries; a cubic spline needs >= 4")
    h = float(starts[1] - starts[0])
    even = starts[0].double() + torch.arange(n_bases, dtype=torch.float64) * h
    if not h > 0 or not torch.allclose(
        starts.double(), even, rtol=0, atol=_UNIFORM_RTOL * h * n_bases
    ):
        raise FormatError(f"{prefix}grid_starts is not evenly spaced and increasing")
    knots = torch.arange(n_bases + ORDER + 1, dtype=starts.dtype) * h + starts[0]
    knots[:n_bases] = starts  # bit for bit where the file has them
    return knots, float(knots[ORDER]), float(knots[n_bases])


def _layer(coef: Tensor, base: Tensor, starts: Tensor, prefix: str) -> BSplineKANLayer:
    """BSplineKANLayer from spline coefficients (O, I, K), base weights (O, I) and starts."""
    n_out, n_in, n_bases = coef.shape
    if tuple(base.shape) != (n_out, n_in) or n_bases != starts.shape[0]:
        raise FormatError(
            f"{prefix}: spline coefficients {tuple(coef.shape)} and base weights "
            f"{tuple(base.shape)} do not fit grid_starts ({int(starts.shape[0])} bases)"
        )
    knots, lo, hi = _knots(starts, prefix)
    layer = BSplineKANLayer(
        int(n_in),
        int(n_out),
        grid_size=int(n_bases) - ORDER,
        spline_order=ORDER,
        grid_range=(lo, hi),
    )
    layer.to(float_dtype(coef, base))
    layer.set_grid(knots.to(layer.grid.dtype).expand(int(n_in), -1).contiguous())
    layer.set_edge_coefficients(
        torch.cat([coef, base.unsqueeze(-1)], dim=-1).reshape(-1, n_bases + 1)
    )
    return layer


def _starts(layer: KANLayer, pos: int, fmt: str) -> Tensor:
    """grid_starts of a layer the format can hold: cubic, SiLU base, one uniform grid."""
    if not isinstance(layer, BSplineKANLayer) or type(layer) is not BSplineKANLayer:
        raise IncompatibleError(f"layer {pos} ({type(layer).__name__}) cannot be written as {fmt}")
    grid = layer.grid.detach()
    if layer.spline_order != ORDER or layer.base_activation != "silu":
        raise IncompatibleError(f"layer {pos}: {fmt} holds cubic B-splines with a SiLU base only")
    if not torch.equal(grid, grid[:1].expand_as(grid)):
        raise IncompatibleError(f"layer {pos}: {fmt} has one grid for every input")
    _knots(grid[0, : layer.n_basis], f"layer {pos} ")  # uniform, as the format assumes
    return grid[0, : layer.n_basis].clone()


class _FastBSplineFormat(LayerStackFormat):
    """Layers found by their `grid_starts`; the weight leaf beside it tells the library."""

    layer_type = BSplineKANLayer
    leaf = "grid_starts"
    fixed_leaves = frozenset({"grid_starts"})
    weight_leaf: ClassVar[str]

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(
            p + self.weight_leaf in ckpt.tensors for p in module_prefixes(ckpt, "grid_starts")
        )

    @abstractmethod
    def split(self, keys: KeyTracker, prefix: str, n_bases: int) -> tuple[Tensor, Tensor]:
        """(spline coefficients (O, I, K), base weights (O, I)) of the layer at prefix."""

    def load_layer(self, keys: KeyTracker, prefix: str) -> KANLayer:
        starts = keys.get(prefix + "grid_starts", 1)
        coef, base = self.split(keys, prefix, int(starts.shape[0]))
        return _layer(coef, base, starts, prefix)


class FlashKANFormat(_FastBSplineFormat):
    name = "flashkan"
    weight_leaf = "spline_weight"
    layouts = ((("spline_weight", 3), ("base_weight", 2), ("grid_starts", 1)),)

    def split(self, keys: KeyTracker, prefix: str, n_bases: int) -> tuple[Tensor, Tensor]:
        return keys.get(prefix + "spline_weight", 3), keys.get(prefix + "base_weight", 2)

    def export_layer(self, layer: KANLayer, prefix: str, state: dict[str, Tensor]) -> None:
        starts = _starts(layer, int(prefix.split(".")[1]), self.name)
        coef = layer.coef_param.detach()
        state[prefix + "spline_weight"] = coef[..., :-1].contiguous()
        state[prefix + "base_weight"] = coef[..., -1].clone()
        state[prefix + "grid_starts"] = starts


class InKANFormat(_FastBSplineFormat):
    name = "inkan"
    weight_leaf = "weight"
    layouts = ((("weight", 2), ("grid_starts", 1)),)

    def split(self, keys: KeyTracker, prefix: str, n_bases: int) -> tuple[Tensor, Tensor]:
        weight = keys.get(prefix + "weight", 2)  # (O, I*K + I)
        n_out, width = weight.shape
        n_in, rem = divmod(int(width), n_bases + 1)
        if rem or n_in < 1:
            raise FormatError(
                f"{prefix}weight has {width} columns, not I*(K+1) for K = {n_bases} bases "
                "(inkan's dim=2 layers are not supported)"
            )
        coef = weight[:, : n_in * n_bases].reshape(n_out, n_in, n_bases)
        return coef, weight[:, n_in * n_bases :]

    def export_layer(self, layer: KANLayer, prefix: str, state: dict[str, Tensor]) -> None:
        starts = _starts(layer, int(prefix.split(".")[1]), self.name)
        coef = layer.coef_param.detach()
        spline = coef[..., :-1].reshape(layer.out_features, -1)
        state[prefix + "weight"] = torch.cat([spline, coef[..., -1]], dim=1).contiguous()
        state[prefix + "grid_starts"] = starts


register(FlashKANFormat())
register(InKANFormat())
