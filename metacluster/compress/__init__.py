"""MetaCluster compression: meta-learner, K-means codebooks, fine-tuning, baselines.

`compress(model, MetaClusterConfig(method=...), data)` is the one verb; methods
register themselves (`methods`), `plan` says what a run will do before it starts,
and the stages are importable on their own. The engine never reads or writes
checkpoint or artifact files: `metacluster.workflow` does, around it.
"""

from __future__ import annotations

# Importing the method modules registers them (metacluster, kmeans, then the baselines).
from metacluster.compress.methods import metacluster as _metacluster  # noqa: F401  isort: skip
from metacluster.compress.methods import baselines as _baselines  # noqa: F401  isort: skip
from metacluster.compress.numeric.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    UniformQuant,
)
from metacluster.compress.pipeline.checkpoint import (
    DirectoryCheckpoint,
    MemoryCheckpoint,
    ResumableStages,
    StageCheckpoint,
)
from metacluster.compress.pipeline.context import EstimateSizer, Sizer
from metacluster.compress.pipeline.dispatch import compress
from metacluster.compress.pipeline.plan import Plan, StagePlan, StageProgress, plan
from metacluster.compress.pipeline.registry import (
    Method,
    MethodOptions,
    get_method,
    method_names,
    register_method,
)
from metacluster.compress.pipeline.report import Breakdown, CompressionReport
from metacluster.compress.spec.config import CONFIG_VERSION, MetaClusterConfig
from metacluster.compress.spec.hooks import Progress, ShouldStop, StageHooks

__all__ = [
    "CONFIG_VERSION",
    "Breakdown",
    "Codebook",
    "CompressedKAN",
    "CompressionReport",
    "DirectoryCheckpoint",
    "EdgeGroup",
    "EstimateSizer",
    "MemoryCheckpoint",
    "MetaClusterConfig",
    "Method",
    "MethodOptions",
    "Plan",
    "Progress",
    "QuantizedCoefficients",
    "ResumableStages",
    "ShouldStop",
    "Sizer",
    "StageCheckpoint",
    "StageHooks",
    "StagePlan",
    "StageProgress",
    "UniformQuant",
    "compress",
    "get_method",
    "method_names",
    "plan",
    "register_method",
]
