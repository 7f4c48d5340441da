"""Hostile uploads against a real API process, measured by its peak RSS (VmHWM).

Each attack of issue 9 is replayed against uvicorn on 127.0.0.1 (SQLite, no worker):
a decompression-bomb .npz, a safetensors whose config asks for a 10-million-knot grid,
a chunked body of thousands of form fields, and huge integers in query parameters.
Every one gets a 4xx problem+json, the API's peak RSS grows by less than
`MAX_GROWTH_MB` over a warmed-up process, and nothing is stored. (Before the fixes:
+2.4 GB for the bomb, an 82 GB allocation request for the config, +350 MB for the
fields, and a 500.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from ._stack import Proc, child_env, free_port, wait_healthy

MAX_GROWTH_MB = 100
OCTET = "application/octet-stream"


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


class Api:
    def __init__(self, proc: Proc, base: str, key: str, data_dir: Path) -> None:
        self.proc, self.base, self.data_dir = proc, base, data_dir
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        self.key = key
        self.model_id = ""

    def peak(self) -> float:
        return peak_rss_mb(self.proc.pid)

    def stored(self) -> list[str]:
        root = self.data_dir / "storage"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from core.settings import Settings
    from service.embedded import create_key

    data_dir = tmp_path_factory.mktemp("bounded")
    settings = Settings(data_dir=data_dir)
    key = create_key("attacker", settings=settings)["key"]
    port = free_port()
    env = child_env(
        {
            "METACLUSTER_DATA_DIR": str(data_dir),
            "METACLUSTER_MAX_DATASET_BYTES": str(512 << 20),
        }
    )
    args = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = Proc("api", args, env, data_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        out = Api(proc, base, key, data_dir)
        _warm_up(out)
        yield out
        out.client.close()
    finally:
        proc.stop()


def _model_bytes() -> bytes:
    from metacluster.formats import save_model
    from metacluster.kan import build_kan

    torch.manual_seed(0)
    model = build_kan("bspline", [4, 3, 2])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_model(model, path)
        return path.read_bytes()


def _npz_bytes(n: int = 32) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    x = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
    np.savez(buf, x_train=x, y_train=np.arange(n) % 2, x_test=x, y_test=np.arange(n) % 2)
    return buf.getvalue()


def _warm_up(api: Api) -> None:
    """Import and exercise every reader once (torch, formats, npz), as a running API has."""
    r = api.client.post("/v1/models", files={"file": ("m.safetensors", _model_bytes(), OCTET)})
    assert r.status_code == 201, r.text
    api.model_id = r.json()["id"]
    r = api.client.post("/v1/datasets", files={"file": ("d.npz", _npz_bytes(), OCTET)})
    assert r.status_code == 201, r.text
    api.client.get("/v1/jobs")


def _grew(api: Api, before: float, what: str) -> float:
    """Peak-RSS growth of the API process, printed for docs/reliability.md (pytest -s)."""
    growth = api.peak() - before
    print(f"\n[rss] {what}: API peak RSS {before:.0f} MB -> {api.peak():.0f} MB (+{growth:.1f} MB)")
    return growth


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


def test_a_decompression_bomb_is_refused_from_its_headers(api: Api) -> None:
    """1.1 MB on the wire, 2 GB of zeros once loaded: refused before any array is read."""
    buf = io.BytesIO()
    zeros = np.zeros((4_000_000, 64))
    np.savez_compressed(
        buf,
        x_train=zeros,
        y_train=np.zeros(4_000_000, np.int64),
        x_test=zeros[:10],
        y_test=np.zeros(10, np.int64),
    )
    del zeros
    assert len(buf.getvalue()) < 4 << 20
    before, stored = api.peak(), api.stored()
    r = api.client.post("/v1/datasets", files={"file": ("bomb.npz", buf.getvalue(), OCTET)})
    body = _problem(r, 422, "dataset_too_large")
    assert "uncompressed" in body["detail"]
    assert _grew(api, before, "npz bomb (2 GB declared)") < MAX_GROWTH_MB
    assert api.stored() == stored


def test_a_large_dataset_under_the_limit_is_read_in_bounded_memory(api: Api) -> None:
    """256 MB of arrays (a 1 MB zip): accepted, and streamed, never held whole."""
    n = 1_000_000
    x = np.zeros((n, 64), np.float32)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, x_train=x, y_train=np.arange(n) % 3, x_test=x[:100], y_test=np.arange(100) % 3
    )
    del x
    before = api.peak()
    r = api.client.post("/v1/datasets", files={"file": ("big.npz", buf.getvalue(), OCTET)})
    assert r.status_code == 201, r.text
    assert (r.json()["n_train"], r.json()["n_classes"], r.json()["input_shape"]) == (n, 3, [64])
    assert _grew(api, before, "256 MB npz under the limit, streamed") < MAX_GROWTH_MB


def test_a_config_that_would_allocate_is_refused_before_building(api: Api) -> None:
    """A 580-byte safetensors whose metadata asks for grid_size 10,000,000."""
    from metacluster.kan import build_kan

    model = build_kan("bspline", [2, 2])
    config = model.config()
    config["layers"][0]["grid_size"] = 10_000_000
    payload = safetensors_bytes(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        metadata={"format": "metacluster", "format_version": "1", "config": json.dumps(config)},
    )
    assert len(payload) < 2000
    before, stored = api.peak(), api.stored()
    r = api.client.post("/v1/models", files={"file": ("evil.safetensors", payload, OCTET)})
    body = _problem(r, 422, "unsupported_format")
    assert "does not fit" in body["detail"] or "asks for" in body["detail"]
    assert _grew(api, before, "grid_size 10,000,000 config") < MAX_GROWTH_MB
    assert api.stored() == stored


def _raw_chunked_post(
    api: Api, path: str, boundary: str, parts: Iterator[bytes], *, content_type: str = ""
) -> int:
    """POST a chunked body part by part over a raw socket; stop sending as soon as the
    server answers (it cuts an over-limit body off). Returns the status code."""
    host, port = api.base.removeprefix("http://").split(":")
    content_type = content_type or f"multipart/form-data; boundary={boundary}"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api.key}\r\n"
            f"Content-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.setblocking(False)
        answer = b""
        for part in parts:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                continue
            if answer:
                break
        sock.setblocking(True)
        if not answer:
            with contextlib.suppress(OSError):
                sock.sendall(b"0\r\n\r\n")
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_thousands_of_form_fields_are_cut_off(api: Api) -> None:
    """100,000 x 4 KB non-file fields, chunked (no Content-Length)."""
    boundary = "xxBOUNDARYxx"

    def parts() -> Iterator[bytes]:
        value = b"v" * 4000
        for i in range(100_000):
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode()
                + value
                + b"\r\n"
            )
        yield f"--{boundary}--\r\n".encode()

    before, stored = api.peak(), api.stored()
    assert _raw_chunked_post(api, "/v1/models", boundary, parts()) == 422
    assert _grew(api, before, "100,000 x 4 KB form fields") < MAX_GROWTH_MB
    assert api.stored() == stored
    assert api.client.get("/v1/jobs").status_code == 200  # still serving


def test_one_endless_form_field_is_cut_off(api: Api) -> None:
    boundary = "yyBOUNDARYyy"

    def parts() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\n'.encode()
        for _ in range(50_000):
            yield b"a" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    before = api.peak()
    assert _raw_chunked_post(api, "/v1/datasets", boundary, parts()) == 413
    assert _grew(api, before, "one endless form field") < MAX_GROWTH_MB


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/jobs/{job}/events", "after=9223372036854775808"),
        ("/v1/jobs/{job}/events", "after=-1"),
        ("/v1/jobs/{job}/events", "limit=99999999999999999999999"),
        ("/v1/jobs", "limit=9223372036854775808"),
        ("/v1/jobs", "limit=0"),
    ],
)
def test_integer_query_parameters_have_a_range(api: Api, path: str, param: str) -> None:
    from core.db import Job, new_id, session_scope
    from core.settings import Settings

    # a job of this key, so the request would reach the database
    owner = api.client.get("/v1/keys/self").json()["id"]
    job_id = new_id("job")
    with session_scope(Settings(data_dir=api.data_dir)) as s:
        s.add(Job(id=job_id, owner_id=owner, model_id=api.model_id, dataset="digits", config={}))
    r = api.client.get(path.format(job=job_id) + "?" + param)
    _problem(r, 422, "validation_error")
    # and the largest valid cursor is simply an empty page
    if "after=9223372036854775808" in param:
        r = api.client.get(path.format(job=job_id) + "?after=9223372036854775807")
        assert r.status_code == 200 and r.json()["items"] == []


def _json_job_parts(total: int) -> Iterator[bytes]:
    """A dry-run job body whose config carries ``total`` bytes of padding, in 1 MB chunks."""
    yield b'{"model_id": "mdl_x", "dataset": "digits", "config": {"pad": "'
    for _ in range(total >> 20):
        yield b"x" * (1 << 20)
    yield b'"}}'


def test_a_99_mb_json_body_is_refused_before_it_is_read(api: Api) -> None:
    """Issue 18: a 99 MB POST /v1/jobs?dry_run=true answered 200 and grew the API by
    924 MB. Now: 413 problem+json from its Content-Length, before a byte of it is read,
    and a chunked one is cut off at METACLUSTER_MAX_JSON_BYTES (1 MiB)."""
    before = api.peak()
    host, port = api.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            (
                f"POST /v1/jobs?dry_run=true HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {api.key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {99 << 20}\r\n\r\n"
            ).encode()
        )
        answer = sock.recv(65536)  # nothing of the body sent: the answer comes anyway
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"413", answer
    assert b"application/problem+json" in head and b"payload_too_large" in body
    chunked = _raw_chunked_post(
        api, "/v1/jobs?dry_run=true", "", _json_job_parts(99 << 20), content_type="application/json"
    )
    assert chunked == 413
    assert _grew(api, before, "99 MB JSON body, declared and chunked") < MAX_GROWTH_MB


def _big_safetensors(path: Path, megabytes: int) -> None:
    """A valid KAN checkpoint in our format of about ``megabytes`` MB (one wide layer)."""
    from metacluster.formats import save_model
    from metacluster.kan import build_kan

    width = int((megabytes * 1e6 / 36) ** 0.5)  # a B-spline edge holds 9 floats
    save_model(build_kan("bspline", [width, width]), path)


def test_three_concurrent_200_mb_model_uploads_stay_bounded(api: Api) -> None:
    """Issue 18: three concurrent valid 200 MB safetensors uploads grew the API by 769 MB
    (the models were built in it). Now they are spooled to disk (hashed on the way) and
    inspected in a child process: the API's own peak RSS grows < MAX_GROWTH_MB."""
    with tempfile.TemporaryDirectory(prefix="mc-big-") as tmp:
        path = Path(tmp) / "big.safetensors"
        _big_safetensors(path, 200)
        size = path.stat().st_size
        assert size > 195e6
        sha = hashlib.sha256(path.read_bytes()).hexdigest()

        def upload(i: int) -> httpx.Response:
            with path.open("rb") as fh:
                return api.client.post(
                    "/v1/models", files={"file": (f"big{i}.safetensors", fh, OCTET)}
                )

        before = api.peak()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(upload, range(3)))
        growth = _grew(api, before, "3 concurrent 200 MB safetensors uploads")
    for r in answers:
        assert r.status_code == 201, r.text
        assert (r.json()["bytes"], r.json()["sha256"]) == (size, sha)
    assert growth < MAX_GROWTH_MB
