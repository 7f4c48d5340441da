"""Straightforward references for the KAN layer tests: textbook formulas in float64 loops.

Deliberately slow and independent of metacluster's vectorised code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metacluster.kan import BSplineKANLayer, ChebyKANConv2d, KANConv2d, RBFKANLayer

F64 = torch.float64


def basis_ref(c: int, k: int, x: float, knots: list[float]) -> float:
    """Textbook Cox-de Boor, one basis at one point, half-open support."""
    if k == 0:
        return 1.0 if knots[c] <= x < knots[c + 1] else 0.0
    out = 0.0
    left = knots[c + k] - knots[c]
    if left != 0:
        out += (x - knots[c]) / left * basis_ref(c, k - 1, x, knots)
    right = knots[c + k + 1] - knots[c + 1]
    if right != 0:
        out += (knots[c + k + 1] - x) / right * basis_ref(c + 1, k - 1, x, knots)
    return out


def silu(v: float) -> float:
    return v / (1.0 + math.exp(-v))


def layer_ref(layer: BSplineKANLayer, x: torch.Tensor) -> torch.Tensor:
    """y[n, o] = sum_i coef[o,i,-1] * act(x) + sum_c coef[o,i,c] * B_c(x), by loops."""
    coef = layer.coef.detach().to(F64)
    grid = layer.grid.detach().to(F64).tolist()
    k = layer.spline_order
    acts: dict[str, Callable[[float], float]] = {
        "silu": silu,
        "identity": lambda v: v,
        "zero": lambda v: 0.0,
    }
    act = acts[layer.base_activation]
    y = torch.zeros(x.shape[0], layer.out_features, dtype=F64)
    for n in range(x.shape[0]):
        for o in range(layer.out_features):
            total = 0.0
            for i in range(layer.in_features):
                xv = float(x[n, i])
                for c in range(layer.n_basis):
                    total += float(coef[o, i, c]) * basis_ref(c, k, xv, grid[i])
                if layer.has_base:
                    total += float(coef[o, i, -1]) * act(xv)
            y[n, o] = total
    return y


def random_coef_(layer: BSplineKANLayer, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.coef.copy_(torch.randn(layer.coef.shape, generator=gen, dtype=layer.coef.dtype))


def inputs(n: int, i: int, lo: float = -1.6, hi: float = 1.6, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, i, generator=gen, dtype=F64) * (hi - lo) + lo


def gelu(v: float) -> float:
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def rbf_ref(layer: RBFKANLayer, x: torch.Tensor) -> torch.Tensor:
    """FastKAN: W . phi(LayerNorm(x)) + base_linear(silu(x)), by loops."""
    coef = layer.coef.detach().to(F64)
    grid = layer.grid.detach().to(F64).tolist()
    n_in, n_out, g = layer.in_features, layer.out_features, layer.grid_size
    y = torch.zeros(x.shape[0], n_out, dtype=F64)
    for n in range(x.shape[0]):
        xs = [float(v) for v in x[n]]
        if layer.layernorm is not None:
            mean = sum(xs) / n_in
            var = sum((v - mean) ** 2 for v in xs) / n_in
            w = layer.layernorm.weight.detach().tolist()
            b = layer.layernorm.bias.detach().tolist()
            us = [
                (v - mean) / math.sqrt(var + layer.layernorm.eps) * w[i] + b[i]
                for i, v in enumerate(xs)
            ]
        else:
            us = xs
        for o in range(n_out):
            total = float(layer.bias[o].detach()) if layer.bias is not None else 0.0
            for i in range(n_in):
                for j in range(g):
                    phi = math.exp(-(((us[i] - grid[j]) / layer.denominator) ** 2))
                    total += float(coef[o, i, j]) * phi
                if layer.use_base_update:
                    total += float(coef[o, i, g]) * silu(xs[i])
            y[n, o] = total
    return y


def cheby_ref(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ChebyKAN: sum_i sum_d C[o,i,d] cos(d * acos(tanh x_i)); coef (O, I, D+1)."""
    n_out, n_in, n_deg = coef.shape
    y = torch.zeros(x.shape[0], n_out, dtype=F64)
    for n in range(x.shape[0]):
        for o in range(n_out):
            y[n, o] = sum(
                float(coef[o, i, d]) * math.cos(d * math.acos(math.tanh(float(x[n, i]))))
                for i in range(n_in)
                for d in range(n_deg)
            )
    return y


def fourier_ref(coef: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """FourierKAN: sum_i sum_m C0 cos(m x_i) + C1 sin(m x_i) + b; coef (O, I, 2G)."""
    n_out, n_in, two_g = coef.shape
    g = two_g // 2
    y = torch.zeros(x.shape[0], n_out, dtype=F64)
    for n in range(x.shape[0]):
        for o in range(n_out):
            total = float(bias[o].detach()) if bias is not None else 0.0
            for i in range(n_in):
                xv = float(x[n, i])
                for m in range(1, g + 1):
                    total += float(coef[o, i, m - 1]) * math.cos(m * xv)
                    total += float(coef[o, i, g + m - 1]) * math.sin(m * xv)
            y[n, o] = total
    return y


def conv_ref(
    layer: KANConv2d | ChebyKANConv2d,
    x: torch.Tensor,
    edge_fn: Callable[[torch.Tensor, float], float],
) -> torch.Tensor:
    """Grouped 2D conv KAN without norm/prelu: every (out, in, kh, kw) edge applies its own
    function edge_fn(coef_vector, value) to the input pixel under it; padded pixels add 0."""
    coef = layer.coef.detach().to(F64)
    n_out, in_per_group, kh, kw, _ = coef.shape
    out_per_group = n_out // layer.groups
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    n, _, h, w = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = torch.zeros(n, n_out, ho, wo, dtype=F64)
    for b in range(n):
        for o in range(n_out):
            first_in = (o // out_per_group) * in_per_group
            for p in range(ho):
                for q in range(wo):
                    total = 0.0
                    for i in range(in_per_group):
                        for a in range(kh):
                            for c in range(kw):
                                r, s = p * sh - ph + a * dh, q * sw - pw + c * dw
                                if 0 <= r < h and 0 <= s < w:
                                    v = float(x[b, first_in + i, r, s])
                                    total += edge_fn(coef[o, i, a, c], v)
                    y[b, o, p, q] = total
    return y
