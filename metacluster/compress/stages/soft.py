"""The soft quantizer of the clustering-aware stage: differentiable K-means (DKM-style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metacluster.compress.numeric.codebook import EdgeGroup
from metacluster.compress.numeric.kmeans import kmeans


def per_group(k: int | list[int], n_groups: int) -> list[int]:
    """One K per group: the same K for all, or a list with one per group."""
    if isinstance(k, int):
        return [k] * n_groups
    if len(k) != n_groups:
        raise ValueError(f"{len(k)} codebook sizes for {n_groups} groups")
    return list(k)


def seed_of(k: int | list[int]) -> int:
    """A stage seed offset for a K (as before per-group K) or a list of K."""
    if isinstance(k, int):
        return k
    return sum((i + 1) * v for i, v in enumerate(k)) % 100_003


class SoftQuantizer(nn.Module):
    """Differentiable K-means assignment (DKM-style): each generated vector becomes the
    softmax(-distance / tau) mix of K learnable centroids; tau is annealed towards a hard
    assignment, so edges can still change cluster under the task gradient."""

    def __init__(
        self,
        groups: list[EdgeGroup],
        gen: dict[str, Tensor],
        k: int | list[int],
        seed: int,
        sample: int | None = None,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.centroids = nn.ParameterList()
        scales, taus = [], []
        ks = per_group(k, len(groups))
        for gi, g in enumerate(groups):
            v = g.gather(gen).detach()
            res = kmeans(
                v.cpu().numpy(),
                min(ks[gi], v.shape[0]),
                seed=seed + gi,
                iters=20,
                restarts=1,
                sample=sample,
            )
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
        """Mean squared scaled distance of every vector to every centroid, (n, K).

        Expanded as |v|^2 - 2 v.c + |c|^2, so memory is n x K, not n x K x L (a million
        edges with K = 16 and L = 9 would need half a gigabyte per step otherwise).
        """
        scale = self.scales[gi]
        vs = v / scale
        cs = self.centroids[gi] / scale
        sq = (vs * vs).sum(1, keepdim=True) - 2.0 * vs @ cs.T + (cs * cs).sum(1)[None, :]
        out: Tensor = sq.clamp_min(0.0) / v.shape[1]
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
            for name, rows, piece in g.split(w):
                out[name] = out[name].index_copy(0, rows.to(w.device), piece)
        return out


__all__ = ["SoftQuantizer", "per_group", "seed_of"]
