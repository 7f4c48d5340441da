"""Jobs: validation of model + dataset + config together, idempotent creation, cancel, reads.

A job is enqueued by an after-commit hook, never inside the creating transaction.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metacluster.errors import ConfigError, DatasetError, IncompatibleError, MetaClusterError
from service.db.base import utcnow
from service.db.models import (
    FINISHED_STATUSES,
    ApiKey,
    Artifact,
    Job,
    JobEvent,
    ModelRecord,
    new_id,
)
from service.errors import (
    DatasetTooLargeError,
    IdempotencyConflictError,
    JobStateError,
    NotFoundError,
)
from service.repositories import ArtifactRepository, JobEventRepository, JobRepository
from service.services.datasets import DatasetMeta, get_dataset
from service.services.models import get_model
from service.settings import Settings
from service.transaction import after_commit

Enqueue = Callable[[str, str], None]
"""Sends job ``id`` to ``queue``; called only after the creating transaction commits."""

BUILTIN_NAMES = frozenset({"digits", "mnist1d"})

# Options of the generated built-ins that set how many samples are made, with the
# loader's defaults (metacluster.data); digits is a fixed 1797-sample set.
_SAMPLE_OPTIONS: dict[str, dict[str, int]] = {
    "eq:": {"n_train": 1000, "n_test": 1000},
    "mnist1d": {"num_samples": 5000},
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class IncompatibleJobError(IncompatibleError):
    """Model, dataset and config do not fit together; ``checks`` says where."""

    def __init__(self, checks: Sequence[Check]) -> None:
        failed = [c for c in checks if not c.ok]
        super().__init__("; ".join(c.detail for c in failed))
        self.extra = {"checks": [c.to_dict() for c in checks]}


@dataclass(frozen=True)
class Validated:
    """A job request that passed every check."""

    model: ModelRecord
    config: dict[str, Any]
    queue: str
    checks: list[Check]


# -- datasets -----------------------------------------------------------------
def is_builtin_dataset(spec: str) -> bool:
    """Built-in names only: a job must never name a server path."""
    name = spec.split("?", 1)[0]
    return name in BUILTIN_NAMES or (name.startswith("eq:") and len(name) > 3 and "/" not in name)


def builtin_sample_count(spec: str) -> int | None:
    """Samples (train + test) a generated built-in spec asks for; None for fixed sets.

    Values the loader cannot parse are left to it (it raises ``invalid_dataset``); a
    repeated option counts at its largest, so no spelling slips past the cap.
    """
    name, _, query = spec.partition("?")
    family = "eq:" if name.startswith("eq:") else name
    defaults = _SAMPLE_OPTIONS.get(family)
    if defaults is None:
        return None
    counts = dict(defaults)
    given: dict[str, int] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in defaults:
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        given[key] = max(value, given.get(key, value))
    counts.update(given)
    return sum(counts.values())


def check_builtin_size(spec: str, limit: int) -> None:
    """Refuse a built-in whose options ask for more than ``limit`` samples."""
    samples = builtin_sample_count(spec)
    if samples is not None and samples > limit:
        raise DatasetTooLargeError(spec, samples, limit)


@lru_cache(maxsize=32)
def builtin_dataset_meta(spec: str) -> DatasetMeta:
    """Load a built-in once per process to learn its shape (generated locally, no download)."""
    from metacluster.data import load_dataset

    data = load_dataset(spec)
    return DatasetMeta(
        task=data.task,
        n_train=data.n_train,
        n_test=data.n_test,
        input_shape=list(data.input_shape),
        n_classes=data.n_classes,
        n_outputs=data.n_outputs,
    )


def dataset_meta(
    session: Session, owner: ApiKey, spec: str, *, max_builtin_samples: int
) -> DatasetMeta:
    """Shape of an uploaded dataset (from its row) or of a built-in (loaded once).

    A built-in is generated here, so its size is checked before it is built.
    """
    if spec.startswith("ds_"):
        row = get_dataset(session, owner, spec)
        return DatasetMeta(
            row.task, row.n_train, row.n_test, list(row.input_shape), row.n_classes, row.n_outputs
        )
    if not is_builtin_dataset(spec):
        raise DatasetError(
            f"unknown dataset {spec!r}: use an uploaded dataset id (ds_...) or a built-in "
            "(digits, mnist1d, eq:<name>)"
        )
    check_builtin_size(spec, max_builtin_samples)
    try:
        return builtin_dataset_meta(spec)
    except MetaClusterError:
        raise
    except Exception as exc:
        raise DatasetError(f"built-in dataset {spec!r} could not be generated: {exc}") from None


# -- config and compatibility -------------------------------------------------
def parse_config(config: dict[str, Any]) -> dict[str, Any]:
    """The full, validated config (defaults filled in) exactly as the worker rebuilds it."""
    from metacluster.compress.config import MetaClusterConfig

    try:
        return MetaClusterConfig.from_dict(config).to_dict()
    except MetaClusterError:
        raise
    except Exception as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def compatibility_checks(
    info: dict[str, Any], family: str, meta: DatasetMeta, config: dict[str, Any]
) -> list[Check]:
    """Input size, output width and K against the model's layers."""
    layers: list[dict[str, Any]] = list(info.get("layers") or [])
    if not layers:
        return [Check("layers", False, "the model has no KAN layers to compress")]
    conv = "conv" in family
    checks: list[Check] = []

    first_in = int(layers[0]["in"])
    if conv:
        channels = meta.input_shape[0] if len(meta.input_shape) == 3 else 1
        ok = first_in == channels
        detail = f"model takes {first_in} input channels, dataset has {channels}"
    else:
        features = math.prod(meta.input_shape)
        ok = first_in == features
        detail = f"model takes {first_in} inputs, dataset has {features} {meta.input_shape}"
    checks.append(Check("input_size", ok, detail))

    if conv:
        checks.append(
            Check("outputs", True, "not checked: a conv model's head follows its KAN layers")
        )
    else:
        last_out = int(layers[-1]["out"])
        what = (
            f"{meta.n_classes} classes"
            if meta.task == "classification"
            else f"{meta.n_outputs} targets"
        )
        checks.append(
            Check(
                "outputs",
                last_out == meta.n_outputs,
                f"model has {last_out} outputs, dataset has {what}",
            )
        )

    selected = _selected_layers(layers, config)
    ks = config["k"] if isinstance(config["k"], list) else [config["k"]]
    k = max(int(v) for v in ks)
    if not selected:
        checks.append(
            Check("k_vs_edges", False, "no layer is selected by include/exclude/min_edges")
        )
    else:
        # The engine's rule: K may not exceed the edges being compressed (all selected
        # layers); within a smaller per-layer codebook it uses fewer distinct centroids.
        total = sum(int(layer["edges"]) for layer in selected)
        checks.append(
            Check(
                "k_vs_edges",
                k <= total,
                f"K={k}, {total} edges to compress in {len(selected)} layers",
            )
        )
    return checks


def _selected_layers(layers: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    include: list[str] = config.get("include") or []
    exclude: list[str] = config.get("exclude") or []
    min_edges = int(config.get("min_edges") or 1)
    out = []
    for layer in layers:
        name = str(layer["name"])
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if int(layer["edges"]) >= min_edges:
            out.append(layer)
    return out


def validate_job(
    session: Session,
    owner: ApiKey,
    settings: Settings,
    model_id: str,
    dataset: str,
    config: dict[str, Any],
) -> Validated:
    """Everything a job needs, checked together; raises 404 / 422 problems."""
    model = get_model(session, owner, model_id)
    full_config = parse_config(config)
    meta = dataset_meta(session, owner, dataset, max_builtin_samples=settings.max_builtin_samples)
    checks = compatibility_checks(model.info, model.family, meta, full_config)
    if not all(c.ok for c in checks):
        raise IncompatibleJobError(checks)
    return Validated(model, full_config, settings.queue_for(full_config.get("device")), checks)


# -- creation -----------------------------------------------------------------
def request_hash(model_id: str, dataset: str, config: dict[str, Any]) -> str:
    body = {"model_id": model_id, "dataset": dataset, "config": config}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(existing: Job, digest: str, key: str) -> Job:
    if existing.request_hash != digest:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was already used with a different request body"
        )
    return existing


def create_job(
    session: Session,
    owner: ApiKey,
    settings: Settings,
    enqueue: Enqueue,
    *,
    model_id: str,
    dataset: str,
    config: dict[str, Any],
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Add a queued job and schedule its enqueue after commit.

    Returns (job, replayed): with a known Idempotency-Key and the same body the
    existing job comes back and nothing is enqueued again.
    """
    jobs = JobRepository(session)
    digest = request_hash(model_id, dataset, config)
    if idempotency_key is not None:
        existing = jobs.get_by_idempotency_key(owner.id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest, idempotency_key), True

    valid = validate_job(session, owner, settings, model_id, dataset, config)
    job = Job(
        id=new_id("job"),
        owner_id=owner.id,
        model_id=valid.model.id,
        dataset=dataset,
        config=valid.config,
        status="queued",
        stage=None,
        progress=0.0,
        created_at=utcnow(),
        cancel_requested=False,
        deliveries=0,
        idempotency_key=idempotency_key,
        request_hash=digest,
        queue=valid.queue,
    )
    try:
        # A savepoint, so losing a race on the (owner, key) unique constraint leaves
        # the outer transaction usable for reading the winner.
        with session.begin_nested():
            jobs.add(job)
    except IntegrityError:
        if idempotency_key is None:
            raise
        winner = jobs.get_by_idempotency_key(owner.id, idempotency_key)
        if winner is None:
            raise
        return _replay(winner, digest, idempotency_key), True
    JobEventRepository(session).add(job.id, "status", message="queued", data={"status": "queued"})
    job_id, queue = job.id, job.queue
    after_commit(session, lambda: enqueue(job_id, queue))
    return job, False


# -- reads and cancel ---------------------------------------------------------
def get_job(session: Session, owner: ApiKey, job_id: str, *, for_update: bool = False) -> Job:
    job = JobRepository(session).get(owner.id, job_id, for_update=for_update)
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session, owner: ApiKey, *, after: str | None, limit: int, status: str | None
) -> tuple[Sequence[Job], str | None]:
    """A page of the owner's jobs, newest first, and the cursor of the next page."""
    rows, more = JobRepository(session).page(owner.id, after=after, limit=limit, status=status)
    return rows, (rows[-1].id if more and rows else None)


def list_events(
    session: Session, owner: ApiKey, job_id: str, *, after: int | None, limit: int
) -> tuple[Sequence[JobEvent], int | None]:
    get_job(session, owner, job_id)
    rows, more = JobEventRepository(session).page(job_id, after=after, limit=limit)
    return rows, (rows[-1].id if more and rows else None)


def cancel_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """Queued -> cancelled at once; running -> flagged, the worker stops between steps."""
    job = get_job(session, owner, job_id, for_update=True)
    if job.status in FINISHED_STATUSES:
        if job.status == "cancelled":
            return job
        raise JobStateError(f"job {job_id} already {job.status}; it cannot be cancelled")
    events = JobEventRepository(session)
    if not job.cancel_requested:
        job.cancel_requested = True
        events.add(job.id, "log", message="cancel requested")
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        events.add(job.id, "status", message="cancelled", data={"status": "cancelled"})
    session.flush()
    return job


def get_artifact(session: Session, owner: ApiKey, job_id: str, name: str) -> Artifact:
    get_job(session, owner, job_id)
    artifact = ArtifactRepository(session).get(job_id, name)
    if artifact is None:
        raise NotFoundError(f"job {job_id} has no artifact {name!r}")
    return artifact
