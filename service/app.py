"""The FastAPI application factory: routes, problem+json errors, metrics, OpenAPI.

``uvicorn --factory service.app:create_app`` serves it with settings from the environment.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import metacluster
from core.settings import Settings, get_settings
from core.storage import get_storage
from service.auth import RateLimiter
from service.metrics import Metrics
from service.problems import install_problem_handlers, problem_responses
from service.routes import health, jobs, keys, uploads

DESCRIPTION = """Compress Kolmogorov-Arnold Networks with MetaCluster.

Upload a KAN (`POST /v1/models`) and optionally a dataset (`POST /v1/datasets`),
create a job (`POST /v1/jobs`), poll it, then download its artifact.
Every error is `application/problem+json` (RFC 9457) with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app bound to ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="MetaCluster",
        version=metacluster.__version__,
        description=DESCRIPTION,
    )
    app.state.settings = settings
    app.state.storage = get_storage(settings)
    app.state.metrics = Metrics(settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.middleware("http")(app.state.metrics.middleware)
    install_problem_handlers(app)
    app.include_router(uploads.router)
    app.include_router(jobs.router)
    app.include_router(keys.router)
    app.include_router(health.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
