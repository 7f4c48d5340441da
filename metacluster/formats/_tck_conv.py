"""What torch-conv-kan's conv layers share in its files, whichever the family: the conv
geometry of a config entry (read and written) and the per-group weights of `coef`."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metacluster.kan.conv import Conv2dGeometry


def geometry(opts: dict[str, Any], groups: int) -> dict[str, Any]:
    """Our conv layers' geometry arguments from a config entry (`groups` from the tensors)."""
    return {
        "stride": opts["stride"],
        "padding": opts["padding"],
        "dilation": opts["dilation"],
        "groups": groups,
    }


def entry_shape(layer: Conv2dGeometry) -> dict[str, Any]:
    """The channels, kernel and groups of a config entry, in torch-conv-kan's names."""
    return {
        "input_dim": layer.in_channels,
        "output_dim": layer.out_channels,
        "kernel_size": list(layer.kernel_size),
        "groups": layer.groups,
    }


def entry_geometry(layer: Conv2dGeometry) -> dict[str, Any]:
    """Stride, padding and dilation of a config entry."""
    return {
        "stride": list(layer.stride),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
    }


def entry_from_config(
    layer: Conv2dGeometry, layer_class: str, drop: tuple[str, ...]
) -> dict[str, Any]:
    """A config entry that is the layer's `config()` (less `drop`) with upstream's class
    and channel names: where our option names are upstream's."""
    config = {"layer_class": layer_class, **layer.config()}
    for key in ("in_channels", "out_channels", *drop):
        config.pop(key)
    return {"input_dim": layer.in_channels, "output_dim": layer.out_channels, **config}


def group_blocks(layer: Conv2dGeometry) -> tuple[Tensor, ...]:
    """coef as (O/g, I/g, L, kh, kw) blocks, one per group (upstream's per-group convs)."""
    coef = layer.coef.detach().permute(0, 1, 4, 2, 3)  # (O, I/g, L, kh, kw)
    return coef.chunk(layer.groups)
