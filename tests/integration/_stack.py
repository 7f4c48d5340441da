"""Real processes for integration tests: uvicorn API, celery workers, `metacluster serve`.

Also builds the inputs users bring: an efficient-kan checkpoint and a `.npz` dataset.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[2]
FINAL = {"succeeded", "failed", "cancelled"}
# What a succeeded MetaCluster job stores: the artifact, its report as JSON, and the
# report drawn (report.html with its PNGs, metacluster.reporting).
JOB_ARTIFACTS = sorted(
    [
        "model.mcz",
        "report.json",
        "report.html",
        "pareto.png",
        "bytes.png",
        "errors.png",
        "codebooks.png",
        "projection.png",
    ]
)


# -- inputs ----------------------------------------------------------------------------


def make_npz_dataset(path: Path, *, n_features: int = 8, n_classes: int = 3, seed: int = 0) -> Path:
    """A small non-linear classification problem saved as x_train/y_train/x_test/y_test."""
    rng = np.random.default_rng(seed)
    n = 600
    x = rng.uniform(-1, 1, size=(n, n_features)).astype(np.float32)
    score = np.stack(
        [
            np.sin(3 * x[:, c % n_features]) + x[:, (c + 1) % n_features] ** 2
            for c in range(n_classes)
        ],
        axis=1,
    )
    y = score.argmax(axis=1).astype(np.int64)
    cut = 480
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])
    return path


class EfficientKANLinear(nn.Module):
    """efficient-kan's `KANLinear` (Blealtan/efficient-kan), as users copy it: same keys."""

    def __init__(self, n_in: int, n_out: int, grid_size: int = 5, order: int = 3) -> None:
        super().__init__()
        self.n_in, self.n_out, self.order = n_in, n_out, order
        h = 2.0 / grid_size
        grid = (torch.arange(-order, grid_size + order + 1) * h - 1.0).expand(n_in, -1)
        self.register_buffer("grid", grid.contiguous())
        self.base_weight = nn.Parameter(torch.empty(n_out, n_in))
        self.spline_weight = nn.Parameter(torch.empty(n_out, n_in, grid_size + order))
        self.spline_scaler = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        nn.init.uniform_(self.spline_weight, -0.1, 0.1)
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))

    def _bases(self, x: Tensor) -> Tensor:
        grid: Tensor = self.grid
        x = x.unsqueeze(-1)
        b = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
        for k in range(1, self.order + 1):
            b = (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * b[:, :, :-1] + (
                grid[:, k + 1 :] - x
            ) / (grid[:, k + 1 :] - grid[:, 1:(-k)]) * b[:, :, 1:]
        return b  # (batch, in, G + k)

    def forward(self, x: Tensor) -> Tensor:
        w = (self.spline_weight * self.spline_scaler.unsqueeze(-1)).view(self.n_out, -1)
        spline = F.linear(self._bases(x).view(x.size(0), -1), w)
        return F.linear(F.silu(x), self.base_weight) + spline


class EfficientKAN(nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EfficientKANLinear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def make_efficient_kan_checkpoint(
    path: Path, data: Path, widths: list[int], *, steps: int = 150
) -> Path:
    """Train an efficient-kan model briefly on ``data`` and `torch.save` its state dict."""
    torch.manual_seed(0)
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    model = EfficientKAN(widths)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), path)
    return path


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METACLUSTER_")}
    env.update(overrides)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process whose combined output goes to a log file (shown when a test fails)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd or REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost node would."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                # The whole process group: `metacluster serve` has a worker child.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()


def start_worker(env: dict[str, str], queues: list[str], log_dir: Path, name: str) -> Proc:
    from service.embedded import worker_command

    return Proc(name, worker_command(queues, name=name), env, log_dir)


def start_api(env: dict[str, str], port: int, log_dir: Path) -> Proc:
    args = [
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
    ]
    return Proc("api", args, env, log_dir)


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, proc: Proc | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    tail = f"\n{proc.name} log:\n{proc.log_tail()}" if proc is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{tail}")


def wait_healthy(base_url: str, proc: Proc, timeout_s: float = 60.0) -> None:
    wait_until(
        lambda: httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200,
        timeout_s,
        "/healthz",
        proc,
    )


# -- API helpers -----------------------------------------------------------------------


def upload_model(client: httpx.Client, path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        r = client.post("/v1/models", files={"file": (path.name, fh, "application/octet-stream")})
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload_dataset(client: httpx.Client, path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        r = client.post("/v1/datasets", files={"file": (path.name, fh, "application/octet-stream")})
    assert r.status_code == 201, r.text
    return dict(r.json())


def create_job(
    client: httpx.Client, model_id: str, dataset: str, config: dict[str, Any]
) -> dict[str, Any]:
    r = client.post("/v1/jobs", json={"model_id": model_id, "dataset": dataset, "config": config})
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(f"/v1/jobs/{r.json()['id']}")
    return dict(r.json())


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, oldest first, following the `next` cursor."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        r = client.get(f"/v1/jobs/{job_id}/events", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["items"])
        if not body.get("next"):
            return out
        params["after"] = body["next"]


def poll(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    procs: tuple[Proc, ...] = (),
) -> dict[str, Any]:
    """Poll the job until ``until(job)``; fail with the job and process logs on timeout."""
    deadline = time.monotonic() + timeout_s
    job = get_job(client, job_id)
    while not until(job):
        if job["status"] in FINAL:
            raise AssertionError(f"job {job_id} ended before the awaited state: {job}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in procs)
            raise AssertionError(
                f"job {job_id} did not get there in {timeout_s:.0f} s: {job}\n{logs}"
            )
        time.sleep(0.2)
        job = get_job(client, job_id)
    return job


def iter_stages(evts: list[dict[str, Any]]) -> Iterator[str]:
    for e in evts:
        if e.get("stage"):
            yield str(e["stage"])
