"""Stage checkpoints kept in storage, so a job resumes on any worker that shares it.

The same layout as `metacluster.compress.DirectoryCheckpoint`, as blobs: per stage a
safetensors blob (tensors) and a JSON blob (the rest), the JSON written last, so a
stage counts as finished only once both are complete. Nothing is pickled.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from core.storage import Storage
from metacluster.errors import ArtifactError

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class BlobCheckpoint:
    """`metacluster.compress.StageCheckpoint` on a storage prefix."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix.rstrip("/")

    def _keys(self, stage: str) -> tuple[str, str]:
        if not _STAGE_NAME.match(stage):
            raise ValueError(f"invalid stage name {stage!r}")
        return f"{self.prefix}/{stage}.safetensors", f"{self.prefix}/{stage}.json"

    def save(self, stage: str, state: dict[str, Any]) -> None:
        tkey, jkey = self._keys(stage)
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in state.items()
            if isinstance(v, torch.Tensor)
        }
        rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        self.storage.put(tkey, bytes(st_save(tensors)))
        self.storage.put(jkey, json.dumps({"tensors": sorted(tensors), "state": rest}).encode())

    def load(self, stage: str) -> dict[str, Any] | None:
        tkey, jkey = self._keys(stage)
        if self.storage.stat(jkey) is None or self.storage.stat(tkey) is None:
            return None
        try:
            with self.storage.open(jkey) as fh:
                meta = json.loads(fh.read())
            with self.storage.open(tkey) as fh:
                tensors = st_load(fh.read())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"stage checkpoint {stage!r} is unreadable: {exc}") from exc
        if sorted(tensors) != meta.get("tensors"):
            raise ArtifactError(f"stage checkpoint {stage!r} is incomplete")
        state: dict[str, Any] = dict(meta.get("state", {}))
        state.update(tensors)
        return state


__all__ = ["BlobCheckpoint"]
