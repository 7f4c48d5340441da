"""KAT's GR-KAN (Adamdad/kat, rational_kat_cu): `KAT_Group` rational activations, each
followed by a linear layer, imported into `GroupRationalKANLayer` and exported back.

Keys: per activation module a, `a.weight_numerator` (1, m+1) (shared by the groups) and
`a.weight_denominator` (G, n); per linear module f, `f.weight` (O, I) and `f.bias`.
KAT's `KAN` block registers fc1, act1, act2, fc2 and runs act1 -> fc1 -> act2 -> fc2, so
the activations and the linears are paired in natural key order (act1 with fc1, ...).
config.json (or a spec's options) may say `"denominator": "signed"` for checkpoints of
the pure-torch fallback `KAT_Group_Torch` (default "abs": the CUDA / Triton kernel KAT
trains with) and the `input_range` the data lies in (default [-20, 20], the range
rational_kat_cu's init.json fits over); a signed denominator with a zero in it is
refused at import, naming the module, the group and where.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._checkpoint import Checkpoint, module_prefixes, natural_key
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
from metacluster.kan import GroupRationalKANLayer, KANModel
from metacluster.kan.rational import DENOMINATORS, real_poles


def _options(ckpt: Checkpoint) -> tuple[str, tuple[float, float]]:
    opts = {**(ckpt.hf_config or {}), **ckpt.options}
    mode = opts.get("denominator", "abs")
    if mode not in DENOMINATORS:
        raise FormatError(f"config: denominator must be one of {DENOMINATORS}, got {mode!r}")
    return mode, input_range(opts)


class KATFormat(FormatHandler):
    name = "kat"
    layouts = ((("weight_numerator", 2), ("weight_denominator", 2)),)

    def _pairs(self, ckpt: Checkpoint) -> list[tuple[str, str]]:
        """(activation prefix, linear prefix) in forward order."""
        acts = [
            p
            for p in module_prefixes(ckpt, "weight_numerator")
            if p + "weight_denominator" in ckpt.tensors
        ]
        linears = sorted(
            (
                p
                for p, leaves in leaves_by_module(ckpt).items()
                if "weight" in leaves
                and leaves <= {"weight", "bias"}
                and ckpt.tensors[p + "weight"].dim() == 2
            ),
            key=natural_key,
        )
        acts.sort(key=natural_key)
        if len(acts) != len(linears):
            raise FormatError(
                f"kat: {len(acts)} rational activations ({', '.join(acts)}) but {len(linears)} "
                f"linear layers ({', '.join(linears)}); each activation feeds one linear"
            )
        return list(zip(acts, linears, strict=True))

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(
            p + "weight_denominator" in ckpt.tensors
            for p in module_prefixes(ckpt, "weight_numerator")
        )

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        mode, (lo, hi) = _options(ckpt)
        layers = [self._layer(keys, act, fc, mode, lo, hi) for act, fc in self._pairs(ckpt)]
        return self.assemble(keys, layers, "rational")

    def _layer(
        self, keys: KeyTracker, act: str, fc: str, mode: str, lo: float, hi: float
    ) -> GroupRationalKANLayer:
        num = keys.get(act + "weight_numerator", 2)
        den = keys.get(act + "weight_denominator", 2)
        weight = keys.get(fc + "weight", 2)
        bias = keys.optional(fc + "bias")
        groups = int(den.shape[0])
        n_out, n_in = (int(v) for v in weight.shape)
        if num.shape[0] not in (1, groups) or n_in % groups or den.shape[1] < 1:
            raise FormatError(
                f"{act}weight_numerator {tuple(num.shape)} and weight_denominator "
                f"{tuple(den.shape)} do not fit {fc}weight {tuple(weight.shape)} "
                f"({groups} groups must divide its {n_in} inputs)"
            )
        if bias is not None and tuple(bias.shape) != (n_out,):
            raise FormatError(f"{fc}bias has shape {tuple(bias.shape)}, expected ({n_out},)")
        if mode == "signed":
            poles = real_poles(den, lo, hi)
            if poles:
                group, where = poles[0]
                raise FormatError(
                    f"{act}weight_denominator: group {group}'s denominator is 0 at x = {where:.4g}, "
                    f"inside the data range [{lo:g}, {hi:g}] ({len(poles)} pole(s)); the model "
                    "would give inf/NaN there (set input_range if the data lies elsewhere)"
                )
        layer = GroupRationalKANLayer(
            n_in,
            n_out,
            num_groups=groups,
            numerator_order=int(num.shape[1]) - 1,
            denominator_order=int(den.shape[1]),
            shared_numerator=num.shape[0] == 1,
            denominator=mode,
            bias=bias is not None,
        )
        layer.to(float_dtype(num, den, weight))
        layer.set_edge_coefficients(weight.reshape(-1, 1))
        with torch.no_grad():
            layer.numerator.copy_(num)
            layer.denominator.copy_(den)
            if bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(bias)
        return layer

    def export(self, model: KANModel, path: Path) -> list[Path]:
        layers = layers_of(model, self.name, (GroupRationalKANLayer,))
        # KAT's two-layer `KAN` block, or a stack of single-pair `KANLinear`s.
        names = (
            [("act1.", "fc1."), ("act2.", "fc2.")]
            if len(layers) == 2
            else [(f"layers.{i}.act1.", f"layers.{i}.fc1.") for i in range(len(layers))]
        )
        state: dict[str, Tensor] = {}
        for pos, (layer, (act, fc)) in enumerate(zip(layers, names, strict=True)):
            assert isinstance(layer, GroupRationalKANLayer)
            if not layer.shared_numerator:
                raise IncompatibleError(
                    f"layer {pos}: KAT_Group shares one numerator by its groups"
                )
            state[fc + "weight"] = layer.coef.detach().reshape(layer.out_features, -1).clone()
            if layer.bias is not None:
                state[fc + "bias"] = layer.bias.detach().clone()
            state[act + "weight_numerator"] = layer.numerator.detach().clone()
            state[act + "weight_denominator"] = layer.denominator.detach().clone()
        save_torch_state(state, path)
        return [path]


register(KATFormat())
