"""ChebyKAN (SynodicMonth) checkpoints: `cheby_coeffs` [I, O, D+1] per layer, with the
README's LayerNorms between layers found automatically; optional `arange` buffer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metacluster.errors import FormatError
from metacluster.formats._checkpoint import Checkpoint
from metacluster.formats._io import save_torch_state
from metacluster.formats._registry import (
    FormatHandler,
    KeyTracker,
    chain_widths,
    check_chain,
    float_dtype,
    layers_of,
    register,
)
from metacluster.formats._stack import stack_modules
from metacluster.kan import ChebyKANLayer, KANModel, LayerNorm


def load_layernorm(keys: KeyTracker, prefix: str) -> LayerNorm:
    weight, bias = keys.get(prefix + "weight", 1), keys.get(prefix + "bias", 1)
    norm = LayerNorm(int(weight.shape[0]))
    norm.to(float_dtype(weight))
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    return norm


class ChebyKANFormat(FormatHandler):
    name = "chebykan"

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(k == "cheby_coeffs" or k.endswith(".cheby_coeffs") for k in ckpt.tensors)

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[nn.Module] = []
        for kind, prefix in stack_modules(ckpt, "cheby_coeffs"):
            if kind == "layernorm":
                layers.append(load_layernorm(keys, prefix))
                continue
            coeffs = keys.get(prefix + "cheby_coeffs", 3)  # (I, O, D+1)
            n_in, n_out, width = coeffs.shape
            arange = keys.optional(prefix + "arange")
            if arange is not None and arange.tolist() != list(range(width)):
                raise FormatError(f"{prefix}arange is not 0..{width - 1}")
            layer = ChebyKANLayer(n_in, n_out, width - 1)
            layer.to(float_dtype(coeffs))
            layer.set_edge_coefficients(coeffs.transpose(0, 1).reshape(-1, width))
            layers.append(layer)
        keys.check_all_used(self.name)
        check_chain(chain_widths(layers), self.name)
        return KANModel(layers, meta={"family": "chebyshev", "format": self.name})

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, torch.Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (ChebyKANLayer, nn.LayerNorm))):
            if isinstance(layer, ChebyKANLayer):
                coef = layer.coef.detach()
                state[f"layers.{pos}.cheby_coeffs"] = coef.transpose(0, 1).contiguous()
                state[f"layers.{pos}.arange"] = torch.arange(layer.degree + 1)
            else:
                assert isinstance(layer, nn.LayerNorm)
                state[f"layers.{pos}.weight"] = layer.weight.detach().clone()
                state[f"layers.{pos}.bias"] = layer.bias.detach().clone()
        save_torch_state(state, path)
        return [path]


register(ChebyKANFormat())
