"""The stage runners of the MetaCluster pipeline, each callable on its own:

1. `run_meta_stage`: meta-learners (and the model's other parameters) trained on the
   task + distillation loss; returns the generated edge vectors;
2. `run_soft_stage` (optional, beyond the paper): clustering-aware training on soft
   assignments to K learnable centroids, annealed to hard;
3. `run_kmeans_stage`: K-means over the vectors, one codebook per edge group;
4. `run_finetune_stage`: centroids and other parameters trained, indices frozen.

The modules they train live in `meta` and `soft`; the loop in `functional`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from metacluster.compress.numeric.codebook import (
    Codebook,
    EdgeGroup,
    QuantizedCoefficients,
    coefficient_names,
)
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.effort import RunBudget
from metacluster.compress.spec.hooks import StageHooks
from metacluster.compress.stages.functional import (
    StageEnv,
    TrainingSet,
    other_parameters,
    train_functional,
)
from metacluster.compress.stages.meta import (
    MetaResult,
    cluster_pull,
    generated_coefficients,
    init_meta_learners,
    regress_meta_learners,
)
from metacluster.compress.stages.soft import SoftQuantizer, per_group, seed_of
from metacluster.kan.model import KANModel

# Stage-specific seed offsets: each stage reseeds, so a resumed run reproduces it.
SEED_META = 1
SEED_KMEANS = 2
SEED_FINETUNE = 3


def run_meta_stage(
    model: KANModel,
    fit: TrainingSet,
    layers: list[str],
    groups: list[EdgeGroup],
    config: MetaClusterConfig,
    *,
    device: torch.device,
    hooks: StageHooks,
    cluster_groups: list[EdgeGroup] | None = None,
    budget: RunBudget | None = None,
) -> MetaResult:
    """Stage 1. Trains meta-learners (and the model's other params, in place); returns
    them with the generated (n, L) vectors of every compressed layer."""
    torch.manual_seed(config.seed * 1000 + SEED_META)
    modules = dict(model.kan_layers())
    names = coefficient_names(model, layers)
    base = {n: modules[n].edge_view(n).coefficients.detach().clone().float() for n in layers}
    learners = [ml.to(device) for ml in init_meta_learners(groups, base, config)]
    base = {n: t.to(device) for n, t in base.items()}
    if config.mode == "post_hoc":
        steps = config.regress_steps
        if budget is not None:
            steps = min(steps, budget.effort.regress_steps)
        regress_meta_learners(learners, groups, base, config, hooks, steps)

    def coef_fn() -> dict[str, Tensor]:
        gen = generated_coefficients(groups, learners, base)
        return {names[n]: modules[n].unflatten_coefficients(gen[n]) for n in layers}

    extra = None
    if config.cluster_weight > 0 and cluster_groups is not None:
        extra = cluster_pull(groups, learners, base, cluster_groups, config, device)
    params: list[Tensor] = [p for ml in learners for p in ml.parameters()]
    params += other_parameters(model, layers)
    env = StageEnv(config, device, hooks, budget)
    schedule = env.schedule(
        "meta", config.meta_epochs, config.meta_lr, config.seed * 1000 + SEED_META, fit.n
    )
    train_functional("meta", model, fit, params, coef_fn, schedule, env, extra_loss=extra)
    with torch.no_grad():
        gen = generated_coefficients(groups, learners, base)
    return MetaResult({n: gen[n].detach().clone() for n in layers}, learners, groups, base)


def run_soft_stage(
    model: KANModel,
    fit: TrainingSet,
    layers: list[str],
    meta: MetaResult,
    cgroups: list[EdgeGroup],
    k: int | list[int],
    config: MetaClusterConfig,
    *,
    device: torch.device,
    hooks: StageHooks,
    budget: RunBudget | None = None,
) -> dict[str, Tensor]:
    """Clustering-aware meta training for one K (beyond the paper): the KAN runs on
    soft-assigned centroids of the generated vectors while tau anneals towards hard
    assignments; meta-learners, centroids and other params train on task + distillation.
    Returns the hard-assigned vectors, so K-means on them is exact."""
    torch.manual_seed(config.seed * 1000 + SEED_META + seed_of(k))
    groups, base = meta.groups, meta.base
    learners = [copy.deepcopy(ml) for ml in meta.learners]  # every K starts from stage 1
    modules = dict(model.kan_layers())
    names = coefficient_names(model, layers)
    with torch.no_grad():
        gen0 = generated_coefficients(groups, learners, base)
    sample = budget.effort.kmeans_sample if budget is not None else None
    soft = SoftQuantizer(cgroups, gen0, k, config.seed * 1000 + SEED_META, sample).to(device)
    epochs = config.soft_epochs_for(fit.n)

    def on_step(step: int, total: int) -> None:
        soft.frac = step / max(1, total - 1)

    def coef_fn() -> dict[str, Tensor]:
        q = soft(generated_coefficients(groups, learners, base))
        return {names[n]: modules[n].unflatten_coefficients(q[n]) for n in layers}

    params: list[Tensor] = [p for ml in learners for p in ml.parameters()]
    params += [*soft.parameters(), *other_parameters(model, layers)]

    def hard_coef_fn() -> dict[str, Tensor]:
        q = soft(generated_coefficients(groups, learners, base), hard=True)
        return {names[n]: modules[n].unflatten_coefficients(q[n]) for n in layers}

    env = StageEnv(config, device, hooks, budget)
    seed = config.seed * 1000 + SEED_META + seed_of(k)
    schedule = env.schedule("soft", epochs, config.meta_lr, seed, fit.n)
    train_functional(
        "soft",
        model,
        fit,
        params,
        coef_fn,
        schedule,
        env,
        on_step=on_step,
        val_coef_fn=hard_coef_fn,
    )
    with torch.no_grad():
        hard: dict[str, Tensor] = soft(generated_coefficients(groups, learners, base), hard=True)
    return hard


# -- stage 2: K-means --------------------------------------------------------------
def run_kmeans_stage(
    vectors: dict[str, Tensor],
    groups: list[EdgeGroup],
    k: int | list[int],
    config: MetaClusterConfig,
    *,
    device: str,
    hooks: StageHooks,
    scope: str,
    layers: list[str],
    budget: RunBudget | None = None,
) -> QuantizedCoefficients:
    """Stage 2. One codebook of min(K, n_edges) centroids per group over `vectors` (K
    the same for every group, or one per group); with config.residual_k, a second
    codebook per group over what the first leaves (residual vector quantization)."""
    ks = per_group(k, len(groups))
    runs = budget.effort.kmeans_runs if budget is not None else (config.kmeans_iters, 100)
    codebooks = []
    for gi, g in enumerate(groups):
        hooks.check("kmeans")
        vecs = g.gather({n: v.detach().cpu() for n, v in vectors.items()}).numpy()
        stages = [ks[gi]] + ([config.residual_k] if config.residual_k else [])
        for level, kk in enumerate(stages):
            res = kmeans(
                vecs,
                min(kk, vecs.shape[0]),
                seed=config.seed * 1000 + SEED_KMEANS + gi + 7919 * level,
                iters=min(config.kmeans_iters, runs[0]),
                restarts=min(config.kmeans_restarts, runs[1]),
                device=device,
                sample=budget.effort.kmeans_stage_sample if budget is not None else None,
            )
            codebooks.append(Codebook.from_kmeans(gi, res, g.coef_dim, residual=level > 0))
            vecs = vecs - res.centroids[res.assignment]
        hooks.report("kmeans", gi + 1, len(groups), res.inertia / max(1, vecs.shape[0]))
    return QuantizedCoefficients(scope, list(layers), groups, codebooks)


# -- stage 3: codebook fine-tuning --------------------------------------------------------
def run_finetune_stage(
    model: KANModel,
    fit: TrainingSet,
    quant: QuantizedCoefficients,
    config: MetaClusterConfig,
    *,
    device: torch.device,
    hooks: StageHooks,
    budget: RunBudget | None = None,
) -> QuantizedCoefficients:
    """Stage 3. Centroids and other params trained (indices frozen); model updated in place."""
    torch.manual_seed(config.seed * 1000 + SEED_FINETUNE)
    modules = dict(model.kan_layers())
    names = coefficient_names(model, quant.layers)
    cents: list[Tensor] = [
        nn.Parameter(cb.centroids.detach().clone().float().to(device)) for cb in quant.codebooks
    ]
    for cb in quant.codebooks:
        cb.indices = cb.indices.to(device)
    for g in quant.groups:
        g.members = [(n, r.to(device)) for n, r in g.members]

    def coef_fn() -> dict[str, Tensor]:
        coefs = quant.layer_coefficients(model, cents)
        return {names[n]: modules[n].unflatten_coefficients(c) for n, c in coefs.items()}

    params: list[Tensor] = [*cents, *other_parameters(model, quant.layers)]
    env = StageEnv(config, device, hooks, budget)
    seed = config.seed * 1000 + SEED_FINETUNE
    schedule = env.schedule("finetune", config.finetune_epochs, config.finetune_lr, seed, fit.n)
    train_functional("finetune", model, fit, params, coef_fn, schedule, env)
    dtype = torch.float16 if config.codebook_dtype == "float16" else torch.float32
    for cb, c in zip(quant.codebooks, cents, strict=True):
        # Round to the stored dtype now, so the model we return equals the artifact.
        cb.centroids = c.detach().to(dtype).float().cpu()
        cb.indices = cb.indices.cpu()
    for g in quant.groups:
        g.members = [(n, r.cpu()) for n, r in g.members]
    return quant


def round_other_parameters(model: KANModel, layers: list[str], dtype: str) -> None:
    """Round the dense parameters to the artifact's storage dtype (in place)."""
    if dtype == "float32":
        return
    skip = set(coefficient_names(model, layers).values())
    with torch.no_grad():
        # Parameters only: buffers (grids) are stored exactly by the artifact.
        for name, p in model.named_parameters():
            if name not in skip and p.is_floating_point():
                p.copy_(p.to(torch.float16).to(p.dtype))


__all__ = [
    "SEED_FINETUNE",
    "SEED_KMEANS",
    "SEED_META",
    "round_other_parameters",
    "run_finetune_stage",
    "run_kmeans_stage",
    "run_meta_stage",
    "run_soft_stage",
]
