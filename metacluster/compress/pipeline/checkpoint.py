"""Stage checkpoints: a finished stage's result saved so a re-delivered job resumes.

`StageCheckpoint` is where states go (`DirectoryCheckpoint`: one safetensors file
plus one JSON file per stage, no pickle, written atomically; `MemoryCheckpoint`; the
worker's blob-store checkpoint). `ResumableStages` is the one wrapper every stage
runs through: it restores a finished stage (same model and config) instead of
computing it again, and saves a stage once it has finished.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from safetensors.torch import load_file, save_file

from metacluster.errors import ArtifactError
from metacluster.kan.model import KANModel

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@runtime_checkable
class StageCheckpoint(Protocol):
    def load(self, stage: str) -> dict[str, Any] | None: ...

    def save(self, stage: str, state: dict[str, Any]) -> None: ...


class DirectoryCheckpoint:
    """`{stage}.safetensors` (tensors) + `{stage}.json` (the rest); the JSON is
    written last, so a stage counts as finished only once both are complete."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _files(self, stage: str) -> tuple[Path, Path]:
        if not _STAGE_NAME.match(stage):
            raise ValueError(f"invalid stage name {stage!r}")
        return self.path / f"{stage}.safetensors", self.path / f"{stage}.json"

    def save(self, stage: str, state: dict[str, Any]) -> None:
        tpath, jpath = self._files(stage)
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in state.items()
            if isinstance(v, torch.Tensor)
        }
        rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        tmp_t = tpath.with_suffix(".safetensors.tmp")
        save_file(tensors, str(tmp_t))
        os.replace(tmp_t, tpath)
        tmp_j = jpath.with_suffix(".json.tmp")
        tmp_j.write_text(json.dumps({"tensors": sorted(tensors), "state": rest}))
        os.replace(tmp_j, jpath)

    def load(self, stage: str) -> dict[str, Any] | None:
        tpath, jpath = self._files(stage)
        if not jpath.exists() or not tpath.exists():
            return None
        try:
            meta = json.loads(jpath.read_text())
            tensors = load_file(str(tpath))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"stage checkpoint {stage!r} is unreadable: {exc}") from exc
        if sorted(tensors) != meta.get("tensors"):
            raise ArtifactError(f"stage checkpoint {stage!r} is incomplete")
        state: dict[str, Any] = dict(meta.get("state", {}))
        state.update(tensors)
        return state


class MemoryCheckpoint:
    """In-process checkpoint (tests, notebooks)."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    def load(self, stage: str) -> dict[str, Any] | None:
        state = self.stages.get(stage)
        return None if state is None else dict(state)

    def save(self, stage: str, state: dict[str, Any]) -> None:
        self.stages[stage] = {
            k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()
        }


T = TypeVar("T")
_STATE = "state."


class ResumableStages:
    """Runs stages at most once per (model, config) fingerprint.

    `run(stage, compute, save=..., restore=...)`: with a checkpoint holding `stage`
    under the same fingerprint, `restore(state)` rebuilds the result (and the work
    model's parameters, when the stage trains it) and progress reports the stage as
    done; otherwise `compute()` runs and `save(result)` (plus the model's state) is
    stored. A checkpoint of another model or config is ignored.
    """

    def __init__(
        self,
        checkpoint: StageCheckpoint | None,
        fingerprint: str,
        model: KANModel,
        report: Callable[[str, int, int, float | None], None],
    ) -> None:
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.model = model
        self.report = report

    def run(
        self,
        stage: str,
        compute: Callable[[], T],
        *,
        save: Callable[[T], dict[str, Any]],
        restore: Callable[[dict[str, Any]], T],
        progress_name: str | None = None,
        trains_model: bool = True,
    ) -> T:
        state = self._load(stage)
        if state is not None:
            if trains_model:
                sd = {k[len(_STATE) :]: v for k, v in state.items() if k.startswith(_STATE)}
                self.model.load_state_dict(sd, strict=True)
            self.report(progress_name or stage, 1, 1, None)
            return restore(state)
        result = compute()
        if self.checkpoint is not None:
            payload = dict(save(result))
            if trains_model:
                for k, v in self.model.state_dict().items():
                    payload[_STATE + k] = v.detach().cpu().clone()
            self.checkpoint.save(stage, {"fingerprint": self.fingerprint, **payload})
        return result

    def _load(self, stage: str) -> dict[str, Any] | None:
        if self.checkpoint is None:
            return None
        state = self.checkpoint.load(stage)
        if state is None or state.get("fingerprint") != self.fingerprint:
            return None  # a checkpoint of another model or config: recompute
        return state
