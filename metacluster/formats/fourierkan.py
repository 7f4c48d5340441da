"""FourierKAN (GistNoesis) checkpoints: `fouriercoeffs` [2, O, I, G] and `bias` [1, O]
per NaiveFourierKANLayer, in a plain stack (LayerNorms between layers allowed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metacluster.errors import FormatError
from metacluster.formats._registry import KeyTracker, float_dtype, register
from metacluster.formats._stack import LayerStackFormat
from metacluster.kan import FourierKANLayer, KANLayer


class FourierKANFormat(LayerStackFormat):
    name = "fourierkan"
    leaf = "fouriercoeffs"
    layouts = ((("fouriercoeffs", 4),),)
    layer_type = FourierKANLayer

    def load_layer(self, keys: KeyTracker, prefix: str) -> KANLayer:
        coeffs = keys.get(prefix + "fouriercoeffs", 4)  # (2, O, I, G)
        if coeffs.shape[0] != 2:
            raise FormatError(f"{prefix}fouriercoeffs must have 2 (cos, sin) halves")
        _, n_out, n_in, grid = coeffs.shape
        bias = keys.optional(prefix + "bias")
        if bias is not None and bias.numel() != n_out:
            raise FormatError(f"{prefix}bias has {bias.numel()} entries, layer has {n_out}")
        layer = FourierKANLayer(n_in, n_out, grid, bias=bias is not None)
        layer.to(float_dtype(coeffs))
        layer.set_edge_coefficients(torch.cat([coeffs[0], coeffs[1]], dim=-1).reshape(-1, 2 * grid))
        if bias is not None:
            assert layer.bias is not None
            with torch.no_grad():
                layer.bias.copy_(bias.reshape(-1))
        return layer

    def export_layer(self, layer: KANLayer, prefix: str, state: dict[str, Tensor]) -> None:
        assert isinstance(layer, FourierKANLayer)
        coef, g = layer.coef.detach(), layer.grid_size
        state[prefix + "fouriercoeffs"] = torch.stack([coef[..., :g], coef[..., g:]]).contiguous()
        if layer.bias is not None:
            state[prefix + "bias"] = layer.bias.detach().reshape(1, -1).clone()


register(FourierKANFormat())
