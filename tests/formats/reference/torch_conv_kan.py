"""IvanDrokin/torch-conv-kan `KANConv2DLayer` (kan_convs/kan_conv.py), for tests.

Per group g: `base_conv.{g}.weight` [O/g, I/g, kh, kw], `spline_conv.{g}.weight`
[O/g, (I/g)(G+k), kh, kw] (channel = i*(G+k) + c), InstanceNorm2d (no affine, so
no keys) and `prelus.{g}.weight`; the grid is a plain attribute, not saved.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class KANConv2DLayer(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        kernel_size: int,
        spline_order: int = 3,
        groups: int = 1,
        padding: int = 0,
        stride: int = 1,
        dilation: int = 1,
        grid_size: int = 5,
        base_activation: type[nn.Module] = nn.GELU,
        grid_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if input_dim % groups or output_dim % groups:
            raise ValueError("input_dim and output_dim must be divisible by groups")
        self.inputdim = input_dim
        self.outdim = output_dim
        self.spline_order = spline_order
        self.groups = groups
        self.ndim = 2
        self.base_activation = base_activation()
        self.base_conv = nn.ModuleList(
            nn.Conv2d(
                input_dim // groups,
                output_dim // groups,
                kernel_size,
                stride,
                padding,
                dilation,
                groups=1,
                bias=False,
            )
            for _ in range(groups)
        )
        self.spline_conv = nn.ModuleList(
            nn.Conv2d(
                (grid_size + spline_order) * input_dim // groups,
                output_dim // groups,
                kernel_size,
                stride,
                padding,
                dilation,
                groups=1,
                bias=False,
            )
            for _ in range(groups)
        )
        self.layer_norm = nn.ModuleList(
            nn.InstanceNorm2d(output_dim // groups) for _ in range(groups)
        )
        self.prelus = nn.ModuleList(nn.PReLU() for _ in range(groups))
        h = (grid_range[1] - grid_range[0]) / grid_size
        self.grid = torch.linspace(
            grid_range[0] - h * spline_order,
            grid_range[1] + h * spline_order,
            grid_size + 2 * spline_order + 1,
            dtype=torch.float32,
        )
        for conv in [*self.base_conv, *self.spline_conv]:
            assert isinstance(conv, nn.Conv2d)
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="linear")

    def forward_kan(self, x: Tensor, group_index: int) -> Tensor:
        base_output = self.base_conv[group_index](self.base_activation(x))
        x_uns = x.unsqueeze(-1)
        target = x.shape[1:] + self.grid.shape
        grid = (
            self.grid.view(*([1] * (self.ndim + 1) + [-1])).expand(target).contiguous().to(x.dtype)
        )
        bases = ((x_uns >= grid[..., :-1]) & (x_uns < grid[..., 1:])).to(x.dtype)
        for k in range(1, self.spline_order + 1):
            left = grid[..., : -(k + 1)]
            right = grid[..., k:-1]
            delta = torch.where(right == left, torch.ones_like(right), right - left)
            bases = ((x_uns - left) / delta * bases[..., :-1]) + (
                (grid[..., k + 1 :] - x_uns)
                / (grid[..., k + 1 :] - grid[..., 1:(-k)])
                * bases[..., 1:]
            )
        bases = bases.contiguous().moveaxis(-1, 2).flatten(1, 2)
        spline_output = self.spline_conv[group_index](bases)
        y: Tensor = self.prelus[group_index](
            self.layer_norm[group_index](base_output + spline_output)
        )
        return y

    def forward(self, x: Tensor) -> Tensor:
        split_x = torch.split(x, self.inputdim // self.groups, dim=1)
        return torch.cat([self.forward_kan(xg, g).clone() for g, xg in enumerate(split_x)], dim=1)


class ConvKANStack(nn.Module):
    """A plain stack of KANConv2DLayer (`layers.{l}.`), as a user would build one."""

    def __init__(self, channels: list[int], kernel_size: int = 3, **kwargs: object) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            KANConv2DLayer(i, o, kernel_size, **kwargs)  # type: ignore[arg-type]
            for i, o in itertools.pairwise(channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class KACNConv2DLayer(nn.Module):
    arange: Tensor

    """kan_convs/kacn_conv.py: Chebyshev T_d(tanh x) features, `poly_conv.{g}.weight`
    [O/g, (I/g)(D+1), kh, kw] (channel = i*(D+1) + d), `arange` buffer, InstanceNorm2d."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        kernel_size: int,
        degree: int = 3,
        groups: int = 1,
        padding: int = 0,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.inputdim, self.outdim, self.groups = input_dim, output_dim, groups
        self.epsilon = 1e-7
        self.layer_norm = nn.ModuleList(
            nn.InstanceNorm2d(output_dim // groups) for _ in range(groups)
        )
        self.poly_conv = nn.ModuleList(
            nn.Conv2d(
                (degree + 1) * input_dim // groups,
                output_dim // groups,
                kernel_size,
                stride,
                padding,
                dilation,
                groups=1,
                bias=False,
            )
            for _ in range(groups)
        )
        self.register_buffer("arange", torch.arange(0, degree + 1, 1).view(1, 1, -1, 1, 1))
        for conv in self.poly_conv:
            assert isinstance(conv, nn.Conv2d)
            nn.init.normal_(
                conv.weight, mean=0.0, std=1 / (input_dim * (degree + 1) * kernel_size**2)
            )

    def forward_kacn(self, x: Tensor, group_index: int) -> Tensor:
        x = torch.tanh(x)
        x = torch.acos(torch.clamp(x, -1 + self.epsilon, 1 - self.epsilon)).unsqueeze(2)
        x = (x * self.arange).flatten(1, 2).cos()
        x = self.poly_conv[group_index](x)
        y: Tensor = self.layer_norm[group_index](x)
        return y

    def forward(self, x: Tensor) -> Tensor:
        split_x = torch.split(x, self.inputdim // self.groups, dim=1)
        return torch.cat([self.forward_kacn(xg, g).clone() for g, xg in enumerate(split_x)], dim=1)


class MixedStack(nn.Module):
    """A KACN layer followed by a KANConv layer (`layers.{l}.`)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [KACNConv2DLayer(2, 4, 3, degree=3, groups=2, padding=1), KANConv2DLayer(4, 2, 3)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
