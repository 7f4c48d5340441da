"""Every request of the API, built once for both clients: what is sent (method, path,
httpx arguments) and what the answer becomes. `Client` sends a `Call` and returns what it
reads; `AsyncClient` awaits the same; a `Listing` walks every page of a list endpoint and
an `Upload` sends files as multipart.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from metacluster.client.errors import ClientError
from metacluster.client.records import Artifact, Dataset, Event, Job, Model
from metacluster.filenames import MODEL_FILE, REPORT_HTML, REPORT_JSON

T = TypeVar("T")
PathLike = str | os.PathLike[str]
JobRef = Job | str
ModelRef = Model | str
DatasetRef = Dataset | str
PYKAN_SUFFIXES = ("_config.yml", "_state")
# The files of a job logged as an MLflow run.
MLFLOW_FILES = (MODEL_FILE, REPORT_HTML, REPORT_JSON)


def ref_id(ref: Job | Model | Dataset | str) -> str:
    """The id of a record, or the id given as a string."""
    return ref.id if isinstance(ref, Job | Model | Dataset) else str(ref)


def json_body(response: httpx.Response) -> Any:
    return None if response.status_code == 204 else response.json()


def _reads(record: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    """An answer's JSON body made into `record`."""
    return lambda response: record(json_body(response))


def _nothing(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request (built afresh for each try) and what its answer becomes."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    options: Mapping[str, Any] = field(default_factory=dict)  # httpx.build_request's


@dataclass(frozen=True)
class Listing(Generic[T]):
    """Every page of a list endpoint (cursor paging), each item made into `record`."""

    path: str
    params: Mapping[str, Any]
    record: Callable[[Mapping[str, Any]], T]

    def first(self) -> dict[str, Any]:
        """The query of the first page."""
        return {k: v for k, v in self.params.items() if v is not None}

    def page(self, query: Mapping[str, Any]) -> Call[dict[str, Any]]:
        return Call("GET", self.path, _reads(dict), {"params": dict(query)})

    @staticmethod
    def after(body: Mapping[str, Any], query: dict[str, Any]) -> dict[str, Any] | None:
        """The query of the page after `body`, or None after the last one."""
        return {**query, "after": body["next"]} if body.get("next") else None


@dataclass(frozen=True)
class Upload(Generic[T]):
    """A multipart upload of files (``file`` fields) and form `data`."""

    path: str
    files: list[Path]
    data: dict[str, str] | None
    record: Callable[[Mapping[str, Any]], T]

    def call(self, contents: Sequence[Any]) -> Call[T]:
        """The request with the files' contents (open files or bytes)."""
        parts = [
            ("file", (f.name, c, "application/octet-stream"))
            for f, c in zip(self.files, contents, strict=True)
        ]
        return Call("POST", self.path, self.read, {"files": parts, "data": self.data})

    def read(self, response: httpx.Response) -> T:
        return self.record(json_body(response))


# -- uploads ----------------------------------------------------------------------------------
def model_files(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """The files of a model upload: the file itself, or both files of a pykan checkpoint
    (named by its saveckpt prefix or by either file), plus a spec sidecar beside it."""
    if not isinstance(path, str | os.PathLike):
        files = [Path(p) for p in path]
    else:
        p = Path(path)
        prefix = p
        for suffix in PYKAN_SUFFIXES:
            if p.name.endswith(suffix) and len(p.name) > len(suffix):
                prefix = p.with_name(p.name[: -len(suffix)])
        config = prefix.with_name(prefix.name + "_config.yml")
        state = prefix.with_name(prefix.name + "_state")
        if config.is_file() and state.is_file():
            files = [config, state]
        else:
            files = [p]
            spec = p.with_name(p.name + ".spec.json")
            if spec.is_file():
                files.append(spec)
    for f in files:
        if not f.is_file():
            raise ClientError(f"model file not found: {f}")
    return files


def upload_model(path: PathLike | Sequence[PathLike], format: str) -> Upload[Model]:
    return Upload("/v1/models", model_files(path), {"format": format}, Model.from_dict)


def upload_dataset(path: PathLike) -> Upload[Dataset]:
    p = Path(path)
    if not p.is_file():
        raise ClientError(f"dataset file not found: {p}")
    return Upload("/v1/datasets", [p], None, Dataset.from_dict)


# -- jobs -------------------------------------------------------------------------------------
def job_request(
    model: ModelRef,
    dataset: DatasetRef,
    config: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    webhook_url: str | None,
    webhook_events: Sequence[str] | None,
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs``: `config` with the keyword overrides given."""
    cfg = dict(config or {})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    body: dict[str, Any] = {"model_id": ref_id(model), "dataset": ref_id(dataset), "config": cfg}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_events is not None:
        body["webhook_events"] = list(webhook_events)
    return body


def create_job(body: dict[str, Any], idempotency_key: str | None, dry_run: bool) -> Call[Any]:
    """``POST /v1/jobs`` (`body` from `job_request`): a dry run (the checks and the plan),
    or a job with an Idempotency-Key (made unless given), so a retry never makes two."""
    if dry_run:
        return Call("POST", "/v1/jobs", _reads(dict), {"json": body, "params": {"dry_run": "true"}})
    key = idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        "/v1/jobs",
        _reads(Job.from_dict),
        {"json": body, "headers": {"Idempotency-Key": key}},
    )


def get_job(job: JobRef) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{ref_id(job)}", _reads(Job.from_dict))


def cancel(job: JobRef) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{ref_id(job)}/cancel", _reads(Job.from_dict))


def delete_job(job: JobRef) -> Call[None]:
    return Call("DELETE", f"/v1/jobs/{ref_id(job)}", _nothing)


def list_jobs(status: str | None, page_size: int) -> Listing[Job]:
    return Listing("/v1/jobs", {"status": status, "limit": page_size}, Job.from_dict)


def events(job: JobRef) -> Listing[Event]:
    """The job's events as JSON pages (not followed)."""
    return Listing(f"/v1/jobs/{ref_id(job)}/events", {"limit": 500}, Event.from_dict)


def report_html(job: JobRef) -> Call[str]:
    return Call("GET", f"/v1/jobs/{ref_id(job)}/report", lambda response: str(response.text))


def artifact_bytes(artifact: Artifact) -> Call[httpx.Response]:
    """An artifact's bytes (sent streamed; may answer a redirect to the object store)."""
    return Call("GET", artifact.url, lambda response: response)


# -- models, datasets, webhooks -----------------------------------------------------------------
def get_model(model: ModelRef) -> Call[Model]:
    return Call("GET", f"/v1/models/{ref_id(model)}", _reads(Model.from_dict))


def list_models(page_size: int) -> Listing[Model]:
    return Listing("/v1/models", {"limit": page_size}, Model.from_dict)


def delete_model(model: ModelRef) -> Call[None]:
    return Call("DELETE", f"/v1/models/{ref_id(model)}", _nothing)


def list_datasets(page_size: int) -> Listing[Dataset]:
    return Listing("/v1/datasets", {"limit": page_size}, Dataset.from_dict)


def delete_dataset(dataset: DatasetRef) -> Call[None]:
    return Call("DELETE", f"/v1/datasets/{ref_id(dataset)}", _nothing)


def webhook_secret(rotate: bool) -> Call[dict[str, Any]]:
    if rotate:
        return Call("POST", "/v1/webhooks/secret/rotate", _reads(dict))
    return Call("GET", "/v1/webhooks/secret", _reads(dict))


# -- MLflow -------------------------------------------------------------------------------------
def mlflow_artifacts(job: Job) -> list[Artifact]:
    """The job's files that go into its MLflow run."""
    return [a for a in job.artifacts if a.name in MLFLOW_FILES]


def log_to_mlflow(
    job: Job, files: list[Path], job_url: str, experiment: str, tracking_uri: str | None
) -> str:
    """Log the job and its downloaded files as an MLflow run; returns the run id."""
    from metacluster.tracking import log_job

    return log_job(
        job.raw, files, tracking_uri=tracking_uri, experiment=experiment, job_url=job_url
    )
