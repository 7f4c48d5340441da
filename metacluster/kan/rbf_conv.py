"""torch-conv-kan's FastKANConv2DLayer: Gaussian RBFs of the instance-normalised input and
a SiLU base branch, one edge per (out, in, kh, kw): [G RBF weights, base weight].

Per group upstream applies InstanceNorm2d (no affine) to the input before the RBFs and
nothing after the sum; instance norm is per channel, so groups do not change it.

kaconv's `FastKANConvLayer` (XiangboGaoBarry/KA-Conv, kan_type "RBF") is the same layer
without the input norm (`input_norm=False`), with conv biases (their sum: `bias=True`)
and, where its networks put a BatchNorm2d after it, that norm (`norm="batch"`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import ConfigError
from metacluster.kan._common import check_coefficients, check_positive, check_range
from metacluster.kan.base import Basis
from metacluster.kan.conv import IntPair, _ConvKAN2d
from metacluster.kan.families import register_family

__all__ = ["RBFKANConv2d"]


@register_family("conv_rbf", kind="conv")
class RBFKANConv2d(_ConvKAN2d):
    """coef (O, I/g, kh, kw, G + 1); buffer `grid` (G,) linspace over grid_range; the
    RBF width is the grid spacing (FastKAN's RadialBasisFunction)."""

    family = "rbf"
    grid: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        grid_size: int = 8,
        grid_range: tuple[float, float] | list[float] = (-2.0, 2.0),
        dropout: float = 0.0,
        input_norm: bool = True,
        norm: str = "none",
        bias: bool = False,
    ) -> None:
        self.grid_size = check_positive("grid_size", grid_size, minimum=2)
        self.grid_range = check_range("grid_range", grid_range)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            grid_size + 1,
            stride,
            padding,
            dilation,
            groups,
            norm,
            False,
            dropout,
        )
        if norm == "instance":
            raise ConfigError("conv_rbf: norm after the sum is 'none' or 'batch'")
        self.input_norm = bool(input_norm)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.denominator = (self.grid_range[1] - self.grid_range[0]) / (grid_size - 1)
        self.register_buffer("grid", self.grid_buffers()["grid"][1])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.kaiming_reset(self.grid_size)

    def _rbf(self, u: Tensor) -> Tensor:
        return torch.exp(-(((u.unsqueeze(-1) - self.grid.to(u.dtype)) / self.denominator) ** 2))

    def _post(self, y: Tensor) -> Tensor:
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return super()._post(y)

    def image_features(self, x: Tensor) -> Tensor:
        phi = self._rbf(F.instance_norm(x) if self.input_norm else x)
        return torch.cat([phi, F.silu(x).unsqueeze(-1)], dim=-1)

    def basis(self) -> Basis:
        params = {"grid_size": self.grid_size, "grid_range": list(self.grid_range), "base": "silu"}
        norm = "instance" if self.input_norm else "none"
        return Basis("rbf", self.grid_size + 1, params | {"norm": norm})

    def function_domain(self) -> tuple[float, float]:
        return self.grid_range

    def grid_buffers(self) -> dict[str, tuple[int | None, Tensor]]:
        return {"grid": (None, torch.linspace(*self.grid_range, self.grid_size))}

    def edge_group_tensor(self) -> Tensor:
        return self.grid

    def edge_functions(self, coefficients: Tensor, n_points: int = 64) -> Tensor:
        """RBFs over the grid range (normalised-input units unless `input_norm` is off)
        plus the base branch there."""
        check_coefficients(coefficients, self.coef_dim)
        u = torch.linspace(*self.grid_range, n_points, dtype=coefficients.dtype)
        u = u.to(self.grid.device)
        return coefficients @ torch.cat([self._rbf(u), F.silu(u).unsqueeze(-1)], dim=-1).T

    def config(self) -> dict[str, Any]:
        config = {
            **self._conv_config(),
            "grid_size": self.grid_size,
            "grid_range": list(self.grid_range),
        }
        del config["prelu"]
        # only what differs from torch-conv-kan's layer (older configs stay the same)
        if config["norm"] == "none":
            del config["norm"]
        if not self.input_norm:
            config["input_norm"] = False
        if self.bias is not None:
            config["bias"] = True
        return config
