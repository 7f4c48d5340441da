"""The FastAPI application factory: routes, problem+json errors, metrics, OpenAPI.

``uvicorn --factory service.app:create_app`` serves it with settings from the environment.
"""

from __future__ import annotations

from fastapi import FastAPI

import metacluster
from service.metrics import Metrics
from service.problems import install_problem_handlers
from service.routes import health, jobs, uploads
from service.settings import Settings, get_settings
from service.storage import get_storage

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
    app.middleware("http")(app.state.metrics.middleware)
    install_problem_handlers(app)
    app.include_router(uploads.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    return app
