"""Artifact download: bytes, sha256 headers, Content-Length, conditional GET, 404s."""

from __future__ import annotations

import hashlib
import os

from fastapi.testclient import TestClient
from service_helpers import (
    CONFIG,
    add_artifact,
    assert_problem,
    set_job,
    upload_dataset,
    upload_model,
)

from core.settings import Settings


def test_download_with_checksum_headers(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
    data = os.urandom(70_000)
    sha = add_artifact(settings, job_id, "model.mcz", data)
    add_artifact(settings, job_id, "report.json", b'{"ratio": 3.5}')
    set_job(settings, job_id, status="succeeded", progress=1.0, metrics={"ratio": 3.5})

    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert [(a["name"], a["bytes"]) for a in job["artifacts"]] == [
        ("model.mcz", 70_000),
        ("report.json", 14),
    ]
    url = job["artifacts"][0]["url"]
    assert url == f"/v1/jobs/{job_id}/artifacts/model.mcz"

    r = client.get(url, headers=auth)
    assert r.status_code == 200
    assert r.content == data and hashlib.sha256(r.content).hexdigest() == sha
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["etag"] == f'"{sha}"' and r.headers["x-checksum-sha256"] == sha
    assert r.headers["content-type"] == "application/octet-stream"
    assert "model.mcz" in r.headers["content-disposition"]

    cached = client.get(url, headers={**auth, "If-None-Match": f'"{sha}"'})
    assert cached.status_code == 304 and cached.content == b""
    stale = client.get(url, headers={**auth, "If-None-Match": '"0000"'})
    assert stale.status_code == 200

    assert_problem(
        client.get(f"/v1/jobs/{job_id}/artifacts/nope.bin", headers=auth), 404, "not_found"
    )
