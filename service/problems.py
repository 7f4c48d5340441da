"""RFC 9457 problem+json responses for every error, and their OpenAPI descriptions.

Every error body carries a stable ``code``; routes list theirs with `problem_responses`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from metacluster.errors import MetaClusterError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# OpenAPI: what each status means across the API, with its possible codes.
_DESCRIPTIONS: dict[int, str] = {
    401: "Missing, malformed or revoked API key (code `unauthorized`)",
    404: "No such resource for this API key (code `not_found`)",
    400: "A request body that is not valid JSON (code `invalid_json`)",
    409: "Conflict: `idempotency_conflict` (key reused with another body), "
    "`job_finished` (the job already finished), `job_not_finished` (delete a job only "
    "once it finished) or `in_use` (a queued or running job uses the model or dataset)",
    413: "Upload, form, JSON body or job config larger than the server's limits "
    "(code `payload_too_large`)",
    415: "Not multipart/form-data, or a file that is not of the endpoint's kind "
    "(code `unsupported_media_type`)",
    422: "Invalid input: `validation_error`, `unsupported_format`, `unsafe_checkpoint`, "
    "`invalid_dataset`, `dataset_too_large`, `invalid_config`, `device_unavailable`, "
    "`incompatible`, `invalid_webhook_url`, `invalid_webhook_events`",
    429: "Too many requests for this API key: `rate_limited`, or `quota_exceeded` "
    "(queued + running jobs); retry after `Retry-After` seconds",
    503: "A dependency (database, broker) is unreachable (code `unavailable`)",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented with the Problem schema."""
    from service.schemas import Problem

    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def _metacluster_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MetaClusterError)
    if exc.status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    extra = getattr(exc, "extra", None)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem(request, exc.status, exc.code, exc.message, extra, headers or None)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is unreachable (restarting, failing over): 503, and the pool
    reconnects by itself (pre-ping) once it is back."""
    log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
    return problem(
        request,
        503,
        "unavailable",
        "the database is unreachable; retry shortly",
        headers={"Retry-After": "2"},
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    return problem(request, 422, "validation_error", detail, {"errors": errors})


_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (FastAPI has a route per method, and
    Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path

    def walk(routes: Any) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # an included router
            if inner is not None:
                walk(inner.routes)
                continue
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                methods.update(getattr(route, "methods", None) or ())

    walk(request.app.router.routes)
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 400:  # the body could not be parsed (e.g. not UTF-8 JSON)
        code = "invalid_json"
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return problem(request, exc.status_code, code, detail, headers=headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "internal", "internal server error")


def install_problem_handlers(app: FastAPI) -> None:
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    app.add_exception_handler(MetaClusterError, _metacluster_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
