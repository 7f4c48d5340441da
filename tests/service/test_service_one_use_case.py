"""One use case: `metacluster compress` and an HTTP job give the same artifact and report.

Both go through `metacluster.workflow.compress_file`: the CLI in a subprocess, the job
through the API (upload, create) and the worker's runner (`worker.runner.run_job`,
what the Celery task calls). A baseline is chosen over HTTP by `config.method`, with
the same name and options as the CLI's `--method` / `--method-option`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from service_builders import efficient_kan_bytes, npz_bytes
from service_helpers import CONFIG, OCTET

from core.settings import Settings
from worker.runner import run_job

# Timings differ run to run; everything else in the report must not.
TIMING = {"stages", "seconds", "out"}
SCHEDULE_TIMING = {"seconds", "within_time_budget", "baselines"}
CASES = [
    ("metacluster", {}),
    ("pq", {"m": 3, "bits": 2}),
    ("int4", {}),
]


def _cli(
    tmp: Path, model: Path, data: Path, method: str, options: dict[str, int]
) -> dict[str, Any]:
    config = tmp / f"{method}.json"
    config.write_text(json.dumps({**CONFIG, "method": method, "method_options": options}))
    out = tmp / f"{method}.mcz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "metacluster.cli", "compress", str(model), "--data", str(data),
         "--k", str(CONFIG["k"]), "--config", str(config), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["bytes_after"] == out.stat().st_size
    assert report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    return report


@pytest.mark.parametrize(("method", "options"), CASES, ids=[m for m, _ in CASES])
def test_cli_and_http_job_give_the_same_bytes_and_report(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    options: dict[str, int],
) -> None:
    if not settings.db_url.startswith("sqlite"):
        pytest.skip("the use case does not depend on the database; SQLite is enough")
    model_bytes, data_bytes = efficient_kan_bytes([4, 5, 3]), npz_bytes(n_train=48)
    model, data = tmp_path / "m.pt", tmp_path / "d.npz"
    model.write_bytes(model_bytes)
    data.write_bytes(data_bytes)
    cli_report = _cli(tmp_path, model, data, method, options)

    up = client.post("/v1/models", headers=auth, files={"file": ("m.pt", model_bytes, OCTET)})
    ds = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data_bytes, OCTET)})
    config = {**CONFIG, "method": method, "method_options": options}
    body = {"model_id": up.json()["id"], "dataset": ds.json()["id"], "config": config}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI subprocess above
    try:
        assert run_job(job_id, settings=settings) == "succeeded"
    finally:
        torch.set_num_threads(threads)
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["status"] == "succeeded" and job["metrics"]["method"] == method
    download = client.get(f"/v1/jobs/{job_id}/artifacts/model.mcz", headers=auth)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == cli_report["sha256"]
    assert len(download.content) == cli_report["bytes_after"] == job["metrics"]["bytes_after"]
    http_report = job["metrics"]
    assert _untimed(http_report) == _untimed(cli_report)


def _untimed(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what the clock decides (stage seconds, the schedule's elapsed)."""
    out = {k: v for k, v in report.items() if k not in TIMING}
    out["schedule"] = {k: v for k, v in out["schedule"].items() if k not in SCHEDULE_TIMING}
    return out


def test_an_unknown_method_is_refused_over_http_with_the_registry_names(
    client: TestClient, auth: dict[str, str]
) -> None:
    from service_helpers import upload_dataset, upload_model

    from metacluster.compress import method_names

    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": {"method": "zip"}})
    assert r.status_code == 422 and r.json()["code"] == "invalid_config"
    assert all(name in r.json()["detail"] for name in method_names())
    bad = {"method": "pq", "method_options": {"m": 3, "colour": 1}}
    r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": bad})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    dry = client.post(
        "/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": {"method": "int8"}}
    )
    assert dry.status_code == 200, dry.text
    plan = dry.json()["plan"]
    assert plan["method"] == "int8" and [s["name"] for s in plan["stages"]] == ["quantize"]
    assert plan["expected_bytes"] and plan["layers"][0]["edges"] == 20
