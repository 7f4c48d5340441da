"""Keep garbage-collection pauses out of request latency.

An API process imports torch, SQLAlchemy, pydantic and the engine: about 300,000
objects that live as long as the process. CPython's full (generation 2) collection
walks every one of them, and under load it ran every ten seconds or so for 150-250 ms,
stalling every request in flight: that was the p99 of `GET /v1/jobs/{id}` in
`benchmarks/load.py` (docs/reliability.md). `settle()` imports what request handlers
would otherwise import on first use, collects once, and `gc.freeze()`s the survivors:
frozen objects are never scanned again (they are still freed by reference counting),
so a full collection only walks what requests allocate (tens of milliseconds instead
of hundreds). Once per process.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

# Modules request handlers import lazily (uploads inspect checkpoints and datasets, job
# creation plans the compression); the producer is warmed by the app (`warmers`).
WARM_MODULES = (
    "metacluster.formats",
    "metacluster.compress",
    "metacluster.data.files",
)

_lock = threading.Lock()
_settled = False


def settle(
    modules: tuple[str, ...] = WARM_MODULES, warmers: Iterable[Callable[[], object]] = ()
) -> bool:
    """Import `modules`, call `warmers` (best effort: a failure is logged), collect,
    freeze. True the first time in a process (only then does it do anything)."""
    global _settled
    with _lock:
        if _settled:
            return False
        started = time.perf_counter()
        for name in modules:
            importlib.import_module(name)
        for warm in warmers:
            try:
                warm()
            except Exception as exc:  # warming is an optimisation, never a failure
                log.warning("heap warm-up step %r failed: %r", warm, exc)
        gc.collect()
        gc.freeze()
        _settled = True
        log.info(
            "heap settled: %d objects frozen in %.2f s",
            gc.get_freeze_count(),
            time.perf_counter() - started,
        )
        return True
