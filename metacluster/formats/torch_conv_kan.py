"""torch-conv-kan (IvanDrokin) stacks: KANConv2DLayer (`spline_conv.{g}.weight`,
`base_conv.{g}.weight`, `prelus.{g}.weight`), KACNConv2DLayer (`poly_conv.{g}.weight`,
`arange`) and the polynomial layers of `_tck_poly` (Gram, Legendre, Jacobi, Bernstein, dense
and conv); state dict or model.safetensors + config.json.

The knots are not saved by the library: spline order, grid range, stride,
padding, dilation, base activation and dropout come from config.json (top
level, or a per-layer `layers` list) and default to KANConv2DLayer's own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import (
    _tck_bottleneck,
    _tck_conv,
    _tck_poly,
    _tck_rbf,
    _tck_wavelet,
    _tck_wavelet_conv,
)
from metacluster.formats._checkpoint import Checkpoint, module_order, module_prefixes
from metacluster.formats._io import save_torch_state, write_safetensors
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    float_dtype,
    layers_of,
    register,
)
from metacluster.kan import (
    Affine,
    ChebyKANConv2d,
    KANConv2d,
    KANLayer,
    KANModel,
    RBFKANConv2d,
    SiLU,
    WaveletKANLayer,
)
from metacluster.kan.bottleneck import (
    GramBottleneckKANConv2d,
    GramBottleneckKANLayer,
    ReLUBottleneckKANConv2d,
)
from metacluster.kan.polynomial import _PolyKANConv2d, _PolyKANLayer
from metacluster.kan.wavelet_conv import WaveletKANConv2d

# KANConv2DLayer's defaults (kan_convs/kan_conv.py).
DEFAULTS: dict[str, Any] = {
    "spline_order": 3,
    "grid_range": [-1.0, 1.0],
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "base_activation": "gelu",
    "dropout": 0.0,
    # Declared by a config (checked against the shapes) or naming the layer class.
    "degree": None,
    "groups": None,
    "grid_size": None,
    "layer_class": None,
    "a": 1.0,
    "b": 1.0,
    "wavelet_type": None,
    "g": None,  # ReLU-KAN's grid count and order (only their sum is in the tensors)
    "k": None,
}
_ACTIVATIONS = {
    "gelu": "gelu",
    "silu": "silu",
    "identity": "identity",
    "GELU": "gelu",
    "SiLU": "silu",
}


def layer_options(
    config: dict[str, Any] | None, pos: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Layer `pos`'s options: DEFAULTS (plus a format's `extra` defaults), then
    config.json's top level, then its `layers[pos]`; checked against sane bounds."""
    opts = {**DEFAULTS, **(extra or {})}
    if config:
        opts.update({k: v for k, v in config.items() if k in opts})
        per_layer = config.get("layers")
        if isinstance(per_layer, list):
            if pos >= len(per_layer) or not isinstance(per_layer[pos], dict):
                raise FormatError(f"config.json 'layers' has no entry for conv layer {pos}")
            opts.update({k: v for k, v in per_layer[pos].items() if k in opts})
    act = _ACTIVATIONS.get(str(opts["base_activation"]))
    if act is None:
        raise FormatError(f"base_activation {opts['base_activation']!r} is not supported")
    opts["base_activation"] = act
    _check_bounds(opts, pos)
    return opts


# Sane bounds of the config.json values (inclusive): a config names sizes the weights
# do not, and an unbounded one would allocate (or convolve) whatever it asks for.
_INT_BOUNDS = {
    "kernel_size": (1, 31),
    "spline_order": (0, 16),
    "stride": (1, 64),
    "padding": (0, 256),
    "dilation": (1, 64),
}


def _check_bounds(opts: dict[str, Any], pos: int) -> None:
    where = f"config.json (conv layer {pos})"
    for name, (lo, hi) in _INT_BOUNDS.items():
        if name not in opts:
            continue
        value = opts[name]
        values = value if isinstance(value, list | tuple) else [value]
        if not 1 <= len(values) <= 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values
        ):
            raise FormatError(f"{where}: {name} must be an integer in {lo}..{hi} (or two)")
    rng = opts["grid_range"]
    if not (
        isinstance(rng, list | tuple)
        and len(rng) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in rng)
        and all(math.isfinite(float(v)) and abs(float(v)) <= 1e6 for v in rng)
        and float(rng[0]) < float(rng[1])
    ):
        raise FormatError(f"{where}: grid_range must be two finite numbers lo < hi")
    dropout = opts["dropout"]
    if not (
        isinstance(dropout, int | float)
        and not isinstance(dropout, bool)
        and 0.0 <= float(dropout) <= 1.0
    ):
        raise FormatError(f"{where}: dropout must be a number in [0, 1]")


def conv_options(opts: dict[str, Any], groups: int) -> dict[str, Any]:
    """What both layer kinds take from their options: the conv geometry and dropout,
    with the instance norm every torch-conv-kan layer applies."""
    return {
        **_tck_conv.geometry(opts, groups),
        "norm": "instance",
        "dropout": float(opts["dropout"]),
    }


class TorchConvKANFormat(FormatHandler):
    name = "torch-conv-kan"
    layouts = (
        (("spline_conv.0.weight", 4), ("base_conv.0.weight", 4)),
        (("spline_conv.0.weight", 4), ("base_conv.0.weight", 4), ("rbf.grid", 1)),
        (("poly_conv.0.weight", 4), ("arange", 0)),
        (("poly_weights", 5), ("base_conv.0.weight", 4)),
        *_tck_poly.DENSE_LAYOUTS,
        _tck_wavelet.LAYOUT,
        _tck_wavelet_conv.LAYOUT,
        _tck_bottleneck.LAYOUT,
        _tck_bottleneck.DENSE_LAYOUT,
        _tck_bottleneck.RELU_LAYOUT,
    )

    def _modules(self, ckpt: Checkpoint) -> list[tuple[str, str]]:
        """(variant, prefix) in forward order: KANConv ("kan"), KACNConv ("kacn") or one
        of `_tck_poly.MARKERS` (the polynomial layers)."""
        found = {
            p: "fastkan_conv" if p + "rbf.grid" in ckpt.tensors else "kan"
            for p in module_prefixes(ckpt, "spline_conv.0.weight")
        }
        found |= {
            p: "kacn"
            for p in module_prefixes(ckpt, "poly_conv.0.weight")
            if p + "arange" in ckpt.tensors
        }
        found |= {
            p: "wavkan"
            for p in module_prefixes(ckpt, _tck_wavelet.MARKER)
            if _tck_wavelet.is_dense_wavkan(ckpt.tensors, p)
        }
        found |= {
            p: "wavkan_conv"
            for p in module_prefixes(ckpt, _tck_wavelet_conv.MARKER)
            if _tck_wavelet_conv.is_wavkan_conv(ckpt.tensors, p)
        }
        for variant, leaf in _tck_poly.MARKERS.items():
            found |= {p: variant for p in module_prefixes(ckpt, leaf) if _is(ckpt, p, variant)}
        # a bottleneck also has poly_weights and base_conv: it overrides "poly_conv"
        found |= {
            p: "kagn_bottleneck"
            for p in module_prefixes(ckpt, _tck_bottleneck.MARKER)
            if _tck_bottleneck.is_bottleneck(ckpt.tensors, p)
        }
        # a dense one has GRAMLayer's tensors and more: it overrides "dense_gram"
        found |= {
            p: "gram_bottleneck_dense"
            for p in module_prefixes(ckpt, _tck_bottleneck.DENSE_MARKER)
            if _tck_bottleneck.is_dense_bottleneck(ckpt.tensors, p)
        }
        found |= {
            p: "relukan_bottleneck"
            for p in module_prefixes(ckpt, _tck_bottleneck.RELU_MARKER)
            if _tck_bottleneck.is_relu_bottleneck(ckpt.tensors, p)
        }
        return [(found[p], p) for p in module_order(ckpt, list(found))]

    def matches(self, ckpt: Checkpoint) -> bool:
        return bool(self._modules(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        config = ckpt.hf_config
        layers: list[nn.Module] = []
        for pos, (variant, p) in enumerate(self._modules(ckpt)):
            opts = layer_options(config, pos)
            if variant == "kan":
                layers.append(self._layer(keys, p, opts))
            elif variant == "kacn":
                layers.append(_kacn(keys, p, opts))
            elif variant == "poly_conv":
                layers.extend(_tck_poly.load_conv(keys, p, opts))
            elif variant == "fastkan_conv":
                layers.extend(_tck_rbf.load(keys, p, opts))
            elif variant == "wavkan":
                layers.extend(_tck_wavelet.load(keys, p, opts))
            elif variant == "kagn_bottleneck":
                layers.extend(_tck_bottleneck.load(keys, p, opts))
            elif variant == "gram_bottleneck_dense":
                layers.extend(_tck_bottleneck.load_dense(keys, p, opts))
            elif variant == "relukan_bottleneck":
                layers.extend(_tck_bottleneck.load_relu(keys, p, opts))
            elif variant == "wavkan_conv":
                layers.extend(_tck_wavelet_conv.load(keys, p, opts))
            else:
                layers.extend(_tck_poly.load_dense(keys, p, variant.removeprefix("dense_"), opts))
        families = sorted({layer.family for layer in layers if isinstance(layer, KANLayer)})
        return self.assemble(keys, layers, "+".join(families))

    def _layer(self, keys: KeyTracker, p: str, opts: dict[str, Any]) -> KANConv2d:
        splines = keys.numbered(p, "spline_conv", 4)
        groups = len(splines)
        bases = [keys.get(f"{p}base_conv.{g}.weight", 4) for g in range(groups)]
        prelus = [keys.optional(f"{p}prelus.{g}.weight") for g in range(groups)]
        out_g, in_g, kh, kw = bases[0].shape
        n_basis = splines[0].shape[1] // in_g
        if splines[0].shape[1] != n_basis * in_g or any(
            s.shape != splines[0].shape for s in splines
        ):
            raise FormatError(
                f"{p}spline_conv weights do not fit base_conv ({in_g} inputs per group)"
            )
        order = int(opts["spline_order"])
        grid_size = n_basis - order
        if grid_size < 1:
            raise FormatError(
                f"{p}: {n_basis} spline channels per input do not fit spline_order {order}"
            )
        _tck_poly.declared(opts, "grid_size", grid_size, f"{p}spline_conv.0.weight")
        _tck_poly.declared(opts, "groups", groups, f"{p}spline_conv")
        has_prelu = all(w is not None for w in prelus)
        layer = KANConv2d(
            in_g * groups,
            out_g * groups,
            (kh, kw),
            grid_size=grid_size,
            spline_order=order,
            grid_range=tuple(opts["grid_range"]),
            base_activation=opts["base_activation"],
            prelu=has_prelu,
            **conv_options(opts, groups),
        )
        layer.to(float_dtype(*splines))
        # channel i*(G+k) + c  ->  (O/g, I/g, G+k, kh, kw)  ->  (O/g, I/g, kh, kw, G+k)
        spline = torch.cat([s.reshape(out_g, in_g, n_basis, kh, kw) for s in splines])
        base = torch.cat(bases).unsqueeze(2)
        coef = torch.cat([spline, base], dim=2).permute(0, 1, 3, 4, 2)
        layer.set_edge_coefficients(coef.reshape(-1, n_basis + 1))
        if has_prelu:
            assert layer.prelu_weight is not None
            with torch.no_grad():
                layer.prelu_weight.copy_(torch.cat([w.reshape(1) for w in prelus if w is not None]))
        return layer

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, Tensor] = {}
        per_layer: list[dict[str, Any]] = []
        modules = layers_of(model, self.name, _EXPORTABLE)
        pos = 0
        while pos < len(modules):
            layer, prefix = modules[pos], f"layers.{len(per_layer)}."
            row = next((row for row in _EXPORTERS if isinstance(layer, row[0])), None)
            if row is None:
                raise IncompatibleError(
                    f"layer {pos} ({type(layer).__name__}) cannot be written in the "
                    f"{self.name} format on its own"
                )
            _, span, exporter = row
            per_layer.append(exporter(modules, pos, prefix, state))
            pos += span
        if path.suffix == ".safetensors":
            write_safetensors(state, path, {"format": "pt"})
            config = path.with_name("config.json")
            config.write_text(json.dumps({"layers": per_layer}, indent=2), encoding="utf-8")
            return [path, config]
        save_torch_state(state, path)
        return [path]


def _is(ckpt: Checkpoint, p: str, variant: str) -> bool:
    """Whether prefix p (found by the variant's marker leaf) really is that variant: a
    dense layer has its base weight beside the marker, a polynomial conv its base_conv
    and 5-D poly_weights."""
    if variant == "poly_conv":
        return (
            ckpt.tensors[p + "poly_weights"].dim() == 5 and f"{p}base_conv.0.weight" in ckpt.tensors
        )
    base_leaf = _tck_poly.DENSE_KEYS[variant.removeprefix("dense_")][1]
    return p + base_leaf in ckpt.tensors


def _kacn(keys: KeyTracker, p: str, opts: dict[str, Any]) -> ChebyKANConv2d:
    """KACNConv2DLayer: poly_conv.{g}.weight [O/g, (I/g)(D+1), kh, kw], channel c*(D+1) + d."""
    convs = keys.numbered(p, "poly_conv", 4)
    arange = keys.get(p + "arange")
    n_poly = int(arange.numel())
    if arange.reshape(-1).tolist() != list(range(n_poly)):
        raise FormatError(f"{p}arange is not 0..{n_poly - 1}")
    out_g, channels, kh, kw = convs[0].shape
    if channels % n_poly or any(c.shape != convs[0].shape for c in convs):
        raise FormatError(f"{p}poly_conv weights do not fit degree {n_poly - 1}")
    in_g, groups = channels // n_poly, len(convs)
    _tck_poly.declared(opts, "degree", n_poly - 1, f"{p}arange")
    _tck_poly.declared(opts, "groups", groups, f"{p}poly_conv")
    layer = ChebyKANConv2d(
        in_g * groups, out_g * groups, (kh, kw), degree=n_poly - 1, **conv_options(opts, groups)
    )
    layer.to(float_dtype(*convs))
    coef = torch.cat([c.reshape(out_g, in_g, n_poly, kh, kw) for c in convs]).permute(0, 1, 3, 4, 2)
    layer.set_edge_coefficients(coef.reshape(-1, n_poly))
    return layer


def _export_kan(
    layer: KANConv2d, pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    if (
        layer.norm != "instance"
        or layer.prelu_weight is None
        or not layer.has_base
        or (layer.pad_input and layer.padding != (0, 0))
    ):
        raise IncompatibleError(
            f"layer {pos}: KANConv2DLayer has instance norm, PReLU, a base branch and pads "
            "its basis features"
        )
    n_basis = layer.n_basis
    kh, kw = layer.kernel_size
    for gi, block in enumerate(_tck_conv.group_blocks(layer)):
        state[f"{prefix}base_conv.{gi}.weight"] = block[:, :, -1].contiguous()
        spline = block[:, :, :n_basis].reshape(block.shape[0], -1, kh, kw)
        state[f"{prefix}spline_conv.{gi}.weight"] = spline.contiguous()
        state[f"{prefix}prelus.{gi}.weight"] = layer.prelu_weight.detach()[gi : gi + 1].clone()
    return {
        **_tck_conv.entry_shape(layer),
        "grid_size": layer.grid_size,
        "spline_order": layer.spline_order,
        "grid_range": list(layer.grid_range),
        **_tck_conv.entry_geometry(layer),
        "base_activation": layer.base_activation,
        "dropout": layer.dropout,
    }


def _export_kacn(
    layer: ChebyKANConv2d, pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    if layer.norm != "instance" or layer.prelu_weight is not None:
        raise IncompatibleError(f"layer {pos}: KACNConv2DLayer has instance norm and no PReLU")
    kh, kw = layer.kernel_size
    for gi, block in enumerate(_tck_conv.group_blocks(layer)):  # (O/g, I/g, D+1, kh, kw)
        weight = block.reshape(block.shape[0], -1, kh, kw)
        state[f"{prefix}poly_conv.{gi}.weight"] = weight.contiguous()
    state[f"{prefix}arange"] = torch.arange(layer.degree + 1).view(1, 1, -1, 1, 1)
    return {
        **_tck_conv.entry_shape(layer),
        "degree": layer.degree,
        **_tck_conv.entry_geometry(layer),
        "dropout": layer.dropout,
    }


Exporter = Callable[[list[nn.Module], int, str, dict[str, Tensor]], dict[str, Any]]
L = TypeVar("L", bound=nn.Module)


def _single(
    kind: type[L], export: Callable[[L, int, str, dict[str, Tensor]], dict[str, Any]]
) -> tuple[type[nn.Module], int, Exporter]:
    """The row of a layer written on its own (no LayerNorm or activation after it)."""

    def exporter(
        modules: list[nn.Module], pos: int, prefix: str, state: dict[str, Tensor]
    ) -> dict[str, Any]:
        layer = modules[pos]
        assert isinstance(layer, kind)
        return export(layer, pos, prefix, state)

    return kind, 1, exporter


# (first module's type, how many modules the upstream layer spans, its writer)
_EXPORTERS: tuple[tuple[type[nn.Module], int, Exporter], ...] = (
    (_PolyKANLayer, 3, _tck_poly.export_dense),
    (_PolyKANConv2d, 2, _tck_poly.export_conv),
    (WaveletKANLayer, 2, _tck_wavelet.export),
    (GramBottleneckKANLayer, 3, _tck_bottleneck.export_dense),
    _single(GramBottleneckKANConv2d, _tck_bottleneck.export),
    _single(ReLUBottleneckKANConv2d, _tck_bottleneck.export_relu),
    _single(WaveletKANConv2d, _tck_wavelet_conv.export),
    _single(RBFKANConv2d, _tck_rbf.export),
    _single(ChebyKANConv2d, _export_kacn),
    _single(KANConv2d, _export_kan),
)
_EXPORTABLE = (*(row[0] for row in _EXPORTERS), nn.LayerNorm, SiLU, Affine)


register(TorchConvKANFormat())
