"""`describe_model`: the JSON facts about a model that planning needs without the weights.

`metacluster.formats.inspect_model` returns this (plus the checkpoint's format and
size), the service keeps it with an upload, and `metacluster.compress.pipeline.plan` reads it,
so the API and the engine apply the same rules to the same description.
"""

from __future__ import annotations

import math
from typing import Any

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


def describe_model(model: KANModel) -> dict[str, Any]:
    """{family, kind, layers:[{name, in, out, edges, coef_dim}], edges, params,
    coef_params, other_params, input, output_features}: JSON-able."""
    layers: list[dict[str, Any]] = []
    coef_params = 0
    for name, layer in model.kan_layers():
        assert isinstance(layer, KANLayer)
        layers.append(
            {
                "name": name,
                "in": layer.in_features,
                "out": layer.out_features,
                "edges": layer.n_edges,
                "coef_dim": layer.coef_dim,
            }
        )
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


__all__ = ["describe_model"]
