"""Seeded K-means over edge vectors: k-means++ initialisation, restarts, faiss Lloyd steps.

faiss does the heavy assignment/update loop (GPU index when CUDA and faiss-gpu are
present); the initialisation is ours so it is k-means++ quality and reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from metacluster.errors import ConfigError


@dataclass
class KMeansResult:
    centroids: NDArray[np.float32]  # (K, d)
    assignment: NDArray[np.int64]  # (n,)
    inertia: float  # sum of squared distances to the assigned centroid


def kmeans_plus_plus(
    x: NDArray[np.float32], k: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """k-means++ seeding (Arthur & Vassilvitskii) with a greedy pick of 2+log k candidates."""
    n = x.shape[0]
    n_trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]), dtype=np.float64)
    xd = x.astype(np.float64)
    centers[0] = xd[rng.integers(n)]
    closest = ((xd - centers[0]) ** 2).sum(1)
    for c in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point will do, Lloyd fixes it
            centers[c] = xd[rng.integers(n)]
            continue
        cand = np.searchsorted(np.cumsum(closest), rng.random(n_trials) * total)
        cand = np.minimum(cand, n - 1)
        d_cand = ((xd[None, :, :] - xd[cand][:, None, :]) ** 2).sum(2)  # (trials, n)
        new_closest = np.minimum(closest[None, :], d_cand)
        best = int(np.argmin(new_closest.sum(1)))
        centers[c] = xd[cand[best]]
        closest = new_closest[best]
    return centers.astype(np.float32)


def _faiss_gpu_available(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import faiss

    return bool(hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0)


def kmeans(
    x: NDArray[np.floating],
    k: int,
    *,
    seed: int = 0,
    iters: int = 50,
    restarts: int = 3,
    device: str = "cpu",
    sample: int | None = None,
) -> KMeansResult:
    """Cluster rows of x into k centroids; the restart with the lowest inertia wins.

    `sample`: the centroids are fitted on a seeded subsample of that many rows (at least
    k), then every row is assigned to its nearest one by faiss (float32, an estimate's
    shortcut: ties may break differently from the exact assignment)."""
    import faiss

    data = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if data.ndim != 2 or data.shape[0] == 0:
        raise ConfigError("k-means needs a non-empty (n, d) array")
    n, d = data.shape
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} must be between 1 and the number of vectors ({n})")
    if not np.isfinite(data).all():
        raise ConfigError("k-means input contains NaN or infinity")
    rng = np.random.default_rng(seed)
    full = data
    if sample is not None and max(sample, k) < n:
        data = data[np.sort(rng.choice(n, size=max(sample, k), replace=False))]
    use_gpu = _faiss_gpu_available(device)
    best: KMeansResult | None = None
    for r in range(restarts):
        init = kmeans_plus_plus(data, k, rng)
        km = faiss.Kmeans(
            d,
            k,
            niter=iters,
            seed=seed + r,
            gpu=use_gpu,
            min_points_per_centroid=1,
            max_points_per_centroid=1 << 30,  # never subsample: all edges count
            verbose=False,
        )
        km.train(data, init_centroids=init)
        centroids = np.asarray(km.centroids, dtype=np.float32).reshape(k, d)
        dist, assign = _assign(full, centroids) if full is data else _search(full, centroids)
        result = KMeansResult(centroids, assign, float(dist.sum()))
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def _search(
    data: NDArray[np.float32], centroids: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Nearest centroid of every row by a faiss flat index (float32)."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids))
    dist, assign = index.search(data, 1)
    return dist[:, 0].astype(np.float64), assign[:, 0].astype(np.int64)


def _assign(
    data: NDArray[np.float32], centroids: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Exact nearest-centroid assignment (float64, ties to the lowest index)."""
    c = centroids.astype(np.float64)
    out_d = np.empty(data.shape[0], dtype=np.float64)
    out_a = np.empty(data.shape[0], dtype=np.int64)
    step = max(1, (1 << 22) // max(1, c.shape[0] * data.shape[1]))
    for lo in range(0, data.shape[0], step):
        xb = data[lo : lo + step].astype(np.float64)
        dist = ((xb[:, None, :] - c[None, :, :]) ** 2).sum(2)
        a = np.argmin(dist, axis=1)
        out_a[lo : lo + step] = a
        out_d[lo : lo + step] = dist[np.arange(a.size), a]
    return out_d, out_a
