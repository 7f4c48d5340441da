"""CompressionReport: what a compression run measured, JSON-able for the CLI and service.

Holds the report keys of the CLI and HTTP contract (docs/api.md) plus param_ratio,
per-layer errors and bytes, the K sweep frontier, stage timings, seed and library versions. Real file sizes
come from the caller's sizer (`metacluster.workflow`); the engine only estimates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metacluster.compress.numeric.codebook import CompressedKAN
from metacluster.compress.spec.options import UNRECORDED_METHOD
from metacluster.kan.model import KANModel


@dataclass
class CompressionReport:
    metric: str
    before: float
    after: float
    k: int
    bytes_before: int
    bytes_after: int
    ratio: float
    param_ratio: float
    stages: dict[str, float]
    layers: list[dict[str, Any]]
    seed: int
    config: dict[str, Any]
    method: str = UNRECORDED_METHOD  # a report from before reports named their method
    mode: str = "post_hoc"
    device: str = "cpu"
    bytes_before_source: str = ""
    metric_meta: float | None = None  # generated vectors, before clustering
    metric_kmeans: float | None = None  # after K-means, before fine-tuning
    sweep: list[dict[str, Any]] = field(default_factory=list)
    recommended_k: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None  # of the artifact file, once written
    # The metric on the validation split carved from the training data (what the K
    # recommendation and the budget allocation decide on; never the test set).
    val_before: float | None = None
    val_after: float | None = None
    # A byte budget's bytes (target_ratio / max_bytes), and the non-dominated results.
    budget_bytes: int | None = None
    budget_attempts: int | None = None  # allocations run (more than one: an overshoot)
    pareto: list[dict[str, Any]] = field(default_factory=list)
    # Baselines on the same byte axis ({method, options, k, bytes_after, after}), the K
    # shared edge functions of each codebook layer ({x, curves}), and its edge vectors in
    # 2D before / after the meta-learner with their cluster ({before, after, cluster}).
    baselines: list[dict[str, Any]] = field(default_factory=list)
    codebook_functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    projection: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Payload bytes of each KAN layer, by kind (the sizer's; shared codebooks split by edges).
    layer_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    # Bytes by kind; they sum to bytes_after (the real file with ArtifactSizer).
    bytes_breakdown: dict[str, int] = field(default_factory=dict)
    # What the effort and time budget did: per training stage the steps run of those
    # planned and why it ended early (a budget reached mid-stage keeps its best state),
    # seconds spent, and whether the baselines ran and what they cost.
    schedule: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("layer_bytes")  # the same numbers are in layers[i]["bytes_breakdown"]
        return out


def library_versions() -> dict[str, str]:
    import faiss
    import safetensors

    import metacluster

    return {
        "metacluster": metacluster.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss": str(getattr(faiss, "__version__", "unknown")),
        "safetensors": safetensors.__version__,
    }


@torch.no_grad()
def layer_details(
    source: KANModel, compressed: CompressedKAN, layer_bytes: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """Per KAN layer: edges, coef_dim, how it is stored (codebook with its K, uniform
    with its levels, or dense), coefficient and function-space errors, and its payload
    bytes by kind (`layer_bytes`, from the sizer)."""
    quant = compressed.quantized
    src_layers = dict(source.kan_layers())
    cmp_layers = dict(compressed.kan_layers())
    ks: dict[str, list[int]] = {n: [] for n in quant.layers}
    mode: dict[str, str] = {}
    for cb in quant.codebooks:
        for name, _ in quant.groups[cb.group].members:
            mode[name] = "codebook"
            if cb.k not in ks[name] and not (cb.residual or cb.gain):
                ks[name].append(cb.k)
    for uq in quant.uniform:
        mode[uq.layer] = "uniform"
        ks[uq.layer].append(1 << uq.bits)
    out = []
    for name, src in src_layers.items():
        cmp_ = cmp_layers[name]
        w0 = src.edge_view(name).coefficients.float().cpu()
        w1 = cmp_.edge_view(name).coefficients.float().cpu()
        f0 = src.edge_functions(w0.to(src.coef_param.dtype)).float()
        f1 = cmp_.edge_functions(w1).float()
        parts = dict(layer_bytes.get(name, {}))
        out.append(
            {
                "name": name,
                "edges": src.n_edges,
                "coef_dim": src.coef_dim,
                "mode": mode.get(name, "dense"),
                "k": ks.get(name, []),
                "coef_rel_error": float((w1 - w0).norm() / w0.norm().clamp_min(1e-12)),
                "function_rel_error": float((f1 - f0).norm() / f0.norm().clamp_min(1e-12)),
                "bytes": sum(parts.values()),
                "bytes_breakdown": parts,
            }
        )
    return out
