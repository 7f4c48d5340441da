"""The embedded worker's supervisor: `metacluster serve` notices a dead worker.

A daemon thread of the `serve` process polls its worker child. When it has exited
(``kill -9``, the OOM killer, a crash), the thread reaps it (no zombie), reports it
(`state`, which `/readyz` answers with 503 meanwhile), waits ``restart_delay_s`` and
starts a new one, then calls ``on_restart`` (`serve` re-sends the unfinished jobs: the
job the dead worker was running is taken over once its lease expires, as in the Celery
mode). More than ``max_restarts`` restarts within ``window_s`` is a worker that cannot
stay up: the supervisor gives up, says why (`gave_up`) and calls ``on_give_up``
(`serve` then stops and exits non-zero).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

StartWorker = Callable[[], "subprocess.Popen[bytes]"]

_current: WorkerSupervisor | None = None


def current() -> WorkerSupervisor | None:
    """The supervisor of this process's embedded worker (None outside `serve`)."""
    return _current


def die_with_parent() -> None:
    """In a child, before it runs anything: die when the parent does (Linux only).

    The embedded worker must not outlive a `serve` that was killed. SIGKILL, not
    SIGTERM: Celery's answer to SIGTERM is a warm shutdown that finishes the current
    job first, so an orphan would go on running it (for minutes) while the next `serve`
    takes the job over. The job resumes from its checkpoints instead, once its lease
    has expired. (The API's inspection children die with it too, `service.inspector`.)
    """
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class WorkerSupervisor(threading.Thread):
    """Keeps one worker process running (see the module docstring)."""

    def __init__(
        self,
        start_worker: StartWorker,
        *,
        on_restart: Callable[[], object] = lambda: None,
        on_give_up: Callable[[], object] = lambda: None,
        restart_delay_s: float = 1.0,
        max_restarts: int = 5,
        window_s: float = 300.0,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__(name="metacluster-worker-supervisor", daemon=True)
        self._start_worker = start_worker
        self._on_restart = on_restart
        self._on_give_up = on_give_up
        self.restart_delay_s = restart_delay_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.poll_s = poll_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._restarts: list[float] = []
        self._problem: str | None = None
        self.gave_up: str | None = None
        self.proc = start_worker()

    def state(self) -> str:
        """``ok`` while the worker process lives, else why it does not."""
        with self._lock:
            return self._problem or "ok"

    def check(self) -> None:
        """Raises (with `state`) unless the worker process is running."""
        state = self.state()
        if state != "ok":
            raise RuntimeError(state)

    def install(self) -> WorkerSupervisor:
        """Make this the process's supervisor (`current`) and start watching."""
        global _current
        _current = self
        self.start()
        return self

    def run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            returncode = self.proc.poll()  # reaps an exited child
            if returncode is not None and not self._stopping.is_set():
                self._replace(returncode)
            if self.gave_up is not None:
                return

    def _replace(self, returncode: int) -> None:
        why = f"the worker (pid {self.proc.pid}) died: {describe_exit(returncode)}"
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < self.window_s] + [now]
        if len(self._restarts) > self.max_restarts:
            self.gave_up = (
                f"{why}; it died {len(self._restarts)} times within {self.window_s:.0f} s, "
                "so serve stops (see the worker's log above)"
            )
            self._set_problem(self.gave_up)
            log.error("%s", self.gave_up)
            self._on_give_up()
            return
        self._set_problem(f"{why}; restarting")
        log.error("%s; restarting it in %.1f s", why, self.restart_delay_s)
        if self._stopping.wait(self.restart_delay_s):
            return
        self.proc = self._start_worker()
        self._set_problem(None)
        log.warning("worker restarted (pid %d)", self.proc.pid)
        try:
            self._on_restart()
        except Exception:
            log.exception("after the worker restart, re-sending unfinished jobs failed")

    def _set_problem(self, problem: str | None) -> None:
        with self._lock:
            self._problem = problem

    def stop(self, stop_worker: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """Stop watching, then stop the worker with ``stop_worker``."""
        global _current
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=10)
        if _current is self:
            _current = None
        stop_worker(self.proc)
