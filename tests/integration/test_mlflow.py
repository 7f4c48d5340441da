"""MLflow: a succeeded job becomes a run (config as params; before/after, bytes, ratios and
stage times as metrics; the artifact and the report as artifacts), on a local file
tracking URI. Worker side (`METACLUSTER_MLFLOW_URI`, the runner in-process) and user side
(`Client.wait(..., mlflow=True)` against the real stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._runner import Env
from .conftest import Stack
from .test_redis_postgres import QUICK

pytestmark = pytest.mark.integration
mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # MLflow 3 keeps its file store in maintenance mode behind this switch.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file://{tmp_path / 'mlruns'}"


def _only_run(uri: str, experiment: str) -> Any:
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def _check_run(client: Any, run: Any, job_id: str, metrics: dict[str, Any]) -> None:
    assert run.info.status == "FINISHED"
    assert run.data.tags["metacluster.job_id"] == job_id
    assert run.data.tags["metacluster.metric"] == "accuracy"
    assert run.data.params["config.k"] == str(QUICK["k"])
    assert run.data.params["config.meta_epochs"] == str(QUICK["meta_epochs"])
    logged = run.data.metrics
    for key in ("before", "after", "bytes_before", "bytes_after", "ratio", "param_ratio"):
        assert logged[key] == pytest.approx(metrics[key]), key
    assert {f"stage_seconds.{s}" for s in metrics["stages"]} <= set(logged)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.mcz", "report.json", "report.html"} <= names


def test_the_worker_logs_a_succeeded_job_as_a_run(
    env: Env,
    tracking_uri: str,
) -> None:
    env.settings = env.settings.model_copy(
        update={"mlflow_uri": tracking_uri, "mlflow_experiment": "worker-side"}
    )
    job_id = env.job(QUICK)
    assert env.run(job_id) == "succeeded"
    client, run = _only_run(tracking_uri, "worker-side")
    _check_run(client, run, job_id, env.row(job_id).metrics or {})
    logged = [e.data for e in env.events(job_id) if (e.data or {}).get("mlflow_run_id")]
    assert logged == [{"mlflow_run_id": run.info.run_id}]


def test_a_broken_tracking_server_does_not_fail_the_job(env: Env) -> None:
    env.settings = env.settings.model_copy(update={"mlflow_uri": "nosuchstore://tracking"})
    job_id = env.job(QUICK)
    assert env.run(job_id) == "succeeded"
    assert any((e.data or {}).get("mlflow_error") for e in env.events(job_id))


def test_client_wait_logs_the_run_on_the_users_side(
    stack: Stack, uploaded: dict[str, Any], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metacluster.client import Client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    stack.ensure_one_worker()
    with Client(str(stack.client.base_url), stack.key["key"]) as mc:
        job = mc.create_job(uploaded["model"]["id"], uploaded["dataset"]["id"], QUICK)
        done = mc.wait(job, timeout=240, progress=False, mlflow=True, mlflow_experiment="user")
    assert done.succeeded
    client, run = _only_run(tracking_uri, "user")
    _check_run(client, run, done.id, done.metrics or {})
    assert run.data.tags["metacluster.job_url"].endswith(f"/v1/jobs/{done.id}")


def test_async_client_wait_logs_the_run_on_the_users_side(
    stack: Stack, uploaded: dict[str, Any], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from metacluster.client import AsyncClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    stack.ensure_one_worker()

    async def scenario() -> Any:
        async with AsyncClient(str(stack.client.base_url), stack.key["key"]) as mc:
            job = await mc.create_job(uploaded["model"]["id"], uploaded["dataset"]["id"], QUICK)
            return await mc.wait(
                job, timeout=240, progress=False, mlflow=True, mlflow_experiment="async-user"
            )

    done = asyncio.run(scenario())
    assert done.succeeded
    client, run = _only_run(tracking_uri, "async-user")
    _check_run(client, run, done.id, done.metrics or {})
    assert run.data.tags["metacluster.job_url"].endswith(f"/v1/jobs/{done.id}")
