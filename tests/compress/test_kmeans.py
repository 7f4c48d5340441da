"""Seeded K-means: k-means++ seeding, restarts, reproducibility and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from metacluster.compress.numeric.kmeans import kmeans, kmeans_plus_plus
from metacluster.errors import ConfigError


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 5)) * 10
    labels = rng.integers(0, 6, size=3000)
    return (centers[labels] + rng.normal(size=(3000, 5)) * 0.1).astype(np.float32), centers


def test_finds_well_separated_clusters() -> None:
    x, centers = _blobs()
    res = kmeans(x, 6, seed=0, iters=20, restarts=2)
    # every true centre has a centroid within 0.05
    dist = np.linalg.norm(centers[:, None, :] - res.centroids[None, :, :], axis=2)
    assert dist.min(1).max() < 0.05
    assert res.inertia / len(x) < 5 * 0.01 * 1.2  # ~ noise variance * dims
    assert res.assignment.shape == (3000,) and res.assignment.max() < 6


def test_same_seed_same_result_other_seed_may_differ() -> None:
    x = np.random.default_rng(5).normal(size=(2000, 4)).astype(np.float32)
    a = kmeans(x, 16, seed=3, iters=15, restarts=2)
    b = kmeans(x, 16, seed=3, iters=15, restarts=2)
    assert np.array_equal(a.centroids, b.centroids)
    assert np.array_equal(a.assignment, b.assignment)


def _imbalanced_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Six well-separated clusters of very different sizes (2000 ... 10 points)."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(6, 5)) * 10
    sizes = [2000, 600, 200, 80, 30, 10]
    labels = np.repeat(np.arange(6), sizes)
    return (centers[labels] + rng.normal(size=(len(labels), 5)) * 0.1).astype(np.float32), labels


def _clusters_hit(x: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> int:
    nearest = ((x[:, None, :] - seeds[None]) ** 2).sum(2).argmin(0)  # the point each seed is
    return len(set(labels[nearest].tolist()))


def test_plus_plus_seeding_finds_small_clusters_that_uniform_sampling_misses() -> None:
    """D^2 weighting puts a seed in every cluster, the 10-point one too; drawing seeds
    uniformly (the same number of draws) almost never does. Over 20 independent
    streams, not one shared stream compared with <=."""
    x, labels = _imbalanced_blobs()
    pp_all = sum(
        _clusters_hit(x, labels, kmeans_plus_plus(x, 6, np.random.default_rng(seed))) == 6
        for seed in range(20)
    )
    uniform_all = sum(
        _clusters_hit(x, labels, x[np.random.default_rng(seed).choice(len(x), 6, replace=False)])
        == 6
        for seed in range(20)
    )
    assert pp_all >= 19, pp_all
    assert uniform_all <= 2, uniform_all  # the test can tell the two apart


def test_assignment_is_nearest_centroid() -> None:
    x = np.random.default_rng(6).normal(size=(500, 3)).astype(np.float32)
    res = kmeans(x, 8, seed=0, iters=5, restarts=1)
    d = ((x[:, None, :] - res.centroids[None]) ** 2).sum(2)
    assert np.array_equal(res.assignment, d.argmin(1))


def test_bad_inputs() -> None:
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ConfigError, match="k=6 must be between 1 and the number of vectors"):
        kmeans(x, 6)
    with pytest.raises(ConfigError, match="NaN"):
        kmeans(np.full((5, 2), np.nan, dtype=np.float32), 2)


def test_a_sampled_fit_assigns_every_row_to_its_nearest_centroid() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3_000, 4)).astype(np.float32)
    res = kmeans(x, 16, seed=0, iters=10, restarts=1, sample=500)
    assert res.assignment.shape == (3_000,) and res.centroids.shape == (16, 4)
    d = ((x[:, None, :] - res.centroids[None]) ** 2).sum(2)
    assert (d[np.arange(3_000), res.assignment] <= d.min(1) + 1e-5).all()
    assert res.inertia == pytest.approx(float(d.min(1).sum()), rel=1e-4)
    # a sample at least as large as the data is the exact fit
    exact = kmeans(x[:400], 8, seed=0, iters=10, restarts=1)
    same = kmeans(x[:400], 8, seed=0, iters=10, restarts=1, sample=400)
    assert np.array_equal(exact.assignment, same.assignment)
