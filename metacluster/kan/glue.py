"""Glue modules between KAN layers (norms, reshapes, pooling, plain heads), registered by name.

Each has a JSON `config()` so that importers and JSON model specs can describe whole networks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.errors import InputError
from metacluster.kan._common import check_features, check_positive
from metacluster.kan.model import register_module

__all__ = [
    "Affine",
    "AvgPool2d",
    "Flatten",
    "GlobalAvgPool",
    "LayerNorm",
    "Linear",
    "MaxPool2d",
    "Reshape",
    "SiLU",
]


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def _check_image(x: Tensor, layer: str) -> None:
    if x.dim() != 4:
        raise InputError(f"{layer}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")


@register_module("layernorm")
class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dimension (FastKAN and torchkan use it between layers)."""

    def __init__(
        self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True
    ) -> None:
        super().__init__(
            check_positive("normalized_shape", normalized_shape), eps, elementwise_affine
        )

    def config(self) -> dict[str, Any]:
        return {
            "normalized_shape": int(self.normalized_shape[0]),
            "eps": float(self.eps),
            "elementwise_affine": bool(self.elementwise_affine),
        }


@register_module("flatten")
class Flatten(nn.Flatten):
    """nn.Flatten(start_dim, end_dim)."""

    def config(self) -> dict[str, Any]:
        return {"start_dim": int(self.start_dim), "end_dim": int(self.end_dim)}


@register_module("affine")
class Affine(nn.Module):
    """Per-feature y = scale * x + bias on the last dimension (e.g. pykan node affines)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = check_positive("features", features)
        self.scale = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.features, "Affine")
        return x * self.scale + self.bias

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


PairArg = int | tuple[int, int] | list[int]


def _pool_args(
    kernel_size: PairArg, stride: PairArg | None, padding: PairArg
) -> tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int]]:
    return _pair(kernel_size), None if stride is None else _pair(stride), _pair(padding)


def _pool_config(pool: nn.MaxPool2d | nn.AvgPool2d) -> dict[str, Any]:
    return {
        "kernel_size": list(_pair(pool.kernel_size)),  # type: ignore[arg-type]
        "stride": list(_pair(pool.stride)),  # type: ignore[arg-type]
        "padding": list(_pair(pool.padding)),  # type: ignore[arg-type]
    }


@register_module("maxpool2d")
class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d with a JSON config."""

    def __init__(
        self, kernel_size: PairArg, stride: PairArg | None = None, padding: PairArg = 0
    ) -> None:
        super().__init__(*_pool_args(kernel_size, stride, padding))

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "MaxPool2d")
        out: Tensor = super().forward(x)
        return out

    def config(self) -> dict[str, Any]:
        return _pool_config(self)


@register_module("avgpool2d")
class AvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d with a JSON config."""

    def __init__(
        self, kernel_size: PairArg, stride: PairArg | None = None, padding: PairArg = 0
    ) -> None:
        super().__init__(*_pool_args(kernel_size, stride, padding))

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "AvgPool2d")
        return super().forward(x)

    def config(self) -> dict[str, Any]:
        return _pool_config(self)


@register_module("global_avg_pool")
class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): mean over the spatial dimensions."""

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "GlobalAvgPool")
        return x.mean(dim=(2, 3))

    def config(self) -> dict[str, Any]:
        return {}


@register_module("linear")
class Linear(nn.Linear):
    """Plain nn.Linear (classifier heads of conv KANs); not a KAN layer, stored dense."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(
            check_positive("in_features", in_features),
            check_positive("out_features", out_features),
            bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.in_features, "Linear")
        return F.linear(x, self.weight, self.bias)

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
        }


@register_module("silu")
class SiLU(nn.SiLU):
    """nn.SiLU with a JSON config."""

    def config(self) -> dict[str, Any]:
        return {}


@register_module("prelu")
class PReLU(nn.PReLU):
    """nn.PReLU with a JSON config (torchkan's KAN ends each layer in one)."""

    def config(self) -> dict[str, Any]:
        return {"num_parameters": int(self.num_parameters)}


@register_module("reshape")
class Reshape(nn.Module):
    """(N, ...) -> (N, *shape): lets a conv KAN take flat inputs (e.g. 64 -> 1x8x8)."""

    def __init__(self, shape: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(check_positive("shape entry", int(d)) for d in shape)

    def forward(self, x: Tensor) -> Tensor:
        size = 1
        for d in self.shape:
            size *= d
        if x.dim() < 1 or x.shape[1:].numel() != size:  # empty batches too
            raise InputError(
                f"Reshape: cannot view input of shape {tuple(x.shape)} as (N, {self.shape})"
            )
        return x.reshape(x.shape[0], *self.shape)

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}
