"""pykan 0.0.x `KAN` state-dict layout and forward (kan/KANLayer.py, kan/KAN.py), for tests.

Flat per-edge rows (row = o*I + i): `act_fun.{li}.coef` [I*O, G+k], `grid`
[I*O, G+1] (un-extended; B_batch extends it by k average steps on the fly),
`scale_base`, `scale_sp`, `mask` [I*O]; `biases.{li}.weight` [1, O];
`symbolic_fun.{li}.mask` [O, I], `symbolic_fun.{li}.affine` [O, I, 4].
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def extend_grid(grid: Tensor, k_extend: int) -> Tensor:
    h = (grid[:, [-1]] - grid[:, [0]]) / (grid.shape[1] - 1)
    for _ in range(k_extend):
        grid = torch.cat([grid[:, [0]] - h, grid], dim=1)
        grid = torch.cat([grid, grid[:, [-1]] + h], dim=1)
    return grid


def b_batch(x: Tensor, grid: Tensor, k: int, extend: bool = True) -> Tensor:
    """x (size, batch), grid (size, G+1) -> (size, G+k, batch), as pykan 0.0.x B_batch."""
    if extend:
        grid = extend_grid(grid, k_extend=k)
    grid = grid.unsqueeze(dim=2)
    x = x.unsqueeze(dim=1)
    if k == 0:
        return ((x >= grid[:, :-1]) * (x < grid[:, 1:])).to(x.dtype)
    b_km1 = b_batch(x[:, 0], grid=grid[:, :, 0], k=k - 1, extend=False)
    return (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * b_km1[:, :-1] + (
        grid[:, k + 1 :] - x
    ) / (grid[:, k + 1 :] - grid[:, 1:(-k)]) * b_km1[:, 1:]


def make_state(
    widths: list[int], grid: int = 5, k: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """A trained-looking legacy state dict: random coefficients, scales and biases."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for li, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        size = n_in * n_out
        state[f"biases.{li}.weight"] = torch.randn(1, n_out, generator=gen, dtype=dtype) * 0.1
    for li, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        size = n_in * n_out
        knots = torch.linspace(-1, 1, grid + 1, dtype=dtype)
        # a per-input grid update moved the knots (same row for every output of an input)
        shift = torch.rand(n_in, 1, generator=gen, dtype=dtype) * 0.2
        warped = (
            knots.sign() * knots.abs() ** 1.3
        )  # non-uniform, as update_grid_from_samples leaves it
        per_input = warped[None, :] * (1.0 + shift)
        state[f"act_fun.{li}.grid"] = per_input.repeat(n_out, 1)  # row o*I + i -> input i
        state[f"act_fun.{li}.coef"] = torch.randn(size, grid + k, generator=gen, dtype=dtype) * 0.3
        state[f"act_fun.{li}.scale_base"] = torch.randn(size, generator=gen, dtype=dtype)
        state[f"act_fun.{li}.scale_sp"] = 1.0 + 0.1 * torch.randn(size, generator=gen, dtype=dtype)
        mask = torch.ones(size, dtype=dtype)
        mask[0] = 0.0  # a pruned edge
        state[f"act_fun.{li}.mask"] = mask
    for li, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        state[f"symbolic_fun.{li}.mask"] = torch.zeros(n_out, n_in, dtype=dtype)
        state[f"symbolic_fun.{li}.affine"] = torch.zeros(n_out, n_in, 4, dtype=dtype)
    return state


def forward(state: dict[str, Tensor], x: Tensor, k: int = 3) -> Tensor:
    """The legacy KAN.forward (numeric branch; the symbolic masks are off)."""
    depth = sum(1 for key in state if key.startswith("biases."))
    for li in range(depth):
        n_out = state[f"biases.{li}.weight"].shape[1]
        n_in = x.shape[1]
        size = n_in * n_out
        batch = x.shape[0]
        xs = (
            torch.einsum("ij,k->ikj", x, torch.ones(n_out, dtype=x.dtype))
            .reshape(batch, size)
            .permute(1, 0)
        )
        base = torch.nn.functional.silu(xs).permute(1, 0)
        coef = state[f"act_fun.{li}.coef"]
        y = torch.einsum("ij,ijk->ik", coef, b_batch(xs, state[f"act_fun.{li}.grid"], k)).permute(
            1, 0
        )
        y = (
            state[f"act_fun.{li}.scale_base"][None, :] * base
            + state[f"act_fun.{li}.scale_sp"][None, :] * y
        )
        y = state[f"act_fun.{li}.mask"][None, :] * y
        x = torch.sum(y.reshape(batch, n_out, n_in), dim=2) + state[f"biases.{li}.weight"]
    return x
