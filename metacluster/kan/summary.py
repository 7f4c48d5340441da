"""`describe_model`: the JSON facts about a model that planning needs without the weights.

`metacluster.formats.inspect_model` returns this (plus the checkpoint's format and
size), the service keeps it with an upload, and `metacluster.compress.pipeline.plan` reads it,
so the API and the engine apply the same rules to the same description.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from metacluster.kan.base import KANLayer
from metacluster.kan.families import family_of, model_kind
from metacluster.kan.glue import Flatten, LayerNorm, Reshape
from metacluster.kan.model import KANModel


def _input(model: KANModel) -> dict[str, int]:
    """What the model's input must look like: {"features": F} for a flat vector (any
    (N, ...) input that flattens to F), or {"channels": C} for an image."""
    for module in model.layers:
        if isinstance(module, Reshape):
            return {"features": math.prod(module.shape)}
        if isinstance(module, Flatten):
            continue
        if isinstance(module, LayerNorm):
            return {"features": int(module.normalized_shape[0])}
        family = family_of(module)
        width = getattr(module, "in_features", None)
        if isinstance(width, int):
            kind = "channels" if family is not None and family.kind == "conv" else "features"
            return {kind: width}
        break
    return {}


def _output_features(model: KANModel) -> int | None:
    """Width of the output vector: the last module that sets one."""
    for module in reversed(list(model.layers)):
        width = getattr(module, "out_features", None)
        if isinstance(width, int):
            return width
        if isinstance(module, nn.Linear):
            return int(module.out_features)
    return None


def conv_positions(model: KANModel, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions per sample of each conv KAN layer (each of its edges is
    evaluated once per position): one forward of a single zero sample of `input_shape`
    with hooks on those layers, so pooling, strides and padding between them count.
    Empty for a model without conv layers (no forward then)."""
    convs = [
        (name, layer)
        for name, layer in model.kan_layers()
        if (family := family_of(layer)) is not None and family.kind == "conv"
    ]
    if not convs:
        return {}
    seen: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() > 2:
                seen[name] = math.prod(int(d) for d in output.shape[2:])

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in convs]
    param = next(model.parameters(), None)
    probe = torch.zeros(
        (1, *input_shape),
        dtype=param.dtype if param is not None else torch.float32,
        device=param.device if param is not None else None,
    )
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return seen


def describe_model(model: KANModel, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """{family, kind, layers:[{name, in, out, edges, coef_dim}], edges, params,
    coef_params, other_params, input, output_features}: JSON-able.

    With the data's `input_shape` (one sample's), each conv layer's row also says its
    output `positions` per sample (`conv_positions`): what a step's cost needs."""
    layers: list[dict[str, Any]] = []
    coef_params = 0
    positions = conv_positions(model, input_shape) if input_shape is not None else {}
    for name, layer in model.kan_layers():
        assert isinstance(layer, KANLayer)
        row: dict[str, Any] = {
            "name": name,
            "in": layer.in_features,
            "out": layer.out_features,
            "edges": layer.n_edges,
            "coef_dim": layer.coef_dim,
        }
        if name in positions:
            row["positions"] = positions[name]
        layers.append(row)
        coef_params += layer.n_edges * layer.coef_dim
    params = model.n_params()
    return {
        "family": model.family,
        "kind": model_kind(model),
        "layers": layers,
        "edges": model.n_edges(),
        "params": params,
        "coef_params": coef_params,
        "other_params": params - coef_params,
        "input": _input(model),
        "output_features": _output_features(model),
    }


__all__ = ["conv_positions", "describe_model"]
