"""A checkpoint on disk, read safely: its tensors, metadata, side configs and files.

Resolves what the user named (a file, a pykan prefix, a Hugging Face style
folder) into the files that make up the checkpoint, and reads them once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from metacluster.errors import FormatError
from metacluster.formats._io import is_safetensors, read_json, read_tensor_file
from metacluster.formats._yaml import load_pykan_config

PYKAN_SUFFIXES = ("_config.yml", "_state", "_cache_data")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Checkpoint:
    """Everything an importer may look at; `files` are what `bytes` counts."""

    path: Path
    files: list[Path]
    tensors: dict[str, Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    pykan_config: dict[str, Any] | None = None
    hf_config: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    # Per-layer options a spec gives a handler (e.g. a base activation the file cannot tell).
    options: dict[str, Any] = field(default_factory=dict)
    # True when key order is the module registration order (torch.save keeps it;
    # safetensors stores keys sorted, so order must be rebuilt from names).
    ordered: bool = True

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def pykan_files(prefix: Path) -> tuple[Path, Path]:
    """The (config, state) files of a pykan saveckpt prefix."""
    return prefix.with_name(prefix.name + "_config.yml"), prefix.with_name(prefix.name + "_state")


def pykan_prefix(path: Path) -> Path | None:
    """The saveckpt prefix when `path` names a pykan checkpoint (prefix or either file)."""
    name = path.name
    for suffix in PYKAN_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            prefix = path.with_name(name[: -len(suffix)])
            break
    else:
        prefix = path
    config, state = pykan_files(prefix)
    if config.is_file() and state.is_file():
        return prefix
    return None


def _spec_beside(path: Path) -> Path | None:
    candidates = (
        path.with_name(path.name + ".spec.json"),  # model.pt.spec.json
        path.with_suffix(".spec.json"),  # model.spec.json
        path.with_name("spec.json"),  # a folder holding one checkpoint and its spec
    )
    for candidate in candidates:
        if candidate.is_file() and candidate != path:
            return candidate
    return None


def _load_spec(
    spec: Mapping[str, Any] | str | Path | None, path: Path
) -> tuple[dict[str, Any] | None, list[Path]]:
    """(spec, [the spec file when it lies beside the checkpoint and so is part of it])."""
    sidecar: list[Path] = []
    if spec is None:
        beside = _spec_beside(path)
        if beside is None:
            return None, []
        spec, sidecar = beside, [beside]
    loaded = read_json(Path(spec)) if isinstance(spec, str | Path) else dict(spec)
    if not isinstance(loaded, dict):
        raise FormatError("a model spec must be a JSON object")
    return loaded, sidecar


def _load_hf_config(path: Path) -> tuple[dict[str, Any] | None, list[Path]]:
    """(the config.json beside Hugging Face style weights, [that file]); (None, [])
    for any other checkpoint."""
    config = path.parent / "config.json"
    if path.name not in HF_WEIGHTS or not config.is_file():
        return None, []
    loaded = read_json(config)
    if not isinstance(loaded, dict):
        raise FormatError("config.json must hold a JSON object")
    return loaded, [config]


def open_checkpoint(
    path: str | Path, spec: Mapping[str, Any] | str | Path | None = None
) -> Checkpoint:
    """Read the checkpoint named by `path` (safe loading only)."""
    path = Path(path)
    prefix = pykan_prefix(path)
    if prefix is not None:
        config_file, state_file = pykan_files(prefix)
        try:
            text = config_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FormatError(f"cannot read {config_file.name}: {exc}") from exc
        tensors, _ = read_tensor_file(state_file)
        # `_cache_data` holds the user's training inputs: never read, never counted.
        return Checkpoint(
            path=prefix,
            files=[config_file, state_file],
            tensors=tensors,
            pykan_config=load_pykan_config(text, config_file.name),
        )
    if path.is_dir():
        weights = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise FormatError(
                f"folder {path.name} holds no {' or '.join(HF_WEIGHTS)}; name the checkpoint file"
            )
        path = weights
    if not path.is_file():
        raise FormatError(f"no such checkpoint: {path}")
    tensors, metadata = read_tensor_file(path)
    spec_dict, spec_files = _load_spec(spec, path)
    hf_config, hf_files = _load_hf_config(path)
    return Checkpoint(
        path=path,
        files=[path, *spec_files, *hf_files],
        tensors=tensors,
        metadata=metadata,
        hf_config=hf_config,
        spec=spec_dict,
        ordered=not is_safetensors(path),
    )


# -- key helpers shared by the importers ----------------------------------------

_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders `layers.2` before `layers.10` and `ln1` next to `cheby1`."""
    numbers = tuple(int(n) for n in _NUM.findall(name))
    return (numbers, name)


def module_prefixes(ckpt: Checkpoint, leaf: str) -> list[str]:
    """Prefixes p (ending with '.' or empty) with a key p + leaf, in forward order."""
    found = [k[: -len(leaf)] for k in ckpt.tensors if k == leaf or k.endswith("." + leaf)]
    if not ckpt.ordered:
        found.sort(key=natural_key)
    return found


def module_order(ckpt: Checkpoint, prefixes: list[str]) -> list[str]:
    """The given module prefixes in forward order (registration order when known)."""
    if not ckpt.ordered:
        return sorted(prefixes, key=natural_key)
    first: dict[str, int] = {}
    for pos, key in enumerate(ckpt.tensors):
        for p in prefixes:
            if p not in first and key.startswith(p):
                first[p] = pos
    return sorted(prefixes, key=lambda p: first.get(p, len(ckpt.tensors)))


def take(ckpt: Checkpoint, key: str, ndim: int | None = None) -> Tensor:
    """ckpt.tensors[key] with a clear error when missing or of the wrong rank."""
    value = ckpt.tensors.get(key)
    if value is None:
        raise FormatError(f"checkpoint is missing {key!r}")
    if ndim is not None and value.dim() != ndim:
        raise FormatError(f"{key!r} has shape {tuple(value.shape)}, expected {ndim} dimensions")
    return value
