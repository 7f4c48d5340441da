"""Checkpoint inspection out of the API process: the API never holds a model.

An upload is spooled to disk (hashed and counted on the way, `service.multipart`);
judging it means building the model (`metacluster.formats.inspect_model`), which takes
about twice the checkpoint's size in memory. That happens in a small pool of child
processes (``METACLUSTER_INSPECT_PROCESSES``), so the API's own memory does not grow
with uploads: concurrent uploads queue for a child, and a child that dies (a hostile
checkpoint, the OOM killer) fails that one upload with a 422 and is replaced.

The pool is one per API process, started on first use (or by `warm`), with ``spawn``
children: a fork of a process that runs threads (uvicorn's, torch's) is unsafe.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from metacluster.errors import FormatError, MetaClusterError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _inspect_in_child(path: str, fmt: str) -> dict[str, Any]:
    """`inspect_model` in a pool child; anything but our own errors becomes a FormatError
    (its message travels back, not an arbitrary exception object)."""
    from metacluster.formats import inspect_model

    name = Path(path).name
    try:
        return dict(inspect_model(path, format=fmt))
    except MetaClusterError:
        raise
    except Exception as exc:  # a reader bug or a file no reader anticipated
        raise FormatError(f"{name}: not a KAN checkpoint we can read ({exc})") from None


def _child_init() -> None:
    # A pool child must not outlive a killed API (`serve` included).
    from service.supervisor import die_with_parent

    die_with_parent()


def _import_readers() -> None:
    import metacluster.formats  # noqa: F401


def _get_pool(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=False)
            _pool = ProcessPoolExecutor(
                max_workers=processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init if sys.platform.startswith("linux") else None,
            )
            _pool_size = processes
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    """Drop a broken pool; the next inspection starts a fresh one."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def warm(processes: int) -> None:
    """Start the children and import the readers in them now, not in the first upload
    (does not wait for them)."""
    pool = _get_pool(processes)
    for _ in range(processes):
        pool.submit(_import_readers)


def inspect_checkpoint(path: Path, fmt: str, processes: int) -> dict[str, Any]:
    """`metacluster.formats.inspect_model` of ``path`` in a pool child (blocking: call it
    from a worker thread). Our errors come back as raised (422s). A child that died
    breaks the whole pool, so the inspection is tried once more on a fresh one: a
    checkpoint that kills that one too is a FormatError."""
    for attempt in range(2):
        pool = _get_pool(processes)
        try:
            return pool.submit(_inspect_in_child, str(path), fmt).result()
        except BrokenProcessPool:
            _discard(pool)
            log.warning("an inspecting process died (on %s, try %d)", path.name, attempt + 1)
    raise FormatError(
        f"{path.name}: the process inspecting it died (out of memory or crashed); "
        "it is not a checkpoint this server can read"
    )
