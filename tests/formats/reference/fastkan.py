"""ZiyaoLi/fast-kan `FastKANLayer` / `FastKAN` (fastkan/fastkan.py), for tests.

Keys `layers.{l}.layernorm.*`, `rbf.grid` (a frozen parameter), `spline_linear.weight`
[O, I*G] and `base_linear.*`; forward W phi(LayerNorm(x)) + base_linear(silu(x)).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class SplineLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, init_scale: float = 0.1) -> None:
        self.init_scale = init_scale
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, mean=0, std=self.init_scale)


class RadialBasisFunction(nn.Module):
    def __init__(
        self,
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        num_grids: int = 8,
        denominator: float | None = None,
    ) -> None:
        super().__init__()
        grid = torch.linspace(grid_min, grid_max, num_grids)
        self.grid = nn.Parameter(grid, requires_grad=False)
        self.denominator = denominator or (grid_max - grid_min) / (num_grids - 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(-(((x[..., None] - self.grid) / self.denominator) ** 2))


class FastKANLayer(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        num_grids: int = 8,
        use_base_update: bool = True,
        spline_weight_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(input_dim)
        self.rbf = RadialBasisFunction(grid_min, grid_max, num_grids)
        self.spline_linear = SplineLinear(
            input_dim * num_grids, output_dim, spline_weight_init_scale
        )
        self.use_base_update = use_base_update
        if use_base_update:
            self.base_activation = nn.SiLU()
            self.base_linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        spline_basis = self.rbf(self.layernorm(x))
        ret: Tensor = self.spline_linear(spline_basis.view(*spline_basis.shape[:-2], -1))
        if self.use_base_update:
            ret = ret + self.base_linear(self.base_activation(x))
        return ret


class FastKAN(nn.Module):
    def __init__(self, layers_hidden: list[int], **kwargs: object) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FastKANLayer(i, o, **kwargs)  # type: ignore[arg-type]
            for i, o in itertools.pairwise(layers_hidden)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
