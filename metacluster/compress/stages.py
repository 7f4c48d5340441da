"""The three MetaCluster stages (meta-learner, K-means, codebook fine-tuning) as
functions you can call on their own, plus the task/distillation training loop they share.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.compress.codebook import (
    Codebook,
    EdgeGroup,
    QuantizedCoefficients,
    coefficient_names,
)
from metacluster.compress.config import MetaClusterConfig
from metacluster.compress.kmeans import kmeans
from metacluster.data.dataset import Dataset
from metacluster.errors import CancelledError
from metacluster.kan.model import KANModel
from metacluster.training import metric_value, prepare_inputs

Progress = Callable[[str, int, int, float | None], None]
ShouldStop = Callable[[], bool]

# Stage-specific seed offsets: each stage reseeds, so a resumed run reproduces it.
SEED_META = 1
SEED_KMEANS = 2
SEED_FINETUNE = 3


@dataclass
class StageHooks:
    progress: Progress | None = None
    should_stop: ShouldStop | None = None

    def report(self, stage: str, step: int, total: int, loss: float | None) -> None:
        if self.progress is not None:
            self.progress(stage, step, total, loss)

    def check(self, stage: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise CancelledError(f"compression cancelled during stage {stage}")


# -- data and task loss ------------------------------------------------------------
# Input shaping, the compatibility check and the metric are metacluster.training's,
# so `compress` and `metacluster eval` report the same number for the same model.


def task_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    if task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y.reshape(out.shape))


def distill_loss(out: Tensor, teacher: Tensor, task: str, temperature: float) -> Tensor:
    if task == "classification":
        t = temperature
        return F.kl_div(
            F.log_softmax(out / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
    return F.mse_loss(out, teacher)


@torch.no_grad()
def predict(
    model: KANModel, x: Tensor, coefs: dict[str, Tensor] | None = None, batch: int = 4096
) -> Tensor:
    """Model outputs, optionally with substituted coefficient tensors."""
    was = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, x.shape[0], batch):
            xb = prepare_inputs(model, x[i : i + batch])
            if coefs is None:
                outs.append(model(xb))
            else:
                outs.append(torch.func.functional_call(model, coefs, (xb,)))
        return torch.cat(outs)
    finally:
        model.train(was)


def evaluate_model(
    model: KANModel, data: Dataset, device: torch.device, coefs: dict[str, Tensor] | None = None
) -> tuple[str, float]:
    """Test-set metric as metacluster.training.evaluate, optionally with substituted
    coefficient tensors (the model's own parameters are left untouched)."""
    out = predict(model, data.x_test.to(device), coefs)
    return metric_value(out, data.y_test, data.task)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def other_parameters(model: KANModel, compressed: list[str]) -> list[nn.Parameter]:
    """Trainable parameters that are not the coefficient tensors of compressed layers."""
    skip = set(coefficient_names(model, compressed).values())
    return [p for name, p in model.named_parameters() if name not in skip and p.is_floating_point()]


def train_functional(
    stage: str,
    model: KANModel,
    data: Dataset,
    params: list[Tensor],
    coef_fn: Callable[[], dict[str, Tensor]],
    *,
    epochs: int,
    lr: float,
    config: MetaClusterConfig,
    teacher: Tensor | None,
    device: torch.device,
    hooks: StageHooks,
    seed: int,
    extra_loss: Callable[[int], Tensor | None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """Minibatch Adam over `params` with coefficients from `coef_fn` (functional_call).

    Loss = task loss + config.distill * distillation towards `teacher` (train outputs)
    + extra_loss(epoch). Cosine learning rate. Returns the last epoch's mean loss.
    """
    if epochs == 0 or not params:
        return float("nan")
    x = data.x_train.to(device)
    y = data.y_train.to(device)
    n = int(x.shape[0])
    bs = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    opt = torch.optim.Adam(params, lr=lr)
    total_steps = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    last = float("nan")
    for epoch in range(epochs):
        hooks.check(stage)
        if on_epoch is not None:
            on_epoch(epoch)
        running, count = 0.0, 0
        for idx in _batches(n, bs, gen):
            idx_d = idx.to(device)
            xb = prepare_inputs(model, x[idx_d])
            out = torch.func.functional_call(model, coef_fn(), (xb,))
            loss = task_loss(out, y[idx_d], data.task)
            if teacher is not None and config.distill > 0:
                loss = loss + config.distill * distill_loss(
                    out, teacher[idx_d], data.task, config.temperature
                )
            if extra_loss is not None:
                extra = extra_loss(epoch)
                if extra is not None:
                    loss = loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            running += float(loss.detach()) * int(idx.numel())
            count += int(idx.numel())
        last = running / max(1, count)
        hooks.report(stage, epoch + 1, epochs, last)
    model.eval()
    return last


# -- stage 1: the meta-learner ----------------------------------------------------------
class MetaLearner(nn.Module):
    """M(z) = W2 relu(W1 z + b1) + b2 over learned edge embeddings z (n, d_emb).

    Outputs are produced in a per-coordinate standardised space and mapped back
    with fixed (mean, std) buffers; that affine map folds into W2, b2, so it is the
    paper's MLP, but spline coefficients and base weights get comparable scales.
    """

    def __init__(
        self, n_edges: int, coef_dim: int, d_emb: int, hidden: int, mean: Tensor, std: Tensor
    ) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.randn(n_edges, d_emb))
        self.fc1 = nn.Linear(d_emb, hidden)
        self.fc2 = nn.Linear(hidden, coef_dim)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    mean: Tensor
    std: Tensor

    def normalized(self) -> Tensor:
        out: Tensor = self.fc2(torch.relu(self.fc1(self.z)))
        return out

    def forward(self) -> Tensor:
        return self.mean + self.std * self.normalized()  # (n_edges, L)


def _standardise(vectors: Tensor) -> tuple[Tensor, Tensor]:
    mean = vectors.mean(0)
    std = vectors.std(0, unbiased=False)
    # Guard constant coordinates (e.g. a base weight that was never trained).
    std = torch.where(std > 1e-8, std, torch.full_like(std, max(float(std.max()), 1e-3)))
    return mean, std


def init_meta_learners(
    groups: list[EdgeGroup], coefs: dict[str, Tensor], config: MetaClusterConfig
) -> list[MetaLearner]:
    """One meta-learner per group; post_hoc embeddings start at the PCA of the vectors."""
    learners = []
    for g in groups:
        target = g.gather(coefs).float()
        mean, std = _standardise(target)
        if config.mode == "from_scratch":
            # An untrained layer's spline coordinates are near zero: per-coordinate scales
            # would pin them there. Use one scale (the vectors' RMS) for every coordinate.
            mean = torch.zeros_like(mean)
            std = torch.full_like(std, max(float(target.pow(2).mean().sqrt()), 1e-3))
        ml = MetaLearner(g.n_edges, g.coef_dim, config.d_emb, config.hidden, mean, std)
        if config.mode == "post_hoc":
            norm = (target - mean) / std
            d = min(config.d_emb, norm.shape[0], norm.shape[1])
            u, s, _ = torch.linalg.svd(norm, full_matrices=False)
            pcs = u[:, :d] * s[:d]
            pcs = pcs / pcs.std(0, unbiased=False).clamp_min(1e-8)
            with torch.no_grad():
                ml.z.zero_()
                ml.z[:, :d] = pcs
        learners.append(ml)
    return learners


def generated_coefficients(
    groups: list[EdgeGroup], learners: list[MetaLearner], base: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Per layer (n, L) vectors, scattered from each group's generated vectors."""
    out = dict(base)
    touched: dict[str, Tensor] = {}
    for g, ml in zip(groups, learners, strict=True):
        vecs = ml()
        offset = 0
        for name, rows in g.members:
            n = int(rows.numel())
            if name not in touched:
                touched[name] = torch.zeros_like(base[name])
            touched[name] = touched[name].index_copy(
                0, rows.to(vecs.device), vecs[offset : offset + n]
            )
            offset += n
    out.update(touched)
    return out


def regress_meta_learners(
    learners: list[MetaLearner],
    groups: list[EdgeGroup],
    coefs: dict[str, Tensor],
    config: MetaClusterConfig,
    hooks: StageHooks,
) -> float:
    """Full-batch fit of embeddings + MLPs to the given vectors (standardised MSE)."""
    if config.regress_steps == 0:
        return float("nan")
    targets = [
        (g.gather(coefs).float() - ml.mean) / ml.std for g, ml in zip(groups, learners, strict=True)
    ]
    params = [p for ml in learners for p in ml.parameters()]
    opt = torch.optim.Adam(params, lr=config.regress_lr)
    steps = config.regress_steps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    report_every = max(1, steps // 20)
    loss_v = float("nan")
    for step in range(steps):
        if step % report_every == 0:
            hooks.check("regress")
        loss = sum(
            (F.mse_loss(ml.normalized(), t) for ml, t in zip(learners, targets, strict=True)),
            torch.zeros((), device=targets[0].device),
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        loss_v = float(loss.detach()) / len(learners)
        if (step + 1) % report_every == 0 or step + 1 == steps:
            hooks.report("regress", step + 1, steps, loss_v)
    return loss_v


@dataclass
class MetaResult:
    """What stage 1 hands on: generated vectors, and the meta-learners that made them
    (the clustering-aware stage keeps training them)."""

    vectors: dict[str, Tensor]
    learners: list[MetaLearner]
    groups: list[EdgeGroup]
    base: dict[str, Tensor]

    def learner_state(self) -> dict[str, Tensor]:
        return {
            f"learner{i}.{k}": v.detach().cpu()
            for i, ml in enumerate(self.learners)
            for k, v in ml.state_dict().items()
        }


def run_meta_stage(
    model: KANModel,
    data: Dataset,
    layers: list[str],
    groups: list[EdgeGroup],
    config: MetaClusterConfig,
    *,
    teacher: Tensor | None,
    device: torch.device,
    hooks: StageHooks,
    cluster_groups: list[EdgeGroup] | None = None,
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
        regress_meta_learners(learners, groups, base, config, hooks)

    def coef_fn() -> dict[str, Tensor]:
        gen = generated_coefficients(groups, learners, base)
        return {names[n]: modules[n].unflatten_coefficients(gen[n]) for n in layers}

    extra = None
    if config.cluster_weight > 0 and cluster_groups is not None:
        extra = _cluster_pull(model, groups, learners, base, cluster_groups, config, device)
    params: list[Tensor] = [p for ml in learners for p in ml.parameters()]
    params += other_parameters(model, layers)
    train_functional(
        "meta",
        model,
        data,
        params,
        coef_fn,
        epochs=config.meta_epochs,
        lr=config.meta_lr,
        config=config,
        teacher=teacher if config.mode == "post_hoc" else None,
        device=device,
        hooks=hooks,
        seed=config.seed * 1000 + SEED_META,
        extra_loss=extra,
    )
    with torch.no_grad():
        gen = generated_coefficients(groups, learners, base)
    return MetaResult({n: gen[n].detach().clone() for n in layers}, learners, groups, base)


class SoftQuantizer(nn.Module):
    """Differentiable K-means assignment (DKM-style): each generated vector becomes the
    softmax(-distance / tau) mix of K learnable centroids; tau is annealed towards a hard
    assignment, so edges can still change cluster under the task gradient."""

    def __init__(self, groups: list[EdgeGroup], gen: dict[str, Tensor], k: int, seed: int) -> None:
        super().__init__()
        self.groups = groups
        self.centroids = nn.ParameterList()
        scales, taus = [], []
        for gi, g in enumerate(groups):
            v = g.gather(gen).detach()
            res = kmeans(v.cpu().numpy(), min(k, v.shape[0]), seed=seed + gi, iters=20, restarts=1)
            self.centroids.append(nn.Parameter(torch.from_numpy(res.centroids).to(v.device)))
            scale = v.std(0, unbiased=False).clamp_min(1e-6)
            scales.append(scale)
            # start soft: tau of the order of a typical distance to the nearest centroid
            taus.append(
                float(res.inertia / v.shape[0] / float((scale**2).mean()) / v.shape[1]) + 1e-6
            )
        self.scales = scales
        self.tau0 = taus
        self.frac = 0.0

    def _distances(self, gi: int, v: Tensor) -> Tensor:
        c: Tensor = self.centroids[gi]
        diff = (v[:, None, :] - c[None, :, :]) / self.scales[gi]
        out: Tensor = (diff**2).mean(-1)  # (n, K)
        return out

    def forward(self, gen: dict[str, Tensor], hard: bool = False) -> dict[str, Tensor]:
        out = dict(gen)
        for gi, g in enumerate(self.groups):
            v = g.gather(gen)
            d = self._distances(gi, v)
            c = self.centroids[gi]
            if hard:
                w = c[d.argmin(1)]
            else:
                tau = self.tau0[gi] * (1e-3**self.frac)
                w = torch.softmax(-d / tau, dim=1) @ c
            offset = 0
            for name, rows in g.members:
                n = int(rows.numel())
                out[name] = out[name].index_copy(0, rows.to(w.device), w[offset : offset + n])
                offset += n
        return out


def run_soft_stage(
    model: KANModel,
    data: Dataset,
    layers: list[str],
    meta: MetaResult,
    cgroups: list[EdgeGroup],
    k: int,
    config: MetaClusterConfig,
    *,
    teacher: Tensor | None,
    device: torch.device,
    hooks: StageHooks,
) -> dict[str, Tensor]:
    """Clustering-aware meta training for one K (beyond the paper): the KAN runs on
    soft-assigned centroids of the generated vectors while tau anneals towards hard
    assignments; meta-learners, centroids and other params train on task + distillation.
    Returns the hard-assigned vectors, so K-means on them is exact."""
    torch.manual_seed(config.seed * 1000 + SEED_META + k)
    groups, base = meta.groups, meta.base
    learners = [copy.deepcopy(ml) for ml in meta.learners]  # every K starts from stage 1
    modules = dict(model.kan_layers())
    names = coefficient_names(model, layers)
    with torch.no_grad():
        gen0 = generated_coefficients(groups, learners, base)
    soft = SoftQuantizer(cgroups, gen0, k, config.seed * 1000 + SEED_META).to(device)
    epochs = config.soft_epochs

    def on_epoch(epoch: int) -> None:
        soft.frac = epoch / max(1, epochs - 1)

    def coef_fn() -> dict[str, Tensor]:
        q = soft(generated_coefficients(groups, learners, base))
        return {names[n]: modules[n].unflatten_coefficients(q[n]) for n in layers}

    params: list[Tensor] = [p for ml in learners for p in ml.parameters()]
    params += [*soft.parameters(), *other_parameters(model, layers)]
    train_functional(
        "soft",
        model,
        data,
        params,
        coef_fn,
        epochs=epochs,
        lr=config.meta_lr,
        config=config,
        teacher=teacher,
        device=device,
        hooks=hooks,
        seed=config.seed * 1000 + SEED_META + k,
        on_epoch=on_epoch,
    )
    with torch.no_grad():
        hard: dict[str, Tensor] = soft(generated_coefficients(groups, learners, base), hard=True)
    return hard


def _cluster_pull(
    model: KANModel,
    groups: list[EdgeGroup],
    learners: list[MetaLearner],
    base: dict[str, Tensor],
    cgroups: list[EdgeGroup],
    config: MetaClusterConfig,
    device: torch.device,
) -> Callable[[int], Tensor | None]:
    """Clustering-aware term: in the second half of meta training, pull each generated
    vector (standardised) towards its nearest centroid, re-estimated once per epoch."""
    k = config.ks[0]
    state: dict[str, Any] = {"epoch": -1, "targets": None}
    start = config.meta_epochs // 2

    def term(epoch: int) -> Tensor | None:
        if epoch < start:
            return None
        gen = generated_coefficients(groups, learners, base)
        if state["epoch"] != epoch:
            targets = []
            for g in cgroups:
                vecs = g.gather({n: t.detach() for n, t in gen.items()}).cpu().numpy()
                kk = min(k, vecs.shape[0])
                res = kmeans(vecs, kk, seed=config.seed, iters=10, restarts=1)
                targets.append(torch.from_numpy(res.centroids[res.assignment]).to(device))
            state["epoch"], state["targets"] = epoch, targets
        ramp = (epoch - start + 1) / max(1, config.meta_epochs - start)
        total = torch.zeros((), device=device)
        for g, tgt in zip(cgroups, state["targets"], strict=True):
            vec = g.gather(gen)
            scale = vec.detach().std(0, unbiased=False).clamp_min(1e-6)
            total = total + (((vec - tgt) / scale) ** 2).mean()
        result: Tensor = config.cluster_weight * ramp * total / len(cgroups)
        return result

    return term


# -- stage 2: K-means --------------------------------------------------------------
def run_kmeans_stage(
    vectors: dict[str, Tensor],
    groups: list[EdgeGroup],
    k: int,
    config: MetaClusterConfig,
    *,
    device: str,
    hooks: StageHooks,
    scope: str,
    layers: list[str],
) -> QuantizedCoefficients:
    """Stage 2. One codebook of min(k, n_edges) centroids per group over `vectors`."""
    codebooks = []
    for gi, g in enumerate(groups):
        hooks.check("kmeans")
        vecs = g.gather({n: v.detach().cpu() for n, v in vectors.items()}).numpy()
        kk = min(k, vecs.shape[0])
        res = kmeans(
            vecs,
            kk,
            seed=config.seed * 1000 + SEED_KMEANS + gi,
            iters=config.kmeans_iters,
            restarts=config.kmeans_restarts,
            device=device,
        )
        codebooks.append(
            Codebook(
                gi,
                torch.from_numpy(res.centroids.copy()),
                torch.from_numpy(res.assignment.copy()),
                0,
                g.coef_dim,
            )
        )
        hooks.report("kmeans", gi + 1, len(groups), res.inertia / max(1, vecs.shape[0]))
    return QuantizedCoefficients(scope, list(layers), groups, codebooks)


# -- stage 3: codebook fine-tuning --------------------------------------------------------
def run_finetune_stage(
    model: KANModel,
    data: Dataset,
    quant: QuantizedCoefficients,
    config: MetaClusterConfig,
    *,
    teacher: Tensor | None,
    device: torch.device,
    hooks: StageHooks,
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
    train_functional(
        "finetune",
        model,
        data,
        params,
        coef_fn,
        epochs=config.finetune_epochs,
        lr=config.finetune_lr,
        config=config,
        teacher=teacher,
        device=device,
        hooks=hooks,
        seed=config.seed * 1000 + SEED_FINETUNE,
    )
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


def as_numpy(t: Tensor) -> np.ndarray[Any, Any]:
    return t.detach().cpu().numpy()
