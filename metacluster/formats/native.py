"""Our own format: one .safetensors file holding the state dict, with the model's
JSON config (`KANModel.config()`) in the safetensors metadata; dtypes are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from metacluster.errors import FormatError
from metacluster.formats._checkpoint import Checkpoint
from metacluster.formats._io import write_safetensors
from metacluster.formats._registry import (
    FormatHandler,
    build_bounded,
    register,
)
from metacluster.kan import KANModel

FORMAT_NAME = "metacluster"
FORMAT_VERSION = "1"


def _metadata(model: KANModel) -> dict[str, str]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config(), sort_keys=True),
    }


def _state(model: KANModel) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def fp32_checkpoint_bytes(model: KANModel) -> int:
    """Size of the model written in our format in fp32: the dense baseline that
    compression ratios divide by (computed in memory, nothing is written)."""
    state = {
        k: v.to(torch.float32) if v.is_floating_point() else v for k, v in _state(model).items()
    }
    plain = {k: v.to("cpu").contiguous().clone() for k, v in state.items()}
    return len(safetensors_bytes(plain, metadata=_metadata(model)))


class MetaclusterFormat(FormatHandler):
    name = FORMAT_NAME

    def matches(self, ckpt: Checkpoint) -> bool:
        return ckpt.metadata.get("format") == FORMAT_NAME

    def load(self, ckpt: Checkpoint) -> KANModel:
        version = ckpt.metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(f"metacluster checkpoint version {version!r} is not supported")
        try:
            config: Any = json.loads(ckpt.metadata["config"])
            # The config names every size; the tensors beside it are what is real: a
            # dry build must match them before the model is built (no 80 GB grids).
            model = build_bounded(
                lambda: KANModel.from_config(config),
                f"metacluster checkpoint {ckpt.path.name}",
                expect=ckpt.tensors,
            )
        except (KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise FormatError(f"metacluster checkpoint has an invalid model config: {exc}") from exc
        try:
            model.load_state_dict(ckpt.tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise FormatError(
                f"metacluster checkpoint weights do not fit its config: {' '.join(first[:3])}"
            ) from exc
        model.meta.setdefault("format", FORMAT_NAME)
        return model

    def count_params(self, ckpt: Checkpoint, model: KANModel) -> int:
        return model.n_params()

    def export(self, model: KANModel, path: Path) -> list[Path]:
        write_safetensors(_state(model), path, _metadata(model))
        return [path]


register(MetaclusterFormat())
