"""Load: the Redis + PostgreSQL stack under 50 polling and 10 uploading clients.

Two uvicorn API processes (clients alternate between them), one solo-pool Celery worker
at nice 19 (so the latencies measure the API, not the compression next to it), a fresh
PostgreSQL database and an empty Redis db. For DURATION_S seconds:

- 50 clients poll: GET /v1/jobs/{id} of their tenant's jobs, every 5th request a list
  (GET /v1/jobs?limit=20), 0.5 s apart (`--poll-interval`; 0.1 s saturates 2 shared
  cores, see docs/reliability.md);
- 10 clients upload, 0.5 s apart: a small efficient-kan checkpoint (POST /v1/models) or
  an .npz (POST /v1/datasets), remembering each one's sha256;
- the worker compresses the jobs the tenants created at the start.

Afterwards every job must reach a final status and every upload must come back with
its sha256. Targets: no 5xx, p99 of GET /v1/jobs/{id} under 50 ms. Writes the `load`
section of benchmarks/RESULTS.md.

    python benchmarks/load.py            # 60 s, writes the table
    python benchmarks/load.py --quick    # 10 s, prints only
    python benchmarks/load.py --pin      # the worker held to the last core
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import io
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from benchmarks._results import markdown_table, write_section  # noqa: E402

POLLERS, UPLOADERS, TENANTS = 50, 10, 5
POLL_THINK_S, UPLOAD_THINK_S = 0.5, 0.5
JOBS_PER_TENANT = 2
JOB_CONFIG = {
    "k": 4,
    "meta_epochs": 2,
    "finetune_epochs": 2,
    "regress_steps": 40,
    "soft_epochs": 2,
    "device": "cpu",
}
TARGET_P99_MS = 50.0


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METACLUSTER_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fresh_database() -> tuple[str, str, str]:
    """(SQLAlchemy URL, admin URL, name) of a new PostgreSQL database."""
    import psycopg

    for user in ("postgres", "root"):
        admin = f"postgresql://{user}@127.0.0.1:5432/test"
        try:
            with psycopg.connect(admin, connect_timeout=3):
                break
        except psycopg.Error:
            continue
    else:
        raise SystemExit("PostgreSQL on 127.0.0.1:5432 is not reachable")
    name = f"mc_load_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}", admin, name


def _worker_pin(pin: bool) -> list[str]:
    """The command prefix that holds the worker to the last core when `pin` (and there
    are two or more), so the other cores never run compression; the APIs stay free to
    use every core (on 2 cores, confining them to the one left over was worse: 266 ms
    p99). Without `pin`, nothing: the scheduler places both."""
    cpus = sorted(os.sched_getaffinity(0))
    return ["taskset", "-c", str(cpus[-1])] if pin and len(cpus) >= 2 else []


def _empty_redis_db() -> str:
    import redis

    for db in range(15, 0, -1):
        if redis.Redis(port=6379, db=db).dbsize() == 0:
            return f"redis://127.0.0.1:6379/{db}"
    raise SystemExit("no empty Redis db")


def _model_bytes(seed: int) -> bytes:
    import torch
    from integration._stack import EfficientKAN

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(EfficientKAN([8, 16, 3]).state_dict(), buf)
    return buf.getvalue()


def _npz_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (240, 8)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + x[:, 1] ** 2 > 0.5).astype(np.int64) + (x[:, 2] > 0)
    buf = io.BytesIO()
    np.savez(buf, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return buf.getvalue()


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, int] = defaultdict(int)

    def add(self, endpoint: str, seconds: float, status: int) -> None:
        self.latency[endpoint].append(seconds)
        self.status[endpoint][status] += 1


async def _timed(rec: Recorder, endpoint: str, call: Any) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        r: httpx.Response = await call
    except httpx.HTTPError:
        rec.errors[endpoint] += 1
        return None
    rec.add(endpoint, time.perf_counter() - t0, r.status_code)
    return r


def _think(mean_s: float) -> float:
    """A think time uniform in [0.5, 1.5] x the mean (Locust's `between`): clients that
    sleep exactly the same time stay in phase and arrive as one burst, which no real
    population of pollers does."""
    return mean_s * random.uniform(0.5, 1.5)


async def _poller(
    rec: Recorder, client: httpx.AsyncClient, job_ids: list[str], stop: float, think_s: float
) -> None:
    n = 0
    await asyncio.sleep(random.uniform(0, think_s))  # clients start out of phase
    while time.monotonic() < stop:
        n += 1
        if n % 5 == 0:
            await _timed(rec, "GET /v1/jobs", client.get("/v1/jobs", params={"limit": 20}))
        else:
            job = random.choice(job_ids)
            await _timed(rec, "GET /v1/jobs/{id}", client.get(f"/v1/jobs/{job}"))
        await asyncio.sleep(_think(think_s))


async def _uploader(
    rec: Recorder,
    client: httpx.AsyncClient,
    index: int,
    stop: float,
    uploads: list[tuple[str, str, str, str]],
) -> None:
    n = 0
    model, data = _model_bytes(index), _npz_bytes(index)
    await asyncio.sleep(random.uniform(0, UPLOAD_THINK_S))
    while time.monotonic() < stop:
        n += 1
        kind, payload, name = ("models", model, "m.pt") if n % 2 else ("datasets", data, "d.npz")
        r = await _timed(
            rec,
            f"POST /v1/{kind}",
            client.post(f"/v1/{kind}", files={"file": (name, payload, "application/octet-stream")}),
        )
        if r is not None and r.status_code == 201:
            uploads.append(
                (
                    kind,
                    r.json()["id"],
                    hashlib.sha256(payload).hexdigest(),
                    client.headers["authorization"],
                )
            )
        await asyncio.sleep(_think(UPLOAD_THINK_S))


METRICS_TOKEN = secrets.token_hex(16)  # /metrics answers only the operator's token


def _server_percentile(bases: list[str], route: str, q: float) -> float:
    """Upper bound (ms) of the q-quantile of a route's server-side latency, from the
    APIs' own Prometheus histograms (the time inside the API process, without the
    client's or the network's)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = defaultdict(float)
    for base in bases:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        text = httpx.get(f"{base}/metrics", headers=auth, timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name != "metacluster_http_request_duration_seconds":
                continue
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name.endswith("_bucket")
                    and labels.get("route") == route
                    and labels.get("method") == "GET"
                ):
                    buckets[float(labels["le"])] += sample.value
    if not buckets:
        return float("nan")
    total = buckets[float("inf")]
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le * 1000.0
    return float("inf")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q)) if values else float("nan")


async def _run_load(
    poll_s: float,
    uploaders: int,
    bases: list[str],
    keys: list[str],
    jobs: dict[int, list[str]],
    duration_s: float,
) -> tuple[Recorder, list[tuple[str, str, str, str]]]:
    rec = Recorder()
    uploads: list[tuple[str, str, str, str]] = []
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = []
    tasks = []
    stop = time.monotonic() + duration_s
    for i in range(POLLERS):
        tenant = i % TENANTS
        c = httpx.AsyncClient(
            base_url=bases[i % len(bases)],
            headers={"Authorization": f"Bearer {keys[tenant]}"},
            timeout=30,
            limits=limits,
        )
        clients.append(c)
        tasks.append(_poller(rec, c, jobs[tenant], stop, poll_s))
    for i in range(uploaders):
        tenant = i % TENANTS
        c = httpx.AsyncClient(
            base_url=bases[(i + 1) % len(bases)],
            headers={"Authorization": f"Bearer {keys[tenant]}"},
            timeout=60,
            limits=limits,
        )
        clients.append(c)
        tasks.append(_uploader(rec, c, i, stop, uploads))
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    rec.wall_s = time.monotonic() - t0  # type: ignore[attr-defined]
    for c in clients:
        await c.aclose()
    return rec, uploads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s smoke run; prints only")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--poll-interval", type=float, default=POLL_THINK_S)
    parser.add_argument("--uploaders", type=int, default=UPLOADERS)
    parser.add_argument(
        "--no-worker", action="store_true", help="diagnosis: no compression meanwhile"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="hold the worker to the last core (the APIs may use every core); default: the "
        "scheduler places both",
    )
    args = parser.parse_args()
    duration = args.duration or (10.0 if args.quick else 60.0)

    from core.settings import Settings
    from service.embedded import create_key, upgrade_database

    db_url, admin, db_name = _fresh_database()
    broker = _empty_redis_db()
    tmp = Path(tempfile.mkdtemp(prefix="mc-load-"))
    run = secrets.token_hex(3)
    env = _env(
        {
            "METACLUSTER_DATA_DIR": str(tmp / "data"),
            "METACLUSTER_DATABASE_URL": db_url,
            "METACLUSTER_BROKER_URL": broker,
            "METACLUSTER_CPU_QUEUE": f"cpu-load-{run}",
            "METACLUSTER_DEFAULT_QUEUE": f"cpu-load-{run}",
            # 10 clients share a tenant key here: the per-key limit is for abuse, not this
            "METACLUSTER_RATE_LIMIT_PER_S": "1000",
            "METACLUSTER_RATE_LIMIT_BURST": "2000",
            "METACLUSTER_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    settings = Settings(data_dir=tmp / "data", database_url=db_url, broker_url=broker)
    upgrade_database(settings)
    keys = [create_key(f"tenant-{i}", settings=settings)["key"] for i in range(TENANTS)]
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "servers.log", "wb")  # noqa: SIM115
    ports = [_free_port(), _free_port()]
    try:
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "service.app:create_app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        from service.embedded import worker_command

        if not args.no_worker:
            procs.append(
                subprocess.Popen(
                    [
                        *_worker_pin(args.pin),
                        "nice",
                        "-n",
                        "19",
                        *worker_command([f"cpu-load-{run}"], name="load", loglevel="WARNING"),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                # without a worker /readyz says 503 (worker missing): /healthz then
                probe = "/healthz" if args.no_worker else "/readyz"
                if all(httpx.get(f"{b}{probe}", timeout=2).status_code == 200 for b in bases):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the APIs did not become ready")
        # Each tenant: a model, a dataset and its jobs, created before the load starts.
        jobs: dict[int, list[str]] = {}
        for t, key in enumerate(keys):
            with httpx.Client(
                base_url=bases[0], headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as c:
                m = c.post(
                    "/v1/models",
                    files={"file": ("m.pt", _model_bytes(100 + t), "application/octet-stream")},
                ).json()
                d = c.post(
                    "/v1/datasets",
                    files={"file": ("d.npz", _npz_bytes(100 + t), "application/octet-stream")},
                ).json()
                jobs[t] = []
                for _ in range(JOBS_PER_TENANT):
                    r = c.post(
                        "/v1/jobs",
                        json={"model_id": m["id"], "dataset": d["id"], "config": JOB_CONFIG},
                    )
                    assert r.status_code == 202, r.text
                    jobs[t].append(r.json()["id"])
        print(
            f"load: {POLLERS} pollers + {UPLOADERS} uploaders for {duration:.0f} s on {len(bases)} APIs ...",
            file=sys.stderr,
        )
        # This process imported torch and numpy to build the uploads: freeze that heap
        # (as the APIs do theirs, service.heap) so the clients' own garbage collection
        # does not add its pauses to the latencies they measure.
        gc.collect()
        gc.freeze()
        load_before = os.getloadavg()[0]
        rec, uploads = asyncio.run(
            _run_load(args.poll_interval, args.uploaders, bases, keys, jobs, duration)
        )

        # Afterwards: every job final, every upload back with its sha256.
        final = {"succeeded", "failed", "cancelled"}
        statuses: dict[str, str] = {}
        deadline = time.monotonic() + (5 if args.no_worker else 600)
        while time.monotonic() < deadline:
            for t, key in enumerate(keys):
                with httpx.Client(
                    base_url=bases[1], headers={"Authorization": f"Bearer {key}"}, timeout=30
                ) as c:
                    for job in jobs[t]:
                        statuses[job] = c.get(f"/v1/jobs/{job}").json()["status"]
            if all(s in final for s in statuses.values()):
                break
            time.sleep(2)
        server_p99 = _server_percentile(bases, "/v1/jobs/{job_id}", 0.99)
        verified = 0
        for kind, obj_id, sha, auth in uploads:
            r = httpx.get(
                f"{bases[0]}/v1/{kind}/{obj_id}", headers={"Authorization": auth}, timeout=30
            )
            if r.status_code == 200 and r.json()["sha256"] == sha:
                verified += 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        import redis

        redis.Redis.from_url(broker).flushdb()

    rows = []
    total = 0
    fives = 0
    for endpoint in sorted(rec.latency):
        lat = rec.latency[endpoint]
        codes = rec.status[endpoint]
        n = len(lat)
        total += n
        n5 = sum(v for k, v in codes.items() if k >= 500)
        fives += n5
        n4 = sum(v for k, v in codes.items() if 400 <= k < 500)
        rows.append(
            [
                endpoint,
                n,
                n / rec.wall_s,
                _percentile(lat, 50),
                _percentile(lat, 95),
                _percentile(lat, 99),
                n4,
                n5,
                rec.errors.get(endpoint, 0),
            ]
        )
    table = markdown_table(
        [
            "endpoint",
            "requests",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "4xx",
            "5xx",
            "transport errors",
        ],
        rows,
    )
    p99_job = _percentile(rec.latency["GET /v1/jobs/{id}"], 99)
    done = sum(s in final for s in statuses.values())
    succeeded = sum(s == "succeeded" for s in statuses.values())
    summary = (
        f"{total} requests in {rec.wall_s:.0f} s ({total / rec.wall_s:.0f} req/s); 5xx: {fives}; "
        f"transport errors: {sum(rec.errors.values())}; p99 of GET /v1/jobs/{{id}}: {p99_job:.1f} ms "
        f"(target < {TARGET_P99_MS:.0f} ms: {'met' if p99_job < TARGET_P99_MS else 'MISSED'}); "
        f"inside the API processes (their own histograms) p99 <= {server_p99:.0f} ms.\n"
        f"Afterwards: {done}/{len(statuses)} jobs final ({succeeded} succeeded); "
        f"{verified}/{len(uploads)} uploads retrieved with their sha256."
    )
    text = (
        "## Load: Redis + PostgreSQL, two API processes\n\n"
        f"`python benchmarks/load.py`: {POLLERS} clients polling jobs (every 5th request a list) "
        f"{args.poll_interval:g} s apart on average, {args.uploaders} uploading a checkpoint or an .npz {UPLOAD_THINK_S:g} s apart "
        "(think times uniform in 0.5-1.5x, clients out of phase), "
        f"{duration:.0f} s, against 2 uvicorn processes; one worker at nice 19 compresses "
        f"{TENANTS * JOBS_PER_TENANT} jobs meanwhile. {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work (load average {load_before:.1f} "
        "when the run started).\n\n" + table + "\n\n" + summary + "\n"
    )
    print(text)
    if not args.quick and args.uploaders == UPLOADERS and args.poll_interval == POLL_THINK_S:
        write_section("load", text)
    if fives or done != len(statuses) or verified != len(uploads):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
