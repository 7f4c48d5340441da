"""FourierKAN's layer (GistNoesis): a truncated Fourier series on every edge, plus a bias.

Edge vector [cos coefficients m = 1..G, sin coefficients m = 1..G]; no base branch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from metacluster.kan._common import check_coefficients, check_positive
from metacluster.kan.base import Basis, FeatureKANLayer
from metacluster.kan.families import register_family

__all__ = ["FourierKANLayer", "fourier_features"]


def fourier_features(x: Tensor, grid_size: int) -> Tensor:
    """(...,) -> (..., 2G): [cos(m x) for m = 1..G, sin(m x) for m = 1..G]."""
    m = torch.arange(1, grid_size + 1, dtype=x.dtype, device=x.device)
    angles = x.unsqueeze(-1) * m
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


# Measured on digits (64-32-10, 30 epochs, 3 seeds): Fourier with the layer default of
# 5 frequencies overfits (89-94% test accuracy) while 2 frequencies reach 96-98%.
@register_family("fourier", kind="dense", train_defaults={"grid_size": 2})
class FourierKANLayer(FeatureKANLayer):
    """y_o = sum_i sum_m C[o,i,m] cos(m x_i) + C[o,i,G+m] sin(m x_i) + b_o; coef (O, I, 2G).

    FourierKAN stores the same numbers as `fouriercoeffs` (2, O, I, G) and bias (1, O).
    """

    family = "fourier"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        bias: bool = True,
        smooth_initialization: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.grid_size = check_positive("grid_size", grid_size)
        self.smooth_initialization = bool(smooth_initialization)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, 2 * grid_size))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FourierKAN's: randn / (sqrt(I) * norm), norm = sqrt(G) or m^2 when smooth."""
        g = self.grid_size
        if self.smooth_initialization:
            norm = (torch.arange(1, g + 1, dtype=torch.float64) ** 2).repeat(2)
        else:
            norm = torch.full((2 * g,), math.sqrt(g), dtype=torch.float64)
        with torch.no_grad():
            self.coef.normal_()
            self.coef.div_((math.sqrt(self.in_features) * norm).to(self.coef.dtype))
            if self.bias is not None:
                self.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """(N, I) -> (N, I, 2G)."""
        return fourier_features(x, self.grid_size)

    def basis(self) -> Basis:
        return Basis("fourier", self.coef_dim, {"grid_size": self.grid_size})

    def function_domain(self) -> tuple[float, float]:
        return (-math.pi, math.pi)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """The series on one period [-pi, pi]."""
        check_coefficients(coefficients, self.coef_dim)
        x = torch.linspace(-math.pi, math.pi, n_points, dtype=coefficients.dtype)
        return coefficients @ fourier_features(x.to(coefficients.device), self.grid_size).T

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "grid_size": self.grid_size,
            "bias": self.bias is not None,
            "smooth_initialization": self.smooth_initialization,
        }
