"""problem+json for errors outside the routes' own: unknown paths, wrong methods, crashes."""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_helpers import assert_problem

from core.settings import Settings
from service.app import create_app
from service.deps import get_enqueuer


def test_unknown_path_and_method(client: TestClient, auth: dict[str, str]) -> None:
    assert_problem(client.get("/v1/nothing-here", headers=auth), 404, "not_found")
    assert_problem(client.delete("/v1/jobs", headers=auth), 405, "method_not_allowed")


def test_unexpected_error_is_a_500_problem_without_internals(
    settings: Settings, auth: dict[str, str]
) -> None:
    app = create_app(settings)

    def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.dependency_overrides[get_enqueuer] = explode
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/jobs", headers=auth, json={"model_id": "mdl_x", "dataset": "digits"})
    body = assert_problem(r, 500, "internal")
    assert "secret" not in r.text and body["instance"] == "/v1/jobs"
