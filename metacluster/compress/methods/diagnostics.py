"""What a report shows beside the numbers: baselines on the same byte axis, the shared
edge functions of every codebook, and the edge vectors in 2D before and after the
meta-learner, coloured by cluster."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metacluster.compress.spec.effort import RunBudget
from metacluster.errors import InputError, MetaClusterError

if TYPE_CHECKING:
    from metacluster.compress.numeric.codebook import CompressedKAN
    from metacluster.compress.pipeline.context import Context

# Edge vectors per layer in a projection (a seeded subsample of larger layers).
PROJECTION_POINTS = 400
CURVE_POINTS = 48
# Baselines placed on a report's byte axis are fine-tuned this many epochs at most (and
# at most the effort's baseline step budget).
BASELINE_FINETUNE_EPOCHS = 5


def baseline_settings(coef_dim: int, k: int) -> list[tuple[str, dict[str, int]]]:
    """The baselines placed on a run's byte axis, at settings near a K codebook's bits:
    scalar clustering at 1 and 2 bits a value, PQ splitting each vector in m parts of
    about log2(K)/m bits each, and uniform int4 / int8."""
    m = next((d for d in range(2, coef_dim + 1) if coef_dim % d == 0), coef_dim)
    bits = max(1, round(math.log2(max(k, 2)) / m))
    return [
        ("scalar", {"bits": 1}),
        ("scalar", {"bits": 2}),
        ("pq", {"m": m, "bits": bits}),
        ("int4", {}),
        ("int8", {}),
    ]


def baseline_points(ctx: Context, k: int) -> list[dict[str, Any]]:
    """Each baseline run from the original model with the run's data, fine-tuning and
    byte accounting: its bytes and test metric."""
    from metacluster.compress.pipeline.checkpoint import ResumableStages
    from metacluster.compress.pipeline.registry import get_method

    coef_dim = max(layer.coef_dim for layer in ctx.plan.layers)
    out = []
    for name, options in baseline_settings(coef_dim, k):
        if name == "pq" and any(layer.coef_dim % options["m"] for layer in ctx.plan.layers):
            continue
        ctx.hooks.check("baselines")
        work = copy.deepcopy(ctx.source).to(ctx.device)
        config = ctx.config.replace(
            method=name,
            method_options=options,
            baselines=False,
            finetune_epochs=min(ctx.config.finetune_epochs, BASELINE_FINETUNE_EPOCHS),
        )
        stages = ResumableStages(None, "", work, lambda *_: None)
        base = dataclasses.replace(
            ctx, work=work, config=config, stages=stages, budget=_baseline_budget(ctx)
        )
        try:
            _, report = get_method(name).run(base, get_method(name).parse_options(options))
        except MetaClusterError:  # e.g. a layer too small for its codebook: leave it out
            continue
        out.append(
            {
                "method": name,
                "options": options,
                "k": report.k,
                "bytes_after": report.bytes_after,
                "after": report.after,
            }
        )
    return out


def _baseline_budget(ctx: Context) -> RunBudget | None:
    """The run's budget with the effort's baseline step budget for fine-tuning, and a log
    of its own (the report's stage log is the main run's)."""
    if ctx.budget is None:
        return None
    effort = ctx.budget.effort
    units = {**effort.units, "finetune": effort.units["baseline"]}
    return RunBudget(dataclasses.replace(effort, units=units), ctx.budget.work, ctx.budget.clock)


def _pca2(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets in the 2D principal plane of `a` (centred on `a`'s mean)."""
    mean = a.mean(0)
    _, _, vt = torch.linalg.svd(a - mean, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else torch.cat([vt.T, torch.zeros_like(vt.T)], 1)
    return (a - mean) @ axes, (b - mean) @ axes


@torch.no_grad()
def projection(
    source: dict[str, Tensor], generated: dict[str, Tensor], compressed: CompressedKAN, seed: int
) -> dict[str, dict[str, list[Any]]]:
    """Per codebook layer: a subsample of its edge vectors before (the original) and
    after the meta-learner (the generated), in the original's principal plane, with
    the codebook entry each edge took."""
    quant = compressed.quantized
    assignment: dict[str, Tensor] = {}
    for cb in quant.codebooks:
        if cb.residual or cb.sub != cb.col1 - cb.col0:
            continue
        for name, rows, indices in quant.groups[cb.group].split(cb.indices):
            labels = assignment.setdefault(
                name, torch.zeros(int(source[name].shape[0]), dtype=torch.long)
            )
            labels[rows] = indices.cpu()
    out: dict[str, dict[str, list[Any]]] = {}
    gen = torch.Generator().manual_seed(seed)
    for name, labels in assignment.items():
        before = source[name].float().cpu()
        after = generated[name].float().cpu()
        idx = torch.randperm(int(before.shape[0]), generator=gen)[:PROJECTION_POINTS].sort().values
        p0, p1 = _pca2(before[idx], after[idx])
        out[name] = {
            "before": [[round(float(x), 4), round(float(y), 4)] for x, y in p0.tolist()],
            "after": [[round(float(x), 4), round(float(y), 4)] for x, y in p1.tolist()],
            "cluster": labels[idx].tolist(),
        }
    return out


@torch.no_grad()
def codebook_functions(compressed: CompressedKAN) -> dict[str, dict[str, list[Any]]]:
    """Per codebook layer, its K shared edge functions sampled on the layer's domain
    (where inputs have grids of their own, on the first input's grid)."""
    quant = compressed.quantized
    modules = dict(compressed.kan_layers())
    out: dict[str, dict[str, list[Any]]] = {}
    for cb in quant.codebooks:
        if cb.residual or cb.sub != cb.col1 - cb.col0:
            continue
        for name in dict.fromkeys(quant.groups[cb.group].layers):
            if name in out:
                continue
            layer = modules[name]
            cent = cb.centroids.detach().float().cpu()
            try:
                curves = layer.edge_functions(cent.to(layer.coef_param.dtype), CURVE_POINTS)
            except InputError:  # per-input grids: draw on the first input's
                alone = copy.deepcopy(layer).cpu()
                grid = alone.get_buffer("grid")
                grid.copy_(grid[:1].expand_as(grid))
                curves = alone.edge_functions(cent, CURVE_POINTS)
            lo, hi = layer.function_domain()
            x = torch.linspace(lo, hi, CURVE_POINTS)
            out[name] = {
                "x": [round(float(v), 5) for v in x],
                "curves": [[round(float(v), 5) for v in row] for row in curves.float().tolist()],
            }
    return out


__all__ = ["baseline_points", "baseline_settings", "codebook_functions", "projection"]
