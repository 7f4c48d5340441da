"""Every byte count of the engine, in one place: estimates before a run, counts after it.

- the storage of one value (`value_bytes`: float16 or float32) and of one index
  (`bits_for`, from the packer that writes them);
- a layer's payload at codebook size K (`codebook_bits`, `codebook_bytes`) and the
  baselines' (`scalar_bits`, `pq_bits`, `uniform_bits`): the plan's data-free estimate;
- what an artifact spends besides the compressed coefficients (`header_bytes`,
  `fixed_bytes`): the manifest, the container, dense parameters and coded grids;
- the payload of a compressed model (`payload_bytes`, the indices coded as the artifact
  codes them), the paper's parameter ratio (`param_ratio`) and the byte ratio (`ratio`);
- `Sizer`, what a run measures its bytes with: `EstimateSizer` (the tensors alone) or
  the artifact format's exact sizer (`metacluster.artifact.ArtifactSizer`, which builds
  the file once and keeps its bytes for the writer).

The header constants were measured on the test suite's artifacts and rounded up, so a
written file stays within a byte budget; `tests/compress/test_sizing.py` checks every
estimate against the written file for each method and family of the suite.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from metacluster.compress.numeric.codebook import CompressedKAN, coefficient_names
from metacluster.compress.numeric.packing import bits_for, encode_indices
from metacluster.kan.grids import encode_grid, grid_entries
from metacluster.kan.model import KANModel

# The deflated manifest beside the model config (metrics, config, sha256, entries) and the
# safetensors header, in bytes.
MANIFEST_BYTES = 260
MANIFEST_BYTES_PER_LAYER = 40
CONTAINER_BYTES = 110
# The deflated model config when only a description of the model is known (the plan).
MODEL_CONFIG_BYTES = 64
MODEL_CONFIG_BYTES_PER_LAYER = 20


@dataclass
class Breakdown:
    """What the bytes of an artifact are: by kind (codebooks, indices, grids, dense,
    manifest, container; they sum to `total`) and, for the payload, by KAN layer."""

    total: int
    by_kind: dict[str, int]
    by_layer: dict[str, dict[str, int]] = field(default_factory=dict)


def value_bytes(dtype: str | None) -> int:
    """Bytes of one stored value: 2 for "float16", else 4 (float32)."""
    return 2 if dtype == "float16" else 4


def codebook_bits(edges: int, coef_dim: int, k: int, codebook_dtype: str) -> int:
    """Bits of one layer stored as a K-entry codebook of whole vectors + packed indices."""
    k = min(k, edges)
    return k * coef_dim * 8 * value_bytes(codebook_dtype) + edges * bits_for(k)


def gain_shape_bits(edges: int, coef_dim: int, k: int, gain_k: int, codebook_dtype: str) -> int:
    """Bits of one layer stored as K shapes + a `gain_k`-entry gain codebook, two
    packed indices per edge (method gainshape)."""
    gain_k = min(gain_k, edges)
    gains = gain_k * 8 * value_bytes(codebook_dtype) + edges * bits_for(gain_k)
    return codebook_bits(edges, coef_dim, k, codebook_dtype) + gains


def codebook_bytes(edges: int, coef_dim: int, k: int, codebook_dtype: str) -> int:
    return math.ceil(codebook_bits(edges, coef_dim, k, codebook_dtype) / 8)


def scalar_bits(edges: int, coef_dim: int, bits: int, codebook_dtype: str) -> int:
    """Scalar clustering: 2^bits shared values and one code per coefficient."""
    return (1 << bits) * 8 * value_bytes(codebook_dtype) + edges * coef_dim * bits


def pq_bits(edges: int, coef_dim: int, m: int, bits: int, codebook_dtype: str) -> int:
    """Product quantization: 2^bits centroids per sub-space, m codes per edge."""
    return (1 << bits) * coef_dim * 8 * value_bytes(codebook_dtype) + edges * m * bits


def uniform_bits(edges: int, coef_dim: int, outputs: int, bits: int) -> int:
    """Uniform int<bits>: the codes plus one fp32 scale per output channel."""
    return edges * coef_dim * bits + 32 * outputs


def header_bytes(layers: int, model_config_bytes: int | None = None) -> int:
    """An estimate of an artifact's manifest and container bytes for a model of `layers`
    KAN layers whose config deflates to `model_config_bytes` (estimated when unknown)."""
    if model_config_bytes is None:
        model_config_bytes = MODEL_CONFIG_BYTES + MODEL_CONFIG_BYTES_PER_LAYER * layers
    return model_config_bytes + MANIFEST_BYTES + MANIFEST_BYTES_PER_LAYER * layers + CONTAINER_BYTES


def model_header_bytes(model: KANModel) -> int:
    """`header_bytes` of `model`, with its config deflated as the manifest stores it."""
    config = json.dumps(model.config(), separators=(",", ":"), sort_keys=True).encode()
    return header_bytes(len(list(model.kan_layers())), len(zlib.compress(config, 9)))


def dense_bytes(model: KANModel, skip: Iterable[str], other_dtype: str | None) -> int:
    """Bytes of the parameters of `model` not named in `skip`, stored as `other_dtype`."""
    left = set(skip)
    count = sum(int(p.numel()) for n, p in model.named_parameters() if n not in left)
    return value_bytes(other_dtype) * count


def fixed_bytes(model: KANModel, layers: list[str], other_dtype: str) -> int:
    """Bytes an artifact spends besides the compressed layers' coefficients: the dense
    parameters, coded grids, manifest and header (an estimate on the safe side)."""
    total = dense_bytes(model, coefficient_names(model, layers).values(), other_dtype)
    state = model.state_dict()
    for name, (order, default) in grid_entries(model).items():
        grid = state[name]
        if default.shape == grid.shape and torch.allclose(
            default.to(grid), grid, rtol=1e-6, atol=1e-6
        ):
            continue
        total += 4 * int(encode_grid(grid, order)[1].size)
    return total + model_header_bytes(model)


def coded_index_bytes(indices: Any, k: int, coding: str) -> int:
    """Bytes of an index stream as the artifact codes it (packed or rANS)."""
    return len(encode_indices(indices, k, coding)[1])


def payload_bytes(compressed: CompressedKAN, config: dict[str, Any]) -> Breakdown:
    """What an artifact stores for `compressed`, without its manifest and container
    (codebooks, coded indices, uniform codes and the dense parameters), by kind: the
    engine's estimate when no sizer measures the real file."""
    quant = compressed.quantized
    coding = str(config.get("entropy", "auto"))
    cb_bytes = value_bytes(config.get("codebook_dtype"))
    kinds = {"codebooks": 0, "indices": 0, "grids": 0, "dense": 0}
    for cb in quant.codebooks:
        kinds["codebooks"] += cb.k * cb.sub * cb_bytes
        kinds["indices"] += coded_index_bytes(cb.indices.cpu().numpy(), cb.k, coding)
    for uq in quant.uniform:
        levels = 1 << uq.bits
        codes = (uq.codes + levels // 2 - 1).cpu().numpy()
        kinds["codebooks"] += 4 * int(uq.scales.numel())
        kinds["indices"] += coded_index_bytes(codes, levels, coding)
    skip = coefficient_names(compressed, quant.layers).values()
    kinds["dense"] = dense_bytes(compressed, skip, config.get("other_dtype"))
    return Breakdown(sum(kinds.values()), kinds)


def param_ratio(
    source: KANModel, compressed: CompressedKAN, codebook_dtype: str, other_dtype: str
) -> float:
    """Paper's measure: fp32 bits of every source parameter over the bits of the stored
    codebooks, packed indices and the other (dense) parameters."""
    num = 32 * sum(int(p.numel()) for p in source.parameters())
    quant = compressed.quantized
    cb_bits = 8 * value_bytes(codebook_dtype)
    den = 0
    for cb in quant.codebooks:
        den += cb.k * cb.sub * cb_bits + bits_for(cb.k) * int(cb.indices.numel())
    for uq in quant.uniform:
        den += int(uq.scales.numel()) * 32 + uq.bits * int(uq.codes.numel())
    skip = coefficient_names(compressed, quant.layers).values()
    den += 8 * dense_bytes(compressed, skip, other_dtype)
    return num / max(1, den)


def ratio(bytes_before: int, bytes_after: int) -> float:
    """The byte ratio of a report: before over after."""
    return bytes_before / max(1, bytes_after)


def state_dict_bytes(model: KANModel) -> int:
    """Bytes of `model`'s state dict at fp32 (the estimate of a source checkpoint)."""
    return sum(4 * int(t.numel()) for t in model.state_dict().values())


class Sizer(Protocol):
    """How big things are on disk: the caller's byte count, used for every ratio."""

    def source_bytes(self, model: KANModel) -> tuple[int, str]:
        """(bytes of the fp32 original, how they were measured)."""
        ...

    def artifact_size(self, compressed: CompressedKAN, report: Any) -> Breakdown:
        """Bytes of the artifact that stores `compressed` with `report`, by kind."""
        ...


class EstimateSizer:
    """Sizes from the tensors alone: fp32 state dict before, payload after."""

    def source_bytes(self, model: KANModel) -> tuple[int, str]:
        return state_dict_bytes(model), "estimate:state_dict"

    def artifact_size(self, compressed: CompressedKAN, report: Any) -> Breakdown:
        return payload_bytes(compressed, report.config)


__all__ = [
    "Breakdown",
    "EstimateSizer",
    "Sizer",
    "bits_for",
    "codebook_bits",
    "codebook_bytes",
    "coded_index_bytes",
    "dense_bytes",
    "fixed_bytes",
    "header_bytes",
    "model_header_bytes",
    "param_ratio",
    "payload_bytes",
    "pq_bits",
    "ratio",
    "scalar_bits",
    "state_dict_bytes",
    "uniform_bits",
    "value_bytes",
]
