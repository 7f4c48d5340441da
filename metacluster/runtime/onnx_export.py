"""ONNX export of an artifact: the compressed graph (codebooks, uint8 codes, Gather +
ReduceSum) or, with `dense=True`, the dense reconstruction.

Uses torch's TorchScript-based exporter (`dynamo=False`): it needs no onnxscript and
no network, and every op of our layers has an ONNX form. B-spline layers export their
Cox-de Boor path (the closed-form fast path is a custom autograd function the
exporter cannot trace; both give the same bases). The batch dimension is dynamic.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metacluster.errors import ConfigError
from metacluster.kan.glue import Reshape
from metacluster.runtime import CodebookKAN

OPSET = 17


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """The per-sample input shape of a layer stack whose first module says it."""
    layers = getattr(model, "layers", None)
    first = layers[0] if isinstance(layers, nn.ModuleList) and len(layers) else None
    if isinstance(first, Reshape):
        return (math.prod(first.shape),)
    in_features = getattr(first, "in_features", None)
    if isinstance(in_features, int) and not hasattr(first, "kernel_size"):
        return (in_features,)
    raise ConfigError("cannot tell the model's input shape; pass input_shape (e.g. 1,28,28)")


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """B-spline layers on their Cox-de Boor path while exporting."""
    layers = [m for m in model.modules() if hasattr(m, "use_fast_path")]
    saved = [bool(m.use_fast_path) for m in layers]
    for m in layers:
        setattr(m, "use_fast_path", False)  # noqa: B010 (plain attribute, not a submodule)
    try:
        yield
    finally:
        for m, value in zip(layers, saved, strict=True):
            setattr(m, "use_fast_path", value)  # noqa: B010


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write `model` (an artifact loaded by `load_artifact`: `CodebookKAN` gives the
    codebook graph, the dense runtime the dense graph) to `out` (.onnx); returns its
    path, bytes, input shape and node counts."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx extra: pip install 'metacluster[onnx]'"
        ) from None

    model = model.eval()
    shape = tuple(input_shape) if input_shape else input_shape_of(model)
    example = torch.zeros(2, *shape)
    path = Path(out)
    dense = not isinstance(model, CodebookKAN)
    with _traceable(model), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=OPSET,
            # folding would turn the uint8 codes (+ Cast, Mul, Add) into int32 indices
            do_constant_folding=dense,
        )
    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "out": str(path),
        "bytes": path.stat().st_size,
        "graph": "dense" if dense else "compressed",
        "input_shape": list(shape),
        "ops": dict(sorted(ops.items())),
    }


__all__ = ["OPSET", "export_onnx", "input_shape_of"]
