"""MetaCluster compression: meta-learner, K-means codebooks, fine-tuning, baselines.

`compress(model, MetaClusterConfig(method=...), data)` is the one verb; methods
register themselves (`methods/`), `plan` says what a run will do before it starts,
and the stages are importable on their own. The layers, bottom up (each imports only
those below it; docs/architecture.md, "The engine room"): `spec/` (the run config,
effort presets, hooks), `numeric/` (k-means, codebooks, packing), `sizing` (every byte
estimate), `container` (the artifact's bytes, built once), `stages/`, `pipeline/`
(registry, plan, context, report, dispatch) and `methods/`. This front imports the
methods, which registers them. The package itself is callable: `metacluster.compress(
model, config, data)` is `compress(...)`. The engine never reads or writes the user's
files: `metacluster.workflow` does, around it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

# Importing the method modules registers them (metacluster, kmeans, then the baselines).
from metacluster.compress.methods import metacluster as _metacluster  # noqa: F401  isort: skip
from metacluster.compress.methods import baselines as _baselines  # noqa: F401  isort: skip
from metacluster.compress.methods import gainshape as _gainshape  # noqa: F401  isort: skip
from metacluster.compress.container import ArtifactSizer
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
from metacluster.compress.pipeline.dispatch import compress
from metacluster.compress.pipeline.plan import Plan, StagePlan, StageProgress, plan
from metacluster.compress.pipeline.registry import (
    Method,
    MethodOptions,
    get_method,
    method_names,
    register_method,
)
from metacluster.compress.pipeline.report import CompressionReport
from metacluster.compress.sizing import Breakdown, EstimateSizer, Sizer
from metacluster.compress.spec.config import CONFIG_VERSION, MetaClusterConfig
from metacluster.compress.spec.hooks import Progress, ShouldStop, StageHooks


class _CallablePackage(types.ModuleType):
    """`metacluster.compress` is the engine's package and, called, its verb: the name
    `compress` of the package root is this package (Python binds a subpackage's name on
    its parent when it is imported), so `mc.compress(model, config, data)` runs
    `compress` whichever was imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "CONFIG_VERSION",
    "ArtifactSizer",
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
