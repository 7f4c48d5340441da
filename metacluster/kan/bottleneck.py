"""torch-conv-kan's Gram bottleneck layers: `BottleNeckKAGNConv2DLayer` (a Gram KAN conv
between 1x1 projections) and the dense `BottleNeckGRAMLayer` (a Gram KAN between two
linear projections).

Per group (I' = I/g inputs, O' = O/g outputs, D inner channels) upstream computes
    z = tanh(inner_proj(x))                                   (1x1, I' -> D)
    y = out_proj(conv(silu(gram(z)), P))                      (P: D -> D, kh x kw; 1x1 D -> O')
    y = silu(InstanceNorm2d(y + conv(silu(x), B)))            (B: I' -> O', kh x kw)
The KAN edges are the inner conv's: one per (inner out, inner in, kh, kw), its vector the
D + 1 Gram coefficients (coef (g·D, D, kh, kw, D + 1)). The projections, the base conv
(whose edges are another set, I' -> O') and Gram's `beta` are other parameters, kept dense:
they cap the compression ratio. The layer has no codebook runtime hooks (the compressed
runtime runs it dense).

The dense layer computes (D inner features)
    y = outer_proj(sum_i silu(gram(tanh(inner_proj(x))))_i · coef) + silu(x) @ base_weight.T
with biased `inner_proj` (I -> D) and `outer_proj` (D -> O); upstream's LayerNorm and SiLU
after the sum are glue modules after it, as for the other dense torch-conv-kan layers.
Its edges are the D -> D Gram KAN's (coef (D, D, n + 1)); the rest is kept dense.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.kan._common import check_coefficients, check_features, check_positive
from metacluster.kan.base import Basis, KANLayer, grid_fingerprint
from metacluster.kan.conv import Conv2dGeometry, IntPair, check_choice
from metacluster.kan.families import register_family
from metacluster.kan.polynomial import polynomial_features

__all__ = [
    "GramBottleneckKANConv2d",
    "GramBottleneckKANLayer",
    "ReLUBottleneckKANConv2d",
    "bottleneck_width",
]

NORMS = ("instance", "none")


def bottleneck_width(
    in_channels: int, out_channels: int, groups: int, dim_reduction: float, min_internal: int
) -> int:
    """Upstream's inner width D from its constructor arguments."""
    inner = int(
        max((in_channels // groups) / dim_reduction, (out_channels // groups) / dim_reduction)
    )
    if inner < min_internal:
        return min(min_internal, in_channels // groups, out_channels // groups)
    return inner


class _GramBottleneckEdges:
    """The edge view both Gram bottlenecks share: the inner edges are Gram polynomials
    (degree `degree`, shared `beta`) of the tanh-squashed inner input."""

    degree: int
    beta: nn.Parameter
    coef_dim: int

    def basis(self) -> Basis:
        return Basis("gram", self.degree + 1, {"degree": self.degree, "bottleneck": True})

    def edge_group_tensor(self) -> Tensor:
        return self.beta.detach()

    def function_domain(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """Each inner edge over its tanh-squashed input t in [-1, 1]."""
        check_coefficients(coefficients, self.coef_dim)
        t = torch.linspace(-1.0, 1.0, n_points, dtype=coefficients.dtype)
        t = t.to(coefficients.device)
        feats = polynomial_features("gram", t, self.degree, self.beta.detach(), 0.0, 0.0)
        return coefficients @ feats.T


@register_family("conv_gram_bottleneck", kind="conv")
class GramBottleneckKANConv2d(_GramBottleneckEdges, Conv2dGeometry):
    """coef (g·D, D, kh, kw, D+1) the inner Gram conv; `base_weight` (O, I/g, kh, kw),
    `inner_proj` (g, D, I/g), `out_proj` (g, O/g, D) and `beta` (D+1,) dense."""

    family = "gram"

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
        inner_dim: int | None = None,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self._init_geometry(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        self.norm = check_choice("norm", norm, NORMS)
        self.degree = check_positive("degree", degree, minimum=0)
        in_g, out_g = in_channels // groups, out_channels // groups
        if inner_dim is None:
            inner_dim = bottleneck_width(in_channels, out_channels, groups, 4, 16)
        self.inner_dim = check_positive("inner_dim", inner_dim)
        kh, kw = self.kernel_size
        d = self.inner_dim
        self.coef = nn.Parameter(torch.empty(groups * d, d, kh, kw, self.degree + 1))
        self.beta = nn.Parameter(torch.zeros(self.degree + 1))
        self.base_weight = nn.Parameter(torch.empty(out_channels, in_g, kh, kw))
        self.inner_proj = nn.Parameter(torch.empty(groups, d, in_g))
        self.out_proj = nn.Parameter(torch.empty(groups, out_g, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: kaiming-uniform (linear gain) convs and projections, beta normal."""
        kh, kw = self.kernel_size
        with torch.no_grad():
            for param, fan_in in (
                (self.coef, self.inner_dim * (self.degree + 1) * kh * kw),
                (self.base_weight, (self.in_channels // self.groups) * kh * kw),
                (self.inner_proj, self.in_channels // self.groups),
                (self.out_proj, self.inner_dim),
            ):
                bound = math.sqrt(3.0 / fan_in)
                param.uniform_(-bound, bound)
            std = 1.0 / (kh * self.in_channels * (self.degree + 1.0))
            self.beta.normal_(0.0, std)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        d, deg = self.inner_dim, self.degree
        in_g, out_g = self.in_channels // self.groups, self.out_channels // self.groups
        kh, kw = self.kernel_size
        geometry = (self.stride, self.padding, self.dilation)
        outs = []
        for j in range(self.groups):
            xj = x[:, j * in_g : (j + 1) * in_g]
            basis = F.conv2d(
                F.silu(xj), self.base_weight[j * out_g : (j + 1) * out_g], None, *geometry
            )
            z = torch.tanh(F.conv2d(xj, self.inner_proj[j].reshape(d, in_g, 1, 1)))
            feats = polynomial_features("gram", z, deg, self.beta, 0.0, 0.0)  # (N, D, H, W, D+1)
            feats = feats.permute(0, 4, 1, 2, 3).flatten(1, 2)  # channel k·D + i
            weight = self.coef[j * d : (j + 1) * d].permute(0, 4, 1, 2, 3)
            y = F.conv2d(feats, weight.reshape(d, (deg + 1) * d, kh, kw), None, *geometry)
            y = F.conv2d(y, self.out_proj[j].reshape(out_g, d, 1, 1))
            y = y + basis
            if self.norm == "instance":
                y = F.instance_norm(y)
            outs.append(F.silu(y))
        return torch.cat(outs, dim=1)

    def _edge_group_sizes(self) -> tuple[int, int]:
        """The edges are the inner conv's: (inner out, inner in) per group."""
        return self.inner_dim, self.inner_dim

    def config(self) -> dict[str, Any]:
        return {
            **self._geometry_config(),
            "degree": self.degree,
            "inner_dim": self.inner_dim,
            "norm": self.norm,
        }


@register_family("gram_bottleneck", kind="dense")
class GramBottleneckKANLayer(_GramBottleneckEdges, KANLayer):
    """The inner Gram KAN: coef (D, D, n+1), (inner out, inner in);
    `base_weight` (O, I), `inner_weight` (D, I), `inner_bias` (D,), `outer_weight` (O, D),
    `outer_bias` (O,) and `beta` (n+1,) dense."""

    family = "gram"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        degree: int = 3,
        inner_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.degree = check_positive("degree", degree, minimum=0)
        if inner_dim is None:  # upstream's defaults: dim_reduction 8, min_internal 16
            inner_dim = bottleneck_width(in_features, out_features, 1, 8, 16)
        self.inner_dim = check_positive("inner_dim", inner_dim)
        d = self.inner_dim
        self.coef = nn.Parameter(torch.empty(d, d, self.degree + 1))
        self.beta = nn.Parameter(torch.zeros(self.degree + 1))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.inner_weight = nn.Parameter(torch.empty(d, in_features))
        self.inner_bias = nn.Parameter(torch.empty(d))
        self.outer_weight = nn.Parameter(torch.empty(out_features, d))
        self.outer_bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: xavier-uniform weights, nn.Linear's bias init, beta normal."""
        i, o, d, n = self.in_features, self.out_features, self.inner_dim, self.degree + 1
        with torch.no_grad():
            for param, fans in (
                (self.coef, (d * n, d * n)),
                (self.base_weight, (i, o)),
                (self.inner_weight, (i, d)),
                (self.outer_weight, (d, o)),
            ):
                bound = math.sqrt(6.0 / sum(fans))
                param.uniform_(-bound, bound)
            self.inner_bias.uniform_(-1.0 / math.sqrt(i), 1.0 / math.sqrt(i))
            self.outer_bias.uniform_(-1.0 / math.sqrt(d), 1.0 / math.sqrt(d))
            self.beta.normal_(0.0, 1.0 / (i * n))

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.in_features, type(self).__name__)
        basis = F.linear(F.silu(x), self.base_weight)
        z = torch.tanh(F.linear(x, self.inner_weight, self.inner_bias))
        feats = polynomial_features("gram", z, self.degree, self.beta, 0.0, 0.0)  # (..., D, n+1)
        y = feats.flatten(-2) @ self.coef.flatten(1).T  # (..., D)
        return F.linear(y, self.outer_weight, self.outer_bias) + basis

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "degree": self.degree,
            "inner_dim": self.inner_dim,
        }


@register_family("conv_relukan_bottleneck", kind="conv")
class ReLUBottleneckKANConv2d(Conv2dGeometry):
    """torch-conv-kan's `BottleNeckReLUKANConv2DLayer`: a ReLU-KAN conv between 1x1
    projections. Per group (I' = I/g, O' = O/g, D inner channels, L = grid_size + k):
        z = inner_proj(x)                                          (1x1, I' -> D)
        f_ic = (relu(z_i - low_ic) · relu(high_ic - z_i) · r)^2    r = 4 G^2 / (k+1)^2
        y = silu(InstanceNorm2d(out_proj(conv(f, P)) + conv(silu(x), B)))
    coef (g·D, D, kh, kw, L) the inner conv P's edges; `phase_low` / `phase_high` (D, L)
    (upstream's, trainable and shared by every group), `base_weight` (O, I', kh, kw),
    `inner_proj` (g, D, I'), `out_proj` (g, O', D) dense. An inner input's phases are the
    basis of its edges: edges are grouped by their input's phase row."""

    family = "relukan"

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
        k: int = 3,
        inner_dim: int | None = None,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self._init_geometry(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        self.norm = check_choice("norm", norm, NORMS)
        self.grid_size = check_positive("grid_size", grid_size)
        self.k = check_positive("k", k, minimum=0)
        self.r = 4.0 * self.grid_size**2 / ((self.k + 1) ** 2)
        in_g, out_g = in_channels // groups, out_channels // groups
        if inner_dim is None:
            inner_dim = bottleneck_width(in_channels, out_channels, groups, 4, 16)
        self.inner_dim = check_positive("inner_dim", inner_dim)
        kh, kw = self.kernel_size
        d, n = self.inner_dim, self.grid_size + self.k
        self.coef = nn.Parameter(torch.empty(groups * d, d, kh, kw, n))
        self.phase_low = nn.Parameter(torch.empty(d, n))
        self.phase_high = nn.Parameter(torch.empty(d, n))
        self.base_weight = nn.Parameter(torch.empty(out_channels, in_g, kh, kw))
        self.inner_proj = nn.Parameter(torch.empty(groups, d, in_g))
        self.out_proj = nn.Parameter(torch.empty(groups, out_g, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: kaiming-uniform (linear gain) convs and projections; the phases
        (-k..G-1)/G and that plus (k+1)/G for every inner channel."""
        kh, kw = self.kernel_size
        d, n = self.inner_dim, self.grid_size + self.k
        with torch.no_grad():
            for param, fan_in in (
                (self.coef, d * n * kh * kw),
                (self.base_weight, (self.in_channels // self.groups) * kh * kw),
                (self.inner_proj, self.in_channels // self.groups),
                (self.out_proj, d),
            ):
                bound = math.sqrt(3.0 / fan_in)
                param.uniform_(-bound, bound)
            low = torch.arange(-self.k, self.grid_size) / self.grid_size
            self.phase_low.copy_(low.expand(d, n))
            self.phase_high.copy_((low + (self.k + 1) / self.grid_size).expand(d, n))

    def relu_features(self, z: Tensor) -> Tensor:
        """(N, D, ...) inner activations -> (N, D, L, ...) ReLU-KAN basis values."""
        extra = (1,) * (z.dim() - 2)
        low = self.phase_low.reshape(1, *self.phase_low.shape, *extra)
        high = self.phase_high.reshape(1, *self.phase_high.shape, *extra)
        z = z.unsqueeze(2)
        f = torch.relu(z - low) * torch.relu(high - z) * self.r
        return f * f

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        d, n = self.inner_dim, self.grid_size + self.k
        in_g, out_g = self.in_channels // self.groups, self.out_channels // self.groups
        kh, kw = self.kernel_size
        geometry = (self.stride, self.padding, self.dilation)
        outs = []
        for j in range(self.groups):
            xj = x[:, j * in_g : (j + 1) * in_g]
            basis = F.conv2d(
                F.silu(xj), self.base_weight[j * out_g : (j + 1) * out_g], None, *geometry
            )
            z = F.conv2d(xj, self.inner_proj[j].reshape(d, in_g, 1, 1))
            feats = self.relu_features(z).flatten(1, 2)  # channel i·L + c
            weight = self.coef[j * d : (j + 1) * d].permute(0, 1, 4, 2, 3)
            y = F.conv2d(feats, weight.reshape(d, d * n, kh, kw), None, *geometry)
            y = F.conv2d(y, self.out_proj[j].reshape(out_g, d, 1, 1))
            y = y + basis
            if self.norm == "instance":
                y = F.instance_norm(y)
            outs.append(F.silu(y))
        return torch.cat(outs, dim=1)

    def _edge_group_sizes(self) -> tuple[int, int]:
        """The edges are the inner conv's: (inner out, inner in) per group."""
        return self.inner_dim, self.inner_dim

    def basis(self) -> Basis:
        return Basis(
            "relukan",
            self.grid_size + self.k,
            {"grid_size": self.grid_size, "k": self.k, "bottleneck": True},
        )

    def _phases(self) -> Tensor:
        return torch.cat([self.phase_low.detach(), self.phase_high.detach()], dim=1)

    def edge_groups(self) -> tuple[Tensor, list[str]]:
        """Edges grouped by identical phase rows of their inner input (one if untrained)."""
        rows, inverse = torch.unique(self._phases().cpu(), dim=0, return_inverse=True)
        key = self.basis().key()
        keys = [f"{key}|grid:{grid_fingerprint(row)}" for row in rows]
        local_in = self.edge_index()[:, 1] % self.inner_dim
        return inverse[local_in], keys

    def function_domain(self) -> tuple[float, float]:
        return (float(self.phase_low.detach().min()), float(self.phase_high.detach().max()))

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """Each inner edge over its inner input z in the phases' span (all inputs'):
        (n_edges, L) rows in edge order on their own input's phases; any other (n, L)
        vectors (e.g. centroids) on the first inner input's, as the report's curves of
        per-input grids are drawn."""
        check_coefficients(coefficients, self.coef_dim)
        lo, hi = self.function_domain()
        z = torch.linspace(lo, hi, n_points, dtype=coefficients.dtype)
        z = z.to(coefficients.device)
        with torch.no_grad():  # (1, D, L, P)
            feats = self.relu_features(z.expand(1, self.inner_dim, n_points).to(self.coef.dtype))
        feats = feats[0].to(coefficients.dtype)  # (D, L, P)
        if coefficients.shape[0] == self.n_edges:
            local_in = self.edge_index()[:, 1] % self.inner_dim
            return torch.einsum("el,elp->ep", coefficients, feats[local_in])
        return coefficients @ feats[0]

    def config(self) -> dict[str, Any]:
        return {
            **self._geometry_config(),
            "grid_size": self.grid_size,
            "k": self.k,
            "inner_dim": self.inner_dim,
            "norm": self.norm,
        }
