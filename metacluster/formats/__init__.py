"""Importers and exporters of KAN checkpoints, auto-detection, and our own format.

Every reader loads safely (safetensors, or torch.load with weights_only) and
rebuilds a `KANModel` whose outputs match the source library's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

# Importing the format modules registers their handlers, in this (FORMATS) order.
from metacluster.formats import native as _native  # noqa: F401  isort: skip
from metacluster.formats import efficient_kan as _efficient_kan  # noqa: F401  isort: skip
from metacluster.formats import pykan as _pykan  # noqa: F401  isort: skip
from metacluster.formats import fastkan as _fastkan  # noqa: F401  isort: skip
from metacluster.formats import chebykan as _chebykan  # noqa: F401  isort: skip
from metacluster.formats import fourierkan as _fourierkan  # noqa: F401  isort: skip
from metacluster.formats import torch_conv_kan as _torch_conv_kan  # noqa: F401  isort: skip
from metacluster.formats import spec as _spec  # noqa: F401  isort: skip
from metacluster.errors import ConfigError, FormatError
from metacluster.formats._checkpoint import Checkpoint, open_checkpoint
from metacluster.formats._registry import HANDLERS, FormatHandler, detect, get_handler
from metacluster.formats.native import fp32_checkpoint_bytes
from metacluster.kan import KANModel

SpecArg = Mapping[str, Any] | str | Path | None

# Names accepted by `format=` / `--format` (plus "auto").
FORMATS: list[str] = list(HANDLERS)


class ModelInfo(TypedDict):
    family: str
    format: str
    layers: list[dict[str, Any]]
    edges: int
    params: int
    bytes: int


def _open(path: str | Path, format: str, spec: SpecArg) -> tuple[Checkpoint, FormatHandler]:
    ckpt = open_checkpoint(path, spec)
    if format == "auto":
        return ckpt, detect(ckpt)
    handler = get_handler(format)
    if format == "spec" and ckpt.spec is None:
        raise FormatError("format 'spec' needs a spec (spec= or a <checkpoint>.spec.json)")
    return ckpt, handler


def _load(handler: FormatHandler, ckpt: Checkpoint) -> KANModel:
    """handler.load, with any failure on malformed tensors reported as a FormatError."""
    try:
        model = handler.load(ckpt)
    except FormatError:
        raise
    except (ConfigError, RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise FormatError(
            f"{ckpt.path.name} does not hold a valid {handler.name} model: {detail}"
        ) from exc
    model.eval()
    return model


def detect_format(path: str | Path, spec: SpecArg = None) -> str:
    """The name of the format `path` is in (FormatError when unknown or ambiguous)."""
    return _open(path, "auto", spec)[1].name


def load_model(path: str | Path, format: str = "auto", spec: SpecArg = None) -> KANModel:
    """Import a checkpoint in any supported format as a `KANModel` (safe loading only).

    `path` is a file, a pykan saveckpt prefix (or either of its files), or a folder
    with model.safetensors + config.json. `spec` (a dict or a JSON file) describes a
    user's own wrapper; a `<checkpoint>.spec.json` beside the file is used as well.
    """
    ckpt, handler = _open(path, format, spec)
    return _load(handler, ckpt)


def save_model(model: KANModel, path: str | Path) -> None:
    """Write `model` in our format: one safetensors file with its config in the metadata."""
    HANDLERS["metacluster"].export(model, Path(path))


def export_model(model: KANModel, to: str, path: str | Path) -> list[Path]:
    """Write a dense checkpoint in library `to`'s own layout; returns the files written."""
    return get_handler(to).export(model, Path(path))


def inspect_model(path: str | Path, format: str = "auto", spec: SpecArg = None) -> ModelInfo:
    """{family, format, layers:[{name, in, out, edges, coef_dim}], edges, params, bytes}.

    bytes: on-disk size of the checkpoint's files (pykan: _config.yml + _state; the
    _cache_data of user inputs is not part of the model). params: the learned
    scalars the source file holds (its float tensors minus knots, masks and index
    buffers; our format: the model's parameters).
    """
    ckpt, handler = _open(path, format, spec)
    model = _load(handler, ckpt)
    layers = [
        {
            "name": name,
            "in": layer.in_features,
            "out": layer.out_features,
            "edges": layer.n_edges,
            "coef_dim": layer.coef_dim,
        }
        for name, layer in model.kan_layers()
    ]
    return {
        "family": model.family,
        "format": handler.name,
        "layers": layers,
        "edges": model.n_edges(),
        "params": handler.count_params(ckpt, model),
        "bytes": ckpt.nbytes,
    }


__all__ = [
    "FORMATS",
    "ModelInfo",
    "detect_format",
    "export_model",
    "fp32_checkpoint_bytes",
    "inspect_model",
    "load_model",
    "save_model",
]
