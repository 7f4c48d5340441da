"""The S3 storage backend (``s3://bucket/prefix`` URLs): AWS S3, MinIO or any S3-compatible
store, through boto3 (the optional ``s3`` extra, imported when the backend is built).

Blobs are objects under ``prefix/``; their sha256 rides along as object metadata.
`put` spools the source to a local temporary file first, so the size limit is enforced
before anything is uploaded (a PUT is atomic: readers never see half an object).
`url` signs a GET that expires: the API redirects downloads there, so artifact bytes
flow from the store to the client directly. The endpoint that signed URLs name can
differ from the one the service talks to (``S3_PUBLIC_ENDPOINT_URL``: the service
reaches MinIO as ``http://minio:9000``, users as ``http://localhost:9000``).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import mimetypes
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from core.service_errors import NotFoundError
from core.settings import Settings
from core.storage import (
    BlobInfo,
    Limited,
    Source,
    Storage,
    copy_to_scratch,
    prefix_of,
    register_backend,
    validate_key,
)
from metacluster.errors import ConfigError

# Sources up to this size are spooled in memory, larger ones on disk.
_SPOOL_MEMORY = 8 * 1024 * 1024
_DELETE_BATCH = 1000


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class _Body(io.RawIOBase):
    """An S3 response body as a binary file (readable, closable, a context manager)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Storage:
    """`Storage` on a bucket (and a key prefix in it)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any,
        presign_client: Any | None = None,
        create_bucket: bool = False,
        region: str = "us-east-1",
    ) -> None:
        if not bucket:
            raise ConfigError(
                "S3 storage needs a bucket: METACLUSTER_STORAGE_URL=s3://bucket/prefix"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._presign = presign_client or client
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if not _is_missing(exc):
                raise
        args: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with contextlib.suppress(self._client.exceptions.BucketAlreadyOwnedByYou):
            self._client.create_bucket(**args)

    def _object(self, key: str) -> str:
        name = str(validate_key(key))
        return f"{self.prefix}/{name}" if self.prefix else name

    def _key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    def put(self, key: str, source: Source, *, max_bytes: int | None = None) -> BlobInfo:
        target = self._object(key)
        counted = Limited(source, max_bytes)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
            for chunk in counted:  # 413 here, before anything is uploaded
                spool.write(chunk)
            spool.seek(0)
            sha = counted.digest.hexdigest()
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            self._client.upload_fileobj(
                spool,
                self.bucket,
                target,
                ExtraArgs={"Metadata": {"sha256": sha}, "ContentType": content_type},
            )
        return BlobInfo(key, counted.size, sha)

    def open(self, key: str) -> BinaryIO:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"stored object {key!r} not found") from None
            raise
        return io.BufferedReader(_Body(obj["Body"]), buffer_size=1024 * 1024)  # type: ignore[return-value]

    def stat(self, key: str) -> BlobInfo | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return BlobInfo(key, int(head["ContentLength"]), head.get("Metadata", {}).get("sha256"))

    def _objects(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._object_prefix(prefix)):
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def _object_prefix(self, prefix: str) -> str:
        p = prefix_of(prefix)
        return f"{self.prefix}/{p}" if self.prefix else p

    def list(self, prefix: str) -> list[str]:
        return sorted(self._key(k) for k in self._objects(prefix))

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def delete_prefix(self, prefix: str) -> None:
        batch: builtins.list[dict[str, str]] = []
        for object_key in self._objects(prefix):
            batch.append({"Key": object_key})
            if len(batch) == _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: builtins.list[dict[str, str]]) -> None:
        self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def local_copy(
        self, key: str, directory: Path | None = None
    ) -> contextlib.AbstractContextManager[Path]:
        return copy_to_scratch(self, key, directory)

    def url(self, key: str, *, expires_s: int = 3600) -> str | None:
        name = validate_key(key).name
        return str(
            self._presign.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self._object(key),
                    "ResponseContentDisposition": f'attachment; filename="{name}"',
                },
                ExpiresIn=int(expires_s),
            )
        )


def _boto_client(settings: Settings, endpoint: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError("s3:// storage needs boto3: pip install 'metacluster[s3]'") from None
    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=None if secret is None else secret.get_secret_value(),
        config=Config(
            signature_version="s3v4",
            # Path-style (http://host/bucket/key) for MinIO and other self-hosted stores.
            s3={"addressing_style": "path" if endpoint else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def from_settings(settings: Settings) -> Storage:
    """The backend of ``METACLUSTER_STORAGE_URL=s3://bucket/prefix`` and the S3_* settings."""
    assert settings.storage_url is not None
    parts = urlsplit(settings.storage_url)
    client = _boto_client(settings, settings.s3_endpoint_url)
    public = settings.s3_public_endpoint_url
    presign = _boto_client(settings, public) if public else client
    return S3Storage(
        parts.netloc,
        parts.path,
        client=client,
        presign_client=presign,
        create_bucket=settings.s3_create_bucket,
        region=settings.s3_region,
    )


register_backend("s3", from_settings)

__all__ = ["S3Storage", "from_settings"]
