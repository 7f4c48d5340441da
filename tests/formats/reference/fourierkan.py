"""GistNoesis/FourierKAN `NaiveFourierKANLayer` (fftKAN.py), for tests.

`fouriercoeffs` [2, O, I, G] (cos, sin), optional `bias` [1, O].
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor, nn


class NaiveFourierKANLayer(nn.Module):
    def __init__(self, inputdim: int, outdim: int, gridsize: int, addbias: bool = True) -> None:
        super().__init__()
        self.gridsize = gridsize
        self.addbias = addbias
        self.inputdim = inputdim
        self.outdim = outdim
        self.fouriercoeffs = nn.Parameter(
            torch.randn(2, outdim, inputdim, gridsize) / (np.sqrt(inputdim) * np.sqrt(gridsize))
        )
        if addbias:
            self.bias = nn.Parameter(torch.zeros(1, outdim))

    def forward(self, x: Tensor) -> Tensor:
        xshp = x.shape
        outshape = (*xshp[0:-1], self.outdim)
        x = torch.reshape(x, (-1, self.inputdim))
        k = torch.reshape(torch.arange(1, self.gridsize + 1), (1, 1, 1, self.gridsize))
        xrshp = torch.reshape(x, (x.shape[0], 1, x.shape[1], 1))
        c = torch.cos(k * xrshp)
        s = torch.sin(k * xrshp)
        y = torch.sum(c * self.fouriercoeffs[0:1], (-2, -1))
        y = y + torch.sum(s * self.fouriercoeffs[1:2], (-2, -1))
        if self.addbias:
            y = y + self.bias
        return torch.reshape(y, outshape)


class FourierKAN(nn.Module):
    """A plain stack, as users build it (`layers.{l}.fouriercoeffs`)."""

    def __init__(self, widths: list[int], gridsize: int, addbias: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            NaiveFourierKANLayer(i, o, gridsize, addbias) for i, o in itertools.pairwise(widths)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
