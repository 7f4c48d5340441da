"""kaconv (XiangboGaoBarry/KA-Conv; the PyPI wheel 0.1.0 holds no modules):
`nn.Sequential`s of `FastKANConvLayer(kan_type="RBF")`, each optionally followed by a
`BatchNorm2d`, as its train_cifar10.py builds them. Imported into `RBFKANConv2d` without
the input norm, with the conv biases and the BatchNorm, and exported back.

Keys per layer prefix p: `rbf.grid` (G,) (a saved parameter without gradient, a linspace),
`spline_conv.weight` (O, C·G, kh, kw) with channel k·C + c (basis-major:
`x_rbf.permute(0, 4, 1, 2, 3)`), `spline_conv.bias` (O,), `base_conv.weight`
(O, C, kh, kw) on SiLU(x), `base_conv.bias` (O,). Both biases add up (imported as their
sum; exported in `spline_conv.bias`, `base_conv.bias` zero). A BatchNorm2d right after
the layer (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`) is the
layer's `norm="batch"`. Stride, padding and dilation are not in the tensors: config.json
(or a spec's options) gives them, per layer under `layers` or for all (kaconv's defaults:
stride 1, padding 0). Pooling and flattening hold no tensors: describe them with a spec.

Refused: kan_type "Fourier" (`rbf.period`), "Poly", "Chebyshev" and "BSpline" (no
`rbf.grid`: their bases are not one of our families), and `groups` > 1 (kaconv groups the
basis-major channels, so a group mixes the bases of channels outside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint, module_order
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    float_dtype,
    layers_of,
    register,
)
from metacluster.formats._stack import leaves_by_module
from metacluster.formats.torch_conv_kan import layer_options
from metacluster.kan import Flatten, GlobalAvgPool, KANModel, RBFKANConv2d

BN = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
_LINSPACE_ATOL = 1e-5  # relative to the grid's span, as the other RBF importers


def _layer_prefixes(ckpt: Checkpoint) -> list[str]:
    return [
        p
        for p, leaves in leaves_by_module(ckpt).items()
        if "weight" in leaves and p.endswith("spline_conv.")
        if ckpt.tensors[p + "weight"].dim() == 4
        and (p[: -len("spline_conv.")] + "base_conv.weight") in ckpt.tensors
    ]


class KAConvFormat(FormatHandler):
    name = "kaconv"
    layouts = ((("spline_conv.weight", 4), ("base_conv.weight", 4), ("rbf.grid", 1)),)

    def _modules(self, ckpt: Checkpoint) -> list[tuple[str, str]]:
        """[(kind, prefix)] in forward order: "kan" layers and "bn" BatchNorm2ds."""
        found = {p[: -len("spline_conv.")]: "kan" for p in _layer_prefixes(ckpt)}
        for p, leaves in leaves_by_module(ckpt).items():
            if leaves == BN and ckpt.tensors[p + "weight"].dim() == 1:
                found[p] = "bn"
        return [(found[p], p) for p in module_order(ckpt, list(found))]

    def matches(self, ckpt: Checkpoint) -> bool:
        return bool(_layer_prefixes(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        config = {**(ckpt.hf_config or {}), **ckpt.options} or None
        modules = self._modules(ckpt)
        layers: list[nn.Module] = []
        pos = 0
        for i, (kind, p) in enumerate(modules):
            if kind == "bn":
                continue
            follows = i + 1 < len(modules) and modules[i + 1][0] == "bn"
            bn = modules[i + 1][1] if follows else None
            layers.append(_layer(keys, p, bn, layer_options(config, pos, {"kernel_size": 3})))
            pos += 1
        return self.assemble(keys, layers, "conv_rbf")

    def export(self, model: KANModel, path: Path) -> list[Path]:
        """`nn.Sequential` keys: a layer takes one index (two with its BatchNorm2d); a
        global average pool or flatten takes one and holds nothing."""
        allowed = (RBFKANConv2d, GlobalAvgPool, Flatten)
        state: dict[str, Tensor] = {}
        per_layer: list[dict[str, Any]] = []
        index = 0
        for pos, layer in enumerate(layers_of(model, self.name, allowed)):
            if not isinstance(layer, RBFKANConv2d):
                index += 1
                continue
            if layer.input_norm or layer.groups != 1 or layer.norm not in ("none", "batch"):
                raise IncompatibleError(
                    f"layer {pos}: a kaconv FastKANConvLayer has no input norm and one group"
                )
            if layer.dropout > 0 or layer.pad_input:
                raise IncompatibleError(f"layer {pos}: a kaconv layer has no dropout")
            g = layer.grid_size
            coef = layer.coef.detach()  # (O, C, kh, kw, G + 1)
            o, c, kh, kw = (int(v) for v in coef.shape[:4])
            p = f"{index}."
            state[p + "rbf.grid"] = layer.grid.detach().clone()
            spline = coef[..., :g].permute(0, 4, 1, 2, 3).reshape(o, g * c, kh, kw)
            state[p + "spline_conv.weight"] = spline.contiguous()
            bias = layer.bias.detach() if layer.bias is not None else coef.new_zeros(o)
            state[p + "spline_conv.bias"] = bias.clone()
            state[p + "base_conv.weight"] = coef[..., g].contiguous()
            state[p + "base_conv.bias"] = coef.new_zeros(o)
            index += 1
            if layer.batch_norm is not None:
                for name, value in layer.batch_norm.state_dict().items():
                    state[f"{index}.{name}"] = value.detach().clone()
                index += 1
            per_layer.append(
                {
                    "kernel_size": [kh, kw],
                    "stride": list(layer.stride),
                    "padding": list(layer.padding),
                    "dilation": list(layer.dilation),
                }
            )
        if not per_layer:
            raise IncompatibleError("the model has no conv_rbf layer to export")
        save_torch_state(state, path)
        config = path.with_name("config.json")
        config.write_text(json.dumps({"layers": per_layer}, indent=2), encoding="utf-8")
        return [path, config]


def _layer(keys: KeyTracker, p: str, bn: str | None, opts: dict[str, Any]) -> RBFKANConv2d:
    if p + "rbf.grid" not in keys.ckpt.tensors:
        kind = "Fourier" if p + "rbf.period" in keys.ckpt.tensors else "Poly/Chebyshev/BSpline"
        raise FormatError(
            f"{p or 'the layer '}has no rbf.grid: a kaconv kan_type {kind} layer, which is not "
            "supported (only kan_type 'RBF' is)"
        )
    grid = keys.get(p + "rbf.grid", 1)
    spline = keys.get(p + "spline_conv.weight", 4)
    base = keys.get(p + "base_conv.weight", 4)
    n_grid = int(grid.shape[0])
    o, c, kh, kw = (int(v) for v in base.shape)
    if opts.get("groups") not in (None, 1):
        raise FormatError(
            f"{p}: groups {opts['groups']} is not supported (kaconv groups its basis-major "
            "channels, so a group mixes the bases of channels outside it)"
        )
    if n_grid < 2 or tuple(spline.shape) != (o, c * n_grid, kh, kw):
        raise FormatError(
            f"{p}spline_conv.weight has shape {tuple(spline.shape)}, expected "
            f"({o}, {c}*{n_grid}, {kh}, {kw}) from {p}rbf.grid ({n_grid} centres) and "
            f"{p}base_conv.weight {tuple(base.shape)}"
        )
    if opts.get("grid_size") not in (None, n_grid):
        raise FormatError(
            f"{p}rbf.grid has {n_grid} centres, but the config declares grid_size "
            f"{opts['grid_size']}"
        )
    lo, hi = float(grid[0]), float(grid[-1])
    even = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    if lo >= hi or not torch.allclose(
        grid.double(), even, rtol=0, atol=_LINSPACE_ATOL * abs(hi - lo)
    ):
        raise FormatError(f"{p}rbf.grid is not an increasing linspace, which kaconv makes")
    biases = [
        b
        for b in (keys.optional(p + "spline_conv.bias"), keys.optional(p + "base_conv.bias"))
        if b is not None
    ]
    for b in biases:
        if tuple(b.shape) != (o,):
            raise FormatError(f"{p}: a conv bias has shape {tuple(b.shape)}, expected ({o},)")
    layer = RBFKANConv2d(
        c,
        o,
        (kh, kw),
        stride=opts["stride"],
        padding=opts["padding"],
        dilation=opts["dilation"],
        grid_size=n_grid,
        grid_range=(lo, hi),
        input_norm=False,
        norm="batch" if bn is not None else "none",
        bias=bool(biases),
    )
    layer.to(float_dtype(grid, spline, base))
    coef = torch.cat(
        [spline.reshape(o, n_grid, c, kh, kw).permute(0, 2, 3, 4, 1), base.unsqueeze(-1)], -1
    )
    layer.set_edge_coefficients(coef.reshape(-1, n_grid + 1))
    with torch.no_grad():
        layer.grid.copy_(grid)
        if layer.bias is not None:
            layer.bias.copy_(sum(biases[1:], biases[0]))
    if bn is not None:
        assert layer.batch_norm is not None
        stats = {
            leaf: keys.get(bn + leaf, 1 if leaf != "num_batches_tracked" else None) for leaf in BN
        }
        if any(int(t.numel()) != o for leaf, t in stats.items() if leaf != "num_batches_tracked"):
            raise FormatError(f"{bn}weight is not a BatchNorm2d over {p}'s {o} output channels")
        layer.batch_norm.load_state_dict(stats)
    return layer


register(KAConvFormat())
