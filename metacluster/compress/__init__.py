"""MetaCluster compression: meta-learner, K-means codebooks, fine-tuning, baselines.

`compress(model, MetaClusterConfig(...), data)` is the one verb; the stages and the
baselines are importable on their own.
"""

from __future__ import annotations

from metacluster.compress.baselines import BASELINES, run_baseline
from metacluster.compress.checkpoint import DirectoryCheckpoint, MemoryCheckpoint, StageCheckpoint
from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    UniformQuant,
)
from metacluster.compress.config import CONFIG_VERSION, MetaClusterConfig
from metacluster.compress.pipeline import compress, compress_kmeans, resolve_device
from metacluster.compress.report import CompressionReport

__all__ = [
    "BASELINES",
    "CONFIG_VERSION",
    "Codebook",
    "CompressedKAN",
    "CompressionReport",
    "DirectoryCheckpoint",
    "EdgeGroup",
    "MemoryCheckpoint",
    "MetaClusterConfig",
    "QuantizedCoefficients",
    "StageCheckpoint",
    "UniformQuant",
    "compress",
    "compress_kmeans",
    "resolve_device",
    "run_baseline",
]
