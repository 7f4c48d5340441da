"""pykan checkpoints: 0.2.x `saveckpt` (`<prefix>_config.yml` + `<prefix>_state`) and
the legacy 0.0.x flat state dict; imported into `PyKANLayer`, exported for `KAN.loadckpt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import PYKAN_SUFFIXES, Checkpoint, pykan_files
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    check_chain,
    finite_range,
    float_dtype,
    layers_of,
    register,
)
from metacluster.formats.efficient_kan import bspline_shape
from metacluster.kan import BSplineKANLayer, KANModel, PyKANLayer

BASE_FUNS = ("silu", "identity", "zero")
_MAX_LISTED = 8


def _depth(ckpt: Checkpoint, key: str) -> int:
    depth = 0
    while key.format(depth) in ckpt.tensors:
        depth += 1
    return depth


def _per_layer(value: Any, layer: int) -> Any:
    return value[layer] if isinstance(value, list) else value


def extend_knots(grid: Tensor, order: int) -> Tensor:
    """pykan's extend_grid: `order` extra knots each side, step = mean interior step."""
    h = (grid[:, [-1]] - grid[:, [0]]) / (grid.shape[1] - 1)
    for _ in range(order):
        grid = torch.cat([grid[:, [0]] - h, grid], dim=1)
        grid = torch.cat([grid, grid[:, [-1]] + h], dim=1)
    return grid


def _refuse_symbolic(keys: KeyTracker, depth: int, enabled: bool) -> None:
    """Symbolic edges cannot be rebuilt from coefficients: name them and stop."""
    on: list[str] = []
    for layer in range(depth):
        mask = keys.optional(f"symbolic_fun.{layer}.mask")
        keys.optional(f"symbolic_fun.{layer}.affine")
        if mask is None or not enabled:
            continue
        for out_idx, in_idx in torch.nonzero(mask != 0).tolist():
            on.append(f"(layer {layer}, in {in_idx}, out {out_idx})")
    if on:
        shown = ", ".join(on[:_MAX_LISTED]) + (" ..." if len(on) > _MAX_LISTED else "")
        raise FormatError(
            f"pykan model has {len(on)} symbolic edge(s), which are not supported: {shown}; "
            "unfix them (or save before auto_symbolic) to import"
        )


def _widths(cfg: dict[str, Any] | None) -> list[tuple[int, int]] | None:
    if cfg is None or "width" not in cfg:
        return None
    out: list[tuple[int, int]] = []
    for w in cfg["width"]:
        if isinstance(w, int):
            out.append((w, 0))
        elif isinstance(w, list) and len(w) == 2 and all(isinstance(v, int) for v in w):
            out.append((w[0], w[1]))
        else:
            raise FormatError(f"pykan config width entry {w!r} is not understood")
    return out


class PykanFormat(FormatHandler):
    name = "pykan"
    layouts = (
        (("act_fun.0.coef", 3), ("node_scale_0", 1)),
        (("act_fun.0.coef", 2), ("biases.0.weight", 2)),
    )
    fixed_leaves = frozenset({"grid", "mask"})

    def matches(self, ckpt: Checkpoint) -> bool:
        coef = ckpt.tensors.get("act_fun.0.coef")
        if coef is None:
            return False
        if coef.dim() == 3:
            return "node_scale_0" in ckpt.tensors or ckpt.pykan_config is not None
        return coef.dim() == 2 and "biases.0.weight" in ckpt.tensors

    def load(self, ckpt: Checkpoint) -> KANModel:
        if ckpt.tensors["act_fun.0.coef"].dim() == 2:
            return self._load_legacy(ckpt)
        return self._load_v02(ckpt)

    # -- pykan 0.2.x -------------------------------------------------------
    def _load_v02(self, ckpt: Checkpoint) -> KANModel:
        cfg = ckpt.pykan_config or {}
        keys = KeyTracker(ckpt)
        depth = _depth(ckpt, "act_fun.{}.coef")
        widths = _widths(cfg)
        mult = [(pos, w[1]) for pos, w in enumerate(widths or []) if w[1] > 0]
        if mult:
            listed = ", ".join(f"layer {pos}: {n}" for pos, n in mult)
            raise FormatError(f"pykan multiplication nodes are not supported ({listed})")
        base = str(cfg.get("base_fun_name", "silu"))
        if base not in BASE_FUNS:
            raise FormatError(f"pykan base function {base!r} is not supported ({BASE_FUNS})")
        _refuse_symbolic(keys, depth, bool(cfg.get("symbolic_enabled", True)))
        layers: list[PyKANLayer] = []
        for li in range(depth):
            layers.append(self._layer_v02(keys, li, cfg, base))
        if widths is not None and [ly.in_features for ly in layers] != [w[0] for w in widths[:-1]]:
            raise FormatError("pykan config width does not match the state's layer shapes")
        return self.assemble(keys, layers, "bspline", layout="pykan-0.2", base=base)

    def _layer_v02(self, keys: KeyTracker, li: int, cfg: dict[str, Any], base: str) -> PyKANLayer:
        p = f"act_fun.{li}."
        coef = keys.get(p + "coef", 3)  # (I, O, G+k)
        grid = keys.get(p + "grid", 2)  # (I, G+2k+1)
        mask, scale_base, scale_sp = (
            keys.get(p + n, 2) for n in ("mask", "scale_base", "scale_sp")
        )
        n_in, n_out, width = coef.shape
        for name, t in (
            ("grid", grid[:, 0]),
            ("mask", mask),
            ("scale_base", scale_base),
            ("scale_sp", scale_sp),
        ):
            if t.shape[0] != n_in or (t.dim() == 2 and t.shape[1] != n_out):
                raise FormatError(f"{p}{name} has shape {tuple(t.shape)}, not matching coef")
        grid_size, order = bspline_shape(width, grid.shape[1], p + "coef")
        for name, value in (("grid", grid_size), ("k", order)):
            expected = _per_layer(cfg.get(name), li)
            if isinstance(expected, int) and expected != value:
                raise FormatError(
                    f"pykan config {name}={expected} does not match layer {li} ({value})"
                )
        default_range = [float(grid[0, order]), float(grid[0, -order - 1])]
        grid_range = finite_range(cfg.get("grid_range", default_range), "pykan config grid_range")
        layer = PyKANLayer(n_in, n_out, grid_size, order, grid_range, base)
        layer.to(float_dtype(coef, scale_base, scale_sp))
        layer.set_grid(grid.to(layer.grid.dtype))
        spline = (mask * scale_sp).unsqueeze(-1) * coef  # (I, O, G+k)
        parts = [spline]
        if layer.has_base:  # base "zero": no base column, scale_base has no effect
            parts.append((mask * scale_base).unsqueeze(-1))
        folded = torch.cat(parts, dim=-1)
        layer.set_edge_coefficients(folded.transpose(0, 1).reshape(-1, layer.coef_dim))
        with torch.no_grad():
            for name in ("subnode_scale", "subnode_bias", "node_scale", "node_bias"):
                affine = keys.get(f"{name}_{li}", 1)
                if affine.shape[0] != n_out:
                    raise FormatError(
                        f"{name}_{li} has {affine.shape[0]} entries, layer has {n_out} outputs"
                    )
                getattr(layer, name).copy_(affine)
        return layer

    # -- pykan 0.0.x -------------------------------------------------------
    def _load_legacy(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        depth = _depth(ckpt, "act_fun.{}.coef")
        _refuse_symbolic(keys, depth, True)
        layers: list[PyKANLayer] = []
        for li in range(depth):
            layers.append(self._layer_legacy(keys, li))
        return self.assemble(keys, layers, "bspline", layout="pykan-0.0", base="silu")

    def _layer_legacy(self, keys: KeyTracker, li: int) -> PyKANLayer:
        p = f"act_fun.{li}."
        coef = keys.get(p + "coef", 2)  # (O*I, G+k), row o*I + i
        grid = keys.get(p + "grid", 2)  # (O*I, G+1), un-extended
        bias = keys.get(f"biases.{li}.weight", 2)  # (1, O)
        mask, scale_base, scale_sp = (
            keys.get(p + n, 1) for n in ("mask", "scale_base", "scale_sp")
        )
        n_out = bias.shape[1]
        size, width = coef.shape
        if size % n_out or grid.shape[0] != size:
            raise FormatError(f"{p}coef rows ({size}) do not fit {n_out} outputs")
        n_in = size // n_out
        order = width - (grid.shape[1] - 1)
        grid_size = grid.shape[1] - 1
        if order < 0 or grid_size < 1:
            raise FormatError(f"{p}coef width {width} does not fit {grid.shape[1]} knots")
        rows = extend_knots(grid, order).reshape(n_out, n_in, -1)
        # pykan 0.0.x keeps a grid per edge; ours is per input, so every output of
        # an input must share it (true for grids made by update_grid_from_samples).
        if not torch.equal(rows, rows[:1].expand_as(rows)):
            bad = sorted({i for o, i in torch.nonzero((rows != rows[:1]).any(-1)).tolist()})
            raise FormatError(
                f"pykan 0.0.x layer {li}: edges of input(s) {bad[:_MAX_LISTED]} have different "
                "grids per output, which a per-input grid cannot represent"
            )
        grid_range = (float(grid[0, 0]), float(grid[0, -1]))
        layer = PyKANLayer(n_in, n_out, grid_size, order, grid_range, "silu")
        layer.to(float_dtype(coef, scale_base))
        layer.set_grid(rows[0].to(layer.grid.dtype))
        spline = (mask * scale_sp).unsqueeze(-1) * coef
        folded = torch.cat([spline, (mask * scale_base).unsqueeze(-1)], dim=-1)
        layer.set_edge_coefficients(folded)  # rows already (out, in)-major
        with torch.no_grad():
            layer.node_bias.copy_(bias[0])
        return layer

    # -- export (pykan 0.2.x saveckpt layout) ---------------------------------
    def export(self, model: KANModel, path: Path) -> list[Path]:
        # efficient-kan style layers are pykan layers with identity node affines.
        layers = layers_of(model, self.name, (BSplineKANLayer,))
        pk = [ly for ly in layers if isinstance(ly, BSplineKANLayer)]
        bases = {ly.base_activation for ly in pk}
        if len(bases) != 1:
            raise IncompatibleError("pykan needs one base function for the whole model")
        check_chain([(ly.in_features, ly.out_features) for ly in pk], self.name)
        prefix = _strip_pykan_suffix(path)
        state: dict[str, Tensor] = {}
        cfg: dict[str, Any] = _export_config(pk, prefix, bases.pop())
        for li, ly in enumerate(pk):
            for name, fill in _AFFINES.items():
                value = getattr(ly, name, None)
                state[f"{name}_{li}"] = (
                    value.detach().clone()
                    if isinstance(value, Tensor)
                    else torch.full((ly.out_features,), fill, dtype=ly.coef.dtype)
                )
        for li, ly in enumerate(pk):
            coef = ly.coef.detach()  # (O, I, L)
            spline = coef[..., : ly.n_basis] if ly.has_base else coef
            state[f"act_fun.{li}.grid"] = ly.grid.detach().clone()
            state[f"act_fun.{li}.coef"] = spline.transpose(0, 1).contiguous()
            ones = torch.ones(ly.in_features, ly.out_features, dtype=coef.dtype)
            state[f"act_fun.{li}.mask"] = ones.clone()
            state[f"act_fun.{li}.scale_base"] = (
                coef[..., -1].T.contiguous() if ly.has_base else torch.zeros_like(ones)
            )
            state[f"act_fun.{li}.scale_sp"] = ones.clone()
        for li, ly in enumerate(pk):
            zeros = torch.zeros(ly.out_features, ly.in_features, dtype=ly.coef.dtype)
            state[f"symbolic_fun.{li}.mask"] = zeros
            state[f"symbolic_fun.{li}.affine"] = torch.zeros(*zeros.shape, 4, dtype=zeros.dtype)
        config_file, state_file = pykan_files(prefix)
        cache_file = prefix.with_name(prefix.name + "_cache_data")
        prefix.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(cfg, default_flow_style=False), encoding="utf-8")
        save_torch_state(state, state_file)
        # KAN.loadckpt always reads `_cache_data`; we hold no user data, so it is None.
        torch.save(None, cache_file)
        return [config_file, state_file, cache_file]


# MultKAN's per-node affines and their identity values.
_AFFINES = {"node_bias": 0.0, "node_scale": 1.0, "subnode_bias": 0.0, "subnode_scale": 1.0}


def _strip_pykan_suffix(path: Path) -> Path:
    for suffix in PYKAN_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _export_config(layers: list[BSplineKANLayer], prefix: Path, base: str) -> dict[str, Any]:
    sizes = [ly.grid_size for ly in layers]
    orders = [ly.spline_order for ly in layers]
    ranges = {tuple(ly.grid_range) for ly in layers}
    grid_range = list(next(iter(ranges))) if len(ranges) == 1 else [-1.0, 1.0]
    cfg: dict[str, Any] = {
        "width": [[layers[0].in_features, 0]] + [[ly.out_features, 0] for ly in layers],
        "grid": sizes[0] if len(set(sizes)) == 1 else sizes,
        "k": orders[0] if len(set(orders)) == 1 else orders,
        "mult_arity": 2,
        "base_fun_name": base,
        "symbolic_enabled": True,
        "affine_trainable": False,
        "grid_eps": 0.02,
        "grid_range": [float(v) for v in grid_range],
        "sp_trainable": True,
        "sb_trainable": True,
        "state_id": 0,
        "auto_save": False,
        "ckpt_path": str(prefix.parent),
        "round": 0,
        "device": "cpu",
    }
    for li, ly in enumerate(layers):
        cfg[f"symbolic.funs_name.{li}"] = [["0"] * ly.in_features for _ in range(ly.out_features)]
    return cfg


register(PykanFormat())
