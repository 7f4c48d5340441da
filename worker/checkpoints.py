"""Stage checkpoints kept in storage, so a job resumes on any worker that shares it.

`metacluster.compress.DirectoryCheckpoint`'s files, as blobs: per stage a
safetensors blob (tensors) and a JSON blob (the rest), the JSON stored last, so a
stage counts as finished only once both are complete. Nothing is pickled.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from core.storage import Storage
from metacluster.compress import DirectoryCheckpoint

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class BlobCheckpoint:
    """`metacluster.compress.StageCheckpoint` on a storage prefix.

    The files are written and read by a `DirectoryCheckpoint` in a scratch
    directory, so both checkpoints share one format.
    """

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix.rstrip("/")

    def _keys(self, stage: str) -> tuple[str, str]:
        if not _STAGE_NAME.match(stage):
            raise ValueError(f"invalid stage name {stage!r}")
        return f"{self.prefix}/{stage}.safetensors", f"{self.prefix}/{stage}.json"

    def save(self, stage: str, state: dict[str, Any]) -> None:
        keys = self._keys(stage)
        with tempfile.TemporaryDirectory(prefix="mc-stage-") as tmp:
            DirectoryCheckpoint(tmp).save(stage, state)
            for key in keys:  # tensors first, the JSON last
                self.storage.put(key, Path(tmp) / key.rsplit("/", 1)[1])

    def load(self, stage: str) -> dict[str, Any] | None:
        tkey, jkey = self._keys(stage)
        if self.storage.stat(jkey) is None or self.storage.stat(tkey) is None:
            return None
        with (
            tempfile.TemporaryDirectory(prefix="mc-stage-") as tmp,
            self.storage.local_copy(tkey, Path(tmp)),
            self.storage.local_copy(jkey, Path(tmp)),
        ):
            return DirectoryCheckpoint(tmp).load(stage)


__all__ = ["BlobCheckpoint"]
