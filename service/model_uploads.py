"""Model uploads: pick the checkpoint among the uploaded files, inspect it safely, store it.

pykan checkpoints arrive as two files (``<prefix>_config.yml`` + ``<prefix>_state``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from core import retention
from core.db.models import ApiKey, ModelRecord, new_id
from core.db.transaction import after_commit, after_rollback
from core.repositories import ModelRepository
from core.service_errors import RequestValidationProblem, UnsupportedMediaTypeError
from core.storage import Storage, model_key, model_prefix
from metacluster.errors import FormatError
from service import inspector
from service.multipart import SpooledFile, SpooledUpload

log = logging.getLogger(__name__)

# Checkpoints are judged by their content, not by the part's content type (clients
# guess it from their own mime tables: httpx labels `.pt` a SNES page table). Files
# whose first bytes say they are certainly something else get 415 at once; anything
# else is for the format readers to accept or refuse (422).
NOT_CHECKPOINTS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"\x1f\x8b", "a gzip archive"),
)
# Multipart field names accepted for model files; all travel together.
MODEL_FIELDS = frozenset({"file", "config", "state", "spec"})
_SIDECAR_SUFFIXES = (".yml", ".yaml", ".json")


def _primary_file(files: list[SpooledFile]) -> SpooledFile:
    """The checkpoint among the uploaded files: the one `inspect_model` is pointed at.

    pykan's state file (``*_state`` or field ``state``) wins; otherwise the one file that
    is not a YAML/JSON sidecar (config, spec); a lone file is itself.
    """
    if len(files) == 1:
        return files[0]
    for f in files:
        if f.field == "state" or f.filename.endswith("_state"):
            return f
    weights = [f for f in files if not f.filename.lower().endswith(_SIDECAR_SUFFIXES)]
    if len(weights) == 1:
        return weights[0]
    names = ", ".join(f.filename for f in files)
    raise RequestValidationProblem(
        f"cannot tell which of {names} is the checkpoint: send one weights file plus "
        "its config/spec sidecars"
    )


def combined_sha256(files: list[SpooledFile]) -> str:
    """sha256 of one file, or of ``sha256sum``-style lines for several (sorted by name)."""
    if len(files) == 1:
        return files[0].sha256
    lines = "".join(f"{f.sha256}  {f.filename}\n" for f in sorted(files, key=lambda f: f.filename))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_model_upload(upload: SpooledUpload) -> tuple[SpooledFile, str]:
    """Validate the parts of a model upload; returns (checkpoint file, requested format)."""
    if not upload.files:
        raise RequestValidationProblem("no file uploaded: send the checkpoint as form field 'file'")
    for f in upload.files:
        if f.field not in MODEL_FIELDS:
            raise RequestValidationProblem(
                f"unexpected file field {f.field!r}; use 'file' (repeatable), 'config', 'state' or 'spec'"
            )
        if f.bytes == 0:
            raise FormatError(f"{f.filename} is empty")
        with open(f.path, "rb") as fh:
            head = fh.read(16)
        for magic, kind in NOT_CHECKPOINTS:
            if head[: len(magic)].lower() == magic.lower():
                raise UnsupportedMediaTypeError(
                    f"{f.original_filename or f.filename} is {kind}, not a KAN checkpoint"
                )
    fmt = upload.fields.get("format", "auto").strip() or "auto"
    return _primary_file(upload.files), fmt


def inspect_upload(primary: SpooledFile, fmt: str, processes: int) -> dict[str, Any]:
    """`metacluster.formats.inspect_model` on the spooled checkpoint (safe loading only),
    in a child process (`service.inspector`): the model it builds never lives here.

    Blocks: call it from a worker thread.
    """
    return inspector.inspect_checkpoint(primary.path, fmt, processes)


def create_model(
    session: Session,
    storage: Storage,
    owner: ApiKey,
    upload: SpooledUpload,
    primary: SpooledFile,
    info: dict[str, Any],
) -> ModelRecord:
    """Store the inspected files under ``models/{id}/`` and add the row (not committed)."""
    model_id = new_id("mdl")
    after_rollback(session, lambda: storage.delete_prefix(model_prefix(model_id)))
    for f in upload.files:
        storage.put(model_key(model_id, f.filename), f.path)
    record = ModelRecord(
        id=model_id,
        owner_id=owner.id,
        filename=primary.original_filename or primary.filename,
        family=str(info["family"]),
        format=str(info["format"]),
        edges=int(info["edges"]),
        params=int(info["params"]),
        bytes=upload.total_bytes,
        sha256=combined_sha256(upload.files),
        storage_key=model_key(model_id, primary.filename),
        info=_jsonable(info),
    )
    return ModelRepository(session).add(record)


def get_model(session: Session, owner: ApiKey, model_id: str) -> ModelRecord:
    return ModelRepository(session).require(owner.id, model_id)


def list_models(
    session: Session, owner: ApiKey, *, after: str | None, limit: int
) -> tuple[Sequence[ModelRecord], str | None]:
    """A page of the owner's models, newest first, and the cursor of the next page."""
    return ModelRepository(session).page(owner.id, after=after, limit=limit)


def delete_model(session: Session, storage: Storage, owner: ApiKey, model_id: str) -> None:
    """The model, its files and the finished jobs made from it (409 while one runs)."""
    record = ModelRepository(session).require(owner.id, model_id, for_update=True)
    keys = retention.delete_model(session, record)
    after_commit(session, lambda: retention.remove_blobs(storage, keys))


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (inspect info may carry tuples or numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
