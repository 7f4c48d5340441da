"""The meta-learner (stage 1's model): a tiny MLP that maps a learned low-dimensional
embedding of every edge to that edge's whole coefficient vector, so the vectors of a
group lie on a d_emb-dimensional manifold (arXiv 2510.19105, section 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacluster.compress.numeric.codebook import EdgeGroup
from metacluster.compress.numeric.kmeans import kmeans
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.hooks import StageHooks


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
        for name, rows, piece in g.split(vecs):
            if name not in touched:
                touched[name] = torch.zeros_like(base[name])
            touched[name] = touched[name].index_copy(0, rows.to(vecs.device), piece)
    out.update(touched)
    return out


def regress_meta_learners(
    learners: list[MetaLearner],
    groups: list[EdgeGroup],
    coefs: dict[str, Tensor],
    config: MetaClusterConfig,
    hooks: StageHooks,
    steps: int | None = None,
) -> float:
    """Full-batch steps (config.regress_steps, or `steps`) fitting embeddings + MLPs to
    the given vectors (standardised MSE)."""
    steps = config.regress_steps if steps is None else steps
    if steps == 0:
        return float("nan")
    targets = [
        (g.gather(coefs).float() - ml.mean) / ml.std for g, ml in zip(groups, learners, strict=True)
    ]
    params = [p for ml in learners for p in ml.parameters()]
    opt = torch.optim.Adam(params, lr=config.regress_lr)
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


class FreeVectors(nn.Module):
    """The vectors themselves as parameters: a "generator" without a manifold, for
    clustering-aware training of the coefficients directly (DKM, no meta-learner)."""

    def __init__(self, vectors: Tensor) -> None:
        super().__init__()
        self.v = nn.Parameter(vectors.detach().clone().float())

    def forward(self) -> Tensor:
        return self.v


def free_vectors(groups: list[EdgeGroup], coefs: dict[str, Tensor]) -> MetaResult:
    """A MetaResult whose 'learners' are the groups' own vectors (see FreeVectors)."""
    learners = [FreeVectors(g.gather(coefs)) for g in groups]
    return MetaResult(dict(coefs), learners, groups, dict(coefs))  # type: ignore[arg-type]


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


def cluster_pull(
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


__all__ = [
    "FreeVectors",
    "MetaLearner",
    "MetaResult",
    "cluster_pull",
    "free_vectors",
    "generated_coefficients",
    "init_meta_learners",
    "regress_meta_learners",
]
