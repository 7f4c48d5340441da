"""Shared helpers of the KAN layer families: activations by name and input checks.

Kept private: layers store activations by name so that `config()` stays JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from metacluster.errors import ConfigError, InputError

Activation = Callable[[Tensor], Tensor]


def _zero(x: Tensor) -> Tensor:
    return torch.zeros_like(x)


def _identity(x: Tensor) -> Tensor:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "silu": F.silu,
    "identity": _identity,
    "zero": _zero,
    "gelu": F.gelu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Activation:
    """The base-branch activation called `name`; ConfigError for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


def check_features(x: Tensor, in_features: int, layer: str) -> None:
    """Raise InputError unless x is a floating tensor shaped (..., in_features)."""
    if not isinstance(x, Tensor):
        raise InputError(f"{layer}: expected a tensor input, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise InputError(
            f"{layer}: expected input of shape (..., {in_features}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise InputError(f"{layer}: expected a floating point input, got {x.dtype}")


def check_positive(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer hyperparameter; ConfigError when below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_range(name: str, value: tuple[float, float] | list[float]) -> tuple[float, float]:
    """Validate a (low, high) range with low < high; ConfigError otherwise."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not lo < hi:
        raise ConfigError(f"{name} must satisfy low < high, got {value!r}")
    return lo, hi


def linear_over_features(feats: Tensor, coef: Tensor, bias: Tensor | None = None) -> Tensor:
    """y[n, o] = sum_{i,l} feats[n, i, l] * coef[o, i, l] (+ bias): one GEMM.

    feats: (N, I, L); coef: (O, I, L) -> (N, O). The edge layout (out, in, L) makes
    the flattened coefficient matrix exactly F.linear's weight, without a copy.
    """
    n, i, length = feats.shape
    return F.linear(feats.reshape(n, i * length), coef.reshape(coef.shape[0], i * length), bias)


def flat_inputs(x: Tensor, in_features: int, layer: str) -> tuple[Tensor, tuple[int, ...]]:
    """Check x (..., I) and return it as (N, I) together with its leading shape."""
    check_features(x, in_features, layer)
    return x.reshape(-1, in_features), tuple(x.shape[:-1])


def check_coefficients(coefficients: Tensor, coef_dim: int) -> None:
    """InputError unless coefficients is (n, coef_dim)."""
    if coefficients.dim() != 2 or coefficients.shape[1] != coef_dim:
        raise InputError(
            f"expected coefficients of shape (n, {coef_dim}), got {tuple(coefficients.shape)}"
        )


def _silu_grad(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _gelu_grad(x: Tensor) -> Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    pdf = torch.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf + x * pdf


def _tanh_grad(x: Tensor) -> Tensor:
    return 1.0 - torch.tanh(x).square()


# d act / dx, for layers that fuse the base branch into their own backward.
ACTIVATION_GRADS: dict[str, Activation] = {
    "silu": _silu_grad,
    "identity": torch.ones_like,
    "zero": torch.zeros_like,
    "gelu": _gelu_grad,
    "relu": lambda x: (x > 0).to(x.dtype),
    "tanh": _tanh_grad,
}
