"""The client's errors: `APIError` subclasses mirror the service's problem+json answers
(chosen by ``code``, else by status); `ClientError` subclasses are failures on this side."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from metacluster.errors import MetaClusterError

if TYPE_CHECKING:
    from metacluster.client.records import Job


class ClientError(MetaClusterError, code="client_error", status=0):
    """A client-side failure that is not an HTTP answer (bad arguments, a timeout)."""


class WaitTimeout(ClientError, code="timeout"):
    """`wait` ran out of time before the job finished."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class StreamUnavailable(ClientError, code="stream_unavailable"):
    """The server did not answer with an event stream (an older server, a proxy)."""


class ChecksumError(ClientError, code="checksum_mismatch"):
    """A download whose sha256 is not the artifact's."""


class APIError(MetaClusterError, code="http_error", status=0):
    """An error answer of the service (problem+json): `status`, `code`, `detail`."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        problem: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.problem: dict[str, Any] = dict(problem or {})
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", self.message))


class AuthenticationError(APIError, code="unauthorized"):
    """401: a missing, unknown or revoked API key."""


class NotFoundError(APIError, code="not_found"):
    """404: no such resource for this API key."""


class ConflictError(APIError, code="conflict"):
    """409: the request does not fit the resource's state."""


class IdempotencyConflictError(ConflictError, code="idempotency_conflict"):
    """409: an Idempotency-Key reused with another request body."""


class PayloadTooLargeError(APIError, code="payload_too_large"):
    """413: over the server's upload limit."""


class UnsupportedMediaTypeError(APIError, code="unsupported_media_type"):
    """415: a file of a type the endpoint does not take."""


class ValidationError(APIError, code="validation_error"):
    """422: the model, dataset or config was refused; `code` says how."""


class RateLimitError(APIError, code="rate_limited"):
    """429: too many requests (after the retries)."""


class ServiceUnavailableError(APIError, code="unavailable"):
    """503: a dependency of the service is down (after the retries)."""


class ServerError(APIError, code="internal"):
    """5xx: an error of the service itself."""


_BY_CODE: dict[str, type[APIError]] = {
    "unauthorized": AuthenticationError,
    "not_found": NotFoundError,
    "idempotency_conflict": IdempotencyConflictError,
    "payload_too_large": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaTypeError,
    "rate_limited": RateLimitError,
    "unavailable": ServiceUnavailableError,
}
_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed exception for an error answer (problem+json, or anything else)."""
    problem: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        body = response.json()
        if isinstance(body, dict):
            problem = body
    status = response.status_code
    code = str(problem.get("code") or "")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    detail = str(problem.get("detail") or response.reason_phrase or "error")
    message = f"{status} {code or 'error'}: {detail}"
    return cls(
        message,
        status=status,
        code=code or cls.code,
        problem=problem,
        headers=dict(response.headers),
    )


def checked(response: httpx.Response) -> httpx.Response:
    """The response, or the typed error of a 4xx/5xx answer (the caller reads a streamed
    one's body first)."""
    if response.status_code >= 400:
        raise error_from_response(response)
    return response
