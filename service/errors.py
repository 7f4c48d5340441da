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
└── ServiceUnavailableError (503, "unavailable")
"""

from __future__ import annotations

from metacluster.errors import MetaClusterError


class NotFoundError(MetaClusterError):
    code = "not_found"
    status = 404


class UnauthorizedError(MetaClusterError):
    code = "unauthorized"
    status = 401


class ConflictError(MetaClusterError):
    code = "conflict"
    status = 409


class IdempotencyConflictError(ConflictError):
    code = "idempotency_conflict"


class JobStateError(ConflictError):
    code = "job_finished"


class PayloadTooLargeError(MetaClusterError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaTypeError(MetaClusterError):
    code = "unsupported_media_type"
    status = 415


class RequestValidationProblem(MetaClusterError):
    code = "validation_error"
    status = 422


class ServiceUnavailableError(MetaClusterError):
    code = "unavailable"
    status = 503


__all__ = [
    "ConflictError",
    "IdempotencyConflictError",
    "JobStateError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestValidationProblem",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
]
