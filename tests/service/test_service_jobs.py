"""Jobs API: create + enqueue after commit, idempotency, dry run, pagination, cancel, events."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_builders import make_key
from service_helpers import (
    CONFIG,
    RecordingEnqueuer,
    assert_problem,
    set_job,
    upload_dataset,
    upload_model,
)
from sqlalchemy import func, select

from core.db import Job, JobEvent, session_scope, utcnow
from core.settings import Settings
from metacluster.data import builtin_sample_count
from service.app import create_app
from service.deps import get_enqueuer


@pytest.fixture
def inputs(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    return {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}


def n_jobs(settings: Settings) -> int:
    with session_scope(settings) as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


class TestCreate:
    def test_created_queued_and_enqueued_after_commit(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        enqueuer: RecordingEnqueuer,
    ) -> None:
        seen: list[str] = []

        def check_committed(job_id: str, queue: str) -> None:
            # Another connection must already see the row when the task is sent.
            with session_scope(settings) as s:
                row = s.get(Job, job_id)
                seen.append(row.status if row else "missing")

        enqueuer.hook = check_committed
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert (job["status"], job["progress"], job["stage"]) == ("queued", 0.0, None)
        assert job["config"]["k"] == 4 and job["config"]["d_emb"] == 2  # defaults filled in
        assert job["artifacts"] == [] and job["metrics"] is None and job["error"] is None
        assert enqueuer.calls == [(job["id"], "cpu")]
        assert seen == ["queued"]
        got = client.get(r.headers["location"], headers=auth)
        assert got.status_code == 200 and got.json()["id"] == job["id"]
        events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["items"]
        assert [(e["seq"], e["kind"], e["message"]) for e in events] == [(1, "status", "queued")]

    def test_device_routes_to_queue(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        enqueuer: RecordingEnqueuer,
    ) -> None:
        app: Any = client.app
        app.state.settings = settings.model_copy(update={"worker_devices": ["cpu", "cuda"]})
        r = client.post(
            "/v1/jobs", headers=auth, json={**inputs, "config": {**CONFIG, "device": "cuda"}}
        )
        assert r.status_code == 202 and r.json()["queue"] == "gpu"
        assert enqueuer.calls[-1][1] == "gpu"

    @pytest.mark.parametrize("dry_run", [False, True])
    @pytest.mark.parametrize("device", ["cuda", "cuda:1"])
    def test_a_device_no_worker_has_is_refused(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        enqueuer: RecordingEnqueuer,
        device: str,
        dry_run: bool,
    ) -> None:
        app: Any = client.app
        app.state.settings = settings.model_copy(update={"worker_devices": ["cpu"]})
        before = n_jobs(settings)
        r = client.post(
            f"/v1/jobs?dry_run={str(dry_run).lower()}",
            headers=auth,
            json={**inputs, "config": {**CONFIG, "device": device}},
        )
        assert_problem(r, 422, "device_unavailable")
        assert r.json()["available"] == ["cpu"] and enqueuer.calls == []
        assert n_jobs(settings) == before

    def test_builtin_dataset(
        self, client: TestClient, auth: dict[str, str], enqueuer: RecordingEnqueuer
    ) -> None:
        model_id = upload_model(client, auth, [64, 4, 10])  # digits: 8x8 inputs, 10 classes
        r = client.post(
            "/v1/jobs",
            headers=auth,
            json={"model_id": model_id, "dataset": "digits", "config": CONFIG},
        )
        assert r.status_code == 202, r.text
        assert r.json()["dataset"] == "digits" and len(enqueuer.calls) == 1

    @pytest.mark.parametrize("dataset", ["/etc/passwd", "../data/x.npz", "nope"])
    def test_paths_and_unknown_names_are_refused(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str], dataset: str
    ) -> None:
        r = client.post(
            "/v1/jobs", headers=auth, json={"model_id": inputs["model_id"], "dataset": dataset}
        )
        assert_problem(r, 422, "invalid_dataset")

    def test_invalid_config(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": {"k": 1}})
        assert "k must be" in assert_problem(r, 422, "invalid_config")["detail"]
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": {"colour": "red"}})
        assert "colour" in assert_problem(r, 422, "invalid_config")["detail"]

    def test_body_validation_is_problem_json(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        r = client.post("/v1/jobs", headers=auth, json={"dataset": "digits"})
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["body", "model_id"]

    def test_unknown_model_is_404(self, client: TestClient, auth: dict[str, str]) -> None:
        r = client.post(
            "/v1/jobs", headers=auth, json={"model_id": "mdl_nope", "dataset": "digits"}
        )
        assert_problem(r, 404, "not_found")

    def test_broker_failure_marks_job_failed(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
    ) -> None:
        # The real Celery enqueuer against a broker that is not there.
        from service.deps import get_enqueuer
        from service.job_requests import BrokerEnqueuer

        broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
        client.app.dependency_overrides[get_enqueuer] = lambda: BrokerEnqueuer(broken)  # type: ignore[attr-defined]
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG})
        assert_problem(r, 503, "unavailable")
        page = client.get("/v1/jobs", headers=auth).json()["items"]
        assert len(page) == 1 and page[0]["status"] == "failed"
        assert page[0]["error"]["code"] == "enqueue_failed"


class TestIdempotency:
    def test_same_key_same_body_is_one_job(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        enqueuer: RecordingEnqueuer,
    ) -> None:
        hdrs = {**auth, "Idempotency-Key": "abc-1"}
        first = client.post("/v1/jobs", headers=hdrs, json={**inputs, "config": CONFIG})
        second = client.post("/v1/jobs", headers=hdrs, json={**inputs, "config": CONFIG})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["location"] == first.headers["location"]
        assert len(enqueuer.calls) == 1
        assert len(client.get("/v1/jobs", headers=auth).json()["items"]) == 1

    def test_same_key_other_body_is_409(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        enqueuer: RecordingEnqueuer,
    ) -> None:
        hdrs = {**auth, "Idempotency-Key": "abc-2"}
        assert (
            client.post("/v1/jobs", headers=hdrs, json={**inputs, "config": CONFIG}).status_code
            == 202
        )
        r = client.post("/v1/jobs", headers=hdrs, json={**inputs, "config": {**CONFIG, "k": 5}})
        assert_problem(r, 409, "idempotency_conflict")
        assert len(enqueuer.calls) == 1

    def test_keys_are_per_api_key(
        self,
        client: TestClient,
        auth: dict[str, str],
        other_auth: dict[str, str],
        inputs: dict[str, str],
    ) -> None:
        mine = client.post(
            "/v1/jobs", headers={**auth, "Idempotency-Key": "k"}, json={**inputs, "config": CONFIG}
        )
        other_inputs = {
            "model_id": upload_model(client, other_auth),
            "dataset": upload_dataset(client, other_auth),
        }
        theirs = client.post(
            "/v1/jobs",
            headers={**other_auth, "Idempotency-Key": "k"},
            json={**other_inputs, "config": CONFIG},
        )
        assert mine.status_code == theirs.status_code == 202
        assert mine.json()["id"] != theirs.json()["id"]


class TestBuiltinSizeCap:
    """Built-ins are generated by the API to learn their shape: huge option values are refused."""

    @pytest.mark.parametrize(
        ("spec", "samples"),
        [
            ("digits", None),
            ("digits?test_fraction=0.5", None),
            ("eq:xy", 2000),
            ("eq:xy?n_train=500", 1500),
            ("eq:xy?n_train=500&n_test=20&noise=0.1", 520),
            ("mnist1d", 5000),
            ("mnist1d?num_samples=300&seed=1", 300),
            # A repeated option counts at its largest value, whichever the loader keeps.
            ("mnist1d?num_samples=100&num_samples=9000", 9000),
            ("eq:xy?n_train=7000&n_train=10", 8000),
            # Unparsable values are left to the loader, which answers invalid_dataset.
            ("eq:xy?n_train=lots", 2000),
        ],
    )
    def test_sample_count(self, spec: str, samples: int | None) -> None:
        assert builtin_sample_count(spec) == samples

    @pytest.mark.parametrize(
        "dataset",
        [
            "eq:xy?n_train=100000000",
            "mnist1d?num_samples=10000000",
            "mnist1d?num_samples=100&num_samples=10000000",
        ],
    )
    @pytest.mark.parametrize("dry_run", [True, False])
    def test_huge_builtin_is_refused_before_it_is_built(
        self,
        client: TestClient,
        auth: dict[str, str],
        settings: Settings,
        enqueuer: RecordingEnqueuer,
        dataset: str,
        dry_run: bool,
    ) -> None:
        model_id = upload_model(client, auth, [2, 3, 1])
        before = n_jobs(settings)
        r = client.post(
            f"/v1/jobs?dry_run={str(dry_run).lower()}",
            headers=auth,
            json={"model_id": model_id, "dataset": dataset, "config": CONFIG},
        )
        body = assert_problem(r, 422, "dataset_too_large")
        assert body["limit"] == settings.max_builtin_samples == 200_000
        assert body["samples"] == builtin_sample_count(dataset) > body["limit"]
        assert "METACLUSTER_MAX_BUILTIN_SAMPLES" in body["detail"]
        assert enqueuer.calls == [] and n_jobs(settings) == before

    def test_limit_follows_the_setting(self, settings: Settings) -> None:
        small = settings.model_copy(update={"max_builtin_samples": 1000})
        enqueuer = RecordingEnqueuer()
        app = create_app(small)
        app.dependency_overrides[get_enqueuer] = lambda: enqueuer
        auth = make_key(small, "carol")
        with TestClient(app) as client:
            model_id = upload_model(client, auth, [2, 3, 1])

            def create(dataset: str) -> Any:
                return client.post(
                    "/v1/jobs",
                    headers=auth,
                    json={"model_id": model_id, "dataset": dataset, "config": CONFIG},
                )

            # The defaults (1000 + 1000 samples) are over this limit too.
            for dataset in ("eq:xy", "eq:xy?n_train=501&n_test=500"):
                body = assert_problem(create(dataset), 422, "dataset_too_large")
                assert body["limit"] == 1000
            ok = create("eq:xy?n_train=500&n_test=500")
            assert ok.status_code == 202, ok.text
            # Fixed-size built-ins are not counted against it.
            digits_model = upload_model(client, auth, [64, 4, 10])
            r = client.post(
                "/v1/jobs",
                headers=auth,
                json={"model_id": digits_model, "dataset": "digits", "config": CONFIG},
            )
            assert r.status_code == 202, r.text
        assert [job_id for job_id, _ in enqueuer.calls] == [ok.json()["id"], r.json()["id"]]


class TestDryRun:
    def test_valid_request_queues_nothing(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        enqueuer: RecordingEnqueuer,
    ) -> None:
        before = n_jobs(settings)
        r = client.post("/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": CONFIG})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["valid"] is True and body["queue"] == "cpu"
        assert {c["name"]: c["ok"] for c in body["checks"]} == {
            "input_size": True,
            "outputs": True,
            "k_vs_edges": True,
        }
        assert body["config"]["k"] == 4
        assert enqueuer.calls == [] and n_jobs(settings) == before

    def test_a_byte_budget_is_planned_with_k_per_layer(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        model = client.get(f"/v1/models/{inputs['model_id']}", headers=auth).json()
        config = {"target_ratio": 3, "meta_epochs": 1, "soft_min_steps": 0}
        r = client.post("/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": config})
        assert r.status_code == 200, r.text
        plan = r.json()["plan"]
        assert plan["budget_bytes"] == model["bytes"] // 3
        assert all(layer["mode"] in ("codebook", "uniform", "dense") for layer in plan["layers"])
        assert 0 < plan["expected_bytes"]["0"] <= plan["budget_bytes"]
        assert "allocate" in [s["name"] for s in plan["stages"]]
        assert {c["name"] for c in r.json()["checks"]} >= {"budget", "input_size", "outputs"}
        # a budget no storage can meet is refused before anything runs
        config = {"max_bytes": 100}
        r = client.post("/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": config})
        body = assert_problem(r, 422, "invalid_config")
        assert [c["name"] for c in body["checks"] if not c["ok"]] == ["budget"]
        assert "cannot be met" in body["detail"]

    def test_input_size_mismatch(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        enqueuer: RecordingEnqueuer,
    ) -> None:
        dataset = upload_dataset(client, auth, n_features=7)
        r = client.post(
            "/v1/jobs?dry_run=true",
            headers=auth,
            json={"model_id": inputs["model_id"], "dataset": dataset, "config": CONFIG},
        )
        body = assert_problem(r, 422, "incompatible")
        failed = [c["name"] for c in body["checks"] if not c["ok"]]
        assert failed == ["input_size"] and "7" in body["detail"]
        assert enqueuer.calls == []

    def test_class_count_mismatch(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        dataset = upload_dataset(client, auth, n_classes=5)
        r = client.post(
            "/v1/jobs?dry_run=true",
            headers=auth,
            json={"model_id": inputs["model_id"], "dataset": dataset, "config": CONFIG},
        )
        body = assert_problem(r, 422, "incompatible")
        assert [c["name"] for c in body["checks"] if not c["ok"]] == ["outputs"]

    def test_k_larger_than_edges(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        # 4-5-3 has 35 edges.
        r = client.post("/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": {"k": 36}})
        body = assert_problem(r, 422, "invalid_config")
        assert [c["name"] for c in body["checks"] if not c["ok"]] == ["k_vs_edges"]
        ok = client.post(
            "/v1/jobs?dry_run=true", headers=auth, json={**inputs, "config": {"k": 35}}
        )
        assert ok.status_code == 200
        # excluding a layer shrinks the edges to compress
        r = client.post(
            "/v1/jobs?dry_run=true",
            headers=auth,
            json={**inputs, "config": {"k": 16, "exclude": ["layers.0"]}},
        )
        assert_problem(r, 422, "invalid_config")

    def test_same_checks_guard_real_creation(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
    ) -> None:
        before = n_jobs(settings)
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": {"k": 36}})
        assert_problem(r, 422, "invalid_config")
        assert n_jobs(settings) == before


class TestListAndEvents:
    def test_cursor_pagination(
        self,
        client: TestClient,
        auth: dict[str, str],
        other_auth: dict[str, str],
        inputs: dict[str, str],
    ) -> None:
        created = [
            client.post(
                "/v1/jobs", headers=auth, json={**inputs, "config": {**CONFIG, "seed": i}}
            ).json()["id"]
            for i in range(5)
        ]
        seen: list[str] = []
        pages = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if after:
                params["after"] = after
            page = client.get("/v1/jobs", headers=auth, params=params).json()
            pages.append(len(page["items"]))
            seen += [j["id"] for j in page["items"]]
            after = page["next"]
            if after is None:
                break
        assert pages == [2, 2, 1]
        assert seen == list(reversed(created))  # newest first, no gaps or repeats
        assert client.get("/v1/jobs", headers=other_auth).json() == {"items": [], "next": None}

    def test_status_filter_and_limit_validation(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        ids = [
            client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
            for _ in range(2)
        ]
        client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth)
        items = client.get("/v1/jobs", headers=auth, params={"status": "cancelled"}).json()["items"]
        assert [j["id"] for j in items] == [ids[0]]
        assert_problem(
            client.get("/v1/jobs", headers=auth, params={"limit": 0}), 422, "validation_error"
        )
        assert_problem(
            client.get("/v1/jobs", headers=auth, params={"status": "bogus"}),
            422,
            "validation_error",
        )

    def test_events_paginate_in_order(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
    ) -> None:
        job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()[
            "id"
        ]
        from core.repositories import JobEventRepository

        with session_scope(settings) as s:
            repo = JobEventRepository(s)
            for step in range(4):
                repo.add(job_id, "progress", stage="meta", progress=step / 4, loss=1.0 / (step + 1))
        first = client.get(f"/v1/jobs/{job_id}/events", headers=auth, params={"limit": 3}).json()
        rest = client.get(
            f"/v1/jobs/{job_id}/events", headers=auth, params={"after": first["next"]}
        ).json()
        events = first["items"] + rest["items"]
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        assert [e["progress"] for e in events[1:]] == [0.0, 0.25, 0.5, 0.75]
        assert rest["next"] is None


class TestCancel:
    def test_queued_job_is_cancelled_at_once(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str]
    ) -> None:
        job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()[
            "id"
        ]
        r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
        assert r.status_code == 202
        body = r.json()
        assert body["status"] == "cancelled" and body["cancel_requested"] is True
        assert body["finished_at"] is not None
        again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
        assert again.status_code == 202 and again.json()["status"] == "cancelled"

    def test_running_job_is_flagged_for_the_worker(
        self, client: TestClient, auth: dict[str, str], inputs: dict[str, str], settings: Settings
    ) -> None:
        job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()[
            "id"
        ]
        set_job(settings, job_id, status="running", started_at=utcnow(), stage="meta")
        body = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()
        assert (body["status"], body["cancel_requested"]) == ("running", True)
        with session_scope(settings) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.cancel_requested
            kinds = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
            assert "cancel requested" in kinds

    @pytest.mark.parametrize("status", ["succeeded", "failed"])
    def test_finished_job_is_409(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        status: str,
    ) -> None:
        job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()[
            "id"
        ]
        set_job(settings, job_id, status=status, finished_at=utcnow())
        assert_problem(client.post(f"/v1/jobs/{job_id}/cancel", headers=auth), 409, "job_finished")


class TestIdempotencyRace:
    def test_losing_the_unique_race_replays_the_winner(
        self,
        client: TestClient,
        auth: dict[str, str],
        inputs: dict[str, str],
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Two requests with one key both pass the lookup; the second hits the constraint."""
        from core.repositories import JobRepository
        from service import job_requests as job_service
        from service.auth import authenticate
        from service.schemas import JobCreate

        hdrs = {**auth, "Idempotency-Key": "race"}
        winner = client.post("/v1/jobs", headers=hdrs, json={**inputs, "config": CONFIG}).json()
        real_lookup = JobRepository.get_by_idempotency_key
        calls = {"n": 0}

        def stale_first_lookup(self: JobRepository, owner_id: str, key: str) -> Job | None:
            calls["n"] += 1
            return None if calls["n"] == 1 else real_lookup(self, owner_id, key)

        monkeypatch.setattr(JobRepository, "get_by_idempotency_key", stale_first_lookup)
        sent: list[tuple[str, str]] = []
        with session_scope(settings) as s:
            owner = authenticate(s, auth["Authorization"])
            job, replayed = job_service.create_job(
                s,
                owner,
                settings,
                lambda j, q: sent.append((j, q)),
                JobCreate(model_id=inputs["model_id"], dataset=inputs["dataset"], config=CONFIG),
                idempotency_key="race",
            )
            assert (job.id, replayed) == (winner["id"], True)
        assert calls["n"] == 2 and sent == []
        assert len(client.get("/v1/jobs", headers=auth).json()["items"]) == 1
