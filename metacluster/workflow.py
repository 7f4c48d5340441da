"""The use case the CLI and the service's worker share: compress a checkpoint file.

`compress_file(model_path, data, config, out)` loads the checkpoint (safe loading
only), compresses it with `metacluster.compress`, writes the artifact and returns the
report, with the one byte count of the project (`compress.container.ArtifactSizer`):
the source measured as an fp32 checkpoint in its own library's layout
(`formats.source_checkpoint_bytes`) and the artifact as built once by the sizer and
written as it was sized (`artifact.write_built`). `metacluster compress` prints this report; a worker stores
it; both therefore give the same numbers for the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from metacluster.errors import ConfigError

if TYPE_CHECKING:
    from metacluster.compress import (
        CompressionReport,
        MetaClusterConfig,
        Plan,
        Progress,
        ShouldStop,
        StageCheckpoint,
    )
    from metacluster.data import Dataset


def compress_file(
    model_path: str | os.PathLike[str],
    data: str | Dataset,
    config: MetaClusterConfig,
    out: str | os.PathLike[str],
    *,
    format: str = "auto",
    data_seed: int = 0,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    checkpoint: StageCheckpoint | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> CompressionReport:
    """Compress the checkpoint at `model_path` on `data` and write the artifact `out`.

    `data` is a built-in name, a data file, or a loaded `Dataset` (`data_seed` seeds
    a built-in's split and samples). Returns the report: `bytes_after` is the size of
    the file written, `sha256` its digest. Raises the library's errors for bad input
    (an artifact given as the model is a ConfigError). `on_plan` receives the plan the
    engine will run, before its first stage (`metacluster.compress.compress`).
    """
    from metacluster.artifact import build_artifact, is_artifact, write_built
    from metacluster.compress import compress
    from metacluster.compress.container import ArtifactSizer
    from metacluster.data import load_dataset
    from metacluster.formats import load_model

    source = Path(model_path)
    if source.is_file() and is_artifact(source):
        raise ConfigError(
            f"{model_path} is already a MetaCluster artifact; compress the original model"
        )
    model = load_model(source, format=format)
    dataset = load_dataset(data, seed=data_seed) if isinstance(data, str) else data
    sizer = ArtifactSizer()
    compressed, report = compress(
        model,
        config,
        dataset,
        progress=progress,
        should_stop=should_stop,
        checkpoint=checkpoint,
        sizer=sizer,
        on_plan=on_plan,
    )
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the bytes that were sized are the bytes written (built again only if a method
    # changed what the manifest reads after sizing; the count below still holds)
    built = sizer.built(compressed, report) or build_artifact(compressed, report)
    info = write_built(built, target)
    if info.bytes != report.bytes_after:  # one writer, one byte count: never differs
        raise AssertionError(f"artifact is {info.bytes} bytes, sized as {report.bytes_after}")
    report.sha256 = info.sha256
    return report


__all__ = ["compress_file"]
