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
└── ServiceUnavailableError (503, "unavailable")
"""

from __future__ import annotations

from metacluster.errors import DatasetError, MetaClusterError


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


class ServiceUnavailableError(MetaClusterError, code="unavailable", status=503):
    """A backend the request needs (e.g. the message broker) is not available."""


__all__ = [
    "ConflictError",
    "DatasetTooLargeError",
    "IdempotencyConflictError",
    "JobStateError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestValidationProblem",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
]
