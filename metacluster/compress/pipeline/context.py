"""A prepared compression run (`Context`) and the report every method ends with.

`prepare` checks the inputs, plans the run with `plan` (the same rules as the
service's validation), copies the model, measures the original metric and the
teacher outputs; `make_report` evaluates a result and measures its bytes through the
run's `Sizer`: by default `container.ArtifactSizer`, the real sizes (the source as an
fp32 checkpoint in its library's layout, the artifact as built in memory), so the
library and the CLI report the same numbers; `EstimateSizer` estimates from the tensors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from metacluster.compress.container import ArtifactSizer
from metacluster.compress.numeric.codebook import CompressedKAN, EdgeGroup, build_groups
from metacluster.compress.pipeline.checkpoint import ResumableStages, StageCheckpoint
from metacluster.compress.pipeline.plan import Plan, plan
from metacluster.compress.pipeline.report import CompressionReport, library_versions
from metacluster.compress.sizing import Sizer, param_ratio, ratio
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.effort import (
    PRESETS,
    TRAINING_STAGES,
    Clock,
    RunBudget,
    work_per_sample,
)
from metacluster.compress.spec.hooks import StageHooks
from metacluster.compress.stages.functional import (
    TrainingSet,
    evaluate_model,
    make_training_set,
    validation_metric,
)
from metacluster.data.dataset import Dataset
from metacluster.device import resolve_device
from metacluster.errors import ConfigError
from metacluster.kan.model import KANModel
from metacluster.kan.summary import describe_model
from metacluster.training import check_compatible


@dataclass
class Context:
    source: KANModel  # fp32 CPU copy of the user's model, never trained
    work: KANModel  # trained in place by the stages
    data: Dataset
    config: MetaClusterConfig
    plan: Plan
    groups: list[EdgeGroup]
    device: torch.device
    hooks: StageHooks
    stages: ResumableStages
    fit: TrainingSet  # training split, validation split, teacher outputs, augmented inputs
    metric: str
    before: float  # test metric of the original
    val_before: float  # validation metric of the original
    sizer: Sizer
    bytes_before: int
    bytes_before_source: str
    budget: RunBudget | None = None  # effort, time budget and the stages' step log

    @property
    def layers(self) -> list[str]:
        return self.plan.layer_names


def fingerprint(model: KANModel, config: MetaClusterConfig) -> str:
    """Identity of a run's inputs: a stage checkpoint is reused only under the same one."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": config.to_dict()}, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def prepare(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    hooks: StageHooks,
    checkpoint: StageCheckpoint | None,
    sizer: Sizer | None = None,
) -> Context:
    if not isinstance(model, KANModel):
        raise ConfigError("compress() needs a metacluster KANModel")
    if not isinstance(config, MetaClusterConfig):
        raise ConfigError("compress() needs a MetaClusterConfig")
    # A MetaClusterConfig is validated when built and frozen: nothing to check again.
    clock = Clock(config.time_budget_s)
    device = resolve_device(config.device)
    source = copy.deepcopy(model).float().cpu().eval()
    work = copy.deepcopy(source).to(device)
    check_compatible(work, data)
    meta = data.meta()
    # the data's sample shape lets the plan count a conv layer's output positions
    the_plan = plan(describe_model(work, meta.input_shape), meta, config)
    the_plan.raise_for_problems()
    groups = build_groups(work, the_plan.layer_names, config.scope, config.grid_policy)
    metric, before = evaluate_model(work, data, device)
    # from_scratch has no teacher: the meta-learner starts from an untrained model
    teacher = work if config.distill > 0 and config.mode == "post_hoc" else None
    effort = PRESETS[config.effort]
    fit = make_training_set(
        data,
        config,
        device,
        teacher,
        max_fit=effort.fit_samples,
        max_val=effort.val_samples,
        max_probe=effort.probe_samples,
    )
    budget = RunBudget(
        effort,
        work_per_sample(the_plan.layers),
        clock,
        ahead=[(s.name, s.weight) for s in the_plan.stages if s.name in TRAINING_STAGES],
    )
    sizer = sizer or ArtifactSizer()
    bytes_before, how = sizer.source_bytes(source)
    return Context(
        source=source,
        work=work,
        data=data,
        config=config,
        plan=the_plan,
        groups=groups,
        device=device,
        hooks=hooks,
        stages=ResumableStages(checkpoint, fingerprint(source, config), work, hooks.report),
        fit=fit,
        metric=metric,
        before=before,
        val_before=validation_metric(work, fit),
        sizer=sizer,
        bytes_before=bytes_before,
        bytes_before_source=how,
        budget=budget,
    )


def make_report(
    ctx: Context,
    compressed: CompressedKAN,
    k: int,
    stages: dict[str, float],
    *,
    metric_meta: float | None = None,
    metric_kmeans: float | None = None,
) -> CompressionReport:
    """Evaluate a compressed model and measure it (the same accounting for all methods)."""
    config = ctx.config
    _, after = evaluate_model(compressed, ctx.data, torch.device("cpu"))
    val_after = validation_metric(compressed.to(ctx.device), ctx.fit)
    compressed.cpu()
    report = CompressionReport(
        metric=ctx.metric,
        before=ctx.before,
        after=after,
        k=k,
        bytes_before=ctx.bytes_before,
        bytes_after=0,
        ratio=0.0,
        param_ratio=param_ratio(ctx.source, compressed, config.codebook_dtype, config.other_dtype),
        stages={name: round(t, 3) for name, t in stages.items()},
        layers=[],
        seed=config.seed,
        config=config.to_dict(),
        method=config.method,
        mode=config.mode,
        device=str(ctx.device),
        bytes_before_source=ctx.bytes_before_source,
        metric_meta=metric_meta,
        metric_kmeans=metric_kmeans,
        versions=library_versions(),
        val_before=ctx.val_before,
        val_after=val_after,
    )
    t0 = time.perf_counter()
    size = ctx.sizer.artifact_size(compressed, report)
    report.bytes_after = size.total
    report.bytes_breakdown = dict(size.by_kind)
    report.layer_bytes = size.by_layer
    report.stages["artifact"] = round(time.perf_counter() - t0, 3)
    report.ratio = ratio(ctx.bytes_before, report.bytes_after)
    return report


def schedule_summary(ctx: Context, report: CompressionReport, run_s: float) -> dict[str, Any]:
    """What the run's budget did: effort, time budget, per training stage the steps run of
    those planned (and why a stage ended early), and whether the baselines ran and what
    they cost (`run_s`: the seconds of the run without them)."""
    cfg = ctx.config
    out: dict[str, Any] = {"effort": cfg.effort, "time_budget_s": cfg.time_budget_s}
    if ctx.budget is not None:
        out["stages"] = dict(ctx.budget.log.entries)
        out["seconds"] = round(ctx.budget.clock.elapsed(), 3)
        out["within_time_budget"] = (
            None if cfg.time_budget_s is None else out["seconds"] <= cfg.time_budget_s
        )
    cost = report.stages.get("baselines")
    if cost is None:
        out["baselines"] = "not run (not asked: baselines false)"
    else:
        share = cost / max(run_s + cost, 1e-9)
        out["baselines"] = (
            f"run (asked: baselines true): {cost:.1f} s, {100 * share:.0f}% of the run"
        )
    return out


__all__ = [
    "Context",
    "fingerprint",
    "make_report",
    "prepare",
    "schedule_summary",
]
