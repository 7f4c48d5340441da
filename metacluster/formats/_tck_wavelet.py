"""torch-conv-kan's dense `WavKANLayer` (Wav-KAN), read and written for its format.

Per layer prefix p: `scale`, `translation`, `wavelet_weights`, `weight1` (the SiLU base),
all (O, I), and `bn` (BatchNorm1d(O): weight, bias, running_mean, running_var,
num_batches_tracked). The wavelet is not in the file: config.json's "wavelet_type"
(default "mexican_hat", upstream's). Evaluated models use the BatchNorm's running
statistics, so it is imported as the `Affine` it computes, and exported back as a
BatchNorm with mean 0 and variance 1 - eps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats._registry import KeyTracker, float_dtype
from metacluster.kan import Affine, WaveletKANLayer
from metacluster.kan.wavelet import WAVELETS

MARKER = "wavelet_weights"
LEAVES = ("wavelet_weights", "weight1", "translation", "scale")  # coef order [w, b, t, s]
LAYOUT = tuple((leaf, 2) for leaf in LEAVES)
BN_EPS = 1e-5  # BatchNorm1d's default, upstream's


def is_dense_wavkan(tensors: dict[str, Tensor], p: str) -> bool:
    return all(
        tensors.get(p + leaf) is not None and tensors[p + leaf].dim() == 2 for leaf in LEAVES
    )


def load(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    """[WaveletKANLayer, Affine] of one WavKANLayer."""
    wavelet = opts.get("wavelet_type") or "mexican_hat"
    if wavelet not in WAVELETS:
        raise FormatError(f"{p}: wavelet_type {wavelet!r} is not one of {sorted(WAVELETS)}")
    parts = [keys.get(p + leaf, 2) for leaf in LEAVES]
    n_out, n_in = parts[0].shape
    for leaf, part in zip(LEAVES, parts, strict=True):
        if part.shape != parts[0].shape:
            raise FormatError(
                f"{p}{leaf} has shape {tuple(part.shape)}, but {p}wavelet_weights has "
                f"{tuple(parts[0].shape)}"
            )
    if bool((parts[3] == 0).any()):
        raise FormatError(f"{p}scale has zeros: every edge's wavelet would divide by 0")
    layer = WaveletKANLayer(int(n_in), int(n_out), wavelet_type=wavelet)
    layer.to(float_dtype(*parts))
    layer.set_edge_coefficients(torch.stack(parts, dim=-1).reshape(-1, 4))
    stats = {
        leaf: keys.get(f"{p}bn.{leaf}", 1)
        for leaf in ("weight", "bias", "running_mean", "running_var")
    }
    keys.optional(f"{p}bn.num_batches_tracked")
    if any(t.shape[0] != n_out for t in stats.values()):
        raise FormatError(f"{p}bn does not have the layer's {n_out} outputs")
    norm = Affine(int(n_out))
    norm.to(float_dtype(*stats.values()))
    scale = stats["weight"] / torch.sqrt(stats["running_var"] + BN_EPS)
    with torch.no_grad():
        norm.scale.copy_(scale)
        norm.bias.copy_(stats["bias"] - stats["running_mean"] * scale)
    return [layer, norm]


def export(
    modules: list[nn.Module], pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    """Write modules[pos] (a WaveletKANLayer) and the Affine after it under `prefix`."""
    layer = modules[pos]
    assert isinstance(layer, WaveletKANLayer)
    norm = modules[pos + 1] if pos + 1 < len(modules) else None
    if not isinstance(norm, Affine):
        raise IncompatibleError(f"layer {pos}: a WavKANLayer is followed by its BatchNorm (Affine)")
    coef = layer.coef.detach()
    for index, leaf in enumerate(LEAVES):
        state[prefix + leaf] = coef[..., index].clone()
    n_out = layer.out_features
    state[prefix + "bn.weight"] = norm.scale.detach().clone()
    state[prefix + "bn.bias"] = norm.bias.detach().clone()
    state[prefix + "bn.running_mean"] = torch.zeros(n_out, dtype=coef.dtype)
    state[prefix + "bn.running_var"] = torch.full((n_out,), 1.0 - BN_EPS, dtype=coef.dtype)
    state[prefix + "bn.num_batches_tracked"] = torch.tensor(0)
    return {
        "layer_class": "WavKANLayer",
        "input_dim": layer.in_features,
        "output_dim": n_out,
        "wavelet_type": layer.wavelet_type,
    }
