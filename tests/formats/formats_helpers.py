"""Shared helpers for the format tests: output comparison and tiny inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

TOL = 1e-5


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max())


def inputs(
    n: int, d: int, seed: int = 0, scale: float = 1.2, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Points spread over (and a little beyond) the default grid range."""
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)


def assert_same_outputs(
    ref: Callable[[Tensor], Tensor], ours: Callable[[Tensor], Tensor], x: Tensor
) -> float:
    with torch.no_grad():
        diff = max_diff(ref(x), ours(x))
    assert diff <= TOL, diff
    return diff
