"""torch-conv-kan's `WavKANConv2DLayer` (Wav-KAN convolutions), all three `wav_version`s
that hold the same tensors ("fast", the default, and "base").

Per group (I' = I/g inputs, O' = O/g outputs) upstream computes
    psi[n, o, i] = psi((x_i - t[o, i]) / s[o, i])                 (per pixel)
    y = M · conv(psi, W, groups=O') + conv(silu(x), B)            (M: O' x O', 1x1)
then BatchNorm2d. So a wavelet edge (o, i) is a scale and shift of the mother wavelet and
a kh x kw kernel over it, plus the base kernel; the 1x1 mixing `M` (`wavelet_out`) is
per group and shared by the edges (other parameters, kept dense), as are the norm's.

coef (O, I', 1, 1, L) with L = 2·kh·kw + 2: [W[o, i] (kh·kw, row-major), B[o, i] (kh·kw),
t[o, i], s[o, i]]: every per-edge scalar of the layer. One row per (out, in) pair: t and
s are per pair upstream, so the kernel positions are not separate edges. The edge
function is not linear in its vector (as the dense wavelet family's). The layer has no
codebook runtime hooks: the compressed runtime runs it dense.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import check_coefficients
from metacluster.kan.base import Basis
from metacluster.kan.conv import Conv2dGeometry, IntPair, check_choice, check_dropout
from metacluster.kan.families import register_family
from metacluster.kan.wavelet import WAVELETS

__all__ = ["WaveletKANConv2d"]

NORMS = ("batch", "none")


@register_family("conv_wavelet", kind="conv")
class WaveletKANConv2d(Conv2dGeometry):
    """coef (O, I/g, 1, 1, 2·kh·kw + 2); `mix` (g, O/g, O/g) the wavelet_out 1x1 convs;
    `batch_norm` the per-group BatchNorm2ds as one (per channel, so the same)."""

    family = "wavelet"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        wavelet_type: str = "mexican_hat",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self._init_geometry(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        if wavelet_type not in WAVELETS:
            raise ConfigError(
                f"wavelet_type must be one of {sorted(WAVELETS)}, got {wavelet_type!r}"
            )
        self.wavelet_type = wavelet_type
        self.norm = check_choice("norm", norm, NORMS)
        self.dropout = check_dropout(dropout)
        kh, kw = self.kernel_size
        out_g, in_g = out_channels // groups, in_channels // groups
        self.coef = nn.Parameter(torch.empty(out_channels, in_g, 1, 1, 2 * kh * kw + 2))
        self.mix = nn.Parameter(torch.empty(groups, out_g, out_g))
        self.batch_norm = nn.BatchNorm2d(out_channels) if norm == "batch" else None
        self.drop = nn.Dropout2d(self.dropout) if self.dropout > 0 else None
        self.reset_parameters()

    @property
    def _kk(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """Upstream's: kaiming-uniform (linear gain) kernels, translation 0, scale 1."""
        kk = self._kk
        fan_in = (self.in_channels // self.groups) * kk
        with torch.no_grad():
            bound = math.sqrt(3.0 / fan_in)
            self.coef[..., : 2 * kk].uniform_(-bound, bound)
            self.coef[..., 2 * kk].zero_()
            self.coef[..., 2 * kk + 1].fill_(1.0)
            mix_bound = math.sqrt(3.0 / self.mix.shape[1])
            self.mix.uniform_(-mix_bound, mix_bound)

    def _parts(self, coef: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W, B) (O, I', kh, kw) and (t, s) (O, I') of a coef tensor."""
        kk, (kh, kw) = self._kk, self.kernel_size
        flat = coef.reshape(coef.shape[0], coef.shape[1], -1)
        w = flat[..., :kk].reshape(*flat.shape[:2], kh, kw)
        b = flat[..., kk : 2 * kk].reshape(*flat.shape[:2], kh, kw)
        return w, b, flat[..., 2 * kk], flat[..., 2 * kk + 1]

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        w, b, t, s = self._parts(self.coef)
        psi_of = WAVELETS[self.wavelet_type]
        out_g, in_g = self.out_channels // self.groups, self.in_channels // self.groups
        outs = []
        for j in range(self.groups):
            xj = x[:, j * in_g : (j + 1) * in_g]
            rows = slice(j * out_g, (j + 1) * out_g)
            base = F.conv2d(F.silu(xj), b[rows], None, self.stride, self.padding, self.dilation)
            if self.drop is not None:
                xj = self.drop(xj)
            shape = (1, out_g, in_g, 1, 1)
            psi = psi_of((xj.unsqueeze(1) - t[rows].reshape(shape)) / s[rows].reshape(shape))
            y = F.conv2d(
                psi.flatten(1, 2), w[rows], None, self.stride, self.padding, self.dilation, out_g
            )
            y = F.conv2d(y, self.mix[j].reshape(out_g, out_g, 1, 1))
            outs.append(y + base)
        y = torch.cat(outs, dim=1)
        return self.batch_norm(y) if self.batch_norm is not None else y

    def basis(self) -> Basis:
        params = {
            "wavelet": self.wavelet_type,
            "base": "silu",
            "kernel": list(self.kernel_size),
        }
        return Basis("wavelet_conv", self.coef_dim, params)

    def function_domain(self) -> tuple[float, float]:
        return (-3.0, 3.0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """The edge's response to a constant input x over [-3, 3] (every kernel position
        seeing x): sum(W) psi((x - t) / s) + sum(B) silu(x), before the 1x1 mixing."""
        check_coefficients(coefficients, self.coef_dim)
        kk = self._kk
        x = torch.linspace(-3.0, 3.0, n_points, dtype=coefficients.dtype)
        x = x.to(coefficients.device).unsqueeze(0)
        w = coefficients[:, :kk].sum(-1, keepdim=True)
        b = coefficients[:, kk : 2 * kk].sum(-1, keepdim=True)
        t, s = coefficients[:, 2 * kk : 2 * kk + 1], coefficients[:, 2 * kk + 1 :]
        return w * WAVELETS[self.wavelet_type]((x - t) / s) + b * F.silu(x)

    def config(self) -> dict[str, Any]:
        return {
            **self._geometry_config(),
            "wavelet_type": self.wavelet_type,
            "norm": self.norm,
            "dropout": self.dropout,
        }
