"""Service overhead: one compression through `metacluster serve` (API + worker) vs `metacluster compress`.

Target: service wall time <= 1.1 x CLI wall time + 2 s. Writes the `service_overhead` section of RESULTS.md.

    python benchmarks/service_overhead.py            # full run, writes the table
    python benchmarks/service_overhead.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import markdown_table, write_section

WIDTHS = "64,32,10"
TRAIN_EPOCHS = 20
K = 16
# Moderate settings: the meta-learner dominates, as it does for real jobs.
CONFIG: dict[str, Any] = {
    "meta_epochs": 10,
    "finetune_epochs": 5,
    "soft_min_steps": 0,
    "seed": 0,
    "device": "cpu",
}
QUICK_CONFIG: dict[str, Any] = {
    "meta_epochs": 2,
    "finetune_epochs": 1,
    "soft_min_steps": 0,
    "seed": 0,
    "device": "cpu",
}
POLL_S = 0.2


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("metacluster")
    return [str(script)] if script.exists() else [shutil.which("metacluster") or "metacluster"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METACLUSTER_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def _run_json(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout))


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(model: Path, cfg_path: Path, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = _run_json(
        [
            *_cli(),
            "compress",
            str(model),
            "--data",
            "digits",
            "--k",
            str(K),
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ],
        _env(),
    )
    result["wall_s"] = time.perf_counter() - t0
    return result


def _one_job(client: httpx.Client, model: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Upload -> create -> poll -> download, timed per phase."""
    t0 = time.perf_counter()
    with open(model, "rb") as fh:
        r = client.post("/v1/models", files={"file": (model.name, fh)})
    r.raise_for_status()
    t1 = time.perf_counter()
    body = {"model_id": r.json()["id"], "dataset": "digits", "config": {**config, "k": K}}
    job_id = client.post("/v1/jobs", json=body).raise_for_status().json()["id"]
    t2 = time.perf_counter()
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(POLL_S)
    if job["status"] != "succeeded":
        raise SystemExit(f"service job ended {job['status']}: {job['error']}")
    t3 = time.perf_counter()
    client.get(f"/v1/jobs/{job_id}/artifacts/model.mcz").raise_for_status()
    t4 = time.perf_counter()
    phases = {"upload": t1 - t0, "create": t2 - t1, "run": t3 - t2, "download": t4 - t3}
    return {**job["metrics"], "wall_s": t4 - t0, "phases": phases, "job": job}


def run_service(model: Path, config: dict[str, Any], work: Path, jobs: int) -> list[dict[str, Any]]:
    """Start `metacluster serve` (not timed), then run ``jobs`` jobs one after another."""
    env = _env({"METACLUSTER_DATA_DIR": str(work / "data")})
    key = _run_json([*_cli(), "keys", "create", "--name", "bench", "--json"], env)["key"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "wb")  # noqa: SIM115 (closed below)
    serve = subprocess.Popen(
        [*_cli(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        t_start = time.perf_counter()
        _wait_ready(base, serve, work / "serve.log")
        startup_s = time.perf_counter() - t_start
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            results = [_one_job(client, model, config) for _ in range(jobs)]
        for r in results:
            r["startup_s"] = startup_s
        return results
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()


def _wait_ready(
    base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("serve did not become ready")


def _seconds(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny settings; print, do not write RESULTS.md"
    )
    ap.add_argument("--jobs", type=int, default=2, help="service jobs in a row (first one cold)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    config = QUICK_CONFIG if args.quick else CONFIG
    work = Path(tempfile.mkdtemp(prefix="mc-svc-bench-"))
    try:
        model = work / "digits.safetensors"
        _run_json(
            [
                *_cli(),
                "train",
                "--data",
                "digits",
                "--family",
                "bspline",
                "--width",
                WIDTHS,
                "--epochs",
                str(2 if args.quick else TRAIN_EPOCHS),
                "--out",
                str(model),
                "--json",
            ],
            _env(),
        )
        cfg_path = work / "config.json"
        cfg_path.write_text(json.dumps(config))
        cli = run_cli(model, cfg_path, work / "cli.mcz")
        svc = run_service(model, config, work, args.jobs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory: {work}")

    budget = 0.10 * cli["wall_s"] + 2.0
    same = all(r["after"] == cli["after"] and r["bytes_after"] == cli["bytes_after"] for r in svc)
    for r in svc:
        diff = {
            k: (cli["config"].get(k), r["config"].get(k))
            for k in set(cli["config"]) | set(r["config"])
            if cli["config"].get(k) != r["config"].get(k)
        }
        if diff:
            print(f"config differs between CLI and service: {diff}", file=sys.stderr)
    rows: list[list[object]] = [
        [
            "`metacluster compress` (CLI)",
            round(cli["wall_s"], 2),
            round(cli["stages"]["total"], 2),
            "-",
            "-",
            "-",
            round(cli["after"], 4),
            cli["bytes_after"],
            "-",
            "-",
        ],
    ]
    verdicts = []
    for i, r in enumerate(svc, start=1):
        job = r["job"]
        queue_s = _seconds(job["started_at"]) - _seconds(job["created_at"])
        worker_s = _seconds(job["finished_at"]) - _seconds(job["started_at"])
        overhead = r["wall_s"] - cli["wall_s"]
        ok = overhead <= budget
        verdicts.append(ok)
        ph = r["phases"]
        label = "service, job 1 (first after start)" if i == 1 else f"service, job {i}"
        rows.append(
            [
                label,
                round(r["wall_s"], 2),
                round(r["stages"]["total"], 2),
                round(queue_s, 2),
                round(worker_s, 2),
                f"{ph['upload']:.2f} / {ph['create']:.2f} / {ph['download']:.2f}",
                round(r["after"], 4),
                r["bytes_after"],
                f"{overhead:+.2f}",
                "met" if ok else "MISSED",
            ]
        )
    table = markdown_table(
        [
            "path",
            "wall s",
            "compress s",
            "queue wait s",
            "worker s",
            "upload / create / download s",
            f"{cli['metric']} after",
            "artifact bytes",
            "overhead s",
            "<= 10% + 2 s",
        ],
        rows,
    )
    text = "\n".join(
        [
            "## Service overhead",
            "",
            f"Digits, B-spline KAN {WIDTHS} ({TRAIN_EPOCHS} train epochs), K={K}, config "
            f"`{json.dumps(config)}`; embedded `metacluster serve` (SQLite, SQLAlchemy broker, one "
            "solo-pool worker) vs. `metacluster compress` in the same run. Service wall = upload + "
            f"create + poll every {POLL_S} s + download, with the server already up (its start, "
            f"{svc[0]['startup_s']:.1f} s, is not counted). CLI wall = the whole command, interpreter "
            "start and imports included. 'compress s' is the library's own total inside each path.",
            "",
            table,
            "",
            f"The CLI spends {cli['wall_s'] - cli['stages']['total']:.1f} s outside the library's "
            "compression (interpreter start, imports, loading, writing); a running service pays "
            "its imports once at start, so its per-job overhead is the queue wait, the HTTP "
            "round trips and the polling interval. 'compress s' differs between the paths by "
            "machine noise (2 shared cores), not by method.",
            "",
            "Same compressed model both ways (metric and artifact bytes): "
            f"{'yes' if same else 'NO'}. Budget 10% of the CLI wall + 2 s = {budget:.2f} s. "
            f"Machine: {platform.machine()}, "
            f"{os.cpu_count()} CPUs shared with other work, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}.",
        ]
    )
    print(text)
    if not args.quick:
        write_section("service_overhead", text)
    if not all(verdicts):
        print("overhead target missed for at least one job", file=sys.stderr)


if __name__ == "__main__":
    main()
