"""Convolutional KANs (torch-conv-kan semantics, 2D): one edge per (out, in, kh, kw).

Every input channel is expanded into its L basis features (channel = c * L + l) and one
grouped conv2d with the edge vectors as weights does the whole layer, base branch included.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError, InputError
from metacluster.kan._common import activation, check_coefficients, check_positive, check_range
from metacluster.kan.base import Basis, KANLayer
from metacluster.kan.bspline import UniformGridCache, bspline_basis, bspline_features
from metacluster.kan.chebyshev import (
    chebyshev_basis,
    chebyshev_edge_functions,
    chebyshev_polynomials,
)
from metacluster.kan.families import register_family

__all__ = ["ChebyKANConv2d", "KANConv2d"]

NORMS = ("none", "instance", "batch")

IntPair = int | tuple[int, int] | list[int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


class Conv2dGeometry(KANLayer):
    """What every 2D KAN convolution shares: the channels, groups and the kernel, stride,
    padding and dilation (stored as checked pairs), the input check, the edge index with
    groups resolved and the geometry part of `config()`."""

    coef: nn.Parameter  # the edge vectors: (*edge dims, L), set by each layer

    def _init_geometry(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        groups: int,
    ) -> None:
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

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def _edge_group_sizes(self) -> tuple[int, int]:
        """(outputs, inputs) per group of the edges' first two coef dimensions."""
        return self.out_channels // self.groups, self.in_channels // self.groups

    def edge_index(self) -> Tensor:
        """(out, in, kh, kw) with `in` the absolute input channel (groups resolved)."""
        index = super().edge_index()
        out_per_group, in_per_group = self._edge_group_sizes()
        index[:, 1] += (index[:, 0] // out_per_group) * in_per_group
        return index

    def _geometry_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }


class _ConvKAN2d(Conv2dGeometry):
    """Shared machinery: coef (O, I/g, kh, kw, L), grouped conv over basis features,
    then the optional norm ("instance" = torch-conv-kan's InstanceNorm2d without
    affine, "batch"), a PReLU per group and Dropout2d, in torch-conv-kan's order."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        coef_dim: int,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        norm: str = "instance",
        prelu: bool = False,
        dropout: float = 0.0,
        pad_input: bool = False,
    ) -> None:
        super().__init__()
        # convkan pads the input with zeros and evaluates the edge functions there;
        # torch-conv-kan pads the basis features (so padding contributes nothing).
        self.pad_input = bool(pad_input)
        self._init_geometry(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        self.norm = check_choice("norm", norm, NORMS)
        self.dropout = check_dropout(dropout)
        kh, kw = self.kernel_size
        self.coef = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw, coef_dim))
        self.batch_norm = nn.BatchNorm2d(out_channels) if norm == "batch" else None
        self.prelu_weight = nn.Parameter(torch.full((groups,), 0.25)) if prelu else None
        self.drop = nn.Dropout2d(self.dropout) if self.dropout > 0 else None

    def channel_features(self, x: Tensor) -> Tensor:
        """(M,) input values -> (M, L) basis features of each value."""
        raise NotImplementedError

    def kaiming_reset(self, n_basis: int) -> None:
        """torch-conv-kan's init: kaiming-uniform (linear gain) over each conv's fan-in,
        the basis conv holding `n_basis` channels per input, the base conv (the last
        coefficient, when there is one more) one."""
        kh, kw = self.kernel_size
        fan_in = (self.in_channels // self.groups) * kh * kw
        with torch.no_grad():
            bound = math.sqrt(3.0 / (fan_in * n_basis))
            self.coef[..., :n_basis].uniform_(-bound, bound)
            if self.coef.shape[-1] > n_basis:
                base_bound = math.sqrt(3.0 / fan_in)
                self.coef[..., -1].uniform_(-base_bound, base_bound)

    def image_features(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W, L); per value unless a family needs more context."""
        return self.channel_features(x.reshape(-1)).reshape(*x.shape, self.coef.shape[-1])

    def _padded(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The checked input, padded here when the layer pads its input (convkan) rather
        than its basis features, and the padding left for the convolution."""
        self._check_input(x)
        padding = self.padding
        if self.pad_input:
            x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            padding = (0, 0)
        return x, padding

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(x)
        # (C, H, W) as Python ints: only the batch stays symbolic when the layer is traced
        c, h, w = self.in_channels, int(x.shape[2]), int(x.shape[3])
        length = self.coef.shape[-1]  # not coef_dim: functional_call passes a plain tensor
        feats = self.image_features(x).permute(0, 1, 4, 2, 3)
        feats = feats.reshape(-1, c * length, h, w)  # channel = c * L + l
        kh, kw = self.kernel_size
        weight = self.coef.permute(0, 1, 4, 2, 3).reshape(
            self.out_channels, (c // self.groups) * length, kh, kw
        )
        y = F.conv2d(feats, weight, None, self.stride, padding, self.dilation, self.groups)
        return self._post(y)

    def _post(self, y: Tensor) -> Tensor:
        """Norm, PReLU and dropout after the convolution, in torch-conv-kan's order."""
        if self.norm == "instance" and torch.onnx.is_in_onnx_export():
            # the same arithmetic in plain ops: the exporter's InstanceNormalization
            # needs a static channel count, which the codebook graph's Reshape hides
            mean = y.mean((2, 3), keepdim=True)
            var = y.var((2, 3), unbiased=False, keepdim=True)
            y = (y - mean) / torch.sqrt(var + 1e-5)
        elif self.norm == "instance":
            y = F.instance_norm(y)
        elif self.batch_norm is not None:
            y = self.batch_norm(y)
        if self.prelu_weight is not None:
            per_channel = self.prelu_weight.repeat_interleave(self.out_channels // self.groups)
            y = F.prelu(y, per_channel)
        if self.drop is not None:
            y = self.drop(y)
        return y

    # -- codebook runtime hooks: the feature table is the unfolded (im2col) features
    def edge_positions(self) -> Tensor:
        """Unfold column of each edge: (in channel, kernel row, kernel column) row-major."""
        index = self.edge_index()
        kh, kw = self.kernel_size
        return (index[:, 1] * kh + index[:, 2]) * kw + index[:, 3]

    def feature_table(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(N * Ho * Wo, C * kh * kw, L) features under every kernel window."""
        x, padding = self._padded(x)
        c, h, w = self.in_channels, int(x.shape[2]), int(x.shape[3])
        length = self.coef_dim
        feats = self.image_features(x).reshape(-1, c, h, w, length)
        feats = feats.permute(0, 1, 4, 2, 3).reshape(-1, c * length, h, w)
        cols = F.unfold(feats, self.kernel_size, self.dilation, padding, self.stride)
        kk = self.kernel_size[0] * self.kernel_size[1]
        ho, wo = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                (h, w), padding, self.dilation, self.kernel_size, self.stride, strict=True
            )
        )
        cols = cols.reshape(-1, c, length, kk, ho * wo).permute(0, 4, 1, 3, 2)
        return cols.reshape(-1, c * kk, length), (ho, wo)

    def finish(self, y: Tensor, context: tuple[int, int]) -> Tensor:
        ho, wo = context
        y = y.reshape(-1, ho * wo, self.out_channels).transpose(1, 2)
        return self._post(y.reshape(-1, self.out_channels, ho, wo))

    def _conv_config(self) -> dict[str, Any]:
        return {
            **self._geometry_config(),
            "norm": self.norm,
            "prelu": self.prelu_weight is not None,
            "dropout": self.dropout,
        }


@register_family("conv_bspline", kind="conv")
class KANConv2d(_ConvKAN2d):
    """torch-conv-kan KANConv2DLayer: per edge [spline coefficients (G + k), base_conv weight].

    y = conv(act(x), base) + conv(B(x), spline), then norm / PReLU / dropout. Knots:
    one grid (G + 2k + 1,) shared by all channels, linspace like torch-conv-kan.
    base_activation "zero" drops the base column (L = G + k). torch-conv-kan's
    defaults are norm="instance", prelu=True, base_activation="gelu".
    """

    family = "bspline"
    grid: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] | list[float] = (-1.0, 1.0),
        base_activation: str = "gelu",
        norm: str = "instance",
        prelu: bool = True,
        dropout: float = 0.0,
        pad_input: bool = False,
    ) -> None:
        self.grid_size = check_positive("grid_size", grid_size)
        self.spline_order = check_positive("spline_order", spline_order, minimum=0)
        self.n_basis = grid_size + spline_order
        self.has_base = base_activation != "zero"
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            self.n_basis + (1 if self.has_base else 0),
            stride,
            padding,
            dilation,
            groups,
            norm,
            prelu,
            dropout,
            pad_input,
        )
        self.grid_range = check_range("grid_range", grid_range)
        self.base_activation = base_activation
        activation(base_activation)  # validates the name
        self.register_buffer("grid", self._default_grid())
        self.use_fast_path = True
        self._grid_cache = UniformGridCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.kaiming_reset(self.n_basis)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._grid_cache.clear()

    def channel_features(self, x: Tensor) -> Tensor:
        grid = self.grid.unsqueeze(0)  # one row shared by every channel
        uniform = self._grid_cache.get(grid) if self.use_fast_path else None
        base = self.base_activation if self.has_base else None
        return bspline_features(x.unsqueeze(-1), grid, self.spline_order, base, uniform)[:, 0]

    def basis(self) -> Basis:
        return bspline_basis(self)

    def function_domain(self) -> tuple[float, float]:
        k = self.spline_order
        return (float(self.grid[k]), float(self.grid[-k - 1]))

    def grid_buffers(self) -> dict[str, tuple[int | None, Tensor]]:
        return {"grid": (self.spline_order, self._default_grid())}

    def _default_grid(self) -> Tensor:
        lo, hi = self.grid_range
        h = (hi - lo) / self.grid_size
        k = self.spline_order
        return torch.linspace(lo - h * k, hi + h * k, self.grid_size + 2 * k + 1)

    def edge_group_tensor(self) -> Tensor:
        return self.grid.unsqueeze(0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """Spline plus base branch on the grid range."""
        check_coefficients(coefficients, self.coef_dim)
        k = self.spline_order
        lo, hi = float(self.grid[k]), float(self.grid[-k - 1])
        x = torch.linspace(lo, hi, n_points, dtype=coefficients.dtype, device=self.grid.device)
        return coefficients @ self.channel_features(x).T

    def config(self) -> dict[str, Any]:
        return {
            **self._conv_config(),
            "grid_size": self.grid_size,
            "spline_order": self.spline_order,
            "grid_range": list(self.grid_range),
            "base_activation": self.base_activation,
            **({"pad_input": True} if self.pad_input else {}),
        }


@register_family("conv_chebyshev", kind="conv")
class ChebyKANConv2d(_ConvKAN2d):
    """torch-conv-kan KACNConv2DLayer: per edge Chebyshev coefficients of T_d(tanh x), no base.

    tanh(x) is clamped to +-(1 - 1e-7) as KACN does; channel = c * (D + 1) + d.
    """

    family = "chebyshev"
    epsilon = 1e-7

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        degree: int = 3,
        norm: str = "instance",
        prelu: bool = False,
        dropout: float = 0.0,
    ) -> None:
        self.degree = check_positive("degree", degree, minimum=0)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            degree + 1,
            stride,
            padding,
            dilation,
            groups,
            norm,
            prelu,
            dropout,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """KACN's: normal with std 1 / (I * (D + 1) * kh * kw)."""
        kh, kw = self.kernel_size
        with torch.no_grad():
            self.coef.normal_(0.0, 1.0 / (self.in_channels * (self.degree + 1) * kh * kw))

    def channel_features(self, x: Tensor) -> Tensor:
        t = torch.tanh(x).clamp(-1.0 + self.epsilon, 1.0 - self.epsilon)
        return chebyshev_polynomials(t, self.degree)

    def basis(self) -> Basis:
        return chebyshev_basis(self.degree)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        return chebyshev_edge_functions(coefficients, self.degree, n_points)

    def config(self) -> dict[str, Any]:
        return {**self._conv_config(), "degree": self.degree}
