"""API keys: generated once, stored as sha256 hashes, checked on every request.

Keys are long random tokens, so a plain (unsalted) sha256 is a sufficient one-way hash.
A presented key is found by its public prefix (indexed) and its hash compared with
`hmac.compare_digest`, so the check takes the same time however much of a hash
matches. Keys are listed and revoked by id (`metacluster keys list / revoke`), and a
key may revoke itself (`DELETE /v1/keys/self`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import ApiKey
from core.service_errors import NotFoundError, RateLimitedError, UnauthorizedError

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
    digest = hash_key(token)
    candidates = session.scalars(select(ApiKey).where(ApiKey.prefix == token[:12])).all()
    row = None
    for candidate in candidates:  # compare every candidate: no early exit on a match
        if hmac.compare_digest(candidate.key_hash.encode(), digest.encode()):
            row = candidate
    if row is None or row.revoked_at is not None:
        raise UnauthorizedError("invalid or revoked API key")
    return row


def list_api_keys(session: Session) -> Sequence[ApiKey]:
    """Every key, oldest first (no secret: the plaintext is never stored)."""
    return session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke the key with this id (or this unique id prefix); a revoked key stays
    revoked. 404 `NotFoundError` when no key matches, 422 when several do."""
    from metacluster.errors import InputError

    key_id = key_id.strip()
    row = session.get(ApiKey, key_id)
    if row is None and len(key_id) >= 4:
        rows = session.scalars(select(ApiKey).where(ApiKey.id.startswith(key_id))).all()
        if len(rows) > 1:
            raise InputError(f"key id prefix {key_id!r} matches {len(rows)} keys; give more")
        row = rows[0] if rows else None
    if row is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


class KeyCache:
    """Verified keys by the sha256 of their plaintext, for `ttl_s` (per API process).

    Only successes are kept (a wrong key always reaches the database and the constant-
    time comparison); a key revoked through this process is dropped at once, through
    another one (the CLI, another replica) it stops working within `ttl_s`."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[float, ApiKey]] = {}

    def get(self, digest: str) -> ApiKey | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            hit = self._rows.get(digest)
            if hit is None or time.monotonic() - hit[0] > self.ttl_s:
                self._rows.pop(digest, None)
                return None
            return hit[1]

    def put(self, digest: str, row: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[digest] = (time.monotonic(), row)

    def forget(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, row) in self._rows.items() if row.id == key_id]:
                del self._rows[digest]


class RateLimiter:
    """A token bucket per API key (in this process): `rate` requests per second on
    average, bursts of up to `burst`; past that `RateLimitedError` (429, Retry-After)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def check(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait_s = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimitedError(
                    f"too many requests for this API key (at most {self.rate:g}/s, bursts of "
                    f"{self.burst:g}); retry after {wait_s} s",
                    retry_after_s=wait_s,
                    extra={"limit_per_s": self.rate, "burst": self.burst},
                )
            self._buckets[key_id] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # forget idle keys (full buckets)
                full = [k for k, (t, _) in self._buckets.items() if t >= self.burst]
                for k in full:
                    del self._buckets[k]
