"""The OpenAPI document describes every endpoint, schema and error response."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

PUBLIC = {"/healthz", "/readyz", "/metrics"}
EXPECTED_PATHS = {
    "/v1/models",
    "/v1/models/{model_id}",
    "/v1/datasets",
    "/v1/datasets/{dataset_id}",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/jobs/{job_id}/events",
    "/v1/jobs/{job_id}/cancel",
    "/v1/jobs/{job_id}/artifacts/{name}",
    "/v1/jobs/{job_id}/report",
    "/v1/webhooks/secret",
    "/v1/webhooks/secret/rotate",
    "/v1/keys/self",
    *PUBLIC,
}


def _spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec: dict[str, Any] = r.json()
    return spec


def test_every_endpoint_is_described(client: TestClient) -> None:
    spec = _spec(client)
    assert set(spec["paths"]) == EXPECTED_PATHS
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            assert any(code.startswith("2") for code in op["responses"]), f"{method} {path}"


def test_every_error_is_a_problem(client: TestClient) -> None:
    spec = _spec(client)
    assert {"title", "status", "detail", "code"} <= set(
        spec["components"]["schemas"]["Problem"]["required"]
    )
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            errors = {
                c: r for c, r in op["responses"].items() if c[0] in "45" and path not in PUBLIC
            }
            if path not in PUBLIC:
                assert "401" in errors, f"{method} {path} does not document 401"
            for code, response in errors.items():
                assert response["description"], (method, path, code)
                ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Problem", (method, path, code)


def test_error_codes_per_route(client: TestClient) -> None:
    paths = _spec(client)["paths"]
    assert {"401", "413", "415", "422"} <= set(paths["/v1/models"]["post"]["responses"])
    assert {"401", "413", "415", "422"} <= set(paths["/v1/datasets"]["post"]["responses"])
    assert {"200", "202", "404", "409", "422"} <= set(paths["/v1/jobs"]["post"]["responses"])
    assert "409" in paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "multipart/form-data" in paths["/v1/models"]["post"]["requestBody"]["content"]
    params = {p["name"] for p in paths["/v1/jobs"]["post"]["parameters"]}
    assert {"dry_run", "Idempotency-Key"} <= params
    assert {p["name"] for p in paths["/v1/jobs"]["get"]["parameters"]} >= {"after", "limit"}
    assert "HTTPBearer" in _spec(client)["components"]["securitySchemes"]
    for path in ("/v1/models/{model_id}", "/v1/datasets/{dataset_id}", "/v1/jobs/{job_id}"):
        assert {"204", "401", "404", "409"} <= set(paths[path]["delete"]["responses"]), path
    events = paths["/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert "Last-Event-ID" in {p["name"] for p in events["parameters"]}
    assert "text/html" in paths["/v1/jobs/{job_id}/report"]["get"]["responses"]["200"]["content"]
