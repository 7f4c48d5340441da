"""The MetaCluster pipeline (and plain K-means, the same pipeline without stage 1):
meta-learner -> [soft clustering] -> K-means -> codebook fine-tuning, every stage
resumable from a checkpoint.

What the per-K stages compress is an `Assignment`: how each layer is stored (a
codebook of K vectors, uniform int8, or dense). A K sweep runs one assignment per K
(the same K for every layer) after one meta stage; a byte budget (`target_ratio` or
`max_bytes`) runs the one assignment `allocate` chooses from each layer's measured
sensitivity.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from metacluster.compress.methods.diagnostics import baseline_points, codebook_functions, projection
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    build_groups,
    coefficient_names,
    uniform_quant,
)
from metacluster.compress.pipeline.context import Context, make_report, schedule_summary
from metacluster.compress.pipeline.plan import LayerPlan, StagePlan, codebook_bits
from metacluster.compress.pipeline.registry import NoOptions, register_method
from metacluster.compress.pipeline.report import CompressionReport, layer_details
from metacluster.compress.spec.config import (
    CodebookOptions,
    MetaClusterConfig,
    MetaLearnerOptions,
    SoftOptions,
)
from metacluster.compress.spec.effort import PRESETS, runs_soft
from metacluster.compress.stages.allocation import Assignment, LayerChoice, allocate
from metacluster.compress.stages.functional import evaluate_model
from metacluster.compress.stages.meta import (
    FreeVectors,
    MetaResult,
    free_vectors,
    init_meta_learners,
)
from metacluster.compress.stages.runners import (
    round_other_parameters,
    run_finetune_stage,
    run_kmeans_stage,
    run_meta_stage,
    run_soft_stage,
)
from metacluster.errors import ConfigError


def _functional(model: Any, coefs: dict[str, Tensor]) -> dict[str, Tensor]:
    modules = dict(model.kan_layers())
    names = coefficient_names(model, list(coefs))
    return {names[n]: modules[n].unflatten_coefficients(c) for n, c in coefs.items()}


def _meta_groups(ctx: Context) -> list[EdgeGroup]:
    cfg = ctx.config
    if cfg.meta_scope == cfg.scope:
        return ctx.groups
    return build_groups(ctx.work, ctx.layers, cfg.meta_scope, cfg.grid_policy)


def _codebook_state(quant: QuantizedCoefficients) -> dict[str, Any]:
    out: dict[str, Any] = {
        "codebook_groups": [[cb.group, int(cb.residual)] for cb in quant.codebooks]
    }
    for i, cb in enumerate(quant.codebooks):
        out[f"cb{i}.centroids"] = cb.centroids.detach().cpu()
        out[f"cb{i}.indices"] = cb.indices.detach().cpu()
    return out


def _codebooks_from(state: dict[str, Any], groups: list[EdgeGroup]) -> list[Codebook]:
    return [
        Codebook(
            int(g),
            state[f"cb{i}.centroids"],
            state[f"cb{i}.indices"],
            0,
            groups[int(g)].coef_dim,
            residual=bool(r),
        )
        for i, (g, r) in enumerate(state["codebook_groups"])
    ]


# -- what each layer becomes ---------------------------------------------------------------
@dataclass
class Candidate:
    """One assignment's stage inputs: which groups get codebooks of which K."""

    label: str  # stage-name suffix (checkpoints), e.g. "k16" or "budget"
    assignment: Assignment
    layers: list[str]  # layers in the QuantizedCoefficients (codebook and uniform), in order
    groups: list[EdgeGroup]  # build_groups over `layers`: what the artifact rebuilds
    codebook_groups: list[int]  # indices into `groups` that get a codebook
    ks: list[int]  # K of each codebook group

    @property
    def k(self) -> int:
        """The report's K: the largest codebook (0 when no layer has one)."""
        return max(self.ks, default=0)


def _candidate(ctx: Context, label: str, assignment: Assignment) -> Candidate:
    layers = [n for n in ctx.layers if assignment[n].mode != "dense"]
    groups = build_groups(ctx.work, layers, ctx.config.scope, ctx.config.grid_policy)
    chosen, ks = [], []
    for gi, g in enumerate(groups):
        modes = {assignment[name].mode for name in g.layers}
        if modes == {"codebook"}:
            chosen.append(gi)
            ks.append(max(int(assignment[name].k or 2) for name in g.layers))
    return Candidate(label, assignment, layers, groups, chosen, ks)


def uniform_assignment(ctx: Context, k: int) -> Assignment:
    return {n: LayerChoice("codebook", k) for n in ctx.layers}


# -- the stages, each through the one resumable wrapper ------------------------------
def _meta_stage(ctx: Context) -> MetaResult:
    groups = _meta_groups(ctx)

    def compute() -> MetaResult:
        return run_meta_stage(
            ctx.work,
            ctx.fit,
            ctx.layers,
            groups,
            ctx.config,
            device=ctx.device,
            hooks=ctx.hooks,
            cluster_groups=ctx.groups,
            budget=ctx.budget,
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


def _soft_stage(ctx: Context, meta: MetaResult, cand: Candidate) -> dict[str, Tensor]:
    """Clustering-aware training of the codebook groups (config.soft_epochs > 0)."""
    groups = [cand.groups[i] for i in cand.codebook_groups]
    return ctx.stages.run(
        f"soft_{cand.label}",
        lambda: run_soft_stage(
            ctx.work,
            ctx.fit,
            ctx.layers,
            meta,
            groups,
            cand.ks,
            ctx.config,
            device=ctx.device,
            hooks=ctx.hooks,
            budget=ctx.budget,
        ),
        save=lambda gen: {f"gen.{n}": g for n, g in gen.items()},
        restore=lambda state: {n: state[f"gen.{n}"].to(ctx.device) for n in ctx.layers},
        progress_name="soft",
    )


def _kmeans_stage(ctx: Context, gen: dict[str, Tensor], cand: Candidate) -> QuantizedCoefficients:
    def compute() -> QuantizedCoefficients:
        groups = [cand.groups[i] for i in cand.codebook_groups]
        quant = run_kmeans_stage(
            gen,
            groups,
            cand.ks,
            ctx.config,
            device=ctx.device.type,
            hooks=ctx.hooks,
            scope=ctx.config.scope,
            layers=cand.layers,
            budget=ctx.budget,
        )
        for cb in quant.codebooks:  # indices into the candidate's groups
            cb.group = cand.codebook_groups[cb.group]
        return quant

    def restore(state: dict[str, Any]) -> QuantizedCoefficients:
        cbs = _codebooks_from(state, cand.groups)
        return QuantizedCoefficients(ctx.config.scope, list(cand.layers), cand.groups, cbs)

    quant = ctx.stages.run(
        f"kmeans_{cand.label}",
        compute,
        save=_codebook_state,
        restore=restore,
        progress_name="kmeans",
        trains_model=False,
    )
    quant.groups = cand.groups
    modules = dict(ctx.work.kan_layers())
    quant.uniform = [
        uniform_quant(n, modules[n], gen[n].detach().cpu(), int(cand.assignment[n].bits or 8))
        for n in cand.layers
        if cand.assignment[n].mode == "uniform"
    ]
    quant.method, quant.grouping = ctx.config.method, ctx.config.grid_policy
    return quant


def _finetune_stage(
    ctx: Context, quant: QuantizedCoefficients, cand: Candidate
) -> QuantizedCoefficients:
    def compute() -> QuantizedCoefficients:
        out = run_finetune_stage(
            ctx.work,
            ctx.fit,
            quant,
            ctx.config,
            device=ctx.device,
            hooks=ctx.hooks,
            budget=ctx.budget,
        )
        round_other_parameters(ctx.work, quant.layers, ctx.config.other_dtype)
        return out

    def restore(state: dict[str, Any]) -> QuantizedCoefficients:
        quant.codebooks = _codebooks_from(state, quant.groups)
        return quant

    return ctx.stages.run(
        f"finetune_{cand.label}",
        compute,
        save=_codebook_state,
        restore=restore,
        progress_name="finetune",
    )


def _set_dense(ctx: Context, gen: dict[str, Tensor], cand: Candidate) -> None:
    """Layers kept dense take their generated (meta-trained) vectors."""
    modules = dict(ctx.work.kan_layers())
    for name in ctx.layers:
        if cand.assignment[name].mode == "dense":
            modules[name].set_edge_coefficients(gen[name].detach().to(modules[name].coef_param))


def _soft_effort(ctx: Context) -> bool:
    """Whether the run's effort has a clustering-aware stage for this model (fast has
    none; default none where its budget buys too few steps, `effort.runs_soft`)."""
    if ctx.budget is None:
        return True
    return runs_soft(ctx.budget.effort, ctx.config.batch_size, ctx.budget.work)


def run_candidate(
    ctx: Context, meta: MetaResult | None, cand: Candidate, t_meta: float, metric_meta: float | None
) -> tuple[CompressedKAN, CompressionReport]:
    """The per-K stages for one assignment, from the state the meta stage left."""
    t0 = time.perf_counter()
    if meta is None:
        modules = dict(ctx.work.kan_layers())
        gen = {n: modules[n].edge_view(n).coefficients.detach().clone() for n in ctx.layers}
    elif ctx.config.soft_epochs > 0 and cand.codebook_groups and _soft_effort(ctx):
        if ctx.config.soft_from == "free" and not isinstance(meta.learners[0], FreeVectors):
            meta = free_vectors(meta.groups, meta.vectors)  # leave the manifold for this stage
        gen = _soft_stage(ctx, meta, cand)
    else:
        gen = meta.vectors
    t_soft = time.perf_counter() - t0
    t0 = time.perf_counter()
    quant = _kmeans_stage(ctx, gen, cand)
    _set_dense(ctx, gen, cand)
    t_km = time.perf_counter() - t0
    coefs = {n: c.to(ctx.device) for n, c in quant.layer_coefficients(ctx.work).items()}
    _, metric_km = evaluate_model(ctx.work, ctx.data, ctx.device, _functional(ctx.work, coefs))
    t0 = time.perf_counter()
    quant = _finetune_stage(ctx, quant, cand)
    t_ft = time.perf_counter() - t0
    compressed = CompressedKAN(copy.deepcopy(ctx.work).cpu(), quant)
    report = make_report(
        ctx,
        compressed,
        cand.k,
        {"meta": t_meta, "soft": t_soft, "kmeans": t_km, "finetune": t_ft},
        metric_meta=metric_meta,
        metric_kmeans=metric_km,
    )
    return compressed, report


# -- the sweep or the budget -----------------------------------------------------------
def _within(metric: str, before: float, after: float, max_drop: float) -> bool:
    if metric == "accuracy":
        return before - after <= max_drop + 1e-12
    return after <= before * (1 + max_drop) + 1e-12


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if metric == "accuracy" else a < b


def pareto(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The rows no other row beats in both bytes and metric, smallest first."""
    out: list[dict[str, Any]] = []
    for row in sorted(
        rows, key=lambda r: (r["bytes_after"], -r["after"] if metric == "accuracy" else r["after"])
    ):
        if not out or _better(metric, row["after"], out[-1]["after"]):
            out.append({k: row[k] for k in ("k", "bytes_after", "after", "val_after", "ratio")})
    return out


def run_pipeline(ctx: Context, generator: str) -> tuple[CompressedKAN, CompressionReport]:
    """The generator stage once, then the per-K stages for every K of the config, or for
    the budget's allocation; returns the recommended result.

    generator "meta": the meta-learner (MetaCluster); "free": the vectors themselves,
    trained by the soft stage (DKM); "none": the trained vectors as they are (K-means).
    """
    t_start = time.perf_counter()
    config = ctx.config
    t0 = time.perf_counter()
    meta: MetaResult | None = None
    metric_meta: float | None = None
    if generator == "meta":
        meta = _meta_stage(ctx)
        _, metric_meta = evaluate_model(
            ctx.work, ctx.data, ctx.device, _functional(ctx.work, meta.vectors)
        )
    elif generator == "free":
        modules = dict(ctx.work.kan_layers())
        coefs = {n: modules[n].edge_view(n).coefficients.detach().clone() for n in ctx.layers}
        meta = free_vectors(_meta_groups(ctx), coefs)
    t_meta = time.perf_counter() - t0
    meta_state = {k: v.detach().clone() for k, v in ctx.work.state_dict().items()}
    results: list[tuple[CompressedKAN, CompressionReport]] = []
    if config.budgeted:
        budget = _budget_bytes(ctx)
        aim = budget
        t_alloc = 0.0
        for attempt in range(BUDGET_ATTEMPTS):
            ctx.work.load_state_dict(meta_state)
            t0 = time.perf_counter()
            assignment = allocate(ctx, meta, aim)
            t_alloc += time.perf_counter() - t0
            result = run_candidate(
                ctx,
                meta,
                _candidate(ctx, "budget" if attempt == 0 else f"budget{attempt}", assignment),
                t_meta,
                metric_meta,
            )
            result[1].budget_bytes = budget
            over = result[1].bytes_after - budget
            if over <= 0:
                break
            if attempt == BUDGET_ATTEMPTS - 1:
                raise ConfigError(
                    f"the byte budget of {budget} bytes was not met after {BUDGET_ATTEMPTS} "
                    f"allocations (the last came to {result[1].bytes_after} bytes); "
                    "allow a few more bytes"
                )
            # The allocation's estimate fell short of the real file (index streams code
            # differently once fine-tuned): aim lower in proportion, less a margin.
            aim = int(aim * budget / result[1].bytes_after) - max(16, budget // 100) * (attempt + 1)
        result[1].stages["allocate"] = round(t_alloc, 3)
        result[1].budget_attempts = attempt + 1
        results.append(result)
    else:
        for k in config.ks:
            ctx.work.load_state_dict(meta_state)
            cand = _candidate(ctx, f"k{k}", uniform_assignment(ctx, k))
            results.append(run_candidate(ctx, meta, cand, t_meta, metric_meta))
    rows = [
        {
            "k": r.k,
            "after": r.after,
            "val_after": r.val_after,
            "metric_kmeans": r.metric_kmeans,
            "bytes_after": r.bytes_after,
            "ratio": r.ratio,
            "param_ratio": r.param_ratio,
            "stages": dict(r.stages),
        }
        for _, r in results
    ]
    # Decided on the validation split: the smallest K within max_drop, else the best.
    ok = [
        i
        for i, (_, r) in enumerate(results)
        if _within(ctx.metric, ctx.val_before, float(r.val_after or 0.0), config.max_drop)
    ]
    if ok:
        chosen = min(ok, key=lambda i: results[i][1].bytes_after)
        recommended: int | None = results[chosen][1].k
    else:
        sign = 1.0 if ctx.metric == "accuracy" else -1.0
        chosen = max(
            range(len(results)), key=lambda i: sign * float(results[i][1].val_after or 0.0)
        )
        recommended = None
    compressed, report = results[chosen]
    report.sweep = rows if len(rows) > 1 else []
    report.pareto = pareto(rows, ctx.metric)
    report.recommended_k = recommended
    report.layers = layer_details(ctx.source, compressed, report.layer_bytes)
    modules = dict(ctx.source.kan_layers())
    source = {n: modules[n].edge_view(n).coefficients.detach() for n in ctx.layers}
    generated = source if meta is None or generator != "meta" else meta.vectors
    report.projection = projection(source, generated, compressed, config.seed)
    report.codebook_functions = codebook_functions(compressed)
    run_s = time.perf_counter() - t_start
    if config.baselines:
        t0 = time.perf_counter()
        report.baselines = baseline_points(ctx, report.k or max(config.ks))
        report.stages["baselines"] = round(time.perf_counter() - t0, 3)
    report.stages["total"] = round(time.perf_counter() - t_start, 3)
    report.schedule = schedule_summary(ctx, report, run_s)
    return compressed, report


BUDGET_ATTEMPTS = 3  # allocations tried when the file comes out over the byte budget


def _budget_bytes(ctx: Context) -> int:
    cfg = ctx.config
    if cfg.max_bytes is not None:
        return int(cfg.max_bytes)
    assert cfg.target_ratio is not None
    return int(ctx.bytes_before / cfg.target_ratio)


# -- registration ------------------------------------------------------------------------
def _per_k_stages(config: MetaClusterConfig, ks: list[int], soft: bool) -> list[StagePlan]:
    out: list[StagePlan] = []
    for k in ks or [0]:
        kk = k or None
        if soft and config.soft_epochs > 0 and PRESETS[config.effort].soft:
            out.append(StagePlan("soft", float(config.soft_epochs), kk))
        out.append(StagePlan("kmeans", 1.0, kk))
        out.append(StagePlan("finetune", max(0.5, float(config.finetune_epochs)), kk))
    return out


def _codebook_payload(layer: LayerPlan, k: int, config: MetaClusterConfig, _o: Any) -> int:
    return codebook_bits(layer, k, config)


def _stages_of(generator: str) -> Any:
    """The stage list of a pipeline method, by its generator."""

    def stages(config: MetaClusterConfig, _options: NoOptions, ks: list[int]) -> list[StagePlan]:
        out: list[StagePlan] = []
        if generator == "meta":
            # Weights are epochs (one pass over the training set each); the regression
            # is full-batch on the edge vectors alone, about an epoch per 100 steps.
            if config.mode == "post_hoc" and config.regress_steps > 0:
                out.append(StagePlan("regress", max(0.5, config.regress_steps / 100)))
            out.append(StagePlan("meta", max(0.5, float(config.meta_epochs))))
        if config.budgeted:
            out.append(StagePlan("allocate", 1.0))
        return out + _per_k_stages(config, ks, soft=generator != "none")

    return stages


# The pipeline's methods differ only in what generates the vectors the per-K stages
# cluster (see run_pipeline).
PIPELINE_METHODS = {
    "metacluster": (
        "meta",
        "meta-learner manifold, then K-means codebooks and fine-tuning (the paper's method); "
        "best on regressions with many inputs and small smooth models",
    ),
    "kmeans": ("none", "plain K-means over the trained edge vectors, then codebook fine-tuning"),
    "dkm": (
        "free",
        "clustering-aware training of the coefficients themselves (soft K-means, DKM), "
        "no meta-learner, then K-means codebooks and fine-tuning; the default, best on "
        "classifiers",
    ),
}


# The option groups of the config each generator's method reads (config.py).
PIPELINE_GROUPS: dict[str, tuple[type, ...]] = {
    "meta": (MetaLearnerOptions, SoftOptions, CodebookOptions),
    "free": (SoftOptions, CodebookOptions),
    "none": (CodebookOptions,),
}


def _register(name: str, generator: str, summary: str) -> Any:
    def run(ctx: Context, _options: NoOptions) -> tuple[CompressedKAN, CompressionReport]:
        return run_pipeline(ctx, generator)

    run.__name__ = f"run_{name}"
    return register_method(
        name,
        summary=summary,
        stages=_stages_of(generator),
        payload_bits=_codebook_payload,
        groups=PIPELINE_GROUPS[generator],
    )(run)


for _name, (_generator, _summary) in PIPELINE_METHODS.items():
    _register(_name, _generator, _summary)


__all__ = ["PIPELINE_METHODS", "Candidate", "pareto", "run_candidate", "run_pipeline"]
