"""The `Storage` interface shared by API and workers, and its local-directory backend.

Writes are atomic (temp file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from metacluster.errors import InputError
from service.errors import NotFoundError, PayloadTooLargeError
from service.settings import Settings, get_settings

_CHUNK = 1024 * 1024


class Storage(Protocol):
    """Blob store keyed by relative POSIX paths such as ``models/{id}/{filename}``."""

    def save_stream(
        self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None
    ) -> tuple[int, str]:
        """Store the chunks under ``key``; returns (bytes, sha256 hex). Over ``max_bytes`` -> 413."""
        ...

    def save_file(self, key: str, src_path: Path) -> tuple[int, str]:
        """Copy a local file under ``key``; returns (bytes, sha256 hex)."""
        ...

    def path(self, key: str) -> Path:
        """A local path to read ``key`` from."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open ``key`` for binary reading."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; missing keys are ignored."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix`` (a directory-like prefix)."""
        ...


def validate_key(key: str) -> PurePosixPath:
    """Reject keys that could escape the storage root."""
    # Check the raw segments: PurePosixPath would silently normalise "a//b" and "a/./b".
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in key or "\x00" in key:
        raise InputError(f"invalid storage key {key!r}")
    return PurePosixPath(*parts)


class LocalStorage:
    """`Storage` on a local directory (also a shared volume between API and workers)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _target(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).parts)

    def save_stream(
        self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None
    ) -> tuple[int, str]:
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def save_file(self, key: str, src_path: Path) -> tuple[int, str]:
        def read() -> Iterable[bytes]:
            with open(src_path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk

        return self.save_stream(key, read())

    def path(self, key: str) -> Path:
        return self._target(key)

    def open(self, key: str) -> BinaryIO:
        target = self._target(key)
        if not target.is_file():
            raise NotFoundError(f"stored object {key!r} not found")
        return open(target, "rb")

    def exists(self, key: str) -> bool:
        return self._target(key).exists()

    def delete(self, key: str) -> None:
        target = self._target(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        target = self._target(prefix.rstrip("/"))  # "jobs/j1/" names the directory
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage backend the settings name (local directory)."""
    return LocalStorage((settings or get_settings()).storage_root)


def model_key(model_id: str, filename: str) -> str:
    return f"models/{model_id}/{filename}"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.npz"


def artifact_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/artifacts/{name}"


def checkpoints_key(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints"
