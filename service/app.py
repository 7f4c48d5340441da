"""The FastAPI application factory: routes, problem+json errors, metrics, OpenAPI.

``uvicorn --factory service.app:create_app`` serves it with settings from the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

import metacluster
from core.settings import Settings, get_settings
from core.storage import get_storage
from service import heap, inspector
from service.auth import KeyCache, RateLimiter
from service.head import HeadMiddleware
from service.limits import BodyLimitMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.problems import install_problem_handlers, problem_responses
from service.routes import dashboard, health, jobs, keys, uploads, webhooks
from service.schemas import document_job_config

DESCRIPTION = """Compress Kolmogorov-Arnold Networks with MetaCluster.

Upload a KAN (`POST /v1/models`) and optionally a dataset (`POST /v1/datasets`),
create a job (`POST /v1/jobs`), follow it (`GET /v1/jobs/{id}/events`, also as a live
event stream), then download its artifact and open its report. `GET /` is a dashboard.
Every error is `application/problem+json` (RFC 9457) with a stable `code`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Startup: settle the heap (`service.heap`) before the first request is served."""
    settings: Settings = app.state.settings
    warmers = [lambda: warm_producer(settings), lambda: inspector.warm(settings.inspect_processes)]
    await run_in_threadpool(heap.settle, warmers=warmers)
    yield


def warm_producer(settings: Settings) -> None:
    """Build the Celery producer and import its transport without connecting: what the
    first job creation would otherwise import in the middle of a request."""
    from kombu.transport import resolve_transport

    from core.producer import get_celery

    celery = get_celery(settings)
    celery.amqp  # noqa: B018  (a lazy property: builds the queues and imports celery.app.amqp)
    resolve_transport(celery.connection_for_write().transport_cls)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app bound to ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="MetaCluster",
        version=metacluster.__version__,
        description=DESCRIPTION,
        docs_url=None,  # served below from packaged assets, not a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    install_offline_docs(app)
    app.state.settings = settings
    app.state.storage = get_storage(settings)
    app.state.metrics = Metrics(settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.key_cache = KeyCache(settings.auth_cache_s)
    app.add_middleware(HeadMiddleware)  # innermost: metrics still count a HEAD as HEAD
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_json_bytes, streamed=uploads.STREAMED
    )
    install_problem_handlers(app)
    app.include_router(uploads.router)
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(keys.router)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


DOCS_ASSETS = "/docs/assets"


def install_offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the assets the ``fastapi-offline`` package ships (no CDN,
    so the page works on a machine without internet)."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from starlette.responses import HTMLResponse

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="MetaCluster API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


# OpenAPI links: which operations take the ids a creation returns. Clients (and
# stateful fuzzing) follow them from an upload or a job to the operations on it.
# (source path, method, status) -> [(target path, method, parameters, request body)]
_JOB = "$response.body#/id"
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, Any], Any]]] = {
    ("/v1/models", "post", "201"): [
        ("/v1/models/{model_id}", "get", {"model_id": _JOB}, None),
        (
            "/v1/jobs",
            "post",
            {},
            {"model_id": _JOB, "dataset": "digits", "config": {"k": 4, "meta_epochs": 1}},
        ),
    ],
    ("/v1/datasets", "post", "201"): [
        ("/v1/datasets/{dataset_id}", "get", {"dataset_id": _JOB}, None),
    ],
    ("/v1/jobs", "post", "202"): [
        ("/v1/jobs/{job_id}", "get", {"job_id": _JOB}, None),
        ("/v1/jobs/{job_id}/events", "get", {"job_id": _JOB}, None),
        ("/v1/jobs/{job_id}/cancel", "post", {"job_id": _JOB}, None),
        # (no link to its artifacts: a new job has none; GET /v1/jobs/{id} links them)
    ],
    ("/v1/jobs/{job_id}", "get", "200"): [
        ("/v1/jobs/{job_id}/events", "get", {"job_id": _JOB}, None),
        (
            "/v1/jobs/{job_id}/artifacts/{name}",
            "get",
            {"job_id": _JOB, "name": "$response.body#/artifacts/0/name"},
            None,
        ),
    ],
    ("/v1/jobs/{job_id}/events", "get", "200"): [
        (
            "/v1/jobs/{job_id}/events",
            "get",
            {"job_id": "$request.path.job_id", "after": "$response.body#/next"},
            None,
        ),
    ],
}


def add_links(schema: dict[str, Any]) -> None:
    """Put `LINKS` into the document's responses, naming targets by operationId."""
    paths = schema["paths"]
    for (path, method, status), targets in LINKS.items():
        response = paths[path][method]["responses"].get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target, target_method, parameters, body in targets:
            op_id = paths[target][target_method]["operationId"]
            link: dict[str, Any] = {"operationId": op_id}
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                link["requestBody"] = body
            name = "".join(part.title() for part in op_id.split("_")[:3])
            links[name] = link


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with FastAPI's default 422 replaced by our Problem body.

    Every request-validation error is answered as problem+json, so the document must
    not advertise FastAPI's HTTPValidationError shape.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    problem_422 = problem_responses(422)[422]
    # Every authenticated operation may answer 429 (the key's rate limit) and 503 (the
    # database is away); they are documented once here rather than on every route.
    shared = {status: problem_responses(status)[status] for status in (429, 503)}
    for path, path_item in schema["paths"].items():
        for op in path_item.values():
            responses = op.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": problem_422["description"],
                    "content": problem_422["content"],
                }
            if path.startswith("/v1/"):
                for status, doc in shared.items():
                    responses.setdefault(
                        str(status),
                        {"description": doc["description"], "content": doc["content"]},
                    )
    add_links(schema)
    document_job_config(schema)
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
