"""Bounds that hold before a route runs (issue 18): the JSON body limit, the stored
config's size, one bounded integer parser for headers and query strings, HEAD on every
GET route, `/metrics` behind the operator's token, oversized part headers as 413.

Memory is measured on a real process in tests/integration/test_bounded_resources.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from service_helpers import CONFIG, RecordingEnqueuer, assert_problem, upload_model

from core.db import Job, new_id, session_scope
from core.settings import Settings
from service.app import create_app
from service.deps import get_enqueuer
from service.limits import MAX_INT64, parse_int

# Each refused by the one parser: past 2**63-1, 5000 digits, U+00B2 (str.isdigit() is
# True, int() fails), a sign, a space, an exponent, nothing.
BAD_INTEGERS = ["18446744073709551616", "9" * 5000, "\u00b2", "-1", " 1", "1e3", ""]


def _client(settings: Settings, enqueuer: RecordingEnqueuer, **changes: Any) -> TestClient:
    app = create_app(settings.model_copy(update=changes))
    app.dependency_overrides[get_enqueuer] = lambda: enqueuer
    return TestClient(app)


def _job(settings: Settings, client: TestClient, auth: dict[str, str]) -> str:
    owner = client.get("/v1/keys/self", headers=auth).json()["id"]
    model_id = upload_model(client, auth)
    job_id = new_id("job")
    with session_scope(settings) as s:
        s.add(Job(id=job_id, owner_id=owner, model_id=model_id, dataset="digits", config={}))
    return job_id


class TestJsonBodyLimit:
    def test_a_body_over_the_limit_is_413_from_its_content_length(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        body = b'{"model_id": "mdl_x", "dataset": "digits", "config": {"pad": "' + b"x" * 5000
        with _client(settings, enqueuer, max_json_bytes=4096) as client:
            r = client.post(
                "/v1/jobs?dry_run=true",
                headers={**auth, "Content-Type": "application/json"},
                content=body + b'"}}',
            )
        assert "4096 bytes" in assert_problem(r, 413, "payload_too_large")["detail"]

    def test_a_chunked_body_is_cut_off_at_the_limit(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        sent: list[int] = []

        def chunks() -> Iterator[bytes]:
            yield b'{"model_id": "mdl_x", "dataset": "digits", "config": {"pad": "'
            for i in range(1000):
                sent.append(i)
                yield b"x" * 1024
            yield b'"}}'

        with _client(settings, enqueuer, max_json_bytes=8192) as client:
            r = client.post(
                "/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=chunks()
            )
        assert_problem(r, 413, "payload_too_large")
        assert enqueuer.calls == []

    def test_every_json_route_has_the_limit(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        with _client(settings, enqueuer, max_json_bytes=100) as client:
            for path in ("/v1/jobs", "/v1/webhooks/secret/rotate", "/v1/jobs/job_x/cancel"):
                r = client.post(path, headers=auth, json={"pad": "x" * 200})
                assert_problem(r, 413, "payload_too_large")
            # the uploads keep their own (larger) limit
            assert upload_model(client, auth).startswith("mdl_")

    def test_a_config_over_its_bound_is_413_and_not_stored(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        model_id = upload_model(client, auth)
        config = {**CONFIG, "notes": "x" * settings.max_config_bytes}
        for dry_run in ("true", "false"):
            r = client.post(
                f"/v1/jobs?dry_run={dry_run}",
                headers=auth,
                json={"model_id": model_id, "dataset": "digits", "config": config},
            )
            body = assert_problem(r, 413, "payload_too_large")
            assert "config" in body["detail"] and str(settings.max_config_bytes) in body["detail"]
        assert client.get("/v1/jobs", headers=auth).json()["items"] == []


class TestIntegerParser:
    @pytest.mark.parametrize("text", BAD_INTEGERS)
    def test_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"ASCII digits|between"):
            parse_int(text, name="n")

    def test_bounds(self) -> None:
        assert parse_int("0", name="n") == 0
        assert parse_int(str(MAX_INT64), name="n") == MAX_INT64
        assert parse_int("007", name="n") == 7
        with pytest.raises(ValueError, match="between"):
            parse_int(str(MAX_INT64 + 1), name="n")
        with pytest.raises(ValueError, match="between 1 and 5"):
            parse_int("6", name="n", minimum=1, maximum=5)

    @pytest.mark.parametrize("text", BAD_INTEGERS)
    def test_last_event_id_is_bounded(
        self, settings: Settings, client: TestClient, auth: dict[str, str], text: str
    ) -> None:
        job_id = _job(settings, client, auth)
        headers = {**auth, "Accept": "text/event-stream", "Last-Event-ID": text.encode("latin-1")}
        if len(text) > 1000:  # an HTTP header of 5000 digits
            headers["Last-Event-ID"] = text.encode()
        r = client.get(f"/v1/jobs/{job_id}/events", headers=headers)
        assert "Last-Event-ID" in assert_problem(r, 422, "validation_error")["detail"]

    @pytest.mark.parametrize("text", BAD_INTEGERS)
    @pytest.mark.parametrize("param", ["after", "limit"])
    def test_query_integers_are_bounded(
        self, settings: Settings, client: TestClient, auth: dict[str, str], text: str, param: str
    ) -> None:
        job_id = _job(settings, client, auth)
        for path in (f"/v1/jobs/{job_id}/events", "/v1/jobs", "/v1/models"):
            if param == "after" and path != f"/v1/jobs/{job_id}/events":
                continue  # the lists' cursors are ids, not integers
            r = client.get(path, headers=auth, params={param: text})
            assert_problem(r, 422, "validation_error")

    def test_the_largest_event_id_is_an_empty_page(
        self, settings: Settings, client: TestClient, auth: dict[str, str]
    ) -> None:
        job_id = _job(settings, client, auth)
        r = client.get(f"/v1/jobs/{job_id}/events", headers=auth, params={"after": MAX_INT64})
        assert r.status_code == 200 and r.json()["items"] == []


def _get_paths(client: TestClient) -> list[str]:
    """Every GET route of the app, its path parameters filled with a dummy value."""
    paths = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # an included router
            if inner is not None:
                walk(inner.routes)
            elif isinstance(route, APIRoute) and "GET" in route.methods:
                path = route.path
                for name in route.param_convertors:
                    path = path.replace("{" + name + "}", "x1")
                paths.append(path)

    walk(client.app.routes)  # type: ignore[attr-defined]
    return paths


def test_head_is_answered_wherever_get_is(
    settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
) -> None:
    with _client(settings, enqueuer, metrics_token=SecretStr("t0ken")) as client:
        paths = _get_paths(client)
        assert {"/healthz", "/v1/jobs", "/v1/jobs/x1", "/metrics", "/"} <= set(paths)
        for path in paths:
            headers = {**auth, "Authorization": "Bearer t0ken"} if path == "/metrics" else auth
            get, head = client.get(path, headers=headers), client.head(path, headers=headers)
            assert head.status_code == get.status_code != 405, path
            assert head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
            if "content-length" in get.headers and path != "/metrics":
                assert head.headers["content-length"] == get.headers["content-length"], path
        # a path with no GET still refuses HEAD
        assert client.head("/v1/jobs/x1/cancel", headers=auth).status_code == 405


class TestMetricsAccess:
    def test_off_without_a_token(self, client: TestClient, auth: dict[str, str]) -> None:
        assert_problem(client.get("/metrics"), 404, "not_found")
        assert_problem(client.get("/metrics", headers=auth), 404, "not_found")

    def test_only_the_operator_token_reads_them(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        with _client(settings, enqueuer, metrics_token=SecretStr("s3cret-token")) as client:
            assert_problem(client.get("/metrics"), 401, "unauthorized")
            assert_problem(client.get("/metrics", headers=auth), 401, "unauthorized")
            wrong = {"Authorization": "Bearer s3cret-tokem"}
            assert_problem(client.get("/metrics", headers=wrong), 401, "unauthorized")
            r = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert r.status_code == 200
        labels = {
            name
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
            for name in s.labels
        }
        # aggregates only: nothing names a key, an owner, a job or a model
        assert labels <= {"method", "route", "status", "stage", "le"}, labels


def test_part_headers_over_8_kb_are_413(client: TestClient, auth: dict[str, str]) -> None:
    for pad in ("X-Pad: " + "a" * 9000, "\r\n".join(f"X-{i}: " + "a" * 1000 for i in range(9))):
        body = (
            '--bnd\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n'
            f"{pad}\r\n\r\nxx\r\n--bnd--\r\n"
        ).encode()
        headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
        r = client.post("/v1/models", headers=headers, content=body)
        assert "8192" in assert_problem(r, 413, "payload_too_large")["detail"]
