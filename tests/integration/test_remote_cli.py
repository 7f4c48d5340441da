"""`metacluster remote ...` as a pipeline runs it: subprocesses against the real stack
(uvicorn, celery worker, Redis, PostgreSQL), URL and key from the environment, JSON on
stdout, progress on stderr, and the exit codes a pipeline gates on."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack
from .test_redis_postgres import QUICK

pytestmark = pytest.mark.integration


def _metacluster() -> list[str]:
    script = Path(sys.executable).with_name("metacluster")
    return [str(script)] if script.exists() else [shutil.which("metacluster") or "metacluster"]


def remote(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        **stack.env,
        "METACLUSTER_URL": str(stack.client.base_url),
        "METACLUSTER_API_KEY": stack.key["key"],
    }
    return subprocess.run(
        [*_metacluster(), "remote", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout  # one JSON object, nothing else on stdout
    data: dict[str, Any] = json.loads(lines[0])
    return data


def test_submit_wait_gate_download_and_the_other_commands(
    stack: Stack, inputs: dict[str, Path], tmp_path: Path
) -> None:
    stack.ensure_one_worker()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: v for k, v in QUICK.items() if k != "k"}))
    out = remote(
        stack,
        "submit",
        str(inputs["model"]),
        "--data",
        str(inputs["data"]),  # a local .npz: uploaded first
        "--k",
        "4",
        "--config",
        str(config),
        "--wait",
        "--progress",
        "--min-ratio",
        "1.5",
        "--max-drop",
        "1",
        "--download",
        str(tmp_path),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = _json(out)
    job = result["job"]
    assert job["status"] == "succeeded" and job["config"]["k"] == 4
    assert result["gate"]["passed"] is True and result["gate"]["ratio"] == job["metrics"]["ratio"]
    artifact = Path(result["artifact"])
    assert artifact == tmp_path / "model.mcz"
    sha = next(a["sha256"] for a in job["artifacts"] if a["name"] == "model.mcz")
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == sha
    assert "uploaded model" in out.stderr and "uploaded dataset" in out.stderr
    assert "%" in out.stderr  # the progress bar
    job_id = job["id"]

    # A gate the job misses: exit 5, and the reason on stderr.
    missed = remote(stack, "wait", job_id, "--min-ratio", "1e9")
    assert missed.returncode == 5, missed.stderr
    assert "gate missed: ratio" in missed.stderr
    strict = remote(stack, "wait", job_id, "--max-drop", "-1", "--json")
    assert strict.returncode == 5 and _json(strict)["gate"]["failures"][0].startswith("metric drop")

    status = _json(remote(stack, "status", job_id, "--json"))
    assert status["job"]["id"] == job_id
    evts = _json(remote(stack, "events", job_id, "--json"))["events"]
    assert [e["seq"] for e in evts] == list(range(1, len(evts) + 1))
    assert evts[-1]["kind"] == "status" and evts[-1]["data"]["status"] == "succeeded"
    human = remote(stack, "events", job_id, "--no-follow")
    assert human.returncode == 0 and "status" in human.stdout
    listed = _json(remote(stack, "jobs", "--status", "succeeded", "--limit", "50", "--json"))
    assert job_id in [j["id"] for j in listed["jobs"]]
    got = _json(remote(stack, "download", job_id, "--out", str(tmp_path / "again.mcz"), "--json"))
    assert got["sha256"] == sha and Path(got["path"]).read_bytes() == artifact.read_bytes()
    dry = remote(
        stack,
        "submit",
        job["model_id"],
        "--data",
        job["dataset"],
        "--k",
        "4",
        "--dry-run",
        "--json",
    )
    assert dry.returncode == 0 and _json(dry)["valid"] is True


def test_exit_codes_for_cancelled_failed_and_timed_out_jobs(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    from core import jobs
    from core.db.session import session_scope

    model, data = uploaded["model"]["id"], uploaded["dataset"]["id"]
    # device cuda: the GPU queue has no worker here, so the job waits as long as we like.
    parked = remote(stack, "submit", model, "--data", data, "--set", 'device="cuda"', "--k", "4")
    assert parked.returncode == 0, parked.stderr
    job_id = parked.stdout.strip()
    assert job_id.startswith("job_")

    timed_out = remote(stack, "wait", job_id, "--timeout", "1.5", "--no-progress")
    assert timed_out.returncode == 6 and "did not finish in time" in timed_out.stderr

    cancel = _json(remote(stack, "cancel", job_id, "--json"))
    assert cancel["job"]["status"] == "cancelled"
    assert remote(stack, "wait", job_id).returncode == 4

    other = remote(stack, "submit", model, "--data", data, "--set", 'device="cuda"').stdout.strip()
    with session_scope(stack.settings()) as session:  # as a worker would end it
        jobs.fail(session, other, "failed", {"code": "internal", "message": "boom"})
    failed = remote(stack, "wait", other, "--json")
    assert failed.returncode == 3 and _json(failed)["job"]["error"]["code"] == "internal"


def test_usage_and_service_errors_are_one_line(stack: Stack) -> None:
    no_url = remote(stack, "jobs", env={"METACLUSTER_URL": ""})
    assert no_url.returncode == 2 and "METACLUSTER_URL" in no_url.stderr
    bad_key = remote(stack, "jobs", env={"METACLUSTER_API_KEY": "mck_wrong"})
    assert bad_key.returncode == 1
    assert (
        bad_key.stderr.startswith("error: 401 unauthorized")
        and len(bad_key.stderr.splitlines()) == 1
    )
    missing = remote(stack, "status", "job_nope")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr
    down = remote(stack, "jobs", env={"METACLUSTER_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot talk to the service" in down.stderr
    both = remote(stack, "submit", "m.pt", "--data", "digits", "--k", "4", "--target-ratio", "9")
    assert both.returncode == 2
