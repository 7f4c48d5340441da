"""Indoxer/LKAN `KANLinear` (lkan/models/layers/kan_linear.py), for tests.

Keys `coeff` [O, I, G+k], `scale_base` [O, I], `scale_spline` ([O, I] parameter, or
a (1,) buffer when not given), optional `bias` [O], buffer `grid` [I, G+2k+1].
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def b_splines(x: Tensor, grid: Tensor, k: int) -> Tensor:
    x = x.unsqueeze(-1)
    value = ((x >= grid[:, :-1]) * (x < grid[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        value = (x - grid[:, : -(p + 1)]) / (grid[:, p:-1] - grid[:, : -(p + 1)]) * value[
            :, :, :-1
        ] + (grid[:, p + 1 :] - x) / (grid[:, p + 1 :] - grid[:, 1:(-p)]) * value[:, :, 1:]
    return value


class KANLinear(nn.Module):
    grid: Tensor
    scale_spline: Tensor

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid_size: int = 5,
        k: int = 3,
        noise_scale: float = 0.1,
        noise_scale_base: float = 0.1,
        scale_spline: float | None = None,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.k = in_dim, out_dim, k
        self.base_fun = nn.SiLU()
        step = (grid_range[1] - grid_range[0]) / grid_size
        grid = (torch.arange(-k, grid_size + k + 1) * step + grid_range[0]).repeat(in_dim, 1)
        self.register_buffer("grid", grid)
        if scale_spline is not None:
            self.scale_spline = nn.Parameter(torch.full((out_dim, in_dim), fill_value=scale_spline))
        else:
            self.register_buffer("scale_spline", torch.tensor([1.0]))
        # The original fits noise with curve2coeff; noise of that scale is equivalent here.
        self.coeff = nn.Parameter((torch.rand(out_dim, in_dim, grid_size + k) - 0.5) * noise_scale)
        self.scale_base = nn.Parameter(
            1 / (in_dim**0.5) + (torch.randn(out_dim, in_dim) * 2 - 1) * noise_scale_base
        )
        self.bias = nn.Parameter(torch.rand(out_dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        x = x.view(-1, self.in_dim)
        splines = b_splines(x, self.grid, self.k)
        y_b = F.linear(self.base_fun(x), self.scale_base)
        weight = (self.coeff * self.scale_spline.unsqueeze(-1)).view(self.out_dim, -1)
        y = y_b + F.linear(splines.view(x.shape[0], -1), weight)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape, self.out_dim)


class LKAN(nn.Module):
    def __init__(self, widths: list[int], **kwargs: object) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            KANLinear(i, o, **kwargs)  # type: ignore[arg-type]
            for i, o in itertools.pairwise(widths)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
