"""`compress`: meta-learner -> K-means -> codebook fine-tuning, with resumable stages,
a K sweep that reuses one meta-learner, and the report the CLI and service print.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metacluster.compress.checkpoint import StageCheckpoint
from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    build_groups,
    coefficient_names,
    select_layers,
)
from metacluster.compress.config import MetaClusterConfig
from metacluster.compress.report import (
    CompressionReport,
    layer_details,
    library_versions,
    param_ratio,
    source_bytes,
)
from metacluster.compress.stages import (
    MetaResult,
    Progress,
    ShouldStop,
    StageHooks,
    evaluate_model,
    init_meta_learners,
    predict,
    round_other_parameters,
    run_finetune_stage,
    run_kmeans_stage,
    run_meta_stage,
    run_soft_stage,
)
from metacluster.data.dataset import Dataset
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel
from metacluster.training import check_compatible


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available; never touches CUDA at import time."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@dataclass
class Context:
    source: KANModel  # fp32 CPU copy of the user's model, never trained
    work: KANModel  # trained in place by the stages
    data: Dataset
    config: MetaClusterConfig
    layers: list[str]
    groups: list[EdgeGroup]
    device: torch.device
    hooks: StageHooks
    checkpoint: StageCheckpoint | None
    fingerprint: str
    teacher: Tensor | None
    metric: str
    before: float


def _fingerprint(model: KANModel, config: MetaClusterConfig, method: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": config.to_dict(), "method": method}, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load(ctx: Context, stage: str) -> dict[str, Any] | None:
    if ctx.checkpoint is None:
        return None
    state = ctx.checkpoint.load(stage)
    if state is None or state.get("fingerprint") != ctx.fingerprint:
        return None  # a checkpoint of another model or config: recompute
    return state


def _save(ctx: Context, stage: str, state: dict[str, Any]) -> None:
    if ctx.checkpoint is not None:
        ctx.checkpoint.save(stage, {"fingerprint": ctx.fingerprint, **state})


def _state_tensors(model: KANModel) -> dict[str, Tensor]:
    return {f"state.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _restore_state(model: KANModel, state: dict[str, Any]) -> None:
    sd = {k[len("state.") :]: v for k, v in state.items() if k.startswith("state.")}
    model.load_state_dict(sd, strict=True)


def _functional(model: KANModel, coefs: dict[str, Tensor]) -> dict[str, Tensor]:
    modules = dict(model.kan_layers())
    names = coefficient_names(model, list(coefs))
    return {names[n]: modules[n].unflatten_coefficients(c) for n, c in coefs.items()}


def _meta_groups(ctx: Context) -> list[EdgeGroup]:
    cfg = ctx.config
    if cfg.meta_scope == cfg.scope:
        return ctx.groups
    return build_groups(ctx.work, ctx.layers, cfg.meta_scope)


def _meta_stage(ctx: Context, method: str) -> tuple[MetaResult | None, float | None]:
    """Stage 1 (restored from its checkpoint when present); None for plain K-means."""
    if method != "metacluster":
        return None, None
    state = _load(ctx, "meta")
    if state is not None:
        _restore_state(ctx.work, state)
        modules = dict(ctx.work.kan_layers())
        base = {
            n: modules[n].edge_view(n).coefficients.detach().clone().float() for n in ctx.layers
        }
        groups = _meta_groups(ctx)
        learners = init_meta_learners(groups, base, ctx.config)
        for i, ml in enumerate(learners):
            prefix = f"learner{i}."
            ml.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            ml.to(ctx.device)
        gen = {n: state[f"gen.{n}"].to(ctx.device) for n in ctx.layers}
        meta = MetaResult(gen, learners, groups, {n: t.to(ctx.device) for n, t in base.items()})
        ctx.hooks.report("meta", 1, 1, None)
    else:
        meta = run_meta_stage(
            ctx.work,
            ctx.data,
            ctx.layers,
            _meta_groups(ctx),
            ctx.config,
            teacher=ctx.teacher,
            device=ctx.device,
            hooks=ctx.hooks,
            cluster_groups=ctx.groups,
        )
        _save(
            ctx,
            "meta",
            {
                **{f"gen.{n}": g for n, g in meta.vectors.items()},
                **meta.learner_state(),
                **_state_tensors(ctx.work),
            },
        )
    _, value = evaluate_model(ctx.work, ctx.data, ctx.device, _functional(ctx.work, meta.vectors))
    return meta, value


def _source_vectors(ctx: Context) -> dict[str, Tensor]:
    modules = dict(ctx.work.kan_layers())
    return {n: modules[n].edge_view(n).coefficients.detach().clone() for n in ctx.layers}


def _soft_stage(ctx: Context, meta: MetaResult, k: int) -> dict[str, Tensor]:
    """Clustering-aware training for this K (config.soft_epochs > 0)."""
    stage = f"soft_k{k}"
    state = _load(ctx, stage)
    if state is not None:
        _restore_state(ctx.work, state)
        ctx.hooks.report("soft", 1, 1, None)
        return {n: state[f"gen.{n}"].to(ctx.device) for n in ctx.layers}
    gen = run_soft_stage(
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
    )
    _save(ctx, stage, {**{f"gen.{n}": g for n, g in gen.items()}, **_state_tensors(ctx.work)})
    return gen


def _kmeans_stage(ctx: Context, gen: dict[str, Tensor], k: int) -> QuantizedCoefficients:
    stage = f"kmeans_k{k}"
    state = _load(ctx, stage)
    if state is not None:
        cbs = [
            Codebook(i, state[f"cb{i}.centroids"], state[f"cb{i}.indices"], 0, g.coef_dim)
            for i, g in enumerate(ctx.groups)
        ]
        ctx.hooks.report("kmeans", 1, 1, None)
        return QuantizedCoefficients(ctx.config.scope, list(ctx.layers), ctx.groups, cbs)
    quant = run_kmeans_stage(
        gen,
        ctx.groups,
        k,
        ctx.config,
        device=ctx.device.type,
        hooks=ctx.hooks,
        scope=ctx.config.scope,
        layers=ctx.layers,
    )
    _save(ctx, stage, _codebook_state(quant))
    return quant


def _codebook_state(quant: QuantizedCoefficients) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i, cb in enumerate(quant.codebooks):
        out[f"cb{i}.centroids"] = cb.centroids.detach().cpu()
        out[f"cb{i}.indices"] = cb.indices.detach().cpu()
    return out


def _finetune_stage(ctx: Context, quant: QuantizedCoefficients, k: int) -> QuantizedCoefficients:
    stage = f"finetune_k{k}"
    state = _load(ctx, stage)
    if state is not None:
        for i, cb in enumerate(quant.codebooks):
            cb.centroids = state[f"cb{i}.centroids"]
            cb.indices = state[f"cb{i}.indices"]
        _restore_state(ctx.work, state)
        ctx.hooks.report("finetune", 1, 1, None)
        return quant
    quant = run_finetune_stage(
        ctx.work,
        ctx.data,
        quant,
        ctx.config,
        teacher=ctx.teacher,
        device=ctx.device,
        hooks=ctx.hooks,
    )
    round_other_parameters(ctx.work, ctx.layers, ctx.config.other_dtype)
    _save(ctx, stage, {**_codebook_state(quant), **_state_tensors(ctx.work)})
    return quant


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


def prepare(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    hooks: StageHooks,
    checkpoint: StageCheckpoint | None,
    method: str,
) -> Context:
    if not isinstance(model, KANModel):
        raise ConfigError("compress() needs a metacluster KANModel")
    if not isinstance(config, MetaClusterConfig):
        raise ConfigError("compress() needs a MetaClusterConfig")
    config.validate()
    device = resolve_device(config.device)
    source = copy.deepcopy(model).float().cpu().eval()
    work = copy.deepcopy(source).to(device)
    check_compatible(work, data)
    layers = select_layers(work, config.include, config.exclude, config.min_edges)
    modules = dict(work.kan_layers())
    total = sum(modules[n].n_edges for n in layers)
    for k in config.ks:
        if k > total:
            raise ConfigError(f"k={k} exceeds the number of edges to compress ({total})")
    groups = build_groups(work, layers, config.scope)
    metric, before = evaluate_model(work, data, device)
    teacher = None
    if config.distill > 0 and config.mode == "post_hoc":  # from_scratch has no teacher
        teacher = predict(work, data.x_train.to(device)).detach()
    return Context(
        source,
        work,
        data,
        config,
        layers,
        groups,
        device,
        hooks,
        checkpoint,
        _fingerprint(source, config, method),
        teacher,
        metric,
        before,
    )


def finish_report(
    ctx: Context,
    compressed: CompressedKAN,
    k: int,
    stages: dict[str, float],
    bytes_before: int,
    how: str,
    method: str,
    metric_meta: float | None,
    metric_km: float | None,
) -> CompressionReport:
    """Evaluate the compressed model and measure its artifact (same accounting for all methods)."""
    from metacluster.artifact import artifact_bytes

    config = ctx.config
    _, after = evaluate_model(compressed, ctx.data, torch.device("cpu"))
    report = CompressionReport(
        metric=ctx.metric,
        before=ctx.before,
        after=after,
        k=k,
        bytes_before=bytes_before,
        bytes_after=0,
        ratio=0.0,
        param_ratio=param_ratio(ctx.source, compressed, config.codebook_dtype, config.other_dtype),
        stages={name: round(t, 3) for name, t in stages.items()},
        layers=[],
        seed=config.seed,
        config=config.to_dict(),
        method=method,
        mode=config.mode,
        device=str(ctx.device),
        bytes_before_source=how,
        metric_meta=metric_meta,
        metric_kmeans=metric_km,
        versions=library_versions(),
    )
    t0 = time.perf_counter()
    report.bytes_after = len(artifact_bytes(compressed, report))
    report.stages["artifact"] = round(time.perf_counter() - t0, 3)
    report.ratio = bytes_before / report.bytes_after
    return report


def _run(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    hooks: StageHooks,
    checkpoint: StageCheckpoint | None,
    method: str,
) -> tuple[CompressedKAN, CompressionReport]:
    t_start = time.perf_counter()
    ctx = prepare(model, config, data, hooks, checkpoint, method)
    t0 = time.perf_counter()
    meta, metric_meta = _meta_stage(ctx, method)
    t_meta = time.perf_counter() - t0
    meta_state = {k: v.detach().clone() for k, v in ctx.work.state_dict().items()}
    bytes_before, how = source_bytes(ctx.source)
    results: list[tuple[CompressedKAN, CompressionReport]] = []
    for k in config.ks:
        ctx.work.load_state_dict(meta_state)
        t0 = time.perf_counter()
        if meta is None:
            gen = _source_vectors(ctx)
        elif ctx.config.soft_epochs > 0:
            gen = _soft_stage(ctx, meta, k)
        else:
            gen = meta.vectors
        t_soft = time.perf_counter() - t0
        t0 = time.perf_counter()
        quant = _kmeans_stage(ctx, gen, k)
        quant.method = method
        t_km = time.perf_counter() - t0
        _, metric_km = evaluate_model(
            ctx.work,
            data,
            ctx.device,
            _functional(
                ctx.work,
                {n: c.to(ctx.device) for n, c in quant.layer_coefficients(ctx.work).items()},
            ),
        )
        t0 = time.perf_counter()
        quant = _finetune_stage(ctx, quant, k)
        t_ft = time.perf_counter() - t0
        compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
        report = finish_report(
            ctx,
            compressed,
            k,
            {"meta": t_meta, "soft": t_soft, "kmeans": t_km, "finetune": t_ft},
            bytes_before,
            how,
            method,
            metric_meta,
            metric_km,
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
    report.layers = layer_details(ctx.source, compressed, config.codebook_dtype, config.entropy)
    report.stages["total"] = round(time.perf_counter() - t_start, 3)
    return compressed, report


def compress(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    checkpoint: StageCheckpoint | None = None,
) -> tuple[CompressedKAN, CompressionReport]:
    """Compress `model` with MetaCluster; returns the compressed model and its report.

    progress(stage, step, total, loss) is called as stages advance; should_stop() is
    polled between steps and raises CancelledError; with a checkpoint, finished
    stages are saved and a repeated call resumes from them with the same result.
    With a list of K the meta-learner runs once and the smallest K within
    `config.max_drop` of the original metric is returned (`report.sweep` has all).
    """
    return _run(model, config, data, StageHooks(progress, should_stop), checkpoint, "metacluster")


def compress_kmeans(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    checkpoint: StageCheckpoint | None = None,
) -> tuple[CompressedKAN, CompressionReport]:
    """Plain K-means baseline: the same pipeline without the meta-learner stage."""
    return _run(model, config, data, StageHooks(progress, should_stop), checkpoint, "kmeans")
