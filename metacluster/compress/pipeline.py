"""The MetaCluster pipeline (and plain K-means, the same pipeline without stage 1):
meta-learner -> [soft clustering] -> K-means -> codebook fine-tuning, every stage
resumable from a checkpoint, and a K sweep that reuses one meta-learner.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from torch import Tensor

from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    build_groups,
    coefficient_names,
)
from metacluster.compress.config import MetaClusterConfig
from metacluster.compress.context import Context, make_report
from metacluster.compress.functional import evaluate_model
from metacluster.compress.meta import MetaResult, init_meta_learners
from metacluster.compress.methods import NoOptions, register_method
from metacluster.compress.plan import LayerPlan, StagePlan, codebook_bits
from metacluster.compress.report import CompressionReport, layer_details
from metacluster.compress.stages import (
    round_other_parameters,
    run_finetune_stage,
    run_kmeans_stage,
    run_meta_stage,
    run_soft_stage,
)


def _functional(model: Any, coefs: dict[str, Tensor]) -> dict[str, Tensor]:
    modules = dict(model.kan_layers())
    names = coefficient_names(model, list(coefs))
    return {names[n]: modules[n].unflatten_coefficients(c) for n, c in coefs.items()}


def _meta_groups(ctx: Context) -> list[EdgeGroup]:
    cfg = ctx.config
    if cfg.meta_scope == cfg.scope:
        return ctx.groups
    return build_groups(ctx.work, ctx.layers, cfg.meta_scope, cfg.grid_policy)


def _codebook_state(quant: QuantizedCoefficients) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i, cb in enumerate(quant.codebooks):
        out[f"cb{i}.centroids"] = cb.centroids.detach().cpu()
        out[f"cb{i}.indices"] = cb.indices.detach().cpu()
    return out


# -- the stages, each through the one resumable wrapper ------------------------------
def _meta_stage(ctx: Context) -> MetaResult:
    groups = _meta_groups(ctx)

    def compute() -> MetaResult:
        return run_meta_stage(
            ctx.work,
            ctx.data,
            ctx.layers,
            groups,
            ctx.config,
            teacher=ctx.teacher,
            device=ctx.device,
            hooks=ctx.hooks,
            cluster_groups=ctx.groups,
        )

    def save(meta: MetaResult) -> dict[str, Any]:
        return {**{f"gen.{n}": g for n, g in meta.vectors.items()}, **meta.learner_state()}

    def restore(state: dict[str, Any]) -> MetaResult:
        modules = dict(ctx.work.kan_layers())
        base = {
            n: modules[n].edge_view(n).coefficients.detach().clone().float() for n in ctx.layers
        }
        learners = init_meta_learners(groups, base, ctx.config)
        for i, ml in enumerate(learners):
            prefix = f"learner{i}."
            ml.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            ml.to(ctx.device)
        gen = {n: state[f"gen.{n}"].to(ctx.device) for n in ctx.layers}
        return MetaResult(gen, learners, groups, {n: t.to(ctx.device) for n, t in base.items()})

    return ctx.stages.run("meta", compute, save=save, restore=restore)


def _soft_stage(ctx: Context, meta: MetaResult, k: int) -> dict[str, Tensor]:
    """Clustering-aware training for this K (config.soft_epochs > 0)."""
    return ctx.stages.run(
        f"soft_k{k}",
        lambda: run_soft_stage(
            ctx.work,
            ctx.data,
            ctx.layers,
            meta,
            ctx.groups,
            k,
            ctx.config,
            teacher=ctx.teacher,
            device=ctx.device,
            hooks=ctx.hooks,
        ),
        save=lambda gen: {f"gen.{n}": g for n, g in gen.items()},
        restore=lambda state: {n: state[f"gen.{n}"].to(ctx.device) for n in ctx.layers},
        progress_name="soft",
    )


def _kmeans_stage(ctx: Context, gen: dict[str, Tensor], k: int) -> QuantizedCoefficients:
    def restore(state: dict[str, Any]) -> QuantizedCoefficients:
        cbs = [
            Codebook(i, state[f"cb{i}.centroids"], state[f"cb{i}.indices"], 0, g.coef_dim)
            for i, g in enumerate(ctx.groups)
        ]
        return QuantizedCoefficients(ctx.config.scope, list(ctx.layers), ctx.groups, cbs)

    return ctx.stages.run(
        f"kmeans_k{k}",
        lambda: run_kmeans_stage(
            gen,
            ctx.groups,
            k,
            ctx.config,
            device=ctx.device.type,
            hooks=ctx.hooks,
            scope=ctx.config.scope,
            layers=ctx.layers,
        ),
        save=_codebook_state,
        restore=restore,
        progress_name="kmeans",
        trains_model=False,
    )


def _finetune_stage(ctx: Context, quant: QuantizedCoefficients, k: int) -> QuantizedCoefficients:
    def compute() -> QuantizedCoefficients:
        out = run_finetune_stage(
            ctx.work,
            ctx.data,
            quant,
            ctx.config,
            teacher=ctx.teacher,
            device=ctx.device,
            hooks=ctx.hooks,
        )
        round_other_parameters(ctx.work, ctx.layers, ctx.config.other_dtype)
        return out

    def restore(state: dict[str, Any]) -> QuantizedCoefficients:
        for i, cb in enumerate(quant.codebooks):
            cb.centroids = state[f"cb{i}.centroids"]
            cb.indices = state[f"cb{i}.indices"]
        return quant

    return ctx.stages.run(
        f"finetune_k{k}", compute, save=_codebook_state, restore=restore, progress_name="finetune"
    )


# -- the sweep ---------------------------------------------------------------------------
def _recommend(
    metric: str, before: float, rows: list[dict[str, Any]], max_drop: float
) -> int | None:
    for row in sorted(rows, key=lambda r: r["k"]):
        ok = (
            before - row["after"] <= max_drop + 1e-12
            if metric == "accuracy"
            else row["after"] <= before * (1 + max_drop) + 1e-12
        )
        if ok:
            return int(row["k"])
    return None


def run_pipeline(ctx: Context, with_meta: bool) -> tuple[CompressedKAN, CompressionReport]:
    """The pipeline for every K of the config; returns the recommended K's result."""
    t_start = time.perf_counter()
    config = ctx.config
    t0 = time.perf_counter()
    meta: MetaResult | None = None
    metric_meta: float | None = None
    if with_meta:
        meta = _meta_stage(ctx)
        _, metric_meta = evaluate_model(
            ctx.work, ctx.data, ctx.device, _functional(ctx.work, meta.vectors)
        )
    t_meta = time.perf_counter() - t0
    meta_state = {k: v.detach().clone() for k, v in ctx.work.state_dict().items()}
    results: list[tuple[CompressedKAN, CompressionReport]] = []
    for k in config.ks:
        ctx.work.load_state_dict(meta_state)
        t0 = time.perf_counter()
        if meta is None:
            modules = dict(ctx.work.kan_layers())
            gen = {n: modules[n].edge_view(n).coefficients.detach().clone() for n in ctx.layers}
        elif config.soft_epochs > 0:
            gen = _soft_stage(ctx, meta, k)
        else:
            gen = meta.vectors
        t_soft = time.perf_counter() - t0
        t0 = time.perf_counter()
        quant = _kmeans_stage(ctx, gen, k)
        quant.method, quant.grouping = config.method, config.grid_policy
        t_km = time.perf_counter() - t0
        coefs = {n: c.to(ctx.device) for n, c in quant.layer_coefficients(ctx.work).items()}
        _, metric_km = evaluate_model(ctx.work, ctx.data, ctx.device, _functional(ctx.work, coefs))
        t0 = time.perf_counter()
        quant = _finetune_stage(ctx, quant, k)
        t_ft = time.perf_counter() - t0
        compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
        report = make_report(
            ctx,
            compressed,
            k,
            {"meta": t_meta, "soft": t_soft, "kmeans": t_km, "finetune": t_ft},
            metric_meta=metric_meta,
            metric_kmeans=metric_km,
        )
        results.append((compressed, report))
    rows = [
        {
            "k": r.k,
            "after": r.after,
            "metric_kmeans": r.metric_kmeans,
            "bytes_after": r.bytes_after,
            "ratio": r.ratio,
            "param_ratio": r.param_ratio,
            "stages": dict(r.stages),
        }
        for _, r in results
    ]
    recommended = _recommend(ctx.metric, ctx.before, rows, config.max_drop)
    if recommended is not None:
        chosen = next(i for i, (_, r) in enumerate(results) if r.k == recommended)
    else:  # nothing within max_drop: hand back the most accurate K
        sign = 1.0 if ctx.metric == "accuracy" else -1.0
        chosen = max(range(len(results)), key=lambda i: sign * results[i][1].after)
    compressed, report = results[chosen]
    report.sweep = rows if len(rows) > 1 else []
    report.recommended_k = recommended
    report.layers = layer_details(ctx.source, compressed, report.layer_bytes)
    report.stages["total"] = round(time.perf_counter() - t_start, 3)
    return compressed, report


# -- registration ------------------------------------------------------------------------
def _per_k_stages(config: MetaClusterConfig, ks: list[int], soft: bool) -> list[StagePlan]:
    out: list[StagePlan] = []
    for k in ks:
        if soft and config.soft_epochs > 0:
            out.append(StagePlan("soft", float(config.soft_epochs), k))
        out.append(StagePlan("kmeans", 1.0, k))
        out.append(StagePlan("finetune", max(0.5, float(config.finetune_epochs)), k))
    return out


def _metacluster_stages(
    config: MetaClusterConfig, _options: NoOptions, ks: list[int]
) -> list[StagePlan]:
    # Weights are epochs (one pass over the training set each); the regression is
    # full-batch on the edge vectors alone, about an epoch per 100 steps.
    out: list[StagePlan] = []
    if config.mode == "post_hoc" and config.regress_steps > 0:
        out.append(StagePlan("regress", max(0.5, config.regress_steps / 100)))
    out.append(StagePlan("meta", max(0.5, float(config.meta_epochs))))
    return out + _per_k_stages(config, ks, soft=True)


def _codebook_payload(layer: LayerPlan, k: int, config: MetaClusterConfig, _o: Any) -> int:
    return codebook_bits(layer, k, config)


@register_method(
    "metacluster",
    summary="meta-learner manifold, then K-means codebooks and fine-tuning (the paper's method)",
    stages=_metacluster_stages,
    payload_bits=_codebook_payload,
)
def run_metacluster(ctx: Context, _options: NoOptions) -> tuple[CompressedKAN, CompressionReport]:
    return run_pipeline(ctx, with_meta=True)


@register_method(
    "kmeans",
    summary="plain K-means over the trained edge vectors, then codebook fine-tuning",
    stages=lambda config, _o, ks: _per_k_stages(config, ks, soft=False),
    payload_bits=_codebook_payload,
)
def run_kmeans(ctx: Context, _options: NoOptions) -> tuple[CompressedKAN, CompressionReport]:
    return run_pipeline(ctx, with_meta=False)


__all__ = ["run_kmeans", "run_metacluster", "run_pipeline"]
