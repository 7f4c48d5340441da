"""The artifact's bytes, built in memory: what `metacluster.artifact` writes and reads.

The byte layout (format version 2; 3 when it holds gain codebooks; docs/format.md): one safetensors file with one
uint8 tensor ``p``, the deflated manifest followed by the payload (codebooks, coded
indices, uniform-quantization scales and codes, coded knot grids, dense parameters).
`build_artifact` returns the exact bytes and their `Breakdown`; `ArtifactSizer` is the
run's exact `Sizer`: it builds each artifact it sizes once and keeps it (`built`), so
the bytes that were sized are the bytes written. The engine measures with it by default,
so `metacluster.compress()` and the CLI report the same sizes and ratio.
"""

from __future__ import annotations

import hashlib
import json
import weakref
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import Tensor

from metacluster.compress.numeric.codebook import (
    CompressedKAN,
    QuantizedCoefficients,
    coefficient_names,
)
from metacluster.compress.numeric.packing import encode_indices
from metacluster.compress.sizing import Breakdown
from metacluster.errors import ArtifactError
from metacluster.kan.grids import decode_grid, encode_grid, grid_entries
from metacluster.kan.model import KANModel

FORMAT_VERSION = 2
# Version 3 is version 2 plus gain codebooks (`"m": "gain"`, gain-shape VQ); a file
# is written as version 3 only when it holds one, so every other file stays version 2.
GAIN_FORMAT_VERSION = 3
METADATA_KEY = "mcz"
PAYLOAD = "p"
BYTE_KINDS = ("codebooks", "indices", "grids", "dense", "manifest", "container")

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
class _Payload:
    """The payload being assembled, with what each byte is and which layer it serves."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BYTE_KINDS, 0))
    layers: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )

    def add(self, data: bytes, kind: str, shares: dict[str, float] | None = None) -> list[int]:
        """Append `data` (of `kind`), attributed to layers by `shares` (fractions); returns
        its size (pieces lie in manifest order: codebooks, uniform layers, others)."""
        self.parts.append(data)
        self.size += len(data)
        self.kinds[kind] += len(data)
        for layer, share in (shares or {}).items():
            self.layers[layer][kind] += share * len(data)
        return [len(data)]

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


def _owner(name: str, layers: list[str]) -> str | None:
    """The KAN layer a state entry belongs to (longest matching prefix)."""
    best = None
    for layer in layers:
        if (name.startswith(layer + ".") or not layer) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def _other_entries(model: CompressedKAN, other_dtype: str, payload: _Payload) -> list[list[Any]]:
    """[name, code, offset, size] of every state entry that is not a compressed vector
    and not a default: grids coded (code "g:<row codes>"), the rest as raw tensors."""
    quant = model.quantized
    skip = set(coefficient_names(model, quant.layers).values())
    params = {name for name, _ in model.named_parameters()}
    grids = grid_entries(model)
    kan_layers = [name for name, _ in model.kan_layers()]
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
        owner = _owner(name, kan_layers)
        shares = None if owner is None else {owner: 1.0}
        if name in grids and t.is_floating_point():
            order = grids[name][0]
            codes, values = encode_grid(t, order)
            decoded = decode_grid(codes, values, tuple(t.shape), order)
            if torch.equal(decoded, t.detach().cpu().float()):  # the engine made it canonical
                entries.append(
                    [name, "g:" + ",".join(codes), *payload.add(values.tobytes(), "grids", shares)]
                )
                continue
        stored = t.detach().cpu()
        # Buffers (grids) stay exact: edge grouping is computed from them on load.
        if other_dtype == "float16" and name in params and stored.is_floating_point():
            stored = stored.to(torch.float16)
        elif stored.is_floating_point():
            stored = stored.to(torch.float32)
        kind = "grids" if name in grids else "dense"
        entries.append(
            [name, _CODES[stored.dtype], *payload.add(_tensor_bytes(stored), kind, shares)]
        )
    return entries


def _short_config(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The non-default fields of a MetaClusterConfig dict (plus its version)."""
    if cfg is None:
        return None
    from metacluster.compress.spec.config import MetaClusterConfig

    default = MetaClusterConfig.default_dict()
    out = {k: v for k, v in cfg.items() if default.get(k) != v}
    out["version"] = cfg.get("version", default["version"])
    return out


def _group_shares(quant: QuantizedCoefficients, group: int) -> dict[str, float]:
    members = quant.groups[group].members
    total = sum(int(rows.numel()) for _, rows in members) or 1
    shares: dict[str, float] = defaultdict(float)
    for name, rows in members:
        shares[name] += int(rows.numel()) / total
    return dict(shares)


@dataclass
class Built:
    """An artifact's exact bytes and what they are."""

    data: bytes
    breakdown: Breakdown


def build_artifact(
    compressed: CompressedKAN,
    report: Any | None = None,
    *,
    codebook_dtype: str | None = None,
    other_dtype: str | None = None,
    entropy: str | None = None,
) -> Built:
    """The artifact file's exact bytes (write_artifact writes these) and their breakdown."""
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
        shares = _group_shares(quant, cb.group)
        cent = (
            cb.centroids.detach()
            .cpu()
            .to(torch.float16 if cb_dtype == "float16" else torch.float32)
        )
        kind, data = encode_indices(cb.indices.cpu().numpy(), cb.k, coding)
        entry: dict[str, Any] = {
            "g": cb.group,
            "k": cb.k,
            "s": cb.sub,
            "c": [cb.col0, cb.col1],
            "x": kind,
            "n": int(cb.indices.numel()),
            "dt": _CODES[cent.dtype],
            "o": payload.add(_tensor_bytes(cent), "codebooks", shares)
            + payload.add(data, "indices", shares),
        }
        if cb.residual:
            entry["r"] = 1
        if cb.gain:
            entry["m"] = "gain"
        cbs.append(entry)
    uqs = []
    for uq in quant.uniform:
        levels = 1 << uq.bits
        codes = (uq.codes.cpu() + (levels // 2 - 1)).numpy()
        kind, data = encode_indices(codes, levels, coding)
        own = {uq.layer: 1.0}
        uqs.append(
            {
                "l": uq.layer,
                "b": uq.bits,
                "x": kind,
                "n": int(codes.size),
                "o": payload.add(_tensor_bytes(uq.scales.float()), "codebooks", own)
                + payload.add(data, "indices", own),
            }
        )
    other = _other_entries(compressed, ot_dtype, payload)
    body = payload.bytes()
    version = GAIN_FORMAT_VERSION if any(cb.gain for cb in quant.codebooks) else FORMAT_VERSION
    manifest: dict[str, Any] = {
        "v": version,
        "method": quant.method,
        "model": compressed.config(),
        "scope": quant.scope,
        "grouping": quant.grouping,
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
    packed = zlib.compress(
        json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode(), level=9
    )
    blob = packed + body
    tensor = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    data = bytes(st_save({PAYLOAD: tensor}, metadata={METADATA_KEY: f"{version}:{len(packed)}"}))
    kinds = dict(payload.kinds)
    kinds["manifest"] = len(packed)
    kinds["container"] = len(data) - len(blob)
    by_layer = {
        layer: {k: round(v) for k, v in parts.items()} for layer, parts in payload.layers.items()
    }
    return Built(data, Breakdown(len(data), kinds, by_layer))


def artifact_bytes(compressed: CompressedKAN, report: Any | None = None, **options: Any) -> bytes:
    """The artifact file's exact bytes (write_artifact writes these)."""
    return build_artifact(compressed, report, **options).data


class ArtifactSizer:
    """The real sizes: the source's fp32 checkpoint file(s) (`formats.source_checkpoint_bytes`)
    and the artifact's bytes. Each artifact it sizes is built once and kept (`built`), so
    the writer writes the bytes that were sized instead of building them again."""

    def __init__(self) -> None:
        # id(compressed) -> (the model, what the manifest read of the report, the build)
        self._built: dict[int, tuple[weakref.ref[CompressedKAN], str, Built]] = {}

    def source_bytes(self, model: KANModel) -> tuple[int, str]:
        from metacluster.formats import source_checkpoint_bytes

        return source_checkpoint_bytes(model)

    def artifact_size(self, compressed: CompressedKAN, report: Any) -> Breakdown:
        built = build_artifact(compressed, report)
        self._built[id(compressed)] = (weakref.ref(compressed), _manifest_inputs(report), built)
        return built.breakdown

    def built(self, compressed: CompressedKAN, report: Any) -> Built | None:
        """The artifact sized for `compressed` with this report's manifest inputs, if any."""
        entry = self._built.get(id(compressed))
        if entry is None or entry[0]() is not compressed:
            return None
        return entry[2] if entry[1] == _manifest_inputs(report) else None


def _manifest_inputs(report: Any) -> str:
    """What `build_artifact` reads of a report (its metrics and config)."""
    keys = ("metric", "before", "after", "k", "config")
    return json.dumps({k: getattr(report, k, None) for k in keys}, sort_keys=True, default=str)


__all__ = [
    "BYTE_KINDS",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "PAYLOAD",
    "ArtifactSizer",
    "Built",
    "artifact_bytes",
    "build_artifact",
]
