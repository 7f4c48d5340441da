"""torch-conv-kan's FastKANConv2DLayer, read and written for its format.

Per layer prefix p: `base_conv.{g}.weight` (O/g, I/g, kh, kw), `spline_conv.{g}.weight`
(O/g, (I/g)*G, kh, kw) with channel i*G + c, and `rbf.grid` (G,) (a saved parameter
without gradient). KANConv2DLayer has `spline_conv` too but never saves a grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import _tck_conv
from metacluster.formats._registry import KeyTracker, float_dtype
from metacluster.kan import RBFKANConv2d

_LINSPACE_RTOL = 1e-5  # as fastkan.py: fp32 linspace rounding is ~1e-7


def load(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    grid = keys.get(p + "rbf.grid", 1)
    splines, bases = keys.numbered(p, "spline_conv", 4), keys.numbered(p, "base_conv", 4)
    if len(bases) != len(splines) or not bases:
        raise FormatError(f"{p}: {len(splines)} spline_conv groups but {len(bases)} base_conv")
    n_grid, groups = int(grid.shape[0]), len(splines)
    out_g, in_g, kh, kw = bases[0].shape
    if n_grid < 2 or any(
        s.shape != (out_g, in_g * n_grid, kh, kw) or b.shape != bases[0].shape
        for s, b in zip(splines, bases, strict=True)
    ):
        raise FormatError(
            f"{p}spline_conv.0.weight has shape {tuple(splines[0].shape)}, expected "
            f"({out_g}, {in_g}*{n_grid}, {kh}, {kw}) from {p}rbf.grid ({n_grid} centres) "
            f"and {p}base_conv.0.weight"
        )
    lo, hi = float(grid[0]), float(grid[-1])
    even = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    if (
        not torch.allclose(grid.double(), even, rtol=0, atol=_LINSPACE_RTOL * abs(hi - lo))
        or lo >= hi
    ):
        raise FormatError(
            f"{p}rbf.grid is not an increasing linspace, which FastKANConv always makes"
        )
    for name, value in (("grid_size", n_grid), ("groups", groups)):
        if opts.get(name) not in (None, value):
            raise FormatError(
                f"{p}spline_conv says {name} {value}, but the config declares {opts[name]}"
            )
    layer = RBFKANConv2d(
        int(in_g) * groups,
        int(out_g) * groups,
        (int(kh), int(kw)),
        grid_size=n_grid,
        grid_range=(lo, hi),
        dropout=float(opts["dropout"]),
        **_tck_conv.geometry(opts, groups),
    )
    layer.to(float_dtype(grid, *splines))
    spline = torch.cat([s.reshape(out_g, in_g, n_grid, kh, kw) for s in splines])
    coef = torch.cat([spline, torch.cat(bases).unsqueeze(2)], dim=2).permute(0, 1, 3, 4, 2)
    layer.set_edge_coefficients(coef.reshape(-1, n_grid + 1))
    with torch.no_grad():
        layer.grid.copy_(grid)
    return [layer]


def export(layer: RBFKANConv2d, pos: int, prefix: str, state: dict[str, Tensor]) -> dict[str, Any]:
    if (
        layer.prelu_weight is not None
        or layer.norm != "none"
        or not layer.input_norm
        or layer.bias is not None
    ):
        raise IncompatibleError(
            f"layer {pos}: FastKANConv2DLayer has an input instance norm, no output norm, "
            "no PReLU and no bias"
        )
    n_grid = layer.grid_size
    kh, kw = layer.kernel_size
    for gi, block in enumerate(_tck_conv.group_blocks(layer)):  # (O/g, I/g, G + 1, kh, kw)
        state[f"{prefix}base_conv.{gi}.weight"] = block[:, :, -1].contiguous()
        spline = block[:, :, :n_grid].reshape(block.shape[0], -1, kh, kw)
        state[f"{prefix}spline_conv.{gi}.weight"] = spline.contiguous()
    state[prefix + "rbf.grid"] = layer.grid.detach().clone()
    return _tck_conv.entry_from_config(layer, "FastKANConv2DLayer", ())
