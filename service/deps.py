"""FastAPI dependencies as typed aliases: settings, the request transaction, storage, auth.

`SessionDep` commits when the route returns and before the response is sent.

Dependencies that only read app state are `async def`: FastAPI runs a plain `def`
dependency in the thread pool, and each such hop costs a thread hand-off and a wait for
the GIL, which under load is most of a short request's latency. Work that blocks (the
database) stays in threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.db.models import ApiKey
from core.db.session import get_sessionmaker
from core.db.transaction import commit, rollback
from core.settings import Settings
from core.storage import Storage
from service.auth import KeyCache, authenticate, hash_key
from service.job_requests import BrokerEnqueuer, Enqueue


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _end_transaction(session: Session, *, succeeded: bool) -> None:
    """Commit (then the after-commit hooks) or roll back, and close: one thread hop."""
    try:
        if not succeeded:
            rollback(session)
            return
        try:
            commit(session)
        except BaseException:
            rollback(session)
            raise
    finally:
        session.close()


async def get_db(settings: SettingsDep) -> AsyncIterator[Session]:
    """One transaction per request: commit (then after-commit hooks) or roll back.

    The session is made on the event loop (that connects to nothing); the route uses it
    in its worker thread, and the end of the transaction runs in one more, shielded
    from cancellation so a client that hangs up cannot leak the connection.
    """
    session = get_sessionmaker(settings)()
    succeeded = False
    try:
        yield session
        succeeded = True
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end_transaction, session, succeeded=succeeded)


# scope="function": the commit runs right after the route returns, before the
# response goes out, so a client that got 202 can read the job at once.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


async def get_storage_dep(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


StorageDep = Annotated[Storage, Depends(get_storage_dep)]


async def get_enqueuer(settings: SettingsDep) -> Enqueue:
    """The broker by default; tests override this dependency with a recorder."""
    return BrokerEnqueuer(settings)


EnqueueDep = Annotated[Enqueue, Depends(get_enqueuer)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer mck_...`")


def _authenticate_detached(settings: Settings, header: str | None) -> ApiKey:
    with get_sessionmaker(settings)() as session:
        key = authenticate(session, header)
        session.expunge(key)
    return key


async def current_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ApiKey:
    """The caller's key: from the process's key cache, or read in its own short session
    (in a worker thread) and returned detached.

    Not on the request session: an upload route would otherwise hold a database
    connection (idle in transaction) for as long as the client takes to send the body.
    """
    header = request.headers.get("authorization")
    if credentials is not None:
        header = f"Bearer {credentials.credentials}"
    cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
    digest = hash_key(credentials.credentials.strip()) if credentials is not None else ""
    key = cache.get(digest) if cache is not None and digest else None
    if key is None:
        key = await run_in_threadpool(_authenticate_detached, settings, header)
        if cache is not None and digest:
            cache.put(digest, key)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(key.id)
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
