"""Shared helpers for the format tests: output comparison and tiny inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# The largest output difference each importer may leave against the source library
# (fp32 inputs), about 3x the largest measured over this suite: a regression (or an
# importer off by a scale factor) fails here instead of hiding under one loose bound.
# Measured: efficient-kan 2.4e-7 (LKAN), pykan 3.6e-7 (legacy), fastkan 3.6e-7,
# chebykan 3.5e-6 (with LayerNorms), fourierkan 2.9e-6, torch-conv-kan 1.9e-6 (KANConv;
# its polynomial layers: dense 7.5e-7, conv 3.6e-6 for KAGNConv),
# our format / spec 6e-8.
TOL = {
    "efficient-kan": 1e-6,
    "pykan": 1e-6,
    "fastkan": 1e-6,
    "chebykan": 1e-5,
    "fourierkan": 1e-5,
    "torch-conv-kan": 1e-5,
    "spec": 1e-6,
    "fast-bspline": 1e-5,
    "kat": 1e-5,
    "convkan": 1e-5,
    "torchkan": 1e-5,
    "rkan": 1e-5,
    "kaconv": 1e-5,
}


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
    ref: Callable[[Tensor], Tensor], ours: Callable[[Tensor], Tensor], x: Tensor, *, fmt: str
) -> float:
    with torch.no_grad():
        diff = max_diff(ref(x), ours(x))
    assert diff <= TOL[fmt], (fmt, diff)
    return diff
