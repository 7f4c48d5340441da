"""torch-conv-kan's orthogonal-polynomial families: Gram, Legendre, Jacobi and Bernstein.

Each edge holds the D + 1 polynomial coefficients and, last, its base-branch weight
(L = D + 2). The input transform and base branch are upstream's:

============  ===========================  ==================  ==============
family        input transform t(x)         dense base branch   conv base
============  ===========================  ==================  ==============
gram          tanh; features silu(G_d(t))  silu(x)             silu(x)
legendre      min/max of the batch -> [-1,1]  silu(x)          x
jacobi        tanh                         silu(x)             x
bernstein     sigmoid (t in [0, 1])        silu(x)             x
============  ===========================  ==================  ==============

Gram's three-term recurrence has one learned scale per degree (`beta`, shared by every
edge of the layer): an "other parameter", fingerprinted into the edge groups so edges of
layers with different betas never share a codebook. Legendre normalises with the min and
max of the whole input batch (per conv group), as upstream does: its outputs depend on
the batch, and its edge functions are drawn over the normalised input.

The LayerNorm (dense) / InstanceNorm (conv, inside the layer) and the SiLU that upstream
applies after the sum are glue modules after the layer (`metacluster.formats`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import activation, check_coefficients, check_positive
from metacluster.kan.base import Basis, FeatureKANLayer
from metacluster.kan.conv import IntPair, _ConvKAN2d
from metacluster.kan.families import register_family

__all__ = [
    "BernsteinKANConv2d",
    "BernsteinKANLayer",
    "GramKANConv2d",
    "GramKANLayer",
    "JacobiKANConv2d",
    "JacobiKANLayer",
    "LegendreKANConv2d",
    "LegendreKANLayer",
    "polynomial_features",
]

TRANSFORMS = {"gram": "tanh", "legendre": "minmax", "jacobi": "tanh", "bernstein": "sigmoid"}


def legendre_polynomials(t: Tensor, degree: int) -> Tensor:
    """P_0..P_degree of t in the last dimension (upstream's recurrence)."""
    polys = [torch.ones_like(t)]
    if degree >= 1:
        polys.append(t)
    for n in range(1, degree):
        polys.append(((2.0 * n + 1.0) * t * polys[-1] - n * polys[-2]) / (n + 1.0))
    return torch.stack(polys, dim=-1)


def jacobi_polynomials(t: Tensor, degree: int, a: float, b: float) -> Tensor:
    """P_0^(a,b)..P_degree^(a,b) of t, with upstream's recurrence coefficients."""
    polys = [torch.ones_like(t)]
    if degree >= 1:
        polys.append(((a - b) + (a + b + 2) * t) / 2)
    for i in range(2, degree + 1):
        theta_k = (2 * i + a + b) * (2 * i + a + b - 1) / (2 * i * (i + a + b))
        theta_k1 = (
            (2 * i + a + b - 1) * (a * a - b * b) / (2 * i * (i + a + b) * (2 * i + a + b - 2))
        )
        theta_k2 = (
            (i + a - 1) * (i + b - 1) * (2 * i + a + b) / (i * (i + a + b) * (2 * i + a + b - 2))
        )
        polys.append((theta_k * t + theta_k1) * polys[-1] - theta_k2 * polys[-2])
    return torch.stack(polys, dim=-1)


def gram_polynomials(t: Tensor, beta: Tensor) -> Tensor:
    """Gram polynomials p_0..p_D of t, p_i = t p_{i-1} - beta(i-1, i) p_{i-2}, where
    beta(n, m) = (m+n)(m-n)n^2 / (m^2 / (4n^2 - 1)) * beta_weights[n] (GRAMKAN's)."""
    degree = int(beta.shape[0]) - 1
    polys = [torch.ones_like(t)]
    if degree >= 1:
        polys.append(t)
    for i in range(2, degree + 1):
        n, m = i - 1, i
        scale = ((m + n) * (m - n) * n**2) / (m**2 / (4.0 * n**2 - 1.0))
        polys.append(t * polys[-1] - scale * beta[n] * polys[-2])
    return torch.stack(polys, dim=-1)


def bernstein_polynomials(t: Tensor, degree: int) -> Tensor:
    """Bernstein basis b_0..b_D of t in [0, 1], by upstream's de Casteljau sweep."""
    basis = [torch.ones_like(t) for _ in range(degree + 1)]
    for j in range(1, degree + 1):
        for k in range(degree + 1 - j):
            basis[k] = basis[k] * (1 - t) + basis[k + 1] * t
    return torch.stack(basis, dim=-1)


def minmax(x: Tensor) -> Tensor:
    """2 (x - min) / (max - min) - 1 over the whole tensor (KALN's normalisation)."""
    if x.numel() == 0:
        return x
    lo, hi = x.min(), x.max()
    return 2 * (x - lo) / (hi - lo) - 1


def polynomial_features(
    kind: str, t: Tensor, degree: int, beta: Tensor | None, a: float, b: float
) -> Tensor:
    """(...,) transformed inputs -> (..., D + 1) basis values of family `kind`."""
    if kind == "gram":
        assert beta is not None
        return F.silu(gram_polynomials(t, beta.to(t.dtype)))
    if kind == "legendre":
        return legendre_polynomials(t, degree)
    if kind == "jacobi":
        return jacobi_polynomials(t, degree, a, b)
    return bernstein_polynomials(t, degree)


def _transform(kind: str, x: Tensor) -> Tensor:
    transform = TRANSFORMS[kind]
    if transform == "tanh":
        return torch.tanh(x)
    if transform == "sigmoid":
        return torch.sigmoid(x)
    return minmax(x)


class _Polynomial:
    """What dense and conv polynomial layers share: degree, Jacobi's (a, b), Gram's
    beta, the basis, the edge groups and the edge functions. Mixed into a KANLayer."""

    kind: ClassVar[str]
    family: ClassVar[str]
    beta: nn.Parameter | None

    degree: int
    a: float
    b: float
    base_activation: str

    def _setup(self, degree: int, a: float, b: float, base_activation: str) -> None:
        self.degree = check_positive("degree", degree, minimum=0)
        self.a, self.b = float(a), float(b)
        if self.kind == "jacobi" and not (self.a > -1 and self.b > -1):
            raise ConfigError(f"jacobi: a and b must be > -1, got {a!r}, {b!r}")
        activation(base_activation)  # validates the name
        self.base_activation = base_activation

    def poly_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "degree": self.degree,
            "transform": TRANSFORMS[self.kind],
            "base": self.base_activation,
        }
        if self.kind == "jacobi":
            params |= {"a": self.a, "b": self.b}
        return params

    def basis(self) -> Basis:
        return Basis(self.kind, self.degree + 2, self.poly_params())

    def value_features(self, x: Tensor) -> Tensor:
        """(...,) raw inputs -> (..., D + 2): basis of t(x), then the base branch of x."""
        feats = polynomial_features(
            self.kind, _transform(self.kind, x), self.degree, self.beta, self.a, self.b
        )
        return torch.cat([feats, activation(self.base_activation)(x).unsqueeze(-1)], dim=-1)

    def function_domain(self) -> tuple[float, float]:
        """Where edge functions are drawn: x in [-3, 3] (tanh / sigmoid families), the
        normalised input in [-1, 1] (Legendre, whose batch statistics are not fixed)."""
        bound = 1.0 if self.kind == "legendre" else 3.0
        return (-bound, bound)

    def sample_points(self, n_points: int, dtype: torch.dtype) -> Tensor:
        return torch.linspace(*self.function_domain(), n_points, dtype=dtype)

    def poly_edge_functions(self, coefficients: Tensor, n_points: int) -> Tensor:
        check_coefficients(coefficients, self.degree + 2)
        x = self.sample_points(n_points, coefficients.dtype).to(coefficients.device)
        t = x if self.kind == "legendre" else _transform(self.kind, x)
        feats = polynomial_features(self.kind, t, self.degree, self.beta, self.a, self.b)
        base = activation(self.base_activation)(x).unsqueeze(-1)
        return coefficients @ torch.cat([feats, base], dim=-1).T

    def edge_group_tensor(self) -> Tensor | None:
        return None if self.beta is None else self.beta.detach()

    def poly_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"degree": self.degree, "base_activation": self.base_activation}
        if self.kind == "jacobi":
            config |= {"a": self.a, "b": self.b}
        return config


def _beta(kind: str, degree: int) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(degree + 1)) if kind == "gram" else None


class _PolyKANLayer(_Polynomial, FeatureKANLayer):
    """Dense: y_o = sum_i sum_d coef[o,i,d] P_d(t(x_i)) + coef[o,i,-1] act(x_i); coef
    (O, I, D + 2). Legendre's min / max run over the whole (N, I) batch."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        degree: int = 3,
        a: float = 1.0,
        b: float = 1.0,
        base_activation: str = "silu",
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        self._setup(degree, a, b, base_activation)
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, degree + 2))
        self.beta = _beta(self.kind, degree)
        self.bias = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's scale: normal with std 1 / (I (D + 1)); Gram's beta likewise."""
        std = 1.0 / (self.in_features * (self.degree + 1))
        with torch.no_grad():
            self.coef.normal_(0.0, std)
            if self.beta is not None:
                self.beta.normal_(0.0, std)

    def features(self, x: Tensor) -> Tensor:
        return self.value_features(x)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        return self.poly_edge_functions(coefficients, n_points)

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            **self.poly_config(),
        }


class _PolyKANConv2d(_Polynomial, _ConvKAN2d):
    """Conv: coef (O, I/g, kh, kw, D + 2), instance norm inside the layer (torch-conv-kan's
    InstanceNorm2d), no PReLU. Legendre's min / max run per group over the batch."""

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
        a: float = 1.0,
        b: float = 1.0,
        base_activation: str | None = None,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        base = base_activation or ("silu" if self.kind == "gram" else "identity")
        self._setup(degree, a, b, base)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            degree + 2,
            stride,
            padding,
            dilation,
            groups,
            norm,
            False,
            dropout,
        )
        self.beta = _beta(self.kind, degree)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: kaiming-uniform convs; Gram's beta normal, as KAGNConv's."""
        self.kaiming_reset(self.degree + 1)
        if self.beta is not None:
            kh, kw = self.kernel_size
            with torch.no_grad():
                self.beta.normal_(0.0, 1.0 / (kh * kw * self.in_channels * (self.degree + 1)))

    def channel_features(self, x: Tensor) -> Tensor:
        return self.value_features(x)

    def image_features(self, x: Tensor) -> Tensor:
        if self.kind != "legendre":
            return super().image_features(x)
        # KALN normalises each group's slice of the batch by its own min and max.
        parts = []
        for chunk in torch.split(x, self.in_channels // self.groups, dim=1):
            poly = legendre_polynomials(minmax(chunk), self.degree)
            parts.append(torch.cat([poly, chunk.unsqueeze(-1)], dim=-1))
        return torch.cat(parts, dim=1)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        return self.poly_edge_functions(coefficients, n_points)

    def config(self) -> dict[str, Any]:
        config = {**self._conv_config(), **self.poly_config()}
        del config["prelu"]
        return config


@register_family("gram", kind="dense")
class GramKANLayer(_PolyKANLayer):
    """torch-conv-kan GRAMLayer (KAGN): silu(Gram polynomials of tanh x) + silu base."""

    kind = family = "gram"


@register_family("legendre", kind="dense")
class LegendreKANLayer(_PolyKANLayer):
    """torch-conv-kan KALNLayer (KALN): Legendre of the batch-normalised x + silu base."""

    kind = family = "legendre"


@register_family("jacobi", kind="dense")
class JacobiKANLayer(_PolyKANLayer):
    """torch-conv-kan JacobiKANLayer (KAJN): Jacobi (a, b) of tanh x + silu base."""

    kind = family = "jacobi"


@register_family("bernstein", kind="dense")
class BernsteinKANLayer(_PolyKANLayer):
    """torch-conv-kan BernsteinKANLayer (KABN): Bernstein of sigmoid x + silu base."""

    kind = family = "bernstein"


@register_family("conv_gram", kind="conv")
class GramKANConv2d(_PolyKANConv2d):
    """torch-conv-kan KAGNConv2DLayer."""

    kind = family = "gram"


@register_family("conv_legendre", kind="conv")
class LegendreKANConv2d(_PolyKANConv2d):
    """torch-conv-kan KALNConv2DLayer."""

    kind = family = "legendre"


@register_family("conv_jacobi", kind="conv")
class JacobiKANConv2d(_PolyKANConv2d):
    """torch-conv-kan KAJNConv2DLayer."""

    kind = family = "jacobi"


@register_family("conv_bernstein", kind="conv")
class BernsteinKANConv2d(_PolyKANConv2d):
    """torch-conv-kan KABNConv2DLayer."""

    kind = family = "bernstein"


POLY_LAYERS: dict[str, type[_PolyKANLayer]] = {
    cls.kind: cls for cls in (GramKANLayer, LegendreKANLayer, JacobiKANLayer, BernsteinKANLayer)
}
POLY_CONVS: dict[str, type[_PolyKANConv2d]] = {
    cls.kind: cls for cls in (GramKANConv2d, LegendreKANConv2d, JacobiKANConv2d, BernsteinKANConv2d)
}
