"""HTTP routes: parse and authorise, then call a service; no queries or logic here.

One module per resource; `service.app.create_app` mounts them. `read_route` declares
the reads of one resource by id, which share their errors.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from service.problems import problem_responses


def read_route(
    router: APIRouter, path: str, response_model: type[BaseModel], summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``@router.get`` for a read of one of the caller's resources by id: documented
    with 401 (no valid API key) and 404 (no such resource for this key)."""
    return router.get(
        path, response_model=response_model, responses=problem_responses(401, 404), summary=summary
    )
