"""Wav-KAN's dense layer (torch-conv-kan `WavKANLayer`): one mother wavelet per layer,
scaled and shifted per edge, plus a SiLU base branch.

y_o = sum_i w[o,i] psi((x_i - t[o,i]) / s[o,i]) + sum_i b[o,i] silu(x_i); coef (O, I, 4)
holds [w, b, t, s] per edge (every per-edge scalar of the layer). Upstream's BatchNorm1d
after the sum is a glue module (in eval mode an `Affine`). The edge function is not
linear in its vector: a codebook of such vectors still works (the engine evaluates edges,
never assumes linearity), but a zero vector is no function (s = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import check_coefficients, check_positive, flat_inputs
from metacluster.kan.base import Basis, KANLayer
from metacluster.kan.families import register_family

__all__ = ["WAVELETS", "WaveletKANLayer"]


_MEXICAN_HAT_SCALE: float = 2 / (math.sqrt(3) * math.pi**0.25)


def _mexican_hat(x: Tensor) -> Tensor:
    return _MEXICAN_HAT_SCALE * ((x**2) - 1) * torch.exp(-0.5 * x**2)


def _morlet(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x**2) * torch.cos(5.0 * x)


def _dog(x: Tensor) -> Tensor:
    return -x * torch.exp(-0.5 * x**2)


def _meyer(x: Tensor) -> Tensor:
    v = torch.abs(x)
    t = 2 * v - 1
    nu = t**4 * (35 - 84 * t + 70 * t**2 - 20 * t**3)
    aux = torch.where(
        v <= 1 / 2,
        torch.ones_like(v),
        torch.where(v >= 1, torch.zeros_like(v), torch.cos(math.pi / 2 * nu)),
    )
    return torch.sin(math.pi * v) * aux


# Upstream's wavelets, formula for formula ("shannon" windows over the input axis, so
# it is not a per-edge function: not supported).
WAVELETS: dict[str, Callable[[Tensor], Tensor]] = {
    "mexican_hat": _mexican_hat,
    "morlet": _morlet,
    "dog": _dog,
    "meyer": _meyer,
}


@register_family("wavelet", kind="dense")
class WaveletKANLayer(KANLayer):
    """WavKANLayer without its BatchNorm; coef (O, I, 4) = [w, b, t, s] per edge."""

    family = "wavelet"

    def __init__(
        self, in_features: int, out_features: int, wavelet_type: str = "mexican_hat"
    ) -> None:
        super().__init__()
        self.in_features = check_positive("in_features", in_features)
        self.out_features = check_positive("out_features", out_features)
        if wavelet_type not in WAVELETS:
            raise ConfigError(
                f"wavelet_type must be one of {sorted(WAVELETS)}, got {wavelet_type!r}"
            )
        self.wavelet_type = wavelet_type
        self.coef = nn.Parameter(torch.empty(self.out_features, self.in_features, 4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: weights kaiming-uniform (a = sqrt 5), translation 0, scale 1."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.coef[..., :2].uniform_(-bound, bound)
            self.coef[..., 2].zero_()
            self.coef[..., 3].fill_(1.0)

    def _edges(self, x: Tensor, coef: Tensor) -> Tensor:
        """x (N, I) or (P,) against coef (..., I, 4) -> per-edge values (N, ..., I)."""
        w, b, t, s = coef.unbind(-1)
        return w * WAVELETS[self.wavelet_type]((x - t) / s) + b * F.silu(x)

    def forward(self, x: Tensor) -> Tensor:
        x2, lead = flat_inputs(x, self.in_features, type(self).__name__)
        w, b, t, s = self.coef.unbind(-1)
        psi = WAVELETS[self.wavelet_type]((x2.unsqueeze(1) - t) / s)  # (N, O, I)
        y = (psi * w).sum(dim=2) + F.linear(F.silu(x2), b)
        return y.reshape(*lead, self.out_features)

    def basis(self) -> Basis:
        return Basis("wavelet", 4, {"wavelet": self.wavelet_type, "base": "silu"})

    def function_domain(self) -> tuple[float, float]:
        return (-3.0, 3.0)

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        check_coefficients(coefficients, 4)
        x = torch.linspace(-3.0, 3.0, n_points, dtype=coefficients.dtype).to(coefficients.device)
        return self._edges(x.unsqueeze(0), coefficients.unsqueeze(1))

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "wavelet_type": self.wavelet_type,
        }
