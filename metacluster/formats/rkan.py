"""rKAN (PyPI `rkan` 0.0.3): `nn.Sequential`s of `nn.Linear` and rKAN's rational
activations `JacobiRKAN(degree)` / `PadeRKAN(degree_p, degree_q)`, as its README builds them
(`Linear, JacobiRKAN(3), Linear, PadeRKAN(2, 6), Linear`).

Keys: a JacobiRKAN module holds `alpha`, `beta`, `iota` (each (1,)); a PadeRKAN module
`alpha_p`, `beta_p`, `zeta_p` (1,), `w_p` (degree_p,) and the same with `_q`; a linear
`weight` (O, I) and `bias`. Each activation with the linear right after it becomes one
KAN layer (`JacobiRKANLayer` / `PadeRKANLayer`); any other linear (the input one) is a
`Linear` glue module.

JacobiRKAN's degree is not in its state dict: config.json (or a spec's options) gives it
as `"degree": n` (every JacobiRKAN module) or `"degrees": [n, ...]` (one per JacobiRKAN
module, in order). `"degree_p"` / `"degree_q"` in the options, when given, must agree with
the w_p / w_q lengths. A PadeRKAN whose denominator Q vanishes inside `input_range`
(default [-20, 20]) is refused at import, naming the module and where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError
from metacluster.formats._checkpoint import Checkpoint, module_order
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    float_dtype,
    input_range,
    layers_of,
    register,
)
from metacluster.formats._stack import leaves_by_module
from metacluster.kan import JacobiRKANLayer, KANModel, Linear, PadeRKANLayer
from metacluster.kan.rkan import MAX_DEGREE, pade_poles

JACOBI = frozenset({"alpha", "beta", "iota"})
PADE = frozenset(f"{n}_{s}" for n in ("alpha", "beta", "zeta", "w") for s in "pq")
_KAN = JacobiRKANLayer | PadeRKANLayer


def _spec_options(ckpt: Checkpoint) -> dict[str, Any]:
    """Options of an "rkan" entry of the spec beside the file (what `export` writes),
    for a read with format="rkan" (the spec format reads them itself)."""
    entries = (ckpt.spec or {}).get("layers")
    found: dict[str, Any] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("kind") == RKANFormat.name:
            options = entry.get("options")
            if isinstance(options, dict):
                found.update(options)
    return found


def _int_option(opts: dict[str, Any], name: str) -> int | None:
    value = opts.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"config: {name} must be an integer, got {value!r}")
    return value


class RKANFormat(FormatHandler):
    name = "rkan"
    layouts = (
        (("alpha", 1), ("beta", 1), ("iota", 1)),
        (("w_p", 1), ("w_q", 1), ("zeta_p", 1), ("zeta_q", 1)),
    )

    def _modules(self, ckpt: Checkpoint) -> list[tuple[str, str]]:
        """[(kind, prefix)] in forward order; kind "jacobi", "pade" or "linear"."""
        found: dict[str, str] = {}
        for prefix, leaves in leaves_by_module(ckpt).items():
            if leaves == JACOBI:
                found[prefix] = "jacobi"
            elif leaves == PADE:
                found[prefix] = "pade"
            elif (
                "weight" in leaves
                and leaves <= {"weight", "bias"}
                and ckpt.tensors[prefix + "weight"].dim() == 2
            ):
                found[prefix] = "linear"
        return [(found[p], p) for p in module_order(ckpt, list(found))]

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(kind != "linear" for kind, _ in self._modules(ckpt))

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        opts = {**(ckpt.hf_config or {}), **_spec_options(ckpt), **ckpt.options}
        lo, hi = input_range(opts)
        modules = self._modules(ckpt)
        jacobi_degrees = self._jacobi_degrees(opts, sum(k == "jacobi" for k, _ in modules))
        layers: list[nn.Module] = []
        pos = 0
        while pos < len(modules):
            kind, prefix = modules[pos]
            if kind == "linear":
                layers.append(self._linear(keys, prefix))
                pos += 1
                continue
            if pos + 1 >= len(modules) or modules[pos + 1][0] != "linear":
                raise FormatError(
                    f"rkan: activation {prefix.rstrip('.') or '(root)'} is not followed by a "
                    "linear layer; each rKAN activation must feed an nn.Linear"
                )
            fc = modules[pos + 1][1]
            if kind == "jacobi":
                layers.append(self._jacobi(keys, prefix, fc, jacobi_degrees.pop(0)))
            else:
                layers.append(self._pade(keys, prefix, fc, opts, lo, hi))
            pos += 2
        keys.check_all_used(self.name)
        widths = [
            (m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear | _KAN)
        ]
        for i in range(1, len(widths)):
            if widths[i][0] != widths[i - 1][1]:
                raise FormatError(
                    f"rkan layers do not chain: layer {i - 1} gives {widths[i - 1][1]} outputs "
                    f"but layer {i} takes {widths[i][0]} inputs"
                )
        families = sorted({m.family for m in layers if isinstance(m, _KAN)})
        return KANModel(layers, meta={"family": "+".join(families), "format": self.name})

    @staticmethod
    def _jacobi_degrees(opts: dict[str, Any], count: int) -> list[int]:
        if count == 0:
            return []
        one = _int_option(opts, "degree")
        many = opts.get("degrees")
        if many is not None:
            if not (
                isinstance(many, list)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in many)
            ):
                raise FormatError("config: degrees must be a list of integers")
            if len(many) != count:
                raise FormatError(
                    f"config: degrees lists {len(many)} degree(s) for {count} JacobiRKAN module(s)"
                )
            degrees = list(many)
        elif one is not None:
            degrees = [one] * count
        else:
            raise FormatError(
                "rkan: JacobiRKAN keeps its degree out of the state dict; give it in config.json "
                'or the spec\'s options as "degree": n (or "degrees": [n, ...] per module)'
            )
        for d in degrees:
            if not 1 <= d <= MAX_DEGREE:
                raise FormatError(f"config: JacobiRKAN degree must be 1..{MAX_DEGREE}, got {d}")
        return degrees

    @staticmethod
    def _fc(keys: KeyTracker, fc: str) -> tuple[Tensor, Tensor | None]:
        weight = keys.get(fc + "weight", 2)
        bias = keys.optional(fc + "bias")
        if bias is not None and tuple(bias.shape) != (int(weight.shape[0]),):
            raise FormatError(
                f"{fc}bias has shape {tuple(bias.shape)}, expected ({int(weight.shape[0])},)"
            )
        return weight, bias

    def _linear(self, keys: KeyTracker, prefix: str) -> Linear:
        weight, bias = self._fc(keys, prefix)
        layer = Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
        layer.to(float_dtype(weight))
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    @staticmethod
    def _scalars(keys: KeyTracker, act: str, names: tuple[str, ...]) -> dict[str, Tensor]:
        out = {}
        for name in names:
            value = keys.get(act + name)
            if tuple(value.shape) != (1,):
                raise FormatError(
                    f"{act}{name} has shape {tuple(value.shape)}, expected (1,): rKAN's "
                    "activations hold one value per parameter"
                )
            out[name] = value
        return out

    def _fill(
        self, layer: _KAN, weight: Tensor, bias: Tensor | None, shared: dict[str, Tensor]
    ) -> None:
        layer.to(float_dtype(weight, *shared.values()))
        layer.set_edge_coefficients(weight.reshape(-1, 1))
        with torch.no_grad():
            for name, value in shared.items():
                getattr(layer, name).copy_(value)
            if bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(bias)

    def _jacobi(self, keys: KeyTracker, act: str, fc: str, degree: int) -> JacobiRKANLayer:
        shared = self._scalars(keys, act, ("alpha", "beta", "iota"))
        weight, bias = self._fc(keys, fc)
        layer = JacobiRKANLayer(
            int(weight.shape[1]), int(weight.shape[0]), degree=degree, bias=bias is not None
        )
        self._fill(layer, weight, bias, shared)
        return layer

    def _pade(
        self, keys: KeyTracker, act: str, fc: str, opts: dict[str, Any], lo: float, hi: float
    ) -> PadeRKANLayer:
        shared = self._scalars(
            keys, act, ("alpha_p", "beta_p", "zeta_p", "alpha_q", "beta_q", "zeta_q")
        )
        degrees = {}
        for side in "pq":
            w = keys.get(f"{act}w_{side}", 1)
            n = int(w.shape[0])
            declared = _int_option(opts, f"degree_{side}")
            if declared is not None and declared != n:
                raise FormatError(
                    f"{act}w_{side} has {n} coefficient(s) but the config declares "
                    f"degree_{side} = {declared}"
                )
            if not 2 <= n <= MAX_DEGREE:
                raise FormatError(
                    f"{act}w_{side} has {n} coefficient(s); PadeRKAN runs with 2..{MAX_DEGREE}"
                )
            degrees[side] = n
            shared[f"w_{side}"] = w
        weight, bias = self._fc(keys, fc)
        layer = PadeRKANLayer(
            int(weight.shape[1]),
            int(weight.shape[0]),
            degree_p=degrees["p"],
            degree_q=degrees["q"],
            bias=bias is not None,
        )
        self._fill(layer, weight, bias, shared)
        poles = pade_poles(layer, lo, hi)
        if poles:
            raise FormatError(
                f"{act}w_q: the PadeRKAN denominator is 0 at x = {poles[0]:.4g}, inside the data "
                f"range [{lo:g}, {hi:g}] ({len(poles)} sign change(s)); the model would give "
                "inf/NaN there (set input_range if the data lies elsewhere)"
            )
        return layer

    def export(self, model: KANModel, path: Path) -> list[Path]:
        """`nn.Sequential` keys: a glue Linear takes one index, a KAN layer two (its
        activation, then its linear); with JacobiRKAN layers, a `<file>.spec.json`
        beside it names their degrees."""
        layers = layers_of(model, self.name, (JacobiRKANLayer, PadeRKANLayer, Linear))
        state: dict[str, Tensor] = {}
        index = 0
        for layer in layers:
            if isinstance(layer, Linear):
                state[f"{index}.weight"] = layer.weight.detach().clone()
                if layer.bias is not None:
                    state[f"{index}.bias"] = layer.bias.detach().clone()
                index += 1
                continue
            assert isinstance(layer, _KAN)
            for name, value in layer.named_parameters():
                if name not in ("coef", "bias"):
                    state[f"{index}.{name}"] = value.detach().clone()
            state[f"{index + 1}.weight"] = (
                layer.coef.detach().reshape(layer.out_features, -1).clone()
            )
            if layer.bias is not None:
                state[f"{index + 1}.bias"] = layer.bias.detach().clone()
            index += 2
        save_torch_state(state, path)
        degrees = [m.degree for m in layers if isinstance(m, JacobiRKANLayer)]
        if not degrees:
            return [path]
        # JacobiRKAN's degree is not in the state dict: a spec beside the file says it,
        # so that the export reads back (`<file>.spec.json` is found next to it).
        spec = path.with_name(path.name + ".spec.json")
        entry = {"kind": self.name, "options": {"degrees": degrees}}
        spec.write_text(json.dumps({"layers": [entry]}, indent=2), encoding="utf-8")
        return [path, spec]


register(RKANFormat())
