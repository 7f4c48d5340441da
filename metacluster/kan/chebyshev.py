"""ChebyKAN's layer: Chebyshev polynomials T_0..T_D of tanh(x) on every edge, no base branch.

Polynomials come from the three-term recurrence (exact at |t| = 1, unlike acos/cos).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metacluster.kan._common import check_coefficients, check_positive
from metacluster.kan.base import Basis, FeatureKANLayer
from metacluster.kan.families import register_family

__all__ = [
    "ChebyKANLayer",
    "chebyshev_basis",
    "chebyshev_edge_functions",
    "chebyshev_polynomials",
]


def chebyshev_polynomials(t: Tensor, degree: int) -> Tensor:
    """(...,) values in [-1, 1] -> (..., degree + 1) with T_d(t) in column d."""
    polys = [torch.ones_like(t)]
    if degree >= 1:
        polys.append(t)
    for _ in range(2, degree + 1):
        polys.append(2.0 * t * polys[-1] - polys[-2])
    return torch.stack(polys, dim=-1)


def chebyshev_basis(degree: int) -> Basis:
    """The basis of T_0..T_degree of tanh(x), shared by dense and convolutional layers."""
    return Basis("chebyshev", degree + 1, {"degree": degree, "transform": "tanh"})


def chebyshev_edge_functions(coefficients: Tensor, degree: int, n_points: int) -> Tensor:
    """sum_d c_d T_d(t) at t evenly spaced in [-1, 1] (the tanh-transformed input)."""
    check_coefficients(coefficients, degree + 1)
    t = torch.linspace(-1.0, 1.0, n_points, dtype=coefficients.dtype)
    return coefficients @ chebyshev_polynomials(t.to(coefficients.device), degree).T


@register_family("chebyshev", kind="dense")
class ChebyKANLayer(FeatureKANLayer):
    """y_o = sum_i sum_d coef[o, i, d] T_d(tanh(x_i)); coef (O, I, D + 1).

    ChebyKAN stores the same numbers as `cheby_coeffs` (I, O, D + 1).
    """

    family = "chebyshev"

    def __init__(self, in_features: int, out_features: int, degree: int = 4) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.degree = check_positive("degree", degree, minimum=0)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, degree + 1))
        self.bias = None  # ChebyKAN layers have no bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ChebyKAN's: normal with std 1 / (I * (D + 1))."""
        with torch.no_grad():
            self.coef.normal_(0.0, 1.0 / (self.in_features * (self.degree + 1)))

    def features(self, x: Tensor) -> Tensor:
        """(N, I) -> (N, I, D + 1)."""
        return chebyshev_polynomials(torch.tanh(x), self.degree)

    def basis(self) -> Basis:
        return chebyshev_basis(self.degree)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        return chebyshev_edge_functions(coefficients, self.degree, n_points)

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "degree": self.degree,
        }
