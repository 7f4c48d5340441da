"""MetaCluster compression: meta-learner, K-means codebooks, fine-tuning, baselines.

`compress(model, MetaClusterConfig(method=...), data)` is the one verb; methods
register themselves (`methods`), `plan` says what a run will do before it starts,
and the stages are importable on their own. The engine never reads or writes
checkpoint or artifact files: `metacluster.workflow` does, around it.
"""

from __future__ import annotations

# Importing the method modules registers them (metacluster, kmeans, then the baselines).
from metacluster.compress import pipeline as _pipeline  # noqa: F401  isort: skip
from metacluster.compress import baselines as _baselines  # noqa: F401  isort: skip
from metacluster.compress import gainshape as _gainshape  # noqa: F401  isort: skip
from metacluster.compress.checkpoint import (
    DirectoryCheckpoint,
    MemoryCheckpoint,
    ResumableStages,
    StageCheckpoint,
)
from metacluster.compress.codebook import (
    Codebook,
    CompressedKAN,
    EdgeGroup,
    QuantizedCoefficients,
    UniformQuant,
)
from metacluster.compress.config import CONFIG_VERSION, MetaClusterConfig
from metacluster.compress.context import EstimateSizer, Sizer
from metacluster.compress.dispatch import compress
from metacluster.compress.hooks import Progress, ShouldStop, StageHooks
from metacluster.compress.methods import (
    Method,
    MethodOptions,
    get_method,
    method_names,
    register_method,
)
from metacluster.compress.plan import Plan, StagePlan, StageProgress, plan
from metacluster.compress.report import Breakdown, CompressionReport

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
