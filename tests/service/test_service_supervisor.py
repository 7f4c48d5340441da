"""The embedded worker's supervisor (`service.supervisor`) on real child processes:
a dead worker is reaped and restarted, jobs are re-sent after a restart, and a worker
that keeps dying makes it give up with the reason."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from service.supervisor import WorkerSupervisor, describe_exit


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _until(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def test_a_killed_worker_is_reaped_restarted_and_its_jobs_resent() -> None:
    started: list[subprocess.Popen[bytes]] = []
    restarts: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(_sleeper())
        return started[-1]

    sup = WorkerSupervisor(
        start, on_restart=lambda: restarts.append(len(started)), restart_delay_s=0.5
    ).install()
    try:
        assert sup.state() == "ok"
        started[0].kill()
        _until(lambda: sup.state() != "ok")
        assert "killed by SIGKILL; restarting" in sup.state()
        _until(lambda: len(started) == 2 and sup.state() == "ok")
        assert started[0].poll() is not None  # reaped: no zombie
        _until(lambda: restarts == [2])
        assert sup.proc is started[1] and sup.proc.poll() is None and sup.gave_up is None
    finally:
        sup.stop(_stop)
    assert all(p.poll() is not None for p in started)


def test_a_worker_that_keeps_dying_makes_it_give_up() -> None:
    gave_up: list[str] = []

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    sup = WorkerSupervisor(
        start,
        on_give_up=lambda: gave_up.append("stop"),
        restart_delay_s=0,
        max_restarts=2,
        window_s=60,
    ).install()
    try:
        _until(lambda: sup.gave_up is not None, 60)
    finally:
        sup.stop(_stop)
    assert gave_up == ["stop"]
    assert sup.gave_up is not None and "exit status 3" in sup.gave_up
    assert "3 times within 60 s" in sup.gave_up and sup.state() == sup.gave_up


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit status 1"
