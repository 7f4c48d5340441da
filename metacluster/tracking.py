"""Log a compression job as an MLflow run (optional: ``pip install 'metacluster[mlflow]'``).

One function, `log_job`, used on both sides: by the workers when
``METACLUSTER_MLFLOW_URI`` is set, and by `Client.wait(..., mlflow=True)` in the
user's own process. The run gets:

- params: the job's config (MetaClusterConfig fields), dataset and model id;
- metrics: before / after (and validation) metric, bytes before / after, ratio,
  param_ratio, K, and every stage's seconds as ``stage_seconds.<stage>``;
- tags: job id, method, metric name, source family, the job's URL;
- artifacts: the files given (the ``.mcz``, ``report.html``, ``report.json``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metacluster.errors import ConfigError

# MLflow refuses longer parameter values on some stores.
MAX_PARAM_CHARS = 500
_SCALAR_METRICS = (
    "before",
    "after",
    "val_before",
    "val_after",
    "metric_meta",
    "metric_kmeans",
    "bytes_before",
    "bytes_after",
    "ratio",
    "param_ratio",
    "budget_bytes",
)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "MLflow logging needs the mlflow extra: pip install 'metacluster[mlflow]'"
        ) from None
    return mlflow


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM_CHARS]


def run_params(job: Mapping[str, Any]) -> dict[str, str]:
    params = {f"config.{k}": _param(v) for k, v in sorted((job.get("config") or {}).items())}
    params["dataset"] = _param(job.get("dataset", ""))
    params["model_id"] = _param(job.get("model_id", ""))
    return params


def run_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a compression report worth plotting across runs."""
    out: dict[str, float] = {}
    for key in _SCALAR_METRICS:
        value = metrics.get(key)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and math.isfinite(float(value)):  # type: ignore[arg-type]
            out[key] = float(value)  # type: ignore[arg-type]
    k = metrics.get("k")
    if isinstance(k, int) and not isinstance(k, bool):
        out["k"] = float(k)
    for stage, seconds in (metrics.get("stages") or {}).items():
        if isinstance(seconds, int | float) and math.isfinite(float(seconds)):
            out[f"stage_seconds.{stage}"] = float(seconds)
    return out


def log_job(
    job: Mapping[str, Any],
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    tracking_uri: str | None = None,
    experiment: str = "metacluster",
    job_url: str | None = None,
) -> str:
    """Log one finished job (the service's job JSON: config, metrics, ids) as an MLflow
    run with `files` as artifacts; returns the run id. `tracking_uri` None: MLflow's
    default (MLFLOW_TRACKING_URI, else ./mlruns)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id if found is not None else client.create_experiment(experiment)
    )
    metrics = dict(job.get("metrics") or {})
    tags = {
        "metacluster.job_id": str(job.get("id", "")),
        "metacluster.method": str(
            metrics.get("method") or (job.get("config") or {}).get("method", "")
        ),
        "metacluster.metric": str(metrics.get("metric", "")),
        "metacluster.status": str(job.get("status", "")),
        "mlflow.runName": f"metacluster-{job.get('id', 'job')}",
    }
    if job_url:
        tags["metacluster.job_url"] = job_url
    run = client.create_run(experiment_id, tags=tags)
    run_id = str(run.info.run_id)
    try:
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, stamp, 0) for k, v in run_metrics(metrics).items()],
            params=[Param(k, v) for k, v in run_params(job).items()],
        )
        for f in files:
            client.log_artifact(run_id, str(Path(f)))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


__all__ = ["log_job", "run_metrics", "run_params"]
