"""Equation-modelling tasks (`eq:<name>`): inputs drawn uniformly, targets from a formula.

Same recipe as pykan's `create_dataset` (uniform inputs on per-variable ranges,
seeded, 1000/1000 samples by default), with a private generator so loading a
data set never disturbs the caller's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metacluster.errors import DatasetError


@dataclass(frozen=True)
class Equation:
    """A named formula f: (n, n_vars) -> (n, 1) with the input ranges it is sampled on."""

    name: str
    n_vars: int
    formula: str  # human-readable, for `list_equations`
    fn: Callable[[Tensor], Tensor]
    ranges: tuple[tuple[float, float], ...]  # one (low, high) per input, or one for all


def _feynman_i_6_2(x: Tensor) -> Tensor:
    theta, sigma = x[:, 0], x[:, 1]
    return torch.exp(-0.5 * (theta / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def _feynman_i_12_11(x: Tensor) -> Tensor:
    q, ef, b, v, theta = (x[:, i] for i in range(5))
    return q * (ef + b * v * torch.sin(theta))


_PI = math.pi


def _exp_mean_sin_sq(n_vars: int) -> Equation:
    """exp(mean_i sin^2(pi*x_i/2)) over `n_vars` inputs, all on [-1, 1]."""
    return Equation(
        f"exp_mean_sin_sq_{n_vars}d",
        n_vars,
        f"exp(mean_i sin^2(pi*x_i/2)), {n_vars} inputs",
        lambda x: torch.exp(torch.sin(_PI * x / 2).pow(2).mean(dim=1)),
        ((-1.0, 1.0),),
    )


EQUATIONS: dict[str, Equation] = {
    eq.name: eq
    for eq in (
        Equation(
            "exp_sinpi_plus_sq",
            2,
            "exp(sin(pi*x1) + x2^2)",
            lambda x: torch.exp(torch.sin(_PI * x[:, 0]) + x[:, 1] ** 2),
            ((-1.0, 1.0),),
        ),
        Equation("xy", 2, "x1*x2", lambda x: x[:, 0] * x[:, 1], ((-1.0, 1.0),)),
        Equation(
            "sin_cos",
            2,
            "sin(pi*x1) * cos(pi*x2)",
            lambda x: torch.sin(_PI * x[:, 0]) * torch.cos(_PI * x[:, 1]),
            ((-1.0, 1.0),),
        ),
        Equation(
            "feynman_I_6_2",
            2,
            "exp(-(theta/sigma)^2/2) / (sqrt(2*pi)*sigma)  [Feynman I.6.2]",
            _feynman_i_6_2,
            ((-3.0, 3.0), (1.0, 3.0)),
        ),
        Equation(
            "feynman_I_12_11",
            5,
            "q*(Ef + B*v*sin(theta))  [Feynman I.12.11]",
            _feynman_i_12_11,
            ((-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (0.0, _PI)),
        ),
        Equation(
            "exp_sin_sq_4d",
            4,
            "exp(0.5*(sin(pi*(x1^2+x2^2)) + sin(pi*(x3^2+x4^2))))",
            lambda x: torch.exp(
                0.5
                * (
                    torch.sin(_PI * (x[:, 0] ** 2 + x[:, 1] ** 2))
                    + torch.sin(_PI * (x[:, 2] ** 2 + x[:, 3] ** 2))
                )
            ),
            ((-1.0, 1.0),),
        ),
        _exp_mean_sin_sq(10),
        _exp_mean_sin_sq(100),
    )
}


def list_equations() -> list[dict[str, object]]:
    """Name, input count, formula and ranges of every built-in `eq:` task."""
    return [
        {
            "name": eq.name,
            "n_vars": eq.n_vars,
            "formula": eq.formula,
            "ranges": [list(r) for r in eq.ranges],
        }
        for eq in EQUATIONS.values()
    ]


def _sample_inputs(eq: Equation, n: int, gen: torch.Generator) -> Tensor:
    ranges = eq.ranges * eq.n_vars if len(eq.ranges) == 1 else eq.ranges
    low = torch.tensor([r[0] for r in ranges], dtype=torch.float64)
    high = torch.tensor([r[1] for r in ranges], dtype=torch.float64)
    return torch.rand(n, eq.n_vars, generator=gen, dtype=torch.float64) * (high - low) + low


# Samples an `eq:` task makes unless its spec says otherwise (`eq:xy?n_train=...`).
DEFAULT_N_TRAIN = 1000
DEFAULT_N_TEST = 1000


def make_equation_data(
    name: str,
    *,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test) in float32; y has shape (n, 1).

    Targets are computed in float64 then cast, so the noise-free targets are
    exact to fp32 precision. `noise` adds Gaussian noise of that std to the
    training targets only (the test set measures the true function).
    """
    eq = EQUATIONS.get(name)
    if eq is None:
        raise DatasetError(f"unknown equation {name!r}; known: {', '.join(EQUATIONS)}")
    if n_train < 1 or n_test < 1:
        raise DatasetError(f"eq:{name}: n_train and n_test must be >= 1, got {n_train}/{n_test}")
    if noise < 0 or not math.isfinite(noise):
        raise DatasetError(f"eq:{name}: noise must be a finite value >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    x_train = _sample_inputs(eq, n_train, gen)
    x_test = _sample_inputs(eq, n_test, gen)
    y_train = eq.fn(x_train)[:, None]
    y_test = eq.fn(x_test)[:, None]
    if noise > 0:
        y_train = y_train + noise * torch.randn(y_train.shape, generator=gen, dtype=torch.float64)
    return x_train.float(), y_train.float(), x_test.float(), y_test.float()
