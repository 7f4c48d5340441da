"""SynodicMonth/ChebyKAN `ChebyKANLayer` and the README's MNIST model, for tests.

`cheby_coeffs` [I, O, D+1]; T_d(tanh x) via acos/cos with the `arange` buffer of
the current version (`with_arange=False` gives the older buffer-free layer).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class ChebyKANLayer(nn.Module):
    arange: Tensor

    def __init__(
        self, input_dim: int, output_dim: int, degree: int, with_arange: bool = True
    ) -> None:
        super().__init__()
        self.inputdim = input_dim
        self.outdim = output_dim
        self.degree = degree
        self.cheby_coeffs = nn.Parameter(torch.empty(input_dim, output_dim, degree + 1))
        nn.init.normal_(self.cheby_coeffs, mean=0.0, std=1 / (input_dim * (degree + 1)))
        self.with_arange = with_arange
        if with_arange:
            self.register_buffer("arange", torch.arange(0, degree + 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.reshape(x, (-1, self.inputdim))
        x = torch.tanh(x)
        if self.with_arange:
            x = x.view((-1, self.inputdim, 1)).expand(-1, -1, self.degree + 1)
            x = x.acos()
            x = x * self.arange
            cheby = x.cos()
        else:
            cheby = torch.ones(x.shape[0], self.inputdim, self.degree + 1, dtype=x.dtype)
            if self.degree > 0:
                cheby[:, :, 1] = x
            for i in range(2, self.degree + 1):
                cheby[:, :, i] = 2 * x * cheby[:, :, i - 1].clone() - cheby[:, :, i - 2].clone()
        y = torch.einsum("bid,iod->bo", cheby, self.cheby_coeffs)
        return y.view(-1, self.outdim)


class MNISTChebyKAN(nn.Module):
    """The README example: Cheby layers with LayerNorm between them (any widths)."""

    def __init__(self, widths: list[int], degree: int = 4, with_arange: bool = True) -> None:
        super().__init__()
        self.depth = len(widths) - 1
        for li, (i, o) in enumerate(itertools.pairwise(widths)):
            setattr(self, f"chebykan{li + 1}", ChebyKANLayer(i, o, degree, with_arange))
            if li < self.depth - 1:
                setattr(self, f"ln{li + 1}", nn.LayerNorm(o))

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        for li in range(self.depth):
            x = getattr(self, f"chebykan{li + 1}")(x)
            if li < self.depth - 1:
                x = getattr(self, f"ln{li + 1}")(x)
        return x
