"""Python client of the MetaCluster service (httpx): upload, compress, follow, download.

::

    from metacluster.client import Client

    with Client("http://127.0.0.1:8000", api_key="mck_...") as mc:
        model = mc.upload_model("kan.pt")               # or a pykan pair / prefix
        job = mc.create_job(model, "digits", k=16)      # Idempotency-Key generated
        job = mc.wait(job, timeout=3600)                # progress bar on stderr
        if job.succeeded:
            mc.download(job, "kan.mcz")                 # streamed, sha256 checked
            print(job.metrics["ratio"])

`base_url` and `api_key` default to ``METACLUSTER_URL`` and ``METACLUSTER_API_KEY``.
Errors are `APIError` subclasses chosen by the problem+json ``code`` (`NotFoundError`,
`ConflictError`, `ValidationError`, ...). Requests answered 429 or 503 are retried,
waiting as long as ``Retry-After`` says (else an exponential backoff); so are
connection failures of requests that are safe to repeat (reads, and job creation,
which carries an Idempotency-Key). `events` follows a job's Server-Sent Events and
reconnects with ``Last-Event-ID``; `wait` uses them and falls back to polling.
`AsyncClient` is the same client for asyncio: every method of `Client`, awaited.

The package, bottom up: `errors` (the typed errors), `records` (Job, Model, Dataset,
Event), `calls` (every request, built once for both clients), `sse` (the event-stream
parser), `transport` (retries, following, polling, checked downloads: no I/O),
`progress` (the bar `wait` shows), `sync` (`Client`) and `aio` (`AsyncClient`).
"""

from __future__ import annotations

from metacluster.client.aio import AsyncClient
from metacluster.client.calls import (
    PYKAN_SUFFIXES,
    DatasetRef,
    JobRef,
    ModelRef,
    PathLike,
    job_request,
    model_files,
)
from metacluster.client.errors import (
    APIError,
    AuthenticationError,
    ChecksumError,
    ClientError,
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    StreamUnavailable,
    UnsupportedMediaTypeError,
    ValidationError,
    WaitTimeout,
    error_from_response,
)
from metacluster.client.records import (
    FINAL_STATUSES,
    Artifact,
    Dataset,
    Event,
    Job,
    Model,
)
from metacluster.client.sse import SSEParser
from metacluster.client.sync import Client
from metacluster.client.transport import (
    CHUNK,
    DEFAULT_TIMEOUT_S,
    STREAM_READ_TIMEOUT_S,
    USER_AGENT,
    backoff_s,
    retry_after_s,
)

__all__ = [
    "CHUNK",
    "DEFAULT_TIMEOUT_S",
    "FINAL_STATUSES",
    "PYKAN_SUFFIXES",
    "STREAM_READ_TIMEOUT_S",
    "USER_AGENT",
    "APIError",
    "Artifact",
    "AsyncClient",
    "AuthenticationError",
    "ChecksumError",
    "Client",
    "ClientError",
    "ConflictError",
    "Dataset",
    "DatasetRef",
    "Event",
    "IdempotencyConflictError",
    "Job",
    "JobRef",
    "Model",
    "ModelRef",
    "NotFoundError",
    "PathLike",
    "PayloadTooLargeError",
    "RateLimitError",
    "SSEParser",
    "ServerError",
    "ServiceUnavailableError",
    "StreamUnavailable",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WaitTimeout",
    "backoff_s",
    "error_from_response",
    "job_request",
    "model_files",
    "retry_after_s",
]
