"""`compress(model, config, data)`: the one verb of the engine, for every method."""

from __future__ import annotations

from collections.abc import Callable

from metacluster.compress.numeric.codebook import CompressedKAN
from metacluster.compress.pipeline.checkpoint import StageCheckpoint
from metacluster.compress.pipeline.context import prepare
from metacluster.compress.pipeline.plan import Plan
from metacluster.compress.pipeline.registry import get_method
from metacluster.compress.pipeline.report import CompressionReport
from metacluster.compress.sizing import Sizer
from metacluster.compress.spec.config import MetaClusterConfig
from metacluster.compress.spec.hooks import Progress, ShouldStop, StageHooks
from metacluster.data.dataset import Dataset
from metacluster.kan.model import KANModel


def compress(
    model: KANModel,
    config: MetaClusterConfig,
    data: Dataset,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    checkpoint: StageCheckpoint | None = None,
    sizer: Sizer | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> tuple[CompressedKAN, CompressionReport]:
    """Compress `model` with the method `config.method`; returns the model and its report.

    progress(stage, step, total, loss) is called as stages advance; should_stop() is
    polled between steps and raises CancelledError; with a checkpoint, finished stages
    are saved and a repeated call resumes from them with the same result. With a list
    of K the meta-learner runs once and the smallest K within `config.max_drop` of the
    original metric is returned (`report.sweep` has all). `sizer` measures bytes (default:
    `ArtifactSizer`, the real sizes, as the CLI reports them; `EstimateSizer`: from the
    tensors alone).

    The run is planned once (`plan`, in `prepare`): `on_plan(plan)` receives the plan it
    will run before any stage starts (a worker weighs its progress by its stages).
    """
    method = get_method(config.method)
    ctx = prepare(model, config, data, StageHooks(progress, should_stop), checkpoint, sizer)
    if on_plan is not None:
        on_plan(ctx.plan)
    return method.run(ctx, config.options)


__all__ = ["compress"]
