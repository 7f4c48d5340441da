"""FastKAN's RBF layer: Gaussian radial bases on LayerNorm'd inputs plus a SiLU base branch.

The per-edge base_linear weight is folded into `coef` (last element); its bias stays dense.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import (
    activation,
    check_coefficients,
    check_positive,
    check_range,
)
from metacluster.kan.base import Basis, FeatureKANLayer
from metacluster.kan.families import register_family

__all__ = ["RBFKANLayer"]


@register_family("rbf", kind="dense")
class RBFKANLayer(FeatureKANLayer):
    """FastKANLayer: y = sum_{i,g} W[o,i,g] phi_g(LN(x)_i) + sum_i w[o,i] act(x_i) + b_o.

    phi_g(u) = exp(-((u - grid_g) / denominator)^2) on a grid shared by all edges
    (buffer `grid` (G,), linspace over grid_range). coef: (O, I, G + 1) with the
    base_linear weight last, or (O, I, G) with use_base_update=False. The base
    branch sees the un-normalised x, as in FastKAN.
    """

    family = "rbf"
    grid: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 8,
        grid_range: tuple[float, float] | list[float] = (-2.0, 2.0),
        denominator: float | None = None,
        use_layernorm: bool = True,
        use_base_update: bool = True,
        base_activation: str = "silu",
        bias: bool = True,
        spline_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.grid_size = check_positive("grid_size", grid_size)
        self.grid_range = check_range("grid_range", grid_range)
        if denominator is None:
            if grid_size < 2:
                raise ConfigError("rbf: grid_size 1 needs an explicit denominator")
            denominator = (self.grid_range[1] - self.grid_range[0]) / (grid_size - 1)
        if not float(denominator) > 0:
            raise ConfigError(f"rbf: denominator must be > 0, got {denominator!r}")
        self.denominator = float(denominator)
        self.use_layernorm = bool(use_layernorm)
        self.use_base_update = bool(use_base_update)
        self.base_activation = base_activation
        self._act = activation(base_activation)
        self.spline_init_scale = float(spline_init_scale)
        self.register_buffer("grid", self.grid_buffers()["grid"][1])
        self.layernorm = nn.LayerNorm(self.in_features) if self.use_layernorm else None
        width = self.grid_size + (1 if self.use_base_update else 0)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, width))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FastKAN's: RBF weights truncated normal, base branch as nn.Linear."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            nn.init.trunc_normal_(self.coef[..., : self.grid_size], std=self.spline_init_scale)
            if self.use_base_update:
                self.coef[..., -1].uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _rbf(self, u: Tensor) -> Tensor:
        return torch.exp(-(((u.unsqueeze(-1) - self.grid.to(u.dtype)) / self.denominator) ** 2))

    def features(self, x: Tensor) -> Tensor:
        """(N, I) -> (N, I, L): RBF values of LN(x), then act(x) when the base is on."""
        u = self.layernorm(x) if self.layernorm is not None else x
        phi = self._rbf(u)
        if self.use_base_update:
            return torch.cat([phi, self._act(x).unsqueeze(-1)], dim=-1)
        return phi

    def basis(self) -> Basis:
        params: dict[str, Any] = {
            "grid_size": self.grid_size,
            "grid_range": list(self.grid_range),
            "denominator": self.denominator,
            "layernorm": self.use_layernorm,
        }
        if self.use_base_update:
            params["base"] = self.base_activation
        return Basis("rbf", self.coef_dim, params)

    def function_domain(self) -> tuple[float, float]:
        return (float(self.grid_range[0]), float(self.grid_range[1]))

    def grid_buffers(self) -> dict[str, tuple[int | None, Tensor]]:
        return {"grid": (None, torch.linspace(*self.grid_range, self.grid_size))}

    def edge_group_tensor(self) -> Tensor:
        """Every edge shares the grid buffer (fingerprinted, it may be loaded)."""
        return self.grid

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """RBF part on the grid range (in normalised-input units) plus the base branch
        evaluated at the same points (FastKAN feeds it the raw input)."""
        check_coefficients(coefficients, self.coef_dim)
        u = torch.linspace(*self.grid_range, n_points, dtype=coefficients.dtype)
        u = u.to(self.grid.device)
        feats = self._rbf(u)
        if self.use_base_update:
            feats = torch.cat([feats, self._act(u).unsqueeze(-1)], dim=-1)
        return coefficients @ feats.T

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "grid_size": self.grid_size,
            "grid_range": list(self.grid_range),
            "denominator": self.denominator,
            "use_layernorm": self.use_layernorm,
            "use_base_update": self.use_base_update,
            "base_activation": self.base_activation,
            "bias": self.bias is not None,
            "spline_init_scale": self.spline_init_scale,
        }
