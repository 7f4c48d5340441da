"""torch-conv-kan's `WavKANConv2DLayer`, read and written for its format.

Per layer prefix p and group j (I' = I/g inputs, O' = O/g outputs):
`base_conv.{j}.weight` (O', I', kh, kw); `wavelet_conv.{j}.scale` and `.translation`
(1, O', I', 1, 1); `wavelet_conv.{j}.wavelet_weights.weight` (O', I', kh, kw) for
wav_version "fast" (the default), (O', 1, I', kh, kw) for "fast_plus_one" (a Conv3d over
the input axis: the same numbers), or `wavelet_conv.{j}.wavelet_weights.{o}.weight`
(1, I', kh, kw) per output for "base"; `wavelet_conv.{j}.wavelet_out.weight`
(O', O', 1, 1); `layer_norm.{j}` a BatchNorm2d(O') (weight, bias, running_mean,
running_var, num_batches_tracked). The wavelet is not in the file: config.json's
"wavelet_type" (default "mexican_hat", upstream's; "shannon" windows over the input axis
and is refused). Exported as wav_version "fast".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import FormatError, IncompatibleError
from metacluster.formats import _tck_conv
from metacluster.formats._registry import KeyTracker, float_dtype
from metacluster.kan.wavelet import WAVELETS
from metacluster.kan.wavelet_conv import WaveletKANConv2d

MARKER = "wavelet_conv.0.scale"
LAYOUT = (("wavelet_conv.0.scale", 5), ("wavelet_conv.0.translation", 5), ("base_conv.0.weight", 4))
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_wavkan_conv(tensors: dict[str, Tensor], p: str) -> bool:
    scale = tensors.get(p + MARKER)
    return scale is not None and scale.dim() == 5 and p + "base_conv.0.weight" in tensors


def _kernel(keys: KeyTracker, q: str, out_g: int, in_g: int, kh: int, kw: int) -> Tensor:
    """wavelet_weights of one group as (O', I', kh, kw), whichever wav_version wrote it."""
    tensors = keys.ckpt.tensors
    if q + "wavelet_weights.weight" in tensors:
        w = keys.get(q + "wavelet_weights.weight")
        if tuple(w.shape) in ((out_g, in_g, kh, kw), (out_g, 1, in_g, kh, kw)):
            return w.reshape(out_g, in_g, kh, kw)
        raise FormatError(
            f"{q}wavelet_weights.weight has shape {tuple(w.shape)}, expected "
            f"({out_g}, {in_g}, {kh}, {kw}) from {q}scale and the base_conv"
        )
    rows = keys.numbered(q, "wavelet_weights", 4)
    if len(rows) != out_g or any(tuple(r.shape) != (1, in_g, kh, kw) for r in rows):
        raise FormatError(
            f"{q}wavelet_weights has {len(rows)} convs of shape "
            f"{tuple(rows[0].shape) if rows else ()}, expected {out_g} of (1, {in_g}, {kh}, {kw})"
        )
    return torch.cat(rows)


def load(keys: KeyTracker, p: str, opts: dict[str, Any]) -> list[nn.Module]:
    wavelet = opts.get("wavelet_type") or "mexican_hat"
    if wavelet not in WAVELETS:
        raise FormatError(f"{p}: wavelet_type {wavelet!r} is not one of {sorted(WAVELETS)}")
    bases = keys.numbered(p, "base_conv", 4)
    groups = len(bases)
    out_g, in_g, kh, kw = (int(v) for v in bases[0].shape)
    for name, value in (("groups", groups),):
        if opts.get(name) not in (None, value):
            raise FormatError(
                f"{p}base_conv has {value} group(s), but the config declares {name} {opts[name]}"
            )
    coefs, mixes, norms = [], [], []
    for j in range(groups):
        q = f"{p}wavelet_conv.{j}."
        if tuple(bases[j].shape) != (out_g, in_g, kh, kw):
            raise FormatError(f"{p}base_conv.{j}.weight differs in shape from base_conv.0")
        st = [keys.get(q + leaf, 5) for leaf in ("scale", "translation")]
        for leaf, t in zip(("scale", "translation"), st, strict=True):
            if tuple(t.shape) != (1, out_g, in_g, 1, 1):
                raise FormatError(
                    f"{q}{leaf} has shape {tuple(t.shape)}, expected (1, {out_g}, {in_g}, 1, 1) "
                    f"from {p}base_conv.{j}.weight"
                )
        if bool((st[0] == 0).any()):
            raise FormatError(f"{q}scale has zeros: those edges' wavelets would divide by 0")
        w = _kernel(keys, q, out_g, in_g, kh, kw)
        mix = keys.get(q + "wavelet_out.weight", 4)
        if tuple(mix.shape) != (out_g, out_g, 1, 1):
            raise FormatError(
                f"{q}wavelet_out.weight has shape {tuple(mix.shape)}, expected "
                f"({out_g}, {out_g}, 1, 1)"
            )
        coefs.append(
            torch.cat(
                [
                    w.reshape(out_g, in_g, kh * kw),
                    bases[j].reshape(out_g, in_g, kh * kw),
                    st[1].reshape(out_g, in_g, 1),
                    st[0].reshape(out_g, in_g, 1),
                ],
                dim=-1,
            )
        )
        mixes.append(mix.reshape(out_g, out_g))
        stats = {leaf: keys.get(f"{p}layer_norm.{j}.{leaf}") for leaf in BN}
        if any(stats[leaf].shape != (out_g,) for leaf in BN[:4]):
            raise FormatError(f"{p}layer_norm.{j} is not a BatchNorm2d over {out_g} channels")
        norms.append(stats)
    layer = WaveletKANConv2d(
        in_g * groups,
        out_g * groups,
        (kh, kw),
        wavelet_type=wavelet,
        norm="batch",
        dropout=float(opts["dropout"]),
        **_tck_conv.geometry(opts, groups),
    )
    layer.to(float_dtype(*bases))
    layer.set_edge_coefficients(torch.cat(coefs).reshape(-1, layer.coef_dim))
    assert layer.batch_norm is not None
    with torch.no_grad():
        layer.mix.copy_(torch.stack(mixes))
        for leaf in BN:
            getattr(layer.batch_norm, leaf).copy_(
                torch.cat([n[leaf].reshape(-1) for n in norms])
                if leaf != "num_batches_tracked"
                else norms[0][leaf]
            )
    return [layer]


def export(
    layer: WaveletKANConv2d, pos: int, prefix: str, state: dict[str, Tensor]
) -> dict[str, Any]:
    if layer.batch_norm is None:
        raise IncompatibleError(f"layer {pos}: a WavKANConv2DLayer has its BatchNorm2d")
    g = layer.groups
    out_g, in_g = layer.out_channels // g, layer.in_channels // g
    w, b, t, s = (v.detach() for v in layer._parts(layer.coef))
    bn = layer.batch_norm.state_dict()
    for j in range(g):
        rows = slice(j * out_g, (j + 1) * out_g)
        q = f"{prefix}wavelet_conv.{j}."
        state[f"{prefix}base_conv.{j}.weight"] = b[rows].contiguous()
        state[q + "scale"] = s[rows].reshape(1, out_g, in_g, 1, 1).clone()
        state[q + "translation"] = t[rows].reshape(1, out_g, in_g, 1, 1).clone()
        state[q + "wavelet_weights.weight"] = w[rows].contiguous()
        state[q + "wavelet_out.weight"] = layer.mix.detach()[j].reshape(out_g, out_g, 1, 1).clone()
        for leaf in BN:
            value = bn[leaf]
            state[f"{prefix}layer_norm.{j}.{leaf}"] = (
                value[rows].clone() if leaf != "num_batches_tracked" else value.clone()
            )
    return {
        "layer_class": "WavKANConv2DLayer",
        **_tck_conv.entry_shape(layer),
        **_tck_conv.entry_geometry(layer),
        "dropout": layer.dropout,
        "wavelet_type": layer.wavelet_type,
        "wav_version": "fast",
    }
