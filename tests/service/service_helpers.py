"""Helpers shared by the service tests: problem assertions, upload shortcuts, worker stand-ins.

Kept out of conftest.py so test modules import them by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from fastapi.testclient import TestClient
from service_builders import efficient_kan_bytes, npz_bytes

from core.db import Artifact, Job, new_id, session_scope
from core.settings import Settings
from core.storage import artifact_key, get_storage

ROOT = Path(__file__).resolve().parents[2]
OCTET = "application/octet-stream"
# Small enough for the tiny test models (4-5-3 has 35 edges).
CONFIG: dict[str, Any] = {"k": 4, "meta_epochs": 1, "finetune_epochs": 1, "soft_min_steps": 0}


def alembic_config(url: str) -> Config:
    """Alembic config of this repository pointed at ``url``."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # configparser interpolates %; URLs may contain escaped characters.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"] and body["detail"]
    return body


class RecordingEnqueuer:
    """Stands in for Celery in API tests; records (job_id, queue) and can run a hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.hook: Callable[[str, str], None] | None = None

    def __call__(self, job_id: str, queue: str) -> None:
        if self.hook is not None:
            self.hook(job_id, queue)
        self.calls.append((job_id, queue))


def upload_model(client: TestClient, auth: dict[str, str], widths: list[int] | None = None) -> str:
    data = efficient_kan_bytes(widths or [4, 5, 3])
    r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", data, OCTET)})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def upload_dataset(client: TestClient, auth: dict[str, str], **kw: Any) -> str:
    r = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", npz_bytes(**kw), OCTET)})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def set_job(settings: Settings, job_id: str, **fields: Any) -> None:
    """Stand in for the worker: write the job row directly."""
    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        assert job is not None
        for k, v in fields.items():
            setattr(job, k, v)


def add_artifact(settings: Settings, job_id: str, name: str, data: bytes) -> str:
    """Stand in for the worker: store a file and its Artifact row; returns its sha256."""
    key = artifact_key(job_id, name)
    blob = get_storage(settings).put(key, [data])
    size, sha = blob.bytes, str(blob.sha256)
    assert sha == hashlib.sha256(data).hexdigest()
    with session_scope(settings) as s:
        s.add(
            Artifact(
                id=new_id("art"), job_id=job_id, name=name, bytes=size, sha256=sha, storage_key=key
            )
        )
    return sha
