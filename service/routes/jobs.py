"""``/v1/jobs``: create (idempotent, dry run), list, get, events (JSON pages or a live
event stream), cancel, delete, artifact download, the HTML report.

Routes parse and authorise; `service.job_requests` holds the logic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from core.db.models import Artifact, Job, JobEvent
from core.db.session import read_scope
from core.repositories import JobView, job_url
from core.service_errors import NotFoundError
from core.settings import Settings
from core.storage import CHUNK, Storage
from metacluster.filenames import REPORT_HTML
from service import event_stream
from service import job_requests as job_service
from service.deps import CurrentKey, EnqueueDep, SessionDep, SettingsDep, StorageDep
from service.limits import MAX_INT64, StrictInt, check_config_size, parse_int_or_422
from service.problems import problem_responses
from service.routes import PageDep, delete_route, list_route, read_route
from service.schemas import (
    DryRunCheck,
    DryRunOut,
    JobCreate,
    JobEventOut,
    JobEventPage,
    JobOut,
    JobPage,
    JobStatus,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: JobView | Job) -> JobOut:
    """The API's answer for a job: its public view (`JobView.public`), validated."""
    view = JobView.of(job) if isinstance(job, Job) else job
    return JobOut.model_validate(view.public())


def event_out(event: JobEvent) -> JobEventOut:
    return JobEventOut.model_validate(event, from_attributes=True)


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": DryRunOut, "description": "`?dry_run=true`: every check passed"},
        **problem_responses(400, 401, 404, 409, 413, 422, 503),
    },
    summary="Create a compression job (or validate one with ?dry_run=true)",
)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    owner: CurrentKey,
    settings: SettingsDep,
    enqueue: EnqueueDep,
    dry_run: Annotated[
        bool, Query(description="Validate model, dataset and config together; queue nothing")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Same key and body -> the same job; same key, other body -> 409",
        ),
    ] = None,
) -> JobOut | JSONResponse:
    check_config_size(body.config, settings.max_config_bytes)
    if dry_run:
        valid = job_service.validate_job(session, owner, settings, body)
        out = DryRunOut(
            valid=True,
            checks=[DryRunCheck(**c.to_dict()) for c in valid.plan.checks],
            config=valid.config,
            queue=valid.queue,
            plan=valid.plan.to_dict(),
        )
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    job, replayed = job_service.create_job(
        session, owner, settings, enqueue, body, idempotency_key=idempotency_key
    )
    response.headers["Location"] = job_url(job.id)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(job)


async def _status_filter(status: JobStatus | None = None) -> JobStatus | None:
    # A dependency, not a parameter of `list_jobs`, so that it comes after the cursor
    # (`PageDep`) among the documented query parameters: FastAPI lists a route's own first.
    return status


@list_route(router, "", JobPage, "List jobs, newest first (cursor pagination)")
def list_jobs(
    settings: SettingsDep,
    owner: CurrentKey,
    page: PageDep,
    status: Annotated[JobStatus | None, Depends(_status_filter)],
) -> JobPage:
    with read_scope(settings) as session:  # one statement: no transaction (polled)
        rows, next_cursor = job_service.list_jobs(
            session, owner, after=page.after, limit=page.limit, status=status
        )
    return JobPage(items=[job_out(j) for j in rows], next=next_cursor)


@read_route(
    router, "/{job_id}", JobOut, "A job: status, stage, progress, metrics, error, artifacts"
)
def get_job(job_id: str, settings: SettingsDep, owner: CurrentKey) -> JobOut:
    # What clients poll: one statement, so no transaction (no BEGIN/COMMIT round trips)
    # and no second thread hop to end one.
    with read_scope(settings) as session:
        view = job_service.view_job(session, owner, job_id)
    return job_out(view)


@router.get(
    "/{job_id}/events",
    response_model=JobEventPage,
    responses={
        200: {
            "content": {
                "application/json": {},
                event_stream.MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "example": 'id: 3\nevent: stage\ndata: {"seq": 3, "kind": "stage", ...}\n\n',
                },
            },
            "description": "JSON pages; or, with `Accept: text/event-stream`, Server-Sent "
            "Events as they happen (`id:` = `seq`; resume with `Last-Event-ID`), closed "
            "after the final status event",
        },
        **problem_responses(401, 404, 422),
    },
    summary="A job's status, stage, progress, log and webhook events, oldest first",
)
def list_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    owner: CurrentKey,
    settings: SettingsDep,
    after: Annotated[
        StrictInt | None, Query(ge=0, le=MAX_INT64, description="`next` of the previous page")
    ] = None,
    limit: Annotated[StrictInt, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Event stream: resume after this `seq` (sent by reconnecting clients)",
        ),
    ] = None,
) -> JobEventPage | StreamingResponse:
    if event_stream.wants_event_stream(request):
        job_service.get_job(session, owner, job_id)
        return _event_stream(request, settings, job_id, last_event_id)
    rows, next_cursor = job_service.list_events(
        session, owner, job_id, after=after, limit=min(limit, 10 * settings.max_page_size)
    )
    return JobEventPage(items=[event_out(e) for e in rows], next=next_cursor)


def _event_stream(
    request: Request, settings: Settings, job_id: str, last_event_id: str | None
) -> StreamingResponse:
    after_seq = 0
    if last_event_id is not None:
        # Event ids are 64-bit database integers: a larger one is a 422, not an overflow.
        after_seq = parse_int_or_422(last_event_id, name="Last-Event-ID (an event's seq)")
    return StreamingResponse(
        event_stream.job_events(request, settings, job_id, after_seq),
        media_type=event_stream.MEDIA_TYPE,
        # No caching, and no buffering by nginx-like proxies: events must flow at once.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    responses=problem_responses(401, 404, 409),
    summary="Cancel a job: queued ones at once, running ones between steps",
)
def cancel_job(job_id: str, session: SessionDep, owner: CurrentKey) -> JobOut:
    return job_out(job_service.cancel_job(session, owner, job_id))


@delete_route(router, "/{job_id}", "Delete a finished job with its events and artifacts")
def delete_job(job_id: str, session: SessionDep, owner: CurrentKey, storage: StorageDep) -> None:
    job_service.delete_job(session, storage, owner, job_id)


@router.get(
    "/{job_id}/report",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "The self-contained HTML report"},
        **problem_responses(401, 404),
    },
    summary="The job's report: metrics, Pareto frontier, bytes, errors, learned functions",
)
def get_report(
    job_id: str, session: SessionDep, owner: CurrentKey, storage: StorageDep
) -> Response:
    artifact = job_service.get_artifact(session, owner, job_id, REPORT_HTML)
    return _stream(storage, artifact, "text/html; charset=utf-8", inline=True)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The file; its sha256 is in `ETag` and `X-Checksum-SHA256`",
        },
        304: {"description": "`If-None-Match` matched the artifact's sha256"},
        307: {"description": "The storage backend signed a URL: download from `Location`"},
        **problem_responses(401, 404),
    },
    summary="Download an artifact of a job",
)
def download_artifact(
    job_id: str,
    name: str,
    request: Request,
    session: SessionDep,
    owner: CurrentKey,
    storage: StorageDep,
    settings: SettingsDep,
    redirect: Annotated[
        bool,
        Query(
            description="false: stream through the API even where the storage signs URLs "
            "(for clients that cannot follow a redirect to another origin, e.g. a browser page)"
        ),
    ] = True,
) -> Response:
    artifact = job_service.get_artifact(session, owner, job_id, name)
    etag = f'"{artifact.sha256}"'
    headers = {"ETag": etag, "X-Checksum-SHA256": artifact.sha256}
    if_none_match = request.headers.get("if-none-match", "")
    if etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    url = storage.url(artifact.storage_key, expires_s=settings.download_url_expires_s)
    if url is not None and redirect:  # an object store hands the download to its own servers
        return RedirectResponse(url, status_code=307, headers=headers)
    return _stream(storage, artifact, "application/octet-stream", headers=headers)


def _stream(
    storage: Storage,
    artifact: Artifact,
    media_type: str,
    *,
    inline: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    """The blob streamed from storage, with its length and checksum."""
    blob = storage.stat(artifact.storage_key)
    if blob is None:
        raise NotFoundError(
            f"artifact {artifact.name!r} of job {artifact.job_id} is missing from storage"
        )
    fh = storage.open(artifact.storage_key)

    def chunks() -> Iterator[bytes]:
        with fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    out = dict(headers or {})
    out.setdefault("X-Checksum-SHA256", artifact.sha256)
    out["Content-Length"] = str(blob.bytes)
    disposition = "inline" if inline else "attachment"
    out["Content-Disposition"] = f'{disposition}; filename="{artifact.name}"'
    return StreamingResponse(chunks(), media_type=media_type, headers=out)
