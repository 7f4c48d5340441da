"""Importers and exporters of KAN checkpoints, auto-detection, and our own format.

Every reader loads safely (safetensors, or torch.load with weights_only) and
rebuilds a `KANModel` whose outputs match the source library's.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Importing the format modules registers their handlers, in this (FORMATS) order.
from metacluster.formats import native as _native  # noqa: F401  isort: skip
from metacluster.formats import efficient_kan as _efficient_kan  # noqa: F401  isort: skip
from metacluster.formats import pykan as _pykan  # noqa: F401  isort: skip
from metacluster.formats import fastkan as _fastkan  # noqa: F401  isort: skip
from metacluster.formats import chebykan as _chebykan  # noqa: F401  isort: skip
from metacluster.formats import fourierkan as _fourierkan  # noqa: F401  isort: skip
from metacluster.formats import torch_conv_kan as _torch_conv_kan  # noqa: F401  isort: skip
from metacluster.formats import fast_bspline as _fast_bspline  # noqa: F401  isort: skip
from metacluster.formats import kat as _kat  # noqa: F401  isort: skip
from metacluster.formats import convkan as _convkan  # noqa: F401  isort: skip
from metacluster.formats import torchkan as _torchkan  # noqa: F401  isort: skip
from metacluster.formats import rkan as _rkan  # noqa: F401  isort: skip
from metacluster.formats import kaconv as _kaconv  # noqa: F401  isort: skip
from metacluster.formats import spec as _spec  # noqa: F401  isort: skip
from metacluster.errors import ConfigError, FormatError, InputError
from metacluster.formats._checkpoint import Checkpoint, open_checkpoint
from metacluster.formats._registry import HANDLERS, FormatHandler, detect, get_handler
from metacluster.formats.native import fp32_checkpoint_bytes
from metacluster.kan import KANModel, describe_model

SpecArg = Mapping[str, Any] | str | Path | None

# Names accepted by `format=` / `--format` (plus "auto").
FORMATS: list[str] = list(HANDLERS)


ModelInfo = dict[str, Any]
"""`inspect_model`'s answer: `metacluster.kan.describe_model` plus format and bytes."""


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
    """{family, format, kind, layers:[{name, in, out, edges, coef_dim}], edges,
    params, bytes, coef_params, other_params, input, output_features}.

    bytes: on-disk size of the checkpoint's files (pykan: _config.yml + _state; the
    _cache_data of user inputs is not part of the model). params: the learned
    scalars the source file holds (its float tensors minus knots, masks and index
    buffers; our format: the model's parameters). The rest is `describe_model` of the
    imported model: what `metacluster.compress.pipeline.plan` reads.
    """
    ckpt, handler = _open(path, format, spec)
    model = _load(handler, ckpt)
    info: ModelInfo = describe_model(model)
    info.update(format=handler.name, params=handler.count_params(ckpt, model), bytes=ckpt.nbytes)
    return info


def source_checkpoint_bytes(model: KANModel) -> tuple[int, str]:
    """Real file size of an fp32 checkpoint of `model`, and how it was measured.

    In the source library's own layout when it can be exported there (a pykan float64
    upload is measured as its fp32 export, its `_cache_data` not counted), else in our
    format. This is the "before" of every compression ratio.
    """
    fp32 = copy.deepcopy(model).float()
    fmt = str(model.meta.get("format") or "")
    with tempfile.TemporaryDirectory(prefix="mc-src-") as tmp:
        root = Path(tmp)
        if fmt in HANDLERS:
            try:
                written = export_model(fp32, fmt, root / "model")
            except InputError:  # the model has no exact form in that layout
                written = []
            if written:
                size = int(inspect_model(written[0], format=fmt)["bytes"])
                if size > 0:
                    return size, f"export:{fmt}"
        save_model(fp32, root / "model.safetensors")
        return (root / "model.safetensors").stat().st_size, "save_model"


__all__ = [
    "FORMATS",
    "ModelInfo",
    "detect_format",
    "export_model",
    "fp32_checkpoint_bytes",
    "inspect_model",
    "load_model",
    "save_model",
    "source_checkpoint_bytes",
]
