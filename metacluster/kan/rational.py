"""KAT's group-rational KAN layer (GR-KAN): a rational function shared by each group of
input channels, then a linear map.

    y_o = sum_i W[o, i] * phi_{g(i)}(x_i) + b_o,   phi_g(x) = P_g(x) / Q_g(x)
    P_g(x) = a_0 + a_1 x + ... + a_m x^m
    Q_g(x) = 1 + |b_1| s(x) + ... + |b_n| s(x)^n

with channel i in group g(i) = i // (I / G) (KAT's `view(..., G, I/G)`). KAT trains with
its CUDA / Triton kernel, where s(x) = |x|, so Q >= 1 and there is no pole
(`denominator="abs"`); its pure-torch fallback `KAT_Group_Torch` uses s(x) = x
(`denominator="signed"`), whose Q can vanish for negative x: importers check that no
group has a pole in the data range. KAT shares one numerator by all groups (a (1, m+1)
parameter, repeated) and keeps a denominator per group ((G, n)).

The edge view: the one per-edge scalar is W[o, i] (L = 1); the rational coefficients are
few and shared (other parameters, kept dense, fingerprinted into the edge group key).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import check_coefficients, check_positive, flat_inputs
from metacluster.kan.base import Basis, KANLayer
from metacluster.kan.families import register_family

__all__ = ["DENOMINATORS", "GroupRationalKANLayer", "rational", "real_poles"]

DENOMINATORS = ("abs", "signed")


def rational(x: Tensor, numerator: Tensor, denominator: Tensor, mode: str) -> Tensor:
    """phi(x) for x (..., n) against numerator (..., m+1) and denominator (..., n_b)
    broadcast over x's last axis: P(x) / (1 + sum_j |b_j| s(x)^j), with powers summed
    in order from x^0, as KAT's torch fallback does."""
    powers = [torch.ones_like(x), x]
    while len(powers) < max(numerator.shape[-1], denominator.shape[-1] + 1):
        powers.append(powers[-1] * x)
    p = torch.zeros_like(x)
    for j, a in enumerate(numerator.unbind(-1)):
        p = p + a.unsqueeze(-1) * powers[j]
    q = torch.ones_like(x)
    for j, b in enumerate(denominator.abs().unbind(-1), start=1):
        q = q + b.unsqueeze(-1) * (powers[j].abs() if mode == "abs" else powers[j])
    return p / q


def real_poles(denominator: Tensor, lo: float, hi: float) -> list[tuple[int, float]]:
    """(group, x) of every real zero of 1 + sum_j |b_j| x^j in [lo, hi] (signed mode)."""
    poles = []
    for group, row in enumerate(denominator.detach().double().abs().tolist()):
        coefs = [1.0, *row]  # ascending powers
        while len(coefs) > 1 and coefs[-1] == 0.0:
            coefs.pop()
        if len(coefs) < 2:
            continue
        roots = torch.linalg.eigvals(_companion(coefs))
        for root in roots.tolist():
            if abs(root.imag) <= 1e-9 * max(1.0, abs(root.real)) and lo <= root.real <= hi:
                poles.append((group, float(root.real)))
    return sorted(poles)


def _companion(ascending: list[float]) -> Tensor:
    """The companion matrix whose eigenvalues are the roots of sum_j c_j x^j."""
    n = len(ascending) - 1
    lead = ascending[-1]
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix[1:, :-1] = torch.eye(n - 1, dtype=torch.float64)
    matrix[:, -1] = torch.tensor([-c / lead for c in ascending[:-1]], dtype=torch.float64)
    return matrix


@register_family("rational", kind="dense")
class GroupRationalKANLayer(KANLayer):
    """GR-KAN: coef (O, I, 1) = the linear weights; `numerator` (1 or G, m+1) and
    `denominator` (G, n) the rational coefficients; `bias` (O,) or None. KAT uses 8
    groups; the default here is 1 so that any width builds (importers set the count)."""

    family = "rational"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_groups: int = 1,
        numerator_order: int = 5,
        denominator_order: int = 4,
        shared_numerator: bool = True,
        denominator: str = "abs",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.num_groups = check_positive("num_groups", num_groups)
        if in_features % num_groups:
            raise ConfigError(
                f"in_features ({in_features}) must be divisible by num_groups ({num_groups})"
            )
        if denominator not in DENOMINATORS:
            raise ConfigError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
        self.mode = denominator
        self.shared_numerator = bool(shared_numerator)
        rows = 1 if self.shared_numerator else num_groups
        order = check_positive("numerator_order", numerator_order, minimum=0)
        self.numerator = nn.Parameter(torch.zeros(rows, order + 1))
        self.denominator = nn.Parameter(
            torch.zeros(num_groups, check_positive("denominator_order", denominator_order))
        )
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, 1))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The identity rational (KAT's "identity" init) and nn.Linear's weights."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.numerator.zero_()
            if self.numerator.shape[1] > 1:
                self.numerator[:, 1] = 1.0
            self.denominator.zero_()
            self.coef.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def phi(self, x: Tensor) -> Tensor:
        """(N, I) -> (N, I): each channel through its group's rational function."""
        n, width = x.shape
        z = x.reshape(n, self.num_groups, width // self.num_groups)  # (N, G, I/G)
        numerator = self.numerator.expand(self.num_groups, -1).unsqueeze(0)
        return rational(z, numerator, self.denominator.unsqueeze(0), self.mode).reshape(n, width)

    def forward(self, x: Tensor) -> Tensor:
        x2, lead = flat_inputs(x, self.in_features, type(self).__name__)
        weight = self.coef.reshape(self.out_features, self.in_features)
        return F.linear(self.phi(x2), weight, self.bias).reshape(*lead, self.out_features)

    def basis(self) -> Basis:
        params = {
            "groups": self.num_groups,
            "order": [int(self.numerator.shape[1]) - 1, int(self.denominator.shape[1])],
            "denominator": self.mode,
        }
        return Basis("rational", 1, params)

    def edge_group_tensor(self) -> Tensor:
        return torch.cat(
            [self.numerator.detach().reshape(-1), self.denominator.detach().reshape(-1)]
        )

    def function_domain(self) -> tuple[float, float]:
        return (-3.0, 3.0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """W[o, i] phi_{g(i)}(x) for the layer's own edges; other vectors (centroids) are
        drawn with the first group's function, as grids are drawn on the first input's."""
        check_coefficients(coefficients, 1)
        x = torch.linspace(-3.0, 3.0, n_points, dtype=coefficients.dtype).to(coefficients.device)
        num = self.numerator.detach().to(x).expand(self.num_groups, -1)
        curves = rational(
            x.expand(self.num_groups, -1), num, self.denominator.detach().to(x), self.mode
        )
        if coefficients.shape[0] == self.n_edges:
            group = self.edge_index()[:, 1] // (self.in_features // self.num_groups)
            return coefficients * curves[group.to(coefficients.device)]
        return coefficients * curves[:1]

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "num_groups": self.num_groups,
            "numerator_order": int(self.numerator.shape[1]) - 1,
            "denominator_order": int(self.denominator.shape[1]),
            "shared_numerator": self.shared_numerator,
            "denominator": self.mode,
            "bias": self.bias is not None,
        }
