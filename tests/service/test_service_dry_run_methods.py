"""The dry run and job creation apply the method's own preconditions (the plan's): a
config the dry run accepts cannot fail later as `invalid_config` or `internal`."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import RecordingEnqueuer, assert_problem, upload_dataset, upload_model

# The helpers' efficient-kan 4-5-3 model: 20 + 15 edges, vectors of length 9.
QUICK: dict[str, Any] = {"method": "pq", "finetune_epochs": 1, "baselines": False}


@pytest.fixture
def inputs(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    return {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits": 16}, "65536 centroids per sub-quantizer, but layers.0 has only 20 vectors"),
        ({"m": 64}, "m=64 must divide the vector length 9"),
        ({"m": 3, "bits": 4}, "layers.1 has only 15 vectors to train them on (bits <= 3 fits)"),
    ],
)
def test_dry_run_and_creation_refuse_what_the_run_would(
    client: TestClient,
    auth: dict[str, str],
    inputs: dict[str, str],
    enqueuer: RecordingEnqueuer,
    options: dict[str, int],
    message: str,
) -> None:
    body = {**inputs, "config": {**QUICK, "method_options": options}}
    for url in ("/v1/jobs?dry_run=true", "/v1/jobs"):
        problem = assert_problem(client.post(url, headers=auth, json=body), 422, "invalid_config")
        assert message in problem["detail"]
        assert [c["name"] for c in problem["checks"] if not c["ok"]] == ["method"]
    assert enqueuer.calls == []
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_dry_run_reports_the_method_check_when_it_fits(
    client: TestClient, auth: dict[str, str], inputs: dict[str, str]
) -> None:
    body = {**inputs, "config": {**QUICK, "method_options": {"m": 3, "bits": 3}}}
    r = client.post("/v1/jobs?dry_run=true", headers=auth, json=body)
    assert r.status_code == 200, r.text
    method = [c for c in r.json()["checks"] if c["name"] == "method"]
    assert method == [
        {"name": "method", "ok": True, "detail": "pq: m=3 and 8 centroids fit every codebook group"}
    ]
