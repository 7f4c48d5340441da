"""The S3 backend against moto's standalone S3 server (a real HTTP server, started here):
the `Storage` contract, presigned URLs, and the service on top of it (uploads, a job run
by the worker's runner, downloads redirected to an expiring presigned URL, deletes).

The same code talks to MinIO (docker-compose.yml) or AWS.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from core.service_errors import NotFoundError, PayloadTooLargeError
from core.settings import Settings
from core.storage import get_storage

pytest.importorskip("boto3", reason="the s3 extra is not installed")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("moto_server is not installed (it comes with the dev extra: moto[server])")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_settings(endpoint: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        storage_url=f"s3://mc-{secrets.token_hex(4)}/deploy/blobs",
        s3_endpoint_url=endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",  # type: ignore[arg-type]
        s3_create_bucket=True,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(moto_endpoint: str, tmp_path: Path) -> object:
    return get_storage(s3_settings(moto_endpoint, tmp_path))


def test_put_every_kind_of_source_hashes_and_reads_back(store: object, tmp_path: Path) -> None:
    from core.storage.s3 import S3Storage

    assert isinstance(store, S3Storage)
    data = b"abc" + b"defg" * 300_000  # over one read chunk
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    for i, source in enumerate(([b"abc", b"", b"defg" * 300_000], data, src, io.BytesIO(data))):
        blob = store.put(f"models/m{i}/a.pt", source)  # type: ignore[arg-type]
        assert (blob.bytes, blob.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        with store.open(f"models/m{i}/a.pt") as fh:
            assert fh.read() == data
        stat = store.stat(f"models/m{i}/a.pt")
        assert stat is not None and stat.bytes == len(data) and stat.sha256 == blob.sha256
    assert store.stat("models/none/a.pt") is None
    with pytest.raises(NotFoundError):
        store.open("models/none/a.pt")
    # Objects live under the URL's prefix.
    keys = [
        o["Key"]
        for o in store._client.list_objects_v2(Bucket=store.bucket)["Contents"]  # type: ignore[attr-defined]
    ]
    assert all(k.startswith("deploy/blobs/models/") for k in keys)


def test_over_limit_uploads_nothing_and_keeps_the_old_blob(store: object) -> None:
    store.put("k/x", b"old")  # type: ignore[attr-defined]
    with pytest.raises(PayloadTooLargeError):
        store.put("k/x", [b"12345", b"67890"], max_bytes=8)  # type: ignore[attr-defined]
    with store.open("k/x") as fh:  # type: ignore[attr-defined]
        assert fh.read() == b"old"


def test_list_delete_prefix_local_copy_and_bad_keys(store: object, tmp_path: Path) -> None:
    from metacluster.errors import InputError

    s = store
    for name in ("a", "b"):
        s.put(f"jobs/j1/artifacts/{name}", b"1")  # type: ignore[attr-defined]
    s.put("jobs/j1/checkpoints/meta.json", b"{}")  # type: ignore[attr-defined]
    s.put("jobs/j10/artifacts/a", b"2")  # a sibling whose name starts the same
    assert s.list("jobs/j1/") == [  # type: ignore[attr-defined]
        "jobs/j1/artifacts/a",
        "jobs/j1/artifacts/b",
        "jobs/j1/checkpoints/meta.json",
    ]
    s.delete("jobs/j1/artifacts/a")  # type: ignore[attr-defined]
    s.delete("jobs/j1/artifacts/missing")  # type: ignore[attr-defined]
    s.delete_prefix("jobs/j1/checkpoints")  # type: ignore[attr-defined]
    assert s.list("jobs/j1") == ["jobs/j1/artifacts/b"]  # type: ignore[attr-defined]
    s.delete_prefix("jobs/j1/")  # type: ignore[attr-defined]
    assert s.list("jobs/j1/") == [] and s.list("jobs/j10/") == ["jobs/j10/artifacts/a"]  # type: ignore[attr-defined]
    s.put("models/m1/m_state", b"state")  # type: ignore[attr-defined]
    with s.local_copy("models/m1/m_state", tmp_path) as copy:  # type: ignore[attr-defined]
        assert copy == tmp_path / "m_state" and copy.read_bytes() == b"state"
    assert not (tmp_path / "m_state").exists()
    for bad in ("../x", "a//b", "/etc/passwd"):
        with pytest.raises(InputError):
            s.put(bad, b"x")  # type: ignore[attr-defined]


def test_presigned_urls_serve_the_blob_without_credentials_and_expire(
    moto_endpoint: str, tmp_path: Path
) -> None:
    settings = s3_settings(
        moto_endpoint,
        tmp_path,
        s3_public_endpoint_url=moto_endpoint.replace("127.0.0.1", "localhost"),
    )
    store = get_storage(settings)
    store.put("jobs/j1/artifacts/model.mcz", b"compressed kan")
    url = store.url("jobs/j1/artifacts/model.mcz", expires_s=120)
    assert url is not None and url.startswith(settings.s3_public_endpoint_url or "")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"compressed kan"
    assert 'filename="model.mcz"' in r.headers["content-disposition"]
    tampered = url.replace("model.mcz", "other.mcz")
    assert httpx.get(tampered).status_code == 403


def test_the_service_stores_runs_and_serves_jobs_through_s3(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """Uploads land in the bucket, the worker's runner reads and writes it, downloads are
    a 307 to a presigned URL (fetched without the API key), deletes empty it."""
    from alembic import command
    from fastapi.testclient import TestClient

    from core.db import dispose_engines
    from core.migrations import alembic_config
    from service.app import create_app
    from service.deps import get_enqueuer
    from service.embedded import create_key
    from worker.runner import run_job

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
    from service_builders import efficient_kan_bytes, npz_bytes

    settings = s3_settings(moto_endpoint, tmp_path, download_url_expires_s=300)
    command.upgrade(alembic_config(settings), "head")
    auth = {"Authorization": f"Bearer {create_key('s3', settings=settings)['key']}"}
    app = create_app(settings)
    app.dependency_overrides[get_enqueuer] = lambda: lambda job_id, queue: None
    storage = get_storage(settings)
    octet = "application/octet-stream"
    try:
        with TestClient(app) as client:
            model = client.post(
                "/v1/models",
                headers=auth,
                files={"file": ("m.pt", efficient_kan_bytes([4, 5, 3]), octet)},
            ).json()
            data = client.post(
                "/v1/datasets",
                headers=auth,
                files={"file": ("d.npz", npz_bytes(n_train=48), octet)},
            ).json()
            assert storage.list(f"models/{model['id']}/") == [f"models/{model['id']}/m.pt"]
            config = {
                "k": 4,
                "meta_epochs": 1,
                "finetune_epochs": 1,
                "soft_min_steps": 0,
                "device": "cpu",
            }
            job = client.post(
                "/v1/jobs",
                headers=auth,
                json={"model_id": model["id"], "dataset": data["id"], "config": config},
            ).json()
            assert run_job(job["id"], settings=settings) == "succeeded"
            job = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
            artifact = next(a for a in job["artifacts"] if a["name"] == "model.mcz")

            r = client.get(artifact["url"], headers=auth, follow_redirects=False)
            assert r.status_code == 307 and r.headers["x-checksum-sha256"] == artifact["sha256"]
            assert parse_qs(urlsplit(r.headers["location"]).query)["X-Amz-Expires"] == ["300"]
            body = httpx.get(r.headers["location"]).content  # no API key: the URL is the grant
            assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
            through = client.get(f"{artifact['url']}?redirect=false", headers=auth)
            assert through.status_code == 200 and through.content == body

            assert client.delete(f"/v1/jobs/{job['id']}", headers=auth).status_code == 204
            assert storage.list(f"jobs/{job['id']}/") == []
            assert client.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
            assert storage.list(f"models/{model['id']}/") == []
    finally:
        dispose_engines()
