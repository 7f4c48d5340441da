"""The packed MetaCluster artifact: one safetensors file holding a single uint8 payload
(codebooks, bit-packed or rANS-coded indices, dense other params) and a JSON manifest.

Everything derivable from the model config (uniform grids, untouched LayerNorm
defaults, edge grouping) is left out, because on small models headers weigh.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    UniformQuant,
    build_groups,
    coefficient_names,
)
from metacluster.compress.packing import bits_for, decode_indices, encode_indices
from metacluster.errors import ArtifactError
from metacluster.kan.model import KANModel

FORMAT_VERSION = 1
METADATA_KEY = "mcz"
PAYLOAD = "p"

_DTYPES: dict[str, torch.dtype] = {
    "f4": torch.float32,
    "f2": torch.float16,
    "f8": torch.float64,
    "i8": torch.int64,
    "i4": torch.int32,
    "u1": torch.uint8,
    "b1": torch.bool,
}
_CODES = {v: k for k, v in _DTYPES.items()}


@dataclass
class ArtifactInfo:
    path: Path
    bytes: int
    sha256: str


class _Payload:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        self.parts.append(data)
        self.size += len(data)
        return [self.size - len(data), len(data)]

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _tensor_bytes(t: Tensor) -> bytes:
    arr = t.detach().cpu().contiguous()
    if arr.dtype == torch.bool:
        return bytes(arr.numpy().astype(np.uint8).tobytes())
    return bytes(arr.numpy().tobytes())


def _fresh_defaults(config: dict[str, Any]) -> list[dict[str, Tensor]]:
    """State dicts of two freshly built models under different seeds: an entry equal
    in both is a deterministic default (grid, LayerNorm ones) and need not be stored."""
    states = []
    for seed in (12345, 54321):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            states.append(KANModel.from_config(config).float().state_dict())
    return states


def _other_entries(model: CompressedKAN, other_dtype: str, payload: _Payload) -> list[list[Any]]:
    quant = model.quantized
    skip = set(coefficient_names(model, quant.layers).values())
    params = {name for name, _ in model.named_parameters()}
    defaults = _fresh_defaults(model.config())
    entries: list[list[Any]] = []
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        if all(
            name in d
            and d[name].shape == t.shape
            and d[name].dtype == t.dtype
            and torch.equal(d[name], t.cpu())
            for d in defaults
        ):
            continue
        stored = t.detach().cpu()
        # Buffers (grids) stay exact: edge grouping is computed from them on load.
        if other_dtype == "float16" and name in params and stored.is_floating_point():
            stored = stored.to(torch.float16)
        elif stored.is_floating_point():
            stored = stored.to(torch.float32)
        entries.append(
            [name, _CODES[stored.dtype], list(stored.shape), *payload.add(_tensor_bytes(stored))]
        )
    return entries


def _short_config(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The non-default fields of a MetaClusterConfig dict (plus its version)."""
    if cfg is None:
        return None
    from metacluster.compress.config import MetaClusterConfig

    default = MetaClusterConfig().to_dict()
    out = {k: v for k, v in cfg.items() if default.get(k) != v}
    out["version"] = cfg.get("version", default["version"])
    return out


def artifact_bytes(
    compressed: CompressedKAN,
    report: Any | None = None,
    *,
    codebook_dtype: str | None = None,
    other_dtype: str | None = None,
    entropy: str | None = None,
) -> bytes:
    """The artifact file's exact bytes (write_artifact writes these)."""
    if not isinstance(compressed, CompressedKAN):
        raise ArtifactError("write_artifact needs the compressed model returned by compress()")
    quant = compressed.quantized
    cfg: dict[str, Any] | None = None
    if report is not None and getattr(report, "config", None) is not None:
        cfg = dict(report.config)
    cb_dtype = codebook_dtype or (cfg or {}).get("codebook_dtype", "float32")
    ot_dtype = other_dtype or (cfg or {}).get("other_dtype", "float32")
    coding = entropy or (cfg or {}).get("entropy", "auto")
    payload = _Payload()
    cbs = []
    for cb in quant.codebooks:
        cent = (
            cb.centroids.detach()
            .cpu()
            .to(torch.float16 if cb_dtype == "float16" else torch.float32)
        )
        kind, data = encode_indices(cb.indices.cpu().numpy(), cb.k, coding)
        cbs.append(
            {
                "g": cb.group,
                "k": cb.k,
                "s": cb.sub,
                "c": [cb.col0, cb.col1],
                "b": bits_for(cb.k),
                "x": kind,
                "n": int(cb.indices.numel()),
                "dt": _CODES[cent.dtype],
                "o": payload.add(_tensor_bytes(cent)) + payload.add(data),
            }
        )
    uqs = []
    for uq in quant.uniform:
        levels = 1 << uq.bits
        codes = (uq.codes.cpu() + (levels // 2 - 1)).numpy()
        kind, data = encode_indices(codes, levels, coding)
        uqs.append(
            {
                "l": uq.layer,
                "b": uq.bits,
                "x": kind,
                "n": int(codes.size),
                "o": payload.add(_tensor_bytes(uq.scales.float())) + payload.add(data),
            }
        )
    other = _other_entries(compressed, ot_dtype, payload)
    body = payload.bytes()
    manifest: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "method": quant.method,
        "model": compressed.config(),
        "scope": quant.scope,
        "layers": quant.layers,
        "cb": cbs,
        "uq": uqs,
        "other": other,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    if report is not None:
        manifest["metrics"] = {
            key: getattr(report, key)
            for key in ("metric", "before", "after", "k")
            if getattr(report, key, None) is not None
        }
    short = _short_config(cfg)
    if short is not None:
        manifest["cfg"] = short
    tensor = (
        torch.frombuffer(bytearray(body), dtype=torch.uint8)
        if body
        else torch.zeros(0, dtype=torch.uint8)
    )
    meta = {METADATA_KEY: json.dumps(manifest, separators=(",", ":"), sort_keys=True)}
    return bytes(st_save({PAYLOAD: tensor}, metadata=meta))


def write_artifact(
    compressed: CompressedKAN, path: str | os.PathLike[str], report: Any | None = None
) -> ArtifactInfo:
    """Write the artifact file; returns its path, size and sha256."""
    data = artifact_bytes(compressed, report)
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return ArtifactInfo(p, len(data), hashlib.sha256(data).hexdigest())


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """(manifest, payload bytes) of an artifact; the payload hash is verified."""
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
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("v") != FORMAT_VERSION:
        raise ArtifactError(f"unsupported artifact format version {manifest.get('v')!r}")
    body = b"" if payload_t is None else bytes(payload_t.numpy().tobytes())
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


def load_artifact(path: str | os.PathLike[str]) -> CompressedKAN:
    """Rebuild the compressed model (dense reconstruction) from an artifact file."""
    import metacluster.kan  # noqa: F401  (registers the layer families)

    manifest, body = read_manifest(path)
    try:
        return _rebuild(manifest, body)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise ArtifactError(f"artifact is inconsistent: {exc}") from exc


def _rebuild(manifest: dict[str, Any], body: bytes) -> CompressedKAN:
    model = KANModel.from_config(manifest["model"]).float()
    state = model.state_dict()
    for name, code, shape, off, size in manifest["other"]:
        if name not in state:
            raise ArtifactError(f"artifact stores {name!r}, which the model does not have")
        dtype = _DTYPES[code]
        raw = _segment(body, off, size)
        np_dtype = np.uint8 if dtype == torch.bool else torch.empty(0, dtype=dtype).numpy().dtype
        arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
        t = torch.from_numpy(arr.copy())
        t = t.bool() if dtype == torch.bool else t
        state[name] = t.to(state[name].dtype)
    model.load_state_dict(state, strict=True)
    layers: list[str] = list(manifest["layers"])
    groups = build_groups(model, layers, manifest["scope"])
    codebooks = []
    for e in manifest["cb"]:
        g = int(e["g"])
        if not 0 <= g < len(groups):
            raise ArtifactError("artifact codebook refers to an unknown edge group")
        k, sub, (c0, c1) = int(e["k"]), int(e["s"]), e["c"]
        dtype = _DTYPES[e["dt"]]
        c_off, c_size, i_off, i_size = e["o"]
        cent = torch.from_numpy(
            np.frombuffer(
                _segment(body, c_off, c_size), dtype=torch.empty(0, dtype=dtype).numpy().dtype
            )
            .reshape(k, sub)
            .copy()
        ).float()
        n = int(e["n"])
        if n * sub != groups[g].n_edges * (c1 - c0):
            raise ArtifactError("artifact index count does not match the model's edges")
        idx = decode_indices(_segment(body, i_off, i_size), k, n, e["x"])
        codebooks.append(Codebook(g, cent, torch.from_numpy(idx), int(c0), int(c1)))
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
        method=manifest.get("method", "metacluster"),
    )
    return CompressedKAN(model, quant)


__all__ = [
    "ArtifactInfo",
    "artifact_bytes",
    "is_artifact",
    "load_artifact",
    "read_manifest",
    "verify_artifact",
    "write_artifact",
]
