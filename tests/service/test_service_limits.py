"""Bounded requests and keys: form limits, quotas, rate limits, key listing and revocation,
upload judgement by content, Unicode file names, a database outage as 503.

Memory under hostile uploads is measured on a real process in
tests/integration/test_bounded_resources.py; these check the answers and the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_builders import efficient_kan_bytes, npz_bytes
from service_helpers import CONFIG, OCTET, RecordingEnqueuer, assert_problem, upload_model

from core.db import ApiKey, session_scope
from core.settings import Settings
from service.app import create_app
from service.deps import get_enqueuer


def _client(settings: Settings, enqueuer: RecordingEnqueuer, **changes: Any) -> TestClient:
    app = create_app(settings.model_copy(update=changes))
    app.dependency_overrides[get_enqueuer] = lambda: enqueuer
    return TestClient(app)


def _multipart(fields: list[tuple[str, str]], boundary: str = "bnd") -> bytes:
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    return out + f"--{boundary}--\r\n".encode()


class TestFormLimits:
    def test_too_many_fields_are_refused(self, client: TestClient, auth: dict[str, str]) -> None:
        body = _multipart([(f"f{i}", "x") for i in range(17)])
        headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
        r = client.post("/v1/models", headers=headers, content=body)
        assert "16 form fields" in assert_problem(r, 422, "validation_error")["detail"]

    def test_a_field_given_twice_is_refused(self, client: TestClient, auth: dict[str, str]) -> None:
        body = _multipart([("format", "auto"), ("format", "auto")])
        headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
        assert_problem(
            client.post("/v1/models", headers=headers, content=body), 422, "validation_error"
        )

    def test_a_long_field_is_413(self, client: TestClient, auth: dict[str, str]) -> None:
        body = _multipart([("format", "a" * 4097)])
        headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
        r = client.post("/v1/models", headers=headers, content=body)
        assert "4096 bytes" in assert_problem(r, 413, "payload_too_large")["detail"]

    def test_a_chunked_body_over_the_limit_is_413(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        """No Content-Length: the body is counted as it streams (files, fields, headers)."""

        def body() -> Iterator[bytes]:
            yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.pt"\r\n\r\n'
            for _ in range(settings.max_upload_bytes // 65536 + 4):
                yield b"\0" * 65536

        headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
        r = client.post("/v1/models", headers=headers, content=body())
        assert_problem(r, 413, "payload_too_large")

    def test_the_limits_are_settings(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        with _client(settings, enqueuer, max_form_fields=1, max_form_field_bytes=4) as c:
            headers = {**auth, "Content-Type": "multipart/form-data; boundary=bnd"}
            r = c.post("/v1/models", headers=headers, content=_multipart([("a", "1"), ("b", "2")]))
            assert_problem(r, 422, "validation_error")
            r = c.post("/v1/models", headers=headers, content=_multipart([("format", "12345")]))
            assert_problem(r, 413, "payload_too_large")


class TestUploadsByContent:
    def test_a_checkpoint_labelled_as_anything_is_accepted(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        # httpx labels .pt from the system mime table: "application/vnd.snesdev-page-table"
        data = efficient_kan_bytes([4, 5, 3])
        files = {"file": ("m.pt", data, "application/vnd.snesdev-page-table")}
        r = client.post("/v1/models", headers=auth, files=files)
        assert r.status_code == 201, r.text
        files = {"file": ("d.npz", npz_bytes(), "text/plain")}
        r = client.post("/v1/datasets", headers=auth, files=files)
        assert r.status_code == 201, r.text

    def test_content_that_is_certainly_no_checkpoint_is_415(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        for data in (b"%PDF-1.7 ...", b"<!DOCTYPE html><html>", b"\xff\xd8\xff\xe0jpeg"):
            r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", data, OCTET)})
            assert_problem(r, 415, "unsupported_media_type")
        # an .npz is a zip archive, whatever its label says
        r = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", b"1,2\n", OCTET)})
        assert_problem(r, 415, "unsupported_media_type")

    def test_unicode_file_names_are_kept(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        from core.db import DatasetRecord, ModelRecord

        name = "模型 ü/../Ωmega\u202e.pt"
        r = client.post(
            "/v1/models",
            headers=auth,
            files={"file": (name, efficient_kan_bytes([4, 5, 3]), OCTET)},
        )
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == "Ωmega.pt"  # directory part and control chars gone
        r = client.post(
            "/v1/models",
            headers=auth,
            files={"file": ("模型 ü.pt", efficient_kan_bytes([4, 5, 3]), OCTET)},
        )
        assert r.json()["filename"] == "模型 ü.pt"
        model_id = r.json()["id"]
        r = client.post(
            "/v1/datasets", headers=auth, files={"file": ("données.npz", npz_bytes(), OCTET)}
        )
        assert r.status_code == 201 and r.json()["filename"] == "données.npz"
        with session_scope(settings) as s:
            model = s.get(ModelRecord, model_id)
            assert model is not None and model.storage_key.endswith("/模型 ü.pt")
            assert s.get(DatasetRecord, r.json()["id"]) is not None
        stored = [p.name for p in settings.storage_root.rglob("*") if p.is_file()]
        assert "模型 ü.pt" in stored


class TestSafeFilename:
    @pytest.mark.parametrize(
        ("name", "safe"),
        [
            ("model.pt", "model.pt"),
            ("模型.pt", "模型.pt"),
            ("..\\..\\etc/passwd", "passwd"),
            ("a:b*c?.pt", "a_b_c_.pt"),
            (".hidden", "hidden"),
            ("", "upload"),
            ("e\u0301.pt", "é.pt"),  # NFC
            ("x" * 300 + ".safetensors", "x" * 188 + ".safetensors"),
            ("é" * 150 + ".pt", "é" * 98 + ".pt"),  # 200 UTF-8 bytes, cut on a character
        ],
    )
    def test_safe_filename(self, name: str, safe: str) -> None:
        from service.multipart import safe_filename

        assert safe_filename(name) == safe
        assert len(safe_filename(name).encode()) <= 200


class TestQuota:
    def test_queued_and_running_jobs_per_key_are_bounded(
        self,
        settings: Settings,
        enqueuer: RecordingEnqueuer,
        auth: dict[str, str],
        other_auth: dict[str, str],
    ) -> None:
        from service_helpers import set_job, upload_dataset

        with _client(settings, enqueuer, max_active_jobs_per_key=2) as c:
            body = {
                "model_id": upload_model(c, auth),
                "dataset": upload_dataset(c, auth),
                "config": CONFIG,
            }
            first = c.post("/v1/jobs", headers=auth, json=body)
            second = c.post("/v1/jobs", headers=auth, json=body)
            assert first.status_code == second.status_code == 202
            r = c.post("/v1/jobs", headers=auth, json=body)
            problem = assert_problem(r, 429, "quota_exceeded")
            assert int(r.headers["Retry-After"]) > 0
            assert (problem["active"], problem["limit"]) == (2, 2)
            assert len(enqueuer.calls) == 2
            # a dry run is not a job
            assert c.post("/v1/jobs?dry_run=true", headers=auth, json=body).status_code == 200
            # another key has its own quota
            other = {
                "model_id": upload_model(c, other_auth),
                "dataset": upload_dataset(c, other_auth),
                "config": CONFIG,
            }
            assert c.post("/v1/jobs", headers=other_auth, json=other).status_code == 202
            # a finished job frees its slot
            set_job(settings, first.json()["id"], status="succeeded")
            assert c.post("/v1/jobs", headers=auth, json=body).status_code == 202


class TestRateLimit:
    def test_a_key_over_its_rate_gets_429_and_others_do_not(
        self,
        settings: Settings,
        enqueuer: RecordingEnqueuer,
        auth: dict[str, str],
        other_auth: dict[str, str],
    ) -> None:
        with _client(settings, enqueuer, rate_limit_per_s=0.01, rate_limit_burst=3) as c:
            codes = [c.get("/v1/jobs", headers=auth).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.get("/v1/jobs", headers=auth)
            assert_problem(r, 429, "rate_limited")
            assert int(r.headers["Retry-After"]) >= 1
            assert c.get("/v1/jobs", headers=other_auth).status_code == 200
            # health checks need no key and are not limited
            assert c.get("/healthz").status_code == 200


class TestKeys:
    def test_a_key_sees_and_revokes_itself(
        self, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
    ) -> None:
        me = client.get("/v1/keys/self", headers=auth)
        assert me.status_code == 200
        assert set(me.json()) == {"id", "name", "prefix", "created_at", "revoked_at"}
        assert me.json()["name"] == "alice" and auth["Authorization"].split()[1].startswith(
            me.json()["prefix"]
        )
        r = client.delete("/v1/keys/self", headers=auth)
        assert r.status_code == 204 and r.content == b""
        assert_problem(client.get("/v1/jobs", headers=auth), 401, "unauthorized")
        assert_problem(client.delete("/v1/keys/self", headers=auth), 401, "unauthorized")
        assert client.get("/v1/jobs", headers=other_auth).status_code == 200

    def test_a_key_differing_after_its_prefix_is_refused(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        token = auth["Authorization"].split()[1]
        forged = token[:12] + ("A" if token[12] != "A" else "B") + token[13:]
        r = client.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"})
        assert_problem(r, 401, "unauthorized")

    def test_keys_are_compared_in_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The stored hash is compared with hmac.compare_digest, never with ==."""
        import hmac

        import service.auth as auth_module

        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)

        class Rows:
            def __init__(self, rows: list[ApiKey]) -> None:
                self.rows = rows

            def all(self) -> list[ApiKey]:
                return self.rows

        token = "mck_" + "z" * 43
        row = ApiKey(id="k", name="n", key_hash=auth_module.hash_key(token), prefix=token[:12])

        class Session:
            def scalars(self, _stmt: Any) -> Rows:
                return Rows([row])

        assert auth_module.authenticate(Session(), f"Bearer {token}") is row  # type: ignore[arg-type]
        assert calls == [(row.key_hash.encode(), auth_module.hash_key(token).encode())]

    def test_cli_lists_and_revokes_keys(self, settings: Settings, tmp_path: Any) -> None:
        from click.testing import CliRunner

        from service.commands import keys

        env: dict[str, str | None] = {
            "METACLUSTER_DATA_DIR": str(tmp_path / "cli"),
            "METACLUSTER_DATABASE_URL": None,
        }
        runner = CliRunner()
        from core.settings import get_settings

        get_settings.cache_clear()
        try:
            made = runner.invoke(keys, ["create", "--name", "ci", "--json"], env=env)
            assert made.exit_code == 0, made.output
            key = json.loads(made.stdout)
            listed = runner.invoke(keys, ["list", "--json"], env=env)
            rows = json.loads(listed.stdout)["keys"]
            assert [(r["id"], r["name"], r["revoked_at"]) for r in rows] == [
                (key["id"], "ci", None)
            ]
            assert "key" not in rows[0] and key["key"].startswith(rows[0]["prefix"])
            revoked = runner.invoke(keys, ["revoke", key["id"][:8], "--json"], env=env)
            assert revoked.exit_code == 0 and json.loads(revoked.stdout)["revoked_at"]
            missing = runner.invoke(keys, ["revoke", "no-such-key"], env=env)
            assert missing.exit_code != 0
        finally:
            get_settings.cache_clear()


class TestKeyCache:
    def test_only_verified_keys_are_kept_and_only_for_the_ttl(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import service.auth as auth_module

        now = [100.0]
        monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
        cache = auth_module.KeyCache(2.0)
        row = ApiKey(id="k1", name="n", key_hash="h", prefix="p")
        assert cache.get("d") is None
        cache.put("d", row)
        assert cache.get("d") is row
        now[0] += 2.5
        assert cache.get("d") is None  # expired: the next request asks the database
        cache.put("d", row)
        cache.forget("k1")
        assert cache.get("d") is None
        off = auth_module.KeyCache(0.0)
        off.put("d", row)
        assert off.get("d") is None

    def test_a_key_revoked_in_the_database_is_refused_once_the_cache_expired(
        self, settings: Settings, enqueuer: RecordingEnqueuer, auth: dict[str, str]
    ) -> None:
        from sqlalchemy import select

        from core.db import utcnow
        from service.auth import hash_key

        with _client(settings, enqueuer, auth_cache_s=0) as c:
            assert c.get("/v1/jobs", headers=auth).status_code == 200
            with session_scope(settings) as s:
                token = auth["Authorization"][7:]
                s.scalars(
                    select(ApiKey).where(ApiKey.key_hash == hash_key(token))
                ).one().revoked_at = utcnow()
            assert_problem(c.get("/v1/jobs", headers=auth), 401, "unauthorized")


class TestDatabaseOutage:
    def test_an_unreachable_database_is_503_problem(
        self, client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sqlalchemy.exc import OperationalError

        import service.job_requests as jr

        def down(*_a: Any, **_k: Any) -> Any:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

        monkeypatch.setattr(jr.JobRepository, "view_page", down)
        r = client.get("/v1/jobs", headers=auth)
        assert_problem(r, 503, "unavailable")
        assert r.headers["Retry-After"] == "2"


def test_openapi_documents_429_and_the_new_codes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        if path.startswith("/v1/"):
            for method, op in item.items():
                assert "429" in op["responses"], (method, path)
    assert (
        "device_unavailable" in spec["paths"]["/v1/jobs"]["post"]["responses"]["422"]["description"]
    )


def test_a_body_that_is_not_utf8_json_is_a_documented_400(
    client: TestClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    r = client.post("/v1/jobs?dry_run=true", headers=headers, content=b"\xff")
    assert_problem(r, 400, "invalid_json")
    spec = client.get("/openapi.json").json()
    assert "400" in spec["paths"]["/v1/jobs"]["post"]["responses"]
