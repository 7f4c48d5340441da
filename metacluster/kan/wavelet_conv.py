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

from metacluster.errors import ConfigError, InputError
from metacluster.kan._common import check_coefficients, check_positive
from metacluster.kan.base import Basis, KANLayer
from metacluster.kan.conv import _pair
from metacluster.kan.families import register_family
from metacluster.kan.wavelet import WAVELETS

__all__ = ["WaveletKANConv2d"]

NORMS = ("batch", "none")


@register_family("conv_wavelet", kind="conv")
class WaveletKANConv2d(KANLayer):
    """coef (O, I/g, 1, 1, 2·kh·kw + 2); `mix` (g, O/g, O/g) the wavelet_out 1x1 convs;
    `batch_norm` the per-group BatchNorm2ds as one (per channel, so the same)."""

    family = "wavelet"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] | list[int],
        stride: int | tuple[int, int] | list[int] = 1,
        padding: int | tuple[int, int] | list[int] = 0,
        dilation: int | tuple[int, int] | list[int] = 1,
        groups: int = 1,
        wavelet_type: str = "mexican_hat",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_channels", in_channels)
        self.out_features = check_positive("out_channels", out_channels)
        self.groups = check_positive("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ConfigError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must be divisible by groups ({groups})"
            )
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ConfigError("kernel_size, stride and dilation must be >= 1")
        if min(self.padding) < 0:
            raise ConfigError("padding must be >= 0")
        if wavelet_type not in WAVELETS:
            raise ConfigError(
                f"wavelet_type must be one of {sorted(WAVELETS)}, got {wavelet_type!r}"
            )
        if norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.wavelet_type = wavelet_type
        self.norm = norm
        self.dropout = float(dropout)
        kh, kw = self.kernel_size
        out_g, in_g = out_channels // groups, in_channels // groups
        self.coef = nn.Parameter(torch.empty(out_channels, in_g, 1, 1, 2 * kh * kw + 2))
        self.mix = nn.Parameter(torch.empty(groups, out_g, out_g))
        self.batch_norm = nn.BatchNorm2d(out_channels) if norm == "batch" else None
        self.drop = nn.Dropout2d(self.dropout) if self.dropout > 0 else None
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

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
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
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

    def edge_index(self) -> Tensor:
        """(out, in, 0, 0) with `in` the absolute input channel (groups resolved)."""
        index = super().edge_index()
        out_g, in_g = self.out_channels // self.groups, self.in_channels // self.groups
        index[:, 1] += (index[:, 0] // out_g) * in_g
        return index

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
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "wavelet_type": self.wavelet_type,
            "norm": self.norm,
            "dropout": self.dropout,
        }
