"""``/v1/webhooks/secret``: the API key's webhook signing secret, and its rotation."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from core import webhooks
from core.settings import Settings
from service.deps import CurrentKey, SessionDep, SettingsDep
from service.problems import problem_responses
from service.schemas import WebhookSecretOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _out(secrets: webhooks.Secrets, now: datetime) -> WebhookSecretOut:
    active = secrets.previous_until is not None and now < secrets.previous_until
    return WebhookSecretOut(
        secret=secrets.current,
        previous=secrets.previous if active else None,
        previous_expires_at=secrets.previous_until if active else None,
    )


def _now() -> datetime:
    from core.db.base import utcnow

    return utcnow()


@router.get(
    "/secret",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="The secret that signs this key's webhooks (made on first use)",
)
def get_secret(session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> WebhookSecretOut:
    return _out(webhooks.secrets_of(session, owner.id, _grace(settings)), _now())


@router.post(
    "/secret/rotate",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="A new signing secret; the old one also signs during the grace period",
)
def rotate_secret(
    session: SessionDep, owner: CurrentKey, settings: SettingsDep
) -> WebhookSecretOut:
    return _out(webhooks.rotate_secret(session, owner.id, _grace(settings)), _now())


def _grace(settings: Settings) -> float:
    return settings.webhook_secret_grace_s
