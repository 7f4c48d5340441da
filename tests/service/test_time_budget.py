"""A time budget too small for even the fast effort is refused when the job is asked for."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_helpers import CONFIG, RecordingEnqueuer, assert_problem, upload_model


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_time_budget_too_small_is_invalid_config(
    client: TestClient, auth: dict[str, str], enqueuer: RecordingEnqueuer, dry_run: bool
) -> None:
    model_id = upload_model(client, auth, [64, 4, 10])
    body = {"model_id": model_id, "dataset": "digits"}
    r = client.post(
        f"/v1/jobs?dry_run={str(dry_run).lower()}",
        headers=auth,
        json={**body, "config": {**CONFIG, "time_budget_s": 1}},
    )
    assert_problem(r, 422, "invalid_config")
    assert "too small" in r.json()["detail"] and enqueuer.calls == []
    ok = client.post(
        "/v1/jobs?dry_run=true",
        headers=auth,
        json={**body, "config": {**CONFIG, "time_budget_s": 600, "effort": "fast"}},
    )
    assert ok.status_code == 200, ok.text
