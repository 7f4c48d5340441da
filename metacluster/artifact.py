"""The packed MetaCluster artifact (``.mcz``): one safetensors file with one uint8 tensor.

Format version 2 (docs/format.md has the byte-level spec):

- the tensor ``p`` holds the manifest, deflated (zlib, no extra dependency), followed
  by the payload: codebooks, bit-packed or rANS-coded indices, uniform-quantization
  scales and codes, coded knot grids and the dense other parameters;
- the safetensors metadata holds one entry, ``mcz`` = ``"2:<manifest bytes>"``;
- the manifest (JSON) says where each piece lies in the payload, the model config that
  rebuilds the architecture, the method, the non-default config, headline metrics and
  the payload's sha256.

Everything derivable is left out: grids equal to the layer's default build (within
`metacluster.kan.grids.DEFAULT_RTOL`), grids stored as their parameters otherwise
(uniform rows as two knots, pykan-extended rows as their interior knots), untouched
defaults such as LayerNorm weights, and the edge grouping (rebuilt from the model).
`build_artifact` (built in memory by `metacluster.compress.container`, which the engine
sizes with) also returns the byte breakdown: what every byte of the file is.
Version-1 files (JSON manifest in the metadata, grids stored raw) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from metacluster.compress.container import (
    _DTYPES,
    BYTE_KINDS,
    FORMAT_VERSION,
    METADATA_KEY,
    PAYLOAD,
    ArtifactSizer,
    Built,
    artifact_bytes,
    build_artifact,
)
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    UniformQuant,
    build_groups,
)
from metacluster.compress.numeric.packing import decode_indices
from metacluster.compress.spec.options import UNRECORDED_METHOD
from metacluster.errors import ArtifactError
from metacluster.kan.grids import decode_grid, grid_entries
from metacluster.kan.model import KANModel

if TYPE_CHECKING:
    from metacluster.runtime import CodebookKAN

READABLE_VERSIONS = (1, 2, 3)


@dataclass
class ArtifactInfo:
    path: Path
    bytes: int
    sha256: str


def write_artifact(
    compressed: CompressedKAN, path: str | os.PathLike[str], report: Any | None = None
) -> ArtifactInfo:
    """Write the artifact file; returns its path, size and sha256."""
    return write_built(build_artifact(compressed, report), path)


def write_built(built: Built, path: str | os.PathLike[str]) -> ArtifactInfo:
    """Write the bytes of an artifact built before (and sized): no second build."""
    data = built.data
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return ArtifactInfo(p, len(data), hashlib.sha256(data).hexdigest())


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """(manifest, payload bytes) of an artifact (version 1, 2 or 3); the payload hash is
    verified."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            raw = meta.get(METADATA_KEY)
            if raw is None:
                raise ArtifactError(f"{path} is not a MetaCluster artifact (no manifest)")
            payload_t = f.get_tensor(PAYLOAD) if PAYLOAD in f.keys() else None  # noqa: SIM118
    except ArtifactError:
        raise
    except FileNotFoundError as exc:
        raise ArtifactError(f"artifact not found: {path}") from exc
    except Exception as exc:  # safetensors raises several types on corrupt input
        raise ArtifactError(f"{path} is not a readable artifact: {exc}") from exc
    blob = b"" if payload_t is None else bytes(payload_t.numpy().tobytes())
    try:
        if raw.startswith("{"):  # version 1: the manifest is the metadata's JSON
            text, body = raw, blob
        else:
            version, _, length = raw.partition(":")
            if version not in ("2", "3") or not length.isdigit() or int(length) > len(blob):
                raise ArtifactError(f"unsupported artifact header {raw[:40]!r}")
            text, body = zlib.decompress(blob[: int(length)]).decode(), blob[int(length) :]
        manifest = json.loads(text)
    except (zlib.error, UnicodeDecodeError) as exc:
        raise ArtifactError(f"artifact manifest is corrupt: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("v") not in READABLE_VERSIONS:
        version = manifest.get("v") if isinstance(manifest, dict) else None
        raise ArtifactError(f"unsupported artifact format version {version!r}")
    if hashlib.sha256(body).hexdigest() != manifest.get("sha256"):
        raise ArtifactError("artifact payload does not match its sha256 (corrupt file)")
    return manifest, body


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a MetaCluster artifact (cheap header check, no payload read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except Exception:
        return False


def verify_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the hash and rebuild the model; returns the manifest."""
    manifest, _ = read_manifest(path)
    load_artifact(path)
    return manifest


def _segment(body: bytes, off: int, size: int) -> bytes:
    if off < 0 or size < 0 or off + size > len(body):
        raise ArtifactError("artifact segment lies outside the payload")
    return body[off : off + size]


@overload
def load_artifact(
    path: str | os.PathLike[str], runtime: Literal["dense"] = "dense"
) -> CompressedKAN: ...


@overload
def load_artifact(path: str | os.PathLike[str], runtime: str) -> CompressedKAN | CodebookKAN: ...


def load_artifact(
    path: str | os.PathLike[str], runtime: str = "dense"
) -> CompressedKAN | CodebookKAN:
    """Load an artifact file.

    runtime "dense": the compressed model with every coefficient vector rebuilt (a
    KANModel, trainable, exportable); "compressed": `metacluster.runtime.CodebookKAN`,
    which keeps the codebooks and runs in the codebook domain (inference only).
    """
    import metacluster.kan  # noqa: F401  (registers the layer families)
    from metacluster.runtime import check_runtime, codebook_model

    check_runtime(runtime)
    manifest, body = read_manifest(path)
    try:
        model, quant = _decode(manifest, body)
        if runtime == "compressed":
            return codebook_model(model, quant)
        return CompressedKAN(model, quant, canonical=False)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise ArtifactError(f"artifact is inconsistent: {exc}") from exc


def _np_dtype(dtype: torch.dtype) -> Any:
    return np.uint8 if dtype == torch.bool else torch.empty(0, dtype=dtype).numpy().dtype


def _other_tensor(entry: list[Any], body: bytes, like: Tensor, order: int | None) -> Tensor:
    if len(entry) == 5:  # version 1: [name, dtype, shape, offset, size]
        _, code, shape, off, size = entry
    else:  # version 2: the shape is the model's
        _, code, off, size = entry
        shape = list(like.shape)
    raw = _segment(body, off, size)
    if code.startswith("g:"):
        values = np.frombuffer(raw, dtype=np.float32)
        return decode_grid(code[2:].split(","), values, tuple(shape), order)
    dtype = _DTYPES[code]
    expected = int(np.prod(shape)) * np.dtype(_np_dtype(dtype)).itemsize
    if len(raw) != expected:
        raise ArtifactError(
            f"artifact entry {entry[0]!r} holds {len(raw)} bytes; its shape {list(shape)} "
            f"of {code} needs {expected}"
        )
    arr = np.frombuffer(raw, dtype=_np_dtype(dtype)).reshape(shape)
    t = torch.from_numpy(arr.copy())
    return t.bool() if dtype == torch.bool else t


def _with_offsets(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version-2 manifest (sizes only; pieces in manifest order) with explicit offsets,
    as version 1 wrote them: cb/uq "o" = [offset, size, offset, size], other entries
    [name, code, offset, size]."""
    if manifest.get("v") == 1:
        return manifest
    pos = 0

    def place(sizes: list[int]) -> list[int]:
        nonlocal pos
        out = []
        for size in sizes:
            out += [pos, int(size)]
            pos += int(size)
        return out

    m = dict(manifest)
    m["cb"] = [{**e, "o": place(e["o"])} for e in manifest["cb"]]
    m["uq"] = [{**e, "o": place(e["o"])} for e in manifest["uq"]]
    m["other"] = [[e[0], e[1], *place(e[2:])] for e in manifest["other"]]
    return m


def _check_span(k: int, sub: int, col0: int, col1: int, coef_dim: int) -> None:
    """ArtifactError unless a codebook of k x sub covers columns [col0, col1) of
    coef_dim-long vectors in whole sub-vectors."""
    if k < 1 or sub < 1 or not 0 <= col0 < col1 <= coef_dim or (col1 - col0) % sub:
        raise ArtifactError(
            f"artifact codebook (k={k}, sub-vector {sub}, columns [{col0}, {col1})) does "
            f"not fit vectors of length {coef_dim}"
        )


def _decode(manifest: dict[str, Any], body: bytes) -> tuple[KANModel, QuantizedCoefficients]:
    """The rebuilt architecture with its other tensors, and the decoded codebooks."""
    manifest = _with_offsets(manifest)
    model = KANModel.from_config(manifest["model"]).float()
    state = model.state_dict()
    grids = grid_entries(model)
    for entry in manifest["other"]:
        name = entry[0]
        if name not in state:
            raise ArtifactError(f"artifact stores {name!r}, which the model does not have")
        order = grids[name][0] if name in grids else None
        state[name] = _other_tensor(entry, body, state[name], order).to(state[name].dtype)
    model.load_state_dict(state, strict=True)
    layers: list[str] = list(manifest["layers"])
    # version 1 grouped edges by identical grids; version 2 says how
    grouping = manifest.get("grouping", "separate")
    groups = build_groups(model, layers, manifest["scope"], grouping)
    codebooks: list[Codebook] = []
    for e in manifest["cb"]:
        g = int(e["g"])
        if not 0 <= g < len(groups):
            raise ArtifactError("artifact codebook refers to an unknown edge group")
        k, sub, (c0, c1) = int(e["k"]), int(e["s"]), (int(c) for c in e["c"])
        _check_span(k, sub, c0, c1, groups[g].coef_dim)
        dtype = _DTYPES[e["dt"]]
        c_off, c_size, i_off, i_size = e["o"]
        if c_size != k * sub * np.dtype(_np_dtype(dtype)).itemsize:
            raise ArtifactError(
                f"artifact codebook of {k} x {sub} {e['dt']} values holds {c_size} bytes"
            )
        cent = torch.from_numpy(
            np.frombuffer(_segment(body, c_off, c_size), dtype=_np_dtype(dtype))
            .reshape(k, sub)
            .copy()
        ).float()
        n = int(e["n"])
        gain = e.get("m") == "gain"
        if gain and (sub != 1 or not codebooks or codebooks[-1].group != g):
            raise ArtifactError("artifact gain codebook must follow a codebook of its group")
        if (n if gain else n * sub) != groups[g].n_edges * (1 if gain else c1 - c0):
            raise ArtifactError("artifact index count does not match the model's edges")
        idx = decode_indices(_segment(body, i_off, i_size), k, n, e["x"])
        codebooks.append(
            Codebook(
                g,
                cent,
                torch.from_numpy(idx),
                int(c0),
                int(c1),
                residual=bool(e.get("r")),
                gain=gain,
            )
        )
    modules = dict(model.kan_layers())
    uniform = []
    for e in manifest["uq"]:
        layer = modules[e["l"]]
        bits = int(e["b"])
        s_off, s_size, i_off, i_size = e["o"]
        outputs = layer.edge_index()[:, 0]
        scales = torch.from_numpy(
            np.frombuffer(_segment(body, s_off, s_size), dtype=np.float32).copy()
        )
        if scales.numel() != int(outputs.max()) + 1:
            raise ArtifactError(
                f"artifact layer {e['l']!r} has {scales.numel()} scales for "
                f"{int(outputs.max()) + 1} outputs"
            )
        levels = 1 << bits
        codes = decode_indices(_segment(body, i_off, i_size), levels, int(e["n"]), e["x"])
        codes_t = torch.from_numpy(codes).reshape(layer.n_edges, layer.coef_dim) - (levels // 2 - 1)
        uniform.append(UniformQuant(e["l"], bits, scales, codes_t, outputs))
    quant = QuantizedCoefficients(
        manifest["scope"],
        layers,
        groups,
        codebooks,
        uniform,
        method=manifest.get("method", UNRECORDED_METHOD),
        grouping=grouping,
    )
    return model, quant


__all__ = [
    "BYTE_KINDS",
    "FORMAT_VERSION",
    "ArtifactInfo",
    "ArtifactSizer",
    "Built",
    "artifact_bytes",
    "build_artifact",
    "is_artifact",
    "load_artifact",
    "read_manifest",
    "verify_artifact",
    "write_artifact",
    "write_built",
]
