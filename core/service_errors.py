"""Service-level errors on top of `metacluster.errors`, each with a stable code and status.

MetaClusterError
├── NotFoundError (404, "not_found")
├── UnauthorizedError (401, "unauthorized")
├── ConflictError (409, "conflict")
│   ├── IdempotencyConflictError (409, "idempotency_conflict")
│   └── JobStateError (409, "job_finished")
├── PayloadTooLargeError (413, "payload_too_large")
├── UnsupportedMediaTypeError (415, "unsupported_media_type")
├── RequestValidationProblem (422, "validation_error")
├── DatasetTooLargeError (422, "dataset_too_large"; a metacluster DatasetError)
├── DeviceUnavailableError (422, "device_unavailable"; a metacluster ConfigError)
├── QuotaExceededError (429, "quota_exceeded")
├── RateLimitedError (429, "rate_limited")
├── ServiceUnavailableError (503, "unavailable")
└── job errors (the `error.code` of a failed job, never an HTTP answer):
    JobTimeoutError ("timeout"), LeaseLostError ("lease_lost"), StorageWriteError ("storage_error")
"""

from __future__ import annotations

from metacluster.errors import ConfigError, DatasetError, MetaClusterError


class NotFoundError(MetaClusterError, code="not_found", status=404):
    """No such resource, or not one the caller's key owns."""


class UnauthorizedError(MetaClusterError, code="unauthorized", status=401):
    """A missing, unknown or revoked API key."""


class ConflictError(MetaClusterError, code="conflict", status=409):
    """The request does not fit the resource's current state."""


class IdempotencyConflictError(ConflictError, code="idempotency_conflict"):
    """An Idempotency-Key used again with another request body."""


class JobStateError(ConflictError, code="job_finished"):
    """A change to a job that has already finished."""


class PayloadTooLargeError(MetaClusterError, code="payload_too_large", status=413):
    """A request body or upload over the server's size limit."""


class UnsupportedMediaTypeError(MetaClusterError, code="unsupported_media_type", status=415):
    """An upload whose file type the endpoint does not take."""


class RequestValidationProblem(MetaClusterError, code="validation_error", status=422):
    """A request that does not have the expected parts or fields."""


class DatasetTooLargeError(DatasetError, code="dataset_too_large"):
    """A built-in data set whose options ask for more samples than the server allows."""

    def __init__(self, spec: str, samples: int, limit: int) -> None:
        super().__init__(
            f"built-in dataset {spec!r} asks for {samples} samples; this server allows at "
            f"most {limit} (METACLUSTER_MAX_BUILTIN_SAMPLES)"
        )
        self.extra = {"samples": samples, "limit": limit}


class DeviceUnavailableError(ConfigError, code="device_unavailable"):
    """A job asks for a device (e.g. cuda) that no worker of this deployment has."""

    def __init__(self, device: str, available: list[str]) -> None:
        super().__init__(
            f"device {device!r} is not available on this server (workers have: "
            f"{', '.join(available)}; METACLUSTER_WORKER_DEVICES)"
        )
        self.extra = {"device": device, "available": list(available)}


class _TooManyRequests(MetaClusterError, status=429):
    """Base of the 429 answers; they carry a Retry-After header (seconds)."""

    def __init__(self, message: str, *, retry_after_s: int, extra: dict[str, object]) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))
        self.extra = extra
        self.headers = {"Retry-After": str(self.retry_after_s)}


class QuotaExceededError(_TooManyRequests, code="quota_exceeded"):
    """The API key already has as many queued and running jobs as it may."""


class RateLimitedError(_TooManyRequests, code="rate_limited"):
    """The API key sent more requests per second than the server allows."""


class ServiceUnavailableError(MetaClusterError, code="unavailable", status=503):
    """A backend the request needs (e.g. the message broker) is not available."""


class JobTimeoutError(MetaClusterError, code="timeout", status=500):
    """A job ran past METACLUSTER_JOB_TIMEOUT_S (a failed job's error code)."""


class LeaseLostError(MetaClusterError, code="lease_lost", status=409):
    """This delivery no longer owns the job: its lease expired and another took it over."""


class StorageWriteError(MetaClusterError, code="storage_error", status=500):
    """Storing a job's artifact failed (disk full, I/O error); nothing was kept."""


__all__ = [
    "ConflictError",
    "DatasetTooLargeError",
    "DeviceUnavailableError",
    "IdempotencyConflictError",
    "JobStateError",
    "JobTimeoutError",
    "LeaseLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestValidationProblem",
    "ServiceUnavailableError",
    "StorageWriteError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
]
