"""``/v1/webhooks/secret``: the API key's webhook signing secret, and its rotation."""

from __future__ import annotations

from fastapi import APIRouter

from core import webhooks
from core.db.base import utcnow
from service.deps import CurrentKey, SessionDep, SettingsDep
from service.problems import problem_responses
from service.schemas import WebhookSecretOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _out(secrets: webhooks.Secrets) -> WebhookSecretOut:
    until = secrets.previous_until
    active = until is not None and utcnow() < until
    return WebhookSecretOut(
        secret=secrets.current,
        previous=secrets.previous if active else None,
        previous_expires_at=until if active else None,
    )


@router.get(
    "/secret",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="The secret that signs this key's webhooks (made on first use)",
)
def get_secret(session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> WebhookSecretOut:
    return _out(webhooks.secrets_of(session, owner.id, settings.webhook_secret_grace_s))


@router.post(
    "/secret/rotate",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="A new signing secret; the old one also signs during the grace period",
)
def rotate_secret(
    session: SessionDep, owner: CurrentKey, settings: SettingsDep
) -> WebhookSecretOut:
    return _out(webhooks.rotate_secret(session, owner.id, settings.webhook_secret_grace_s))
