"""FastAPI dependencies as typed aliases: settings, the request transaction, storage, auth.

`SessionDep` commits when the route returns and before the response is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.db.models import ApiKey
from core.db.session import get_sessionmaker
from core.db.transaction import commit, rollback
from core.settings import Settings
from core.storage import Storage
from service.auth import KeyCache, authenticate, hash_key
from service.job_requests import BrokerEnqueuer, Enqueue


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    """One transaction per request: commit (then after-commit hooks) or roll back."""
    session = get_sessionmaker(settings)()
    try:
        yield session
        commit(session)
    except BaseException:
        rollback(session)
        raise
    finally:
        session.close()


# scope="function": the commit runs right after the route returns, before the
# response goes out, so a client that got 202 can read the job at once.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def get_storage_dep(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


StorageDep = Annotated[Storage, Depends(get_storage_dep)]


def get_enqueuer(settings: SettingsDep) -> Enqueue:
    """The broker by default; tests override this dependency with a recorder."""
    return BrokerEnqueuer(settings)


EnqueueDep = Annotated[Enqueue, Depends(get_enqueuer)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer mck_...`")


def current_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ApiKey:
    """The caller's key, read in its own short session and returned detached.

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
        with get_sessionmaker(settings)() as session:
            key = authenticate(session, header)
            session.expunge(key)
        if cache is not None and digest:
            cache.put(digest, key)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(key.id)
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
