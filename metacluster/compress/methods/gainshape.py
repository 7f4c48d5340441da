"""Gain-shape vector quantization (the `gainshape` method), as SHARe-KAN (arXiv
2512.15742) compresses KAN edges post-training: every edge vector is its gain (a
scalar, from a small gain codebook) times a unit-norm shape from a shape codebook,
`v ~ gains[j] * shapes[i]`, both index streams coded like any codebook's.

An edge's magnitude no longer takes a shape centroid of its own, so K shapes plus G
gains describe K x G vectors for the bytes of one extra (rANS-coded) gain index per
edge. The stages: with a byte budget, a per-layer allocation of the shape K (sensitivity
on the probe set, the same knapsack as `allocation`), then gain-shape K-means, then the
usual codebook fine-tuning (shapes and gains train, indices frozen). There is no
clustering-aware stage: it would collapse the vectors onto K points before the gains
could describe them. docs/compression.md has what it measured against the default.

The artifact stores the gain codebook as a codebook with `"m": "gain"` (format
version 3, docs/format.md); files without one stay version 2.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from metacluster.compress import sizing
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    QuantizedCoefficients,
    build_groups,
    coefficient_names,
    uniform_quant,
)
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.compress.numeric.packing import encode_indices
from metacluster.compress.pipeline.context import make_report, schedule_summary
from metacluster.compress.pipeline.plan import LayerPlan, StagePlan
from metacluster.compress.pipeline.registry import MethodOptions, register_method
from metacluster.compress.pipeline.report import CompressionReport, layer_details
from metacluster.compress.stages.allocation import (
    Assignment,
    LayerChoice,
    Option,
    choose,
    fixed_options,
    k_steps,
)
from metacluster.compress.stages.functional import evaluate_model, probe_loss
from metacluster.compress.stages.runners import (
    SEED_KMEANS,
    round_other_parameters,
    run_finetune_stage,
)
from metacluster.errors import ConfigError

if TYPE_CHECKING:
    from metacluster.compress.pipeline.context import Context
    from metacluster.compress.spec.config import MetaClusterConfig

MAX_SHAPE_K = 4096


@dataclass(frozen=True)
class GainShapeOptions(MethodOptions):
    """`gain_k`: entries of each layer's gain codebook (scalars)."""

    gain_k: int = 16

    def validate(self) -> None:
        if not 2 <= self.gain_k <= 65536:
            raise ConfigError("method option gain_k must be between 2 and 65536")


@dataclass
class GainShape:
    """One group's gain-shape code: shapes (K, d), gains (G,), per edge a shape and a gain."""

    shapes: NDArray[np.float32]
    gains: NDArray[np.float32]
    shape_idx: NDArray[np.int64]
    gain_idx: NDArray[np.int64]

    def vectors(self) -> NDArray[np.float32]:
        out: NDArray[np.float32] = self.gains[self.gain_idx][:, None] * self.shapes[self.shape_idx]
        return out


def _best_shapes(
    v: NDArray[np.float32], shapes: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per vector the unit shape of largest |<v, s>| and that projection (signed)."""
    import faiss

    k = shapes.shape[0]
    index = faiss.IndexFlatIP(shapes.shape[1])
    index.add(np.ascontiguousarray(np.concatenate([shapes, -shapes]), dtype=np.float32))
    proj, idx = index.search(np.ascontiguousarray(v, dtype=np.float32), 1)
    sign = np.where(idx[:, 0] < k, 1.0, -1.0).astype(np.float32)
    return (idx[:, 0] % k).astype(np.int64), (proj[:, 0] * sign).astype(np.float32)


def gain_shape(
    v: NDArray[np.floating],
    k: int,
    gain_k: int,
    *,
    seed: int,
    iters: int = 20,
    restarts: int = 1,
    sample: int | None = None,
) -> GainShape:
    """Gain-shape K-means of the rows of `v`: K-means of the unit directions (up to
    sign) gives K shapes (normalised), each row takes the shape of largest |projection|, a scalar
    K-means of the signed projections gives the G gains, and one least-squares pass
    refits each shape to the rows (with their quantized gains) that use it."""
    x = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
    n = x.shape[0]
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.maximum(norm, 1e-12)
    # a shape and its negation are one shape (the gain carries the sign): directions are
    # turned to the side of the data's principal axis before they are clustered
    axis = np.linalg.eigh(unit.T.astype(np.float64) @ unit)[1][:, -1]
    unit = unit * np.where(unit @ axis < 0, -1.0, 1.0).astype(np.float32)[:, None]
    res = kmeans(unit, min(k, n), seed=seed, iters=iters, restarts=restarts, sample=sample)
    shapes = res.centroids / np.maximum(np.linalg.norm(res.centroids, axis=1, keepdims=True), 1e-12)
    shape_idx, proj = _best_shapes(x, shapes)
    # each shape faces the side most of its rows project on, so one-signed gains suffice
    # where the data allow
    flip = np.bincount(shape_idx, weights=proj, minlength=shapes.shape[0]) < 0
    shapes[flip] *= -1
    proj = np.where(flip[shape_idx], -proj, proj).astype(np.float32)
    g = kmeans(proj[:, None], min(gain_k, n), seed=seed + 1, iters=iters, restarts=restarts)
    gains = g.centroids[:, 0].astype(np.float32)
    gain_idx = g.assignment.astype(np.int64)
    gamma = gains[gain_idx].astype(np.float64)
    # least squares shape refit: s_k = sum g_e v_e / sum g_e^2 over the rows using k
    num = np.zeros((shapes.shape[0], x.shape[1]))
    np.add.at(num, shape_idx, gamma[:, None] * x)
    den = np.bincount(shape_idx, weights=gamma**2, minlength=shapes.shape[0])
    used = den > 1e-12
    shapes = shapes.astype(np.float64)
    shapes[used] = num[used] / den[used, None]
    return GainShape(shapes.astype(np.float32), gains, shape_idx, gain_idx)


def gain_shape_bytes(code: GainShape, value: int, coding: str) -> int:
    """The bytes the artifact spends on one group's gain-shape code."""
    k, d = (int(v) for v in code.shapes.shape)
    g = int(code.gains.shape[0])
    return int(
        (k * d + g) * value
        + len(encode_indices(code.shape_idx, k, coding)[1])
        + len(encode_indices(code.gain_idx, g, coding)[1])
    )


# -- the allocation of shape K per layer ---------------------------------------------
def allocate_gain_shape(
    ctx: Context, vectors: dict[str, Tensor], budget: int, gain_k: int
) -> Assignment:
    """Per layer dense, int8 or a gain-shape code with K shapes, within `budget` bytes:
    the same sensitivity probe and knapsack as `allocation.allocate`."""
    names = ctx.layers
    modules = dict(ctx.work.kan_layers())
    coef_names = coefficient_names(ctx.work, names)
    sample = ctx.budget.effort.kmeans_sample if ctx.budget is not None else None
    value, coding = sizing.value_bytes(ctx.config.codebook_dtype), ctx.config.entropy

    def coefs_of(current: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            coef_names[n]: modules[n].unflatten_coefficients(v.to(ctx.device))
            for n, v in current.items()
        }

    temperature = ctx.config.temperature
    payload = budget - sizing.fixed_bytes(ctx.work, names, ctx.config.other_dtype)
    options: dict[str, list[Option]] = {}
    with torch.no_grad():
        base = probe_loss(ctx.work, ctx.fit, coefs_of(vectors), temperature)

        def delta(name: str, approx: Tensor) -> float:
            return (
                probe_loss(ctx.work, ctx.fit, coefs_of({**vectors, name: approx}), temperature)
                - base
            )

        for li, name in enumerate(names):
            ctx.hooks.check("allocate")
            vecs = vectors[name]
            edges = int(vecs.shape[0])
            opts = fixed_options(ctx, name, modules[name], vecs, functools.partial(delta, name))
            groups = build_groups(ctx.work, [name], "per_layer", ctx.config.grid_policy)
            best = math.inf
            for k in k_steps(min(MAX_SHAPE_K, edges)):
                approx = vecs.detach().clone().cpu()
                size = 0
                for gi, g in enumerate(groups):
                    rows = g.members[0][1]
                    code = gain_shape(
                        approx[rows].numpy(), k, gain_k, seed=ctx.config.seed + gi, sample=sample
                    )
                    approx[rows] = torch.from_numpy(code.vectors()).to(approx.dtype)
                    size += gain_shape_bytes(code, value, coding)
                if size > payload and any(o.choice.mode == "codebook" for o in opts):
                    break
                best = min(best, delta(name, approx))
                opts.append(Option(LayerChoice("codebook", k), size, best))
            options[name] = opts
            ctx.hooks.report("allocate", li + 1, len(names), None)
    return choose(options, payload, budget, "gain-shape codes")


# -- the stages ------------------------------------------------------------------------
def quantize_gain_shape(
    ctx: Context, vectors: dict[str, Tensor], assignment: Assignment, gain_k: int
) -> QuantizedCoefficients:
    """The gain-shape K-means stage over every layer the assignment codes (int8 layers
    become uniform codes, dense layers stay)."""
    config = ctx.config
    layers = [n for n in ctx.layers if assignment[n].mode != "dense"]
    groups = build_groups(ctx.work, layers, config.scope, config.grid_policy)
    runs = ctx.budget.effort.kmeans_runs if ctx.budget is not None else (config.kmeans_iters, 3)
    sample = ctx.budget.effort.kmeans_stage_sample if ctx.budget is not None else None
    codebooks: list[Codebook] = []
    cpu = {n: v.detach().cpu() for n, v in vectors.items()}
    for gi, g in enumerate(groups):
        ctx.hooks.check("kmeans")
        if {assignment[n].mode for n in g.layers} != {"codebook"}:
            continue
        k = max(int(assignment[n].k or 2) for n in g.layers)
        code = gain_shape(
            g.gather(cpu).numpy(),
            k,
            gain_k,
            seed=config.seed * 1000 + SEED_KMEANS + gi,
            iters=min(config.kmeans_iters, runs[0]),
            restarts=min(config.kmeans_restarts, runs[1]),
            sample=sample,
        )
        d = g.coef_dim
        codebooks.append(
            Codebook(gi, torch.from_numpy(code.shapes), torch.from_numpy(code.shape_idx), 0, d)
        )
        codebooks.append(
            Codebook(
                gi,
                torch.from_numpy(code.gains[:, None].copy()),
                torch.from_numpy(code.gain_idx),
                0,
                d,
                gain=True,
            )
        )
        ctx.hooks.report("kmeans", gi + 1, len(groups), None)
    modules = dict(ctx.work.kan_layers())
    quant = QuantizedCoefficients(config.scope, layers, groups, codebooks)
    quant.uniform = [
        uniform_quant(n, modules[n], cpu[n], int(assignment[n].bits or 8))
        for n in layers
        if assignment[n].mode == "uniform"
    ]
    quant.method, quant.grouping = config.method, config.grid_policy
    return quant


def _functional(ctx: Context, quant: QuantizedCoefficients) -> dict[str, Tensor]:
    modules = dict(ctx.work.kan_layers())
    names = coefficient_names(ctx.work, quant.layers)
    coefs = quant.layer_coefficients(ctx.work)
    return {names[n]: modules[n].unflatten_coefficients(c.to(ctx.device)) for n, c in coefs.items()}


def _run_assignment(
    ctx: Context, vectors: dict[str, Tensor], assignment: Assignment, gain_k: int, k: int
) -> tuple[CompressedKAN, CompressionReport]:
    t0 = time.perf_counter()
    quant = quantize_gain_shape(ctx, vectors, assignment, gain_k)
    t_km = time.perf_counter() - t0
    _, metric_km = evaluate_model(ctx.work, ctx.data, ctx.device, _functional(ctx, quant))
    t0 = time.perf_counter()
    quant = run_finetune_stage(
        ctx.work, ctx.fit, quant, ctx.config, device=ctx.device, hooks=ctx.hooks, budget=ctx.budget
    )
    round_other_parameters(ctx.work, quant.layers, ctx.config.other_dtype)
    t_ft = time.perf_counter() - t0
    compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
    report = make_report(
        ctx, compressed, k, {"kmeans": t_km, "finetune": t_ft}, metric_kmeans=metric_km
    )
    return compressed, report


BUDGET_ATTEMPTS = 3


def run_gain_shape(
    ctx: Context, options: GainShapeOptions
) -> tuple[CompressedKAN, CompressionReport]:
    """The `gainshape` method: [allocation] -> gain-shape K-means -> fine-tuning."""
    t_start = time.perf_counter()
    config = ctx.config
    modules = dict(ctx.work.kan_layers())
    vectors = {n: modules[n].edge_view(n).coefficients.detach().clone() for n in ctx.layers}
    start = {k: v.detach().clone() for k, v in ctx.work.state_dict().items()}
    if config.budgeted:
        budget = (
            int(config.max_bytes)
            if config.max_bytes is not None
            else int(ctx.bytes_before / float(config.target_ratio or 1.0))
        )
        aim, t_alloc = budget, 0.0
        for attempt in range(BUDGET_ATTEMPTS):
            ctx.work.load_state_dict(start)
            t0 = time.perf_counter()
            assignment = allocate_gain_shape(ctx, vectors, aim, options.gain_k)
            t_alloc += time.perf_counter() - t0
            k = max((int(c.k or 0) for c in assignment.values()), default=0)
            compressed, report = _run_assignment(ctx, vectors, assignment, options.gain_k, k)
            report.budget_bytes = budget
            if report.bytes_after <= budget:
                break
            if attempt == BUDGET_ATTEMPTS - 1:
                raise ConfigError(
                    f"the byte budget of {budget} bytes was not met after {BUDGET_ATTEMPTS} "
                    f"allocations (the last came to {report.bytes_after} bytes); "
                    "allow a few more bytes"
                )
            aim = int(aim * budget / report.bytes_after) - max(16, budget // 100) * (attempt + 1)
        report.stages["allocate"] = round(t_alloc, 3)
        report.budget_attempts = attempt + 1
    else:
        if len(config.ks) != 1:
            raise ConfigError("the gainshape method takes one K (or a byte budget), not a sweep")
        k = config.ks[0]
        assignment = {n: LayerChoice("codebook", k) for n in ctx.layers}
        compressed, report = _run_assignment(ctx, vectors, assignment, options.gain_k, k)
    report.recommended_k = report.k
    report.layers = layer_details(ctx.source, compressed, report.layer_bytes)
    run_s = time.perf_counter() - t_start
    report.stages["total"] = round(run_s, 3)
    report.schedule = schedule_summary(ctx, report, run_s)
    return compressed, report


def _stages(config: MetaClusterConfig, _options: Any, ks: list[int]) -> list[StagePlan]:
    out = [StagePlan("allocate", 1.0)] if config.budgeted else []
    for k in ks or [0]:
        out.append(StagePlan("kmeans", 1.0, k or None))
        out.append(StagePlan("finetune", max(0.5, float(config.finetune_epochs)), k or None))
    return out


def _payload_bits(layer: LayerPlan, k: int, config: MetaClusterConfig, options: Any) -> int:
    gain_k = int(getattr(options, "gain_k", GainShapeOptions.gain_k))
    return sizing.gain_shape_bits(layer.edges, layer.coef_dim, k, gain_k, config.codebook_dtype)


register_method(
    "gainshape",
    summary=(
        "gain-shape vector quantization (SHARe-KAN): each edge a quantized gain times a "
        "unit shape from a codebook, then fine-tuning; no clustering-aware stage"
    ),
    stages=_stages,
    payload_bits=_payload_bits,
    options=GainShapeOptions,
)(run_gain_shape)


__all__ = [
    "GainShape",
    "GainShapeOptions",
    "allocate_gain_shape",
    "gain_shape",
    "gain_shape_bytes",
    "quantize_gain_shape",
    "run_gain_shape",
]
