"""``/v1/keys/self``: the calling API key, and its own revocation.

Keys are created, listed and revoked by an operator (`metacluster keys ...`); a
key holder can see which key it uses and revoke it (a leaked key, a finished CI run).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.auth import revoke_api_key
from service.deps import CurrentKey, SessionDep
from service.problems import problem_responses
from service.schemas import KeyOut

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def key_out(key: object) -> KeyOut:
    return KeyOut.model_validate(key, from_attributes=True)


@router.get(
    "/self",
    response_model=KeyOut,
    responses=problem_responses(401, 429),
    summary="The API key of this request (never its secret)",
)
def get_own_key(owner: CurrentKey) -> KeyOut:
    return key_out(owner)


@router.delete(
    "/self",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Revoked: the key answers 401 from now on"},
        **problem_responses(401, 429),
    },
    summary="Revoke the API key of this request",
)
def revoke_own_key(owner: CurrentKey, session: SessionDep, request: Request) -> Response:
    revoke_api_key(session, owner.id)
    cache = getattr(request.app.state, "key_cache", None)
    if cache is not None:
        cache.forget(owner.id)
    return Response(status_code=204)
