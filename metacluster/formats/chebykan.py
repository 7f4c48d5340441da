"""ChebyKAN (SynodicMonth) checkpoints: `cheby_coeffs` [I, O, D+1] per layer, with the
README's LayerNorms between layers found automatically; optional `arange` buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metacluster.errors import FormatError
from metacluster.formats._registry import KeyTracker, float_dtype, register
from metacluster.formats._stack import LayerStackFormat
from metacluster.kan import ChebyKANLayer, KANLayer


class ChebyKANFormat(LayerStackFormat):
    name = "chebykan"
    leaf = "cheby_coeffs"
    layouts = ((("cheby_coeffs", 3),),)
    layer_type = ChebyKANLayer

    def load_layer(self, keys: KeyTracker, prefix: str) -> KANLayer:
        coeffs = keys.get(prefix + "cheby_coeffs", 3)  # (I, O, D+1)
        n_in, n_out, width = coeffs.shape
        arange = keys.optional(prefix + "arange")
        if arange is not None and arange.tolist() != list(range(width)):
            raise FormatError(f"{prefix}arange is not 0..{width - 1}")
        layer = ChebyKANLayer(n_in, n_out, width - 1)
        layer.to(float_dtype(coeffs))
        layer.set_edge_coefficients(coeffs.transpose(0, 1).reshape(-1, width))
        return layer

    def export_layer(self, layer: KANLayer, prefix: str, state: dict[str, Tensor]) -> None:
        assert isinstance(layer, ChebyKANLayer)
        state[prefix + "cheby_coeffs"] = layer.coef.detach().transpose(0, 1).contiguous()
        state[prefix + "arange"] = torch.arange(layer.degree + 1)


register(ChebyKANFormat())
