"""Storage as blobs: the interface the API and the workers share, and its backends.

A blob is named by a relative POSIX key (``models/{id}/{filename}``,
``jobs/{id}/artifacts/model.mcz``). Nothing outside a backend sees a file-system path:
the API streams downloads from `open` (or redirects to `url` when the backend can
sign one), the worker reads inputs through `local_copy` and stores results with
`put`. A backend is chosen by the scheme of ``METACLUSTER_STORAGE_URL`` (``file://``
by default, the local directory); an object store is one more module that calls
`register_backend`.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from core.service_errors import PayloadTooLargeError
from core.settings import Settings, get_settings
from metacluster.errors import InputError

CHUNK = 1024 * 1024

Source = bytes | Path | BinaryIO | Iterable[bytes]
"""What `put` stores: bytes, a local file, an open binary file, or chunks."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    bytes: int
    sha256: str | None = None  # known after `put`; `stat` may not know it


class Storage(Protocol):
    """A blob store keyed by relative POSIX keys."""

    def put(self, key: str, source: Source, *, max_bytes: int | None = None) -> BlobInfo:
        """Store `source` under `key` atomically (readers never see half a blob);
        returns its size and sha256. Past `max_bytes` -> 413 and nothing is stored."""
        ...

    def open(self, key: str) -> BinaryIO:
        """The blob for binary reading (404 `NotFoundError` when missing)."""
        ...

    def stat(self, key: str) -> BlobInfo | None:
        """Size of the blob, or None when there is none."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys under a directory-like prefix (``models/m1/``), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing key is ignored."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under a directory-like prefix."""
        ...

    def local_copy(
        self, key: str, directory: Path | None = None
    ) -> contextlib.AbstractContextManager[Path]:
        """A scratch file with the blob's content, named as the key's last part, inside
        `directory` (a fresh temporary one when None); removed on exit. Read it, do
        not write it."""
        ...

    def url(self, key: str, *, expires_s: int = 3600) -> str | None:
        """A URL another host can GET the blob from for `expires_s`, or None when the
        backend cannot sign one (then stream `open`)."""
        ...


def validate_key(key: str) -> PurePosixPath:
    """Reject keys that could escape a storage root."""
    # Check the raw segments: PurePosixPath would silently normalise "a//b" and "a/./b".
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in key or "\x00" in key:
        raise InputError(f"invalid storage key {key!r}")
    return PurePosixPath(*parts)


def prefix_of(prefix: str) -> str:
    """A directory-like prefix as ``a/b/`` (validated)."""
    return str(validate_key(prefix.rstrip("/"))) + "/"


def iter_source(source: Source) -> Iterator[bytes]:
    """The chunks of any `Source`."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield bytes(source)
    elif isinstance(source, Path):
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
    elif hasattr(source, "read"):
        while chunk := source.read(CHUNK):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from source  # type: ignore[misc]


class Limited:
    """Counts and hashes chunks on their way to a backend; 413 past the limit."""

    def __init__(self, source: Source, max_bytes: int | None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in iter_source(self.source):
            self.size += len(chunk)
            if self.max_bytes is not None and self.size > self.max_bytes:
                raise PayloadTooLargeError(f"upload exceeds the limit of {self.max_bytes} bytes")
            self.digest.update(chunk)
            yield chunk


@contextlib.contextmanager
def scratch_file(name: str, directory: Path | None) -> Iterator[Path]:
    """The path of a scratch file called `name` inside `directory` (a fresh temporary
    one when None), for `local_copy` to fill; on exit the file (or that temporary
    directory) is removed."""
    owned = directory is None
    folder = Path(tempfile.mkdtemp(prefix="mc-blob-")) if directory is None else directory
    target = folder / name
    try:
        yield target
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


@contextlib.contextmanager
def copy_to_scratch(storage: Storage, key: str, directory: Path | None) -> Iterator[Path]:
    """The generic `local_copy`: download the blob into a scratch file."""
    with scratch_file(validate_key(key).name, directory) as target:
        with storage.open(key) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        yield target


Factory = Callable[[Settings], Storage]
_BACKENDS: dict[str, Factory] = {}


def register_backend(scheme: str, factory: Factory) -> None:
    """Make ``METACLUSTER_STORAGE_URL=<scheme>://...`` build storage with `factory`."""
    _BACKENDS[scheme] = factory


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage backend the settings name."""
    settings = settings or get_settings()
    scheme = settings.storage_scheme
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise InputError(
            f"unsupported storage URL scheme {scheme!r}; supported: {', '.join(sorted(_BACKENDS))}"
        )
    return factory(settings)


# -- keys -------------------------------------------------------------------------------
def model_prefix(model_id: str) -> str:
    return f"models/{model_id}/"


def model_key(model_id: str, filename: str) -> str:
    return f"models/{model_id}/{filename}"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.npz"


def artifact_key(job_id: str, name: str, fence: int | None = None) -> str:
    """Where a job's artifact lives; a worker writes under its delivery's fencing
    token (``jobs/{id}/artifacts/{fence}/{name}``), so a delivery that lost the job
    never overwrites the blobs of the one that owns it."""
    if fence is None:
        return f"jobs/{job_id}/artifacts/{name}"
    return f"jobs/{job_id}/artifacts/{fence}/{name}"


def artifacts_prefix(job_id: str, fence: int) -> str:
    return f"jobs/{job_id}/artifacts/{fence}/"


def checkpoints_key(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints"


# The built-in backends register themselves on import (s3 imports boto3 only when used).
from core.storage import local as _local  # noqa: E402
from core.storage import s3 as _s3  # noqa: E402, F401

LocalStorage = _local.LocalStorage

__all__ = [
    "BlobInfo",
    "LocalStorage",
    "Source",
    "Storage",
    "artifact_key",
    "artifacts_prefix",
    "checkpoints_key",
    "dataset_key",
    "get_storage",
    "model_key",
    "model_prefix",
    "register_backend",
    "validate_key",
]
