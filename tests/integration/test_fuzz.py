"""Schemathesis against the running API: every operation, a valid key, no 5xx.

A uvicorn API on 127.0.0.1 (SQLite, the embedded broker; no worker, so jobs stay
queued) is seeded with a model, a dataset, a queued job, a succeeded job with
artifacts and a worker heartbeat; their ids are dictionaries the fuzzer draws from (half of the time), and
the OpenAPI links take it from every creation to the operations on what it created.
Checks: all of schemathesis's, except `positive_data_acceptance` (a schema cannot say
which bytes are a KAN checkpoint; random "valid" files are rightly refused with 415 /
422). `DELETE /v1/keys/self` is left out: it would revoke the fuzzer's own key.

Bounded here (FUZZ_EXAMPLES per operation, about a thousand cases); the long run is
in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._stack import (
    Proc,
    child_env,
    free_port,
    make_efficient_kan_checkpoint,
    make_npz_dataset,
    wait_healthy,
)

FUZZ_EXAMPLES = int(os.environ.get("METACLUSTER_FUZZ_EXAMPLES", "25"))

CONFIG = """
[parameters]
"path.model_id" = {{ dictionary = "models", probability = 0.5 }}
"path.dataset_id" = {{ dictionary = "datasets", probability = 0.5 }}
"path.job_id" = {{ dictionary = "jobs", probability = 0.6 }}
"path.name" = {{ dictionary = "artifacts", probability = 0.6 }}
"body.model_id" = {{ dictionary = "models", probability = 0.5 }}
"body.dataset" = {{ dictionary = "dataset_specs", probability = 0.5 }}

[dictionaries.models]
values = ["{model}"]
[dictionaries.datasets]
values = ["{dataset}"]
[dictionaries.jobs]
values = ["{queued}", "{done}"]
[dictionaries.artifacts]
values = ["model.mcz", "report.json"]
[dictionaries.dataset_specs]
values = ["digits", "{dataset}", "eq:xy"]
"""


def _st() -> str:
    found = Path(sys.executable).with_name("st")
    return str(found) if found.exists() else shutil.which("st") or "st"


def _seed(base: str, key: str, data_dir: Path, tmp: Path) -> dict[str, str]:
    import httpx

    from core import heartbeats
    from core.db import Artifact, Job, new_id, session_scope, utcnow
    from core.settings import Settings
    from core.storage import LocalStorage, artifact_key

    data = make_npz_dataset(tmp / "blobs.npz")
    model = make_efficient_kan_checkpoint(tmp / "m.pt", data, [8, 16, 3], steps=5)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        with open(model, "rb") as fh:
            m = client.post("/v1/models", files={"file": ("m.pt", fh, "application/octet-stream")})
        with open(data, "rb") as fh:
            d = client.post(
                "/v1/datasets", files={"file": ("d.npz", fh, "application/octet-stream")}
            )
        assert m.status_code == d.status_code == 201, (m.text, d.text)
        body = {"model_id": m.json()["id"], "dataset": d.json()["id"], "config": {"k": 4}}
        queued = client.post("/v1/jobs", json=body)
        assert queued.status_code == 202, queued.text
        owner = client.get("/v1/keys/self").json()["id"]
    # A finished job with its artifacts, as a worker would have left it, and that
    # worker's heartbeat (with METACLUSTER_WORKER_HEARTBEAT_S of an hour, fresh for the
    # whole run), so /readyz answers as in a deployment with a worker.
    settings = Settings(data_dir=data_dir)
    storage = LocalStorage(settings.storage_root)
    done = new_id("job")
    with session_scope(settings) as s:
        heartbeats.beat(s, "fuzz-stand-in")
        s.add(
            Job(
                id=done,
                owner_id=owner,
                model_id=m.json()["id"],
                dataset="digits",
                config={"k": 4},
                status="succeeded",
                progress=1.0,
                metrics={"metric": "accuracy"},
                created_at=utcnow(),
                finished_at=utcnow(),
                fence=1,
            )
        )
        s.flush()
        for name, payload in (("model.mcz", b"artifact"), ("report.json", b"{}")):
            key_ = artifact_key(done, name, 1)
            blob = storage.put(key_, payload)
            s.add(
                Artifact(
                    id=new_id("art"),
                    job_id=done,
                    name=name,
                    bytes=blob.bytes,
                    sha256=hashlib.sha256(payload).hexdigest(),
                    storage_key=key_,
                )
            )
    return {
        "model": m.json()["id"],
        "dataset": d.json()["id"],
        "queued": queued.json()["id"],
        "done": done,
    }


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    from core.settings import Settings
    from service.embedded import create_key

    data_dir = tmp_path / "data"
    key = create_key("fuzzer", settings=Settings(data_dir=data_dir))["key"]
    port = free_port()
    # The fuzzer sends a few hundred requests a second: lift the rate limit, keep the
    # quota (its 429 is documented and part of what is checked).
    env = child_env(
        {
            "METACLUSTER_DATA_DIR": str(data_dir),
            "METACLUSTER_RATE_LIMIT_PER_S": "10000",
            "METACLUSTER_WORKER_HEARTBEAT_S": "3600",
        }
    )
    args = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    api = Proc(
        "api",
        [*args, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env,
        tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, api)
        ids = _seed(base, key, data_dir, tmp_path)
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG.format(**ids))
        report = tmp_path / "report"
        cmd = [
            _st(),
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "-H",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--exclude-operation-id",
            "revoke_own_key_v1_keys_self_delete",
            "--max-examples",
            str(FUZZ_EXAMPLES),
            "--seed",
            "20261202",
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            "--report",
            "ndjson",
            "--report-dir",
            str(report),
        ]
        run = subprocess.run(
            cmd, env=child_env({}), cwd=tmp_path, capture_output=True, text=True, timeout=900
        )
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "failures" not in out.splitlines()[-1] or " 0 failures" in out.splitlines()[-1], out[
            -3000:
        ]
        # Every operation answered something other than 404 at least once (the seeded
        # ids and the links reach the job, event and artifact endpoints).
        statuses, cases = _statuses(report)
        reached = {op for op, codes in statuses.items() if codes - {401, 404, 422}}
        for op in (
            "GET /v1/jobs/{job_id}",
            "GET /v1/jobs/{job_id}/events",
            "POST /v1/jobs/{job_id}/cancel",
            "GET /v1/jobs/{job_id}/artifacts/{name}",
            "GET /v1/models/{model_id}",
            "GET /v1/datasets/{dataset_id}",
            "POST /v1/jobs",
        ):
            assert op in reached, (op, statuses.get(op))
        assert all(code < 500 for codes in statuses.values() for code in codes), statuses
        print(
            f"schemathesis: {cases} cases, statuses {dict(sorted((k, sorted(v)) for k, v in statuses.items()))}"
        )
        assert "Traceback" not in api.log_tail(100_000), api.log_tail()
    finally:
        api.stop()


def _statuses(report: Path) -> tuple[dict[str, set[int]], int]:
    """(operation -> statuses seen, number of requests) from schemathesis's ndjson events."""
    statuses: dict[str, set[int]] = {}
    n = 0
    for line in next(report.glob("*.ndjson")).read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder", {})
        cases = recorder.get("cases", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            response = interaction.get("response")
            case = cases.get(case_id, {}).get("value", {})
            if not response or not case:
                continue
            n += 1
            op = f"{case['method']} {case['path']}"
            statuses.setdefault(op, set()).add(int(response["status_code"]))
    return statuses, n


pytestmark = pytest.mark.integration
