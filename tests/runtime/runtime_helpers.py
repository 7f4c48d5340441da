"""Artifacts for the runtime tests, built from codebooks drawn directly (no training):
every layout the writer can produce, on every family, in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metacluster.artifact import write_artifact
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    build_groups,
    uniform_quant,
)
from metacluster.kan.model import KANModel

# layout -> (scope, grouping)
LAYOUTS = ("vq", "pq", "scalar", "residual", "global", "separate", "int8")


def _codebooks(
    quant_groups: list[Any], layout: str, k: int, gen: torch.Generator
) -> list[Codebook]:
    cbs = []
    for g, group in enumerate(quant_groups):
        n, length = group.n_edges, group.coef_dim
        if layout == "pq" and length % 2 == 0:
            spans = [(0, length // 2, length // 2), (length // 2, length, length // 2)]
        elif layout == "pq":
            spans = [(0, 1, 1), (1, length, length - 1)]
        elif layout == "scalar":
            spans = [(0, length, 1)]
        else:
            spans = [(0, length, length)]
        for col0, col1, sub in spans:
            count = n * (col1 - col0) // sub
            cent = torch.randn(k, sub, generator=gen) * 0.3
            idx = torch.randint(0, k, (count,), generator=gen)
            cbs.append(Codebook(g, cent, idx, col0, col1))
            if layout == "residual":
                small = torch.randn(k // 2, sub, generator=gen) * 0.05
                ridx = torch.randint(0, k // 2, (count,), generator=gen)
                cbs.append(Codebook(g, small, ridx, col0, col1, residual=True))
    return cbs


def quantize(model: KANModel, layout: str, k: int = 8, seed: int = 0) -> CompressedKAN:
    """`model` compressed with random codebooks of `layout` (see LAYOUTS)."""
    gen = torch.Generator().manual_seed(seed)
    layers = [name for name, _ in model.kan_layers()]
    scope = "global" if layout == "global" else "per_layer"
    grouping = "separate" if layout == "separate" else "shared"
    groups = build_groups(model, layers, scope, grouping)
    if layout == "int8":
        modules = dict(model.kan_layers())
        uqs = [uniform_quant(n, modules[n], modules[n].edge_view().coefficients, 8) for n in layers]
        quant = QuantizedCoefficients(scope, layers, groups, [], uqs, method="int8")
    else:
        cbs = _codebooks(groups, layout, k, gen)
        quant = QuantizedCoefficients(scope, layers, groups, cbs, grouping=grouping)
    return CompressedKAN(model, quant)


def artifact(model: KANModel, layout: str, path: Path, k: int = 8) -> Path:
    write_artifact(quantize(model, layout, k), path)
    return path
