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
from metacluster.kan.bspline import BSplineKANLayer, PyKANLayer
from metacluster.kan.glue import Flatten
from metacluster.kan.model import KANModel

__all__ = ["DENSE_FAMILIES", "FAMILIES", "build_kan"]

DENSE_FAMILIES: dict[str, type[nn.Module]] = {
    "bspline": BSplineKANLayer,
    "pykan_bspline": PyKANLayer,
}
CONV_FAMILIES: dict[str, type[nn.Module]] = {}
FAMILIES: list[str] = []


def _refresh_families() -> None:
    FAMILIES[:] = sorted([*DENSE_FAMILIES, *CONV_FAMILIES])


_refresh_families()


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
    cls = DENSE_FAMILIES[family]
    layers += [_make(cls, i, o, **options) for i, o in itertools.pairwise(sizes)]
    return KANModel(layers, meta={"family": family, "format": "metacluster", "widths": sizes})


def build_kan(family: str, widths: Sequence[int], **options: Any) -> KANModel:
    """A freshly initialised KANModel of `family`.

    Dense families (bspline, pykan_bspline, rbf, chebyshev, fourier): `widths` like
    [64, 32, 10]; every other option goes to each layer's constructor (e.g.
    grid_size=5, spline_order=3); `input_shape` (C, H, W) prepends a Flatten.
    Conv families (conv_bspline, conv_chebyshev): see `build_conv_kan`.
    Initialisation draws from torch's global RNG: seed with torch.manual_seed.
    """
    if family in DENSE_FAMILIES:
        return _build_dense(family, widths, dict(options))
    if family in CONV_FAMILIES:
        raise ConfigError(f"family {family!r} is not implemented yet")
    raise ConfigError(f"unknown KAN family {family!r}; expected one of {FAMILIES}")
