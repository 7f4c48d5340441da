"""API keys: generated once, stored as sha256 hashes, checked on every request.

Keys are long random tokens, so a plain (unsalted) sha256 is a sufficient one-way hash.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import ApiKey
from core.service_errors import UnauthorizedError

KEY_PREFIX = "mck_"


def hash_key(plaintext: str) -> str:
    """sha256 hex of a plaintext key."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new key: (plaintext ``mck_...``, its sha256 hash)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_key(plaintext)


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Add a key row (flushed, not committed) and return it with its plaintext."""
    name = name.strip()
    if not name or len(name) > 200:
        from metacluster.errors import InputError

        raise InputError("key name must be 1-200 characters")
    plaintext, digest = generate_api_key()
    row = ApiKey(name=name, key_hash=digest, prefix=plaintext[:12])
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, authorization: str | None) -> ApiKey:
    """The active key named by an ``Authorization: Bearer <key>`` header, or 401."""
    if not authorization:
        raise UnauthorizedError("missing Authorization: Bearer <api key> header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("Authorization header must be 'Bearer <api key>'")
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(token))).one_or_none()
    if row is None or row.revoked_at is not None:
        raise UnauthorizedError("invalid or revoked API key")
    return row
