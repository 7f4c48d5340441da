"""A byte budget instead of a K: choose how each layer is stored to lose the least.

In the manner of HAWQ / ModelOpt's auto_quantize: every compressible layer gets a few
options (a codebook of K vectors for K = 2, 4, ... up to its edges, uniform int8, or
dense), each with its bytes and its sensitivity, the validation loss increase when
only that layer is stored that way (the rest as the meta stage generated them), as the
distillation loss towards the original on the validation inputs and noisy copies of
them (`functional.probe_loss`: a teacher that memorised its training data scores
perfectly on a split carved from it, so its labels say little there). A
multiple-choice knapsack (dynamic programming over the bytes) then picks one option
per layer that minimises the summed loss increase within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from metacluster.compress import sizing
from metacluster.compress.numeric.codebook import build_groups, coefficient_names, uniform_quant
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.hooks import StageHooks
from metacluster.compress.stages.functional import TrainingSet, probe_loss
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel

if TYPE_CHECKING:
    from metacluster.compress.spec.effort import RunBudget
    from metacluster.compress.stages.meta import MetaResult

# The largest codebook the allocation considers for a layer.
MAX_BUDGET_K = 4096
# Discretisation of the knapsack's byte axis.
BINS = 4000


@dataclass(frozen=True)
class LayerChoice:
    """How one layer is stored."""

    mode: str  # "codebook" | "uniform" | "dense"
    k: int | None = None
    bits: int | None = None

    def describe(self) -> str:
        if self.mode == "codebook":
            return f"K={self.k}"
        if self.mode == "uniform":
            return f"int{self.bits}"
        return "dense"


Assignment = dict[str, LayerChoice]


@dataclass
class Option:
    choice: LayerChoice
    bytes: int
    delta: float  # validation loss increase


class AllocationRun(Protocol):
    """What the allocation reads of a prepared run (`pipeline.context.Context` is one)."""

    work: KANModel
    config: MetaClusterConfig
    budget: RunBudget | None
    device: torch.device
    fit: TrainingSet
    hooks: StageHooks

    @property
    def layers(self) -> list[str]: ...


def fixed_options(
    ctx: AllocationRun, name: str, layer: Any, vectors: Tensor, delta: Callable[[Tensor], float]
) -> list[Option]:
    """A layer's options besides codebooks: dense (no loss) and uniform int8, with the
    loss increase `delta(approximate vectors)` and their bytes."""
    edges, dim = int(vectors.shape[0]), int(vectors.shape[1])
    dense_bytes = sizing.value_bytes(ctx.config.other_dtype)
    out = [Option(LayerChoice("dense"), edges * dim * dense_bytes, 0.0)]
    uq = uniform_quant(name, layer, vectors.detach().cpu(), 8)
    codes = (uq.codes + 127).numpy()
    out.append(
        Option(
            LayerChoice("uniform", bits=8),
            sizing.coded_index_bytes(codes, 256, ctx.config.entropy) + 4 * int(uq.scales.numel()),
            delta(uq.vectors()),
        )
    )
    return out


def _options(
    ctx: AllocationRun,
    name: str,
    vectors: Tensor,
    loss_with: Callable[[str, Tensor], float],
    base: float,
    limit: int,
) -> list[Option]:
    modules = dict(ctx.work.kan_layers())
    layer = modules[name]
    edges, dim = int(vectors.shape[0]), int(vectors.shape[1])
    value = sizing.value_bytes(ctx.config.codebook_dtype)
    coding = ctx.config.entropy
    out = fixed_options(ctx, name, layer, vectors, lambda a: loss_with(name, a) - base)
    groups = build_groups(ctx.work, [name], "per_layer", ctx.config.grid_policy)
    sample = ctx.budget.effort.kmeans_sample if ctx.budget is not None else None
    best_delta = math.inf
    for k in k_steps(min(MAX_BUDGET_K, edges)):
        approx = vectors.detach().clone().cpu()
        size = 0
        for gi, g in enumerate(groups):
            rows = g.members[0][1]
            data = approx[rows].numpy()
            kk = min(k, len(data))
            res = kmeans(data, kk, seed=ctx.config.seed + gi, iters=20, restarts=1, sample=sample)
            approx[rows] = torch.from_numpy(res.centroids[res.assignment]).to(approx.dtype)
            # the index stream as the artifact will code it (packed or rANS, smaller)
            size += kk * dim * value + sizing.coded_index_bytes(res.assignment, kk, coding)
        if ctx.config.residual_k:
            size += sizing.codebook_bytes(
                edges, dim, ctx.config.residual_k, ctx.config.codebook_dtype
            )
        if size > limit and any(o.choice.mode == "codebook" for o in out):
            break  # larger codebooks only cost more: none of them fits
        # A larger codebook of the same vectors is never worse once fine-tuned: the
        # estimate's k-means noise must not make the allocation prefer a smaller one.
        best_delta = min(best_delta, loss_with(name, approx) - base)
        out.append(Option(LayerChoice("codebook", k), size, best_delta))
    return out


def k_steps(largest: int) -> list[int]:
    """Codebook sizes the allocation tries: 2, 3, 4, 6, 8, 12, ... up to `largest`
    (half-steps between powers of two: rANS-coded indices make them worth having)."""
    out: list[int] = []
    k = 2
    while k <= largest:
        out.append(k)
        if k + k // 2 <= largest:
            out.append(k + k // 2)
        k *= 2
    return out


def spend_leftover(
    options: dict[str, list[Option]], chosen: dict[str, Option], budget: int
) -> dict[str, Option]:
    """Grow codebooks into the bytes the knapsack left unused (its deltas are estimates
    and often tie): repeatedly move the layer with the best estimated gain per byte
    (ties: the most sensitive layer) to its next larger codebook, while it fits."""
    chosen = dict(chosen)
    while True:
        left = budget - sum(o.bytes for o in chosen.values())
        best: tuple[float, float, str, Option] | None = None
        for name, cur in chosen.items():
            if cur.choice.mode != "codebook":
                continue
            larger = [
                o
                for o in options[name]
                if o.choice.mode == "codebook"
                and o.bytes > cur.bytes
                and o.bytes - cur.bytes <= left
            ]
            if not larger:
                continue
            nxt = min(larger, key=lambda o: o.bytes)
            key = ((cur.delta - nxt.delta) / (nxt.bytes - cur.bytes), cur.delta, name, nxt)
            if best is None or key[:2] > best[:2]:
                best = key
        if best is None:
            return chosen
        chosen[best[2]] = best[3]


def solve(options: dict[str, list[Option]], budget: int) -> dict[str, Option] | None:
    """One option per layer with total bytes <= budget and the least summed delta
    (multiple-choice knapsack on a byte axis of `BINS` steps); None when even the
    smallest options do not fit."""
    if budget < sum(min(o.bytes for o in opts) for opts in options.values()):
        return None
    unit = max(1.0, budget / BINS)
    size = int(budget // unit) + 1
    inf = math.inf
    best = np.full(size, inf)
    best[0] = 0.0
    picks: list[np.ndarray] = []
    names = list(options)
    for name in names:
        new = np.full(size, inf)
        pick = np.full(size, -1, dtype=np.int64)
        for i, opt in enumerate(options[name]):
            cost = math.ceil(opt.bytes / unit)
            if cost >= size:
                continue
            shifted = np.full(size, inf)
            shifted[cost:] = best[: size - cost] + opt.delta
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = i
        best = new
        picks.append(pick)
    end = int(np.argmin(best))
    if not math.isfinite(best[end]):
        return None
    chosen: dict[str, Option] = {}
    for name, pick in zip(reversed(names), reversed(picks), strict=True):
        opt = options[name][int(pick[end])]
        chosen[name] = opt
        end -= math.ceil(opt.bytes / unit)
    return chosen


def allocate(ctx: AllocationRun, meta: MetaResult | None, budget: int) -> Assignment:
    """The storage of every compressible layer within `budget` artifact bytes."""
    names = ctx.layers
    modules = dict(ctx.work.kan_layers())
    if meta is not None:
        vectors = {n: meta.vectors[n].detach() for n in names}
    else:
        vectors = {n: modules[n].edge_view(n).coefficients.detach().clone() for n in names}
    coef_names = coefficient_names(ctx.work, names)

    def coefs_of(current: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            coef_names[n]: modules[n].unflatten_coefficients(v.to(ctx.device))
            for n, v in current.items()
        }

    temperature = ctx.config.temperature
    with torch.no_grad():
        base = probe_loss(ctx.work, ctx.fit, coefs_of(vectors), temperature)

        def loss_with(name: str, approx: Tensor) -> float:
            return probe_loss(ctx.work, ctx.fit, coefs_of({**vectors, name: approx}), temperature)

        payload = budget - sizing.fixed_bytes(ctx.work, names, ctx.config.other_dtype)
        options: dict[str, list[Option]] = {}
        for i, name in enumerate(names):
            ctx.hooks.check("allocate")
            options[name] = _options(ctx, name, vectors[name], loss_with, base, payload)
            ctx.hooks.report("allocate", i + 1, len(names), None)
    return choose(options, payload, budget, "codebooks")


def choose(options: dict[str, list[Option]], payload: int, budget: int, what: str) -> Assignment:
    """The knapsack's choice per layer within `payload` bytes, the leftover spent; a
    budget no choice meets is a ConfigError naming the smallest `what` and their size."""
    chosen = solve(options, payload)
    if chosen is None:
        smallest = sum(min(o.bytes for o in opts) for opts in options.values())
        raise ConfigError(
            f"the byte budget of {budget} bytes cannot be met: the smallest {what} need "
            f"about {smallest + budget - payload} bytes"
        )
    chosen = spend_leftover(options, chosen, payload)
    return {name: opt.choice for name, opt in chosen.items()}


__all__ = [
    "AllocationRun",
    "Assignment",
    "LayerChoice",
    "Option",
    "allocate",
    "choose",
    "fixed_options",
    "k_steps",
    "solve",
    "spend_leftover",
]
