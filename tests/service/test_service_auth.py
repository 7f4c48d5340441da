"""API keys: hashed storage, Bearer auth (401 problems), and tenant isolation (404s)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import CONFIG, add_artifact, assert_problem, upload_dataset, upload_model
from sqlalchemy import select

from core.db import ApiKey, session_scope, utcnow
from core.settings import Settings
from service.auth import create_api_key, generate_api_key, hash_key


class TestKeys:
    def test_generated_keys_are_random_and_hashed(self) -> None:
        (a, ha), (b, hb) = generate_api_key(), generate_api_key()
        assert a.startswith("mck_") and len(a) > 40 and a != b
        assert ha == hash_key(a) and len(ha) == 64 and ha != hb

    def test_only_the_hash_is_stored(self, settings: Settings) -> None:
        with session_scope(settings) as s:
            row, plaintext = create_api_key(s, "ci")
            key_id = row.id
        with session_scope(settings) as s:
            stored = s.get(ApiKey, key_id)
            assert stored is not None
            assert stored.key_hash == hash_key(plaintext) and plaintext not in stored.key_hash
            assert plaintext.startswith(stored.prefix) and len(stored.prefix) < len(plaintext) // 3

    def test_empty_name_refused(self, settings: Settings) -> None:
        from metacluster.errors import InputError

        with pytest.raises(InputError), session_scope(settings) as s:
            create_api_key(s, "  ")


class TestUnauthorized:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer mck_wrong"},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer"},
        ],
    )
    def test_missing_or_bad_key_is_401(self, client: TestClient, headers: dict[str, str]) -> None:
        for method, path in [
            ("GET", "/v1/jobs"),
            ("GET", "/v1/models/mdl_x"),
            ("POST", "/v1/models"),
        ]:
            r = client.request(method, path, headers=headers)
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"

    def test_revoked_key_is_401(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        # (no verified-key cache in this app: a revocation counts at once; with the
        # default METACLUSTER_AUTH_CACHE_S it counts within that many seconds)
        client.app.state.key_cache.ttl_s = 0  # type: ignore[attr-defined]
        assert client.get("/v1/jobs", headers=auth).status_code == 200
        with session_scope(settings) as s:
            row = s.scalars(
                select(ApiKey).where(ApiKey.key_hash == hash_key(auth["Authorization"][7:]))
            ).one()
            row.revoked_at = utcnow()
        assert_problem(client.get("/v1/jobs", headers=auth), 401, "unauthorized")


class TestTenantIsolation:
    def test_other_keys_ids_answer_404(
        self,
        client: TestClient,
        auth: dict[str, str],
        other_auth: dict[str, str],
        settings: Settings,
    ) -> None:
        model_id = upload_model(client, auth)
        dataset_id = upload_dataset(client, auth)
        job_id = client.post(
            "/v1/jobs",
            headers=auth,
            json={"model_id": model_id, "dataset": dataset_id, "config": CONFIG},
        ).json()["id"]
        add_artifact(settings, job_id, "model.mcz", b"abc")
        assert client.get(f"/v1/jobs/{job_id}/artifacts/model.mcz", headers=auth).status_code == 200

        reads: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/v1/models/{model_id}", None),
            ("GET", f"/v1/datasets/{dataset_id}", None),
            ("GET", f"/v1/jobs/{job_id}", None),
            ("GET", f"/v1/jobs/{job_id}/events", None),
            ("GET", f"/v1/jobs/{job_id}/artifacts/model.mcz", None),
            ("POST", f"/v1/jobs/{job_id}/cancel", None),
            ("POST", "/v1/jobs", {"model_id": model_id, "dataset": "digits"}),
        ]
        for method, path, body in reads:
            assert_problem(
                client.request(method, path, headers=other_auth, json=body), 404, "not_found"
            )
        # B's own model with A's dataset id: still 404
        b_model = upload_model(client, other_auth)
        r = client.post(
            "/v1/jobs", headers=other_auth, json={"model_id": b_model, "dataset": dataset_id}
        )
        assert_problem(r, 404, "not_found")
        assert client.get("/v1/jobs", headers=other_auth).json()["items"] == []
        # and A's job is untouched by B's cancel attempt
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["cancel_requested"] is False
