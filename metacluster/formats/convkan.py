"""convkan (PyPI 0.0.1.2) `ConvKAN` stacks: an efficient-kan KANLinear per group over
unfolded patches, imported into `KANConv2d` (no norm, no PReLU) and exported back.

Keys per layer prefix p (`p = kan_layer.` of the ConvKAN): `grid` (g, I', G+2k+1),
`base_weight` (g, O/g, I'), `spline_weight` (g, O/g, I', G+k), `spline_scaler`
(g, O/g, I') when standalone scaling is on; I' = (C/g)·kh·kw with input index
c·kh·kw + p (F.unfold's order). The kernel size is not in the tensors: config.json's
`kernel_size` (default 3, ConvKAN's), with stride, padding and dilation as for
torch-conv-kan. ConvKAN pads the input with zeros before its edge functions (so a
padded border adds f(0)), which `KANConv2d(pad_input=True)` reproduces. One grid for every
input is required (convkan's default; `update_grid`
makes per-input grids, which a conv KAN edge view does not share).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
from metacluster.formats.efficient_kan import bspline_shape
from metacluster.formats.torch_conv_kan import conv_options, layer_options
from metacluster.kan import KANConv2d, KANModel

LEAF = "kan_layer.spline_weight"


class ConvKANFormat(FormatHandler):
    name = "convkan"
    layouts = (
        (("kan_layer.spline_weight", 4), ("kan_layer.base_weight", 3), ("kan_layer.grid", 3)),
    )

    def _prefixes(self, ckpt: Checkpoint) -> list[str]:
        return [p for p in module_prefixes(ckpt, LEAF) if ckpt.tensors[p + LEAF].dim() == 4]

    def matches(self, ckpt: Checkpoint) -> bool:
        return bool(self._prefixes(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers = [
            _layer(keys, p, layer_options(ckpt.hf_config, pos, {"kernel_size": 3}))
            for pos, p in enumerate(self._prefixes(ckpt))
        ]
        return self.assemble(keys, layers, "bspline")

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, Tensor] = {}
        per_layer: list[dict[str, Any]] = []
        for pos, layer in enumerate(layers_of(model, self.name, (KANConv2d,))):
            assert isinstance(layer, KANConv2d)
            if (
                layer.norm != "none"
                or layer.prelu_weight is not None
                or layer.base_activation != "silu"
            ):
                raise IncompatibleError(
                    f"layer {pos}: a ConvKAN has no norm or PReLU after it and a SiLU base"
                )
            g, n_basis = layer.groups, layer.n_basis
            out_g, kh, kw = layer.out_channels // g, *layer.kernel_size
            n_in = (layer.in_channels // g) * kh * kw
            coef = layer.coef.detach().reshape(g, out_g, n_in, n_basis + 1)
            p = f"layers.{pos}.kan_layer."
            state[p + "grid"] = layer.grid.detach().expand(g, n_in, -1).contiguous()
            state[p + "base_weight"] = coef[..., -1].contiguous()
            state[p + "spline_weight"] = coef[..., :-1].contiguous()
            state[p + "spline_scaler"] = torch.ones_like(coef[..., -1])
            per_layer.append(
                {
                    "in_channels": layer.in_channels,
                    "out_channels": layer.out_channels,
                    "kernel_size": list(layer.kernel_size),
                    "stride": list(layer.stride),
                    "padding": list(layer.padding),
                    "dilation": list(layer.dilation),
                    "groups": g,
                    "grid_size": layer.grid_size,
                    "spline_order": layer.spline_order,
                    "grid_range": list(layer.grid_range),
                }
            )
        save_torch_state(state, path)
        config = path.with_name("config.json")
        config.write_text(json.dumps({"layers": per_layer}, indent=2), encoding="utf-8")
        return [path, config]


def _layer(keys: KeyTracker, p: str, opts: dict[str, Any]) -> KANConv2d:
    spline = keys.get(p + LEAF, 4)  # (g, O/g, I', G+k)
    groups, out_g, n_in, width = (int(v) for v in spline.shape)
    base = keys.get(p + "kan_layer.base_weight", 3)
    grid = keys.get(p + "kan_layer.grid", 3)
    scaler = keys.optional(p + "kan_layer.spline_scaler")
    for name, tensor, shape in (
        ("base_weight", base, (groups, out_g, n_in)),
        ("spline_scaler", scaler, (groups, out_g, n_in)),
        ("grid", grid, (groups, n_in, int(grid.shape[-1]))),
    ):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise FormatError(
                f"{p}kan_layer.{name} has shape {tuple(tensor.shape)}, expected {shape} "
                f"from {p}{LEAF} {tuple(spline.shape)}"
            )
    grid_size, order = bspline_shape(width, int(grid.shape[-1]), f"{p}{LEAF}")
    kernel = opts["kernel_size"]
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else (int(kernel[0]), int(kernel[1]))
    if kh < 1 or kw < 1 or n_in % (kh * kw):
        raise FormatError(
            f"{p}{LEAF} has {n_in} inputs per group, not a multiple of the kernel's {kh}x{kw}"
        )
    row = grid[0, 0]
    if not torch.equal(grid, row.expand_as(grid)):
        raise FormatError(f"{p}kan_layer.grid differs between inputs (after update_grid)")
    layer = KANConv2d(
        (n_in // (kh * kw)) * groups,
        out_g * groups,
        (kh, kw),
        grid_size=grid_size,
        spline_order=order,
        grid_range=(float(row[order]), float(row[-order - 1])),
        base_activation="silu",
        prelu=False,
        pad_input=True,
        **{**conv_options(opts, groups), "norm": "none"},
    )
    layer.to(float_dtype(spline, base))
    scaled = spline * scaler.unsqueeze(-1) if scaler is not None else spline
    coef = torch.cat([scaled, base.unsqueeze(-1)], dim=-1)  # (g, O/g, I', L), I' = c*kh*kw + p
    layer.set_edge_coefficients(coef.reshape(-1, width + 1))
    with torch.no_grad():
        layer.grid.copy_(row)
    return layer


register(ConvKANFormat())
