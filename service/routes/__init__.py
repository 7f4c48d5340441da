"""HTTP routes: parse and authorise, then call a service; no queries or logic here.

One module per resource; `service.app.create_app` mounts them. `read_route`,
`list_route` and `delete_route` declare the reads by id, the lists and the deletes of
one resource, which share their errors; `PageDep` is the cursor of a list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from service.deps import SettingsDep
from service.limits import StrictInt
from service.problems import problem_responses


def read_route(
    router: APIRouter, path: str, response_model: type[BaseModel], summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``@router.get`` for a read of one of the caller's resources by id: documented
    with 401 (no valid API key) and 404 (no such resource for this key)."""
    return router.get(
        path, response_model=response_model, responses=problem_responses(401, 404), summary=summary
    )


def list_route(
    router: APIRouter, path: str, response_model: type[BaseModel], summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``@router.get`` for a page of the caller's resources (take the cursor with
    `PageDep`): documented with 401 and 422 (a malformed ``after`` or ``limit``)."""
    return router.get(
        path, response_model=response_model, responses=problem_responses(401, 422), summary=summary
    )


def delete_route(
    router: APIRouter, path: str, summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``@router.delete`` of one of the caller's resources by id, answered 204 with no
    body: documented with 401, 404 and 409 (a model or dataset that a queued or running
    job uses, a job that has not finished)."""
    return router.delete(
        path,
        status_code=204,
        response_class=Response,
        responses=problem_responses(401, 404, 409),
        summary=summary,
    )


@dataclass(frozen=True)
class Page:
    """The cursor of a list: the rows after ``after``, at most ``limit`` of them."""

    after: str | None
    limit: int


async def page_query(
    settings: SettingsDep,
    after: Annotated[
        str | None, Query(max_length=40, description="`next` of the previous page")
    ] = None,
    limit: Annotated[StrictInt, Query(ge=1, le=1000)] = 20,
) -> Page:
    """``?after=&limit=``, with ``limit`` capped by ``settings.max_page_size``."""
    return Page(after=after, limit=min(limit, settings.max_page_size))


PageDep = Annotated[Page, Depends(page_query)]
