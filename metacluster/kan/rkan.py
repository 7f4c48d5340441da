"""rKAN's rational activations (PyPI `rkan` 0.0.3, `rkan.torch`) with the linear layer
that follows each one: ``y_o = sum_i W[o, i] phi(x_i) + b_o``, phi one function shared by
every channel (rKAN has no per-channel parameters).

- `JacobiRKAN(degree)`: phi(x) = P_n^(a, b)(u), u = x / sqrt(x^2 + iota^2) - 1, with
  a = elu(alpha) + ... (`F.elu(alpha, 1)`), b = elu(beta), iota = softplus(iota) and n the
  degree (1..6), which rKAN keeps out of its state dict (importers need it declared).
- `PadeRKAN(degree_p, degree_q)`: phi(x) = P(s) / Q(s), s = sigmoid(x),
  P(s) = w_p[0] + w_p[1] s + sum_{d=2}^{deg_p - 1} w_p[d] J_d(2 s^z_p - 2) with
  J_d the Jacobi polynomial of (elu(alpha_p), elu(beta_p)), z_p = sigmoid(zeta_p); Q the
  same with the q parameters. Q can vanish: importers check the data range.

The Jacobi polynomials are rKAN's own: the degree-n sum over k of
prod_{j=k+1}^{n} (a + j) * prod_{j=n+1}^{n+k} (a + b + j) / (k! (n - k)! 2^k) * u^k, except
degree 1, which rKAN writes as (a - b + (a + b + 2) u) / 2.

The edge view: the one per-edge scalar is W[o, i] (L = 1); the activation's few
coefficients are shared (other parameters, fingerprinted into the edge group key).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import check_coefficients, check_positive
from metacluster.kan.base import Basis, FeatureKANLayer
from metacluster.kan.families import register_family

__all__ = ["MAX_DEGREE", "JacobiRKANLayer", "PadeRKANLayer", "jacobi", "pade_poles"]

MAX_DEGREE = 6


def jacobi(u: Tensor, n: int, a: Tensor, b: Tensor) -> Tensor:
    """rKAN's degree-n Jacobi polynomial of (a, b) at u (its degree-1 form included),
    with rKAN's float operations in its order: each term a left-to-right product of
    its factors ((j + a) + b for the a + b ones), times u^k, then divided."""
    if n == 1:
        return (a - b + (a + b + 2) * u) / 2
    total: Tensor | None = None
    for k in range(n + 1):
        c: Tensor | None = None
        for j in range(k + 1, n + 1):
            c = a + j if c is None else c * (a + j)
        for j in range(n + 1, n + k + 1):
            c = (j + a) + b if c is None else c * ((j + a) + b)
        assert c is not None
        if k == 1:
            c = c * u
        elif k > 1:
            c = c * u**k
        term = c / (math.factorial(k) * math.factorial(n - k) * 2**k)
        total = term if total is None else total + term
    assert total is not None
    return total


def _check_degree(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_DEGREE:
        raise ConfigError(f"{name} must be an integer in [{minimum}, {MAX_DEGREE}], got {value!r}")
    return value


class _RKANLayer(FeatureKANLayer):
    """coef (O, I, 1) = the linear layer's weights; bias (O,) or None; phi shared."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, 1))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None

    def _reset_linear(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.coef.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def phi(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def shared(self) -> list[Tensor]:
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        return self.phi(x).unsqueeze(-1)

    def edge_group_tensor(self) -> Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.shared()])

    def function_domain(self) -> tuple[float, float]:
        return (-3.0, 3.0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """W[o, i] phi(x) over [-3, 3]; phi is the same for every edge."""
        check_coefficients(coefficients, 1)
        x = torch.linspace(-3.0, 3.0, n_points, dtype=coefficients.dtype)
        with torch.no_grad():
            curve = self.phi(x.to(self.coef.device, self.coef.dtype)).to(coefficients)
        return coefficients * curve.unsqueeze(0)


@register_family("rkan_jacobi", kind="dense")
class JacobiRKANLayer(_RKANLayer):
    """rKAN `JacobiRKAN(degree)` then a linear layer."""

    family = "rkan_jacobi"

    def __init__(
        self, in_features: int, out_features: int, degree: int = 3, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.degree = _check_degree("degree", degree, 1)
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.ones(1))
        self.iota = nn.Parameter(torch.ones(1))
        self._reset_linear()

    def shared(self) -> list[Tensor]:
        return [self.alpha, self.beta, self.iota]

    def phi(self, x: Tensor) -> Tensor:
        a, b = F.elu(self.alpha, 1), F.elu(self.beta, 1)
        iota = F.softplus(self.iota)
        u = x / torch.sqrt(x**2 + iota**2) - 1
        return jacobi(u, self.degree, a, b)

    def basis(self) -> Basis:
        return Basis("rkan_jacobi", 1, {"degree": self.degree})

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "degree": self.degree,
            "bias": self.bias is not None,
        }


@register_family("rkan_pade", kind="dense")
class PadeRKANLayer(_RKANLayer):
    """rKAN `PadeRKAN(degree_p, degree_q)` then a linear layer (degrees = the lengths of
    w_p and w_q; rKAN's forward needs at least 2 of each). Default [3/3]: with rKAN's
    initial values Q >= 1/4 on the whole line, where its README's [2/6] starts with a
    pole (Q(-inf) = -1, Q(+inf) = 20), and at degree 2 the p side's alpha, beta and
    zeta are unused."""

    family = "rkan_pade"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        degree_p: int = 3,
        degree_q: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.degree_p = _check_degree("degree_p", degree_p, 2)
        self.degree_q = _check_degree("degree_q", degree_q, 2)
        # rKAN's parameters, in its registration order (its state dict key order).
        self.alpha_p = nn.Parameter(torch.ones(1))
        self.beta_p = nn.Parameter(torch.ones(1))
        self.zeta_p = nn.Parameter(torch.zeros(1))
        self.w_p = nn.Parameter(torch.ones(degree_p))
        self.alpha_q = nn.Parameter(torch.ones(1))
        self.beta_q = nn.Parameter(torch.ones(1))
        self.zeta_q = nn.Parameter(torch.zeros(1))
        self.w_q = nn.Parameter(torch.ones(degree_q))
        self._reset_linear()

    def shared(self) -> list[Tensor]:
        return [getattr(self, f"{n}_{s}") for s in "pq" for n in ("alpha", "beta", "zeta", "w")]

    def polynomial(self, side: str, s: Tensor) -> Tensor:
        """P (side "p") or Q (side "q") at s = sigmoid(x), as rKAN sums it."""
        names = ("w", "alpha", "beta", "zeta")
        w, alpha, beta, zeta = (getattr(self, f"{n}_{side}") for n in names)
        return _pade_side(w, alpha, beta, zeta, s)

    def phi(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return self.polynomial("p", s) / self.polynomial("q", s)

    def basis(self) -> Basis:
        return Basis("rkan_pade", 1, {"order": [self.degree_p, self.degree_q]})

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "degree_p": self.degree_p,
            "degree_q": self.degree_q,
            "bias": self.bias is not None,
        }


def _pade_side(w: Tensor, alpha: Tensor, beta: Tensor, zeta: Tensor, s: Tensor) -> Tensor:
    a, b, z = F.elu(alpha, 1), F.elu(beta, 1), torch.sigmoid(zeta)
    total = w[0] + w[1] * s
    if w.shape[0] > 2:
        u = (2 * s**z - 1) - 1  # rKAN's (2 s^z - a - b) / (b - a) - 1, a = 0, b = 1
        for d in range(2, int(w.shape[0])):
            total = total + w[d] * jacobi(u, d, a, b)
    return total


def pade_poles(layer: PadeRKANLayer, lo: float, hi: float, n: int = 20001) -> list[float]:
    """x in [lo, hi] where Q changes sign or is 0 on a fine float64 grid (Q is smooth
    in x, so a zero between two samples shows as a sign change)."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    params = [layer.w_q, layer.alpha_q, layer.beta_q, layer.zeta_q]
    w, alpha, beta, zeta = (t.detach().double().cpu() for t in params)
    q = _pade_side(w, alpha, beta, zeta, torch.sigmoid(x))
    sign = torch.sign(q)
    where = torch.nonzero(sign[1:] * sign[:-1] <= 0).reshape(-1)
    return [float((x[i] + x[i + 1]) / 2) for i in where.tolist()]
