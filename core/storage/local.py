"""The local-directory storage backend (``file://`` URLs; also a volume shared by the
API and the workers). Writes are atomic (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.service_errors import NotFoundError
from core.settings import Settings
from core.storage import (
    BlobInfo,
    Limited,
    Source,
    Storage,
    prefix_of,
    register_backend,
    scratch_file,
    validate_key,
)


class LocalStorage:
    """`Storage` on a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _target(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).parts)

    def _existing(self, key: str) -> Path:
        """The blob's file; 404 `NotFoundError` when there is none."""
        target = self._target(key)
        if not target.is_file():
            raise NotFoundError(f"stored object {key!r} not found")
        return target

    def put(self, key: str, source: Source, *, max_bytes: int | None = None) -> BlobInfo:
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        counted = Limited(source, max_bytes)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in counted:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return BlobInfo(key, counted.size, counted.digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        return open(self._existing(key), "rb")

    def stat(self, key: str) -> BlobInfo | None:
        target = self._target(key)
        if not target.is_file():
            return None
        return BlobInfo(key, target.stat().st_size)

    def list(self, prefix: str) -> list[str]:
        prefix = prefix_of(prefix)
        folder = self._target(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(
            prefix + p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete(self, key: str) -> None:
        _remove(self._target(key))

    def delete_prefix(self, prefix: str) -> None:
        target = self._target(prefix.rstrip("/"))  # "jobs/j1/" names the directory
        _remove(target)
        # Leave no empty parents behind (jobs/{id}/ once its last blob is gone).
        parent = target.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    @contextlib.contextmanager
    def local_copy(self, key: str, directory: Path | None = None) -> Iterator[Path]:
        source = self._existing(key)
        with scratch_file(source.name, directory) as target:
            try:  # same file system: a hard link costs nothing
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            yield target

    def url(self, key: str, *, expires_s: int = 3600) -> str | None:
        return None  # a local directory cannot sign URLs: the API streams it


def _remove(target: Path) -> None:
    """Remove a file or a whole directory; a missing one is ignored."""
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def _from_settings(settings: Settings) -> Storage:
    return LocalStorage(settings.storage_root)


register_backend("file", _from_settings)

__all__ = ["LocalStorage"]
