"""Pydantic v2 request and response schemas of the HTTP API.

These are the public contract (docs/api.md); the OpenAPI document is generated from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
WebhookEvent = Literal["started", "stage", "succeeded", "failed", "cancelled"]


class Problem(BaseModel):
    """An RFC 9457 problem details body (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI naming the problem type")
    title: str = Field(description="Short summary of the problem type")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong in this occurrence")
    code: str = Field(description="Stable machine-readable error code")
    instance: str | None = Field(default=None, description="The request path")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Field errors of a request that failed validation"
    )


class LayerInfo(BaseModel):
    name: str
    in_: int = Field(alias="in", serialization_alias="in")
    out: int
    edges: int
    coef_dim: int

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class ModelOut(BaseModel):
    """An uploaded KAN checkpoint, as `metacluster.formats.inspect_model` sees it."""

    id: str
    filename: str
    family: str
    format: str
    edges: int
    params: int
    bytes: int
    sha256: str
    layers: list[LayerInfo]
    created_at: datetime


class DatasetOut(BaseModel):
    """An uploaded ``.npz`` dataset (``x_train, y_train, x_test, y_test``)."""

    id: str
    filename: str
    task: Literal["classification", "regression"]
    n_train: int
    n_test: int
    input_shape: list[int]
    n_classes: int | None
    n_outputs: int
    bytes: int
    sha256: str
    created_at: datetime


def config_schemas() -> dict[str, tuple[str, dict[str, Any]]]:
    """Per registered method: the OpenAPI component name (``DkmConfig``, ``PqConfig``,
    ...) and schema of its config, from the engine's declarations
    (`metacluster.compress.spec.config.method_config_schema`)."""
    from metacluster.compress import method_names
    from metacluster.compress.spec.config import method_config_schema

    return {
        n: ("".join(p.title() for p in n.split("_")) + "Config", method_config_schema(n))
        for n in method_names()
    }


def document_job_config(schema: dict[str, Any]) -> None:
    """Add the per-method configs to an OpenAPI document: their components, and on
    ``JobCreate.config`` the mapping from ``method`` to each (``x-method-configs``) and
    the default method (``x-default-method``). The body stays the flat object it always
    was, and the document changes by additions only.

    Not an ``anyOf`` on the property: the server validates a config (the same rules as
    the library), and a union there turns a schema-driven fuzzer's configs into knobs
    drawn at random across their whole ranges, which a given model almost never takes
    (tests/integration/test_fuzz.py then never reaches a created job)."""
    from metacluster.compress.spec.options import DEFAULT_METHOD

    components = schema.setdefault("components", {}).setdefault("schemas", {})
    refs = {}
    for method, (name, body) in config_schemas().items():
        components[name] = body
        refs[method] = f"#/components/schemas/{name}"
    config = components["JobCreate"]["properties"]["config"]
    config["x-method-configs"] = refs
    config["x-default-method"] = DEFAULT_METHOD


class JobCreate(BaseModel):
    """A compression job: which model, which data, and the `MetaClusterConfig` as a dict."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(description="Id of an uploaded model (``mdl_...``)", max_length=40)
    dataset: str = Field(
        description='A built-in dataset ("digits", "mnist1d", "eq:<name>") or an uploaded '
        'dataset id ("ds_...")',
        min_length=1,
        max_length=200,
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="MetaClusterConfig fields (k, d_emb, epochs, ...); omitted ones take defaults",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POST the job's events here, signed (Standard Webhooks) with the API "
        "key's secret (`GET /v1/webhooks/secret`); public addresses only",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        description="Which events to send: started, stage, succeeded, failed, cancelled "
        "(default: the three final ones)",
    )


class ArtifactOut(BaseModel):
    name: str
    bytes: int
    sha256: str
    url: str


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    status: JobStatus
    stage: str | None
    progress: float = Field(ge=0.0, le=1.0)
    model_id: str
    dataset: str
    queue: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    error: JobError | None
    cancel_requested: bool
    deliveries: int
    artifacts: list[ArtifactOut]
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    report_url: str | None = Field(
        default=None, description="The HTML report with plots, once the job succeeded"
    )


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next`` as ``?after=`` for the following page."""

    items: list[JobOut]
    next: str | None


class ModelPage(BaseModel):
    """One page of models, newest first; pass ``next`` as ``?after=`` for the following page."""

    items: list[ModelOut]
    next: str | None


class DatasetPage(BaseModel):
    """One page of datasets, newest first; pass ``next`` as ``?after=`` for the following page."""

    items: list[DatasetOut]
    next: str | None


class WebhookSecretOut(BaseModel):
    """The API key's webhook signing secrets (Standard Webhooks, ``whsec_...``)."""

    secret: str = Field(description="Signs every webhook of this key's jobs")
    previous: str | None = Field(
        default=None, description="After a rotation: still signs (a second signature) until"
    )
    previous_expires_at: datetime | None = None


class JobEventOut(BaseModel):
    id: int
    seq: int
    at: datetime
    kind: Literal["status", "stage", "progress", "log", "webhook"] | str
    stage: str | None
    progress: float | None
    loss: float | None
    message: str | None
    data: dict[str, Any] | None


class JobEventPage(BaseModel):
    """Events in order; pass ``next`` as ``?after=`` to read only newer ones."""

    items: list[JobEventOut]
    next: int | None


class DryRunCheck(BaseModel):
    name: str
    ok: bool
    detail: str


class DryRunOut(BaseModel):
    """Result of ``POST /v1/jobs?dry_run=true``: all checks passed, nothing was queued."""

    valid: bool
    checks: list[DryRunCheck]
    config: dict[str, Any]
    queue: str
    plan: dict[str, Any] = Field(
        description="What the run will do: layers with their K, edges, stages with their "
        "share of the run time, expected artifact bytes per K"
    )


class KeyOut(BaseModel):
    """An API key as the server keeps it: never the secret (only its hash is stored)."""

    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    created_at: datetime
    revoked_at: datetime | None


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
