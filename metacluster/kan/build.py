"""`build_kan`: fresh KAN models of every family from a width list and layer options.

Dense families stack one KAN layer per consecutive width pair; conv families build a small
image classifier (KAN conv blocks, pooling, global average pool, plain linear head).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from torch import nn

from metacluster.errors import ConfigError
from metacluster.kan.families import family_names, get_family
from metacluster.kan.glue import Flatten, GlobalAvgPool, Linear, MaxPool2d, Reshape, SiLU
from metacluster.kan.model import KANModel

__all__ = ["build_conv_kan", "build_kan"]


def _check_widths(widths: Sequence[int], minimum: int) -> list[int]:
    try:
        out = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise ConfigError(f"widths must be a list of integers, got {widths!r}") from None
    if (
        len(out) < minimum
        or any(w < 1 for w in out)
        or any(isinstance(w, bool) or float(w) != w for w in widths)
    ):
        raise ConfigError(f"widths must be >= {minimum} positive integers, got {list(widths)!r}")
    return out


def _make(cls: type[nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return cls(*args, **kwargs)
    except TypeError as exc:  # unknown option name: a user error, not a bug
        raise ConfigError(f"bad option for {cls.__name__}: {exc}") from None


def _build_dense(family: str, widths: Sequence[int], options: dict[str, Any]) -> KANModel:
    sizes = _check_widths(widths, 2)
    input_shape = options.pop("input_shape", None)
    layers: list[nn.Module] = []
    if input_shape is not None and len(input_shape) > 1:
        flat = 1
        for d in input_shape:
            flat *= int(d)
        if flat != sizes[0]:
            raise ConfigError(
                f"input_shape {list(input_shape)} flattens to {flat}, but widths[0] is {sizes[0]}"
            )
        layers.append(Flatten())
    cls = get_family(family).layer
    layers += [_make(cls, i, o, **options) for i, o in itertools.pairwise(sizes)]
    return KANModel(layers, meta={"family": family, "format": "metacluster", "widths": sizes})


def _image_shape(input_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape must be (C, H, W) or (H, W), got {input_shape!r}") from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) or (H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def build_conv_kan(
    family: str,
    widths: Sequence[int],
    *,
    input_shape: Sequence[int] | None = None,
    channels: Sequence[int] = (8, 16),
    kernel_size: int = 3,
    pool: int = 2,
    **options: Any,
) -> KANModel:
    """Small conv KAN classifier for image inputs (flat or (N, C, H, W)).

    Reshape(input_shape) -> per entry of `channels`: a KAN conv (kernel_size,
    'same' padding; other options go to the conv layer) followed by MaxPool2d(pool)
    while the feature map stays >= 2 * pool -> global average pool -> plain Linear
    head over `widths` (SiLU between head layers). `widths` are the head widths
    ending in the number of outputs, e.g. [10]; a dense-style list whose first
    entry is the flattened input size (e.g. [64, 32, 10] for 1x8x8) is accepted
    and its first entry dropped.
    """
    if get_family(family).kind != "conv":
        raise ConfigError(f"{family!r} is not a conv KAN family; expected {family_names('conv')}")
    if input_shape is None:
        raise ConfigError(f"family {family!r} needs input_shape=(C, H, W)")
    c, h, w = _image_shape(input_shape)
    head = _check_widths(widths, 1)
    if len(head) > 1 and head[0] == c * h * w:
        head = head[1:]
    chans = _check_widths(channels, 1)
    kernel = int(kernel_size)
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    cls = get_family(family).layer
    layers: list[nn.Module] = [Reshape([c, h, w])]
    for out_c in chans:
        layers.append(_make(cls, c, out_c, kernel, padding=kernel // 2, **options))
        c = out_c
        if pool > 1 and min(h, w) >= 2 * pool:
            layers.append(MaxPool2d(pool))
            h, w = h // pool, w // pool
    layers.append(GlobalAvgPool())
    dims = [c, *head]
    for idx, (a, b) in enumerate(itertools.pairwise(dims)):
        if idx:
            layers.append(SiLU())
        layers.append(Linear(a, b))
    meta = {
        "family": family,
        "format": "metacluster",
        "widths": head,
        "input_shape": [*_image_shape(input_shape)],
        "channels": chans,
    }
    return KANModel(layers, meta=meta)


def build_kan(family: str, widths: Sequence[int], **options: Any) -> KANModel:
    """A freshly initialised KANModel of `family`.

    Dense families (bspline, pykan_bspline, rbf, chebyshev, fourier, gram, legendre,
    jacobi, bernstein, wavelet, rational, rkan_jacobi, rkan_pade, gram_bottleneck):
    `widths` like [64, 32, 10]; every other option goes to each layer's constructor
    (e.g. grid_size=5, spline_order=3); `input_shape` (C, H, W) prepends a Flatten.
    Conv families (conv_bspline, conv_chebyshev, conv_rbf, conv_gram, conv_legendre,
    conv_jacobi, conv_bernstein, conv_wavelet, conv_gram_bottleneck,
    conv_relukan_bottleneck): see `build_conv_kan`.
    Initialisation draws from torch's global RNG: seed with torch.manual_seed.
    """
    if get_family(family).kind == "conv":
        return build_conv_kan(family, widths, **options)
    return _build_dense(family, widths, dict(options))
