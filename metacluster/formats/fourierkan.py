"""FourierKAN (GistNoesis) checkpoints: `fouriercoeffs` [2, O, I, G] and `bias` [1, O]
per NaiveFourierKANLayer, in a plain stack (LayerNorms between layers allowed).
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
from metacluster.formats.chebykan import load_layernorm
from metacluster.kan import FourierKANLayer, KANModel


class FourierKANFormat(FormatHandler):
    name = "fourierkan"

    def matches(self, ckpt: Checkpoint) -> bool:
        return any(k == "fouriercoeffs" or k.endswith(".fouriercoeffs") for k in ckpt.tensors)

    def load(self, ckpt: Checkpoint) -> KANModel:
        keys = KeyTracker(ckpt)
        layers: list[nn.Module] = []
        for kind, prefix in stack_modules(ckpt, "fouriercoeffs"):
            if kind == "layernorm":
                layers.append(load_layernorm(keys, prefix))
                continue
            coeffs = keys.get(prefix + "fouriercoeffs", 4)  # (2, O, I, G)
            if coeffs.shape[0] != 2:
                raise FormatError(f"{prefix}fouriercoeffs must have 2 (cos, sin) halves")
            _, n_out, n_in, grid = coeffs.shape
            bias = keys.optional(prefix + "bias")
            if bias is not None and bias.numel() != n_out:
                raise FormatError(f"{prefix}bias has {bias.numel()} entries, layer has {n_out}")
            layer = FourierKANLayer(n_in, n_out, grid, bias=bias is not None)
            layer.to(float_dtype(coeffs))
            layer.set_edge_coefficients(
                torch.cat([coeffs[0], coeffs[1]], dim=-1).reshape(-1, 2 * grid)
            )
            if bias is not None:
                assert layer.bias is not None
                with torch.no_grad():
                    layer.bias.copy_(bias.reshape(-1))
            layers.append(layer)
        keys.check_all_used(self.name)
        check_chain(chain_widths(layers), self.name)
        return KANModel(layers, meta={"family": "fourier", "format": self.name})

    def export(self, model: KANModel, path: Path) -> list[Path]:
        state: dict[str, torch.Tensor] = {}
        for pos, layer in enumerate(layers_of(model, self.name, (FourierKANLayer, nn.LayerNorm))):
            if isinstance(layer, FourierKANLayer):
                coef = layer.coef.detach()
                g = layer.grid_size
                state[f"layers.{pos}.fouriercoeffs"] = torch.stack(
                    [coef[..., :g], coef[..., g:]]
                ).contiguous()
                if layer.bias is not None:
                    state[f"layers.{pos}.bias"] = layer.bias.detach().reshape(1, -1).clone()
            else:
                assert isinstance(layer, nn.LayerNorm)
                state[f"layers.{pos}.weight"] = layer.weight.detach().clone()
                state[f"layers.{pos}.bias"] = layer.bias.detach().clone()
        save_torch_state(state, path)
        return [path]


register(FourierKANFormat())
