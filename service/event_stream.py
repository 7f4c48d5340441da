"""A job's events as Server-Sent Events (``GET /v1/jobs/{id}/events``, ``Accept: text/event-stream``).

Each job event is one SSE message: ``id:`` its sequence number, ``event:`` its kind,
``data:`` the event as JSON (the same object the JSON listing returns). A client that
reconnects sends ``Last-Event-ID`` and gets only newer events. The stream reads the
job's new events every `Settings.events_poll_s`, sends a comment line (``: heartbeat``)
after `Settings.sse_heartbeat_s` without a message, and ends after the event that
put the job into its final status (at once when that event is already behind the
client).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from core.db.models import FINISHED_STATUSES, Job
from core.db.session import session_scope
from core.repositories import JobEventRepository
from core.settings import Settings
from service.schemas import JobEventOut

MEDIA_TYPE = "text/event-stream"
# Events read per database round trip.
BATCH = 200
# How long a client waits before it reconnects after the stream broke (SSE `retry:`).
RECONNECT_MS = 1000


def wants_event_stream(request: Request) -> bool:
    return MEDIA_TYPE in request.headers.get("accept", "")


@dataclass
class _Read:
    events: list[JobEventOut]
    status: str | None  # None: the job is gone


def _read(settings: Settings, job_id: str, after_seq: int) -> _Read:
    with session_scope(settings) as session:
        status = session.get(Job, job_id)
        rows = JobEventRepository(session).after_seq(job_id, after_seq, BATCH)
        events = [JobEventOut.model_validate(e, from_attributes=True) for e in rows]
        return _Read(events, None if status is None else status.status)


def _is_final(event: JobEventOut) -> bool:
    return event.kind == "status" and (event.data or {}).get("status") in FINISHED_STATUSES


def format_message(event: JobEventOut) -> bytes:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def job_events(
    request: Request, settings: Settings, job_id: str, after_seq: int
) -> AsyncIterator[bytes]:
    """The SSE body: events after `after_seq` as they come, until the final one."""
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    last_write = time.monotonic()
    while True:
        read = await run_in_threadpool(_read, settings, job_id, after_seq)
        for event in read.events:
            yield format_message(event)
            last_write = time.monotonic()
            after_seq = event.seq
            if _is_final(event):
                return
        if len(read.events) == BATCH:
            continue  # more are waiting
        if read.status is None or read.status in FINISHED_STATUSES:
            # Gone, or its final event was sent on an earlier connection.
            return
        if time.monotonic() - last_write >= settings.sse_heartbeat_s:
            yield b": heartbeat\n\n"
            last_write = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(settings.events_poll_s)


__all__ = ["MEDIA_TYPE", "format_message", "job_events", "wants_event_stream"]
